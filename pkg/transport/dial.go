package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/mdlayher/vsock"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
)

// Dial validates sec for u (as a client), makes a gRPC client connection
// to u and waits, at most until ctx ends, for its first connection to be
// ready: a refused connection, a failed handshake or a server that drops
// us right after it comes back as an error naming the URI and the reason,
// such as "transport: dial unix:///run/qtfs.sock: connect: no such file or
// directory". Once Dial returned, reconnecting is gRPC's business. opts
// come after the package's own options and so override them.
func Dial(ctx context.Context, u URI, sec Security, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cc, ds, err := newClient(u, sec, opts)
	if err != nil {
		return nil, err
	}
	cc.Connect()
	for {
		s := cc.GetState()
		switch s {
		case connectivity.Ready:
			return cc, nil
		case connectivity.TransientFailure, connectivity.Shutdown:
			cc.Close()
			if err := ds.get(); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("transport: dial %s: connection failed", u)
		}
		if !cc.WaitForStateChange(ctx, s) {
			cc.Close()
			if last := ds.get(); last != nil {
				return nil, fmt.Errorf("transport: dial %s: %w (last error: %v)", u, ctx.Err(), last)
			}
			return nil, fmt.Errorf("transport: dial %s: %w", u, ctx.Err())
		}
	}
}

// NewClient is Dial without the wait: it returns at once and connects on
// first use (or on cc.Connect), as grpc.NewClient does.
func NewClient(u URI, sec Security, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	cc, _, err := newClient(u, sec, opts)
	return cc, err
}

func newClient(u URI, sec Security, opts []grpc.DialOption) (*grpc.ClientConn, *dialState, error) {
	if err := sec.Validate(u, false); err != nil {
		return nil, nil, err
	}
	ds := &dialState{}
	creds, err := newClientCreds(u, sec, ds)
	if err != nil {
		return nil, nil, err
	}
	all := append(clientOptions(),
		grpc.WithContextDialer(dialer(u, ds)),
		grpc.WithTransportCredentials(creds),
		grpc.WithAuthority(authority(u, sec)),
	)
	all = append(all, opts...)
	cc, err := grpc.NewClient("passthrough:///"+target(u), all...)
	if err != nil {
		return nil, nil, fmt.Errorf("transport: dial %s: %w", u, err)
	}
	return cc, ds, nil
}

// target is the endpoint in the gRPC target; the dialer ignores it, it
// only shows in gRPC's own logs.
func target(u URI) string {
	if u.Scheme == TCP {
		return u.hostPort()
	}
	return u.String()
}

// authority is the :authority of every call.
func authority(u URI, sec Security) string {
	if u.Scheme != TCP {
		return "localhost"
	}
	if sec.ServerName != "" {
		return net.JoinHostPort(sec.ServerName, fmt.Sprint(u.Port))
	}
	return u.hostPort()
}

func dialer(u URI, ds *dialState) func(context.Context, string) (net.Conn, error) {
	return func(ctx context.Context, _ string) (net.Conn, error) {
		var (
			c   net.Conn
			err error
		)
		switch u.Scheme {
		case TCP:
			var d net.Dialer
			c, err = d.DialContext(ctx, "tcp", u.hostPort())
		case Unix:
			var d net.Dialer
			c, err = d.DialContext(ctx, "unix", u.Path)
		case Vsock:
			var vc *vsock.Conn
			vc, err = vsock.DialContext(ctx, u.CID, u.Port, nil)
			if err == nil {
				c = vc
			}
		default:
			err = fmt.Errorf("unknown scheme %q", u.Scheme)
		}
		if err != nil {
			err = fmt.Errorf("transport: dial %s: %w", u, reason(err))
			ds.set(err)
			return nil, err
		}
		return c, nil
	}
}

// dialState keeps the last error seen while connecting, so Dial can say
// why the connection failed instead of gRPC's generic state.
type dialState struct {
	mu  sync.Mutex
	err error
}

func (d *dialState) set(err error) {
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
}

func (d *dialState) get() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// clientCreds does the client side of each transport's handshake.
type clientCreds struct {
	u          URI
	sec        Security
	tls        credentials.TransportCredentials // tcp with TLS only
	tlsConfig  *tls.Config                      // what tls was made from; never modified
	serverName string
	ds         *dialState
}

func newClientCreds(u URI, sec Security, ds *dialState) (*clientCreds, error) {
	c := &clientCreds{u: u, sec: sec, ds: ds, serverName: sec.ServerName}
	if c.serverName == "" {
		c.serverName = u.Host
	}
	if u.Scheme == TCP && !sec.Insecure {
		cfg, err := clientTLSConfig(sec)
		if err != nil {
			return nil, err
		}
		c.tls, c.tlsConfig = credentials.NewTLS(cfg), cfg
	}
	return c, nil
}

func (c *clientCreds) ClientHandshake(ctx context.Context, _ string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.handshake(ctx, raw)
	if err != nil {
		raw.Close()
		err = fmt.Errorf("transport: dial %s: %w", c.u, err)
		c.ds.set(err)
		return nil, nil, err
	}
	return &watchConn{Conn: conn, u: c.u, ds: c.ds}, info, nil
}

func (c *clientCreds) handshake(ctx context.Context, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	switch c.u.Scheme {
	case TCP:
		if c.tls == nil {
			if !c.sec.InsecureNonLoopback && !isLoopbackAddr(raw.RemoteAddr()) {
				return nil, nil, fmt.Errorf("plain TCP without TLS: %s is not a loopback address", addrString(raw.RemoteAddr()))
			}
			return raw, InsecurePeer{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, Addr: addrString(raw.RemoteAddr())}, nil
		}
		sock := &batchSocket{Conn: raw}
		conn, info, err := c.tls.ClientHandshake(ctx, c.serverName, sock)
		if err != nil {
			return nil, nil, fmt.Errorf("tls handshake: %w", err)
		}
		return &batchedTLS{Conn: conn, sock: sock}, info, nil
	case Unix:
		p, err := peerCred(raw)
		if err != nil {
			return nil, nil, err
		}
		if !c.sec.allowedUID(p.UID) {
			return nil, nil, fmt.Errorf("server runs as uid %d (pid %d), which is not allowed (%s)", p.UID, p.PID, c.sec.uidPolicy())
		}
		p.SecurityLevel = credentials.PrivacyAndIntegrity
		return raw, p, nil
	case Vsock:
		a, ok := raw.RemoteAddr().(*vsock.Addr)
		if !ok {
			return nil, nil, fmt.Errorf("vsock peer address %T", raw.RemoteAddr())
		}
		return raw, VsockPeer{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, CID: a.ContextID, Port: a.Port}, nil
	}
	return nil, nil, fmt.Errorf("unknown scheme %q", c.u.Scheme)
}

func (c *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("transport: client credentials cannot serve")
}

func (c *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "qtfs"}
}

func (c *clientCreds) Clone() credentials.TransportCredentials {
	n := *c
	if c.tls != nil {
		n.tls = c.tls.Clone()
	}
	return &n
}

func (c *clientCreds) OverrideServerName(string) error { return nil }

// watchConn records why a connection failed before the server answered
// anything: with TLS 1.3 a server refuses a client certificate only after
// the client's handshake has returned, so the reason (the server's alert)
// arrives with the first read, or shows as a failed write.
type watchConn struct {
	net.Conn
	u    URI
	ds   *dialState
	done atomic.Bool // a read returned data, or an error was recorded
}

func (w *watchConn) Read(b []byte) (int, error) {
	n, err := w.Conn.Read(b)
	if n > 0 {
		w.done.Store(true)
	}
	w.record(err)
	return n, err
}

func (w *watchConn) Write(b []byte) (int, error) {
	n, err := w.Conn.Write(b)
	w.record(err)
	return n, err
}

// record keeps the first error before the server answered; an error from
// our own Close says nothing about the server and is skipped.
func (w *watchConn) record(err error) {
	if err == nil || errors.Is(err, net.ErrClosed) || w.done.Load() {
		return
	}
	if w.done.CompareAndSwap(false, true) {
		w.ds.set(fmt.Errorf("transport: dial %s: the server closed the connection before answering (it may have refused us: see its log): %w", w.u, err))
	}
}
