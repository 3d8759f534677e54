package transport

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/mdlayher/vsock"
	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// UnixPeer is the AuthInfo of a unix socket peer: its SO_PEERCRED
// credentials as of connect(2).
type UnixPeer struct {
	credentials.CommonAuthInfo
	UID, GID uint32
	PID      int32
}

// AuthType implements credentials.AuthInfo.
func (UnixPeer) AuthType() string { return "unix" }

// VsockPeer is the AuthInfo of a vsock peer.
type VsockPeer struct {
	credentials.CommonAuthInfo
	CID, Port uint32
}

// AuthType implements credentials.AuthInfo.
func (VsockPeer) AuthType() string { return "vsock" }

// InsecurePeer is the AuthInfo of a plain TCP peer (Security.Insecure):
// nothing is known of it but its address.
type InsecurePeer struct {
	credentials.CommonAuthInfo
	Addr string
}

// AuthType implements credentials.AuthInfo.
func (InsecurePeer) AuthType() string { return "insecure" }

// PeerIdentity describes the peer of a gRPC call for logs:
// "tls:CN=dpu1 addr=192.0.2.7:40112", "unix:uid=0 pid=123", "vsock:cid=3",
// "insecure:addr=127.0.0.1:40112"; "unknown" when ctx carries no peer.
func PeerIdentity(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return "unknown"
	}
	addr := addrString(p.Addr)
	switch ai := p.AuthInfo.(type) {
	case credentials.TLSInfo:
		name := "<no client certificate>"
		if certs := ai.State.PeerCertificates; len(certs) > 0 {
			name = "CN=" + certName(certs[0])
		}
		return "tls:" + name + " addr=" + addr
	case UnixPeer:
		return "unix:uid=" + strconv.FormatUint(uint64(ai.UID), 10) + " pid=" + strconv.FormatInt(int64(ai.PID), 10)
	case VsockPeer:
		return "vsock:cid=" + strconv.FormatUint(uint64(ai.CID), 10)
	case InsecurePeer:
		return "insecure:addr=" + ai.Addr
	case nil:
		return "unknown addr=" + addr
	default:
		return ai.AuthType() + ":addr=" + addr
	}
}

// PeerPrincipal names who a peer is, without where it connects from: the
// SHA-256 of its TLS certificate, its uid, its CID, or for plain TCP its
// IP address. Two connections of the same client have the same
// principal, which is how a call channel is matched to its connection.
func PeerPrincipal(info credentials.AuthInfo) string {
	switch ai := info.(type) {
	case credentials.TLSInfo:
		if certs := ai.State.PeerCertificates; len(certs) > 0 {
			sum := sha256.Sum256(certs[0].Raw)
			return "tls:" + hex.EncodeToString(sum[:])
		}
		return "tls:-"
	case UnixPeer:
		return "unix:uid=" + strconv.FormatUint(uint64(ai.UID), 10)
	case VsockPeer:
		return "vsock:cid=" + strconv.FormatUint(uint64(ai.CID), 10)
	case InsecurePeer:
		host, _, err := net.SplitHostPort(ai.Addr)
		if err != nil {
			host = ai.Addr
		}
		return "insecure:" + host
	case nil:
		return "unknown"
	default:
		return ai.AuthType()
	}
}

// certName is the common name of c, or its first DNS name when it has none.
func certName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return "<unnamed>"
}

// CredentialsOption configures ServerCredentials.
type CredentialsOption func(*serverCreds)

// WithLogger makes the credentials log every refused handshake at warn and
// every accepted one at debug.
func WithLogger(l *zap.Logger) CredentialsOption {
	return func(c *serverCreds) {
		if l != nil {
			c.log = l
		}
	}
}

// HandshakeCounter counts the server's connection handshakes by transport
// (tcp, unix, vsock, other) and result (ok, refused, aborted: the peer
// left first). transportmetrics.Handshakes is the Prometheus one; the
// interface keeps Prometheus out of the clients that link this package.
type HandshakeCounter interface {
	CountHandshake(transport, result string)
}

// WithHandshakeCounter makes the credentials count handshakes on h.
func WithHandshakeCounter(h HandshakeCounter) CredentialsOption {
	return func(c *serverCreds) { c.handshakes = h }
}

// ServerCredentials returns the credentials of a grpc.Server that serves
// every listener Listen made with the same sec. Per accepted connection:
// tcp gets TLS 1.3 with a required, verified client certificate (or
// nothing when sec.Insecure, and then only from loopback peers unless
// sec.InsecureNonLoopback); unix gets its SO_PEERCRED uid checked against
// sec.AllowedUIDs; vsock gets its CID checked against sec.AllowedCIDs. Any
// other connection is refused. The AuthInfo is credentials.TLSInfo,
// InsecurePeer, UnixPeer or VsockPeer; PeerIdentity reads it.
func ServerCredentials(sec Security, opts ...CredentialsOption) (credentials.TransportCredentials, error) {
	if err := sec.checkFiles(true); err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	c := &serverCreds{sec: sec, log: zap.NewNop()}
	for _, o := range opts {
		o(c)
	}
	if sec.CertFile != "" {
		cfg, err := serverTLSConfig(sec)
		if err != nil {
			return nil, err
		}
		c.tls = cfg
	}
	return c, nil
}

func serverTLSConfig(sec Security) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(sec.CertFile, sec.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("transport: load certificate %s and key %s: %w", sec.CertFile, sec.KeyFile, err)
	}
	pool, err := loadCA(sec.CAFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		NextProtos:   []string{http2ALPN, ChannelALPN},
	}, nil
}

func clientTLSConfig(sec Security) (*tls.Config, error) {
	pool, err := loadCA(sec.CAFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if sec.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(sec.CertFile, sec.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("transport: load certificate %s and key %s: %w", sec.CertFile, sec.KeyFile, err)
		}
		// Always present our certificate, even when the server's list of
		// acceptable CAs does not name its issuer: the server then says
		// why it refuses it instead of seeing no certificate at all.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &cert, nil
		}
	}
	return cfg, nil
}

func loadCA(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("transport: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("transport: CA %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// serverCreds is the one TransportCredentials of a qtfs server.
type serverCreds struct {
	sec        Security
	tls        *tls.Config // nil without TLS files; shared, never modified
	log        *zap.Logger
	handshakes HandshakeCounter // nil: count nothing
}

func (c *serverCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("transport: server credentials cannot dial")
}

func (c *serverCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c.serverHandshake(raw, http2ALPN)
}

// serverHandshake does the handshake of a connection that speaks the
// application protocol alpn (gRPC's, or a call channel's) over TLS.
func (c *serverCreds) serverHandshake(raw net.Conn, alpn string) (net.Conn, credentials.AuthInfo, error) {
	kind := kindOf(raw)
	conn, info, err := c.handshake(kind, raw, alpn)
	if err != nil {
		lingerClose(raw)
		if errors.Is(err, io.EOF) {
			// The peer left before saying anything (a port probe, or
			// Listen checking for a live socket): not worth a warning.
			c.count(kind, "aborted")
			c.log.Debug("transport: peer left during the handshake",
				zap.String("transport", kind), zap.String("peer", addrString(raw.RemoteAddr())))
			return nil, nil, credentials.ErrConnDispatched
		}
		c.count(kind, "refused")
		c.log.Warn("transport: handshake refused",
			zap.String("transport", kind), zap.String("peer", addrString(raw.RemoteAddr())), zap.Error(err))
		// The connection is ours now (lingerClose closes it): this error
		// is the one that tells gRPC not to close it under our feet. The
		// reason went to our log above.
		return nil, nil, credentials.ErrConnDispatched
	}
	c.count(kind, "ok")
	if ce := c.log.Check(zap.DebugLevel, "transport: handshake"); ce != nil {
		ce.Write(zap.String("transport", kind), zap.String("peer", identityOf(info, raw.RemoteAddr())))
	}
	return conn, info, nil
}

func (c *serverCreds) handshake(kind string, raw net.Conn, alpn string) (net.Conn, credentials.AuthInfo, error) {
	switch kind {
	case "tcp":
		if c.sec.Insecure {
			if !c.sec.InsecureNonLoopback && !isLoopbackAddr(raw.RemoteAddr()) {
				return nil, nil, errors.New("plain TCP from a non-loopback peer")
			}
			return raw, InsecurePeer{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, Addr: addrString(raw.RemoteAddr())}, nil
		}
		if c.tls == nil {
			return nil, nil, errors.New("no TLS configured for TCP")
		}
		// Not grpc's credentials.NewTLS: on failure it closes the
		// connection at once, and the client, whose HTTP/2 preface is
		// still unread here, then gets a reset instead of our alert.
		sock := &batchSocket{Conn: raw}
		conn := tls.Server(sock, c.tls)
		if err := conn.Handshake(); err != nil {
			return nil, nil, err
		}
		st := conn.ConnectionState()
		if st.NegotiatedProtocol != alpn {
			return nil, nil, fmt.Errorf("tls: client did not negotiate ALPN %q (not a qtfs client?)", alpn)
		}
		return &batchedTLS{Conn: conn, sock: sock}, credentials.TLSInfo{State: st, CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
	case "unix":
		p, err := peerCred(raw)
		if err != nil {
			return nil, nil, err
		}
		if !c.sec.allowedUID(p.UID) {
			return nil, nil, fmt.Errorf("uid %d (pid %d) is not allowed (%s)", p.UID, p.PID, c.sec.uidPolicy())
		}
		p.SecurityLevel = credentials.PrivacyAndIntegrity
		return raw, p, nil
	case "vsock":
		a, ok := raw.RemoteAddr().(*vsock.Addr)
		if !ok {
			return nil, nil, fmt.Errorf("vsock peer address %T", raw.RemoteAddr())
		}
		if !c.sec.allowedCID(a.ContextID) {
			return nil, nil, fmt.Errorf("context id %d is not allowed (%s)", a.ContextID, c.sec.cidPolicy())
		}
		return raw, VsockPeer{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}, CID: a.ContextID, Port: a.Port}, nil
	default:
		network := "?"
		if a := raw.LocalAddr(); a != nil {
			network = a.Network()
		}
		return nil, nil, fmt.Errorf("unsupported connection type %q", network)
	}
}

func (c *serverCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "qtfs"}
}

func (c *serverCreds) Clone() credentials.TransportCredentials {
	n := *c
	return &n
}

func (c *serverCreds) OverrideServerName(string) error { return nil }

// http2ALPN is the ALPN protocol gRPC runs on.
const http2ALPN = "h2"

// lingerTimeout bounds how long a refused connection is drained.
const lingerTimeout = time.Second

// lingerClose closes a refused connection gracefully: it stops writing
// (the peer gets our TLS alert, then EOF), reads and discards what the peer
// already sent for a short while, then closes. Closing at once with unread
// data makes the kernel send a reset, which can destroy the alert before
// the peer reads it.
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil || c.SetReadDeadline(time.Now().Add(lingerTimeout)) != nil {
		c.Close()
		return
	}
	go func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
		c.Close()
	}()
}

// kindOf names the transport of conn by its local address, so a wrapped
// connection is still recognised; the metric label takes only these values.
func kindOf(conn net.Conn) string {
	if a := conn.LocalAddr(); a != nil {
		switch n := a.Network(); n {
		case "tcp", "unix", "vsock":
			return n
		}
	}
	return "other"
}

// addrString is a.String(), or "-" for a nil or unnamed address (a unix
// client usually has no name).
func addrString(a net.Addr) string {
	if a == nil {
		return "-"
	}
	if s := a.String(); s != "" {
		return s
	}
	return "-"
}

func identityOf(info credentials.AuthInfo, addr net.Addr) string {
	return PeerIdentity(peer.NewContext(context.Background(), &peer.Peer{Addr: addr, AuthInfo: info}))
}

func (s Security) uidPolicy() string {
	if len(s.AllowedUIDs) == 0 {
		return fmt.Sprintf("allowed: root and uid %d; more with --allow-uid", os.Geteuid())
	}
	return fmt.Sprintf("allowed: %v; more with --allow-uid", s.AllowedUIDs)
}

func (s Security) cidPolicy() string {
	return fmt.Sprintf("allowed: %v; more with --allow-cid", s.AllowedCIDs)
}

func (c *serverCreds) count(kind, result string) {
	if c.handshakes != nil {
		c.handshakes.CountHandshake(kind, result)
	}
}
