package contract

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Export is a host directory the server under test must export.
type Export struct {
	Path     string
	ReadOnly bool
}

// Server is a started implementation under test.
type Server struct {
	// Dial opens a new session (a new connection) to the server. end
	// closes it; the server must then release what the session held.
	Dial func(t *testing.T) (c qtfsv1.FileSystemClient, end func())
	// OpenHandles reports the handles open on the server across all
	// sessions; nil skips the leak checks.
	OpenHandles func() int
	// Sessions reports the live sessions; nil skips those checks.
	Sessions func() int
}

// Factory starts the implementation under test, exporting exactly exports,
// and stops it in t.Cleanup.
type Factory func(t *testing.T, exports []Export) Server

// rootCaller is the DPU's root.
var rootCaller = &qtfsv1.Caller{Uid: 0, Gid: 0, Pid: 1}

// suite is the state shared by the subtests of one Run.
type suite struct {
	srv     Server
	c       qtfsv1.FileSystemClient
	root    string // host directory holding everything below
	rw      string // host path of the read-write export
	ro      string // host path of the read-only export
	outside string // host directory no export contains
	mrw     uint64 // mount of rw
	mro     uint64 // mount of ro
	hs      *qtfsv1.HandshakeResponse
}

// Run runs the contract suite against the implementation start builds.
func Run(t *testing.T, start Factory) {
	root := t.TempDir()
	s := &suite{
		root:    root,
		rw:      filepath.Join(root, "rw"),
		ro:      filepath.Join(root, "ro"),
		outside: filepath.Join(root, "outside"),
	}
	for _, d := range []string{s.rw, s.ro, s.outside} {
		mustHost(t, os.Mkdir(d, 0o755))
		mustHost(t, os.Chmod(d, 0o755))
	}
	// The temp root is 0700: uid 1000 must still reach the exports, which
	// the server opens as itself.
	mustHost(t, os.Chmod(root, 0o755))
	mustHost(t, os.WriteFile(filepath.Join(s.outside, "secret"), []byte("secret\n"), 0o644))
	mustHost(t, os.WriteFile(filepath.Join(s.ro, "file"), []byte("read only\n"), 0o644))
	mustHost(t, os.Mkdir(filepath.Join(s.ro, "dir"), 0o755))
	mustHost(t, os.WriteFile(filepath.Join(s.ro, "dir", "inner"), []byte("x"), 0o644))
	mustHost(t, os.Symlink("file", filepath.Join(s.ro, "link")))

	s.srv = start(t, []Export{{Path: s.rw}, {Path: s.ro, ReadOnly: true}})
	c, end := s.srv.Dial(t)
	t.Cleanup(end)
	s.c = c
	ctx := t.Context()
	hs, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1, Client: "contract"})
	if err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	s.hs = hs
	s.mrw = call(c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(s.rw), Caller: rootCaller})).ok(t, "mount rw").GetMount()
	s.mro = call(c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(s.ro), Caller: rootCaller})).ok(t, "mount ro").GetMount()

	for _, tc := range []struct {
		name string
		fn   func(*env)
	}{
		{"Handshake", testHandshake},
		{"NoHandshake", testNoHandshake},
		{"Mount", testMount},
		{"Lookup", testLookup},
		{"InvalidPaths", testInvalidPaths},
		{"Symlinks", testSymlinks},
		{"Getattr", testGetattr},
		{"Setattr", testSetattr},
		{"Readlink", testReadlink},
		{"Symlink", testSymlink},
		{"Mknod", testMknod},
		{"Mkdir", testMkdir},
		{"Unlink", testUnlink},
		{"Rmdir", testRmdir},
		{"Rename", testRename},
		{"Link", testLink},
		{"Open", testOpen},
		{"Create", testCreate},
		{"ReadWrite", testReadWrite},
		{"FlushFsync", testFlushFsync},
		{"Release", testRelease},
		{"Unlinked", testUnlinked},
		{"Readdir", testReaddir},
		{"Statfs", testStatfs},
		{"Mounts", testMounts},
		{"Xattr", testXattr},
		{"ACL", testACL},
		{"Fallocate", testFallocate},
		{"Lseek", testLseek},
		{"CopyFileRange", testCopyFileRange},
		{"Locks", testLocks},
		{"Flock", testFlock},
		{"ReadOnlyExport", testReadOnly},
		{"Caller", testCaller},
		{"SessionEnd", testSessionEnd},
		{"HandshakeResets", testHandshakeResets},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(s.newEnv(t)) })
	}
}

// env is one subtest's view: a fresh directory in the rw export.
type env struct {
	*suite
	t    *testing.T
	dir  string // the directory, relative to the rw mount
	host string // its host path
}

func (s *suite) newEnv(t *testing.T) *env {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	name = name[strings.LastIndexByte(name, '_')+1:]
	e := &env{suite: s, t: t, dir: name, host: filepath.Join(s.rw, name)}
	mustHost(t, os.Mkdir(e.host, 0o755))
	mustHost(t, os.Chmod(e.host, 0o755))
	// Registered first, so it runs after the subtest's own cleanups.
	if s.srv.OpenHandles != nil {
		base := s.srv.OpenHandles()
		t.Cleanup(func() { s.checkNoHandles(t, base) })
	}
	return e
}

// checkNoHandles fails t when the server holds more handles than base,
// the count before the test.
func (s *suite) checkNoHandles(t *testing.T, base int) {
	if !waitFor(2*time.Second, func() bool { return s.srv.OpenHandles() <= base }) {
		t.Errorf("%d handles open on the server after the test, %d before (leak)", s.srv.OpenHandles(), base)
	}
}

func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) ctx() context.Context { return e.t.Context() }

// p returns the wire path of names inside the test directory.
func (e *env) p(names ...string) []byte {
	return []byte(strings.Join(append([]string{e.dir}, names...), "/"))
}

// hp returns the host path of names inside the test directory.
func (e *env) hp(names ...string) string {
	return filepath.Join(append([]string{e.host}, names...)...)
}

// write creates a host file in the test directory.
func (e *env) write(name, content string) {
	e.t.Helper()
	mustHost(e.t, os.WriteFile(e.hp(name), []byte(content), 0o644))
}

func (e *env) mkdir(name string) {
	e.t.Helper()
	mustHost(e.t, os.Mkdir(e.hp(name), 0o755))
}

func (e *env) symlink(target, name string) {
	e.t.Helper()
	mustHost(e.t, os.Symlink(target, e.hp(name)))
}

// lstat stats a host path without following it.
func (e *env) lstat(name string) unix.Stat_t {
	e.t.Helper()
	var st unix.Stat_t
	mustHost(e.t, unix.Lstat(e.hp(name), &st))
	return st
}

func (e *env) exists(name string) bool {
	_, err := os.Lstat(e.hp(name))
	return err == nil
}

func (e *env) readHost(name string) string {
	e.t.Helper()
	b, err := os.ReadFile(e.hp(name))
	mustHost(e.t, err)
	return string(b)
}

// open opens path on mount m and releases the handle at cleanup.
func (e *env) open(m uint64, path []byte, flags int) *qtfsv1.OpenResponse {
	e.t.Helper()
	r := call(e.c.Open(e.ctx(), &qtfsv1.OpenRequest{Mount: m, Caller: rootCaller, Path: path, Flags: uint32(flags)})).
		ok(e.t, "open "+string(path))
	e.releaseLater(r.GetHandle())
	return r
}

// releaseLater releases handle h at cleanup, if the test has not.
func (e *env) releaseLater(h uint64) {
	e.t.Cleanup(func() {
		_, _ = e.c.Release(context.Background(), &qtfsv1.ReleaseRequest{Handle: h})
	})
}

// release releases h and expects success.
func (e *env) release(h uint64) {
	e.t.Helper()
	call(e.c.Release(e.ctx(), &qtfsv1.ReleaseRequest{Handle: h})).ok(e.t, "release")
}

func (e *env) lookup(path []byte, name string) *qtfsv1.EntryResponse {
	e.t.Helper()
	return call(e.c.Lookup(e.ctx(), &qtfsv1.LookupRequest{Mount: e.mrw, Caller: rootCaller, Path: path, Name: []byte(name)})).
		ok(e.t, "lookup "+name)
}

func mustHost(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("host setup: %v", err)
	}
}

// errnoReply is what every FileSystem reply has.
type errnoReply interface{ GetErrno() int32 }

// result is an rpc's reply and error, to be checked.
type result[R errnoReply] struct {
	r   R
	err error
}

func call[R errnoReply](r R, err error) result[R] { return result[R]{r, err} }

// ok fails t unless the call succeeded with errno 0, and returns the reply.
func (x result[R]) ok(t *testing.T, what string) R {
	t.Helper()
	if x.err != nil {
		t.Fatalf("%s: rpc error: %v", what, x.err)
	}
	if e := x.r.GetErrno(); e != 0 {
		t.Fatalf("%s: errno %s, want success", what, errName(e))
	}
	return x.r
}

// fails fails t unless the call returned one of the errnos want.
func (x result[R]) fails(t *testing.T, what string, want ...syscall.Errno) {
	t.Helper()
	if x.err != nil {
		t.Fatalf("%s: rpc error %v, want errno %s", what, x.err, errNames(want))
	}
	got := x.r.GetErrno()
	for _, w := range want {
		if got == int32(w) {
			return
		}
	}
	t.Fatalf("%s: errno %s, want %s", what, errName(got), errNames(want))
}

// code fails t unless the call failed with gRPC status code c.
func (x result[R]) code(t *testing.T, what string, c codes.Code) {
	t.Helper()
	if status.Code(x.err) != c {
		t.Fatalf("%s: got error %v (reply %v), want status %v", what, x.err, x.r, c)
	}
}

func errName(e int32) string {
	if e == 0 {
		return "0"
	}
	if n := unix.ErrnoName(syscall.Errno(e)); n != "" {
		return n
	}
	return syscall.Errno(e).Error()
}

func errNames(es []syscall.Errno) string {
	var ns []string
	for _, e := range es {
		ns = append(ns, errName(int32(e)))
	}
	return strings.Join(ns, " or ")
}

// snapshot lists a host tree (names, types, sizes, modes), never following
// symlinks, to check that nothing in it changed.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(p)
		b.WriteString(" " + fi.Mode().String())
		if fi.Mode().IsRegular() {
			b.WriteString(" " + strconv.FormatInt(fi.Size(), 10))
		}
		b.WriteByte('\n')
		return nil
	})
	mustHost(t, err)
	return b.String()
}

// isRoot reports whether the suite may act as other users.
func isRoot() bool { return os.Geteuid() == 0 }
