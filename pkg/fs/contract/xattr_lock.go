package contract

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// skipWithoutXattrs skips t when the host filesystem under dir has no
// user extended attributes.
func skipWithoutXattrs(t *testing.T, file string) {
	t.Helper()
	err := unix.Setxattr(file, "user.probe", []byte("x"), 0)
	if errors.Is(err, unix.EOPNOTSUPP) {
		t.Skipf("the host filesystem of %s has no user xattrs", file)
	}
	mustHost(t, err)
	mustHost(t, unix.Removexattr(file, "user.probe"))
}

func testXattr(e *env) {
	e.write("f", "")
	e.mkdir("d")
	e.symlink("f", "l")
	skipWithoutXattrs(e.t, e.hp("f"))
	ctx := e.ctx()
	set := func(path []byte, name string, value []byte, flags uint32) result[*qtfsv1.ErrnoResponse] {
		return call(e.c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: e.mrw, Caller: rootCaller, Path: path,
			Name: []byte(name), Value: value, Flags: flags}))
	}
	get := func(path []byte, name string, size uint32) result[*qtfsv1.GetxattrResponse] {
		return call(e.c.Getxattr(ctx, &qtfsv1.GetxattrRequest{Mount: e.mrw, Caller: rootCaller, Path: path,
			Name: []byte(name), Size: size}))
	}
	list := func(path []byte, size uint32) result[*qtfsv1.ListxattrResponse] {
		return call(e.c.Listxattr(ctx, &qtfsv1.ListxattrRequest{Mount: e.mrw, Caller: rootCaller, Path: path, Size: size}))
	}
	remove := func(path []byte, name string) result[*qtfsv1.ErrnoResponse] {
		return call(e.c.Removexattr(ctx, &qtfsv1.RemovexattrRequest{Mount: e.mrw, Caller: rootCaller, Path: path, Name: []byte(name)}))
	}
	t := e.t
	t.Run("set and get", func(t *testing.T) {
		set(e.p("f"), "user.test", []byte("value"), 0).ok(t, "setxattr")
		buf := make([]byte, 64)
		n, err := unix.Getxattr(e.hp("f"), "user.test", buf)
		mustHost(t, err)
		if string(buf[:n]) != "value" {
			t.Errorf("host value %q", buf[:n])
		}
		if r := get(e.p("f"), "user.test", 0).ok(t, "size query"); r.GetSize() != 5 || len(r.GetValue()) != 0 {
			t.Errorf("size query: size %d value %q", r.GetSize(), r.GetValue())
		}
		if r := get(e.p("f"), "user.test", 100).ok(t, "getxattr"); string(r.GetValue()) != "value" || r.GetSize() != 5 {
			t.Errorf("getxattr %q size %d", r.GetValue(), r.GetSize())
		}
		get(e.p("f"), "user.test", 2).fails(t, "small buffer", syscall.ERANGE)
	})
	t.Run("binary value", func(t *testing.T) {
		v := []byte{0, 1, 2, 0xff, 0}
		set(e.p("f"), "user.bin", v, 0).ok(t, "setxattr")
		if r := get(e.p("f"), "user.bin", 100).ok(t, "getxattr"); !bytes.Equal(r.GetValue(), v) {
			t.Errorf("value %v, want %v", r.GetValue(), v)
		}
	})
	t.Run("list", func(t *testing.T) {
		size := list(e.p("f"), 0).ok(t, "list size").GetSize()
		if size == 0 {
			t.Fatalf("list size 0")
		}
		r := list(e.p("f"), size).ok(t, "list")
		names := strings.Split(strings.TrimSuffix(string(r.GetNames()), "\x00"), "\x00")
		if !strings.Contains(strings.Join(names, ","), "user.test") || r.GetSize() != size {
			t.Errorf("names %q", names)
		}
		list(e.p("f"), 1).fails(t, "list with a small buffer", syscall.ERANGE)
	})
	t.Run("create and replace flags", func(t *testing.T) {
		set(e.p("f"), "user.test", []byte("x"), unix.XATTR_CREATE).fails(t, "create existing", syscall.EEXIST)
		set(e.p("f"), "user.missing", []byte("x"), unix.XATTR_REPLACE).fails(t, "replace missing", syscall.ENODATA)
		set(e.p("f"), "user.test", []byte("new"), unix.XATTR_REPLACE).ok(t, "replace")
		set(e.p("f"), "user.x", []byte("x"), 7).fails(t, "bad flags", syscall.EINVAL)
	})
	t.Run("remove", func(t *testing.T) {
		remove(e.p("f"), "user.test").ok(t, "removexattr")
		get(e.p("f"), "user.test", 100).fails(t, "get removed", syscall.ENODATA)
		remove(e.p("f"), "user.test").fails(t, "remove again", syscall.ENODATA)
	})
	t.Run("directory", func(t *testing.T) {
		set(e.p("d"), "user.dir", []byte("d"), 0).ok(t, "setxattr")
		if r := get(e.p("d"), "user.dir", 10).ok(t, "getxattr"); string(r.GetValue()) != "d" {
			t.Errorf("value %q", r.GetValue())
		}
		set(nil, "user.root", []byte("r"), 0).ok(t, "setxattr on the mount root")
		remove(nil, "user.root").ok(t, "removexattr on the mount root")
	})
	t.Run("symlink is not followed", func(t *testing.T) {
		// Linux refuses user.* on symlinks; a follower would set it on f.
		set(e.p("l"), "user.sym", []byte("x"), 0).fails(t, "user xattr on a symlink", syscall.EPERM)
		if !isRoot() {
			t.Skip("trusted.* needs root")
		}
		set(e.p("l"), "trusted.sym", []byte("link"), 0).ok(t, "trusted xattr on a symlink")
		buf := make([]byte, 16)
		n, err := unix.Lgetxattr(e.hp("l"), "trusted.sym", buf)
		mustHost(t, err)
		if string(buf[:n]) != "link" {
			t.Errorf("symlink value %q", buf[:n])
		}
		if _, err := unix.Getxattr(e.hp("f"), "trusted.sym", buf); !errors.Is(err, unix.ENODATA) {
			t.Errorf("the symlink's target got the attribute (err %v)", err)
		}
		if r := get(e.p("l"), "trusted.sym", 16).ok(t, "getxattr symlink"); string(r.GetValue()) != "link" {
			t.Errorf("value %q", r.GetValue())
		}
	})
	t.Run("limits", func(t *testing.T) {
		set(e.p("f"), "user.big", make([]byte, 64<<10+1), 0).fails(t, "value over 64 KiB", syscall.E2BIG)
		set(e.p("f"), "", []byte("x"), 0).fails(t, "empty name", syscall.EINVAL)
		set(e.p("f"), "user."+strings.Repeat("x", 251), []byte("x"), 0).fails(t, "name over 255 bytes", syscall.ERANGE)
		get(e.p("f"), "user.a\x00b", 10).fails(t, "NUL in name", syscall.EINVAL)
	})
	t.Run("missing file", func(t *testing.T) {
		get(e.p("nope"), "user.x", 10).fails(t, "getxattr", syscall.ENOENT)
		list(e.p("nope"), 10).fails(t, "listxattr", syscall.ENOENT)
	})
}

// POSIX ACL xattr encoding (linux/posix_acl_xattr.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = math.MaxUint32
)

type aclEntry struct {
	tag, perm uint16
	id        uint32
}

func encodeACL(ents ...aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, a := range ents {
		b = binary.LittleEndian.AppendUint16(b, a.tag)
		b = binary.LittleEndian.AppendUint16(b, a.perm)
		b = binary.LittleEndian.AppendUint32(b, a.id)
	}
	return b
}

func testACL(e *env) {
	t := e.t
	e.mkdir("d")
	e.write("g", "acl")
	mustHost(t, unix.Chmod(e.hp("g"), 0o600))
	ctx := e.ctx()
	def := encodeACL(aclEntry{aclUserObj, 6, aclNoID}, aclEntry{aclGroupObj, 4, aclNoID}, aclEntry{aclOther, 0, aclNoID})
	x := call(e.c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("d"),
		Name: []byte("system.posix_acl_default"), Value: def}))
	if x.err == nil && x.r.GetErrno() == int32(syscall.EOPNOTSUPP) {
		t.Skip("the host filesystem has no POSIX ACLs")
	}
	x.ok(t, "set default ACL")
	t.Run("default ACL replaces the umask", func(t *testing.T) {
		r := call(e.c.Create(ctx, &qtfsv1.CreateRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("d"), Name: []byte("f"),
			Flags: unix.O_RDWR, Mode: 0o666, Umask: 0o077})).ok(t, "create under a default ACL")
		e.releaseLater(r.GetHandle())
		wantMode(t, e, "d/f", 0o640, nil)
		call(e.c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("d"), Name: []byte("sub"),
			Mode: 0o777, Umask: 0o077})).ok(t, "mkdir under a default ACL")
		wantMode(t, e, "d/sub", 0o640, nil)
	})
	acc := encodeACL(aclEntry{aclUserObj, 6, aclNoID}, aclEntry{aclUser, 4, 1000}, aclEntry{aclGroupObj, 0, aclNoID},
		aclEntry{aclMask, 4, aclNoID}, aclEntry{aclOther, 0, aclNoID})
	t.Run("access ACL", func(t *testing.T) {
		call(e.c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("g"),
			Name: []byte("system.posix_acl_access"), Value: acc})).ok(t, "set access ACL")
		r := call(e.c.Getxattr(ctx, &qtfsv1.GetxattrRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("g"),
			Name: []byte("system.posix_acl_access"), Size: 1024})).ok(t, "get access ACL")
		if !bytes.Equal(r.GetValue(), acc) {
			t.Errorf("ACL read back %x, want %x", r.GetValue(), acc)
		}
		wantMode(t, e, "g", 0o640, nil) // the group bits show the mask
	})
	t.Run("ACL grants a user", func(t *testing.T) {
		if !isRoot() {
			t.Skip("acting as uid 1000 needs root")
		}
		u := &qtfsv1.Caller{Uid: 1000, Gid: 1000}
		r := call(e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: e.mrw, Caller: u, Path: e.p("g"), Flags: unix.O_RDONLY})).
			ok(t, "open as the ACL's user")
		e.releaseLater(r.GetHandle())
		call(e.c.Open(ctx, &qtfsv1.OpenRequest{Mount: e.mrw, Caller: &qtfsv1.Caller{Uid: 1001, Gid: 1001}, Path: e.p("g"),
			Flags: unix.O_RDONLY})).fails(t, "open as another user", syscall.EACCES)
	})
}

func lockReq(h uint64, typ uint32, start, end uint64, wait bool) *qtfsv1.SetlkRequest {
	return &qtfsv1.SetlkRequest{Handle: h, Owner: h, Lock: &qtfsv1.Lock{Type: typ, Start: start, End: end}, Wait: wait}
}

func testLocks(e *env) {
	t := e.t
	e.write("f", strings.Repeat("x", 1000))
	h1 := e.open(e.mrw, e.p("f"), unix.O_RDWR).GetHandle()
	h2 := e.open(e.mrw, e.p("f"), unix.O_RDWR).GetHandle()
	ctx := e.ctx()
	setlk := func(r *qtfsv1.SetlkRequest) result[*qtfsv1.ErrnoResponse] { return call(e.c.Setlk(ctx, r)) }
	getlk := func(h uint64, typ uint32, start, end uint64) *qtfsv1.Lock {
		t.Helper()
		return call(e.c.Getlk(ctx, &qtfsv1.GetlkRequest{Handle: h, Owner: h, Lock: &qtfsv1.Lock{Type: typ, Start: start, End: end}})).
			ok(t, "getlk").GetLock()
	}
	const eof = math.MaxUint64
	setlk(lockReq(h1, unix.F_WRLCK, 0, 99, false)).ok(t, "h1 write lock 0-99")
	if l := getlk(h2, unix.F_WRLCK, 50, 60); l.GetType() != unix.F_WRLCK || l.GetStart() != 0 || l.GetEnd() != 99 {
		t.Errorf("getlk from h2 = %v, want h1's write lock 0-99", l)
	}
	if l := getlk(h2, unix.F_WRLCK, 100, 200); l.GetType() != unix.F_UNLCK {
		t.Errorf("getlk beside the lock = %v, want F_UNLCK", l)
	}
	if l := getlk(h1, unix.F_WRLCK, 0, 10); l.GetType() != unix.F_UNLCK {
		t.Errorf("getlk by the holder = %v, want F_UNLCK (own locks never conflict)", l)
	}
	setlk(lockReq(h2, unix.F_WRLCK, 50, 60, false)).fails(t, "conflicting lock without wait", syscall.EAGAIN)
	setlk(lockReq(h2, unix.F_RDLCK, 100, eof, false)).ok(t, "h2 read lock to end of file")
	if l := getlk(h1, unix.F_WRLCK, 200, 300); l.GetType() != unix.F_RDLCK || l.GetStart() != 100 || l.GetEnd() != eof {
		t.Errorf("getlk from h1 = %v, want h2's read lock 100-EOF", l)
	}
	setlk(lockReq(h1, unix.F_RDLCK, 500, 600, false)).ok(t, "read locks share")
	setlk(lockReq(h2, unix.F_UNLCK, 100, eof, false)).ok(t, "h2 unlock 100-EOF")
	if l := getlk(h1, unix.F_WRLCK, 200, 300); l.GetType() != unix.F_UNLCK {
		t.Errorf("getlk after unlock = %v, want F_UNLCK", l)
	}

	t.Run("wait until released", func(t *testing.T) {
		done := make(chan result[*qtfsv1.ErrnoResponse], 1)
		go func() { done <- call(e.c.Setlk(ctx, lockReq(h2, unix.F_WRLCK, 0, 10, true))) }()
		select {
		case r := <-done:
			t.Fatalf("waiting lock returned before release: %v %v", r.r, r.err)
		case <-time.After(150 * time.Millisecond):
		}
		setlk(lockReq(h1, unix.F_UNLCK, 0, 99, false)).ok(t, "h1 unlock")
		select {
		case r := <-done:
			r.ok(t, "waiting lock")
		case <-time.After(5 * time.Second):
			t.Fatalf("waiting lock not granted after release")
		}
	})
	t.Run("wait stops on cancel", func(t *testing.T) {
		setlk(lockReq(h1, unix.F_WRLCK, 700, 800, false)).ok(t, "h1 lock 700-800")
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		r, err := e.c.Setlk(cctx, lockReq(h2, unix.F_WRLCK, 700, 800, true))
		switch {
		case err == nil && r.GetErrno() == int32(syscall.EINTR):
		case status.Code(err) == codes.DeadlineExceeded || status.Code(err) == codes.Canceled:
		default:
			t.Fatalf("cancelled wait: reply %v error %v, want EINTR or a cancelled call", r, err)
		}
		setlk(lockReq(h1, unix.F_UNLCK, 700, 800, false)).ok(t, "h1 unlock 700-800")
		time.Sleep(200 * time.Millisecond)
		// Nobody may still be waiting for it on the server.
		setlk(lockReq(h1, unix.F_WRLCK, 700, 800, false)).ok(t, "h1 takes 700-800 again")
	})
	t.Run("release drops the handle's locks", func(t *testing.T) {
		h3 := e.open(e.mrw, e.p("f"), unix.O_RDWR).GetHandle()
		setlk(lockReq(h3, unix.F_WRLCK, 900, 950, false)).ok(t, "h3 lock")
		setlk(lockReq(h2, unix.F_WRLCK, 900, 950, false)).fails(t, "h2 while h3 holds", syscall.EAGAIN)
		e.release(h3)
		setlk(lockReq(h2, unix.F_WRLCK, 900, 950, false)).ok(t, "h2 after h3's release")
	})
	t.Run("invalid", func(t *testing.T) {
		setlk(lockReq(h1, 7, 0, 1, false)).fails(t, "bad type", syscall.EINVAL)
		setlk(lockReq(h1, unix.F_WRLCK, 10, 5, false)).fails(t, "end before start", syscall.EINVAL)
		setlk(&qtfsv1.SetlkRequest{Handle: h1}).fails(t, "no lock", syscall.EINVAL)
		setlk(lockReq(1<<50, unix.F_WRLCK, 0, 1, false)).fails(t, "unknown handle", syscall.EBADF)
		call(e.c.Getlk(ctx, &qtfsv1.GetlkRequest{Handle: 1 << 50, Lock: &qtfsv1.Lock{Type: unix.F_WRLCK}})).
			fails(t, "getlk unknown handle", syscall.EBADF)
	})
	t.Run("read lock needs a readable handle", func(t *testing.T) {
		w := e.open(e.mrw, e.p("f"), unix.O_WRONLY).GetHandle()
		setlk(lockReq(w, unix.F_RDLCK, 0, 1, false)).fails(t, "read lock on write-only", syscall.EBADF)
	})
}

func testFlock(e *env) {
	t := e.t
	e.write("f", "")
	h1 := e.open(e.mrw, e.p("f"), unix.O_RDONLY).GetHandle()
	h2 := e.open(e.mrw, e.p("f"), unix.O_RDONLY).GetHandle()
	ctx := e.ctx()
	flock := func(h uint64, typ uint32, wait bool) result[*qtfsv1.ErrnoResponse] {
		return call(e.c.Setlk(ctx, &qtfsv1.SetlkRequest{Handle: h, Lock: &qtfsv1.Lock{Type: typ}, Flock: true, Wait: wait}))
	}
	flock(h1, unix.F_WRLCK, false).ok(t, "h1 exclusive")
	flock(h2, unix.F_WRLCK, false).fails(t, "h2 exclusive", syscall.EAGAIN)
	flock(h2, unix.F_RDLCK, false).fails(t, "h2 shared", syscall.EAGAIN)
	// Record locks are independent of flock locks.
	setlkOK := call(e.c.Setlk(ctx, lockReq(h2, unix.F_RDLCK, 0, 10, false)))
	setlkOK.ok(t, "record lock beside a flock")
	flock(h1, unix.F_UNLCK, false).ok(t, "h1 unlock")
	flock(h2, unix.F_RDLCK, false).ok(t, "h2 shared")
	flock(h1, unix.F_RDLCK, false).ok(t, "h1 shared too")
	flock(h1, unix.F_WRLCK, false).fails(t, "h1 upgrade while h2 shares", syscall.EAGAIN)
	done := make(chan result[*qtfsv1.ErrnoResponse], 1)
	go func() { done <- flock(h1, unix.F_WRLCK, true) }()
	time.Sleep(100 * time.Millisecond)
	flock(h2, unix.F_UNLCK, false).ok(t, "h2 unlock")
	select {
	case r := <-done:
		r.ok(t, "h1 waited for exclusive")
	case <-time.After(5 * time.Second):
		t.Fatalf("waiting flock not granted")
	}
	flock(h1, 9, false).fails(t, "bad type", syscall.EINVAL)
}
