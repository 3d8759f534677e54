package hostfs

import (
	"context"
	"math"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Locks are open-file-description locks (F_OFD_*) and flock(2) on the
// handle's fd: they belong to the handle, so two handles conflict as two
// opens would locally, and closing the handle drops them. The kernel lock
// owner in the requests is not used.

// Polling bounds of a blocking lock wait.
const (
	lockPollMin = time.Millisecond
	lockPollMax = 50 * time.Millisecond
)

// toFlock converts a wire lock into a struct flock for F_OFD_*.
func toFlock(l *qtfsv1.Lock) (unix.Flock_t, syscall.Errno) {
	if l == nil {
		return unix.Flock_t{}, syscall.EINVAL
	}
	typ := l.GetType()
	if typ != unix.F_RDLCK && typ != unix.F_WRLCK && typ != unix.F_UNLCK {
		return unix.Flock_t{}, syscall.EINVAL
	}
	start, end := l.GetStart(), l.GetEnd()
	if start > math.MaxInt64 || end < start {
		return unix.Flock_t{}, syscall.EINVAL
	}
	var length int64 // 0: to end of file
	if end < math.MaxInt64 {
		length = int64(end-start) + 1
	}
	return unix.Flock_t{Type: int16(typ), Whence: unix.SEEK_SET, Start: int64(start), Len: length}, 0
}

// fromFlock converts a struct flock into a wire lock.
func fromFlock(fl *unix.Flock_t) *qtfsv1.Lock {
	l := &qtfsv1.Lock{Type: uint32(fl.Type), Start: uint64(fl.Start), End: math.MaxUint64}
	if fl.Len > 0 {
		l.End = uint64(fl.Start + fl.Len - 1)
	}
	if fl.Pid > 0 { // OFD lock holders report -1
		l.Pid = uint32(fl.Pid)
	}
	return l
}

// Getlk tests for a lock conflicting with the given one.
func (s *Server) Getlk(ctx context.Context, req *qtfsv1.GetlkRequest) (*qtfsv1.GetlkResponse, error) {
	const op = "Getlk"
	resp := &qtfsv1.GetlkResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		fl, e := toFlock(req.GetLock())
		if e != 0 {
			return e
		}
		if err := unix.FcntlFlock(uintptr(h.fd), unix.F_OFD_GETLK, &fl); err != nil {
			return s.errnoOf(op, err)
		}
		resp.Lock = fromFlock(&fl)
		return 0
	})
	return reply(resp, err)
}

// Setlk takes or releases a record lock or a flock(2) lock. With wait it
// polls until the lock is taken or the call is cancelled (EINTR).
func (s *Server) Setlk(ctx context.Context, req *qtfsv1.SetlkRequest) (*qtfsv1.ErrnoResponse, error) {
	const op = "Setlk"
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		var try func() error
		if req.GetFlock() {
			how := 0
			switch req.GetLock().GetType() {
			case unix.F_RDLCK:
				how = unix.LOCK_SH
			case unix.F_WRLCK:
				how = unix.LOCK_EX
			case unix.F_UNLCK:
				how = unix.LOCK_UN
			default:
				return syscall.EINVAL
			}
			try = func() error { return unix.Flock(h.fd, how|unix.LOCK_NB) }
		} else {
			fl, e := toFlock(req.GetLock())
			if e != 0 {
				return e
			}
			try = func() error {
				f := fl // F_OFD_SETLK may write to it
				return unix.FcntlFlock(uintptr(h.fd), unix.F_OFD_SETLK, &f)
			}
		}
		delay := lockPollMin
		for {
			err := try()
			if err != unix.EAGAIN && err != unix.EACCES {
				return s.errnoOf(op, err)
			}
			if !req.GetWait() {
				return syscall.EAGAIN
			}
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return syscall.EINTR
			case <-t.C:
			}
			delay = min(2*delay, lockPollMax)
		}
	})
	return reply(resp, err)
}
