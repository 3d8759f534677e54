package callstream_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/callstream"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// onChannel marks the context of calls that came on a call channel.
type onChannel struct{}

// fakeFS serves Getattr (the path says what to do), Read (unary
// accounting) and Calls.
//
// A Getattr of "block" waits for release or its context's end; it is
// the one call declared blocking (blocking).
type fakeFS struct {
	qtfsv1.UnimplementedFileSystemServer
	calls *callstream.Server

	running   atomic.Int32 // Getattr calls running
	peak      atomic.Int32
	unary     atomic.Int32 // calls that arrived as plain unary calls
	streams   atomic.Int32 // Calls streams opened
	ended     atomic.Int32 // Calls streams that ended
	noReplies atomic.Int32 // "noreply" calls run
	watched   atomic.Int32 // "block" calls whose channel was watched
	canceled  chan string  // paths of blocked calls whose context ended
	release   chan struct{}
}

func (f *fakeFS) Getattr(ctx context.Context, req *qtfsv1.GetattrRequest) (*qtfsv1.AttrResponse, error) {
	n := f.running.Add(1)
	defer f.running.Add(-1)
	for {
		p := f.peak.Load()
		if n <= p || f.peak.CompareAndSwap(p, n) {
			break
		}
	}
	p := string(req.GetPath())
	switch {
	case p == "precondition":
		return nil, status.Error(codes.FailedPrecondition, "no session")
	case p == "panic":
		panic("handler panic")
	case p == "deadline":
		dl, ok := ctx.Deadline()
		if !ok {
			return &qtfsv1.AttrResponse{Errno: -1}, nil
		}
		return &qtfsv1.AttrResponse{Attr: &qtfsv1.Attr{Size: time.Until(dl).Milliseconds()}}, nil
	case p == "noreply":
		f.noReplies.Add(1)
		return &qtfsv1.AttrResponse{Attr: &qtfsv1.Attr{Ino: 5}}, nil
	case p == "carrier":
		if ctx.Value(onChannel{}) != nil {
			return &qtfsv1.AttrResponse{Attr: &qtfsv1.Attr{Ino: 1}}, nil
		}
		return &qtfsv1.AttrResponse{}, nil
	case p == "watched":
		a := &qtfsv1.Attr{}
		if callstream.Watched(ctx) {
			a.Ino = 1
		}
		if ctx.Value(onChannel{}) != nil {
			a.Size = 1
		}
		return &qtfsv1.AttrResponse{Attr: a}, nil
	case p == "block":
		if callstream.Watched(ctx) {
			f.watched.Add(1)
		}
		select {
		case <-ctx.Done():
			f.canceled <- p
			return nil, status.FromContextError(ctx.Err()).Err()
		case <-f.release:
			return &qtfsv1.AttrResponse{}, nil
		}
	}
	return &qtfsv1.AttrResponse{Attr: &qtfsv1.Attr{Ino: req.GetHandle()}}, nil
}

func (f *fakeFS) Read(ctx context.Context, req *qtfsv1.ReadRequest) (*qtfsv1.ReadResponse, error) {
	r := &qtfsv1.ReadResponse{Data: make([]byte, req.GetSize())}
	if callstream.Watched(ctx) {
		r.Errno = -1
	}
	return r, nil
}

func (f *fakeFS) Calls(st grpc.BidiStreamingServer[qtfsv1.CallFrame, qtfsv1.CallFrame]) error {
	f.streams.Add(1)
	defer f.ended.Add(1)
	return f.calls.Serve(st)
}

// blocking declares the fakeFS calls that wait: a Getattr of "block".
var blocking = map[string]func(context.Context, any) bool{
	qtfsv1.FileSystem_Getattr_FullMethodName: func(_ context.Context, req any) bool {
		r, _ := req.(*qtfsv1.GetattrRequest)
		return string(r.GetPath()) == "block"
	},
}

// env is a gRPC server with a fakeFS on a unix socket and a Client to it;
// with channels, also a call channel server on a socket of its own, which
// binds the token "good", and a Client that uses it.
type env struct {
	fs   *fakeFS
	g    *grpc.Server
	sock string
	cc   *grpc.ClientConn
	c    *callstream.Client
	fsc  qtfsv1.FileSystemClient
	intc atomic.Int32 // interceptor runs

	chSock     string
	binds      atomic.Int32 // channels bound
	refused    atomic.Int32 // channels refused
	chFailures atomic.Int32 // ChannelFailed calls
	serving    atomic.Int32 // channels the server serves now
	chMu       sync.Mutex
	chConns    []net.Conn // the server's ends of the channels
}

// carriers runs test once with calls on a Calls stream and once on a call
// channel.
func carriers(t *testing.T, test func(t *testing.T, channels bool)) {
	t.Run("stream", func(t *testing.T) { test(t, false) })
	t.Run("channel", func(t *testing.T) { test(t, true) })
}

// checkCarrier fails when calls did not go on the carrier e was made for:
// with channels, on at most the pool's 4 channels (calls beyond those at
// once go on a stream).
func (e *env) checkCarrier(t *testing.T, channels bool) {
	t.Helper()
	streams, binds := e.fs.streams.Load(), e.binds.Load()
	if channels && (binds == 0 || binds > 4) {
		t.Fatalf("%d streams and %d channels: want calls on at most 4 channels", streams, binds)
	}
	if !channels && streams == 0 {
		t.Fatal("no Calls stream was opened")
	}
}

func newEnv(t testing.TB, maxInflight int, channels bool) *env {
	t.Helper()
	token := ""
	if channels {
		token = "good"
	}
	return newEnvToken(t, maxInflight, token)
}

// newEnvToken is newEnv with calls channels bound with token ("": none);
// with "good", it returns once a call went on a channel.
func newEnvToken(t testing.TB, maxInflight int, token string) *env {
	t.Helper()
	channels := token != ""
	dir := t.TempDir()
	e := &env{sock: filepath.Join(dir, "s.sock"), chSock: filepath.Join(dir, "ch.sock")}
	e.fs = &fakeFS{canceled: make(chan string, 16), release: make(chan struct{})}
	e.fs.calls = callstream.NewServer(&qtfsv1.FileSystem_ServiceDesc, e.fs, callstream.ServerOptions{
		MaxInflight: maxInflight,
		Blocking:    blocking,
		Interceptor: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			e.intc.Add(1)
			defer func() {
				if r := recover(); r != nil {
					err = status.Errorf(codes.Internal, "%s: recovered", info.FullMethod)
				}
			}()
			return h(ctx, req)
		},
	})
	e.serve(t)
	cc, err := grpc.NewClient("unix://"+e.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	e.cc = cc
	opts := callstream.ClientOptions{Direct: func(method string, req any) bool {
		r, ok := req.(*qtfsv1.ReadRequest)
		return ok && r.GetSize() > 1024
	}, NoReply: func(method string, req any) bool {
		r, ok := req.(*qtfsv1.GetattrRequest)
		return ok && string(r.GetPath()) == "noreply"
	}}
	if channels {
		e.serveChannels(t)
		opts.Channel = func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", e.chSock)
		}
		opts.ChannelFailed = func(error) { e.chFailures.Add(1) }
	}
	e.c = callstream.NewClient(cc, opts)
	t.Cleanup(func() { e.c.Close() })
	e.fsc = qtfsv1.NewFileSystemClient(e.c)
	if channels {
		e.c.SetChannelToken([]byte(token))
	}
	if token == "good" {
		e.waitChannel(t)
	}
	return e
}

// waitChannel returns once a call went on a channel: the first calls go
// on a stream while the client opens one.
func (e *env) waitChannel(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := getattr(context.Background(), e.fsc, "carrier", 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetAttr().GetIno() == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no call went on a channel within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// serve (re)starts the gRPC server on e.sock.
func (e *env) serve(t testing.TB) {
	t.Helper()
	l, err := net.Listen("unix", e.sock)
	if err != nil {
		t.Fatal(err)
	}
	e.g = grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		e.fs.unary.Add(1)
		return h(ctx, req)
	}))
	qtfsv1.RegisterFileSystemServer(e.g, e.fs)
	go e.g.Serve(l)
	g := e.g
	t.Cleanup(g.Stop)
}

// serveChannels serves call channels on e.chSock.
func (e *env) serveChannels(t testing.TB) {
	t.Helper()
	l, err := net.Listen("unix", e.chSock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		e.closeChannels()
	})
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			e.chMu.Lock()
			e.chConns = append(e.chConns, conn)
			e.chMu.Unlock()
			e.serving.Add(1)
			go func() {
				defer e.serving.Add(-1)
				e.serveChannel(conn)
			}()
		}
	}()
}

// serveChannel serves one call channel, bound when its token is "good".
func (e *env) serveChannel(conn net.Conn) {
	e.fs.calls.ServeChannel(conn, func(token []byte) (context.Context, func(), error) {
		if string(token) != "good" {
			e.refused.Add(1)
			return nil, nil, status.Error(codes.PermissionDenied, "bad token")
		}
		e.binds.Add(1)
		return context.WithValue(context.Background(), onChannel{}, true), func() {}, nil
	})
}

// closeChannels closes the server's end of every channel.
func (e *env) closeChannels() {
	e.chMu.Lock()
	defer e.chMu.Unlock()
	for _, c := range e.chConns {
		c.Close()
	}
	e.chConns = nil
}

func getattr(ctx context.Context, fsc qtfsv1.FileSystemClient, path string, h uint64) (*qtfsv1.AttrResponse, error) {
	return fsc.Getattr(ctx, &qtfsv1.GetattrRequest{Path: []byte(path), Handle: h})
}

func TestConcurrentCallsGetTheirOwnReplies(t *testing.T) {
	carriers(t, func(t *testing.T, channels bool) {
		e := newEnv(t, 0, channels)
		before := e.intc.Load()
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		for w := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					h := uint64(w*1000 + i)
					r, err := getattr(context.Background(), e.fsc, "x", h)
					if err != nil {
						errs <- err
						return
					}
					if r.GetAttr().GetIno() != h {
						errs <- fmt.Errorf("call %d got the reply of %d", h, r.GetAttr().GetIno())
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := e.fs.unary.Load(); got != 0 {
			t.Fatalf("%d calls went as unary calls, want all on the stream", got)
		}
		if got := e.intc.Load() - before; got != 64*50 {
			t.Fatalf("interceptor ran %d times, want %d", got, 64*50)
		}
		e.checkCarrier(t, channels)
	})
}

func TestStatusCodesAndPanics(t *testing.T) {
	carriers(t, func(t *testing.T, channels bool) {
		e := newEnv(t, 0, channels)
		for _, tc := range []struct {
			path string
			code codes.Code
		}{
			{"precondition", codes.FailedPrecondition},
			{"panic", codes.Internal},
			{"ok", codes.OK},
		} {
			t.Run(tc.path, func(t *testing.T) {
				_, err := getattr(context.Background(), e.fsc, tc.path, 1)
				if got := status.Code(err); got != tc.code {
					t.Fatalf("code %v (%v), want %v", got, err, tc.code)
				}
			})
		}
		t.Run("unknown method", func(t *testing.T) {
			err := e.c.Invoke(context.Background(), "/qtfs.v1.FileSystem/NoSuch", &qtfsv1.GetattrRequest{}, &qtfsv1.AttrResponse{})
			if status.Code(err) != codes.Unimplemented {
				t.Fatalf("got %v, want Unimplemented", err)
			}
		})
	})
}

func TestDeadlineReachesTheServer(t *testing.T) {
	carriers(t, func(t *testing.T, channels bool) {
		e := newEnv(t, 0, channels)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := getattr(ctx, e.fsc, "deadline", 0)
		if err != nil {
			t.Fatal(err)
		}
		if r.GetErrno() != 0 || r.GetAttr().GetSize() < 4000 || r.GetAttr().GetSize() > 5000 {
			t.Fatalf("server saw %d ms left (errno %d), want about 5000", r.GetAttr().GetSize(), r.GetErrno())
		}
		if r, err := getattr(context.Background(), e.fsc, "deadline", 0); err != nil || r.GetErrno() != -1 {
			t.Fatalf("without a deadline: %v, errno %d; want no deadline on the server", err, r.GetErrno())
		}
	})
}

func TestCallerGivingUpCancelsTheServerCall(t *testing.T) {
	carriers(t, func(t *testing.T, channels bool) {
		e := newEnv(t, 0, channels)
		ctx, cancel := context.WithCancel(context.Background())
		done := e.startBlocked(t, ctx)
		cancel()
		waitCode(t, done, codes.Canceled, "its context ended")
		e.waitServerCancel(t)
		// The stream still works.
		if _, err := getattr(context.Background(), e.fsc, "ok", 0); err != nil {
			t.Fatal(err)
		}
	})
}

// TestBlockingDeclared: on a call channel, a call that ServerOptions.Blocking
// says may wait runs with the channel watched, and its caller giving up
// ends it on the server; a call it does not declare (another method, or
// the declared method with a request its function turns down) runs
// without the watch.
func TestBlockingDeclared(t *testing.T) {
	e := newEnv(t, 0, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := e.startBlocked(t, ctx)
	if got := e.fs.watched.Load(); got != 1 {
		t.Fatalf("%d watched calls of \"block\", want the one", got)
	}
	cancel()
	waitCode(t, done, codes.Canceled, "its context ended")
	e.waitServerCancel(t)
	e.waitChannel(t) // the cancel closed the channel: a call on a new one
	r, err := getattr(context.Background(), e.fsc, "watched", 0)
	if err != nil || r.GetAttr().GetSize() != 1 {
		t.Fatalf("a call after: %v, on a channel: %v", err, r.GetAttr().GetSize() == 1)
	}
	if r.GetAttr().GetIno() != 0 {
		t.Fatal("a call Blocking turns down ran with its channel watched")
	}
	if r, err := e.fsc.Read(context.Background(), &qtfsv1.ReadRequest{Size: 8}); err != nil || r.GetErrno() != 0 {
		t.Fatalf("a read: %v, watched: %v; want a call of a method Blocking does not name unwatched", err, r.GetErrno() != 0)
	}
	defer func() {
		if r := recover(); r == nil {
			t.Fatal("NewServer took a Blocking name that is no method of the service")
		}
	}()
	callstream.NewServer(&qtfsv1.FileSystem_ServiceDesc, e.fs, callstream.ServerOptions{
		Blocking: map[string]func(context.Context, any) bool{"/qtfs.v1.FileSystem/NoSuch": nil},
	})
}

// TestInflightBound: a stream runs at most MaxInflight calls at once (a
// channel runs one).
func TestInflightBound(t *testing.T) {
	e := newEnv(t, 2, false)
	wait := e.callsAtOnce(t, 5, "block")
	testutil.WaitFor(t, "two calls to run", 10*time.Second, func() bool { return e.fs.running.Load() == 2 })
	time.Sleep(100 * time.Millisecond) // room for a third call to start wrongly
	if got := e.fs.peak.Load(); got != 2 {
		t.Fatalf("%d calls ran at once, want at most 2", got)
	}
	// Meanwhile the caller side is not stuck: a call can still be sent (it
	// waits for a slot).
	close(e.fs.release)
	wait()
	if got := e.fs.peak.Load(); got != 2 {
		t.Fatalf("%d calls ran at once, want at most 2", got)
	}
}

// callsAtOnce starts n Getattr calls of path at once and returns the
// function that waits for them; a call that fails fails t.
func (e *env) callsAtOnce(t *testing.T, n int, path string) (wait func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := getattr(context.Background(), e.fsc, path, 0); err != nil {
				t.Error(err)
			}
		}()
	}
	return wg.Wait
}

// TestChannelPool: calls one after the other share one channel; calls at
// once take a channel each, up to the pool's 4, and go on a stream while
// none is idle; a call that waited on the server and was answered leaves
// its channel for the next.
func TestChannelPool(t *testing.T) {
	e := newEnv(t, 0, true)
	for i := range 100 {
		if r, err := getattr(context.Background(), e.fsc, "carrier", uint64(i)); err != nil || r.GetAttr().GetIno() != 1 {
			t.Fatalf("call %d in a row: %v, on a channel: %v", i, err, r.GetAttr().GetIno() == 1)
		}
	}
	if e.binds.Load() != 1 {
		t.Fatalf("100 calls in a row: %d channels, want one", e.binds.Load())
	}
	wait := e.callsAtOnce(t, 6, "block")
	testutil.WaitFor(t, "six calls to run", 10*time.Second, func() bool { return e.fs.running.Load() == 6 })
	close(e.fs.release)
	wait()
	// The calls waited (the server watched the channel of the one that
	// had it) and were answered; the pool grows to 4 as calls at once keep
	// finding none idle, and no further.
	for range 50 {
		e.callsAtOnce(t, 6, "ok")()
	}
	if got := e.binds.Load(); got < 2 || got > 4 {
		t.Fatalf("%d channels bound by calls 6 at a time, want 2 to 4", got)
	}
	// Once calls stop coming at once, the pool shrinks back to one channel
	// (those beyond it close after 5 s unused).
	deadline := time.Now().Add(20 * time.Second)
	for e.serving.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d channels still open 20 s after the last call, want 1", e.serving.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r, err := getattr(context.Background(), e.fsc, "carrier", 0); err != nil || r.GetAttr().GetIno() != 1 {
		t.Fatalf("after the pool shrank: %v, on a channel: %v", err, r.GetAttr().GetIno() == 1)
	}
}

// TestNoReply: a call NoReply picks returns once sent on a channel, with
// an empty reply; the server runs it before the next call on the channel,
// which works as ever. On a stream it gets its reply.
func TestNoReply(t *testing.T) {
	carriers(t, func(t *testing.T, channels bool) {
		e := newEnv(t, 0, channels)
		for i := range 50 {
			r, err := getattr(context.Background(), e.fsc, "noreply", 0)
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]uint64{true: 0, false: 5}[channels]; r.GetAttr().GetIno() != want {
				t.Fatalf("reply ino %d, want %d", r.GetAttr().GetIno(), want)
			}
			r, err = getattr(context.Background(), e.fsc, "carrier", 0)
			if err != nil || r.GetAttr().GetIno() != map[bool]uint64{true: 1, false: 0}[channels] {
				t.Fatalf("the call after: %v, %v", r, err)
			}
			if got := e.fs.noReplies.Load(); got != int32(i+1) {
				t.Fatalf("%d calls without reply ran before the next call's reply, want %d", got, i+1)
			}
		}
		if channels && e.binds.Load() != 1 {
			t.Fatalf("%d channels bound, want the one", e.binds.Load())
		}
	})
}

func TestBulkCallsGoDirect(t *testing.T) {
	carriers(t, func(t *testing.T, channels bool) {
		e := newEnv(t, 0, channels)
		if _, err := e.fsc.Read(context.Background(), &qtfsv1.ReadRequest{Size: 512}); err != nil {
			t.Fatal(err)
		}
		if got := e.fs.unary.Load(); got != 0 {
			t.Fatalf("a small read went as a unary call")
		}
		r, err := e.fsc.Read(context.Background(), &qtfsv1.ReadRequest{Size: 4096})
		if err != nil || len(r.GetData()) != 4096 {
			t.Fatalf("read: %v, %d bytes", err, len(r.GetData()))
		}
		if got := e.fs.unary.Load(); got != 1 {
			t.Fatalf("%d unary calls, want the large read as one", got)
		}
		if _, err := e.fsc.Getattr(context.Background(), &qtfsv1.GetattrRequest{}, grpc.WaitForReady(true)); err != nil {
			t.Fatal(err)
		}
		if got := e.fs.unary.Load(); got != 2 {
			t.Fatalf("%d unary calls, want a call with call options sent directly", got)
		}
	})
}

func TestServerRestart(t *testing.T) {
	e := newEnv(t, 0, false)
	if _, err := getattr(context.Background(), e.fsc, "ok", 0); err != nil {
		t.Fatal(err)
	}
	done := e.startBlocked(t, context.Background())
	go e.g.Stop() // waits for the blocked handler, which the stop cancels
	waitCode(t, done, codes.Unavailable, "the server stopped")
	e.serve(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := getattr(ctx, e.fsc, "ok", 0)
		cancel()
		if err == nil {
			break
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			t.Fatalf("after the restart: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call succeeded 20 s after the restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestClosedClient(t *testing.T) {
	carriers(t, func(t *testing.T, channels bool) {
		e := newEnv(t, 0, channels)
		e.c.Close()
		_, err := getattr(context.Background(), e.fsc, "ok", 0)
		if status.Code(err) != codes.Canceled {
			t.Fatalf("after Close: %v, want Canceled", err)
		}
	})
}

func TestChannelRefusedFallsBackToStream(t *testing.T) {
	e := newEnvToken(t, 0, "stolen")
	// The first call goes on a stream and has a channel opened, which is
	// refused; the calls after it stay on the stream, with no new try.
	if _, err := getattr(context.Background(), e.fsc, "ok", 0); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, "a call-channel failure", 10*time.Second, func() bool { return e.chFailures.Load() == 1 })
	for i := range 20 {
		if _, err := getattr(context.Background(), e.fsc, "ok", uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if e.refused.Load() != 1 || e.binds.Load() != 0 || e.fs.streams.Load() != 1 {
		t.Fatalf("%d channels refused, %d bound, %d streams: want the one refusal, then calls on a stream",
			e.refused.Load(), e.binds.Load(), e.fs.streams.Load())
	}
	if got := e.chFailures.Load(); got != 1 {
		t.Fatalf("ChannelFailed called %d times, want once", got)
	}
	// A new token (a new server connection) retires the stream: the next
	// call opens a channel with it, and the stream ends.
	e.c.SetChannelToken([]byte("good"))
	e.waitChannel(t)
	if e.binds.Load() != 1 {
		t.Fatalf("%d channels bound after the new token, want 1", e.binds.Load())
	}
	testutil.WaitFor(t, "a call to end", 10*time.Second, func() bool { return e.fs.ended.Load() >= 1 })
}

func TestChannelBreakFailsCallsInFlight(t *testing.T) {
	e := newEnv(t, 0, true)
	if _, err := getattr(context.Background(), e.fsc, "ok", 0); err != nil {
		t.Fatal(err)
	}
	done := e.startBlocked(t, context.Background())
	e.closeChannels()
	waitCode(t, done, codes.Unavailable, "its channel closed")
	e.waitServerCancel(t) // what ran on the lost channel
	if _, err := getattr(context.Background(), e.fsc, "ok", 0); err != nil {
		t.Fatalf("after the break: %v", err)
	}
	e.waitChannel(t)
	if e.binds.Load() != 2 {
		t.Fatalf("%d channels bound, want a second one", e.binds.Load())
	}
}

func TestChannelFrameLimit(t *testing.T) {
	e := newEnv(t, 0, true)
	before := e.intc.Load()
	huge := make([]byte, 5<<20) // more than the server's 4 MiB frames
	_, err := getattr(context.Background(), e.fsc, string(huge), 0)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("a 5 MiB call: %v, want Unavailable (the server drops the channel)", err)
	}
	if e.fs.running.Load() != 0 || e.intc.Load() != before {
		t.Fatal("the oversized call ran")
	}
	if _, err := getattr(context.Background(), e.fsc, "ok", 0); err != nil {
		t.Fatalf("after the oversized frame: %v", err)
	}
}

// startBlocked starts a call the server holds until it is cancelled
// (or e.fs.release closes) and returns once it runs; its error arrives on
// the channel.
func (e *env) startBlocked(t *testing.T, ctx context.Context) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := getattr(ctx, e.fsc, "block", 0)
		done <- err
	}()
	testutil.WaitFor(t, "a call to run", 10*time.Second, func() bool { return e.fs.running.Load() == 1 })
	return done
}

// waitCode checks the code a call started by startBlocked ends with,
// after what happened to it.
func waitCode(t *testing.T, done <-chan error, want codes.Code, after string) {
	t.Helper()
	select {
	case err := <-done:
		if status.Code(err) != want {
			t.Fatalf("call in flight got %v after %s, want %v", err, after, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("call in flight still waiting 10 s after %s", after)
	}
}

// waitServerCancel checks that the server's handler of a blocked call
// saw its context end.
func (e *env) waitServerCancel(t *testing.T) {
	t.Helper()
	select {
	case <-e.fs.canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the server's call was not cancelled within 5 s")
	}
}

// BenchmarkCallCarriers runs the same small call as a plain unary call,
// on a Calls stream and on a call channel (both over unix sockets),
// interleaved in rounds, and reports each latency and the ratios.
func BenchmarkCallCarriers(b *testing.B) {
	streamEnv := newEnv(b, 0, false)
	chanEnv := newEnv(b, 0, true)
	direct := qtfsv1.NewFileSystemClient(streamEnv.cc)
	req := &qtfsv1.GetattrRequest{Path: []byte("ok"), Handle: 7}
	ctx := context.Background()
	peers := []struct {
		name string
		fsc  qtfsv1.FileSystemClient
		took time.Duration
	}{{"unary", direct, 0}, {"stream", streamEnv.fsc, 0}, {"channel", chanEnv.fsc, 0}}
	const round = 100
	b.ResetTimer()
	for done := 0; done < b.N; done += round {
		n := min(round, b.N-done)
		for i := range peers {
			t0 := time.Now()
			for range n {
				if _, err := peers[i].fsc.Getattr(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			peers[i].took += time.Since(t0)
		}
	}
	for _, p := range peers {
		b.ReportMetric(float64(p.took.Nanoseconds())/1e3/float64(b.N), p.name+"-µs/call")
	}
	b.ReportMetric(float64(peers[0].took)/float64(peers[2].took), "channel-vs-unary-x")
	b.ReportMetric(float64(peers[1].took)/float64(peers[2].took), "channel-vs-stream-x")
}
