package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qtfs/qtfs/pkg/transport/transportmetrics"
)

// testServer is a real gRPC server with the health service, serving on
// listeners from Listen with credentials from ServerCredentials.
// Its listeners are split: call channels go to an echo handler.
type testServer struct {
	uris     []URI       // where it listens (tcp ports resolved)
	ids      chan string // PeerIdentity of each call
	channels chan string // PeerPrincipal of each call channel
	logs     *observer.ObservedLogs
	reg      *prometheus.Registry
}

func startServer(t *testing.T, sec Security, uris ...string) *testServer {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	log := zaptest.NewLogger(t, zaptest.WrapOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewTee(c, core)
	})))
	ts := &testServer{ids: make(chan string, 64), channels: make(chan string, 64), logs: logs, reg: prometheus.NewRegistry()}
	creds, err := ServerCredentials(sec, WithLogger(log), withRegisterer(t, ts.reg))
	if err != nil {
		t.Fatalf("ServerCredentials: %v", err)
	}
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		select {
		case ts.ids <- PeerIdentity(ctx):
		default:
		}
		return h(ctx, req)
	}
	g := grpc.NewServer(append(ServerOptions(), grpc.Creds(creds), grpc.UnaryInterceptor(record))...)
	healthpb.RegisterHealthServer(g, health.NewServer())
	t.Cleanup(g.Stop)
	for _, s := range uris {
		u, err := ParseURI(s)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := Listen(context.Background(), u, sec)
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
		l, err := SplitChannels(raw, creds, ts.echo)
		if err != nil {
			t.Fatal(err)
		}
		if ta, ok := l.Addr().(*net.TCPAddr); ok {
			u.Port = uint32(ta.Port)
		}
		ts.uris = append(ts.uris, u)
		go func() {
			if err := g.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				t.Errorf("Serve %s: %v", u, err)
			}
		}()
	}
	return ts
}

// echo serves a call channel: it records the peer and echoes what it reads.
func (ts *testServer) echo(conn net.Conn, info credentials.AuthInfo) {
	defer conn.Close()
	select {
	case ts.channels <- PeerPrincipal(info):
	default:
	}
	_, _ = io.Copy(conn, conn)
}

// call dials u and makes one health check.
func call(t *testing.T, u URI, sec Security) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cc, err := Dial(ctx, u, sec)
	if err != nil {
		return err
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health status %v", resp.GetStatus())
	}
	return nil
}

// lastID is the identity of the last call the server saw.
func (ts *testServer) lastID(t *testing.T) string {
	t.Helper()
	select {
	case id := <-ts.ids:
		return id
	case <-time.After(5 * time.Second):
		t.Fatal("the server saw no call")
		return ""
	}
}

// waitRefusal waits for the server to log a refused handshake whose error
// contains want, and checks that the refusal was counted.
func (ts *testServer) waitRefusal(t *testing.T, kind, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		var seen []string
		for _, e := range ts.logs.FilterMessage("transport: handshake refused").All() {
			m := e.ContextMap()
			msg := fmt.Sprint(m["error"])
			seen = append(seen, msg)
			if m["transport"] == kind && strings.Contains(msg, want) {
				if n := counter(t, ts.reg, kind, "refused"); n < 1 {
					t.Fatalf("refusal logged but counted %v times", n)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server logged no %s refusal with %q; refusals seen: %q", kind, want, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// withRegisterer counts the handshakes of the credentials on reg.
func withRegisterer(t *testing.T, reg prometheus.Registerer) CredentialsOption {
	t.Helper()
	h, err := transportmetrics.NewHandshakes(reg)
	if err != nil {
		t.Fatal(err)
	}
	return WithHandshakeCounter(h)
}

// counter reads qtfs_transport_handshakes_total{transport,result}.
func counter(t *testing.T, reg *prometheus.Registry, kind, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "qtfs_transport_handshakes_total" {
			continue
		}
		if mf.GetHelp() == "" {
			t.Error("metric without help")
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["transport"] == kind && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
