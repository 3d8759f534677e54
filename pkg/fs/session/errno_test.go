package session

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestWireErrno is the errno mapping of replies: what the wire says is
// what the caller sees, except ENOSYS (which would disable the operation
// in the kernel for good) and values that are no errno.
func TestWireErrno(t *testing.T) {
	s := NewDirect(nil, zaptest.NewLogger(t))
	for _, tc := range []struct {
		name string
		in   int32
		want syscall.Errno
	}{
		{"ok", 0, 0},
		{"ENOENT", int32(syscall.ENOENT), syscall.ENOENT},
		{"EACCES", int32(syscall.EACCES), syscall.EACCES},
		{"ERANGE", int32(syscall.ERANGE), syscall.ERANGE},
		{"ENOSYS is EOPNOTSUPP", int32(syscall.ENOSYS), syscall.EOPNOTSUPP},
		{"negative", -2, syscall.EIO},
		{"past MAX_ERRNO", 4096, syscall.EIO},
		{"MAX_ERRNO", 4095, syscall.Errno(4095)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.wireErrno("Test", tc.in); got != tc.want {
				t.Errorf("wireErrno(%d) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

// TestRPCErrno is the errno of a transport failure.
func TestRPCErrno(t *testing.T) {
	s := NewDirect(nil, zaptest.NewLogger(t))
	for _, tc := range []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"unavailable", status.Error(codes.Unavailable, "connection lost"), syscall.EIO},
		{"session gone", status.Error(codes.FailedPrecondition, "no handshake"), syscall.EIO},
		{"deadline", status.Error(codes.DeadlineExceeded, "slow"), syscall.EIO},
		{"internal", status.Error(codes.Internal, "panic"), syscall.EIO},
		{"interrupted", status.Error(codes.Canceled, "interrupted"), syscall.EINTR},
		{"context canceled", context.Canceled, syscall.EINTR},
		{"plain error", errors.New("boom"), syscall.EIO},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s.rpcErrno("Test", tc.err); got != tc.want {
				t.Errorf("rpcErrno(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
