package hostfs_test

// The escape suite: thousands of generated request paths, symlink tricks
// and a symlink swapped in under running walks, against every operation
// of the FileSystem service. Nothing outside the export may be read,
// listed, stat'ed, created, changed or removed, and every refusal must
// carry the errno the confinement rules give.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// escapeMarker is in the content, the names and the extended attributes
// of everything outside the export, and nowhere inside it: seeing it in a
// reply means the server read outside.
const escapeMarker = "QTFS_OUTSIDE_MARKER"

// escapeTree is an export full of symlink tricks, next to an outside tree
// that must stay untouched.
type escapeTree struct {
	root    string // holds exp and outside
	exp     string
	outside string
	xattrs  bool // the filesystem takes user.* extended attributes
}

func newEscapeTree(t *testing.T) *escapeTree {
	t.Helper()
	root := t.TempDir()
	et := &escapeTree{root: root, exp: filepath.Join(root, "exp"), outside: filepath.Join(root, "outside")}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Mkdir(et.outside, 0o755))
	must(os.Mkdir(filepath.Join(et.outside, "dir_"+escapeMarker), 0o755))
	for _, f := range []string{"f", "d", "secret", "target", "dir_" + escapeMarker + "/f"} {
		p := filepath.Join(et.outside, f)
		if f == "d" {
			must(os.Mkdir(p, 0o755))
			p = filepath.Join(p, "f")
		}
		must(os.WriteFile(p, []byte(escapeMarker+" secret content of "+f+"\n"), 0o644))
	}
	must(os.WriteFile(filepath.Join(root, escapeMarker), []byte(escapeMarker), 0o644))
	if err := unix.Setxattr(filepath.Join(et.outside, "secret"), "user."+escapeMarker, []byte(escapeMarker), 0); err == nil {
		et.xattrs = true
		must(unix.Setxattr(et.outside, "user."+escapeMarker, []byte(escapeMarker), 0))
	}
	et.restore(t)
	return et
}

// restore rebuilds the export's contents from scratch (the export's root
// directory itself stays: the server holds it open).
func (et *escapeTree) restore(tb testing.TB) {
	tb.Helper()
	if err := os.Mkdir(et.exp, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		tb.Fatal(err)
	}
	if err := os.Chmod(et.exp, 0o755); err != nil {
		tb.Fatal(err)
	}
	ents, err := os.ReadDir(et.exp)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(et.exp, e.Name())); err != nil {
			tb.Fatal(err)
		}
	}
	dirs := []string{"d", "d/e", "race", "race/a", "empty"}
	for _, d := range dirs {
		if err := os.Mkdir(filepath.Join(et.exp, d), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	files := map[string]string{"f": "inside f\n", "d/f": "inside d/f\n", "d/e/f": "inside d/e/f\n", "race/a/target": "inside target\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(et.exp, name), []byte(content), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	links := map[string]string{
		"abs":         et.outside,
		"abssecret":   filepath.Join(et.outside, "secret"),
		"rel":         "../outside",
		"relsecret":   "../outside/secret",
		"dotdot":      "..",
		"self":        ".",
		"loop":        "loop",
		"chain":       "chain2",
		"chain2":      "rel",
		"root":        "/",
		"procself":    "/proc/self/root",
		"procfd":      "/proc/self/fd/3",
		"dangling":    "nowhere/at/all",
		"d/up":        "../../outside",
		"d/updir":     "../..",
		"d/e/upsec":   "../../../outside/secret",
		"d/inside":    "../f",
		"race/link":   "../../outside",
		"race/target": "../../outside/target",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(et.exp, name)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(et.exp, "fifo"), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// outsideObjects are the (dev, ino) of everything a reply must never
// describe: the outside tree, the directory holding the export and its
// ancestors, the host's root directory and what it holds.
func (et *escapeTree) outsideObjects(t *testing.T) map[[2]uint64]string {
	t.Helper()
	objs := map[[2]uint64]string{}
	add := func(p string) {
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			objs[[2]uint64{st.Dev, st.Ino}] = p
		}
	}
	filepath.Walk(et.outside, func(p string, _ os.FileInfo, err error) error {
		add(p)
		return nil
	})
	add(filepath.Join(et.root, escapeMarker))
	for p := et.root; ; p = filepath.Dir(p) {
		add(p)
		if p == "/" {
			break
		}
	}
	if ents, err := os.ReadDir("/"); err == nil {
		for _, e := range ents {
			add("/" + e.Name())
		}
	}
	return objs
}

// outsideState describes everything outside the export that a request
// could change: the outside tree (modes, owners, sizes, times, content,
// extended attributes) and the listings of the directories around it.
func (et *escapeTree) outsideState(tb testing.TB) string {
	tb.Helper()
	var b strings.Builder
	describe := func(p string) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			fmt.Fprintf(&b, "%s: %v\n", p, err)
			return
		}
		fmt.Fprintf(&b, "%s mode=%o uid=%d gid=%d nlink=%d size=%d mtime=%d.%d ctime=%d.%d", p, st.Mode, st.Uid, st.Gid,
			st.Nlink, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			data, _ := os.ReadFile(p)
			sum := sha256.Sum256(data)
			fmt.Fprintf(&b, " sha=%s", hex.EncodeToString(sum[:8]))
		}
		if et.xattrs {
			buf := make([]byte, 4096)
			if n, err := unix.Llistxattr(p, buf); err == nil {
				fmt.Fprintf(&b, " xattrs=%q", buf[:n])
			}
		}
		b.WriteByte('\n')
	}
	filepath.Walk(et.outside, func(p string, _ os.FileInfo, err error) error {
		describe(p)
		return nil
	})
	describe(et.root)
	for _, dir := range []string{et.root, filepath.Dir(et.root)} {
		ents, _ := os.ReadDir(dir)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "%s: %s\n", dir, strings.Join(names, " "))
	}
	// Other processes change / and /tmp: only the names a request could
	// create there are watched.
	for _, dir := range []string{"/", "/tmp", "/etc"} {
		for _, n := range append(append([]string{"moved", "linked", "escape"}, escapeNames...), escapeComponents...) {
			if qfs.ValidName([]byte(n)) != 0 {
				continue
			}
			var st unix.Stat_t
			if unix.Lstat(filepath.Join(dir, n), &st) == nil {
				fmt.Fprintf(&b, "%s/%s exists mode=%o ctime=%d\n", dir, n, st.Mode, st.Ctim.Sec)
			}
		}
	}
	var st unix.Stat_t
	if unix.Stat("/etc/passwd", &st) == nil {
		fmt.Fprintf(&b, "/etc/passwd mode=%o ctime=%d.%d\n", st.Mode, st.Ctim.Sec, st.Ctim.Nsec)
	}
	return b.String()
}

// pathClass is what the confinement rules say about a request path,
// worked out from the tree itself one component at a time.
type pathClass struct {
	// invalid is the validator's errno (EINVAL, ENAMETOOLONG) or 0.
	invalid syscall.Errno
	// walk is the errno of walking the directories of the path: ELOOP
	// when one of them is a symlink (the server never follows one),
	// ENOENT when one is missing, ENOTDIR when one is no directory.
	walk syscall.Errno
	// link is true when the path's last name is a symlink.
	link bool
}

// classify classifies the directory dir plus the last name (nil name:
// dir is the whole path, its last component being the name).
func (et *escapeTree) classify(dir, name []byte, full bool) pathClass {
	var c pathClass
	if full {
		if c.invalid = qfs.ValidPath(dir); c.invalid != 0 {
			return c
		}
		if len(dir) == 0 {
			return c
		}
		dir, name = qfs.SplitPath(dir)
	} else {
		if c.invalid = qfs.ValidPath(dir); c.invalid == 0 {
			c.invalid = qfs.ValidName(name)
		}
		if c.invalid != 0 {
			return c
		}
	}
	cur := et.exp
	if len(dir) > 0 {
		for _, comp := range strings.Split(string(dir), "/") {
			cur = filepath.Join(cur, comp)
			var st unix.Stat_t
			if err := unix.Lstat(cur, &st); err != nil {
				c.walk = err.(syscall.Errno)
				return c
			}
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFLNK:
				c.walk = syscall.ELOOP
				return c
			case unix.S_IFDIR:
			default:
				c.walk = syscall.ENOTDIR
				return c
			}
		}
	}
	var st unix.Stat_t
	if unix.Lstat(filepath.Join(cur, string(name)), &st) == nil {
		c.link = st.Mode&unix.S_IFMT == unix.S_IFLNK
	}
	return c
}

// anyErrno says the rules leave the outcome to the operation (success or
// an ordinary errno).
const anyErrno = syscall.Errno(1 << 20)

// want is the errno a request with these paths must get, or anyErrno.
func (c pathClass) want() syscall.Errno {
	switch {
	case c.invalid != 0:
		return c.invalid
	case c.walk != 0:
		return c.walk
	}
	return anyErrno
}

// escapeChecker looks at every reply for signs of an access outside.
type escapeChecker struct {
	t       *testing.T
	outside map[[2]uint64]string
}

func (ck *escapeChecker) attr(what string, a *qtfsv1.Attr) {
	if a == nil {
		return
	}
	if p, ok := ck.outside[[2]uint64{a.GetDev(), a.GetIno()}]; ok {
		ck.t.Fatalf("%s: reply describes %s, outside the export", what, p)
	}
}

func (ck *escapeChecker) data(what string, b []byte) {
	if bytes.Contains(b, []byte(escapeMarker)) {
		ck.t.Fatalf("%s: reply carries data from outside the export: %q", what, b)
	}
}

// escapeOp is one request built from generated paths.
type escapeOp struct {
	name string
	// mutates says a success changed the export (it is rebuilt after).
	mutates bool
	// class is the classification the errno is held to.
	class func(dir, name []byte) pathClass
	// extra is a further errno the rules fix for this operation when the
	// path is valid and walkable, or 0: Open and Create of a symlink are
	// ELOOP (the server never follows the last name either).
	extra func(c pathClass) syscall.Errno
	call  func(ctx context.Context, dir, name []byte) (int32, error)
}

// escapeOps are every FileSystem operation that takes a path or a name,
// plus the handle operations on whatever a successful open returned.
func escapeOps(et *escapeTree, c qtfsv1.FileSystemClient, m uint64, ck *escapeChecker) []escapeOp {
	caller := &qtfsv1.Caller{}
	byName := func(dir, name []byte) pathClass { return et.classify(dir, name, false) }
	byPath := func(dir, name []byte) pathClass { return et.classify(qfs.JoinPath(dir, name), nil, true) }
	loopIfLink := func(c pathClass) syscall.Errno {
		if c.link {
			return syscall.ELOOP
		}
		return 0
	}
	// open(2) with O_DIRECTORY|O_NOFOLLOW of a symlink is ENOTDIR.
	notDirIfLink := func(c pathClass) syscall.Errno {
		if c.link {
			return syscall.ENOTDIR
		}
		return 0
	}
	// useHandle exercises an open handle and releases it.
	useHandle := func(ctx context.Context, what string, h uint64) {
		if h == 0 {
			return
		}
		defer c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h})
		if r, err := c.Getattr(ctx, &qtfsv1.GetattrRequest{Handle: h}); err == nil {
			ck.attr(what+" fstat", r.GetAttr())
		}
		if r, err := c.Read(ctx, &qtfsv1.ReadRequest{Handle: h, Size: 4096}); err == nil {
			ck.data(what+" read", r.GetData())
		}
		if r, err := c.Readdir(ctx, &qtfsv1.ReaddirRequest{Handle: h, MaxEntries: 64, Plus: true}); err == nil {
			for _, e := range r.GetEntries() {
				ck.data(what+" readdir", e.GetName())
				ck.attr(what+" readdir "+string(e.GetName()), e.GetAttr())
			}
		}
	}
	full := func(dir, name []byte) []byte { return qfs.JoinPath(dir, name) }
	return []escapeOp{
		{name: "Lookup", class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: caller, Path: dir, Name: name})
			ck.attr("Lookup", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Getattr", class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: m, Caller: caller, Path: full(dir, name)})
			ck.attr("Getattr", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Setattr", mutates: true, class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_MODE | qtfsv1.SetattrValid_SETATTR_VALID_MTIME_NOW), Mode: 0o777})
			ck.attr("Setattr", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Truncate", mutates: true, class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_SIZE | qtfsv1.SetattrValid_SETATTR_VALID_UID), Size: 1, Uid: 12345})
			ck.attr("Truncate", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Readlink", class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Readlink(ctx, &qtfsv1.ReadlinkRequest{Mount: m, Caller: caller, Path: full(dir, name)})
			return r.GetErrno(), err
		}},
		{name: "Symlink", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Symlink(ctx, &qtfsv1.SymlinkRequest{Mount: m, Caller: caller, Path: dir, Name: name, Target: []byte("/etc/passwd")})
			ck.attr("Symlink", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Mknod", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Mknod(ctx, &qtfsv1.MknodRequest{Mount: m, Caller: caller, Path: dir, Name: name, Mode: unix.S_IFREG | 0o644})
			ck.attr("Mknod", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Mkdir", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: m, Caller: caller, Path: dir, Name: name, Mode: 0o755})
			ck.attr("Mkdir", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Unlink", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Unlink(ctx, &qtfsv1.UnlinkRequest{Mount: m, Caller: caller, Path: dir, Name: name})
			return r.GetErrno(), err
		}},
		{name: "Rmdir", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Rmdir(ctx, &qtfsv1.RmdirRequest{Mount: m, Caller: caller, Path: dir, Name: name})
			return r.GetErrno(), err
		}},
		{name: "RenameFrom", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Rename(ctx, &qtfsv1.RenameRequest{Mount: m, Caller: caller, OldPath: dir, OldName: name,
				NewPath: []byte("empty"), NewName: []byte("moved")})
			return r.GetErrno(), err
		}},
		{name: "RenameTo", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Rename(ctx, &qtfsv1.RenameRequest{Mount: m, Caller: caller, OldPath: nil, OldName: []byte("f"),
				NewPath: dir, NewName: name})
			return r.GetErrno(), err
		}},
		{name: "RenameExchange", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Rename(ctx, &qtfsv1.RenameRequest{Mount: m, Caller: caller, OldPath: []byte("d"), OldName: []byte("f"),
				NewPath: dir, NewName: name, Flags: unix.RENAME_EXCHANGE})
			return r.GetErrno(), err
		}},
		{name: "LinkFrom", mutates: true, class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Link(ctx, &qtfsv1.LinkRequest{Mount: m, Caller: caller, Path: full(dir, name),
				NewPath: []byte("empty"), NewName: []byte("linked")})
			ck.attr("LinkFrom", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "LinkTo", mutates: true, class: byName, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Link(ctx, &qtfsv1.LinkRequest{Mount: m, Caller: caller, Path: []byte("f"), NewPath: dir, NewName: name})
			ck.attr("LinkTo", r.GetAttr())
			return r.GetErrno(), err
		}},
		{name: "Open", mutates: true, class: byPath, extra: loopIfLink, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Flags: unix.O_RDONLY | unix.O_NONBLOCK, ReadInline: 4096})
			ck.attr("Open", r.GetAttr())
			ck.data("Open inline", r.GetInlineData())
			useHandle(ctx, "Open", r.GetHandle())
			return r.GetErrno(), err
		}},
		{name: "OpenWrite", mutates: true, class: byPath, extra: loopIfLink, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Flags: unix.O_WRONLY | unix.O_TRUNC | unix.O_NONBLOCK})
			ck.attr("OpenWrite", r.GetAttr())
			if h := r.GetHandle(); h != 0 {
				c.Write(ctx, &qtfsv1.WriteRequest{Handle: h, Data: []byte("written")})
				c.Fsync(ctx, &qtfsv1.FsyncRequest{Handle: h})
				useHandle(ctx, "OpenWrite", h)
			}
			return r.GetErrno(), err
		}},
		{name: "OpenDir", class: byPath, extra: notDirIfLink, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Flags: unix.O_RDONLY | unix.O_DIRECTORY})
			ck.attr("OpenDir", r.GetAttr())
			useHandle(ctx, "OpenDir", r.GetHandle())
			return r.GetErrno(), err
		}},
		{name: "Create", mutates: true, class: byName, extra: loopIfLink, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Create(ctx, &qtfsv1.CreateRequest{Mount: m, Caller: caller, Path: dir, Name: name,
				Flags: unix.O_RDWR | unix.O_TRUNC, Mode: 0o644})
			ck.attr("Create", r.GetAttr())
			if h := r.GetHandle(); h != 0 {
				c.Write(ctx, &qtfsv1.WriteRequest{Handle: h, Data: []byte("created")})
				useHandle(ctx, "Create", h)
			}
			return r.GetErrno(), err
		}},
		{name: "Statfs", class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Statfs(ctx, &qtfsv1.StatfsRequest{Mount: m, Caller: caller, Path: full(dir, name)})
			return r.GetErrno(), err
		}},
		{name: "Getxattr", class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Getxattr(ctx, &qtfsv1.GetxattrRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Name: []byte("user." + escapeMarker), Size: 4096})
			ck.data("Getxattr", r.GetValue())
			return r.GetErrno(), err
		}},
		{name: "Listxattr", class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Listxattr(ctx, &qtfsv1.ListxattrRequest{Mount: m, Caller: caller, Path: full(dir, name), Size: 4096})
			ck.data("Listxattr", r.GetNames())
			return r.GetErrno(), err
		}},
		{name: "Setxattr", mutates: true, class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Name: []byte("user.escape"), Value: []byte("x")})
			return r.GetErrno(), err
		}},
		{name: "Removexattr", mutates: true, class: byPath, call: func(ctx context.Context, dir, name []byte) (int32, error) {
			r, err := c.Removexattr(ctx, &qtfsv1.RemovexattrRequest{Mount: m, Caller: caller, Path: full(dir, name),
				Name: []byte("user." + escapeMarker)})
			return r.GetErrno(), err
		}},
	}
}

// escapeComponents are the path components paths are generated from:
// directories, files, every kind of symlink trick, and invalid names.
var escapeComponents = []string{
	"d", "e", "f", "race", "a", "empty", "fifo", "missing",
	"abs", "abssecret", "rel", "relsecret", "dotdot", "self", "loop", "chain", "root", "procself", "procfd",
	"dangling", "up", "updir", "upsec", "inside", "link", "target",
	"..", ".", "", "x\x00y", "a/b", strings.Repeat("n", 256), escapeMarker, "outside", "secret",
}

// generatePaths returns every directory path of at most two components,
// and n more random ones of up to five (some with doubled or trailing
// slashes), deterministically.
func generatePaths(n int) [][]byte {
	seen := map[string]bool{}
	var out [][]byte
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, []byte(p))
		}
	}
	add("")
	for _, a := range escapeComponents {
		add(a)
		for _, b := range escapeComponents {
			add(a + "/" + b)
		}
	}
	r := rand.New(rand.NewPCG(7, 11))
	for len(out) < len(escapeComponents)*len(escapeComponents)+n {
		depth := 1 + r.IntN(5)
		parts := make([]string, depth)
		for i := range parts {
			parts[i] = escapeComponents[r.IntN(len(escapeComponents))]
		}
		p := strings.Join(parts, "/")
		switch r.IntN(10) {
		case 0:
			p = "/" + p
		case 1:
			p += "/"
		case 2:
			p = strings.Replace(p, "/", "//", 1)
		}
		add(p)
	}
	return out
}

var escapeNames = []string{"f", "secret", "abs", "up", "new", "target", ".."}

func newEscapeServer(t *testing.T, exports ...hostfs.Export) *hostfs.Server {
	t.Helper()
	s, err := hostfs.New(hostfs.Options{Exports: exports, Logger: zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		if n := s.OpenHandles(); n != 0 {
			t.Errorf("%d handles open after Close", n)
		}
	})
	return s
}

func mountDirect(t *testing.T, s *hostfs.Server, path string) (*hostfs.DirectClient, uint64) {
	t.Helper()
	c := s.DirectClient()
	t.Cleanup(func() { c.Close() })
	ctx := t.Context()
	if _, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(path), Caller: &qtfsv1.Caller{}})
	if err != nil || r.GetErrno() != 0 {
		t.Fatalf("mount %s: %v %v", path, r, err)
	}
	return c, r.GetMount()
}

// TestEscapeGeneratedPaths runs every operation on thousands of generated
// paths. No reply may describe or carry anything from outside the export,
// the outside must not change, and a path that is invalid, or that walks
// through a symlink, a missing entry or a non-directory, must be refused
// with EINVAL / ENAMETOOLONG, ELOOP, ENOENT or ENOTDIR respectively.
func TestEscapeGeneratedPaths(t *testing.T) {
	et := newEscapeTree(t)
	s := newEscapeServer(t, hostfs.Export{Path: et.exp})
	c, m := mountDirect(t, s, et.exp)
	ck := &escapeChecker{t: t, outside: et.outsideObjects(t)}
	ops := escapeOps(et, c, m, ck)
	before := et.outsideState(t)
	n := 1500
	if testing.Short() {
		n = 200
	}
	paths := generatePaths(n)
	ctx := t.Context()
	var requests, refused, rebuilt int
	errnos := map[string]int{}
	for _, dir := range paths {
		for _, name := range escapeNames {
			for _, op := range ops {
				cls := op.class(dir, []byte(name))
				want := cls.want()
				if want == anyErrno && op.extra != nil {
					if e := op.extra(cls); e != 0 {
						want = e
					}
				}
				got, err := op.call(ctx, dir, []byte(name))
				requests++
				if err != nil {
					t.Fatalf("%s(%q, %q): rpc error %v", op.name, dir, name, err)
				}
				errnos[unix.ErrnoName(syscall.Errno(got))]++
				if want != anyErrno && syscall.Errno(got) != want {
					t.Fatalf("%s(%q, %q): errno %d (%v), want %d (%v)", op.name, dir, name, got, syscall.Errno(got), want, want)
				}
				if got != 0 {
					refused++
				}
				if got == 0 && op.mutates {
					et.restore(t)
					rebuilt++
				}
			}
		}
		if after := et.outsideState(t); after != before {
			t.Fatalf("requests on %q changed the host outside the export:\nbefore:\n%s\nafter:\n%s", dir, before, after)
		}
	}
	if errnos["ELOOP"] == 0 || errnos["EINVAL"] == 0 || errnos[""] == 0 {
		t.Fatalf("the generated paths did not exercise the rules: errnos %v", errnos)
	}
	t.Logf("%d paths x %d names x %d operations: %d requests, %d refused, export rebuilt %d times; errnos %v",
		len(paths), len(escapeNames), len(ops), requests, refused, rebuilt, errnos)
}

// TestEscapeSymlinkRace swaps a symlink to the outside in for a directory
// of the export (renameat2 RENAME_EXCHANGE), over and over, while
// requests walk through that directory: each walk sees either the
// directory or the symlink, never the outside.
func TestEscapeSymlinkRace(t *testing.T) {
	et := newEscapeTree(t)
	s := newEscapeServer(t, hostfs.Export{Path: et.exp})
	ck := &escapeChecker{t: t, outside: et.outsideObjects(t)}
	before := et.outsideState(t)
	dirA, link := filepath.Join(et.exp, "race/a"), filepath.Join(et.exp, "race/link")

	dur := 3 * time.Second
	if testing.Short() {
		dur = 500 * time.Millisecond
	}
	stop := make(chan struct{})
	var swaps atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := unix.Renameat2(unix.AT_FDCWD, dirA, unix.AT_FDCWD, link, unix.RENAME_EXCHANGE); err != nil {
				t.Errorf("swap: %v", err)
				return
			}
			swaps.Add(1)
		}
	}()

	type result struct {
		ok, refused map[string]int
	}
	const workers = 4
	results := make([]result, workers)
	var mu sync.Mutex
	var failure string
	fail := func(format string, args ...any) {
		mu.Lock()
		if failure == "" {
			failure = fmt.Sprintf(format, args...)
		}
		mu.Unlock()
	}
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, m := mountDirect(t, s, et.exp)
			ctx := context.Background()
			res := result{ok: map[string]int{}, refused: map[string]int{}}
			defer func() { results[w] = res }()
			caller := &qtfsv1.Caller{}
			count := func(op string, errno int32) {
				if errno == 0 {
					res.ok[op]++
					return
				}
				res.refused[op]++
				switch syscall.Errno(errno) {
				case syscall.ELOOP, syscall.ENOENT, syscall.ENOTDIR, syscall.EXDEV, syscall.EEXIST, syscall.ENOTEMPTY, syscall.EISDIR:
				default:
					fail("%s: errno %v during the race", op, syscall.Errno(errno))
				}
			}
			check := func(what string, a *qtfsv1.Attr) {
				if a == nil {
					return
				}
				if p, ok := ck.outside[[2]uint64{a.GetDev(), a.GetIno()}]; ok {
					fail("%s: reply describes %s, outside the export", what, p)
				}
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				name := []byte("n" + strconv.Itoa(w) + "_" + strconv.Itoa(i))
				switch i % 9 {
				case 0:
					r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: caller, Path: []byte("race/a/target"),
						Flags: unix.O_RDWR, ReadInline: 4096})
					if err != nil {
						fail("Open: %v", err)
						return
					}
					if bytes.Contains(r.GetInlineData(), []byte(escapeMarker)) {
						fail("Open read outside: %q", r.GetInlineData())
					}
					check("Open", r.GetAttr())
					if h := r.GetHandle(); h != 0 {
						rr, _ := c.Read(ctx, &qtfsv1.ReadRequest{Handle: h, Size: 4096})
						if bytes.Contains(rr.GetData(), []byte(escapeMarker)) {
							fail("Read outside: %q", rr.GetData())
						}
						c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h})
					}
					count("Open", r.GetErrno())
				case 1:
					r, err := c.Create(ctx, &qtfsv1.CreateRequest{Mount: m, Caller: caller, Path: []byte("race/a"),
						Name: name, Flags: unix.O_WRONLY, Mode: 0o644})
					if err != nil {
						fail("Create: %v", err)
						return
					}
					if h := r.GetHandle(); h != 0 {
						c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h})
					}
					count("Create", r.GetErrno())
				case 2:
					r, err := c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: caller, Path: []byte("race/a/target"),
						Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_MODE), Mode: 0o600})
					if err != nil {
						fail("Setattr: %v", err)
						return
					}
					check("Setattr", r.GetAttr())
					count("Setattr", r.GetErrno())
				case 3:
					r, err := c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: m, Caller: caller, Path: []byte("race/a"), Name: name, Mode: 0o755})
					if err != nil {
						fail("Mkdir: %v", err)
						return
					}
					count("Mkdir", r.GetErrno())
				case 4:
					r, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: caller, Path: []byte("race/a"), Name: []byte("target")})
					if err != nil {
						fail("Lookup: %v", err)
						return
					}
					check("Lookup", r.GetAttr())
					count("Lookup", r.GetErrno())
				case 5:
					r, err := c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: m, Caller: caller, Path: []byte("race/a/target"),
						Name: []byte("user.race"), Value: []byte("x")})
					if err != nil {
						fail("Setxattr: %v", err)
						return
					}
					if syscall.Errno(r.GetErrno()) != syscall.EOPNOTSUPP {
						count("Setxattr", r.GetErrno())
					}
				case 6:
					r, err := c.Rename(ctx, &qtfsv1.RenameRequest{Mount: m, Caller: caller, OldPath: []byte("race/a"), OldName: []byte("target"),
						NewPath: []byte("race/a"), NewName: []byte("target")})
					if err != nil {
						fail("Rename: %v", err)
						return
					}
					count("Rename", r.GetErrno())
				case 7:
					r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: caller, Path: []byte("race/a"), Flags: unix.O_RDONLY | unix.O_DIRECTORY})
					if err != nil {
						fail("Opendir: %v", err)
						return
					}
					if h := r.GetHandle(); h != 0 {
						rr, _ := c.Readdir(ctx, &qtfsv1.ReaddirRequest{Handle: h, MaxEntries: 256, Plus: true})
						for _, e := range rr.GetEntries() {
							if bytes.Contains(e.GetName(), []byte(escapeMarker)) || string(e.GetName()) == "secret" {
								fail("Readdir listed the outside: %q", e.GetName())
							}
							check("Readdir", e.GetAttr())
						}
						c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h})
					}
					count("Opendir", r.GetErrno())
				case 8:
					r, err := c.Unlink(ctx, &qtfsv1.UnlinkRequest{Mount: m, Caller: caller, Path: []byte("race/a"), Name: name})
					if err != nil {
						fail("Unlink: %v", err)
						return
					}
					if syscall.Errno(r.GetErrno()) != syscall.ENOENT {
						count("Unlink", r.GetErrno())
					}
				}
			}
		}()
	}
	time.Sleep(dur)
	close(stop)
	wg.Wait()
	if failure != "" {
		t.Fatal(failure)
	}
	ok, refused := map[string]int{}, map[string]int{}
	for _, r := range results {
		for k, v := range r.ok {
			ok[k] += v
		}
		for k, v := range r.refused {
			refused[k] += v
		}
	}
	if after := et.outsideState(t); after != before {
		t.Fatalf("the race changed the host outside the export:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Both outcomes must have happened, or the race proved nothing.
	if ok["Open"] == 0 || refused["Open"] == 0 || ok["Lookup"] == 0 || refused["Lookup"] == 0 {
		t.Fatalf("the swap never raced the walks: ok %v refused %v", ok, refused)
	}
	t.Logf("%d swaps; succeeded %v; refused %v", swaps.Load(), ok, refused)
}

// TestEscapeProcMagicLinks exports /proc: its symlinks and magic links
// (/proc/self, /proc/<pid>/root, cwd, exe, fd/N) lead anywhere on the
// host, so walking through any of them is ELOOP, and opening one is ELOOP
// too; reading their text (Readlink) is allowed.
func TestEscapeProcMagicLinks(t *testing.T) {
	et := newEscapeTree(t)
	secret, err := os.Open(filepath.Join(et.outside, "secret"))
	if err != nil {
		t.Fatal(err)
	}
	defer secret.Close()
	s := newEscapeServer(t, hostfs.Export{Path: "/proc", ReadOnly: true})
	c, m := mountDirect(t, s, "/proc")
	ck := &escapeChecker{t: t, outside: et.outsideObjects(t)}
	ctx := t.Context()
	me := strconv.Itoa(os.Getpid())
	fd := strconv.Itoa(int(secret.Fd()))
	outsideRel := strings.TrimPrefix(filepath.Join(et.outside, "secret"), "/")
	tests := []struct {
		path string
		want syscall.Errno // for Open of the path, and Getattr/Lookup walks through it
	}{
		{"self", syscall.ELOOP},
		{"thread-self", syscall.ELOOP},
		{"self/root", syscall.ELOOP},
		{"self/root/" + outsideRel, syscall.ELOOP},
		{me + "/root", syscall.ELOOP},
		{me + "/root/" + outsideRel, syscall.ELOOP},
		{me + "/cwd", syscall.ELOOP},
		{me + "/cwd/" + escapeMarker, syscall.ELOOP},
		{me + "/exe", syscall.ELOOP},
		{me + "/fd/" + fd, syscall.ELOOP},
		{me + "/task/" + me + "/fd/" + fd, syscall.ELOOP},
		{me + "/map_files", 0},
		{"1/root", syscall.ELOOP},
		{"1/root/etc", syscall.ELOOP},
		{"mounts", syscall.ELOOP},
		{"net", syscall.ELOOP},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.path, "/", "_"), func(t *testing.T) {
			p := []byte(tc.path)
			r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: &qtfsv1.Caller{}, Path: p, Flags: unix.O_RDONLY, ReadInline: 4096})
			if err != nil {
				t.Fatal(err)
			}
			ck.data("Open", r.GetInlineData())
			if h := r.GetHandle(); h != 0 {
				c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: h})
			}
			if tc.want != 0 && syscall.Errno(r.GetErrno()) != tc.want {
				t.Fatalf("Open(%s): errno %v, want %v", tc.path, syscall.Errno(r.GetErrno()), tc.want)
			}
			// Walking through the link (it as a directory) is refused.
			dir, name := p, []byte("x")
			lr, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: &qtfsv1.Caller{}, Path: dir, Name: name})
			if err != nil {
				t.Fatal(err)
			}
			ck.attr("Lookup", lr.GetAttr())
			if e := syscall.Errno(lr.GetErrno()); tc.want != 0 && e != tc.want {
				t.Fatalf("Lookup(%s, x): errno %v, want %v", tc.path, e, tc.want)
			}
			ga, err := c.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: m, Caller: &qtfsv1.Caller{}, Path: p})
			if err != nil {
				t.Fatal(err)
			}
			ck.attr("Getattr", ga.GetAttr())
			// Write attempts on a read-only export are EROFS at most.
			w, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: &qtfsv1.Caller{}, Path: p, Flags: unix.O_WRONLY})
			if err != nil {
				t.Fatal(err)
			}
			if w.GetErrno() == 0 {
				c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: w.GetHandle()})
				t.Fatalf("Open(%s, O_WRONLY) on a read-only export succeeded", tc.path)
			}
		})
	}
	// A Mount rooted at a magic link is refused the same way.
	for _, p := range []string{"/proc/self", "/proc/self/root", "/proc/" + me + "/root", "/proc/" + me + "/cwd", "/proc/" + me + "/fd/" + fd} {
		r, err := c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(p), Caller: &qtfsv1.Caller{}})
		if err != nil {
			t.Fatal(err)
		}
		ck.attr("Mount "+p, r.GetRoot())
		if e := syscall.Errno(r.GetErrno()); e != syscall.ELOOP && e != syscall.ENOTDIR {
			t.Fatalf("Mount(%s): errno %v, want ELOOP (or ENOTDIR)", p, e)
		}
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("context ended early")
	}
}
