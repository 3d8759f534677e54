package client

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestWaitConn shows that a stream opened through waitConn while no
// server listens waits for one (at most the wait) instead of failing at
// once, as a plain connection's stream does.
func TestWaitConn(t *testing.T) {
	for _, tc := range []struct {
		name     string
		serveIn  time.Duration // -1: no server comes
		wait     time.Duration
		wantErr  string
		maxTaken time.Duration
	}{
		{name: "server comes within the wait", serveIn: 700 * time.Millisecond, wait: 20 * time.Second, maxTaken: 15 * time.Second},
		{name: "no server within the wait", serveIn: -1, wait: 600 * time.Millisecond, wantErr: "reconnect timeout (600ms)", maxTaken: 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "s.sock")
			cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			// Without waitConn a stream fails at once while nothing listens.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{}); err == nil {
				t.Fatal("a plain stream opened with no server")
			}
			if tc.serveIn >= 0 {
				srv := grpc.NewServer()
				healthpb.RegisterHealthServer(srv, health.NewServer())
				defer srv.Stop()
				go func() {
					time.Sleep(tc.serveIn) // the server's restart time
					l, err := net.Listen("unix", sock)
					if err != nil {
						t.Error(err)
						return
					}
					srv.Serve(l)
				}()
			}
			t0 := time.Now()
			w, err := healthpb.NewHealthClient(waitConn{cc: cc, wait: tc.wait}).Watch(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = w.Recv()
			}
			took := time.Since(t0)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("after %v: %v", took, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("after %v: error %v, want %q", took, err, tc.wantErr)
			case took > tc.maxTaken:
				t.Fatalf("took %v", took)
			case tc.wantErr != "" && took < tc.wait:
				t.Fatalf("gave up after %v, before the wait of %v", took, tc.wait)
			}
			t.Logf("%v: %v", took.Round(time.Millisecond), err)
		})
	}
}
