package sockproxy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qtfs/qtfs/pkg/internal/testutil"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// rig is a host-side Server on a real unix socket, a client connection to
// it, and the registries and logs of both sides.
type rig struct {
	t       *testing.T
	dir     string
	srv     *Server
	cc      *grpc.ClientConn
	hostReg *prometheus.Registry
	dpuReg  *prometheus.Registry
	cm      *ClientMetrics
	logs    *observer.ObservedLogs
	log     *zap.Logger
}

func newRig(t *testing.T, allow func(dir string) []string, maxConns int) *rig {
	t.Helper()
	r := &rig{t: t, dir: t.TempDir(), hostReg: prometheus.NewRegistry(), dpuReg: prometheus.NewRegistry()}
	core, logs := observer.New(zap.DebugLevel)
	r.logs = logs
	r.log = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	srv, err := NewServer(ServerOptions{Allow: allow(r.dir), MaxConns: maxConns, Logger: r.log.Named("host"), Registerer: r.hostReg})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	g := grpc.NewServer()
	srv.Register(g)
	l, err := net.Listen("unix", filepath.Join(r.dir, "grpc.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient("passthrough:///grpc", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(r.dir, "grpc.sock"))
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	r.cc = cc
	r.cm, err = NewClientMetrics(r.dpuReg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// proxy starts a DPU-side Proxy from <dir>/dpu/<name> to remote.
func (r *rig) proxy(name, remote string) *Proxy {
	r.t.Helper()
	p, err := Listen(r.cc, ProxyOptions{
		Listen:  filepath.Join(r.dir, "dpu", name),
		Remote:  remote,
		Logger:  r.log.Named("dpu"),
		Metrics: r.cm,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { p.Close() })
	return p
}

// backend is a host unix socket server running handle for each connection.
func backend(t *testing.T, path string, handle func(c *net.UnixConn)) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); handle(c) }()
		}
	}()
}

// echo copies what it reads back until EOF, then half-closes.
func echo(c *net.UnixConn) {
	io.Copy(c, c)
	c.CloseWrite()
}

func dial(t *testing.T, p *Proxy) *net.UnixConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.Listen(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

func TestEchoManyConnections(t *testing.T) {
	r := newRig(t, func(dir string) []string { return []string{dir + "/echo.sock"} }, 0)
	backend(t, r.dir+"/echo.sock", echo)
	p := r.proxy("echo.sock", r.dir+"/echo.sock")

	const conns, size = 32, 1 << 20
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: p.Listen(), Net: "unix"})
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			data := make([]byte, size)
			rand.Read(data)
			go func() { c.Write(data); c.CloseWrite() }()
			got, err := io.ReadAll(c)
			if err != nil {
				errs <- err
				return
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				errs <- fmt.Errorf("echo: got %d bytes, want %d intact", len(got), len(data))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := value(r.srv.m.conns.WithLabelValues(resultOK)); got != conns {
		t.Errorf("host ok connections = %v, want %d", got, conns)
	}
	if got := value(r.srv.m.bytes.WithLabelValues("to_host")); got != conns*size {
		t.Errorf("host to_host bytes = %v, want %d", got, conns*size)
	}
	testutil.WaitFor(t, "connections to end", 10*time.Second, func() bool { return p.Stats().Active == 0 && r.srv.Active() == 0 })
	if st := p.Stats(); st.Total != conns || st.Failed != 0 {
		t.Errorf("proxy stats %+v", st)
	}
}

func TestHalfClose(t *testing.T) {
	r := newRig(t, func(dir string) []string { return []string{dir + "/h.sock"} }, 0)
	for _, tc := range []struct {
		name string
		// host runs on the host side; dpu on the DPU side's connection.
		host func(c *net.UnixConn) error
		dpu  func(c *net.UnixConn) error
	}{
		{
			name: "DPU closes its write side first, then reads the answer",
			host: func(c *net.UnixConn) error {
				req, err := io.ReadAll(c)
				if err != nil {
					return err
				}
				_, err = c.Write([]byte("answer to " + string(req)))
				return err
			},
			dpu: func(c *net.UnixConn) error {
				c.Write([]byte("question"))
				c.CloseWrite()
				got, err := io.ReadAll(c)
				if err == nil && string(got) != "answer to question" {
					err = fmt.Errorf("read %q", got)
				}
				return err
			},
		},
		{
			name: "host closes its write side first, then reads",
			host: func(c *net.UnixConn) error {
				c.Write([]byte("hello"))
				c.CloseWrite()
				got, err := io.ReadAll(c)
				if err == nil && string(got) != "world" {
					err = fmt.Errorf("host read %q", got)
				}
				return err
			},
			dpu: func(c *net.UnixConn) error {
				got, err := io.ReadAll(c) // EOF arrives while our write side is open
				if err != nil || string(got) != "hello" {
					return fmt.Errorf("DPU read %q, %v", got, err)
				}
				if _, err := c.Write([]byte("world")); err != nil {
					return err
				}
				return c.CloseWrite()
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hostErr := make(chan error, 1)
			sock := r.dir + "/h.sock"
			os.Remove(sock)
			backend(t, sock, func(c *net.UnixConn) { hostErr <- tc.host(c) })
			p := r.proxy("h-"+fmt.Sprint(time.Now().UnixNano()), sock)
			if err := tc.dpu(dial(t, p)); err != nil {
				t.Fatalf("DPU side: %v", err)
			}
			select {
			case err := <-hostErr:
				if err != nil {
					t.Fatalf("host side: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("host side never finished")
			}
		})
	}
}

func TestHTTPOverProxy(t *testing.T) {
	r := newRig(t, func(dir string) []string { return []string{dir + "/http.sock"} }, 0)
	l, err := net.Listen("unix", r.dir+"/http.sock")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		fmt.Fprintf(w, "%s %s %d", req.Method, req.URL.Path, len(body))
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	p := r.proxy("http.sock", r.dir+"/http.sock")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", p.Listen())
	}}, Timeout: 20 * time.Second}
	for i := 0; i < 5; i++ { // keep-alive reuses the proxied connection
		resp, err := hc.Post("http://host/v1/ping", "text/plain", strings.NewReader(strings.Repeat("x", 100000)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "POST /v1/ping 100000" {
			t.Fatalf("response %q", b)
		}
	}
}

func TestRefusedConnectionsAreClosed(t *testing.T) {
	r := newRig(t, func(dir string) []string {
		return []string{dir + "/allowed.sock", dir + "/absent.sock", dir + "/dead.sock"}
	}, 0)
	backend(t, r.dir+"/other.sock", echo)
	// A socket file nobody listens on.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: r.dir + "/dead.sock", Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	for _, tc := range []struct {
		name, remote, result, log string
	}{
		{"not on the allow-list", r.dir + "/other.sock", resultRefused, "is not allowed on the host: the allow-list (qtfs-server --socket-allow) has"},
		{"through a dotdot", r.dir + "/x/../other.sock", resultRefused, "invalid socket path"},
		{"allowed but absent", r.dir + "/absent.sock", resultNotFound, "no such file or directory"},
		{"allowed but nobody listens", r.dir + "/dead.sock", resultFailed, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := r.proxy(strings.ReplaceAll(tc.name, " ", "-"), tc.remote)
			c := dial(t, p)
			c.Write([]byte("hi"))
			// Closed with our byte unread: EOF or a reset.
			b, err := io.ReadAll(c)
			if err != nil && !errors.Is(err, syscall.ECONNRESET) || len(b) != 0 {
				t.Fatalf("read %q, %v; want the connection closed at once", b, err)
			}
			if got := value(r.cm.m.conns.WithLabelValues(tc.result)); got < 1 {
				t.Errorf("DPU %s connections = %v", tc.result, got)
			}
			if n := r.logs.FilterMessageSnippet("closing it").FilterFieldKey("reason").Filter(func(e observer.LoggedEntry) bool {
				return strings.Contains(fmt.Sprint(e.ContextMap()["reason"]), tc.log)
			}).Len(); n == 0 {
				t.Errorf("no DPU log line with reason %q; logs: %v", tc.log, r.logs.All())
			}
			testutil.WaitFor(t, "the failure to be counted", 10*time.Second, func() bool { return p.Stats().Failed == 1 })
		})
	}
}

// passFD sends one byte with the write end of a fresh pipe attached and
// returns the read end: it reads EOF only once every copy of the write end
// is closed.
func passFD(t *testing.T, c *net.UnixConn) *os.File {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close() })
	if _, _, err := c.WriteMsgUnix([]byte("x"), unix.UnixRights(int(pw.Fd())), nil); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	return pr
}

func pipeClosed(t *testing.T, pr *os.File) {
	t.Helper()
	pr.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := pr.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("the passed descriptor is still open somewhere (read %d, %v)", n, err)
	}
}

func TestFDPassingIsRefused(t *testing.T) {
	r := newRig(t, func(dir string) []string { return []string{dir + "/fd.sock"} }, 0)
	t.Run("from the DPU", func(t *testing.T) {
		os.Remove(r.dir + "/fd.sock")
		hostRead := make(chan []byte, 1)
		backend(t, r.dir+"/fd.sock", func(c *net.UnixConn) { b, _ := io.ReadAll(c); hostRead <- b })
		p := r.proxy("fd-dpu.sock", r.dir+"/fd.sock")
		c := dial(t, p)
		c.Write([]byte("before"))
		time.Sleep(50 * time.Millisecond)
		pr := passFD(t, c)
		if b, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) || len(b) != 0 {
			t.Fatalf("DPU read %q, %v; want the connection closed", b, err)
		}
		pipeClosed(t, pr)
		select {
		case b := <-hostRead:
			if string(b) != "before" {
				t.Fatalf("the host read %q", b)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the host connection was not closed")
		}
		if got := value(r.cm.m.cuts.WithLabelValues(cutFDPassing)); got != 1 {
			t.Errorf("DPU fd_passing cuts = %v", got)
		}
		if r.logs.FilterMessageSnippet("passed file descriptors").FilterLevelExact(zap.ErrorLevel).Len() == 0 {
			t.Error("no error log about fd passing")
		}
	})
	t.Run("from the host", func(t *testing.T) {
		os.Remove(r.dir + "/fd.sock")
		passed := make(chan *os.File, 1)
		backend(t, r.dir+"/fd.sock", func(c *net.UnixConn) {
			passed <- passFD(t, c)
			io.ReadAll(c)
		})
		p := r.proxy("fd-host.sock", r.dir+"/fd.sock")
		c := dial(t, p)
		b, err := io.ReadAll(c)
		if err != nil || len(b) != 0 {
			t.Fatalf("DPU read %q, %v; want EOF without the byte that came with the descriptor", b, err)
		}
		pipeClosed(t, <-passed)
		if got := value(r.srv.m.cuts.WithLabelValues(cutFDPassing)); got != 1 {
			t.Errorf("host fd_passing cuts = %v", got)
		}
		if r.logs.FilterMessageSnippet("the host cut the connection").Filter(func(e observer.LoggedEntry) bool {
			return strings.Contains(fmt.Sprint(e.ContextMap()["reason"]), "file descriptors")
		}).Len() == 0 {
			t.Error("the DPU did not log the host's reason")
		}
	})
}

func TestServerLimitAndList(t *testing.T) {
	r := newRig(t, func(dir string) []string { return []string{dir + "/slow.sock"} }, 2)
	release := make(chan struct{})
	backend(t, r.dir+"/slow.sock", func(c *net.UnixConn) { <-release })
	t.Cleanup(func() { close(release) }) // before the backend's cleanup waits
	p := r.proxy("slow.sock", r.dir+"/slow.sock")
	c1, c2 := dial(t, p), dial(t, p)
	_, _ = c1, c2
	testutil.WaitFor(t, "two host connections", 10*time.Second, func() bool { return r.srv.Active() == 2 })
	c3 := dial(t, p)
	if b, err := io.ReadAll(c3); err != nil || len(b) != 0 {
		t.Fatalf("third connection read %q, %v; want closed", b, err)
	}
	if got := value(r.srv.m.conns.WithLabelValues(resultExhausted)); got != 1 {
		t.Errorf("host exhausted = %v", got)
	}
	resp, err := qtfsv1.NewSocketProxyClient(r.cc).List(context.Background(), &qtfsv1.SocketListRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPaths()) != 1 || string(resp.GetPaths()[0]) != r.dir+"/slow.sock" {
		t.Fatalf("List = %q", resp.GetPaths())
	}
}

func TestListenAndClose(t *testing.T) {
	r := newRig(t, func(dir string) []string { return []string{dir + "/e.sock"} }, 0)
	backend(t, r.dir+"/e.sock", echo)
	path := filepath.Join(r.dir, "dpu", "sub", "s.sock")
	open := func() (*Proxy, error) {
		return Listen(r.cc, ProxyOptions{Listen: path, Remote: r.dir + "/e.sock", Mode: 0o600, Logger: zaptest.NewLogger(t)})
	}
	t.Run("stale socket is replaced", func(t *testing.T) {
		os.MkdirAll(filepath.Dir(path), 0o755)
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		l.SetUnlinkOnClose(false)
		l.Close()
		p, err := open()
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("socket file %v, %v", fi.Mode(), err)
		}
		t.Run("a live one is not", func(t *testing.T) {
			if _, err := open(); err == nil || !strings.Contains(err.Error(), "another process listens") {
				t.Fatalf("second Listen: %v", err)
			}
		})
	})
	t.Run("a file in the way is not", func(t *testing.T) {
		os.WriteFile(path, []byte("x"), 0o644)
		defer os.Remove(path)
		if _, err := open(); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("Listen over a file: %v", err)
		}
	})
	t.Run("Close cuts connections and removes the socket", func(t *testing.T) {
		p, err := open()
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, p)
		c.Write([]byte("ping"))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- p.Close() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close hangs with an open connection")
		}
		if _, err := io.ReadAll(c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after Close: %v", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket file left: %v", err)
		}
		testutil.WaitFor(t, "the host connection to close", 10*time.Second, func() bool { return r.srv.Active() == 0 })
	})
}

func TestValidPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/run/containerd/containerd.sock", true},
		{"", false},
		{"run/x.sock", false},
		{"/run/../etc/x", false},
		{"/run//x", false},
		{"/run/x/", false},
		{"/run/\x00x", false},
		{"/" + strings.Repeat("a", 5000), false},
	} {
		t.Run(fmt.Sprintf("%.20q", tc.path), func(t *testing.T) {
			if err := validPath([]byte(tc.path)); (err == nil) != tc.ok {
				t.Fatalf("validPath(%q) = %v, want ok=%v", tc.path, err, tc.ok)
			}
		})
	}
}

// value reads a counter's current value.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}
