package contract

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func testLookup(e *env) {
	e.write("f", "hello")
	e.mkdir("d")
	e.write("d/g", "")
	e.symlink("f", "l")
	for _, tc := range []struct {
		name   string
		dir    []byte
		entry  string
		want   syscall.Errno
		typ    uint32
		hostAt string
	}{
		{"file", e.p(), "f", 0, unix.S_IFREG, "f"},
		{"directory", e.p(), "d", 0, unix.S_IFDIR, "d"},
		{"symlink is not followed", e.p(), "l", 0, unix.S_IFLNK, "l"},
		{"nested", e.p("d"), "g", 0, unix.S_IFREG, "d/g"},
		{"from the mount root", nil, e.dir, 0, unix.S_IFDIR, "."},
		{"missing", e.p(), "nope", syscall.ENOENT, 0, ""},
		{"missing directory", e.p("nope"), "x", syscall.ENOENT, 0, ""},
		{"directory is a file", e.p("f"), "x", syscall.ENOTDIR, 0, ""},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Lookup(e.ctx(), &qtfsv1.LookupRequest{Mount: e.mrw, Caller: rootCaller, Path: tc.dir, Name: []byte(tc.entry)}))
			if tc.want != 0 {
				x.fails(t, "lookup", tc.want)
				return
			}
			a := x.ok(t, "lookup").GetAttr()
			st := e.lstat(tc.hostAt)
			if a.GetMode()&unix.S_IFMT != tc.typ || a.GetIno() != st.Ino || a.GetMode() != st.Mode ||
				a.GetSize() != st.Size || a.GetNlink() != uint32(st.Nlink) || a.GetUid() != st.Uid {
				t.Errorf("attr %v does not match the host's stat %+v", a, st)
			}
		})
	}
}

func testGetattr(e *env) {
	t := e.t
	e.write("f", "0123456789")
	e.symlink("/", "l")
	a := call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("f")})).ok(t, "getattr").GetAttr()
	st := e.lstat("f")
	if a.GetIno() != st.Ino || a.GetSize() != 10 || a.GetMode() != st.Mode || a.GetMtimeSec() != int64(st.Mtim.Sec) ||
		a.GetMtimeNsec() != uint32(st.Mtim.Nsec) || a.GetDev() != st.Dev || a.GetBlksize() == 0 {
		t.Errorf("getattr %v does not match the host's %+v", a, st)
	}
	root := call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Mount: e.mrw, Caller: rootCaller})).ok(t, "getattr root").GetAttr()
	var rst unix.Stat_t
	mustHost(t, unix.Stat(e.rw, &rst))
	if root.GetIno() != rst.Ino {
		t.Errorf("root ino %d, want %d", root.GetIno(), rst.Ino)
	}
	l := call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("l")})).ok(t, "getattr symlink").GetAttr()
	if l.GetMode()&unix.S_IFMT != unix.S_IFLNK || l.GetSize() != 1 {
		t.Errorf("getattr of a symlink to / gave %v: it must not follow", l)
	}
	h := e.open(e.mrw, e.p("f"), unix.O_RDONLY).GetHandle()
	ha := call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Handle: h})).ok(t, "getattr handle").GetAttr()
	if ha.GetIno() != st.Ino {
		t.Errorf("getattr by handle ino %d, want %d", ha.GetIno(), st.Ino)
	}
	call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Handle: 1 << 50})).fails(t, "unknown handle", syscall.EBADF)
	call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("nope")})).
		fails(t, "missing", syscall.ENOENT)
}

func testSetattr(e *env) {
	e.write("f", "0123456789")
	e.mkdir("d")
	e.symlink("f", "l")
	valid := func(bits ...qtfsv1.SetattrValid) uint32 {
		var v uint32
		for _, b := range bits {
			v |= uint32(b)
		}
		return v
	}
	const (
		vMode     = qtfsv1.SetattrValid_SETATTR_VALID_MODE
		vUID      = qtfsv1.SetattrValid_SETATTR_VALID_UID
		vGID      = qtfsv1.SetattrValid_SETATTR_VALID_GID
		vSize     = qtfsv1.SetattrValid_SETATTR_VALID_SIZE
		vAtime    = qtfsv1.SetattrValid_SETATTR_VALID_ATIME
		vMtime    = qtfsv1.SetattrValid_SETATTR_VALID_MTIME
		vMtimeNow = qtfsv1.SetattrValid_SETATTR_VALID_MTIME_NOW
		vAtimeNow = qtfsv1.SetattrValid_SETATTR_VALID_ATIME_NOW
	)
	for _, tc := range []struct {
		name   string
		req    *qtfsv1.SetattrRequest
		handle int // open flags + 1 when the request goes by handle
		root   bool
		want   syscall.Errno
		check  func(t *testing.T, a *qtfsv1.Attr)
	}{
		{name: "chmod", req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vMode), Mode: 0o600},
			check: func(t *testing.T, a *qtfsv1.Attr) { wantMode(t, e, "f", 0o600, a) }},
		{name: "chmod setuid", req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vMode), Mode: 0o4755},
			check: func(t *testing.T, a *qtfsv1.Attr) { wantMode(t, e, "f", 0o4755, a) }},
		{name: "chmod directory", req: &qtfsv1.SetattrRequest{Path: e.p("d"), Valid: valid(vMode), Mode: 0o711},
			check: func(t *testing.T, a *qtfsv1.Attr) { wantMode(t, e, "d", 0o711, a) }},
		{name: "chown", root: true, req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vUID, vGID), Uid: 4242, Gid: 4343},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				st := e.lstat("f")
				if st.Uid != 4242 || st.Gid != 4343 || a.GetUid() != 4242 || a.GetGid() != 4343 {
					t.Errorf("owner %d:%d (reply %d:%d), want 4242:4343", st.Uid, st.Gid, a.GetUid(), a.GetGid())
				}
			}},
		{name: "chown gid only", root: true, req: &qtfsv1.SetattrRequest{Path: e.p("d"), Valid: valid(vGID), Gid: 77},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				if st := e.lstat("d"); st.Uid != 0 || st.Gid != 77 {
					t.Errorf("owner %d:%d, want 0:77", st.Uid, st.Gid)
				}
			}},
		{name: "truncate by path", req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vSize), Size: 3},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				if e.readHost("f") != "012" || a.GetSize() != 3 {
					t.Errorf("content %q size %d after truncate to 3", e.readHost("f"), a.GetSize())
				}
			}},
		{name: "extend by handle", handle: unix.O_RDWR + 1, req: &qtfsv1.SetattrRequest{Valid: valid(vSize), Size: 100},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				if st := e.lstat("f"); st.Size != 100 || a.GetSize() != 100 {
					t.Errorf("size %d (reply %d), want 100", st.Size, a.GetSize())
				}
			}},
		{name: "chmod by handle", handle: unix.O_RDONLY + 1, req: &qtfsv1.SetattrRequest{Valid: valid(vMode), Mode: 0o640},
			check: func(t *testing.T, a *qtfsv1.Attr) { wantMode(t, e, "f", 0o640, a) }},
		{name: "times", req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vAtime, vMtime),
			AtimeSec: 1_000_000_000, AtimeNsec: 5, MtimeSec: 1_100_000_000, MtimeNsec: 7},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				st := e.lstat("f")
				if st.Atim.Sec != 1_000_000_000 || st.Atim.Nsec != 5 || st.Mtim.Sec != 1_100_000_000 || st.Mtim.Nsec != 7 ||
					a.GetMtimeSec() != 1_100_000_000 {
					t.Errorf("times atime %v mtime %v", st.Atim, st.Mtim)
				}
			}},
		{name: "mtime only leaves atime", req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vMtime), MtimeSec: 1_200_000_000},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				st := e.lstat("f")
				if st.Atim.Sec != 1_000_000_000 || st.Mtim.Sec != 1_200_000_000 {
					t.Errorf("times atime %v mtime %v, want atime kept", st.Atim, st.Mtim)
				}
			}},
		{name: "times now", req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vAtimeNow, vMtimeNow)},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				st := e.lstat("f")
				if d := time.Since(time.Unix(int64(st.Mtim.Sec), 0)); d > time.Minute || d < -time.Minute {
					t.Errorf("mtime %v is not now", st.Mtim)
				}
			}},
		{name: "times by handle", handle: unix.O_RDONLY + 1, req: &qtfsv1.SetattrRequest{Valid: valid(vMtime), MtimeSec: 1_300_000_000},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				if st := e.lstat("f"); st.Mtim.Sec != 1_300_000_000 {
					t.Errorf("mtime %v", st.Mtim)
				}
			}},
		{name: "symlink times do not follow", req: &qtfsv1.SetattrRequest{Path: e.p("l"), Valid: valid(vMtime), MtimeSec: 1_400_000_000},
			check: func(t *testing.T, a *qtfsv1.Attr) {
				if st := e.lstat("l"); st.Mtim.Sec != 1_400_000_000 {
					t.Errorf("symlink mtime %v", st.Mtim)
				}
				if st := e.lstat("f"); st.Mtim.Sec == 1_400_000_000 {
					t.Errorf("the symlink's target was changed")
				}
			}},
		{name: "root of the mount", req: &qtfsv1.SetattrRequest{Valid: valid(vMtimeNow)}},
		{name: "chmod symlink", req: &qtfsv1.SetattrRequest{Path: e.p("l"), Valid: valid(vMode), Mode: 0o777}, want: syscall.EOPNOTSUPP},
		{name: "truncate symlink", req: &qtfsv1.SetattrRequest{Path: e.p("l"), Valid: valid(vSize)}, want: syscall.ELOOP},
		{name: "truncate directory", req: &qtfsv1.SetattrRequest{Path: e.p("d"), Valid: valid(vSize)}, want: syscall.EISDIR},
		{name: "negative size", req: &qtfsv1.SetattrRequest{Path: e.p("f"), Valid: valid(vSize), Size: -1}, want: syscall.EINVAL},
		{name: "missing", req: &qtfsv1.SetattrRequest{Path: e.p("nope"), Valid: valid(vMode)}, want: syscall.ENOENT},
		{name: "unknown handle", req: &qtfsv1.SetattrRequest{Handle: 1 << 50, Valid: valid(vMode)}, want: syscall.EBADF},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			if tc.root && !isRoot() {
				t.Skip("needs root (chown); run the suite as root")
			}
			req := tc.req
			req.Mount, req.Caller = e.mrw, rootCaller
			if tc.handle != 0 {
				req.Handle = e.open(e.mrw, e.p("f"), tc.handle-1).GetHandle()
			}
			x := call(e.c.Setattr(e.ctx(), req))
			if tc.want != 0 {
				x.fails(t, "setattr", tc.want)
				return
			}
			a := x.ok(t, "setattr").GetAttr()
			if a == nil {
				t.Fatalf("setattr returned no attributes")
			}
			if tc.check != nil {
				tc.check(t, a)
			}
		})
	}
}

// wantMode checks the permission bits of name on the host and in a.
func wantMode(t *testing.T, e *env, name string, mode uint32, a *qtfsv1.Attr) {
	t.Helper()
	st := e.lstat(name)
	if st.Mode&0o7777 != mode || (a != nil && a.GetMode()&0o7777 != mode) {
		t.Errorf("%s: mode %o (reply %o), want %o", name, st.Mode&0o7777, a.GetMode()&0o7777, mode)
	}
}

func testReadlink(e *env) {
	e.write("f", "")
	e.symlink("target/x", "l")
	e.symlink("\xff\xfe/../..", "odd")
	for _, tc := range []struct {
		name string
		path []byte
		want syscall.Errno
		out  string
	}{
		{"symlink", e.p("l"), 0, "target/x"},
		{"non-UTF-8 target kept as bytes", e.p("odd"), 0, "\xff\xfe/../.."},
		{"regular file", e.p("f"), syscall.EINVAL, ""},
		{"missing", e.p("nope"), syscall.ENOENT, ""},
		{"mount root", nil, syscall.EINVAL, ""},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Readlink(e.ctx(), &qtfsv1.ReadlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: tc.path}))
			if tc.want != 0 {
				x.fails(t, "readlink", tc.want)
				return
			}
			if got := string(x.ok(t, "readlink").GetTarget()); got != tc.out {
				t.Errorf("target %q, want %q", got, tc.out)
			}
		})
	}
}

func testSymlink(e *env) {
	e.write("exists", "")
	for _, tc := range []struct {
		name   string
		entry  string
		target string
		want   syscall.Errno
	}{
		{"relative", "s1", "../somewhere/else", 0},
		{"absolute", "s2", "/etc/passwd", 0},
		{"dangling", "s3", "nope", 0},
		{"exists", "exists", "x", syscall.EEXIST},
		{"empty target", "s4", "", syscall.ENOENT},
		{"NUL in target", "s5", "a\x00b", syscall.EINVAL},
		{"target too long", "s6", strings.Repeat("x", 4096), syscall.ENAMETOOLONG},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Symlink(e.ctx(), &qtfsv1.SymlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(),
				Name: []byte(tc.entry), Target: []byte(tc.target)}))
			if tc.want != 0 {
				x.fails(t, "symlink", tc.want)
				return
			}
			a := x.ok(t, "symlink").GetAttr()
			got, err := os.Readlink(e.hp(tc.entry))
			mustHost(t, err)
			if got != tc.target || a.GetMode()&unix.S_IFMT != unix.S_IFLNK || a.GetIno() != e.lstat(tc.entry).Ino {
				t.Errorf("host link %q, attr %v; want target %q", got, a, tc.target)
			}
		})
	}
}

func testMknod(e *env) {
	e.write("exists", "")
	for _, tc := range []struct {
		name  string
		entry string
		mode  uint32
		umask uint32
		rdev  uint64
		root  bool
		want  syscall.Errno
		perm  uint32
	}{
		{name: "fifo", entry: "fifo", mode: unix.S_IFIFO | 0o666, umask: 0o022, perm: 0o644},
		{name: "socket", entry: "sock", mode: unix.S_IFSOCK | 0o600, perm: 0o600},
		{name: "regular", entry: "reg", mode: unix.S_IFREG | 0o640, umask: 0o022, perm: 0o640},
		{name: "type 0 is regular", entry: "reg0", mode: 0o644, perm: 0o644},
		{name: "mode not cut by the server's umask", entry: "fifo2", mode: unix.S_IFIFO | 0o666, perm: 0o666},
		{name: "char device", entry: "null", mode: unix.S_IFCHR | 0o600, rdev: uint64(unix.Mkdev(1, 3)), root: true, perm: 0o600},
		{name: "exists", entry: "exists", mode: unix.S_IFIFO | 0o600, want: syscall.EEXIST},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			if tc.root && !isRoot() {
				t.Skip("needs root (CAP_MKNOD)")
			}
			x := call(e.c.Mknod(e.ctx(), &qtfsv1.MknodRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(),
				Name: []byte(tc.entry), Mode: tc.mode, Rdev: tc.rdev, Umask: tc.umask}))
			if tc.want != 0 {
				x.fails(t, "mknod", tc.want)
				return
			}
			a := x.ok(t, "mknod").GetAttr()
			st := e.lstat(tc.entry)
			typ := tc.mode & unix.S_IFMT
			if typ == 0 {
				typ = unix.S_IFREG
			}
			if st.Mode&unix.S_IFMT != typ || st.Mode&0o7777 != tc.perm || a.GetMode() != st.Mode || a.GetIno() != st.Ino {
				t.Errorf("host mode %o (attr %o), want type %o perm %o", st.Mode, a.GetMode(), typ, tc.perm)
			}
			if tc.rdev != 0 && st.Rdev != tc.rdev {
				t.Errorf("rdev %x, want %x", st.Rdev, tc.rdev)
			}
		})
	}
}

func testMkdir(e *env) {
	e.write("file", "")
	e.mkdir("exists")
	for _, tc := range []struct {
		name  string
		dir   []byte
		entry string
		mode  uint32
		umask uint32
		want  syscall.Errno
		perm  uint32
	}{
		{"umask applied", e.p(), "a", 0o777, 0o022, 0, 0o755},
		{"no umask: the server's own umask does not cut", e.p(), "b", 0o777, 0, 0, 0o777},
		{"strict umask", e.p(), "c", 0o777, 0o077, 0, 0o700},
		{"sticky", e.p(), "s", 0o1777, 0, 0, 0o1777},
		{"nested", e.p("exists"), "n", 0o755, 0, 0, 0o755},
		{"exists", e.p(), "exists", 0o755, 0, syscall.EEXIST, 0},
		{"parent missing", e.p("nope"), "x", 0o755, 0, syscall.ENOENT, 0},
		{"parent is a file", e.p("file"), "x", 0o755, 0, syscall.ENOTDIR, 0},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Mkdir(e.ctx(), &qtfsv1.MkdirRequest{Mount: e.mrw, Caller: rootCaller, Path: tc.dir,
				Name: []byte(tc.entry), Mode: tc.mode, Umask: tc.umask}))
			if tc.want != 0 {
				x.fails(t, "mkdir", tc.want)
				return
			}
			a := x.ok(t, "mkdir").GetAttr()
			host := strings.TrimPrefix(string(tc.dir), e.dir)
			st := e.lstat(strings.TrimPrefix(host+"/"+tc.entry, "/"))
			if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Mode&0o7777 != tc.perm || a.GetIno() != st.Ino || a.GetMode() != st.Mode {
				t.Errorf("host mode %o (attr %o), want a directory %o", st.Mode, a.GetMode(), tc.perm)
			}
		})
	}
}

func testUnlink(e *env) {
	e.write("f", "")
	e.symlink(e.outside+"/secret", "l")
	e.mkdir("d")
	for _, tc := range []struct {
		name  string
		entry string
		want  syscall.Errno
	}{
		{"file", "f", 0},
		{"symlink, not its target", "l", 0},
		{"directory", "d", syscall.EISDIR},
		{"missing", "nope", syscall.ENOENT},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Unlink(e.ctx(), &qtfsv1.UnlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: []byte(tc.entry)}))
			if tc.want != 0 {
				x.fails(t, "unlink", tc.want)
				return
			}
			x.ok(t, "unlink")
			if e.exists(tc.entry) {
				t.Errorf("%s still exists", tc.entry)
			}
		})
	}
	if _, err := os.Stat(e.outside + "/secret"); err != nil {
		e.t.Errorf("the symlink's target went: %v", err)
	}
}

func testRmdir(e *env) {
	e.mkdir("empty")
	e.mkdir("full")
	e.write("full/x", "")
	e.write("f", "")
	for _, tc := range []struct {
		name  string
		entry string
		want  syscall.Errno
	}{
		{"empty", "empty", 0},
		{"not empty", "full", syscall.ENOTEMPTY},
		{"file", "f", syscall.ENOTDIR},
		{"missing", "nope", syscall.ENOENT},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Rmdir(e.ctx(), &qtfsv1.RmdirRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: []byte(tc.entry)}))
			if tc.want != 0 {
				x.fails(t, "rmdir", tc.want)
				if !e.exists(tc.entry) && tc.want != syscall.ENOENT {
					t.Errorf("%s was removed", tc.entry)
				}
				return
			}
			x.ok(t, "rmdir")
			if e.exists(tc.entry) {
				t.Errorf("%s still exists", tc.entry)
			}
		})
	}
}

func testRename(e *env) {
	e.mkdir("d")
	e.write("a", "A")
	e.write("x", "X")
	e.write("y", "Y")
	e.write("keep", "K")
	e.mkdir("full")
	e.write("full/f", "")
	e.mkdir("empty")
	rename := func(oldDir []byte, oldName string, newDir []byte, newName string, flags uint32) result[*qtfsv1.ErrnoResponse] {
		return call(e.c.Rename(e.ctx(), &qtfsv1.RenameRequest{Mount: e.mrw, Caller: rootCaller, OldPath: oldDir,
			OldName: []byte(oldName), NewPath: newDir, NewName: []byte(newName), Flags: flags}))
	}
	t := e.t
	t.Run("move across directories", func(t *testing.T) {
		rename(e.p(), "a", e.p("d"), "a2", 0).ok(t, "rename")
		if e.exists("a") || e.readHost("d/a2") != "A" {
			t.Errorf("rename did not move a to d/a2")
		}
	})
	t.Run("noreplace onto an existing file", func(t *testing.T) {
		rename(e.p(), "x", e.p(), "keep", unix.RENAME_NOREPLACE).fails(t, "rename", syscall.EEXIST)
		if e.readHost("x") != "X" || e.readHost("keep") != "K" {
			t.Errorf("a refused rename changed files")
		}
	})
	t.Run("noreplace onto a new name", func(t *testing.T) {
		rename(e.p(), "keep", e.p(), "kept", unix.RENAME_NOREPLACE).ok(t, "rename")
		if e.readHost("kept") != "K" {
			t.Errorf("not renamed")
		}
	})
	t.Run("exchange", func(t *testing.T) {
		rename(e.p(), "x", e.p(), "y", unix.RENAME_EXCHANGE).ok(t, "rename")
		if e.readHost("x") != "Y" || e.readHost("y") != "X" {
			t.Errorf("exchange did not swap: x=%q y=%q", e.readHost("x"), e.readHost("y"))
		}
	})
	t.Run("exchange with a missing name", func(t *testing.T) {
		rename(e.p(), "x", e.p(), "nope", unix.RENAME_EXCHANGE).fails(t, "rename", syscall.ENOENT)
	})
	t.Run("replace", func(t *testing.T) {
		rename(e.p(), "x", e.p(), "y", 0).ok(t, "rename")
		if e.exists("x") || e.readHost("y") != "Y" {
			t.Errorf("replace failed")
		}
	})
	t.Run("directory over a non-empty one", func(t *testing.T) {
		rename(e.p(), "empty", e.p(), "full", 0).fails(t, "rename", syscall.ENOTEMPTY, syscall.EEXIST)
	})
	t.Run("missing source", func(t *testing.T) {
		rename(e.p(), "nope", e.p(), "z", 0).fails(t, "rename", syscall.ENOENT)
	})
	t.Run("whiteout refused", func(t *testing.T) {
		rename(e.p(), "y", e.p(), "z", unix.RENAME_WHITEOUT).fails(t, "rename", syscall.EINVAL)
	})
	t.Run("noreplace and exchange together", func(t *testing.T) {
		rename(e.p(), "y", e.p(), "kept", unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE).fails(t, "rename", syscall.EINVAL)
	})
}

func testLink(e *env) {
	e.write("f", "data")
	e.mkdir("d")
	e.symlink("f", "l")
	link := func(path []byte, newDir []byte, newName string) result[*qtfsv1.EntryResponse] {
		return call(e.c.Link(e.ctx(), &qtfsv1.LinkRequest{Mount: e.mrw, Caller: rootCaller, Path: path,
			NewPath: newDir, NewName: []byte(newName)}))
	}
	t := e.t
	t.Run("hard link shares the inode", func(t *testing.T) {
		a := link(e.p("f"), e.p("d"), "g").ok(t, "link").GetAttr()
		f, g := e.lstat("f"), e.lstat("d/g")
		if f.Ino != g.Ino || a.GetIno() != f.Ino || a.GetNlink() != 2 || f.Nlink != 2 {
			t.Errorf("ino f=%d g=%d attr=%d nlink %d", f.Ino, g.Ino, a.GetIno(), a.GetNlink())
		}
	})
	t.Run("symlink is linked itself", func(t *testing.T) {
		a := link(e.p("l"), e.p(), "l2").ok(t, "link").GetAttr()
		if a.GetMode()&unix.S_IFMT != unix.S_IFLNK || a.GetIno() != e.lstat("l").Ino {
			t.Errorf("link of a symlink gave %v", a)
		}
	})
	t.Run("exists", func(t *testing.T) { link(e.p("f"), e.p(), "l").fails(t, "link", syscall.EEXIST) })
	t.Run("directory", func(t *testing.T) { link(e.p("d"), e.p(), "d2").fails(t, "link", syscall.EPERM) })
	t.Run("mount root", func(t *testing.T) { link(nil, e.p(), "r").fails(t, "link", syscall.EPERM) })
	t.Run("missing", func(t *testing.T) { link(e.p("nope"), e.p(), "n").fails(t, "link", syscall.ENOENT) })
}

// testMounts checks the shape of a Mounts reply on the rw export: the
// mount holding the root first, with path "", then mounts beneath it,
// each after its parent, their paths valid relative paths; an unknown
// mount is ESTALE.
func testMounts(e *env) {
	t := e.t
	r := call(e.c.Mounts(e.ctx(), &qtfsv1.MountsRequest{Mount: e.mrw})).ok(t, "mounts")
	ms := r.GetMounts()
	if len(ms) == 0 || len(ms[0].GetPath()) != 0 || len(ms[0].GetRoot()) == 0 || ms[0].GetRoot()[0] != '/' || ms[0].GetFsType() == "" {
		t.Fatalf("mounts %v: want the holding mount first, with path \"\" and an absolute root", ms)
	}
	seen := map[uint32]bool{ms[0].GetId(): true}
	for _, m := range ms[1:] {
		if qfs.ValidPath(m.GetPath()) != 0 || len(m.GetPath()) == 0 {
			t.Errorf("mount %d: path %q", m.GetId(), m.GetPath())
		}
		if !seen[m.GetParentId()] {
			t.Errorf("mount %d (%s) listed before its parent %d", m.GetId(), m.GetPath(), m.GetParentId())
		}
		seen[m.GetId()] = true
	}
	call(e.c.Mounts(e.ctx(), &qtfsv1.MountsRequest{Mount: 1 << 40})).fails(t, "mounts of an unknown mount", syscall.ESTALE)
}

func testStatfs(e *env) {
	t := e.t
	e.symlink("/", "l")
	r := call(e.c.Statfs(e.ctx(), &qtfsv1.StatfsRequest{Mount: e.mrw, Caller: rootCaller})).ok(t, "statfs")
	var st unix.Statfs_t
	mustHost(t, unix.Statfs(e.rw, &st))
	if r.GetBsize() != uint32(st.Bsize) || r.GetBlocks() != st.Blocks || r.GetNamelen() != uint32(st.Namelen) ||
		r.GetFiles() != st.Files || r.GetFrsize() != uint32(st.Frsize) {
		t.Errorf("statfs %v, host %+v", r, st)
	}
	// A symlink is not followed: its own filesystem is reported.
	call(e.c.Statfs(e.ctx(), &qtfsv1.StatfsRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("l")})).ok(t, "statfs symlink")
	call(e.c.Statfs(e.ctx(), &qtfsv1.StatfsRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("nope")})).
		fails(t, "statfs missing", syscall.ENOENT)
}
