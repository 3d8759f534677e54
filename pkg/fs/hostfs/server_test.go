package hostfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/fs/contract"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

var root = &qtfsv1.Caller{}

// session is a handshaken DirectClient with the first export mounted.
func session(t *testing.T, s *hostfs.Server, path string) (*hostfs.DirectClient, uint64) {
	t.Helper()
	c := s.DirectClient()
	t.Cleanup(func() { _ = c.Close() })
	if _, err := c.Handshake(t.Context(), &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	r, err := c.Mount(t.Context(), &qtfsv1.MountRequest{Path: []byte(path), Caller: root})
	if err != nil || r.GetErrno() != 0 {
		t.Fatalf("mount %s: %v errno %d", path, err, r.GetErrno())
	}
	return c, r.GetMount()
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts hostfs.Options
		want string
	}{
		{"relative", hostfs.Options{Exports: []hostfs.Export{{Path: "tmp"}}}, "not an absolute path"},
		{"twice", hostfs.Options{Exports: []hostfs.Export{{Path: dir}, {Path: dir + "/"}}}, "listed twice"},
		{"missing", hostfs.Options{Exports: []hostfs.Export{{Path: filepath.Join(dir, "nope")}}}, "no such file"},
		{"file", hostfs.Options{Exports: []hostfs.Export{{Path: file}}}, "not a directory"},
		{"tiny messages", hostfs.Options{MaxMessageBytes: 100}, "out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Logger = zaptest.NewLogger(t)
			s, err := hostfs.New(tc.opts)
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "hostfs: ") {
				t.Fatalf("error %q, want hostfs: ...%s", err, tc.want)
			}
		})
	}
	t.Run("one registry, two servers", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		a, err := hostfs.New(hostfs.Options{Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		if b, err := hostfs.New(hostfs.Options{Registerer: reg}); err == nil {
			b.Close()
			t.Fatalf("second server on the same registry: no error")
		}
	})
}

func TestFsKinds(t *testing.T) {
	candidates := []struct {
		path string
		kind qtfsv1.FsKind
	}{
		{"/proc", qtfsv1.FsKind_FS_KIND_PROC},
		{"/sys", qtfsv1.FsKind_FS_KIND_SYSFS},
		{"/sys/fs/cgroup/unified", qtfsv1.FsKind_FS_KIND_CGROUP2},
		{"/sys/fs/cgroup/cpu", qtfsv1.FsKind_FS_KIND_CGROUP},
		{"/sys/fs/cgroup", 0}, // cgroup2, or a tmpfs holding v1 hierarchies (cgroup)
		{t.TempDir(), qtfsv1.FsKind_FS_KIND_REGULAR},
	}
	var exports []hostfs.Export
	want := map[string]qtfsv1.FsKind{}
	for _, c := range candidates {
		var st unix.Statfs_t
		if unix.Statfs(c.path, &st) != nil {
			continue
		}
		kind := c.kind
		if kind == 0 {
			switch uint64(st.Type) {
			case unix.CGROUP2_SUPER_MAGIC:
				kind = qtfsv1.FsKind_FS_KIND_CGROUP2
			case unix.TMPFS_MAGIC:
				kind = qtfsv1.FsKind_FS_KIND_CGROUP
			default:
				continue
			}
		} else if c.kind == qtfsv1.FsKind_FS_KIND_CGROUP && uint64(st.Type) != unix.CGROUP_SUPER_MAGIC ||
			c.kind == qtfsv1.FsKind_FS_KIND_CGROUP2 && uint64(st.Type) != unix.CGROUP2_SUPER_MAGIC {
			continue
		}
		exports = append(exports, hostfs.Export{Path: c.path, ReadOnly: true})
		want[c.path] = kind
	}
	if _, ok := want["/proc"]; !ok {
		t.Skip("no /proc on this host")
	}
	s, err := hostfs.New(hostfs.Options{Exports: exports, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.DirectClient()
	defer c.Close()
	hs, err := c.Handshake(t.Context(), &qtfsv1.HandshakeRequest{ProtocolVersion: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range hs.GetExports() {
		if ex.GetFsKind() != want[string(ex.GetPath())] {
			t.Errorf("export %s: fs_kind %v, want %v", ex.GetPath(), ex.GetFsKind(), want[string(ex.GetPath())])
		}
		r, err := c.Mount(t.Context(), &qtfsv1.MountRequest{Path: ex.GetPath(), Caller: root})
		if err != nil || r.GetErrno() != 0 || r.GetFsKind() != ex.GetFsKind() || !r.GetReadOnly() {
			t.Errorf("mount %s: %v %v", ex.GetPath(), r, err)
		}
	}
	// A mount beneath an export reports the filesystem it lies on: the
	// walk crosses host sub-mounts.
	if _, ok := want["/sys/fs/cgroup/unified"]; ok {
		r, err := c.Mount(t.Context(), &qtfsv1.MountRequest{Path: []byte("/sys/fs/cgroup/unified"), Caller: root})
		if err != nil || r.GetFsKind() != qtfsv1.FsKind_FS_KIND_CGROUP2 {
			t.Errorf("mount of a cgroup2 sub-mount: %v %v", r, err)
		}
	}
}

func TestProcInline(t *testing.T) {
	if _, err := os.Stat("/proc/uptime"); err != nil {
		t.Skip("no /proc on this host")
	}
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: "/proc", ReadOnly: true}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, m := session(t, s, "/proc")
	ctx := t.Context()
	r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("uptime"), ReadInline: 4096})
	if err != nil || r.GetErrno() != 0 {
		t.Fatalf("open /proc/uptime: %v %v", r, err)
	}
	defer c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: r.GetHandle()})
	if r.GetAttr().GetSize() != 0 || len(r.GetInlineData()) == 0 || !r.GetInlineEof() || !bytes.HasSuffix(r.GetInlineData(), []byte("\n")) {
		t.Errorf("inline read of /proc/uptime: size %d data %q eof %v", r.GetAttr().GetSize(), r.GetInlineData(), r.GetInlineEof())
	}
	// /proc/self is a symlink: the client resolves it, the server refuses
	// to walk through it.
	l, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Name: []byte("self")})
	if err != nil || l.GetAttr().GetMode()&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("lookup /proc/self: %v %v", l, err)
	}
	o, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("self/status")})
	if err != nil || o.GetErrno() != int32(syscall.ELOOP) {
		t.Errorf("open /proc/self/status: %v %v, want ELOOP", o, err)
	}
	// A numeric pid directory works.
	pid := fmt.Sprint(os.Getpid())
	o, err = c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte(pid + "/stat"), ReadInline: 4096})
	if err != nil || o.GetErrno() != 0 || !bytes.HasPrefix(o.GetInlineData(), []byte(pid+" (")) {
		t.Errorf("open /proc/%s/stat: %v %v", pid, o, err)
	}
	c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: o.GetHandle()})
}

// gather returns the value of metric name with labels, or -1.
func gather(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return -1
}

func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	rodir := t.TempDir()
	s, reg := newServer(t, []contract.Export{{Path: dir}, {Path: rodir, ReadOnly: true}})
	c, m := session(t, s, dir)
	ctx := t.Context()
	c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Name: []byte("nope")})
	c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Name: []byte("..")})
	cr, _ := c.Create(ctx, &qtfsv1.CreateRequest{Mount: m, Caller: root, Name: []byte("f"), Flags: unix.O_RDWR, Mode: 0o644})
	c.Write(ctx, &qtfsv1.WriteRequest{Handle: cr.GetHandle(), Data: []byte("12345")})
	c.Read(ctx, &qtfsv1.ReadRequest{Handle: cr.GetHandle(), Size: 3})
	rom, _ := c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(rodir), Caller: root})
	c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: rom.GetMount(), Caller: root, Name: []byte("d")})
	other := s.DirectClient()
	defer other.Close()
	other.Lookup(ctx, &qtfsv1.LookupRequest{Mount: 1, Caller: root, Name: []byte("x")})

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"qtfs_server_ops_total", map[string]string{"op": "Lookup", "errno": "ENOENT"}, 1},
		{"qtfs_server_ops_total", map[string]string{"op": "Lookup", "errno": "EINVAL"}, 1},
		{"qtfs_server_ops_total", map[string]string{"op": "Lookup", "errno": "grpc_FailedPrecondition"}, 1},
		{"qtfs_server_ops_total", map[string]string{"op": "Create", "errno": "OK"}, 1},
		{"qtfs_server_ops_total", map[string]string{"op": "Mkdir", "errno": "EROFS"}, 1},
		{"qtfs_server_op_duration_seconds", map[string]string{"op": "Write"}, 1},
		{"qtfs_server_bytes_total", map[string]string{"direction": "write"}, 5},
		{"qtfs_server_bytes_total", map[string]string{"direction": "read"}, 3},
		{"qtfs_server_refusals_total", map[string]string{"reason": "read_only"}, 1},
		{"qtfs_server_refusals_total", map[string]string{"reason": "invalid_name"}, 1},
		{"qtfs_server_refusals_total", map[string]string{"reason": "no_session"}, 1},
		{"qtfs_server_open_handles", nil, 1},
		{"qtfs_server_sessions", nil, 1},
	} {
		t.Run(fmt.Sprint(tc.name, tc.labels), func(t *testing.T) {
			if got := gather(t, reg, tc.name, tc.labels); got != tc.want {
				t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
			}
		})
	}
	// Every metric has help text and no label holds a path.
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if strings.Contains(lp.GetValue(), "/") {
					t.Errorf("%s label %s=%q looks like a path", mf.GetName(), lp.GetName(), lp.GetValue())
				}
			}
		}
	}
}

// TestCallersDoNotLeak runs operations as different users at the same
// time and checks every file got its own caller's owner: a thread's
// identity never leaks into another operation.
func TestCallersDoNotLeak(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as other users")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	s, _ := newServer(t, []contract.Export{{Path: dir}})
	const workers, rounds = 6, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds)
	for w := range workers {
		c, m := session(t, s, dir)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range rounds {
				uid := uint32(0)
				if (w+i)%2 == 0 {
					uid = uint32(1000 + w)
				}
				name := fmt.Sprintf("w%d-%d", w, i)
				r, err := c.Mkdir(context.Background(), &qtfsv1.MkdirRequest{Mount: m, Caller: &qtfsv1.Caller{Uid: uid, Gid: uid},
					Name: []byte(name), Mode: 0o755})
				if err != nil || r.GetErrno() != 0 {
					errs <- fmt.Errorf("mkdir %s as %d: %v %v", name, uid, r, err)
					continue
				}
				if r.GetAttr().GetUid() != uid || r.GetAttr().GetGid() != uid {
					errs <- fmt.Errorf("%s made by uid %d is owned by %d:%d", name, uid, r.GetAttr().GetUid(), r.GetAttr().GetGid())
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if fsuid, _ := unix.SetfsuidRetUid(-1); fsuid != 0 {
		t.Errorf("the test goroutine's thread has fsuid %d", fsuid)
	}
}

// TestReleaseWhileReading releases a handle while reads on it run and new
// files are opened: a read must never see another file reusing the fd.
func TestReleaseWhileReading(t *testing.T) {
	dir := t.TempDir()
	size := 4096
	if err := os.WriteFile(filepath.Join(dir, "a"), bytes.Repeat([]byte("a"), size), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b"), bytes.Repeat([]byte("b"), size), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := newServer(t, []contract.Export{{Path: dir}})
	c, m := session(t, s, dir)
	ctx := t.Context()
	for round := range 30 {
		h, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("a")})
		if err != nil || h.GetErrno() != 0 {
			t.Fatalf("open: %v %v", h, err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					r, err := c.Read(ctx, &qtfsv1.ReadRequest{Handle: h.GetHandle(), Size: uint32(size)})
					if err != nil {
						t.Errorf("read: %v", err)
						return
					}
					if r.GetErrno() == int32(syscall.EBADF) {
						return
					}
					if r.GetErrno() != 0 || bytes.IndexFunc(r.GetData(), func(r rune) bool { return r != 'a' }) >= 0 {
						t.Errorf("round %d: read %q errno %d from a's handle", round, r.GetData()[:min(8, len(r.GetData()))], r.GetErrno())
						return
					}
				}
			}()
		}
		var others []uint64
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h.GetHandle()})
			for range 4 {
				o, _ := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("b")})
				others = append(others, o.GetHandle())
			}
		}()
		wg.Wait()
		for _, o := range others {
			c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: o})
		}
	}
	if n := s.OpenHandles(); n != 0 {
		t.Errorf("%d handles open", n)
	}
}

func TestSetlkCancelled(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := newServer(t, []contract.Export{{Path: dir}})
	c, m := session(t, s, dir)
	ctx := t.Context()
	var hs []uint64
	for range 2 {
		o, _ := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("f"), Flags: unix.O_RDWR})
		hs = append(hs, o.GetHandle())
	}
	for _, flock := range []bool{false, true} {
		t.Run(fmt.Sprint("flock=", flock), func(t *testing.T) {
			lock := &qtfsv1.Lock{Type: unix.F_WRLCK, End: ^uint64(0)}
			r, _ := c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: hs[0], Lock: lock, Flock: flock})
			if r.GetErrno() != 0 {
				t.Fatalf("lock: %v", r)
			}
			cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			start := time.Now()
			r, err := c.Setlk(cctx, &qtfsv1.SetlkRequest{Handle: hs[1], Lock: lock, Flock: flock, Wait: true})
			if err != nil || r.GetErrno() != int32(syscall.EINTR) {
				t.Fatalf("cancelled wait: %v %v, want EINTR", r, err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("cancelled wait returned after %v", d)
			}
			c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: hs[0], Lock: &qtfsv1.Lock{Type: unix.F_UNLCK, End: ^uint64(0)}, Flock: flock})
		})
	}
	for _, h := range hs {
		c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h})
	}
}

func TestGRPCWithoutServerOptions(t *testing.T) {
	s, _ := newServer(t, nil)
	cc := buftest.Serve(t, nil, s.Register).Dial(t) // the hostfs ServerOptions are missing
	_, err := qtfsv1.NewFileSystemClient(cc).Handshake(t.Context(), &qtfsv1.HandshakeRequest{ProtocolVersion: 1})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "ServerOptions") {
		t.Fatalf("handshake without ServerOptions: %v", err)
	}
}

func TestClose(t *testing.T) {
	dir := t.TempDir()
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: dir}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c, m := session(t, s, dir)
	ctx := t.Context()
	o, _ := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Flags: unix.O_DIRECTORY})
	if o.GetErrno() != 0 || s.OpenHandles() != 1 || s.Sessions() != 1 {
		t.Fatalf("open: %v, %d handles %d sessions", o, s.OpenHandles(), s.Sessions())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.OpenHandles() != 0 || s.Sessions() != 0 {
		t.Errorf("after Close: %d handles %d sessions", s.OpenHandles(), s.Sessions())
	}
	_, err = c.Read(ctx, &qtfsv1.ReadRequest{Handle: o.GetHandle(), Size: 1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("read after Close: %v", err)
	}
	_, err = s.DirectClient().Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("handshake after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestMaxMessageBytes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), make([]byte, 100<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: dir}}, Logger: zaptest.NewLogger(t), MaxMessageBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.DirectClient()
	defer c.Close()
	ctx := t.Context()
	hs, _ := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1})
	if hs.GetMaxMessageBytes() != 64<<10 {
		t.Fatalf("max_message_bytes %d", hs.GetMaxMessageBytes())
	}
	m, _ := c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(dir), Caller: root})
	o, _ := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m.GetMount(), Caller: root, Path: []byte("f"), Flags: unix.O_RDWR, ReadInline: 1 << 20})
	defer c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: o.GetHandle()})
	if len(o.GetInlineData()) != 64<<10 || o.GetInlineEof() {
		t.Errorf("inline read bounded to %d bytes, eof %v; want 64 KiB, false", len(o.GetInlineData()), o.GetInlineEof())
	}
	if r, _ := c.Read(ctx, &qtfsv1.ReadRequest{Handle: o.GetHandle(), Size: 64 << 10}); r.GetErrno() != 0 || len(r.GetData()) != 64<<10 {
		t.Errorf("read of max size: %d bytes errno %d", len(r.GetData()), r.GetErrno())
	}
	if r, _ := c.Read(ctx, &qtfsv1.ReadRequest{Handle: o.GetHandle(), Size: 64<<10 + 1}); r.GetErrno() != int32(syscall.EINVAL) {
		t.Errorf("oversized read: errno %d", r.GetErrno())
	}
	if r, _ := c.Write(ctx, &qtfsv1.WriteRequest{Handle: o.GetHandle(), Data: make([]byte, 64<<10+1)}); r.GetErrno() != int32(syscall.EINVAL) {
		t.Errorf("oversized write: errno %d", r.GetErrno())
	}
}

// TestOpenListsInline: Open of a directory with readdir_inline returns
// its first entries with attributes; listed whole with close_at_eof, the
// directory is closed at once. An export whose operations leave out
// Readdir lists nothing so.
func TestOpenListsInline(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"a", "b", "c"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := newServer(t, []contract.Export{{Path: dir}})
	c, mnt := session(t, s, dir)
	open := func(max uint32, closeAtEOF bool) *qtfsv1.OpenResponse {
		t.Helper()
		r, err := c.Open(t.Context(), &qtfsv1.OpenRequest{Mount: mnt, Caller: root, Flags: unix.O_RDONLY | unix.O_DIRECTORY,
			ReaddirInline: max, CloseAtEof: closeAtEOF})
		if err != nil || r.GetErrno() != 0 {
			t.Fatalf("open: %v errno %d", err, r.GetErrno())
		}
		return r
	}
	before := s.OpenHandles()
	r := open(2, true)
	if len(r.GetEntries()) != 2 || r.GetEntriesEof() || r.GetClosed() || r.GetHandle() == 0 {
		t.Fatalf("2 of 3 entries: %d entries, eof %v, closed %v, handle %d", len(r.GetEntries()), r.GetEntriesEof(), r.GetClosed(), r.GetHandle())
	}
	for _, e := range r.GetEntries() {
		if e.GetAttr().GetSize() != 1 {
			t.Fatalf("entry %s without its attributes", e.GetName())
		}
	}
	rest, err := c.Readdir(t.Context(), &qtfsv1.ReaddirRequest{Handle: r.GetHandle(), Offset: r.GetEntries()[1].GetOffset(), MaxEntries: 10, Plus: true})
	if err != nil || len(rest.GetEntries()) != 1 || !rest.GetEof() {
		t.Fatalf("the rest after the inline entries: %v, %d entries", err, len(rest.GetEntries()))
	}
	if _, err := c.Release(t.Context(), &qtfsv1.ReleaseRequest{Handle: r.GetHandle()}); err != nil {
		t.Fatal(err)
	}
	r = open(10, true)
	if len(r.GetEntries()) != 3 || !r.GetEntriesEof() || !r.GetClosed() || r.GetHandle() != 0 {
		t.Fatalf("whole listing: %d entries, eof %v, closed %v, handle %d", len(r.GetEntries()), r.GetEntriesEof(), r.GetClosed(), r.GetHandle())
	}
	if n := s.OpenHandles(); n != before {
		t.Fatalf("%d handles open after a listing closed at open, want %d", n, before)
	}

	ro, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: dir, Ops: []string{"Lookup", "Getattr", "Open"}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	c2, mnt2 := session(t, ro, dir)
	r2, err := c2.Open(t.Context(), &qtfsv1.OpenRequest{Mount: mnt2, Caller: root, Flags: unix.O_RDONLY | unix.O_DIRECTORY, ReaddirInline: 10, CloseAtEof: true})
	if err != nil || r2.GetErrno() != 0 {
		t.Fatalf("open on an export without Readdir: %v errno %d", err, r2.GetErrno())
	}
	if len(r2.GetEntries()) != 0 || r2.GetClosed() {
		t.Fatalf("an export without Readdir listed %d entries in Open", len(r2.GetEntries()))
	}
}
