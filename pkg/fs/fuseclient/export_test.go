package fuseclient

import "time"

// WithSpecialTTL returns opts with special as how long the kernel keeps
// the entries and attributes of a special mount under the default policy
// (specialTTL), in place of specialTimeout.
func WithSpecialTTL(opts MountOptions, special time.Duration) MountOptions {
	t := defaultCacheTiming
	t.special = special
	opts.timing = &t
	return opts
}
