package clientconf

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/qtfs/qtfs/pkg/transport"
)

func TestServerURI(t *testing.T) {
	base := Settings{Servers: map[string]string{"hostA": "unix:///run/qtfs.sock"}}
	for _, tc := range []struct {
		name, server, remote, want string
		err                        error
	}{
		{"name from servers:", "", "hostA", "unix:///run/qtfs.sock", nil},
		{"server setting names a server", "hostA", "", "unix:///run/qtfs.sock", nil},
		{"plain host is tcp default port", "", "127.0.0.1", "tcp://127.0.0.1:12121", nil},
		{"server setting wins over the remote", "tcp://127.0.0.2:9", "hostA", "tcp://127.0.0.2:9", nil},
		{"a URI", "vsock://2:7", "", "vsock://2:7", nil},
		{"nothing", "", "", "", ErrNoServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			s.Server = tc.server
			u, err := s.ServerURI(tc.remote)
			if !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && u.String() != tc.want {
				t.Fatalf("got %s, want %s", u, tc.want)
			}
		})
	}
}

// TestLoadKeys holds the one unknown-key rule: a command that reads only
// the Settings accepts Run's keys whatever their values, and refuses any
// other key with its line.
func TestLoadKeys(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, err string
	}{
		{"settings and run keys", "server: hostA\nservers:\n  hostA: tcp://10.0.0.1:1\nroot: /r\nmounts:\n  - remote: /proc\nproxies: 3\nreconnect_timeout: 5s\n", ""},
		{"unknown key", "server: x\n\nbogus: 1\n", "line 3: unknown key bogus"},
		{"two unknown keys in file order", "zz: 1\naa: 2\n", "line 1: unknown key zz line 2: unknown key aa"},
		{"wrong type of a setting", "insecure: maybe\n", "line 1: cannot unmarshal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "client.yaml")
			if err := os.WriteFile(cfg, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			var f File
			set := flag.NewFlagSet("test", flag.ContinueOnError)
			f.Flags(set)
			_, _, err := Source{}.Load(set, []string{"--config", cfg}, &f)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), cfg) {
				t.Fatalf("err = %v, want it to name %s and contain %q", err, cfg, tc.err)
			}
		})
	}
}

func TestRunKeys(t *testing.T) {
	for _, k := range []string{"root", "mounts", "proxies", "shims", "reconnect_timeout"} {
		if !strings.Contains(" "+strings.Join(RunKeys, " ")+" ", " "+k+" ") {
			t.Fatalf("RunKeys %v lacks %s", RunKeys, k)
		}
	}
}

func TestLoadServerEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"QTFS_SERVER", map[string]string{"QTFS_SERVER": "tcp://h:1"}, nil, "tcp://h:1"},
		{"the command's variable wins over QTFS_SERVER", map[string]string{"QTFS_SERVER": "tcp://h:1", "X_SERVER": "tcp://h:2"}, nil, "tcp://h:2"},
		{"--server wins over both", map[string]string{"QTFS_SERVER": "tcp://h:1", "X_SERVER": "tcp://h:2"}, []string{"--server", "tcp://h:3"}, "tcp://h:3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg := filepath.Join(t.TempDir(), "client.yaml")
			if err := os.WriteFile(cfg, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			var f File
			set := flag.NewFlagSet("test", flag.ContinueOnError)
			f.Flags(set)
			if _, _, err := (Source{ServerEnv: "X_SERVER"}).Load(set, append([]string{"--config=" + cfg}, tc.args...), &f); err != nil {
				t.Fatal(err)
			}
			if f.Server != tc.want {
				t.Fatalf("server %q, want %q", f.Server, tc.want)
			}
		})
	}
}

func unixURI(t *testing.T) transport.URI {
	t.Helper()
	u, err := transport.ParseURI("unix://" + filepath.Join(t.TempDir(), "qtfs.sock"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// serve starts a gRPC server with the health service on u.
func serve(t *testing.T, u transport.URI) {
	t.Helper()
	creds, err := transport.ServerCredentials(transport.Security{}, transport.WithLogger(zap.NewNop()))
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(transport.ServerOptions(), grpc.Creds(creds))...)
	healthpb.RegisterHealthServer(g, health.NewServer())
	l, err := transport.Listen(context.Background(), u, transport.Security{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	go g.Serve(l)
}

func TestDialRetry(t *testing.T) {
	t.Run("waits for a server that starts late", func(t *testing.T) {
		u := unixURI(t)
		var seen []time.Duration
		r := Retry{First: 10 * time.Millisecond, Max: 40 * time.Millisecond, Attempt: time.Second,
			Again: func(n int, err error, pause time.Duration) bool {
				if !NotListening(err) {
					t.Errorf("attempt %d: %v is not 'not listening'", n, err)
				}
				if seen = append(seen, pause); n == 3 {
					serve(t, u)
				}
				return true
			}}
		opened := false
		cc, err := DialRetry(context.Background(), u, transport.Security{}, r, func(context.Context, *grpc.ClientConn) error {
			opened = true
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		cc.Close()
		if !opened || len(seen) < 3 || seen[0] != 10*time.Millisecond || seen[1] != 20*time.Millisecond || seen[2] != 40*time.Millisecond {
			t.Fatalf("opened %v, pauses %v: want 10ms, 20ms, 40ms, ...", opened, seen)
		}
	})
	t.Run("deadline before the next attempt", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := DialRetry(ctx, unixURI(t), transport.Security{}, Retry{First: 20 * time.Millisecond, Max: time.Second}, nil)
		if !NotListening(err) {
			t.Fatalf("err = %v, want the dial's 'no such file'", err)
		}
		if d := time.Since(start); d > 40*time.Millisecond+time.Second {
			t.Fatalf("gave up after %v", d)
		}
	})
	t.Run("open fails: closed and retried", func(t *testing.T) {
		u := unixURI(t)
		serve(t, u)
		n := 0
		boom := errors.New("boom")
		_, err := DialRetry(context.Background(), u, transport.Security{},
			Retry{First: time.Millisecond, Max: time.Millisecond, Again: func(attempt int, err error, _ time.Duration) bool { return attempt < 3 }},
			func(context.Context, *grpc.ClientConn) error { n++; return boom })
		if !errors.Is(err, boom) || n != 3 {
			t.Fatalf("err %v after %d opens, want boom after 3", err, n)
		}
	})
}

func TestKeyLines(t *testing.T) {
	got := KeyLines([]byte("root: /r\nmounts:\n  - /proc\n  - /sys\nproxies:\n  - listen: /run/a.sock\n    host: /run/b.sock\n"))
	for k, want := range map[string]int{"root": 1, "mounts": 2, "mounts[1]": 4, "proxies[0]": 6, "proxies[0].host": 7} {
		if got[k] != want {
			t.Errorf("line of %s = %d, want %d (all: %v)", k, got[k], want, got)
		}
	}
	if len(KeyLines([]byte("- not a mapping\n"))) != 0 {
		t.Error("a sequence document has keys")
	}
}
