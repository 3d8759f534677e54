package server

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
	"github.com/qtfs/qtfs/pkg/transport"
)

// TestRunServesAndStops starts the daemon as qtfs-server would, checks the
// health service, a session, the metrics listener, then stops it.
func TestRunServesAndStops(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "qtfs.sock")
	metrics := testutil.FreeAddr(t)
	s := Settings{
		Listen:        []string{"unix://" + sock},
		Export:        []string{dir + ":ro"},
		MetricsListen: metrics,
		LogLevel:      "debug",
	}
	ctx, cancel := context.WithCancel(context.Background())
	var runErr error
	done := make(chan struct{})
	go func() { runErr = Run(ctx, s, zaptest.NewLogger(t)); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})

	u, _ := transport.ParseURI("unix://" + sock)
	var cc interface{ Close() error }
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	for {
		c, err := transport.Dial(dctx, u, transport.Security{})
		if err == nil {
			cc = c
			defer c.Close()
			resp, err := healthpb.NewHealthClient(c).Check(dctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				t.Fatalf("health: %v", err)
			}
			if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("health: %v", resp.GetStatus())
			}
			sess, err := session.New(dctx, c, "test", zaptest.NewLogger(t), session.Options{})
			if err != nil {
				t.Fatalf("session: %v", err)
			}
			if ex := sess.Exports(); len(ex) != 1 || string(ex[0].GetPath()) != dir || !ex[0].GetReadOnly() {
				t.Fatalf("exports: %v", ex)
			}
			break
		}
		if dctx.Err() != nil {
			t.Fatalf("dial: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cc

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"qtfs_server_sessions 1", "qtfs_server_ops_total", "qtfs_transport_handshakes_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "qtfs_") && strings.Contains(line, dir) {
			t.Errorf("a metric label holds a path: %s", line)
		}
	}
	// A loopback metrics listener also serves the runtime's profiles.
	resp, err = http.Get("http://" + metrics + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("pprof: %v", err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Errorf("pprof goroutine profile: status %d, body %.200q", resp.StatusCode, body)
	}

	cancel()
	select {
	case <-done:
		if runErr != nil {
			t.Fatalf("Run: %v", runErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not stop")
	}
}

func TestSettingsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Settings
		want string
	}{
		{"no export", Settings{Listen: []string{"unix:///tmp/x.sock"}}, "no exports"},
		{"relative export", Settings{Listen: []string{"unix:///tmp/x.sock"}, Export: []string{"srv"}}, "must be absolute"},
		{"bad export option", Settings{Listen: []string{"unix:///tmp/x.sock"}, Export: []string{"/srv:rx"}}, "unknown option"},
		{"export twice", Settings{Listen: []string{"unix:///tmp/x.sock"}, Export: []string{"/srv", "/srv/"}}, "given twice"},
		{"no listen", Settings{Export: []string{"/srv"}}, "nothing to listen on"},
		{"plain tcp", Settings{Listen: []string{"tcp://127.0.0.1:1"}, Export: []string{"/srv"}}, "--insecure"},
		{"plain tcp remote", Settings{Listen: []string{"tcp://0.0.0.0:1"}, Export: []string{"/srv"}, Insecure: true}, "loopback"},
		{"bad uid", Settings{Listen: []string{"unix:///tmp/x.sock"}, Export: []string{"/srv"}, AllowUID: []string{"root"}}, "not a number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.s.validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRunMakesMissingExports starts the daemon with export roots that do
// not exist yet, as on a host where the management plane never ran: it
// makes them (mode 0755, logged at warn) and serves them. A read-only one
// stays an error, and a server that cannot start makes nothing.
func TestRunMakesMissingExports(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "qtfs.sock")
	have := filepath.Join(dir, "have")
	if err := os.Mkdir(have, 0o700); err != nil {
		t.Fatal(err)
	}
	missing := []string{filepath.Join(dir, "var/lib/docker"), filepath.Join(dir, "var/log/pods")}
	old := syscall.Umask(0o077) // takes nothing from the roots made
	defer syscall.Umask(old)

	t.Run("read-only", func(t *testing.T) {
		s := Settings{Listen: []string{"unix://" + sock}, Export: []string{missing[0], filepath.Join(dir, "ro") + ":ro"}}
		err := Run(t.Context(), s, zaptest.NewLogger(t))
		if err == nil || !strings.Contains(err.Error(), `export "`+dir+`/ro": does not exist, and a read-only export is never created`) {
			t.Fatalf("Run: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "ro")); err == nil {
			t.Error("the read-only export was made")
		}
		if _, err := os.Stat(filepath.Join(dir, "var")); err == nil {
			t.Error("the server refused to start, and made an export's directory")
		}
	})

	t.Run("cannot listen", func(t *testing.T) {
		s := Settings{Listen: []string{"unix://" + dir + "/no-such-dir/qtfs.sock"}, Export: []string{missing[0]}}
		if err := Run(t.Context(), s, zaptest.NewLogger(t)); err == nil {
			t.Fatal("Run served")
		}
		if _, err := os.Stat(filepath.Join(dir, "var")); err == nil {
			t.Error("the server could not listen, and made an export's directory")
		}
	})

	core, logs := observer.New(zap.InfoLevel)
	s := Settings{Listen: []string{"unix://" + sock}, Export: []string{missing[0], missing[1], have}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, s, zap.New(core)) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}()
	u, _ := transport.ParseURI("unix://" + sock)
	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	var exports []string
	for exports == nil {
		select {
		case err := <-done:
			t.Fatalf("Run: %v", err)
		default:
		}
		c, err := transport.Dial(dctx, u, transport.Security{})
		if err == nil {
			sess, err := session.New(dctx, c, "test", zaptest.NewLogger(t), session.Options{})
			if err == nil {
				for _, e := range sess.Exports() {
					exports = append(exports, string(e.GetPath()))
				}
				sess.Close()
			}
			c.Close()
		}
		if dctx.Err() != nil {
			t.Fatalf("no session: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range missing {
		if !slices.Contains(exports, p) {
			t.Errorf("%s is not served (exports %q)", p, exports)
		}
	}
	for _, p := range []string{dir + "/var", missing[0], dir + "/var/lib", dir + "/var/log", missing[1]} {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
			t.Errorf("%s: %v, %v; want a directory 0755", p, fi, err)
		}
		if logs.FilterMessage("an export's directory did not exist: created it").FilterField(zap.String("created", p)).FilterLevelExact(zap.WarnLevel).Len() != 1 {
			t.Errorf("%s: not logged once at warn", p)
		}
	}
	if fi, _ := os.Stat(have); fi.Mode().Perm() != 0o700 {
		t.Errorf("an export that was there changed: %v", fi.Mode())
	}
}
