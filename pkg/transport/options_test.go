package transport

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// TestMessageLimits sends health checks whose service name makes the
// message 7 MiB (above gRPC's 4 MiB default, under ours) and 9 MiB (over
// ours), so both sides' MaxMessageBytes are exercised.
func TestMessageLimits(t *testing.T) {
	ts := startServer(t, Security{}, "unix://"+filepath.Join(t.TempDir(), "q.sock"))
	tests := []struct {
		name    string
		size    int
		opts    []grpc.DialOption
		code    codes.Code
		message string
	}{
		{"7 MiB passes both sides", 7 << 20, nil, codes.NotFound, "unknown service"},
		{"9 MiB stops at the client", 9 << 20, nil, codes.ResourceExhausted, "trying to send message larger than max"},
		{"9 MiB stops at the server", 9 << 20,
			[]grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16 << 20))},
			codes.ResourceExhausted, "received message larger than max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cc, err := Dial(ctx, ts.uris[0], Security{}, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: strings.Repeat("x", tc.size)})
			st := status.Convert(err)
			if st.Code() != tc.code || !strings.Contains(st.Message(), tc.message) {
				t.Fatalf("Check: %v, want %v with %q", err, tc.code, tc.message)
			}
		})
	}
}

// TestDialTimeout: a server that accepts and then says nothing must not
// hold Dial past its context.
func TestDialTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never answered
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	})
	p := newTestPKIs(t)
	u := URI{Scheme: TCP, Host: "127.0.0.1", Port: uint32(l.Addr().(*net.TCPAddr).Port)}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	cc, err := Dial(ctx, u, p.a.ClientSecurity())
	if err == nil {
		cc.Close()
		t.Fatal("Dial to a silent server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Dial took %v with a 500ms context", d)
	}
	if !strings.Contains(err.Error(), "transport: dial "+u.String()+": context deadline exceeded") {
		t.Fatalf("Dial: %v", err)
	}
}

func TestPeerIdentity(t *testing.T) {
	addr := &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40112}
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"no peer", context.Background(), "unknown"},
		{"no auth", peer.NewContext(context.Background(), &peer.Peer{Addr: addr}), "unknown addr=192.0.2.7:40112"},
		{"tls without certificate", peer.NewContext(context.Background(), &peer.Peer{Addr: addr, AuthInfo: credentials.TLSInfo{}}), "tls:<no client certificate> addr=192.0.2.7:40112"},
		{"unix", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: UnixPeer{UID: 0, PID: 123}}), "unix:uid=0 pid=123"},
		{"vsock", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: VsockPeer{CID: 3, Port: 99}}), "vsock:cid=3"},
		{"insecure", peer.NewContext(context.Background(), &peer.Peer{Addr: addr, AuthInfo: InsecurePeer{Addr: "127.0.0.1:5"}}), "insecure:addr=127.0.0.1:5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PeerIdentity(tc.ctx); got != tc.want {
				t.Fatalf("PeerIdentity = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHandshakeAborted: a peer that connects and leaves is counted, not
// reported as a refusal.
func TestHandshakeAborted(t *testing.T) {
	p := newTestPKIs(t)
	ts := startServer(t, p.a.ServerSecurity(), "tcp://127.0.0.1:0")
	c, err := net.Dial("tcp", ts.uris[0].hostPort())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for counter(t, ts.reg, "tcp", "aborted") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the aborted handshake was not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := ts.logs.FilterMessage("transport: handshake refused").Len(); n != 0 {
		t.Fatalf("%d refusals logged for a peer that just left", n)
	}
}

// TestUnknownConnectionKindRefused: the credentials fail closed on a
// connection that is neither tcp, unix nor vsock (here an in-memory pipe).
func TestUnknownConnectionKindRefused(t *testing.T) {
	reg := prometheus.NewRegistry()
	core, logs := observer.New(zap.DebugLevel)
	creds, err := ServerCredentials(Security{Insecure: true}, WithLogger(zap.New(core)), withRegisterer(t, reg))
	if err != nil {
		t.Fatal(err)
	}
	client, server := net.Pipe()
	defer client.Close()
	if _, _, err := creds.ServerHandshake(server); err == nil {
		t.Fatal("handshake on a pipe succeeded")
	}
	// The refused end is closed: the other end sees it.
	if _, err := client.Write([]byte("x")); err == nil {
		t.Fatal("the refused connection is still open")
	}
	if n := counter(t, reg, "other", "refused"); n != 1 {
		t.Fatalf("refusals counted: %v", n)
	}
	e := logs.FilterMessage("transport: handshake refused").All()
	if len(e) != 1 || !strings.Contains(fmt.Sprint(e[0].ContextMap()["error"]), `unsupported connection type "pipe"`) {
		t.Fatalf("refusal log: %v", e)
	}
}
