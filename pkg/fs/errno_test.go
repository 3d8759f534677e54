package fs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"testing"
)

func TestToErrno(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
		ok   bool
	}{
		{"nil", nil, 0, true},
		{"bare errno", syscall.EACCES, syscall.EACCES, true},
		{"path error", &os.PathError{Op: "open", Path: "x", Err: syscall.ENOENT}, syscall.ENOENT, true},
		{"syscall error", os.NewSyscallError("pwrite", syscall.ENOSPC), syscall.ENOSPC, true},
		{"wrapped twice", fmt.Errorf("a: %w", fmt.Errorf("b: %w", syscall.EXDEV)), syscall.EXDEV, true},
		{"enosys becomes eopnotsupp", syscall.ENOSYS, syscall.EOPNOTSUPP, true},
		{"not exist sentinel", fs.ErrNotExist, syscall.ENOENT, true},
		{"exist sentinel", fs.ErrExist, syscall.EEXIST, true},
		{"permission sentinel", fs.ErrPermission, syscall.EACCES, true},
		{"invalid sentinel", fs.ErrInvalid, syscall.EINVAL, true},
		{"closed sentinel", fs.ErrClosed, syscall.EBADF, true},
		{"deadline", context.DeadlineExceeded, syscall.ETIMEDOUT, true},
		{"canceled", context.Canceled, syscall.EINTR, true},
		{"unknown", errors.New("boom"), syscall.EIO, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ToErrno(tc.err)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("ToErrno(%v) = %v, %v; want %v, %v", tc.err, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestErrnoName(t *testing.T) {
	for _, tc := range []struct {
		in   syscall.Errno
		want string
	}{
		{0, "OK"},
		{syscall.ENOENT, "ENOENT"},
		{syscall.Errno(4000), "4000"},
	} {
		if got := ErrnoName(tc.in); got != tc.want {
			t.Errorf("ErrnoName(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
