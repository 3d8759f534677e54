package hostexec_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/hostexec"
	"github.com/qtfs/qtfs/pkg/rexec"
	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// testServer is a hostexec.Server behind a real gRPC server on a unix
// socket, and a client connection to it.
type testServer struct {
	cc   *grpc.ClientConn
	srv  *hostexec.Server
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
}

// newServer serves opts (nil: no Exec service at all) on a fresh socket.
func newServer(t *testing.T, opts *hostexec.Options) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "hostexec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	u := transport.URI{Scheme: transport.Unix, Path: filepath.Join(dir, "s")}
	var sec transport.Security
	creds, err := transport.ServerCredentials(sec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := transport.Listen(context.Background(), u, sec)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{reg: prometheus.NewRegistry()}
	g := grpc.NewServer(append(transport.ServerOptions(), grpc.Creds(creds), grpc.WaitForHandlers(true))...)
	if opts != nil {
		core, logs := observer.New(zapcore.DebugLevel)
		ts.logs = logs
		opts.Logger = zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
		opts.Registerer = ts.reg
		if ts.srv, err = hostexec.New(*opts); err != nil {
			t.Fatal(err)
		}
		ts.srv.Register(g)
	}
	go g.Serve(l)
	t.Cleanup(g.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ts.cc, err = transport.Dial(ctx, u, sec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ts.cc.Close() })
	return ts
}

// run runs o and fails the test on a transport error.
func (ts *testServer) run(t *testing.T, o rexec.Options) (rexec.Result, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	if o.Stdout == nil {
		o.Stdout = &out
	}
	if o.Stderr == nil {
		o.Stderr = &errb
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := rexec.Run(ctx, ts.cc, o)
	if err != nil {
		t.Fatalf("Run %s %v: %v", o.Binary, o.Args, err)
	}
	return res, out.String(), errb.String()
}

func sh(script string) rexec.Options {
	return rexec.Options{Binary: "sh", Args: []string{"-c", script}, Cwd: "/"}
}

func TestExitStatus(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh", "true", "false"}})
	for _, tc := range []struct {
		name   string
		o      rexec.Options
		code   int
		signal int
	}{
		{"true", rexec.Options{Binary: "true"}, 0, 0},
		{"false", rexec.Options{Binary: "false"}, 1, 0},
		{"exit 42", sh("exit 42"), 42, 0},
		{"SIGTERM", sh("kill -TERM $$"), 128 + 15, 15},
		{"SIGKILL", sh("kill -KILL $$"), 128 + 9, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _, stderr := ts.run(t, tc.o)
			if res.Code != tc.code || res.Signal != tc.signal || res.Err != "" {
				t.Fatalf("result %+v (stderr %q), want code %d signal %d", res, stderr, tc.code, tc.signal)
			}
			if res.Pid == 0 || !filepath.IsAbs(res.Path) {
				t.Fatalf("started pid %d path %q", res.Pid, res.Path)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh", "/usr/bin/no-such-tool"}})
	for _, tc := range []struct {
		name string
		o    rexec.Options
		code int
		msg  []string
	}{
		{"not allowed", rexec.Options{Binary: "cat"}, 126, []string{"cat", "not allowed", "--exec-allow", "sh, /usr/bin/no-such-tool"}},
		{"not found", rexec.Options{Binary: "no-such-binary-qtfs"}, 127, []string{"not found in the host's PATH"}},
		{"absolute not found", rexec.Options{Binary: "/no/such/dir/tool"}, 127, []string{"no such file on the host"}},
		{"relative path", rexec.Options{Binary: "bin/sh"}, 126, []string{"relative path"}},
		{"missing cwd", rexec.Options{Binary: "sh", Cwd: filepath.Join(dir, "gone")}, 126, []string{"working directory", "does not exist on the host"}},
		{"missing passed file", rexec.Options{Binary: "sh", Files: []*qtfsv1.ExecFile{{Fd: 3, Path: []byte(filepath.Join(dir, "gone"))}}}, 126, []string{"fd 3", "no such file"}},
		{"NUL in an argument", rexec.Options{Binary: "sh", Args: []string{"a\x00b"}}, 126, []string{"invalid request", "NUL"}},
		{"empty binary", rexec.Options{}, 126, []string{"no binary"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _, _ := ts.run(t, tc.o)
			if res.Code != tc.code || res.Pid != 0 {
				t.Fatalf("result %+v, want code %d and no process", res, tc.code)
			}
			for _, m := range tc.msg {
				if !strings.Contains(res.Err, m) {
					t.Errorf("message %q does not contain %q", res.Err, m)
				}
			}
		})
	}
	t.Run("no Exec service", func(t *testing.T) {
		off := newServer(t, nil)
		res, _, _ := off.run(t, rexec.Options{Binary: "sh"})
		if res.Code != 126 || !strings.Contains(res.Err, "--exec-allow") {
			t.Fatalf("result %+v, want 126 naming --exec-allow", res)
		}
	})
	t.Run("first message not start", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := qtfsv1.NewExecClient(ts.cc).Run(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Send(&qtfsv1.ExecRequest{Msg: &qtfsv1.ExecRequest_Stdin{Stdin: []byte("x")}})
		if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Recv: %v, want InvalidArgument", err)
		}
	})
	if got := counter(t, ts.reg, "qtfs_exec_refusals_total", "reason", "not_allowed"); got != 1 {
		t.Errorf("qtfs_exec_refusals_total{reason=not_allowed} = %v, want 1", got)
	}
	if got := counter(t, ts.reg, "qtfs_exec_runs_total", "result", "not_found"); got != 2 {
		t.Errorf("qtfs_exec_runs_total{result=not_found} = %v, want 2", got)
	}
}

// counter reads one sample of a counter from reg.
func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestRunIsLoggedAndCounted(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh"}})
	res, _, _ := ts.run(t, sh("exit 3"))
	if res.Code != 3 {
		t.Fatalf("code %d", res.Code)
	}
	entries := ts.logs.FilterMessage("hostexec: run").All()
	if len(entries) != 1 {
		t.Fatalf("%d run log lines, want 1", len(entries))
	}
	f := entries[0].ContextMap()
	if peer, _ := f["peer"].(string); !strings.HasPrefix(peer, "unix:uid=") {
		t.Errorf("peer %v", f["peer"])
	}
	if argv := fmt.Sprint(f["argv"]); argv != "[sh -c exit 3]" {
		t.Errorf("argv %s", argv)
	}
	if f["exit"] != int32(3) || f["result"] != "nonzero" || f["pid"] != int64(res.Pid) {
		t.Errorf("fields %v", f)
	}
	if _, ok := f["duration"].(time.Duration); !ok {
		t.Errorf("no duration: %v", f)
	}
	if got := counter(t, ts.reg, "qtfs_exec_runs_total", "result", "nonzero"); got != 1 {
		t.Errorf("qtfs_exec_runs_total{result=nonzero} = %v", got)
	}
	mfs, _ := ts.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "qtfs_exec_duration_seconds" && mf.GetMetric()[0].GetHistogram().GetSampleCount() == 1 {
			return
		}
	}
	t.Errorf("qtfs_exec_duration_seconds has no sample")
}

func TestEnvironmentAndCwd(t *testing.T) {
	dir := t.TempDir()
	t.Run("default deny-list", func(t *testing.T) {
		ts := newServer(t, &hostexec.Options{Allow: []string{"env"}})
		res, out, _ := ts.run(t, rexec.Options{Binary: "env", Env: []string{"FOO=bar", "LD_PRELOAD=/x.so", "LD_LIBRARY_PATH=/l", "LD_AUDIT=/a"}})
		if res.Code != 0 || strings.TrimSpace(out) != "FOO=bar" {
			t.Fatalf("env printed %q (code %d), want only FOO=bar", out, res.Code)
		}
	})
	t.Run("configured deny-list", func(t *testing.T) {
		ts := newServer(t, &hostexec.Options{Allow: []string{"env"}, EnvDeny: []string{"SECRET_*"}})
		_, out, _ := ts.run(t, rexec.Options{Binary: "env", Env: []string{"SECRET_A=1", "LD_PRELOAD=/x.so"}})
		if strings.TrimSpace(out) != "LD_PRELOAD=/x.so" {
			t.Fatalf("env printed %q", out)
		}
	})
	t.Run("cwd", func(t *testing.T) {
		ts := newServer(t, &hostexec.Options{Allow: []string{"pwd"}})
		_, out, _ := ts.run(t, rexec.Options{Binary: "pwd", Cwd: dir})
		if strings.TrimSpace(out) != dir {
			t.Fatalf("pwd printed %q, want %s", out, dir)
		}
	})
}

func TestPassedFiles(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh"}})
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	os.WriteFile(in, []byte("0123456789"), 0o644)
	os.WriteFile(out, []byte("head\n"), 0o644)
	o := sh(`cat <&5; echo; readlink /proc/$$/fd/6; [ -e /proc/$$/fd/8 ] && echo fd8-open; echo appended >&7`)
	o.Files = []*qtfsv1.ExecFile{
		{Fd: 5, Path: []byte(in), Flags: unix.O_RDONLY, Offset: 4},
		{Fd: 7, Path: []byte(out), Flags: unix.O_WRONLY | unix.O_APPEND | unix.O_TRUNC},
	}
	res, stdout, stderr := ts.run(t, o)
	if res.Code != 0 || stdout != "456789\n/dev/null\n" {
		t.Fatalf("code %d stdout %q stderr %q", res.Code, stdout, stderr)
	}
	if b, _ := os.ReadFile(out); string(b) != "head\nappended\n" {
		t.Fatalf("out file holds %q", b)
	}
}

// lines is an io.Writer that hands out what is written line by line.
type lines struct {
	w  *io.PipeWriter
	ch chan string
}

func newLines() *lines {
	r, w := io.Pipe()
	l := &lines{w: w, ch: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.ch <- sc.Text()
		}
		close(l.ch)
	}()
	return l
}

func (l *lines) Write(b []byte) (int, error) { return l.w.Write(b) }

func (l *lines) next(t *testing.T) string {
	t.Helper()
	select {
	case s, ok := <-l.ch:
		if !ok {
			t.Fatal("output ended")
		}
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("no output line within 10s")
	}
	return ""
}

func (l *lines) pid(t *testing.T) int {
	t.Helper()
	s := l.next(t)
	pid, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("want a pid, got %q", s)
	}
	return pid
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func waitDead(t *testing.T, pid int, what string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); {
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) still alive", what, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killLater makes sure a process the test caused to exist is gone at the end.
func killLater(t *testing.T, pid int) {
	t.Cleanup(func() { unix.Kill(pid, unix.SIGKILL) })
}

func TestClientGoneKillsTheGroupButNotDetached(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh"}})
	out := newLines()
	o := sh(`echo $$; sleep 301 & echo $!; setsid sleep 302 & echo $!; wait`)
	o.Stdout = out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := rexec.Run(ctx, ts.cc, o); done <- err }()
	shPid, child, detached := out.pid(t), out.pid(t), out.pid(t)
	killLater(t, child)
	killLater(t, detached)
	// Wait until setsid has exec'd sleep in its own session.
	for i := 0; ; i++ {
		if sid, _ := unix.Getsid(detached); sid == detached {
			break
		}
		if i > 500 {
			t.Fatal("setsid child never got its own session")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; status.Code(err) != codes.Canceled && !strings.Contains(fmt.Sprint(err), "cancel") {
		t.Fatalf("Run: %v, want cancelled", err)
	}
	waitDead(t, shPid, "the remote process")
	waitDead(t, child, "its child in the process group")
	time.Sleep(100 * time.Millisecond)
	if !alive(detached) {
		t.Fatal("the child that left the group with setsid was killed too")
	}
	if got := counter(t, ts.reg, "qtfs_exec_runs_total", "result", "killed"); got != 1 {
		t.Errorf("qtfs_exec_runs_total{result=killed} = %v", got)
	}
}

func TestExitDoesNotWaitForLeftoverChildren(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh"}})
	// The background sleep keeps stdout and stderr open, as a container
	// started by runc run -d keeps runc's.
	t0 := time.Now()
	res, out, _ := ts.run(t, sh(`sleep 30 & echo $!; echo done`))
	if d := time.Since(t0); d > 5*time.Second {
		t.Fatalf("run took %v", d)
	}
	f := strings.Fields(out)
	if res.Code != 0 || len(f) != 2 || f[1] != "done" {
		t.Fatalf("code %d output %q", res.Code, out)
	}
	pid, _ := strconv.Atoi(f[0])
	killLater(t, pid)
	if !alive(pid) {
		t.Fatal("the leftover child died: it was not the run's to kill")
	}
}

// gate is a writer that blocks until opened, and counts.
type gate struct {
	open chan struct{}
	n    atomic.Int64
}

func (g *gate) Write(b []byte) (int, error) {
	<-g.open
	g.n.Add(int64(len(b)))
	return len(b), nil
}

func TestOutputBackPressure(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"head"}})
	const size = 128 << 20
	g := &gate{open: make(chan struct{})}
	pidc := make(chan uint32, 1)
	o := rexec.Options{Binary: "head", Args: []string{"-c", strconv.Itoa(size), "/dev/zero"}, Stdout: g,
		Started: func(pid uint32, _ string) { pidc <- pid }}
	done := make(chan rexec.Result, 1)
	go func() { res, _, _ := ts.run(t, o); done <- res }()
	pid := int(<-pidc)
	time.Sleep(1500 * time.Millisecond)
	if !alive(pid) {
		t.Fatal("head finished writing 128 MiB while nobody read: the output was buffered, not held back")
	}
	close(g.open)
	res := <-done
	if res.Code != 0 || g.n.Load() != size {
		t.Fatalf("code %d, %d bytes, want %d", res.Code, g.n.Load(), size)
	}
}

func TestMaxRunning(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sleep"}, MaxRunning: 1})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		rexec.Run(ctx, ts.cc, rexec.Options{Binary: "sleep", Args: []string{"30"}, Started: func(uint32, string) { close(started) }})
	}()
	<-started
	_, err := rexec.Run(context.Background(), ts.cc, rexec.Options{Binary: "sleep", Args: []string{"0"}})
	if err == nil || !strings.Contains(err.Error(), "processes are running already") {
		t.Fatalf("second run: %v, want the limit", err)
	}
	cancel()
	<-done
	for i := 0; ts.srv.Running() != 0; i++ {
		if i > 500 {
			t.Fatal("the slot was never released")
		}
		time.Sleep(10 * time.Millisecond)
	}
	res, _, _ := ts.run(t, rexec.Options{Binary: "sleep", Args: []string{"0"}})
	if res.Code != 0 {
		t.Fatalf("run after the slot freed: %+v", res)
	}
}

func TestSignalsGoToProcessOrGroup(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh"}})
	// The child traps the signal too: it sees it only when it went to the
	// whole group. (A shell's background job ignores INT and QUIT unless
	// env resets them.)
	script := `trap 'echo parent; sleep 0.3; kill -KILL $! 2>/dev/null; exit 3' %[1]s
		env --default-signal=%[1]s sh -c 'trap "echo child; exit 0" %[1]s; echo ready; while :; do sleep 0.05; done' &
		wait; wait`
	for _, tc := range []struct {
		sig   syscall.Signal
		name  string
		group bool
	}{
		{syscall.SIGINT, "INT", true},
		{syscall.SIGQUIT, "QUIT", true},
		{syscall.SIGHUP, "HUP", true},
		{syscall.SIGTERM, "TERM", false},
		{syscall.SIGUSR1, "USR1", false},
		{syscall.SIGUSR2, "USR2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := newLines()
			sigs := make(chan os.Signal, 1)
			o := sh(fmt.Sprintf(script, tc.name))
			o.Stdout, o.Signals = out, sigs
			done := make(chan rexec.Result, 1)
			go func() { res, _, _ := ts.run(t, o); out.w.Close(); done <- res }()
			if s := out.next(t); s != "ready" {
				t.Fatalf("got %q", s)
			}
			sigs <- tc.sig
			res := <-done
			var got []string
			for s := range out.ch {
				got = append(got, s)
			}
			want := "parent"
			if tc.group {
				want = "child parent"
			}
			if strings.Join(got, " ") != want && !(tc.group && strings.Join(got, " ") == "parent child") {
				t.Fatalf("saw %q, want %q", got, want)
			}
			if res.Code != 3 {
				t.Fatalf("code %d, want 3", res.Code)
			}
		})
	}
}

// TestProgramsStartWithSignalsAtDefault checks that a program run on the
// host starts with SIGHUP and SIGINT at their default action even when the
// server runs with them ignored (as under nohup): it could not trap them,
// nor be stopped by them, otherwise. /proc's SigIgn mask says which
// signals a process ignores.
func TestProgramsStartWithSignalsAtDefault(t *testing.T) {
	signal.Ignore(syscall.SIGHUP, syscall.SIGINT)
	t.Cleanup(func() { signal.Reset(syscall.SIGHUP, syscall.SIGINT) })
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh"}})
	res, out, errOut := ts.run(t, sh(`sed -n 's/^SigIgn:[[:space:]]*//p' /proc/$$/status`))
	if res.Code != 0 {
		t.Fatalf("exit %d: %s", res.Code, errOut)
	}
	mask, err := strconv.ParseUint(strings.TrimSpace(out), 16, 64)
	if err != nil {
		t.Fatalf("SigIgn %q: %v", out, err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGHUP, syscall.SIGINT} {
		if mask&(1<<(sig-1)) != 0 {
			t.Errorf("the program started with %v ignored (SigIgn %016x)", sig, mask)
		}
	}
	// The server itself goes on ignoring them.
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
}

func TestConcurrentRuns(t *testing.T) {
	ts := newServer(t, &hostexec.Options{Allow: []string{"sh"}})
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out bytes.Buffer
			res, err := rexec.Run(context.Background(), ts.cc, rexec.Options{Binary: "sh", Args: []string{"-c", fmt.Sprintf("echo %d; exit %d", i, i)}, Stdout: &out})
			if err != nil || res.Code != i || strings.TrimSpace(out.String()) != strconv.Itoa(i) {
				t.Errorf("run %d: %+v %q %v", i, res, out.String(), err)
			}
		}()
	}
	wg.Wait()
}
