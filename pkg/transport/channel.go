package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
)

// A call channel is a connection of a client's beside its gRPC connection,
// on the same listener, that carries the frames of pkg/callstream without
// HTTP/2. Its client sends ChannelMagic in the clear first; the server's
// listener (SplitChannels) sees it and hands the connection to the channel
// server instead of gRPC. Both kinds then go through the same security
// handshake, TLS negotiating ChannelALPN instead of "h2".
const (
	ChannelMagic = "QTFSCH01"
	ChannelALPN  = "qtfs-channel/1"
)

// sortTimeout bounds the wait for a new connection's first bytes.
const sortTimeout = 10 * time.Second

// ChannelHandler serves one call channel: conn has passed the server's
// security handshake; info is its peer as gRPC calls see theirs
// (PeerIdentity reads it). The handler owns conn.
type ChannelHandler func(conn net.Conn, info credentials.AuthInfo)

// SplitChannels returns the listener to give the grpc.Server built with
// creds (from ServerCredentials): it yields the connections of l that are
// not call channels; call channels go, after creds' handshake, to h, each
// on a goroutine of its own. Closing the returned listener closes l.
func SplitChannels(l net.Listener, creds credentials.TransportCredentials, h ChannelHandler) (net.Listener, error) {
	sc, ok := creds.(*serverCreds)
	if !ok {
		return nil, fmt.Errorf("transport: SplitChannels needs the credentials of ServerCredentials, not %T", creds)
	}
	s := &splitListener{Listener: l, creds: sc, handle: h, conns: make(chan net.Conn), done: make(chan struct{})}
	go s.accept()
	return s, nil
}

type splitListener struct {
	net.Listener
	creds  *serverCreds
	handle ChannelHandler

	conns chan net.Conn // gRPC's connections, for Accept
	done  chan struct{} // closed by Close

	mu        sync.Mutex
	err       error // why the underlying Accept stopped
	closeOnce sync.Once
}

// accept sorts every connection l accepts, until it fails.
func (s *splitListener) accept() {
	var delay time.Duration
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient failure: wait and
				// go on, as net/http and gRPC do.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
					continue
				case <-s.done:
				}
			}
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			s.Close()
			return
		}
		delay = 0
		go s.sort(c)
	}
}

// sort reads the first bytes of c: a call channel goes to the handler,
// anything else to gRPC with those bytes in front.
func (s *splitListener) sort(c net.Conn) {
	var head [len(ChannelMagic)]byte
	_ = c.SetReadDeadline(time.Now().Add(sortTimeout))
	n, err := io.ReadFull(c, head[:])
	_ = c.SetReadDeadline(time.Time{})
	if n == 0 && err != nil {
		// A port probe, or a peer that said nothing in time: counted
		// as an aborted handshake, as gRPC's own would have been.
		kind := kindOf(c)
		s.creds.count(kind, "aborted")
		s.creds.log.Debug("transport: peer left before the handshake",
			zap.String("transport", kind), zap.String("peer", addrString(c.RemoteAddr())), zap.Error(err))
		c.Close()
		return
	}
	if err == nil && string(head[:]) == ChannelMagic {
		conn, info, err := s.creds.serverHandshake(c, ChannelALPN)
		if err != nil {
			return // refused, logged and counted; the connection is closed
		}
		s.handle(conn, info)
		return
	}
	pc := &prefixConn{Conn: c, head: head[:n]}
	select {
	case s.conns <- pc:
	case <-s.done:
		c.Close()
	}
}

// Accept returns the next connection that is not a call channel.
func (s *splitListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		s.mu.Lock()
		err := s.err
		s.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return nil, err
	}
}

func (s *splitListener) Close() error {
	err := net.ErrClosed
	s.closeOnce.Do(func() {
		close(s.done)
		err = s.Listener.Close()
	})
	return err
}

// prefixConn is a connection whose first bytes were already read.
type prefixConn struct {
	net.Conn
	head []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.head) > 0 {
		n := copy(b, p.head)
		p.head = p.head[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// SyscallConn gives the socket to the unix peer check (SO_PEERCRED).
func (p *prefixConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := p.Conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("connection %T gives no access to its socket", p.Conn)
	}
	return sc.SyscallConn()
}

// CloseWrite lets a refused connection be closed gracefully.
func (p *prefixConn) CloseWrite() error {
	cw, ok := p.Conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.New("connection cannot close its write side")
	}
	return cw.CloseWrite()
}

// DialChannel opens a call channel to the server at u: it connects, sends
// ChannelMagic and does the client side of sec's security handshake (TLS
// with ChannelALPN on tcp, the server's uid check on unix). The caller
// then binds it (callstream.OpenChannel).
func DialChannel(ctx context.Context, u URI, sec Security) (net.Conn, error) {
	ds := &dialState{}
	creds, err := newClientCreds(u, sec, ds)
	if err != nil {
		return nil, err
	}
	raw, err := dialer(u, ds)(ctx, "")
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	conn, err := channelHandshake(ctx, raw, creds)
	if err != nil {
		raw.Close()
		return nil, fmt.Errorf("transport: call channel to %s: %w", u, err)
	}
	_ = raw.SetDeadline(time.Time{})
	return conn, nil
}

func channelHandshake(ctx context.Context, raw net.Conn, c *clientCreds) (net.Conn, error) {
	if _, err := io.WriteString(raw, ChannelMagic); err != nil {
		return nil, err
	}
	if c.tlsConfig == nil {
		conn, _, err := c.handshake(ctx, raw)
		return conn, err
	}
	cfg := c.tlsConfig.Clone()
	cfg.ServerName = c.serverName
	cfg.NextProtos = []string{ChannelALPN}
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	if p := conn.ConnectionState().NegotiatedProtocol; p != ChannelALPN {
		return nil, fmt.Errorf("tls: the server did not negotiate ALPN %q (a server without call channels?)", ChannelALPN)
	}
	return conn, nil
}
