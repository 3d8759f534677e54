package hostfs_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/callstream"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// channelServer is a hostfs server behind a split listener on TCP
// loopback, as qtfs-server runs it: plain (the principal is the peer's IP
// address) or with mutual TLS.
type channelServer struct {
	s   *hostfs.Server
	reg *prometheus.Registry
	u   transport.URI
	sec transport.Security // the clients'
	dir string             // the export
}

func startChannelServer(t *testing.T, withTLS bool) *channelServer {
	t.Helper()
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	s, err := hostfs.New(hostfs.Options{
		Exports:      []hostfs.Export{{Path: dir}},
		Logger:       zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		Registerer:   reg,
		CallChannels: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	sec, csec := transport.Security{Insecure: true}, transport.Security{Insecure: true}
	if withTLS {
		pki, err := transport.WritePKI(t.TempDir(), transport.PKIOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sec, csec = pki.ServerSecurity(), pki.ClientSecurity()
	}
	creds, err := transport.ServerCredentials(sec)
	if err != nil {
		t.Fatal(err)
	}
	u, err := transport.ParseURI("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := transport.Listen(t.Context(), u, sec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := transport.SplitChannels(raw, creds, s.ServeChannel)
	if err != nil {
		t.Fatal(err)
	}
	u.Port = uint32(raw.Addr().(*net.TCPAddr).Port)
	g := grpc.NewServer(append(s.ServerOptions(), grpc.Creds(creds))...)
	s.Register(g)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	return &channelServer{s: s, reg: reg, u: u, sec: csec, dir: dir}
}

// handshake opens a gRPC connection and a session on it; it returns the
// connection and the call channel token.
func (cs *channelServer) handshake(t *testing.T) (*grpc.ClientConn, []byte) {
	t.Helper()
	cc, err := transport.Dial(t.Context(), cs.u, cs.sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	r, err := qtfsv1.NewFileSystemClient(cc).Handshake(t.Context(), &qtfsv1.HandshakeRequest{ProtocolVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	hasFeature := false
	for _, f := range r.GetFeatures() {
		hasFeature = hasFeature || f == qtfsv1.Feature_FEATURE_CALL_CHANNEL
	}
	if !hasFeature || len(r.GetCallChannelToken()) != 32 {
		t.Fatalf("handshake: features %v, token of %d bytes; want a call channel offered", r.GetFeatures(), len(r.GetCallChannelToken()))
	}
	return cc, r.GetCallChannelToken()
}

// dialFrom opens a call channel from local address from (127.0.0.x) and
// presents token.
func (cs *channelServer) dialFrom(t *testing.T, from string, token []byte) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	raw, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(cs.u.Port))))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(raw, transport.ChannelMagic); err != nil {
		t.Fatal(err)
	}
	return callstream.OpenChannel(t.Context(), raw, token)
}

func TestCallChannelBinding(t *testing.T) {
	cs := startChannelServer(t, false)
	cc, token := cs.handshake(t)

	// Calls on a channel bound with the token run in that session.
	client := callstream.NewClient(cc, callstream.ClientOptions{
		Channel: func(ctx context.Context) (net.Conn, error) { return transport.DialChannel(ctx, cs.u, cs.sec) },
		ChannelFailed: func(err error) {
			t.Errorf("the channel failed: %v", err)
		},
	})
	defer client.Close()
	client.SetChannelToken(token)
	fsc := qtfsv1.NewFileSystemClient(client)
	// The first call goes on a stream while the client opens a channel.
	if _, err := fsc.Statfs(t.Context(), &qtfsv1.StatfsRequest{}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); client.OpenChannels() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no channel opened within 10 s")
		}
	}
	m, err := fsc.Mount(t.Context(), &qtfsv1.MountRequest{Path: []byte(cs.dir), Caller: root})
	if err != nil || m.GetErrno() != 0 {
		t.Fatalf("mount over the channel: %v errno %d", err, m.GetErrno())
	}
	a, err := fsc.Getattr(t.Context(), &qtfsv1.GetattrRequest{Mount: m.GetMount(), Caller: root})
	if err != nil || a.GetErrno() != 0 || a.GetAttr().GetMode()&0o40000 == 0 {
		t.Fatalf("getattr over the channel: %v errno %d", err, a.GetErrno())
	}
	// The mount made on the channel is the gRPC connection's session's.
	direct := qtfsv1.NewFileSystemClient(cc)
	if a, err := direct.Getattr(t.Context(), &qtfsv1.GetattrRequest{Mount: m.GetMount(), Caller: root}); err != nil || a.GetErrno() != 0 {
		t.Fatalf("the channel's mount on the gRPC connection: %v errno %d", err, a.GetErrno())
	}

	counted := map[string]float64{}
	refused := func(name string, conn net.Conn, err error, want string) {
		t.Helper()
		if err == nil {
			conn.Close()
			t.Fatalf("%s: the channel was bound", name)
		}
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s: %v, want PermissionDenied", name, err)
		}
		got := gather(t, cs.reg, "qtfs_server_refusals_total", map[string]string{"reason": want})
		if got != counted[want]+1 {
			t.Fatalf("%s: refusal %q counted %v times, want %v", name, want, got, counted[want]+1)
		}
		counted[want] = got
	}
	// A wrong token.
	bad := append([]byte(nil), token...)
	bad[0] ^= 0xff
	conn, err := cs.dialFrom(t, "127.0.0.1", bad)
	refused("wrong token", conn, err, "channel_token")
	// The right token from another principal (another source address).
	conn, err = cs.dialFrom(t, "127.0.0.2", token)
	refused("another peer", conn, err, "channel_peer")

	// The channel ends with the connection it was bound to.
	conn, err = cs.dialFrom(t, "127.0.0.1", token)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cc.Close()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("channel read after its connection closed: %v, want EOF", err)
	}
	// And its token is no longer good.
	conn, err = cs.dialFrom(t, "127.0.0.1", token)
	refused("token of an ended connection", conn, err, "channel_token")
}

// TestCallChannelWaitOverTLS: on a TLS call channel, a read that waits on
// a fifo (the server watches the channel for the client's cancel
// meanwhile) ends with the data that arrives, and the same channel carries
// the next calls: ending the watch leaves the TLS connection usable.
func TestCallChannelWaitOverTLS(t *testing.T) {
	cs := startChannelServer(t, true)
	cc, token := cs.handshake(t)
	var dials atomic.Int32
	client := callstream.NewClient(cc, callstream.ClientOptions{
		Channel: func(ctx context.Context) (net.Conn, error) {
			dials.Add(1)
			return transport.DialChannel(ctx, cs.u, cs.sec)
		},
		ChannelFailed: func(err error) { t.Errorf("the channel failed: %v", err) },
	})
	defer client.Close()
	client.SetChannelToken(token)
	fsc := qtfsv1.NewFileSystemClient(client)
	m, err := fsc.Mount(t.Context(), &qtfsv1.MountRequest{Path: []byte(cs.dir), Caller: root})
	if err != nil || m.GetErrno() != 0 {
		t.Fatalf("mount: %v errno %d", err, m.GetErrno())
	}
	for deadline := time.Now().Add(10 * time.Second); client.OpenChannels() != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no channel opened within 10 s")
		}
	}
	fifo := filepath.Join(cs.dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	peer, err := os.OpenFile(fifo, os.O_RDWR, 0) // holds the fifo open, writes on demand
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	o, err := fsc.Open(t.Context(), &qtfsv1.OpenRequest{Mount: m.GetMount(), Caller: root, Path: []byte("fifo"), Flags: unix.O_RDONLY})
	if err != nil || o.GetErrno() != 0 {
		t.Fatalf("open: %v errno %d", err, o.GetErrno())
	}
	for round := range 3 {
		done := make(chan *qtfsv1.ReadResponse, 1)
		go func() {
			r, err := fsc.Read(t.Context(), &qtfsv1.ReadRequest{Handle: o.GetHandle(), Size: 16})
			if err != nil {
				t.Error(err)
			}
			done <- r
		}()
		time.Sleep(150 * time.Millisecond) // the read waits for data
		select {
		case r := <-done:
			t.Fatalf("round %d: the read of an empty fifo ended: %v", round, r)
		default:
		}
		want := "data" + strconv.Itoa(round)
		if _, err := peer.WriteString(want); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-done:
			if r.GetErrno() != 0 || string(r.GetData()) != want {
				t.Fatalf("round %d: read %q errno %d, want %q", round, r.GetData(), r.GetErrno(), want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: the read did not end when data came", round)
		}
		a, err := fsc.Getattr(t.Context(), &qtfsv1.GetattrRequest{Mount: m.GetMount(), Caller: root})
		if err != nil || a.GetErrno() != 0 {
			t.Fatalf("round %d: the call after the wait: %v errno %d", round, err, a.GetErrno())
		}
	}
	if n := dials.Load(); n != 1 || client.OpenChannels() != 1 {
		t.Fatalf("%d channels dialled, %d open: want the first one kept through the waits", n, client.OpenChannels())
	}
}

// TestCallChannelBlockingCallsCancelled: on a call channel, whose reading
// goroutine runs the call, a Setlk that waits for a lock and a read of an
// empty fifo still end on the server, with EINTR, once their caller gives
// up: the server declares them blocking and watches the channel while
// they run.
func TestCallChannelBlockingCallsCancelled(t *testing.T) {
	cs := startChannelServer(t, false)
	cc, token := cs.handshake(t)
	client := callstream.NewClient(cc, callstream.ClientOptions{
		Channel: func(ctx context.Context) (net.Conn, error) {
			return transport.DialChannel(ctx, cs.u, cs.sec)
		},
	})
	defer client.Close()
	client.SetChannelToken(token)
	fsc := qtfsv1.NewFileSystemClient(client)
	m, err := fsc.Mount(t.Context(), &qtfsv1.MountRequest{Path: []byte(cs.dir), Caller: root})
	if err != nil || m.GetErrno() != 0 {
		t.Fatalf("mount: %v errno %d", err, m.GetErrno())
	}
	// An idle channel: the next call goes on it.
	idleChannel := func() {
		testutil.WaitFor(t, "an open call channel", 10*time.Second, func() bool {
			_, err := fsc.Getattr(t.Context(), &qtfsv1.GetattrRequest{Mount: m.GetMount(), Caller: root})
			return err == nil && client.OpenChannels() == 1
		})
	}
	if err := os.WriteFile(filepath.Join(cs.dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(cs.dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	peer, err := os.OpenFile(fifo, os.O_RDWR, 0) // holds the fifo open, never writes
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	open := func(name string, flags uint32) uint64 {
		o, err := fsc.Open(t.Context(), &qtfsv1.OpenRequest{Mount: m.GetMount(), Caller: root, Path: []byte(name), Flags: flags})
		if err != nil || o.GetErrno() != 0 {
			t.Fatalf("open %s: %v errno %d", name, err, o.GetErrno())
		}
		return o.GetHandle()
	}
	holder, waiter, rh := open("f", unix.O_RDWR), open("f", unix.O_RDWR), open("fifo", unix.O_RDONLY)
	lock := &qtfsv1.Lock{Type: unix.F_WRLCK, End: ^uint64(0)}
	if r, err := fsc.Setlk(t.Context(), &qtfsv1.SetlkRequest{Handle: holder, Lock: lock}); err != nil || r.GetErrno() != 0 {
		t.Fatalf("lock: %v errno %d", err, r.GetErrno())
	}
	for _, tc := range []struct {
		op   string
		call func(ctx context.Context) error
	}{
		{"Setlk", func(ctx context.Context) error {
			_, err := fsc.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: waiter, Lock: lock, Wait: true})
			return err
		}},
		{"Read", func(ctx context.Context) error {
			_, err := fsc.Read(ctx, &qtfsv1.ReadRequest{Handle: rh, Size: 16})
			return err
		}},
	} {
		t.Run(tc.op, func(t *testing.T) {
			idleChannel()
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- tc.call(ctx) }()
			time.Sleep(100 * time.Millisecond) // the call waits on the server
			select {
			case err := <-done:
				t.Fatalf("ended before the cancel: %v", err)
			default:
			}
			cancel()
			if err := <-done; status.Code(err) != codes.Canceled {
				t.Fatalf("cancelled call: %v, want Canceled", err)
			}
			labels := map[string]string{"op": tc.op, "errno": "EINTR"}
			testutil.WaitFor(t, "the server's call to end with EINTR", 10*time.Second, func() bool {
				return gather(t, cs.reg, "qtfs_server_ops_total", labels) == 1
			})
		})
	}
}
