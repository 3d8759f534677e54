package fifo

import (
	"context"
	"errors"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ChunkSize is the most a bridge moves in one message: a pipe's default
// capacity.
const ChunkSize = 64 << 10

// errNotFifo is the answer for a path that names something other than a
// FIFO.
var errNotFifo = errors.New("not a FIFO")

// openWait opens the FIFO that the O_PATH descriptor pfd holds, for
// writing or for reading, waiting as open(2) does for a peer on this
// machine, until ctx ends. It opens through /proc/self/fd, so a FIFO
// unlinked meanwhile is still the one opened, and released.
//
// A wait that ctx ends is released by standing in for the missing peer:
// the other end is opened non-blocking for an instant (which a reader
// always may, and a writer may once a reader waits), then both are
// closed. The file returned is non-blocking, in the runtime's poller, so
// closing it ends a Read or Write blocked on it.
func openWait(ctx context.Context, pfd int, write bool) (*os.File, error) {
	flag, peer := unix.O_RDONLY, unix.O_WRONLY
	if write {
		flag, peer = unix.O_WRONLY, unix.O_RDONLY
	}
	via := "/proc/self/fd/" + strconv.Itoa(pfd)
	type result struct {
		fd  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		fd, err := unix.Open(via, flag|unix.O_CLOEXEC, 0)
		done <- result{fd, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		r = release(via, peer, done)
		if r.err == nil {
			unix.Close(r.fd)
			r = result{-1, ctx.Err()}
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if err := unix.SetNonblock(r.fd, true); err != nil {
		unix.Close(r.fd)
		return nil, err
	}
	return os.NewFile(uintptr(r.fd), via), nil
}

// release ends an open of via that waits for a peer, by opening the peer
// end non-blocking, and returns what that open returned.
func release[R any](via string, peer int, done <-chan R) R {
	for {
		// ENXIO: a writer that opens non-blocking needs a reader, and the
		// waiting open may not have begun yet. Try again until it has.
		if fd, err := unix.Open(via, peer|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err == nil {
			r := <-done
			unix.Close(fd)
			return r
		}
		select {
		case r := <-done:
			return r
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// checkFifo returns errNotFifo unless fd is a FIFO.
func checkFifo(fd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return errNotFifo
	}
	return nil
}
