package sockproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// ClientMetrics are the DPU side's collectors, shared by every Proxy of a
// process: qtfs_client_sockproxy_*.
type ClientMetrics struct {
	m      *metrics
	active atomic.Int64
}

// NewClientMetrics registers the DPU side's collectors on reg (nil: none).
func NewClientMetrics(reg prometheus.Registerer) (*ClientMetrics, error) {
	cm := &ClientMetrics{}
	m, err := newMetrics("qtfs_client_sockproxy", "from the DPU", reg, func() float64 { return float64(cm.active.Load()) })
	if err != nil {
		return nil, err
	}
	cm.m = m
	return cm, nil
}

// ProxyOptions configure one Proxy.
type ProxyOptions struct {
	// Listen is the path of the local unix socket to create. Its
	// directory is created when missing; a stale socket there (nothing
	// answers) is replaced, a live one or another file is an error.
	Listen string
	// Remote is the host socket each connection is forwarded to.
	Remote string
	// Mode is the permission of the socket file (0660 when zero).
	Mode os.FileMode
	// MaxConns bounds the connections open at once (0: DefaultMaxConns).
	MaxConns int
	// Logger receives the proxy's logs; nil logs nothing.
	Logger *zap.Logger
	// Metrics counts connections and bytes; nil counts nothing exported.
	Metrics *ClientMetrics
}

// Stats are a Proxy's counters.
type Stats struct {
	Active int    `json:"active"`
	Total  uint64 `json:"total"`
	Failed uint64 `json:"failed"`
}

// Proxy is the DPU end of a socket proxy: a listening unix socket whose
// every connection is forwarded to one host socket.
type Proxy struct {
	opts   ProxyOptions
	client qtfsv1.SocketProxyClient
	log    *zap.Logger
	m      *ClientMetrics
	l      *net.UnixListener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	total  atomic.Uint64
	failed atomic.Uint64

	mu    sync.Mutex
	conns map[*net.UnixConn]struct{}
}

// Listen creates the local socket and starts forwarding its connections
// over cc until Close.
func Listen(cc grpc.ClientConnInterface, opts ProxyOptions) (*Proxy, error) {
	p, err := newProxy(cc, opts)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(opts.Listen), 0o755); err != nil {
		return nil, fmt.Errorf("sockproxy: listen %s: %w", opts.Listen, err)
	}
	if err := RemoveStale(opts.Listen); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: opts.Listen, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("sockproxy: listen %s: %w", opts.Listen, err)
	}
	if err := os.Chmod(opts.Listen, p.opts.Mode); err != nil {
		l.Close()
		return nil, fmt.Errorf("sockproxy: listen %s: %w", opts.Listen, err)
	}
	p.l = l
	p.wg.Add(1)
	go p.serve()
	p.log.Info("sockproxy: listening")
	return p, nil
}

// NewDialer returns a Proxy that listens nowhere: its connections are
// made in process with DialContext, for a local server that speaks the
// host socket's protocol itself (pkg/ctrdproxy). opts.Listen names it in
// logs and status only.
func NewDialer(cc grpc.ClientConnInterface, opts ProxyOptions) (*Proxy, error) {
	return newProxy(cc, opts)
}

func newProxy(cc grpc.ClientConnInterface, opts ProxyOptions) (*Proxy, error) {
	if !filepath.IsAbs(opts.Listen) || !filepath.IsAbs(opts.Remote) {
		return nil, fmt.Errorf("sockproxy: listen %q, remote %q: want absolute paths", opts.Listen, opts.Remote)
	}
	if opts.Mode == 0 {
		opts.Mode = 0o660
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	p := &Proxy{opts: opts, client: qtfsv1.NewSocketProxyClient(cc), log: opts.Logger, m: opts.Metrics,
		conns: map[*net.UnixConn]struct{}{}}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	p.log = p.log.With(zap.String("listen", opts.Listen), zap.String("host_socket", opts.Remote))
	if p.m == nil {
		p.m, _ = NewClientMetrics(nil)
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// DialContext returns a new connection to the host socket: one end of a
// socket pair whose other end is forwarded as an accepted connection
// would be. The network and address are ignored (the Proxy has one host
// socket); a failure to reach the host shows as the connection closing.
func (p *Proxy) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	if err := p.ctx.Err(); err != nil {
		return nil, fmt.Errorf("sockproxy: %s: closed", p.opts.Listen)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("sockproxy: socketpair: %w", err)
	}
	ours, err := fileConn(fds[0])
	if err != nil {
		unix.Close(fds[1])
		return nil, err
	}
	theirs, err := fileConn(fds[1])
	if err != nil {
		ours.Close()
		return nil, err
	}
	if !p.track(ours) {
		ours.Close()
		theirs.Close()
		return nil, fmt.Errorf("sockproxy: %s: too many connections (%d)", p.opts.Listen, p.opts.MaxConns)
	}
	return theirs, nil
}

// fileConn turns a socket descriptor into a *net.UnixConn that owns it.
func fileConn(fd int) (*net.UnixConn, error) {
	f := os.NewFile(uintptr(fd), "socketpair")
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("sockproxy: socketpair: %w", err)
	}
	return c.(*net.UnixConn), nil
}

// RemoveStale removes a socket file at path that nothing answers on; a
// live socket, or another kind of file, there is an error.
func RemoveStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sockproxy: listen %s: %w", path, err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("sockproxy: listen %s: a file that is not a socket is in the way", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("sockproxy: listen %s: another process listens on it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sockproxy: listen %s: remove stale socket: %w", path, err)
	}
	return nil
}

// Listen returns the local socket path.
func (p *Proxy) Listen() string { return p.opts.Listen }

// Remote returns the host socket path.
func (p *Proxy) Remote() string { return p.opts.Remote }

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	n := len(p.conns)
	p.mu.Unlock()
	return Stats{Active: n, Total: p.total.Load(), Failed: p.failed.Load()}
}

// Close stops listening, removes the socket file, cuts the open
// connections and waits for them to end.
func (p *Proxy) Close() error {
	var err error
	if p.l != nil {
		err = p.l.Close() // unlinks the socket file
	}
	p.cancel()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	var backoff time.Duration
	for {
		c, err := p.l.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || p.ctx.Err() != nil {
				return
			}
			// EMFILE and the like: wait a little rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			p.log.Warn("sockproxy: accept", zap.Error(err), zap.Duration("retry_in", backoff))
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		if !p.track(c) {
			c.Close()
		}
	}
}

// track forwards connection c in a goroutine of its own until it ends;
// false when there are too many already.
func (p *Proxy) track(c *net.UnixConn) bool {
	p.total.Add(1)
	p.mu.Lock()
	if len(p.conns) >= p.opts.MaxConns {
		p.mu.Unlock()
		p.failed.Add(1)
		p.m.m.conns.WithLabelValues(resultExhausted).Inc()
		p.log.Warn("sockproxy: too many connections, closing a new one", zap.Int("max", p.opts.MaxConns))
		return false
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	p.m.active.Add(1)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() {
			p.mu.Lock()
			delete(p.conns, c)
			p.mu.Unlock()
			p.m.active.Add(-1)
			c.Close()
		}()
		if err := p.handle(c); err != nil {
			p.failed.Add(1)
		}
	}()
	return true
}

// handle forwards one accepted connection; it returns an error when the
// connection could not be made or was cut.
func (p *Proxy) handle(conn *net.UnixConn) error {
	ctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	stream, err := p.client.Connect(ctx)
	if err != nil {
		p.m.m.conns.WithLabelValues(resultError).Inc()
		p.log.Warn("sockproxy: open a stream to the server", zap.Error(err))
		return err
	}
	if err := stream.Send(&qtfsv1.SocketRequest{Msg: &qtfsv1.SocketRequest_Open{Open: &qtfsv1.SocketOpen{Path: []byte(p.opts.Remote)}}}); err != nil {
		return p.streamFailed(stream, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return p.streamFailed(stream, err)
	}
	switch m := first.GetMsg().(type) {
	case *qtfsv1.SocketResponse_Connected:
	case *qtfsv1.SocketResponse_Error:
		result := resultFailed
		switch syscall.Errno(m.Error.GetErrno()) {
		case syscall.EACCES, syscall.EINVAL:
			result = resultRefused
		case syscall.ENOENT:
			result = resultNotFound
		}
		p.m.m.conns.WithLabelValues(result).Inc()
		p.log.Warn("sockproxy: the host refused the connection; closing it",
			zap.String("errno", syscall.Errno(m.Error.GetErrno()).Error()), zap.String("reason", m.Error.GetMessage()))
		return errors.New(m.Error.GetMessage())
	default:
		p.m.m.conns.WithLabelValues(resultError).Inc()
		p.log.Warn("sockproxy: unexpected first answer from the server")
		return errors.New("sockproxy: unexpected first answer")
	}
	p.m.m.conns.WithLabelValues(resultOK).Inc()
	return p.pump(ctx, cancel, stream, conn)
}

// streamFailed reports a stream that ended before the server answered.
func (p *Proxy) streamFailed(stream qtfsv1.SocketProxy_ConnectClient, err error) error {
	if errors.Is(err, io.EOF) {
		// Send failed: the reason comes with Recv.
		if _, rerr := stream.Recv(); rerr != nil {
			err = rerr
		}
	}
	p.m.m.conns.WithLabelValues(resultError).Inc()
	if st, ok := status.FromError(err); ok {
		p.log.Warn("sockproxy: the server did not take the connection; closing it", zap.Stringer("code", st.Code()), zap.String("reason", st.Message()))
	} else {
		p.log.Warn("sockproxy: the server did not take the connection; closing it", zap.Error(err))
	}
	return err
}

// pump forwards bytes both ways. The local-to-host direction runs in its
// own goroutine, the only sender of the stream; the host-to-local one
// here. It returns once the stream ended, and the sender too.
func (p *Proxy) pump(ctx context.Context, cancel context.CancelFunc, stream qtfsv1.SocketProxy_ConnectClient, conn *net.UnixConn) error {
	sent := make(chan error, 1)
	go func() {
		buf, oob := make([]byte, ChunkSize), make([]byte, oobSize)
		for {
			n, rerr := readChunk(conn, buf, oob)
			if errors.Is(rerr, ErrFDPassing) {
				p.m.m.cuts.WithLabelValues(cutFDPassing).Inc()
				p.log.Error("sockproxy: a local client passed file descriptors over a proxied socket; they were closed and the connection is cut (fd passing cannot cross to the host)")
				cancel()
				conn.Close()
				sent <- rerr
				return
			}
			if n > 0 {
				if err := stream.Send(&qtfsv1.SocketRequest{Msg: &qtfsv1.SocketRequest_Data{Data: buf[:n]}}); err != nil {
					sent <- err
					return
				}
				p.m.m.moved("to_host", n)
			}
			switch {
			case rerr == nil:
				continue
			case errors.Is(rerr, io.EOF):
				err := stream.Send(&qtfsv1.SocketRequest{Msg: &qtfsv1.SocketRequest_CloseWrite{CloseWrite: true}})
				if err == nil {
					err = stream.CloseSend()
				}
				sent <- err
				return
			default:
				if ctx.Err() == nil && !errors.Is(rerr, net.ErrClosed) {
					p.m.m.cuts.WithLabelValues(cutIO).Inc()
					p.log.Debug("sockproxy: read from the local client", zap.Error(rerr))
				}
				cancel()
				sent <- rerr
				return
			}
		}
	}()
	var result error
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break // both directions are closed
		}
		if err != nil {
			if ctx.Err() == nil {
				p.log.Warn("sockproxy: connection to the server lost; closing the local connection", zap.Error(err))
			}
			result = err
			break
		}
		switch m := resp.GetMsg().(type) {
		case *qtfsv1.SocketResponse_Data:
			if _, err := conn.Write(m.Data); err != nil {
				p.m.m.cuts.WithLabelValues(cutIO).Inc()
				p.log.Debug("sockproxy: write to the local client", zap.Error(err))
				result = err
				cancel()
			}
			p.m.m.moved("from_host", len(m.Data))
		case *qtfsv1.SocketResponse_CloseWrite:
			if err := conn.CloseWrite(); err != nil {
				p.log.Debug("sockproxy: half-close the local connection", zap.Error(err))
			}
		case *qtfsv1.SocketResponse_Error:
			p.log.Warn("sockproxy: the host cut the connection; closing it",
				zap.String("errno", syscall.Errno(m.Error.GetErrno()).Error()), zap.String("reason", m.Error.GetMessage()))
			result = errors.New(m.Error.GetMessage())
			cancel()
		}
		if result != nil {
			break
		}
	}
	cancel()
	conn.Close()
	if err := <-sent; result == nil && err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, context.Canceled) {
		var st interface{ GRPCStatus() *status.Status }
		if !errors.As(err, &st) {
			result = err
		}
	}
	return result
}
