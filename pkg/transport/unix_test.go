package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The test binary doubles as a client run under another uid: with
// helperEnv=dial it dials the URI in helperURIEnv, makes one health check
// and exits 0 on success, 1 with the error on stderr otherwise.
const (
	helperEnv    = "QTFS_TRANSPORT_TEST_HELPER"
	helperURIEnv = "QTFS_TRANSPORT_TEST_URI"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "dial" {
		os.Exit(helperDial())
	}
	os.Exit(m.Run())
}

func helperDial() int {
	u, err := ParseURI(os.Getenv(helperURIEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := Dial(ctx, u, Security{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cc.Close()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ok uid=%d\n", os.Getuid())
	return 0
}

// TestUnixSocket serves a TCP (mutual TLS) and a unix listener from one
// grpc.Server with one credentials object, and calls both.
func TestUnixSocket(t *testing.T) {
	p := newTestPKIs(t)
	sock := filepath.Join(t.TempDir(), "qtfs.sock")
	ts := startServer(t, p.a.ServerSecurity(), "tcp://127.0.0.1:0", "unix://"+sock)

	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	tests := []struct {
		name string
		uri  URI
		sec  Security
		want string
	}{
		{"unix without TLS flags", ts.uris[1], Security{}, fmt.Sprintf("unix:uid=%d pid=%d", os.Geteuid(), os.Getpid())},
		{"unix with the client's TLS flags, ignored", ts.uris[1], p.a.ClientSecurity(), fmt.Sprintf("unix:uid=%d pid=%d", os.Geteuid(), os.Getpid())},
		{"tcp on the same server", ts.uris[0], p.a.ClientSecurity(), "tls:CN=dpu1 addr=127.0.0.1:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := call(t, tc.uri, tc.sec); err != nil {
				t.Fatal(err)
			}
			if id := ts.lastID(t); !strings.HasPrefix(id, tc.want) {
				t.Fatalf("PeerIdentity %q, want %q", id, tc.want)
			}
		})
	}
	if n := counter(t, ts.reg, "unix", "ok"); n != 2 {
		t.Fatalf("unix handshakes ok = %v, want 2", n)
	}
}

// TestUnixClientChecksServer: a client refuses a server whose uid it does
// not allow.
func TestUnixClientChecksServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "qtfs.sock")
	ts := startServer(t, Security{}, "unix://"+sock)
	other := uint32(os.Geteuid() + 1)
	err := call(t, ts.uris[0], Security{AllowedUIDs: []uint32{other}})
	want := fmt.Sprintf("server runs as uid %d", os.Geteuid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("call: %v, want an error with %q", err, want)
	}
}

// TestUnixPeerUID runs the client as uid 65534 (re-executing the test
// binary) against servers that refuse and allow that uid.
func TestUnixPeerUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the client as uid 65534: run the tests as root")
	}
	// t.TempDir is 0700; the other uid needs to reach the socket and the
	// binary, so both go into a directory it may enter.
	dir, err := os.MkdirTemp("", "qtfs-transport-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "transport.test")
	copyFile(t, os.Args[0], bin, 0o755)

	tests := []struct {
		name    string
		sec     Security
		allowed bool
	}{
		{"uid not allowed", Security{UnixSocketMode: 0o666}, false},
		{"uid allowed", Security{AllowedUIDs: []uint32{65534}}, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(dir, strconv.Itoa(i)+".sock")
			ts := startServer(t, tc.sec, "unix://"+sock)
			if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o666 {
				t.Fatalf("socket: %v %v, want mode 0666", fi, err)
			}
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(), helperEnv+"=dial", helperURIEnv+"="+ts.uris[0].String())
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			if tc.allowed {
				if err != nil {
					t.Fatalf("client as uid 65534: %v\n%s", err, out)
				}
				want := fmt.Sprintf("unix:uid=65534 pid=%d", cmd.Process.Pid)
				if id := ts.lastID(t); id != want {
					t.Fatalf("PeerIdentity %q, want %q", id, want)
				}
				return
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("client as uid 65534: %v, want exit status 1\n%s", err, out)
			}
			if !strings.Contains(string(out), "closed the connection before answering") {
				t.Fatalf("client output does not show the refusal:\n%s", out)
			}
			ts.waitRefusal(t, "unix", "uid 65534")
		})
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestUnixListenReplacesStaleSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "stale.sock")
	// A server that died without cleaning up leaves its socket file.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	if _, err := os.Lstat(sock); err != nil {
		t.Fatalf("stale socket missing: %v", err)
	}
	ts := startServer(t, Security{}, "unix://"+sock)
	if err := call(t, ts.uris[0], Security{}); err != nil {
		t.Fatalf("call through the replaced socket: %v", err)
	}
}

func TestUnixListenRefusesLiveSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "live.sock")
	u := URI{Scheme: Unix, Path: sock}
	ts := startServer(t, Security{}, u.String())
	_, err := Listen(context.Background(), u, Security{})
	if err == nil {
		t.Fatal("second Listen on a live socket succeeded")
	}
	if !errors.Is(err, syscall.EADDRINUSE) || !strings.HasPrefix(err.Error(), "transport: listen "+u.String()+": ") ||
		!strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second Listen: %v, want 'address already in use' naming the URI", err)
	}
	// The first server still answers.
	if err := call(t, ts.uris[0], Security{}); err != nil {
		t.Fatalf("the first server stopped answering: %v", err)
	}
}

func TestUnixListenKeepsOtherFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notasocket")
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Listen(context.Background(), URI{Scheme: Unix, Path: path}, Security{})
	if err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
		t.Fatalf("the file was touched: %q %v", b, err)
	}
	_, err = Listen(context.Background(), URI{Scheme: Unix, Path: filepath.Join(t.TempDir(), "no", "dir.sock")}, Security{})
	if err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Fatalf("Listen in a missing directory: %v", err)
	}
}

func TestUnixListenerCloseRemovesSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "q.sock")
	l, err := Listen(context.Background(), URI{Scheme: Unix, Path: sock}, Security{UnixSocketMode: 0o660})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v, %v; want mode 0660", fi, err)
	}
	l.Close()
	if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
}
