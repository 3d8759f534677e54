package session

import (
	"context"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Reply is a reply of the FileSystem service: every one has an errno
// field.
type Reply interface {
	GetErrno() int32
}

// CallOptions say how one call runs. The zero value: no deadline but
// ctx's, nobody to cancel it for, the default codec.
type CallOptions struct {
	// Timeout bounds each attempt of the call; none when 0.
	Timeout time.Duration
	// For is the process the call is made for when it may be killed
	// while the call waits (a FUSE request's caller): the call is not
	// cancelled when the request is merely interrupted, but it is, with
	// EINTR, once the process is being killed too, so that a killed
	// process does not wait for the server and the server stops the
	// operation. Without reconnecting (NewDirect) nothing watches it.
	For Caller
	// Data sends the call through the session's data codec: the data of
	// a Read reply stays in the buffer it arrived in (TakeReadBuffer), a
	// Write request is encoded into a pooled buffer. For the parts of
	// large reads and writes.
	Data bool
}

// Caller is a process a call is made for (CallOptions.For); the zero
// value is none.
type Caller struct {
	// Interrupted is closed once the request the call serves was
	// interrupted (a FUSE request's Done channel).
	Interrupted <-chan struct{}
	// Pid is the calling thread, as the FUSE request names it.
	Pid uint32
}

// Call makes one call of the FileSystem service: fn, a method expression
// of the client (qtfsv1.FileSystemClient.Lookup), with req, and returns
// the reply and the errno of the reply or of the transport failure. The
// reply is meaningful only when the errno is 0. op names the call in
// metrics and logs. ctx bounds the whole call, waits for a reconnect
// included (EINTR when it ends there); each attempt has o.Timeout too.
//
// Across a lost session or connection the call waits for the reconnect,
// is sent again when that is safe (it never reached the server, or
// sending it twice does no harm) and fails with EIO when it is not, or
// when the outage outlasts the reconnect timeout (ENOTCONN for a request
// that was never sent). req is not written to: the server's ids go in a
// copy.
func Call[Req any, Resp Reply](ctx context.Context, s *Session, op string,
	fn func(qtfsv1.FileSystemClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req, o CallOptions) (Resp, syscall.Errno) {
	start := time.Now()
	var resp Resp
	var e syscall.Errno
	if s.rc == nil {
		resp, e = callOnce(ctx, s, op, fn, req, o)
	} else {
		resp, e = callAcross(ctx, s, op, fn, req, o)
	}
	s.observe(op, start, e)
	return resp, e
}

// callOnce is a call of a session without reconnecting: one RPC.
func callOnce[Req any, Resp Reply](ctx context.Context, s *Session, op string,
	fn func(qtfsv1.FileSystemClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req, o CallOptions) (Resp, syscall.Errno) {
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	resp, err := send(ctx, s, fn, req, o)
	if err != nil {
		return resp, s.rpcErrno(op, err)
	}
	return resp, s.wireErrno(op, resp.GetErrno())
}

// callAcross is a call of a reconnecting session: attempts until one is
// answered, or fails in a way that sending again cannot mend.
func callAcross[Req any, Resp Reply](ctx context.Context, s *Session, op string,
	fn func(qtfsv1.FileSystemClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req, o CallOptions) (Resp, syscall.Errno) {
	r := s.rc
	var zero Resp
	if c := callOf(req); c.releases {
		h := c.handlesF[0].uint(req)
		if r.release(h) {
			return zero, 0
		}
		defer r.forget(h)
	}
	sent := false
	for {
		gen, epoch, e := r.waitUp(ctx, sent)
		if e != 0 {
			return zero, e
		}
		a := attempt(ctx, s, gen, epoch, op, fn, req, o)
		switch a.outcome {
		case unsent:
			continue
		case answered:
			return a.resp, a.errno
		}
		sent = true
		code := status.Code(a.err)
		switch {
		case epoch.Err() != nil && ctx.Err() == nil:
			// The outage outlasted the reconnect timeout.
			s.metrics.rpcErrors.WithLabelValues(op, "GaveUp").Inc()
			return zero, syscall.EIO
		case code == codes.FailedPrecondition:
			// The server does not know the session: nothing was done.
			r.markDown(gen, "the server lost the session", a.err)
			continue
		case code == codes.Unavailable && ctx.Err() == nil:
			r.markDown(gen, "the connection failed", a.err)
			if !a.once {
				continue
			}
			s.log.Warn("qtfs call lost with the connection; it may or may not have been done, and is not sent twice",
				zap.String("op", op), zap.String("server", s.server), zap.Error(a.err))
		}
		return zero, s.rpcErrno(op, a.err)
	}
}

// outcome is how one attempt ended.
type outcome uint8

const (
	// unsent: the request was not sent (the session changed, or the
	// connection is not ready for a request that cannot be sent twice);
	// wait for the session and try again.
	unsent outcome = iota
	// answered: the call ends with the attempt's reply and errno (the
	// server's answer, an id that cannot be translated, a killed caller).
	answered
	// failed: the RPC failed with err.
	failed
)

// attemptResult is what one attempt did.
type attemptResult[Resp any] struct {
	outcome outcome
	resp    Resp
	errno   syscall.Errno
	err     error
	// once: the request may not be sent twice.
	once bool
}

// attempt sends req once in server session gen, holding genMu (read)
// from the translation of its ids to the record of its reply.
func attempt[Req any, Resp Reply](ctx context.Context, s *Session, gen uint64, epoch context.Context, op string,
	fn func(qtfsv1.FileSystemClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req, o CallOptions) (a attemptResult[Resp]) {
	r := s.rc
	r.genMu.RLock()
	defer r.genMu.RUnlock()
	if up, g := r.state(); !up || g != gen {
		return a
	}
	wire, e, retry := r.translate(ctx, gen, req)
	switch {
	case retry:
		return a
	case e != 0:
		a.outcome, a.errno = answered, e
		return a
	}
	a.once = !r.retryable(req)
	if a.once && !r.ready(ctx) {
		// Not sent: wait for the connection like any call.
		r.markDown(gen, "connection not ready", nil)
		return a
	}
	actx, cancel := withTimeout(ctx, o.Timeout)
	defer cancel()
	stop := context.AfterFunc(epoch, cancel)
	defer stop()
	var k *killedCall
	if o.For.Interrupted != nil {
		k = &killedCall{caller: o.For, start: time.Now(), cancel: cancel}
		r.callers.add(k)
	}
	r.begin()
	resp, err := send(actx, s, fn, wire.(Req), o)
	r.end(err == nil)
	if k != nil {
		r.callers.remove(k)
	}
	switch {
	case err != nil && k != nil && k.wasKilled():
		s.metrics.rpcErrors.WithLabelValues(op, "CallerKilled").Inc()
		a.outcome, a.errno = answered, syscall.EINTR
	case err != nil:
		a.outcome, a.err = failed, err
	default:
		a.outcome, a.resp, a.errno = answered, resp, s.wireErrno(op, resp.GetErrno())
		if a.errno == 0 {
			r.register(gen, req, resp)
		}
	}
	return a
}

// send makes the RPC of one attempt.
func send[Req any, Resp Reply](ctx context.Context, s *Session,
	fn func(qtfsv1.FileSystemClient, context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req, o CallOptions) (Resp, error) {
	if o.Data {
		return fn(s.client, ctx, req, s.dataOpts...)
	}
	return fn(s.client, ctx, req)
}

// withTimeout is context.WithTimeout, or WithCancel when timeout is 0.
func withTimeout(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}
