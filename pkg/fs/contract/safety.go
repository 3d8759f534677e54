package contract

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// pathOp is an rpc called with one path or name under test.
type pathOp struct {
	name string
	call func(e *env, p []byte) (errnoReply, error)
}

// pathOps are the rpcs that take a path, called with the path under test.
func pathOps() []pathOp {
	m := func(e *env) uint64 { return e.mrw }
	ok := []byte("x")
	return []pathOp{
		{"Lookup", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Lookup(e.ctx(), &qtfsv1.LookupRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: ok})
		}},
		{"Getattr", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Mount: m(e), Caller: rootCaller, Path: p})
		}},
		{"Setattr", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Setattr(e.ctx(), &qtfsv1.SetattrRequest{Mount: m(e), Caller: rootCaller, Path: p,
				Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_MTIME_NOW)})
		}},
		{"Readlink", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Readlink(e.ctx(), &qtfsv1.ReadlinkRequest{Mount: m(e), Caller: rootCaller, Path: p})
		}},
		{"Symlink", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Symlink(e.ctx(), &qtfsv1.SymlinkRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: ok, Target: ok})
		}},
		{"Mknod", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Mknod(e.ctx(), &qtfsv1.MknodRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: ok, Mode: unix.S_IFIFO | 0o600})
		}},
		{"Mkdir", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Mkdir(e.ctx(), &qtfsv1.MkdirRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: ok, Mode: 0o755})
		}},
		{"Unlink", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Unlink(e.ctx(), &qtfsv1.UnlinkRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: ok})
		}},
		{"Rmdir", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Rmdir(e.ctx(), &qtfsv1.RmdirRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: ok})
		}},
		{"Rename.old", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Rename(e.ctx(), &qtfsv1.RenameRequest{Mount: m(e), Caller: rootCaller, OldPath: p, OldName: ok,
				NewPath: e.p(), NewName: ok})
		}},
		{"Rename.new", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Rename(e.ctx(), &qtfsv1.RenameRequest{Mount: m(e), Caller: rootCaller, OldPath: e.p(), OldName: []byte("file"),
				NewPath: p, NewName: ok})
		}},
		{"Link.old", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Link(e.ctx(), &qtfsv1.LinkRequest{Mount: m(e), Caller: rootCaller, Path: p, NewPath: e.p(), NewName: ok})
		}},
		{"Link.new", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Link(e.ctx(), &qtfsv1.LinkRequest{Mount: m(e), Caller: rootCaller, Path: e.p("file"), NewPath: p, NewName: ok})
		}},
		{"Open", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Open(e.ctx(), &qtfsv1.OpenRequest{Mount: m(e), Caller: rootCaller, Path: p})
		}},
		{"Create", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Create(e.ctx(), &qtfsv1.CreateRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: ok,
				Flags: unix.O_RDWR, Mode: 0o644})
		}},
		{"Statfs", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Statfs(e.ctx(), &qtfsv1.StatfsRequest{Mount: m(e), Caller: rootCaller, Path: p})
		}},
		{"Getxattr", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Getxattr(e.ctx(), &qtfsv1.GetxattrRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: []byte("user.x"), Size: 10})
		}},
		{"Setxattr", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Setxattr(e.ctx(), &qtfsv1.SetxattrRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: []byte("user.x"), Value: ok})
		}},
		{"Listxattr", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Listxattr(e.ctx(), &qtfsv1.ListxattrRequest{Mount: m(e), Caller: rootCaller, Path: p, Size: 100})
		}},
		{"Removexattr", func(e *env, p []byte) (errnoReply, error) {
			return e.c.Removexattr(e.ctx(), &qtfsv1.RemovexattrRequest{Mount: m(e), Caller: rootCaller, Path: p, Name: []byte("user.x")})
		}},
	}
}

// nameOps are the rpcs that take a name, called with the name under test
// in the test directory.
func nameOps() []pathOp {
	return []pathOp{
		{"Lookup", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Lookup(e.ctx(), &qtfsv1.LookupRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: n})
		}},
		{"Symlink", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Symlink(e.ctx(), &qtfsv1.SymlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: n, Target: []byte("x")})
		}},
		{"Mknod", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Mknod(e.ctx(), &qtfsv1.MknodRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: n, Mode: unix.S_IFIFO | 0o600})
		}},
		{"Mkdir", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Mkdir(e.ctx(), &qtfsv1.MkdirRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: n, Mode: 0o755})
		}},
		{"Unlink", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Unlink(e.ctx(), &qtfsv1.UnlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: n})
		}},
		{"Rmdir", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Rmdir(e.ctx(), &qtfsv1.RmdirRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: n})
		}},
		{"Rename.old", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Rename(e.ctx(), &qtfsv1.RenameRequest{Mount: e.mrw, Caller: rootCaller, OldPath: e.p(), OldName: n,
				NewPath: e.p(), NewName: []byte("y")})
		}},
		{"Rename.new", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Rename(e.ctx(), &qtfsv1.RenameRequest{Mount: e.mrw, Caller: rootCaller, OldPath: e.p(), OldName: []byte("file"),
				NewPath: e.p(), NewName: n})
		}},
		{"Link", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Link(e.ctx(), &qtfsv1.LinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("file"), NewPath: e.p(), NewName: n})
		}},
		{"Create", func(e *env, n []byte) (errnoReply, error) {
			return e.c.Create(e.ctx(), &qtfsv1.CreateRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: n,
				Flags: unix.O_RDWR, Mode: 0o644})
		}},
	}
}

func testInvalidPaths(e *env) {
	e.write("file", "f")
	long := strings.Repeat("x", 256)
	before := snapshot(e.t, e.root)
	badPaths := []struct {
		name string
		path string
		want syscall.Errno
	}{
		{"dotdot", "..", syscall.EINVAL},
		{"dotdot inside", e.dir + "/../" + e.dir, syscall.EINVAL},
		{"a/../b", "a/../b", syscall.EINVAL},
		{"absolute", "/etc", syscall.EINVAL},
		{"absolute to the export", e.rw, syscall.EINVAL},
		{"dot", e.dir + "/.", syscall.EINVAL},
		{"double slash", e.dir + "//x", syscall.EINVAL},
		{"trailing slash", e.dir + "/", syscall.EINVAL},
		{"NUL", e.dir + "\x00/etc", syscall.EINVAL},
		{"component too long", e.dir + "/" + long, syscall.ENAMETOOLONG},
		{"path too long", strings.Repeat("abcdefg/", 600) + "x", syscall.ENAMETOOLONG},
	}
	for _, op := range pathOps() {
		for _, tc := range badPaths {
			e.t.Run(op.name+"/"+tc.name, func(t *testing.T) {
				r, err := op.call(e, []byte(tc.path))
				call(r, err).fails(t, op.name, tc.want)
			})
		}
	}
	badNames := []struct {
		name  string
		entry string
		want  syscall.Errno
	}{
		{"empty", "", syscall.EINVAL},
		{"dot", ".", syscall.EINVAL},
		{"dotdot", "..", syscall.EINVAL},
		{"slash", "a/b", syscall.EINVAL},
		{"slash escape", "../../outside", syscall.EINVAL},
		{"NUL", "x\x00", syscall.EINVAL},
		{"256 bytes", long, syscall.ENAMETOOLONG},
	}
	for _, op := range nameOps() {
		for _, tc := range badNames {
			e.t.Run(op.name+"/name "+tc.name, func(t *testing.T) {
				r, err := op.call(e, []byte(tc.entry))
				call(r, err).fails(t, op.name, tc.want)
			})
		}
	}
	if after := snapshot(e.t, e.root); after != before {
		e.t.Errorf("refused requests changed the host tree:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func testSymlinks(e *env) {
	t := e.t
	e.write("file", "f")
	e.mkdir("dir")
	e.symlink("/", "esc")
	e.symlink("../..", "up")
	e.symlink(e.outside, "out")
	e.symlink(filepath.Join(e.outside, "secret"), "sf")
	e.symlink("dir", "inner") // even a harmless symlink is not followed
	outBefore := snapshot(t, e.outside)
	var secret unix.Stat_t
	mustHost(t, unix.Stat(filepath.Join(e.outside, "secret"), &secret))
	loop := []syscall.Errno{syscall.ELOOP, syscall.EXDEV}

	t.Run("lookup returns the symlink", func(t *testing.T) {
		for _, n := range []string{"esc", "up", "out"} {
			a := e.lookup(e.p(), n).GetAttr()
			if a.GetMode()&unix.S_IFMT != unix.S_IFLNK || a.GetIno() != e.lstat(n).Ino {
				t.Errorf("lookup %s = %v, want the symlink itself", n, a)
			}
		}
	})
	t.Run("readlink", func(t *testing.T) {
		r := call(e.c.Readlink(e.ctx(), &qtfsv1.ReadlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("esc")})).ok(t, "readlink")
		if string(r.GetTarget()) != "/" {
			t.Errorf("target %q", r.GetTarget())
		}
	})
	// A symlink before the last component: every rpc refuses the path.
	for _, through := range [][]byte{e.p("esc", "etc"), e.p("up", "outside"), e.p("out", "secret"), e.p("inner", "x")} {
		for _, op := range pathOps() {
			t.Run("through "+string(through[len(e.dir)+1:])+"/"+op.name, func(t *testing.T) {
				call(op.call(e, through)).fails(t, op.name, loop...)
			})
		}
	}
	// A symlink as the last component: rpcs that walk the path as a
	// directory (or open it) refuse it; the others act on the symlink.
	lastOK := map[string][]syscall.Errno{
		"Getattr": nil, "Setattr": nil, "Readlink": nil, "Statfs": nil, "Listxattr": nil,
		"Getxattr":    {syscall.ENODATA},
		"Setxattr":    {syscall.EPERM},
		"Removexattr": {syscall.EPERM, syscall.ENODATA},
		"Link.old":    {0, syscall.EEXIST},
	}
	for _, last := range [][]byte{e.p("out"), e.p("inner")} {
		for _, op := range pathOps() {
			t.Run("last "+string(last[len(e.dir)+1:])+"/"+op.name, func(t *testing.T) {
				x := call(op.call(e, last))
				want, acts := lastOK[op.name]
				switch {
				case !acts:
					x.fails(t, op.name, loop...)
				case want == nil:
					x.ok(t, op.name)
				case x.err == nil && x.r.GetErrno() == 0 && want[0] == 0:
				default:
					x.fails(t, op.name, want...)
				}
			})
		}
	}
	if st := e.lstat("x"); st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("Link of a symlink made a %o, want a symlink", st.Mode)
	}
	t.Run("open the symlink", func(t *testing.T) {
		for _, n := range []string{"esc", "sf", "inner"} {
			call(e.c.Open(e.ctx(), &qtfsv1.OpenRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(n)})).fails(t, "open "+n, loop...)
		}
		call(e.c.Open(e.ctx(), &qtfsv1.OpenRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("esc", "etc", "passwd")})).
			fails(t, "open esc/etc/passwd", loop...)
		call(e.c.Open(e.ctx(), &qtfsv1.OpenRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("up", "outside", "secret")})).
			fails(t, "open up/outside/secret", loop...)
	})
	t.Run("create in the symlink's place", func(t *testing.T) {
		call(e.c.Create(e.ctx(), &qtfsv1.CreateRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: []byte("sf"),
			Flags: unix.O_RDWR | unix.O_TRUNC, Mode: 0o644})).fails(t, "create over sf", syscall.ELOOP, syscall.EEXIST)
	})
	t.Run("setattr acts on the symlink", func(t *testing.T) {
		sa := func(valid qtfsv1.SetattrValid, req *qtfsv1.SetattrRequest) result[*qtfsv1.AttrResponse] {
			req.Mount, req.Caller, req.Path, req.Valid = e.mrw, rootCaller, e.p("sf"), uint32(valid)
			return call(e.c.Setattr(e.ctx(), req))
		}
		sa(qtfsv1.SetattrValid_SETATTR_VALID_MODE, &qtfsv1.SetattrRequest{Mode: 0o777}).fails(t, "chmod", syscall.EOPNOTSUPP)
		sa(qtfsv1.SetattrValid_SETATTR_VALID_SIZE, &qtfsv1.SetattrRequest{}).fails(t, "truncate", syscall.ELOOP)
		sa(qtfsv1.SetattrValid_SETATTR_VALID_MTIME, &qtfsv1.SetattrRequest{MtimeSec: 1_000_000}).ok(t, "set times")
		if st := e.lstat("sf"); st.Mtim.Sec != 1_000_000 {
			t.Errorf("symlink mtime %v", st.Mtim)
		}
		if isRoot() {
			sa(qtfsv1.SetattrValid_SETATTR_VALID_UID, &qtfsv1.SetattrRequest{Uid: 4242}).ok(t, "chown")
			if st := e.lstat("sf"); st.Uid != 4242 {
				t.Errorf("symlink uid %d, want 4242", st.Uid)
			}
		}
	})
	t.Run("link the symlink", func(t *testing.T) {
		a := call(e.c.Link(e.ctx(), &qtfsv1.LinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("sf"), NewPath: e.p(),
			NewName: []byte("sf2")})).ok(t, "link").GetAttr()
		if a.GetMode()&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("link of a symlink followed it: %v", a)
		}
	})
	t.Run("remove the symlink", func(t *testing.T) {
		call(e.c.Unlink(e.ctx(), &qtfsv1.UnlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: []byte("sf2")})).ok(t, "unlink")
	})
	var after unix.Stat_t
	mustHost(t, unix.Stat(filepath.Join(e.outside, "secret"), &after))
	if got := snapshot(t, e.outside); got != outBefore || after.Mtim != secret.Mtim || after.Uid != secret.Uid || after.Mode != secret.Mode {
		t.Errorf("the tree outside the export changed:\nbefore:\n%s\nafter:\n%s", outBefore, got)
	}
}

func testReadOnly(e *env) {
	t := e.t
	m := e.mro
	ctx := e.ctx()
	before := snapshot(t, e.ro)
	for _, tc := range []struct {
		name string
		call func() (errnoReply, error)
	}{
		{"Lookup", func() (errnoReply, error) {
			return e.c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: rootCaller, Name: []byte("file")})
		}},
		{"Getattr", func() (errnoReply, error) {
			return e.c.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: m, Caller: rootCaller, Path: []byte("dir/inner")})
		}},
		{"Readlink", func() (errnoReply, error) {
			return e.c.Readlink(ctx, &qtfsv1.ReadlinkRequest{Mount: m, Caller: rootCaller, Path: []byte("link")})
		}},
		{"Statfs", func() (errnoReply, error) {
			return e.c.Statfs(ctx, &qtfsv1.StatfsRequest{Mount: m, Caller: rootCaller})
		}},
		{"Mounts", func() (errnoReply, error) {
			return e.c.Mounts(ctx, &qtfsv1.MountsRequest{Mount: m})
		}},
		{"Listxattr", func() (errnoReply, error) {
			return e.c.Listxattr(ctx, &qtfsv1.ListxattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file")})
		}},
		{"Setattr without changes", func() (errnoReply, error) {
			return e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file")})
		}},
	} {
		t.Run("allowed "+tc.name, func(t *testing.T) { call(tc.call()).ok(t, tc.name) })
	}
	t.Run("allowed read", func(t *testing.T) {
		r := call(e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), ReadInline: 100})).ok(t, "open")
		e.releaseLater(r.GetHandle())
		if string(r.GetInlineData()) != "read only\n" {
			t.Errorf("inline %q", r.GetInlineData())
		}
		d := call(e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Flags: unix.O_DIRECTORY})).ok(t, "open root")
		e.releaseLater(d.GetHandle())
		rd := call(e.c.Readdir(ctx, &qtfsv1.ReaddirRequest{Handle: d.GetHandle(), MaxEntries: 100, Plus: true})).ok(t, "readdir")
		if len(rd.GetEntries()) != 3 {
			t.Errorf("readdir of the read-only export: %d entries, want 3", len(rd.GetEntries()))
		}
		call(e.c.Getxattr(ctx, &qtfsv1.GetxattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), Name: []byte("user.none"),
			Size: 10})).fails(t, "getxattr", syscall.ENODATA, syscall.EOPNOTSUPP)
	})
	mode := uint32(qtfsv1.SetattrValid_SETATTR_VALID_MODE)
	for _, tc := range []struct {
		name string
		call func() (errnoReply, error)
	}{
		{"Mkdir", func() (errnoReply, error) {
			return e.c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: m, Caller: rootCaller, Name: []byte("new"), Mode: 0o755})
		}},
		{"Create", func() (errnoReply, error) {
			return e.c.Create(ctx, &qtfsv1.CreateRequest{Mount: m, Caller: rootCaller, Name: []byte("new"), Flags: unix.O_RDWR, Mode: 0o644})
		}},
		{"Mknod", func() (errnoReply, error) {
			return e.c.Mknod(ctx, &qtfsv1.MknodRequest{Mount: m, Caller: rootCaller, Name: []byte("new"), Mode: unix.S_IFIFO | 0o644})
		}},
		{"Symlink", func() (errnoReply, error) {
			return e.c.Symlink(ctx, &qtfsv1.SymlinkRequest{Mount: m, Caller: rootCaller, Name: []byte("new"), Target: []byte("x")})
		}},
		{"Unlink", func() (errnoReply, error) {
			return e.c.Unlink(ctx, &qtfsv1.UnlinkRequest{Mount: m, Caller: rootCaller, Name: []byte("file")})
		}},
		{"Rmdir", func() (errnoReply, error) {
			return e.c.Rmdir(ctx, &qtfsv1.RmdirRequest{Mount: m, Caller: rootCaller, Name: []byte("dir")})
		}},
		{"Rename", func() (errnoReply, error) {
			return e.c.Rename(ctx, &qtfsv1.RenameRequest{Mount: m, Caller: rootCaller, OldName: []byte("file"), NewName: []byte("file2")})
		}},
		{"Link", func() (errnoReply, error) {
			return e.c.Link(ctx, &qtfsv1.LinkRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), NewName: []byte("file2")})
		}},
		{"Setattr mode", func() (errnoReply, error) {
			return e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), Valid: mode, Mode: 0o777})
		}},
		{"Setattr size", func() (errnoReply, error) {
			return e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file"),
				Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_SIZE)})
		}},
		{"Setattr times", func() (errnoReply, error) {
			return e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file"),
				Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_MTIME_NOW)})
		}},
		{"Setxattr", func() (errnoReply, error) {
			return e.c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), Name: []byte("user.x"),
				Value: []byte("x")})
		}},
		{"Removexattr", func() (errnoReply, error) {
			return e.c.Removexattr(ctx, &qtfsv1.RemovexattrRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), Name: []byte("user.x")})
		}},
		{"Open for writing", func() (errnoReply, error) {
			return e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), Flags: unix.O_WRONLY})
		}},
		{"Open read-write", func() (errnoReply, error) {
			return e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), Flags: unix.O_RDWR})
		}},
		{"Open truncating", func() (errnoReply, error) {
			return e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: []byte("file"), Flags: unix.O_RDONLY | unix.O_TRUNC})
		}},
	} {
		t.Run("refused "+tc.name, func(t *testing.T) { call(tc.call()).fails(t, tc.name, syscall.EROFS) })
	}
	t.Run("refused on a read-only handle", func(t *testing.T) {
		h := e.open(m, []byte("file"), unix.O_RDONLY).GetHandle()
		call(e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Handle: h, Valid: mode, Mode: 0o777})).fails(t, "fchmod", syscall.EROFS)
		call(e.c.Write(ctx, &qtfsv1.WriteRequest{Handle: h, Data: []byte("x")})).fails(t, "write", syscall.EROFS, syscall.EBADF)
		call(e.c.Fallocate(ctx, &qtfsv1.FallocateRequest{Handle: h, Length: 10})).fails(t, "fallocate", syscall.EROFS, syscall.EBADF)
		w := e.open(e.mrw, func() []byte { e.write("w", "data"); return e.p("w") }(), unix.O_RDONLY).GetHandle()
		call(e.c.CopyFileRange(ctx, &qtfsv1.CopyFileRangeRequest{HandleIn: w, HandleOut: h, Length: 4})).
			fails(t, "copy into", syscall.EROFS, syscall.EBADF)
	})
	if after := snapshot(t, e.ro); after != before {
		t.Errorf("the read-only export changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func testCaller(e *env) {
	t := e.t
	if !isRoot() {
		t.Skip("acting as other users needs root: run the suite as root")
	}
	e.mkdir("private")
	e.write("private/f", "p")
	e.mkdir("private/sub")
	mustHost(t, os.Chmod(e.hp("private"), 0o700))
	e.mkdir("pub")
	mustHost(t, os.Chmod(e.hp("pub"), 0o777))
	e.write("secret", "s")
	mustHost(t, os.Chmod(e.hp("secret"), 0o600))
	e.mkdir("grp")
	mustHost(t, os.Chown(e.hp("grp"), 0, 2000))
	mustHost(t, os.Chmod(e.hp("grp"), 0o770))
	e.write("grp/f", "g")
	mustHost(t, os.Chown(e.hp("grp/f"), 0, 2000))
	mustHost(t, os.Chmod(e.hp("grp/f"), 0o660))

	u := &qtfsv1.Caller{Uid: 1000, Gid: 1000, Pid: 4242}
	ctx := e.ctx()
	lookup := func(c *qtfsv1.Caller, dir []byte, name string) result[*qtfsv1.EntryResponse] {
		return call(e.c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: e.mrw, Caller: c, Path: dir, Name: []byte(name)}))
	}
	open := func(c *qtfsv1.Caller, path []byte, flags int) result[*qtfsv1.OpenResponse] {
		x := call(e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: e.mrw, Caller: c, Path: path, Flags: uint32(flags)}))
		if x.err == nil && x.r.GetErrno() == 0 {
			e.releaseLater(x.r.GetHandle())
		}
		return x
	}
	owner := func(t *testing.T, name string, uid, gid uint32) {
		t.Helper()
		if st := e.lstat(name); st.Uid != uid || st.Gid != gid {
			t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, uid, gid)
		}
	}
	t.Run("no search permission", func(t *testing.T) {
		lookup(u, e.p("private"), "f").fails(t, "lookup", syscall.EACCES)
		open(u, e.p("private", "f"), unix.O_RDONLY).fails(t, "open", syscall.EACCES)
		open(u, e.p("private"), unix.O_RDONLY|unix.O_DIRECTORY).fails(t, "open dir", syscall.EACCES)
		call(e.c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(e.hp("private", "sub")), Caller: u})).fails(t, "mount", syscall.EACCES)
		lookup(rootCaller, e.p("private"), "f").ok(t, "root still can")
	})
	t.Run("no read permission", func(t *testing.T) {
		open(u, e.p("secret"), unix.O_RDONLY).fails(t, "open", syscall.EACCES)
		call(e.c.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: e.mrw, Caller: u, Path: e.p("secret")})).ok(t, "getattr needs no read")
		call(e.c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: e.mrw, Caller: u, Path: e.p("secret"), Name: []byte("user.x"),
			Value: []byte("x")})).fails(t, "setxattr", syscall.EACCES, syscall.EPERM)
	})
	t.Run("not the owner", func(t *testing.T) {
		call(e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: e.mrw, Caller: u, Path: e.p("secret"),
			Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_MODE), Mode: 0o777})).fails(t, "chmod", syscall.EPERM)
		call(e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: e.mrw, Caller: u, Path: e.p("secret"),
			Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_UID), Uid: 1000})).fails(t, "chown", syscall.EPERM)
		call(e.c.Unlink(ctx, &qtfsv1.UnlinkRequest{Mount: e.mrw, Caller: u, Path: e.p(), Name: []byte("secret")})).
			fails(t, "unlink in a directory it cannot write", syscall.EACCES)
		wantMode(t, e, "secret", 0o600, nil)
	})
	t.Run("new entries belong to the caller", func(t *testing.T) {
		r := call(e.c.Create(ctx, &qtfsv1.CreateRequest{Mount: e.mrw, Caller: u, Path: e.p("pub"), Name: []byte("file"),
			Flags: unix.O_RDWR, Mode: 0o644})).ok(t, "create")
		e.releaseLater(r.GetHandle())
		owner(t, "pub/file", 1000, 1000)
		call(e.c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: e.mrw, Caller: u, Path: e.p("pub"), Name: []byte("dir"), Mode: 0o755})).ok(t, "mkdir")
		owner(t, "pub/dir", 1000, 1000)
		call(e.c.Symlink(ctx, &qtfsv1.SymlinkRequest{Mount: e.mrw, Caller: u, Path: e.p("pub"), Name: []byte("ln"),
			Target: []byte("file")})).ok(t, "symlink")
		owner(t, "pub/ln", 1000, 1000)
		call(e.c.Mknod(ctx, &qtfsv1.MknodRequest{Mount: e.mrw, Caller: u, Path: e.p("pub"), Name: []byte("fifo"),
			Mode: unix.S_IFIFO | 0o600})).ok(t, "mknod")
		owner(t, "pub/fifo", 1000, 1000)
		call(e.c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: e.mrw, Caller: u, Path: e.p("pub", "file"),
			Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_MODE), Mode: 0o600})).ok(t, "chmod own file")
		wantMode(t, e, "pub/file", 0o600, nil)
		call(e.c.Mknod(ctx, &qtfsv1.MknodRequest{Mount: e.mrw, Caller: u, Path: e.p("pub"), Name: []byte("dev"),
			Mode: unix.S_IFCHR | 0o600, Rdev: uint64(unix.Mkdev(1, 3))})).fails(t, "mknod device without CAP_MKNOD", syscall.EPERM)
	})
	t.Run("supplementary groups", func(t *testing.T) {
		lookup(u, e.p("grp"), "f").fails(t, "lookup without the group", syscall.EACCES)
		withGroup := &qtfsv1.Caller{Uid: 1000, Gid: 1000, Groups: []uint32{1000, 2000}}
		lookup(withGroup, e.p("grp"), "f").ok(t, "lookup with the group")
		open(withGroup, e.p("grp", "f"), unix.O_RDWR).ok(t, "open with the group")
		primary := &qtfsv1.Caller{Uid: 1000, Gid: 2000}
		r := call(e.c.Create(ctx, &qtfsv1.CreateRequest{Mount: e.mrw, Caller: primary, Path: e.p("grp"), Name: []byte("new"),
			Flags: unix.O_RDWR, Mode: 0o644})).ok(t, "create with the primary group")
		e.releaseLater(r.GetHandle())
		owner(t, "grp/new", 1000, 2000)
	})
	t.Run("identity restored", func(t *testing.T) {
		r := call(e.c.Create(ctx, &qtfsv1.CreateRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("pub"), Name: []byte("rootfile"),
			Flags: unix.O_RDWR, Mode: 0o644})).ok(t, "create as root")
		e.releaseLater(r.GetHandle())
		owner(t, "pub/rootfile", 0, 0)
		lookup(rootCaller, e.p("private"), "f").ok(t, "root lookup")
	})
	t.Run("readdir plus as the opener", func(t *testing.T) {
		h := open(u, e.p("pub"), unix.O_RDONLY|unix.O_DIRECTORY).ok(t, "open pub").GetHandle()
		rd := call(e.c.Readdir(ctx, &qtfsv1.ReaddirRequest{Handle: h, MaxEntries: 100, Plus: true})).ok(t, "readdir")
		for _, d := range rd.GetEntries() {
			if d.GetAttr() == nil {
				t.Errorf("%s: no attributes", d.GetName())
			}
		}
	})
}
