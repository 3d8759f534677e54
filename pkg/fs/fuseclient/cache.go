package fuseclient

import (
	"fmt"
	"time"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// CachePolicy says how much the kernel may cache of a mount.
type CachePolicy int

const (
	// CacheDefault is CacheNone when the mount lies on proc, sysfs or a
	// cgroup filesystem, CacheAuto otherwise.
	CacheDefault CachePolicy = iota
	// CacheAuto keeps attributes and directory entries for a second and
	// a file's page cache while its mtime and size do not change.
	CacheAuto
	// CacheNone caches nothing: zero timeouts, direct I/O on every open,
	// no negative entries.
	CacheNone
	// CacheStrict keeps everything for an hour: for trees the host never
	// changes behind the DPU's back.
	CacheStrict
)

// FsType is the filesystem type a qtfs mount shows in /proc/mounts.
const FsType = "fuse." + fsSubtype

// fsSubtype is the name after "fuse." in the mount's type.
const fsSubtype = "qtfs"

// ParseCachePolicy parses "auto", "none" or "strict" ("default" selects
// CacheDefault).
func ParseCachePolicy(s string) (CachePolicy, error) {
	switch s {
	case "auto":
		return CacheAuto, nil
	case "none":
		return CacheNone, nil
	case "strict":
		return CacheStrict, nil
	case "default":
		return CacheDefault, nil
	}
	return CacheDefault, fmt.Errorf("qtfs-client: cache policy %q: want auto, none or strict", s)
}

// String returns the name ParseCachePolicy accepts.
func (c CachePolicy) String() string {
	switch c {
	case CacheDefault:
		return "default"
	case CacheAuto:
		return "auto"
	case CacheNone:
		return "none"
	case CacheStrict:
		return "strict"
	}
	return fmt.Sprintf("CachePolicy(%d)", int(c))
}

// specialKind reports whether files of this filesystem kind have content
// that their size does not describe (proc, sysfs, cgroup).
func specialKind(k qtfsv1.FsKind) bool {
	switch k {
	case qtfsv1.FsKind_FS_KIND_PROC, qtfsv1.FsKind_FS_KIND_SYSFS,
		qtfsv1.FsKind_FS_KIND_CGROUP, qtfsv1.FsKind_FS_KIND_CGROUP2:
		return true
	}
	return false
}

// resolve turns CacheDefault into the policy for a mount of kind k.
func (c CachePolicy) resolve(k qtfsv1.FsKind) CachePolicy {
	if c != CacheDefault {
		return c
	}
	if specialKind(k) {
		return CacheNone
	}
	return CacheAuto
}

// cacheParams are the kernel cache settings of a resolved policy.
type cacheParams struct {
	entry, attr, negative time.Duration
	// directIO opens every file with FOPEN_DIRECT_IO.
	directIO bool
	// keepAlways opens every file with FOPEN_KEEP_CACHE.
	keepAlways bool
	// keepIfUnchanged opens with FOPEN_KEEP_CACHE when the file's mtime
	// and size are those seen at its previous open.
	keepIfUnchanged bool
}

// strictTimeout is how long strict mounts keep attributes and entries.
const strictTimeout = time.Hour

func (c CachePolicy) params() cacheParams {
	switch c {
	case CacheNone:
		return cacheParams{directIO: true}
	case CacheStrict:
		return cacheParams{entry: strictTimeout, attr: strictTimeout, negative: strictTimeout, keepAlways: true}
	default:
		return cacheParams{entry: time.Second, attr: time.Second, keepIfUnchanged: true}
	}
}
