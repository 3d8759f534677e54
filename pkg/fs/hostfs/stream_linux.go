package hostfs

import (
	"context"
	"time"

	"golang.org/x/sys/unix"
)

// pollSlice is how long one wait on a file without positions lasts
// before the request's cancellation is looked at again.
const pollSlice = 100 * time.Millisecond

// waitReady waits until fd is ready for events (or has an error or a
// hang-up, which the following read or write reports), or ctx ends: then
// EINTR. A caller on the DPU that was killed cancels its request, and the
// server stops waiting for it (on a call channel, because the call is
// declared blocking: see blockingCalls).
func waitReady(ctx context.Context, fd int, events int16) error {
	for slice := 0; ; slice = int(pollSlice / time.Millisecond) {
		if ctx.Err() != nil {
			return unix.EINTR
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, slice)
		switch {
		case err == unix.EINTR:
		case err != nil:
			return err
		case n > 0:
			return nil
		}
	}
}

// readStream is the one read(2) of a file without positions (a pipe, a
// fifo, some proc and sysfs files), which may wait for data for good: it
// waits in slices and gives up with EINTR when ctx ends.
func readStream(ctx context.Context, fd int, buf []byte) (int, error) {
	if err := waitReady(ctx, fd, unix.POLLIN); err != nil {
		return 0, err
	}
	return unix.Read(fd, buf)
}

// writeStream is the one write(2) of a file without positions, which may
// wait for room (a full pipe): it waits in slices and gives up with EINTR
// when ctx ends.
func writeStream(ctx context.Context, fd int, data []byte) (int, error) {
	if err := waitReady(ctx, fd, unix.POLLOUT); err != nil {
		return 0, err
	}
	return unix.Write(fd, data)
}

// noPositions reports whether fd refuses positions (pread(2) gives ESPIPE:
// a pipe, a fifo, a socket, a terminal, some proc and sysfs files), so
// that a Read or Write of it is a read(2) or write(2) that may wait. The
// zero-length pread reads nothing.
func noPositions(fd int) bool {
	_, err := unix.Pread(fd, nil, 0)
	return err == unix.ESPIPE
}
