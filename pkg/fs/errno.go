package fs

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrnoName names an errno for a metric label or a log line: "OK" for 0,
// the constant's name ("ENOENT"), or the number when it has none.
func ErrnoName(e syscall.Errno) string {
	if e == 0 {
		return "OK"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return strconv.Itoa(int(e))
}

// ToErrno converts err into the Linux errno that a caller of the
// filesystem should see. nil is 0. A syscall.Errno anywhere in the chain
// (os.PathError, os.SyscallError, wrapped with %w) is returned as is;
// well-known sentinel errors map to their errno. ok is false when nothing
// matched and the EIO returned is a guess the caller should log.
func ToErrno(err error) (errno syscall.Errno, ok bool) {
	if err == nil {
		return 0, true
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		if e == syscall.ENOSYS { // the kernel would disable the op for good
			return syscall.EOPNOTSUPP, true
		}
		return e, true
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return syscall.ENOENT, true
	case errors.Is(err, fs.ErrExist):
		return syscall.EEXIST, true
	case errors.Is(err, fs.ErrPermission):
		return syscall.EACCES, true
	case errors.Is(err, fs.ErrInvalid):
		return syscall.EINVAL, true
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		return syscall.ETIMEDOUT, true
	case errors.Is(err, context.Canceled):
		return syscall.EINTR, true
	case errors.Is(err, fs.ErrClosed):
		return syscall.EBADF, true
	}
	return syscall.EIO, false
}
