package session

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/qtfs/qtfs/pkg/fs/session/sessiontest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// fastTiming makes the liveness checks quick enough for tests.
var fastTiming = Timing{
	Watch:        50 * time.Millisecond,
	ProbeAfter:   300 * time.Millisecond,
	ProbeTimeout: 300 * time.Millisecond,
	RetryProbe:   200 * time.Millisecond,
	BackoffMin:   10 * time.Millisecond,
	BackoffMax:   100 * time.Millisecond,
	KillCheck:    0,
}

// reconnectClient is a Session through the proxy with one mount of the
// export.
type reconnectClient struct {
	s     *Session
	mount uint64
	reg   *prometheus.Registry
}

func newReconnectClient(t *testing.T, fs *sessiontest.Server, timeout time.Duration) *reconnectClient {
	t.Helper()
	return newReconnectClientLog(t, fs, timeout, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
}

// newReconnectClientLog is newReconnectClient with the session's logger.
func newReconnectClientLog(t *testing.T, fs *sessiontest.Server, timeout time.Duration, log *zap.Logger) *reconnectClient {
	t.Helper()
	cc := fs.Dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tm := fastTiming
	s, err := New(ctx, cc, "reconnect-test", log, Options{ReconnectTimeout: timeout, Timing: &tm, DialChannel: fs.DialChannel})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	reg := prometheus.NewRegistry()
	if err := s.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	resp, e := Call(ctx, s, "Mount", qtfsv1.FileSystemClient.Mount, &qtfsv1.MountRequest{Path: []byte(fs.Export), Caller: &qtfsv1.Caller{}}, CallOptions{})
	if e != 0 {
		t.Fatalf("mount: %v", e)
	}
	return &reconnectClient{s: s, mount: resp.GetMount(), reg: reg}
}

const opTimeout = 10 * time.Second

func (c *reconnectClient) open(t *testing.T, path string, flags uint32) uint64 {
	t.Helper()
	resp, e := Call(context.Background(), c.s, "Open", qtfsv1.FileSystemClient.Open,
		&qtfsv1.OpenRequest{Mount: c.mount, Caller: &qtfsv1.Caller{}, Path: []byte(path), Flags: flags}, CallOptions{Timeout: opTimeout})
	if e != 0 {
		t.Fatalf("open %s: %v", path, e)
	}
	return resp.GetHandle()
}

func (c *reconnectClient) read(h uint64, off int64, n int) ([]byte, syscall.Errno) {
	resp, e := Call(context.Background(), c.s, "Read", qtfsv1.FileSystemClient.Read, &qtfsv1.ReadRequest{Handle: h, Offset: off, Size: uint32(n)}, CallOptions{Timeout: opTimeout})
	return resp.GetData(), e
}

func (c *reconnectClient) write(h uint64, off int64, data []byte) syscall.Errno {
	_, e := Call(context.Background(), c.s, "Write", qtfsv1.FileSystemClient.Write, &qtfsv1.WriteRequest{Handle: h, Offset: off, Data: data}, CallOptions{Timeout: opTimeout})
	return e
}

func (c *reconnectClient) lookup(dir, name string) syscall.Errno {
	_, e := Call(context.Background(), c.s, "Lookup", qtfsv1.FileSystemClient.Lookup,
		&qtfsv1.LookupRequest{Mount: c.mount, Caller: &qtfsv1.Caller{}, Path: []byte(dir), Name: []byte(name)}, CallOptions{Timeout: opTimeout})
	return e
}

func writeHost(t *testing.T, fs *sessiontest.Server, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(fs.Export, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReconnectServerRestart: after a server restart the session is
// handshaken again, the mount is mounted again and open files are opened
// again by path, transparently; the data written before and after is
// there.
func TestReconnectServerRestart(t *testing.T) {
	fs := sessiontest.NewServer(t)
	writeHost(t, fs, "f", "0123456789")
	if err := os.Mkdir(filepath.Join(fs.Export, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := newReconnectClient(t, fs, 10*time.Second)
	h := c.open(t, "f", syscall.O_RDWR)
	dh := c.open(t, "d", syscall.O_RDONLY|syscall.O_DIRECTORY)
	if e := c.write(h, 10, []byte("before")); e != 0 {
		t.Fatal(e)
	}
	for round := 1; round <= 3; round++ {
		fs.Restart()
		got, e := c.read(h, 0, 100)
		if e != 0 {
			t.Fatalf("round %d: read after restart: %v", round, e)
		}
		if !bytes.HasPrefix(got, []byte("0123456789before")) {
			t.Fatalf("round %d: read %q", round, got)
		}
		if e := c.write(h, int64(len(got)), []byte("after")); e != 0 {
			t.Fatalf("round %d: write after restart: %v", round, e)
		}
		if e := c.lookup("", "f"); e != 0 {
			t.Fatalf("round %d: lookup after restart: %v", round, e)
		}
		if _, e := Call(context.Background(), c.s, "Readdir", qtfsv1.FileSystemClient.Readdir, &qtfsv1.ReaddirRequest{Handle: dh, MaxEntries: 10}, CallOptions{Timeout: opTimeout}); e != 0 {
			t.Fatalf("round %d: readdir of the re-opened directory: %v", round, e)
		}
		if n := fs.Sessions(); n != 1 {
			t.Fatalf("round %d: %d sessions on the new server, want 1", round, n)
		}
	}
	data, _ := os.ReadFile(filepath.Join(fs.Export, "f"))
	if string(data) != "0123456789beforeafterafterafter" {
		t.Fatalf("host file %q", data)
	}
	if n := metricValue(c.s.metrics.reconnects); n != 3 {
		t.Fatalf("reconnects counted %v, want 3", n)
	}
	if n := metricValue(c.s.metrics.reopens.WithLabelValues("ok")); n != 6 {
		t.Fatalf("re-opens counted %v, want 6 (two handles, three restarts)", n)
	}
	if up := metricValue(c.s.metrics.sessionUp); up != 1 {
		t.Fatalf("session_up %v", up)
	}
	// Release after a restart is not sent for the old session's id.
	if _, e := Call(context.Background(), c.s, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: h}, CallOptions{Timeout: opTimeout}); e != 0 {
		t.Fatal(e)
	}
	if _, e := c.read(h, 0, 1); e != syscall.EBADF {
		t.Fatalf("read of a released handle: %v, want EBADF", e)
	}
}

// TestReconnectReopenRules: a file that is gone or replaced after the
// restart is not opened in its place: its callers get EIO. A file created
// with O_TRUNC|O_EXCL is opened again without either (no EEXIST, no data
// lost), and a file the caller tracks the path of is found after a
// rename.
func TestReconnectReopenRules(t *testing.T) {
	fs := sessiontest.NewServer(t)
	for _, n := range []string{"gone", "replaced", "renamed"} {
		writeHost(t, fs, n, "old "+n)
	}
	c := newReconnectClient(t, fs, 10*time.Second)
	gone := c.open(t, "gone", syscall.O_RDONLY)
	replaced := c.open(t, "replaced", syscall.O_RDONLY)
	renamed := c.open(t, "renamed", syscall.O_RDONLY)
	c.s.TrackPath(renamed, func() ([]byte, syscall.Errno) { return []byte("moved/renamed"), 0 })
	cr, e := Call(context.Background(), c.s, "Create", qtfsv1.FileSystemClient.Create, &qtfsv1.CreateRequest{
		Mount: c.mount, Caller: &qtfsv1.Caller{}, Name: []byte("created"),
		Flags: syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC, Mode: 0o644,
	}, CallOptions{Timeout: opTimeout})
	if e != 0 {
		t.Fatal(e)
	}
	created := cr.GetHandle()
	if e := c.write(created, 0, []byte("kept")); e != 0 {
		t.Fatal(e)
	}

	fs.Stop()
	os.Remove(filepath.Join(fs.Export, "gone"))
	os.Remove(filepath.Join(fs.Export, "replaced"))
	writeHost(t, fs, "replaced", "a new file")
	os.Mkdir(filepath.Join(fs.Export, "moved"), 0o755)
	if err := os.Rename(filepath.Join(fs.Export, "renamed"), filepath.Join(fs.Export, "moved", "renamed")); err != nil {
		t.Fatal(err)
	}
	fs.Restart()

	for name, h := range map[string]uint64{"gone": gone, "replaced": replaced} {
		for range 2 {
			if got, e := c.read(h, 0, 100); e != syscall.EIO {
				t.Fatalf("%s: read after restart: %q, %v; want EIO", name, got, e)
			}
		}
	}
	if got, e := c.read(renamed, 0, 100); e != 0 || string(got) != "old renamed" {
		t.Fatalf("renamed: read %q, %v", got, e)
	}
	if e := c.write(created, 4, []byte("+more")); e != 0 {
		t.Fatalf("created: write after restart: %v", e)
	}
	data, _ := os.ReadFile(filepath.Join(fs.Export, "created"))
	if string(data) != "kept+more" {
		t.Fatalf("created file holds %q: the re-open replayed O_TRUNC or failed", data)
	}
	if n := metricValue(c.s.metrics.reopens.WithLabelValues("gone")); n != 2 {
		t.Fatalf("gone re-opens counted %v, want 2", n)
	}
}

// TestReconnectLinkStall: the link goes silent (no reset) while a call
// waits. The watchdog notices; if the link comes back within the timeout
// the call just completes late.
func TestReconnectLinkStall(t *testing.T) {
	fs := sessiontest.NewServer(t)
	writeHost(t, fs, "f", "data")
	c := newReconnectClient(t, fs, 10*time.Second)
	h := c.open(t, "f", syscall.O_RDONLY)
	fs.Proxy.Stall()
	done := make(chan syscall.Errno, 1)
	start := time.Now()
	go func() {
		_, e := c.read(h, 0, 4)
		done <- e
	}()
	time.Sleep(time.Second)
	if up, _ := c.s.rc.state(); up {
		t.Fatal("the watchdog did not notice the silent link")
	}
	fs.Proxy.Resume()
	select {
	case e := <-done:
		if e != 0 {
			t.Fatalf("read across the stall: %v", e)
		}
		t.Logf("read took %v across a 1s stall", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("read did not finish after the link came back")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if up, _ := c.s.rc.state(); up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("session not up again")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := metricValue(c.s.metrics.reconnects); n != 0 {
		t.Fatalf("a stall the server session survived counted %v reconnects", n)
	}
}

// TestReconnectTimeout: the link stays silent past the reconnect
// timeout: the call in flight fails with EIO in bounded time, new calls
// fail at once with ENOTCONN, and everything works again once the link is
// back.
func TestReconnectTimeout(t *testing.T) {
	fs := sessiontest.NewServer(t)
	writeHost(t, fs, "f", "data")
	const timeout = 500 * time.Millisecond
	c := newReconnectClient(t, fs, timeout)
	h := c.open(t, "f", syscall.O_RDONLY)
	fs.Proxy.Stall()
	start := time.Now()
	_, e := c.read(h, 0, 4)
	took := time.Since(start)
	if e != syscall.EIO {
		t.Fatalf("read in flight past the timeout: %v, want EIO", e)
	}
	// Bound: noticing (probeAfter + watch + probeTimeout) plus the timeout.
	if bound := fastTiming.ProbeAfter + fastTiming.Watch + fastTiming.ProbeTimeout + timeout + time.Second; took > bound {
		t.Fatalf("EIO after %v, more than %v", took, bound)
	}
	t.Logf("EIO after %v", took.Round(time.Millisecond))
	for _, op := range []func() syscall.Errno{
		func() syscall.Errno { _, e := c.read(h, 0, 4); return e },
		func() syscall.Errno { return c.lookup("", "f") },
		func() syscall.Errno {
			_, e := Call(context.Background(), c.s, "Mkdir", qtfsv1.FileSystemClient.Mkdir, &qtfsv1.MkdirRequest{Mount: c.mount, Caller: &qtfsv1.Caller{}, Name: []byte("d")}, CallOptions{Timeout: opTimeout})
			return e
		},
	} {
		t0 := time.Now()
		if e := op(); e != syscall.ENOTCONN {
			t.Fatalf("new call while given up: %v, want ENOTCONN", e)
		}
		if d := time.Since(t0); d > 100*time.Millisecond {
			t.Fatalf("new call took %v to fail", d)
		}
	}
	fs.Proxy.Resume()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, e := c.read(h, 0, 4)
		if e == 0 && string(got) == "data" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the link came back: %v", e)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReconnectOnce: a request that must not be sent twice (mkdir) and
// was lost with the connection fails with EIO, and is not sent again; one
// sent after the cut, on the new connection, succeeds.
func TestReconnectOnce(t *testing.T) {
	fs := sessiontest.NewServer(t)
	c := newReconnectClient(t, fs, 10*time.Second)
	fs.Slow.Store("Mkdir")
	done := make(chan syscall.Errno, 1)
	go func() {
		_, e := Call(context.Background(), c.s, "Mkdir", qtfsv1.FileSystemClient.Mkdir, &qtfsv1.MkdirRequest{Mount: c.mount, Caller: &qtfsv1.Caller{}, Name: []byte("lost"), Mode: 0o755}, CallOptions{Timeout: opTimeout})
		done <- e
	}()
	time.Sleep(200 * time.Millisecond)
	fs.Proxy.Cut()
	if e := <-done; e != syscall.EIO {
		t.Fatalf("mkdir lost with the connection: %v, want EIO", e)
	}
	fs.Slow.Store("")
	// It was done once on the server (the reply was lost), never twice.
	if _, err := os.Stat(filepath.Join(fs.Export, "lost")); err != nil {
		t.Fatalf("the lost mkdir did not reach the server: %v", err)
	}
	fs.Proxy.Cut()
	if _, e := Call(context.Background(), c.s, "Mkdir", qtfsv1.FileSystemClient.Mkdir, &qtfsv1.MkdirRequest{Mount: c.mount, Caller: &qtfsv1.Caller{}, Name: []byte("after"), Mode: 0o755}, CallOptions{Timeout: opTimeout}); e != 0 {
		t.Fatalf("mkdir after a cut: %v", e)
	}
	fs.Restart()
	// Once the client has seen the new server (any call does), a request
	// that cannot be sent twice goes through too.
	if e := c.lookup("", "after"); e != 0 {
		t.Fatal(e)
	}
	if _, e := Call(context.Background(), c.s, "Mkdir", qtfsv1.FileSystemClient.Mkdir, &qtfsv1.MkdirRequest{Mount: c.mount, Caller: &qtfsv1.Caller{}, Name: []byte("restarted"), Mode: 0o755}, CallOptions{Timeout: opTimeout}); e != 0 {
		t.Fatalf("mkdir after a restart: %v", e)
	}
}

// TestReconnectRelease: releasing handles while the server is away does
// not wait for it, and nothing is left open on the server.
func TestReconnectRelease(t *testing.T) {
	fs := sessiontest.NewServer(t)
	writeHost(t, fs, "f", "x")
	c := newReconnectClient(t, fs, 30*time.Second)
	h1 := c.open(t, "f", syscall.O_RDONLY)
	h2 := c.open(t, "f", syscall.O_RDONLY)
	fs.Stop()
	// A call sees the connection fail, and waits for the server.
	waiting := make(chan syscall.Errno, 1)
	go func() { waiting <- c.lookup("", "f") }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if up, _ := c.s.rc.state(); !up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the client did not notice the server is gone")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t0 := time.Now()
	for _, h := range []uint64{h1, h2} {
		if _, e := Call(context.Background(), c.s, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: h}, CallOptions{Timeout: opTimeout}); e != 0 {
			t.Fatal(e)
		}
	}
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Fatalf("release waited %v for the server", d)
	}
	fs.Restart()
	if e := <-waiting; e != 0 {
		t.Fatalf("the call waiting for the server: %v", e)
	}
	open := fs.OpenHandles()
	if open != 0 {
		t.Fatalf("%d handles open on the server", open)
	}
}

// TestReconnectOff: with reconnecting off a lost session is EIO.
func TestReconnectOff(t *testing.T) {
	fs := sessiontest.NewServer(t)
	c := newReconnectClient(t, fs, -1)
	if c.s.rc != nil {
		t.Fatal("reconnecting is on")
	}
	fs.Restart()
	if e := c.lookup("", "x"); e != syscall.EIO {
		t.Fatalf("lookup on a lost session: %v, want EIO", e)
	}
}

// TestSessionCloseStops: Close ends the session's goroutines, and calls
// waiting for a reconnect.
func TestSessionCloseStops(t *testing.T) {
	fs := sessiontest.NewServer(t)
	before := runtime.NumGoroutine()
	c := newReconnectClient(t, fs, time.Minute)
	fs.Stop()
	done := make(chan syscall.Errno, 1)
	go func() { done <- c.lookup("", "x") }()
	time.Sleep(200 * time.Millisecond)
	c.s.Close()
	select {
	case e := <-done:
		if e != syscall.ENOTCONN && e != syscall.EIO {
			t.Fatalf("call waiting at Close: %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close left a call waiting")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+8 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+8 {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
}

// metricValue reads a counter or a gauge.
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		return -1
	}
	if c := d.GetCounter(); c != nil {
		return c.GetValue()
	}
	return d.GetGauge().GetValue()
}

// TestPendingKill is the parse of /proc/<pid>/status for a caller being
// killed.
func TestPendingKill(t *testing.T) {
	for _, tc := range []struct {
		name, status string
		want         bool
	}{
		{"running", "Name:\tcat\nState:\tS (sleeping)\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n", false},
		{"handled signal pending", "Name:\tcat\nState:\tS (sleeping)\nSigPnd:\t0000000000000002\nShdPnd:\t0000000000004000\n", false},
		{"SIGKILL pending", "Name:\tcat\nState:\tD (disk sleep)\nSigPnd:\t0000000000000100\nShdPnd:\t0000000000000000\n", true},
		{"SIGKILL shared", "Name:\tcat\nState:\tD (disk sleep)\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000100\n", true},
		{"zombie", "Name:\tcat\nState:\tZ (zombie)\nSigPnd:\t0000000000000000\n", true},
		{"garbage", "SigPnd:\tzz\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pendingKill([]byte("\n" + tc.status)); got != tc.want {
				t.Fatalf("pendingKill = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestKilledCallerCancels: a read that waits on the server (a fifo with
// no data) for a FUSE request that was interrupted goes on while its
// caller lives, and is cancelled (EINTR) once the caller is killed; the
// server stops waiting too.
func TestKilledCallerCancels(t *testing.T) {
	fs := sessiontest.NewServer(t)
	fifo := filepath.Join(fs.Export, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	// Hold the fifo open for writing, never writing: readers wait.
	w, err := os.OpenFile(fifo, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := newReconnectClient(t, fs, 10*time.Second)
	h := c.open(t, "fifo", syscall.O_RDONLY)

	victim := exec.Command("sleep", "1000")
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { victim.Process.Kill(); victim.Wait() })
	interrupted := make(chan struct{})
	close(interrupted)
	caller := Caller{Interrupted: interrupted, Pid: uint32(victim.Process.Pid)}
	done := make(chan syscall.Errno, 1)
	go func() {
		_, e := Call(context.Background(), c.s, "Read", qtfsv1.FileSystemClient.Read, &qtfsv1.ReadRequest{Handle: h, Size: 10}, CallOptions{Timeout: opTimeout, For: caller})
		done <- e
	}()
	select {
	case e := <-done:
		t.Fatalf("the read of an interrupted but living caller ended: %v", e)
	case <-time.After(500 * time.Millisecond):
	}
	// Killed, not reaped: a zombie, as a killed caller is while the
	// kernel waits for our answer.
	victim.Process.Signal(syscall.SIGKILL)
	select {
	case e := <-done:
		if e != syscall.EINTR {
			t.Fatalf("read of a killed caller: %v, want EINTR", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the read of a killed caller was not cancelled")
	}
	// The server stopped reading: the fifo's handle closes on release.
	if _, e := Call(context.Background(), c.s, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: h}, CallOptions{Timeout: opTimeout}); e != 0 {
		t.Fatal(e)
	}
	fs.WaitNoHandles(t, "its read did not stop")
}

// TestPingReconnects: the server restarts while the mount is idle; the
// status ping notices, says the session is reconnecting, and a later
// ping answers with the round-trip time of the new server session, with
// no file operation in between.
func TestPingReconnects(t *testing.T) {
	fs := sessiontest.NewServer(t)
	c := newReconnectClient(t, fs, 10*time.Second)
	ctx := context.Background()
	if _, err := c.s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	fs.Restart()
	sawReconnecting := false
	deadline := time.Now().Add(10 * time.Second)
	for {
		rtt, err := c.s.Ping(ctx)
		if err == nil {
			t.Logf("ping %v after the restart (reconnecting seen: %v)", rtt, sawReconnecting)
			break
		}
		if !errors.Is(err, syscall.ENOTCONN) {
			t.Fatalf("ping after the restart: %v, want ENOTCONN while reconnecting", err)
		}
		sawReconnecting = true
		if time.Now().After(deadline) {
			t.Fatalf("ping still failing 10 s after the restart: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sawReconnecting {
		t.Fatal("the first ping after the restart succeeded: it cannot have reached the new server session")
	}
	if n := metricValue(c.s.metrics.reconnects); n < 1 {
		t.Fatalf("reconnects %v, want at least 1", n)
	}
}

// TestIdleWatchdogSleeps: with no call waiting and no lock held the
// watchdog runs no rounds (an idle client arms no timer); a call wakes it.
func TestIdleWatchdogSleeps(t *testing.T) {
	fs := sessiontest.NewServer(t)
	c := newReconnectClient(t, fs, 5*time.Second)
	r := c.s.rc
	settle := func() int64 {
		// A round may be due from the calls so far: let it pass.
		time.Sleep(3 * fastTiming.Watch)
		return r.watchRounds.Load()
	}
	before := settle()
	time.Sleep(10 * fastTiming.Watch)
	if n := r.watchRounds.Load() - before; n != 0 {
		t.Errorf("the watchdog ran %d rounds while idle, want 0", n)
	}
	if e := c.lookup("", "missing"); e != syscall.ENOENT {
		t.Fatalf("lookup: %v", e)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.watchRounds.Load() == before && time.Now().Before(deadline) {
		time.Sleep(fastTiming.Watch / 5)
	}
	if r.watchRounds.Load() == before {
		t.Error("a call did not wake the watchdog")
	}
	after := settle()
	time.Sleep(10 * fastTiming.Watch)
	if n := r.watchRounds.Load() - after; n != 0 {
		t.Errorf("the watchdog ran %d rounds after the call, idle again, want 0", n)
	}
}
