package hostfs_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// limitServer is a server with small limits, its registry and its logs.
type limitServer struct {
	s    *hostfs.Server
	reg  *prometheus.Registry
	logs *observer.ObservedLogs
	exp  string
}

func newLimitServer(t *testing.T, limits hostfs.Limits, ops ...string) *limitServer {
	t.Helper()
	exp := t.TempDir()
	if err := os.WriteFile(filepath.Join(exp, "f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	s, err := hostfs.New(hostfs.Options{
		Exports:         []hostfs.Export{{Path: exp, Ops: ops}},
		Logger:          zap.New(core),
		Registerer:      reg,
		MaxMessageBytes: 4096,
		Limits:          limits,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &limitServer{s: s, reg: reg, logs: logs, exp: exp}
}

func (ls *limitServer) client(t *testing.T) (*hostfs.DirectClient, uint64) {
	t.Helper()
	return mountDirect(t, ls.s, ls.exp)
}

// refused checks that a refusal for reason was counted and logged.
func (ls *limitServer) refused(t *testing.T, reason string) {
	t.Helper()
	if n := gather(t, ls.reg, "qtfs_server_refusals_total", map[string]string{"reason": reason}); n < 1 {
		t.Errorf("refusal %q counted %v times", reason, n)
	}
	if ls.logs.FilterMessage("refused: "+reason).Len() == 0 {
		t.Errorf("refusal %q not logged; logs: %v", reason, ls.logs.All())
	}
}

// holdLocks starts n lock waits that stay in flight until the returned
// function is called.
func holdLocks(t *testing.T, c *hostfs.DirectClient, m uint64, n int) func() {
	t.Helper()
	ctx := context.Background()
	open := func() uint64 {
		r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_RDWR})
		if err != nil || r.GetErrno() != 0 {
			t.Fatalf("open: %v %v", r, err)
		}
		return r.GetHandle()
	}
	holder := open()
	if r, err := c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: holder, Owner: 1, Lock: &qtfsv1.Lock{End: ^uint64(0), Type: unix.F_WRLCK}}); err != nil || r.GetErrno() != 0 {
		t.Fatalf("lock: %v %v", r, err)
	}
	waitCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range n {
		h := open()
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Setlk(waitCtx, &qtfsv1.SetlkRequest{Handle: h, Owner: 2, Lock: &qtfsv1.Lock{End: ^uint64(0), Type: unix.F_WRLCK}, Wait: true})
		}()
	}
	time.Sleep(100 * time.Millisecond)
	return func() { cancel(); wg.Wait() }
}

func TestLimitInflight(t *testing.T) {
	ls := newLimitServer(t, hostfs.Limits{MaxInflightPerSession: 2})
	c, m := ls.client(t)
	ctx := context.Background()
	release := holdLocks(t, c, m, 2)
	r, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Name: []byte("f")})
	if err != nil || syscall.Errno(r.GetErrno()) != syscall.EAGAIN {
		t.Fatalf("third request in flight: %v %v, want EAGAIN", r, err)
	}
	// Another session has its own budget.
	other, om := ls.client(t)
	if r, err := other.Lookup(ctx, &qtfsv1.LookupRequest{Mount: om, Caller: root, Name: []byte("f")}); err != nil || r.GetErrno() != 0 {
		t.Fatalf("another session: %v %v", r, err)
	}
	release()
	if r, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Name: []byte("f")}); err != nil || r.GetErrno() != 0 {
		t.Fatalf("after the waits ended: %v %v", r, err)
	}
	ls.refused(t, "inflight")
}

func TestLimitInflightBytes(t *testing.T) {
	// One message's data plus the overhead of one request: a second
	// request in flight beside a full write is too much.
	ls := newLimitServer(t, hostfs.Limits{MaxInflightBytesPerSession: 4096 + 1024})
	c, m := ls.client(t)
	ctx := context.Background()
	o, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_RDWR})
	if err != nil || o.GetErrno() != 0 {
		t.Fatal(o, err)
	}
	if w, err := c.Write(ctx, &qtfsv1.WriteRequest{Handle: o.GetHandle(), Data: make([]byte, 4096)}); err != nil || w.GetErrno() != 0 {
		t.Fatalf("a full write alone: %v %v", w, err)
	}
	release := holdLocks(t, c, m, 1)
	w, err := c.Write(ctx, &qtfsv1.WriteRequest{Handle: o.GetHandle(), Data: make([]byte, 4096)})
	if err != nil || syscall.Errno(w.GetErrno()) != syscall.EAGAIN {
		t.Fatalf("a full write beside another request: %v %v, want EAGAIN", w, err)
	}
	rd, err := c.Read(ctx, &qtfsv1.ReadRequest{Handle: o.GetHandle(), Size: 4096})
	if err != nil || syscall.Errno(rd.GetErrno()) != syscall.EAGAIN {
		t.Fatalf("a full read beside another request: %v %v, want EAGAIN", rd, err)
	}
	release()
	ls.refused(t, "inflight_bytes")
	if _, err := hostfs.New(hostfs.Options{MaxMessageBytes: 1 << 20, Limits: hostfs.Limits{MaxInflightBytesPerSession: 1 << 10}}); err == nil {
		t.Fatal("a byte limit below one message was accepted")
	}
}

func TestLimitHandles(t *testing.T) {
	ls := newLimitServer(t, hostfs.Limits{MaxHandlesPerSession: 3})
	c, m := ls.client(t)
	ctx := context.Background()
	var hs []uint64
	for i := range 4 {
		r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_RDONLY})
		if err != nil {
			t.Fatal(err)
		}
		if i < 3 {
			if r.GetErrno() != 0 {
				t.Fatalf("open %d: %v", i, r)
			}
			hs = append(hs, r.GetHandle())
			continue
		}
		if syscall.Errno(r.GetErrno()) != syscall.EMFILE {
			t.Fatalf("open past the limit: %v, want EMFILE", r)
		}
	}
	c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: hs[0]})
	if r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_RDONLY}); err != nil || r.GetErrno() != 0 {
		t.Fatalf("open after a release: %v %v", r, err)
	}
	if n := ls.s.OpenHandles(); n != 3 {
		t.Fatalf("%d handles open, want 3", n)
	}
	ls.refused(t, "max_handles")
}

func TestLimitSessions(t *testing.T) {
	ls := newLimitServer(t, hostfs.Limits{MaxSessions: 2})
	ctx := context.Background()
	a := ls.s.DirectClient()
	b := ls.s.DirectClient()
	c := ls.s.DirectClient()
	t.Cleanup(func() { a.Close(); b.Close(); c.Close() })
	for _, cl := range []*hostfs.DirectClient{a, b} {
		if _, err := cl.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "too many sessions") {
		t.Fatalf("third session: %v, want RESOURCE_EXHAUSTED", err)
	}
	// A second handshake on a live session resets it, it is no new one.
	if _, err := a.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatalf("handshake again: %v", err)
	}
	b.Close()
	if _, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatalf("after a session ended: %v", err)
	}
	if n := ls.s.Sessions(); n != 2 {
		t.Fatalf("%d sessions, want 2", n)
	}
	ls.refused(t, "max_sessions")
}

func TestExportOps(t *testing.T) {
	ls := newLimitServer(t, hostfs.Limits{}, "read", "Getlk")
	c, m := ls.client(t)
	ctx := context.Background()
	if r, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Name: []byte("f")}); err != nil || r.GetErrno() != 0 {
		t.Fatalf("lookup (read): %v %v", r, err)
	}
	o, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_RDONLY})
	if err != nil || o.GetErrno() != 0 {
		t.Fatalf("open for reading: %v %v", o, err)
	}
	h := o.GetHandle()
	type check struct {
		name string
		call func() (int32, error)
		want syscall.Errno
	}
	for _, tc := range []check{
		{"read", func() (int32, error) {
			r, err := c.Read(ctx, &qtfsv1.ReadRequest{Handle: h, Size: 4})
			return r.GetErrno(), err
		}, 0},
		{"getlk (listed by name)", func() (int32, error) {
			r, err := c.Getlk(ctx, &qtfsv1.GetlkRequest{Handle: h, Lock: &qtfsv1.Lock{End: 1, Type: unix.F_RDLCK}})
			return r.GetErrno(), err
		}, 0},
		{"setlk", func() (int32, error) {
			r, err := c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: h, Lock: &qtfsv1.Lock{End: 1, Type: unix.F_RDLCK}})
			return r.GetErrno(), err
		}, syscall.EPERM},
		{"mkdir", func() (int32, error) {
			r, err := c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: m, Caller: root, Name: []byte("d"), Mode: 0o755})
			return r.GetErrno(), err
		}, syscall.EPERM},
		{"write through a handle", func() (int32, error) {
			r, err := c.Write(ctx, &qtfsv1.WriteRequest{Handle: h, Data: []byte("x")})
			return r.GetErrno(), err
		}, syscall.EPERM},
		{"open for writing", func() (int32, error) {
			r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_WRONLY})
			return r.GetErrno(), err
		}, syscall.EPERM},
		{"open with O_TRUNC", func() (int32, error) {
			r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_RDONLY | unix.O_TRUNC})
			return r.GetErrno(), err
		}, syscall.EPERM},
		{"setxattr", func() (int32, error) {
			r, err := c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: m, Caller: root, Path: []byte("f"), Name: []byte("user.x"), Value: []byte("y")})
			return r.GetErrno(), err
		}, syscall.EPERM},
		{"release", func() (int32, error) {
			r, err := c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h})
			return r.GetErrno(), err
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, err := tc.call()
			if err != nil || syscall.Errno(e) != tc.want {
				t.Fatalf("errno %v, err %v; want %v", syscall.Errno(e), err, tc.want)
			}
		})
	}
	if data, _ := os.ReadFile(filepath.Join(ls.exp, "f")); string(data) != "data" {
		t.Fatalf("the file changed: %q", data)
	}
	ls.refused(t, "op_not_allowed")
	for _, bad := range [][]string{{"bogus"}, {"read", "Frobnicate"}} {
		if _, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: ls.exp, Ops: bad}}}); err == nil || !strings.Contains(err.Error(), "unknown operation") {
			t.Fatalf("ops %q: %v, want an unknown operation error", bad, err)
		}
	}
}

// TestLimitRefusalsRateLimited: a peer hammering a limit does not flood
// the log.
func TestLimitRefusalsRateLimited(t *testing.T) {
	ls := newLimitServer(t, hostfs.Limits{}, "read")
	c, m := ls.client(t)
	ctx := context.Background()
	for range 200 {
		c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: m, Caller: root, Name: []byte("d"), Mode: 0o755})
	}
	if n := gather(t, ls.reg, "qtfs_server_refusals_total", map[string]string{"reason": "op_not_allowed"}); n != 200 {
		t.Fatalf("refusals counted %v, want 200", n)
	}
	if n := ls.logs.FilterMessage("refused: op_not_allowed").Len(); n < 1 || n > 3 {
		t.Fatalf("%d log lines for 200 refusals in a burst", n)
	}
}

func TestExportAllows(t *testing.T) {
	for _, tc := range []struct {
		ops  []string
		op   string
		want bool
	}{
		{nil, "Mknod", true},
		{[]string{"read"}, "Open", true},
		{[]string{"read"}, "Mknod", false},
		{[]string{"read", "Mknod"}, "Mknod", true},
		{[]string{"no-such-op"}, "Open", false},
	} {
		if got := (hostfs.Export{Path: "/x", Ops: tc.ops}).Allows(tc.op); got != tc.want {
			t.Errorf("hostfs.Export{Ops: %v}.Allows(%s) = %v, want %v", tc.ops, tc.op, got, tc.want)
		}
	}
}
