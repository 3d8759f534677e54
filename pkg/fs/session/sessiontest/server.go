package sessiontest

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/faultproxy"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/transport"
	"google.golang.org/grpc/credentials/insecure"
)

// Server is a hostfs server on a TCP port behind a fault proxy; it can
// be killed and started again on the same port. Its clients dial Proxy.
type Server struct {
	t *testing.T
	// Export is the server's one export, a temporary directory.
	Export string
	addr   string
	// Proxy stands between the clients and the server: its faults (Cut,
	// Stall) are the connection's.
	Proxy *faultproxy.Proxy
	// Slow, when set, delays the rpc of that name (after it ran).
	Slow atomic.Value
	// Stall, when set, names an rpc the server never answers: each call
	// of it waits, without running, until its client cancels it.
	Stall atomic.Value
	// Stalled counts the calls waiting so; Cancelled the ones that ended
	// because their client cancelled them.
	Stalled, Cancelled atomic.Int64

	mu  sync.Mutex
	srv *hostfs.Server
	g   *grpc.Server
}

func NewServer(t *testing.T) *Server {
	t.Helper()
	fs := &Server{t: t, Export: t.TempDir()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs.addr = ln.Addr().String()
	fs.serve(ln)
	fs.Proxy, err = faultproxy.Listen("tcp", "127.0.0.1:0", fs.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fs.Proxy.Close()
		fs.Stop()
	})
	return fs
}

func (fs *Server) serve(ln net.Listener) {
	slow := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if stall, _ := fs.Stall.Load().(string); stall != "" && strings.HasSuffix(info.FullMethod, "/"+stall) {
			fs.Stalled.Add(1)
			<-ctx.Done()
			fs.Stalled.Add(-1)
			if errors.Is(ctx.Err(), context.Canceled) {
				fs.Cancelled.Add(1)
			}
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		resp, err := h(ctx, req)
		if slow, _ := fs.Slow.Load().(string); slow != "" && strings.HasSuffix(info.FullMethod, "/"+slow) {
			time.Sleep(500 * time.Millisecond)
		}
		return resp, err
	}
	srv, err := hostfs.New(hostfs.Options{
		Exports:      []hostfs.Export{{Path: fs.Export}},
		Logger:       zaptest.NewLogger(fs.t, zaptest.Level(zap.WarnLevel)).Named("hostfs"),
		ServerName:   "flaky",
		Interceptor:  slow,
		CallChannels: true,
	})
	if err != nil {
		fs.t.Fatal(err)
	}
	// As qtfs-server serves: call channels beside the gRPC connections.
	creds, err := transport.ServerCredentials(transport.Security{Insecure: true})
	if err != nil {
		fs.t.Fatal(err)
	}
	split, err := transport.SplitChannels(ln, creds, srv.ServeChannel)
	if err != nil {
		fs.t.Fatal(err)
	}
	g := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(creds))...)
	srv.Register(g)
	go g.Serve(split)
	fs.mu.Lock()
	fs.srv, fs.g = srv, g
	fs.mu.Unlock()
}

// Stop kills the server: every connection drops, every session is lost.
func (fs *Server) Stop() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.g != nil {
		fs.g.Stop()
		fs.srv.Close()
		fs.g, fs.srv = nil, nil
	}
}

// Restart kills the server and starts a new one on the same port.
func (fs *Server) Restart() {
	fs.t.Helper()
	fs.Stop()
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = net.Listen("tcp", fs.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		fs.t.Fatal(err)
	}
	fs.serve(ln)
}

// Sessions counts the sessions the server holds.
func (fs *Server) Sessions() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.srv == nil {
		return 0
	}
	return fs.srv.Sessions()
}

// OpenHandles counts the handles open on the server.
func (fs *Server) OpenHandles() int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.srv == nil {
		return 0
	}
	return fs.srv.OpenHandles()
}

// WaitNoHandles waits up to 5 s for the server to hold no open handle
// (a Release does not wait for the server to close), and fails saying
// why when it still holds some.
func (fs *Server) WaitNoHandles(t *testing.T, why string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		open := fs.OpenHandles()
		if open == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d handles still open on the server: %s", open, why)
		}
	}
}

// Dial connects to the server through the proxy; the connection is
// closed when the test ends.
func (fs *Server) Dial(t testing.TB) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+fs.Proxy.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// DialChannel opens a call channel through the proxy (a session's
// Options.DialChannel), so that the proxy's faults cut call channels too.
func (fs *Server) DialChannel(ctx context.Context) (net.Conn, error) {
	uri, err := transport.ParseURI("tcp://" + fs.Proxy.Addr().String())
	if err != nil {
		return nil, err
	}
	return transport.DialChannel(ctx, uri, transport.Security{Insecure: true})
}
