package hostfs

import (
	"context"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/callstream"
)

// pollSlice is how long one wait on a file without positions lasts
// before the request's cancellation is looked at again.
const pollSlice = 100 * time.Millisecond

// waitReady waits until fd is ready for events (or has an error or a
// hang-up, which the following read or write reports), or ctx ends: then
// EINTR. A caller on the DPU that was killed cancels its request, and the
// server stops waiting for it.
func waitReady(ctx context.Context, fd int, events int16) error {
	for slice := 0; ; slice = int(pollSlice / time.Millisecond) {
		if ctx.Err() != nil {
			return unix.EINTR
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: events}}
		n, err := unix.Poll(fds, slice)
		if n == 0 && err == nil && slice == 0 {
			// Not ready: this call waits. On a call channel, have the
			// client's cancel watched meanwhile.
			callstream.WillWait(ctx)
		}
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
