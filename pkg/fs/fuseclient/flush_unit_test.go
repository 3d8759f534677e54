package fuseclient

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestNoFlush: a file whose close needs nothing of the server is opened
// with FOPEN_NOFLUSH, so that the kernel does not send FLUSH at all; a
// file written on a filesystem whose close may fail is not.
func TestNoFlush(t *testing.T) {
	for _, tc := range []struct {
		name          string
		special       bool
		flags         uint32
		flushNeedless bool
		want          uint32
	}{
		{"read-only", false, syscall.O_RDONLY, false, fuse.FOPEN_NOFLUSH},
		{"written, local filesystem", false, syscall.O_WRONLY, true, fuse.FOPEN_NOFLUSH},
		{"written, close may fail", false, syscall.O_RDWR, false, 0},
		{"proc, sysfs or cgroup", true, syscall.O_WRONLY, false, fuse.FOPEN_NOFLUSH},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fileHandle{m: &mountFS{special: tc.special}, flags: tc.flags, flushNeedless: tc.flushNeedless}
			if got := f.noFlush(); got != tc.want {
				t.Fatalf("noFlush() = %#x, want %#x", got, tc.want)
			}
			if f.flushNeeded() != (tc.want == 0) {
				t.Fatalf("flushNeeded() = %v with noFlush() %#x", f.flushNeeded(), tc.want)
			}
		})
	}
}
