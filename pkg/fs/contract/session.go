package contract

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func testHandshake(e *env) {
	t, hs := e.t, e.hs
	if hs.GetProtocolVersion() != 1 {
		t.Errorf("protocol_version = %d, want 1", hs.GetProtocolVersion())
	}
	if hs.GetMaxMessageBytes() < 64<<10 {
		t.Errorf("max_message_bytes = %d, want at least 64 KiB", hs.GetMaxMessageBytes())
	}
	for _, f := range []qtfsv1.Feature{qtfsv1.Feature_FEATURE_OPEN_READ_INLINE, qtfsv1.Feature_FEATURE_READDIR_PLUS,
		qtfsv1.Feature_FEATURE_LOCKS} {
		found := false
		for _, g := range hs.GetFeatures() {
			found = found || g == f
		}
		if !found {
			t.Errorf("feature %v not offered (got %v)", f, hs.GetFeatures())
		}
	}
	want := map[string]bool{e.rw: false, e.ro: true}
	for _, ex := range hs.GetExports() {
		ro, ok := want[string(ex.GetPath())]
		if !ok {
			t.Errorf("unexpected export %q", ex.GetPath())
			continue
		}
		if ex.GetReadOnly() != ro || ex.GetFsKind() != qtfsv1.FsKind_FS_KIND_REGULAR {
			t.Errorf("export %q: read_only %v fs_kind %v, want %v, REGULAR", ex.GetPath(), ex.GetReadOnly(), ex.GetFsKind(), ro)
		}
		delete(want, string(ex.GetPath()))
	}
	if len(want) != 0 {
		t.Errorf("exports missing from handshake: %v", want)
	}

	c, end := e.srv.Dial(t)
	defer end()
	r, err := c.Handshake(e.ctx(), &qtfsv1.HandshakeRequest{ProtocolVersion: 7, Client: "future"})
	if err != nil {
		t.Fatalf("handshake with a newer version: %v", err)
	}
	if r.GetProtocolVersion() != 1 {
		t.Errorf("newer client: protocol_version = %d, want 1 (the lower)", r.GetProtocolVersion())
	}
	if _, err := c.Handshake(e.ctx(), &qtfsv1.HandshakeRequest{ProtocolVersion: 0}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("handshake with version 0: %v, want status InvalidArgument", err)
	}
}

func testNoHandshake(e *env) {
	t := e.t
	c, end := e.srv.Dial(t)
	defer end()
	ctx := e.ctx()
	call(c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(e.rw), Caller: rootCaller})).code(t, "Mount", codes.FailedPrecondition)
	call(c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: e.mrw, Caller: rootCaller, Name: []byte(e.dir)})).
		code(t, "Lookup", codes.FailedPrecondition)
	call(c.Read(ctx, &qtfsv1.ReadRequest{Handle: 1, Size: 1})).code(t, "Read", codes.FailedPrecondition)
	call(c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: 1})).code(t, "Release", codes.FailedPrecondition)
	call(c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: 1, Lock: &qtfsv1.Lock{}})).code(t, "Setlk", codes.FailedPrecondition)
}

func testMount(e *env) {
	e.mkdir("sub")
	e.write("file", "x")
	e.symlink(e.outside, "esc")
	sub := filepath.Join(e.host, "sub")
	for _, tc := range []struct {
		name string
		path string
		want syscall.Errno
		ro   bool
	}{
		{"export", e.rw, 0, false},
		{"subdirectory", sub, 0, false},
		{"read-only export", e.ro, 0, true},
		{"read-only subdirectory", filepath.Join(e.ro, "dir"), 0, true},
		{"outside every export", e.outside, syscall.EACCES, false},
		{"host root", "/", syscall.EACCES, false},
		{"sibling sharing a prefix", e.rw + "x", syscall.EACCES, false},
		{"relative", "tmp", syscall.EINVAL, false},
		{"empty", "", syscall.EINVAL, false},
		{"dotdot", e.rw + "/../outside", syscall.EINVAL, false},
		{"trailing slash", e.rw + "/", syscall.EINVAL, false},
		{"double slash", e.rw + "//" + e.dir, syscall.EINVAL, false},
		{"missing", filepath.Join(e.host, "nope"), syscall.ENOENT, false},
		{"file", filepath.Join(e.host, "file"), syscall.ENOTDIR, false},
		{"symlink inside export", filepath.Join(e.host, "esc"), syscall.ELOOP, false},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Mount(e.ctx(), &qtfsv1.MountRequest{Path: []byte(tc.path), Caller: rootCaller}))
			if tc.want != 0 {
				want := []syscall.Errno{tc.want}
				if tc.want == syscall.ELOOP {
					want = append(want, syscall.EXDEV)
				}
				x.fails(t, "mount "+tc.path, want...)
				return
			}
			r := x.ok(t, "mount "+tc.path)
			if r.GetMount() == 0 {
				t.Fatalf("mount id 0")
			}
			if r.GetReadOnly() != tc.ro {
				t.Errorf("read_only = %v, want %v", r.GetReadOnly(), tc.ro)
			}
			if r.GetFsKind() != qtfsv1.FsKind_FS_KIND_REGULAR {
				t.Errorf("fs_kind = %v, want REGULAR", r.GetFsKind())
			}
			var st unix.Stat_t
			mustHost(t, unix.Stat(tc.path, &st))
			if r.GetRoot().GetIno() != st.Ino || r.GetRoot().GetMode()&unix.S_IFMT != unix.S_IFDIR {
				t.Errorf("root attr %v, want the directory's (ino %d)", r.GetRoot(), st.Ino)
			}
		})
	}
	e.t.Run("mount ids differ", func(t *testing.T) {
		a := call(e.c.Mount(e.ctx(), &qtfsv1.MountRequest{Path: []byte(sub), Caller: rootCaller})).ok(t, "mount")
		b := call(e.c.Mount(e.ctx(), &qtfsv1.MountRequest{Path: []byte(sub), Caller: rootCaller})).ok(t, "mount")
		if a.GetMount() == b.GetMount() {
			t.Errorf("two mounts share id %d", a.GetMount())
		}
		// The mount's root is the subdirectory: "file" is not in it.
		call(e.c.Lookup(e.ctx(), &qtfsv1.LookupRequest{Mount: a.GetMount(), Caller: rootCaller, Name: []byte("file")})).
			fails(t, "lookup beside the mount root", syscall.ENOENT)
	})
	e.t.Run("unknown mount", func(t *testing.T) {
		call(e.c.Lookup(e.ctx(), &qtfsv1.LookupRequest{Mount: 1 << 40, Caller: rootCaller, Name: []byte("x")})).
			fails(t, "lookup on an unknown mount", syscall.ESTALE)
	})
}

func testSessionEnd(e *env) {
	t := e.t
	var sessions0 int
	if e.srv.Sessions != nil {
		sessions0 = e.srv.Sessions()
	}
	base := 0
	if e.srv.OpenHandles != nil {
		base = e.srv.OpenHandles()
	}
	e.write("locked", "data")
	c, end := e.srv.Dial(t)
	ended := false
	defer func() {
		if !ended {
			end()
		}
	}()
	ctx := e.ctx()
	if _, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1, Client: "second"}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if e.srv.Sessions != nil && e.srv.Sessions() != sessions0+1 {
		t.Errorf("sessions = %d after a handshake, want %d", e.srv.Sessions(), sessions0+1)
	}
	m := call(c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(e.rw), Caller: rootCaller})).ok(t, "mount").GetMount()
	for _, n := range []string{"a", "b", "c"} {
		call(c.Create(ctx, &qtfsv1.CreateRequest{Mount: m, Caller: rootCaller, Path: e.p(), Name: []byte(n),
			Flags: unix.O_RDWR, Mode: 0o644})).ok(t, "create "+n)
	}
	call(c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: e.p(), Flags: unix.O_RDONLY | unix.O_DIRECTORY})).
		ok(t, "open dir")
	lh := call(c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: e.p("locked"), Flags: unix.O_RDWR})).
		ok(t, "open locked").GetHandle()
	call(c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: lh, Lock: &qtfsv1.Lock{Type: unix.F_WRLCK, End: ^uint64(0)}})).
		ok(t, "lock in the second session")
	if e.srv.OpenHandles != nil && e.srv.OpenHandles() != base+5 {
		t.Errorf("open handles = %d, want %d", e.srv.OpenHandles(), base+5)
	}
	end()
	ended = true
	if e.srv.OpenHandles != nil && !waitFor(5*time.Second, func() bool { return e.srv.OpenHandles() == base }) {
		t.Errorf("open handles = %d after the session ended, want %d", e.srv.OpenHandles(), base)
	}
	if e.srv.Sessions != nil && !waitFor(5*time.Second, func() bool { return e.srv.Sessions() == sessions0 }) {
		t.Errorf("sessions = %d after the session ended, want %d", e.srv.Sessions(), sessions0)
	}
	// The ended session's lock went with its handle.
	h := e.open(e.mrw, e.p("locked"), unix.O_RDWR).GetHandle()
	if !waitFor(5*time.Second, func() bool {
		r, err := e.c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: h, Lock: &qtfsv1.Lock{Type: unix.F_WRLCK, End: ^uint64(0)}})
		return err == nil && r.GetErrno() == 0
	}) {
		t.Errorf("the ended session's lock is still held")
	}
	for _, n := range []string{"a", "b", "c"} {
		if !e.exists(n) {
			t.Errorf("file %s created by the ended session is missing", n)
		}
	}
}

func testHandshakeResets(e *env) {
	t := e.t
	base := 0
	if e.srv.OpenHandles != nil {
		base = e.srv.OpenHandles()
	}
	e.write("f", "data")
	c, end := e.srv.Dial(t)
	defer end()
	ctx := e.ctx()
	if _, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	sessions := 0
	if e.srv.Sessions != nil {
		sessions = e.srv.Sessions()
	}
	m := call(c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(e.rw), Caller: rootCaller})).ok(t, "mount").GetMount()
	h := call(c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: e.p("f")})).ok(t, "open").GetHandle()
	if _, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatalf("second handshake: %v", err)
	}
	call(c.Read(ctx, &qtfsv1.ReadRequest{Handle: h, Size: 4})).fails(t, "read an old handle", syscall.EBADF)
	call(c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: rootCaller, Name: []byte(e.dir)})).
		fails(t, "lookup on an old mount", syscall.ESTALE)
	if e.srv.OpenHandles != nil && !waitFor(2*time.Second, func() bool { return e.srv.OpenHandles() == base }) {
		t.Errorf("open handles = %d after the reset, want %d", e.srv.OpenHandles(), base)
	}
	if e.srv.Sessions != nil && e.srv.Sessions() != sessions {
		t.Errorf("sessions = %d after a reset, want %d (still one per connection)", e.srv.Sessions(), sessions)
	}
	// The new session works.
	m = call(c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(e.rw), Caller: rootCaller})).ok(t, "mount again").GetMount()
	h = call(c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: e.p("f")})).ok(t, "open again").GetHandle()
	call(c.Release(context.Background(), &qtfsv1.ReleaseRequest{Handle: h})).ok(t, "release")
}
