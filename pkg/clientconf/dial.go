package clientconf

import (
	"context"
	"errors"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/qtfs/qtfs/pkg/transport"
)

// Retry says how DialRetry paces and ends its attempts.
type Retry struct {
	// First is the pause after the first failed attempt; each pause
	// doubles, up to Max.
	First, Max time.Duration
	// Attempt bounds one attempt (0: only ctx does).
	Attempt time.Duration
	// Again is told of each failed attempt (numbered from 1) and the pause
	// before the next; it returns false to give up with err. nil: retry
	// every error.
	Again func(attempt int, err error, pause time.Duration) bool
}

// DialRetry dials the server at u and runs open (nil: nothing) on the
// connection, retrying both as r says until they succeed or ctx ends. It
// gives up with the last attempt's error when ctx ends in it or would end
// before the next one, and with ctx's error when ctx ends in a pause.
func DialRetry(ctx context.Context, u transport.URI, sec transport.Security, r Retry,
	open func(context.Context, *grpc.ClientConn) error, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	pause := r.First
	for attempt := 1; ; attempt++ {
		cc, err := dialOnce(ctx, u, sec, r.Attempt, open, opts)
		if err == nil {
			return cc, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		if r.Again != nil && !r.Again(attempt, err, pause) {
			return nil, err
		}
		if d, ok := ctx.Deadline(); ok && time.Now().Add(pause).After(d) {
			return nil, err
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, r.Max)
	}
}

func dialOnce(ctx context.Context, u transport.URI, sec transport.Security, timeout time.Duration,
	open func(context.Context, *grpc.ClientConn) error, opts []grpc.DialOption) (*grpc.ClientConn, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cc, err := transport.Dial(ctx, u, sec, opts...)
	if err != nil || open == nil {
		return cc, err
	}
	if err := open(ctx, cc); err != nil {
		cc.Close()
		return nil, err
	}
	return cc, nil
}

// NotListening reports whether a dial error means that nothing listens
// at the address yet (connection refused, no socket file): a server that
// is starting or restarting.
func NotListening(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)
}
