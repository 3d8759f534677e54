package hostfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// fuzzTree is an export with escape bait beside a directory no request
// may touch.
type fuzzTree struct {
	root    string // holds exp and outside
	exp     string
	outside string
}

func newFuzzTree(f *testing.F) *fuzzTree {
	root := f.TempDir()
	ft := &fuzzTree{root: root, exp: filepath.Join(root, "exp"), outside: filepath.Join(root, "outside")}
	for _, d := range []string{ft.exp, ft.outside, filepath.Join(ft.exp, "d"), filepath.Join(ft.exp, "d", "e")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			f.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ft.outside, "secret"), []byte("s"), 0o600); err != nil {
		f.Fatal(err)
	}
	ft.restore(f)
	return ft
}

// restore puts back the fixtures inside the export that a request may
// have removed or moved.
func (ft *fuzzTree) restore(tb testing.TB) {
	for _, d := range []string{"d", "d/e"} {
		if err := os.Mkdir(filepath.Join(ft.exp, d), 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			tb.Fatal(err)
		}
	}
	for name, target := range map[string]string{"esc": "/", "up": "../..", "out": ft.outside, "d/back": "../.."} {
		if err := os.Symlink(target, filepath.Join(ft.exp, name)); err != nil && !errors.Is(err, os.ErrExist) {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ft.exp, "f"), []byte("f"), 0o644); err != nil {
		tb.Fatal(err)
	}
}

// outsideState lists everything a request must never change: the tree
// beside the export, the directory holding both, and the host's root.
func (ft *fuzzTree) outsideState(tb testing.TB) string {
	var b strings.Builder
	err := filepath.Walk(ft.outside, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		b.WriteString(p + " " + fi.Mode().String() + "\n")
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	for _, dir := range []string{ft.root, "/"} {
		ents, err := os.ReadDir(dir)
		if err != nil {
			tb.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		b.WriteString(dir + ": " + strings.Join(names, " ") + "\n")
	}
	return b.String()
}

func newFuzzServer(f *testing.F, ft *fuzzTree) (*hostfs.DirectClient, uint64) {
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: ft.exp}}, Logger: zaptest.NewLogger(f, zaptest.Level(zap.ErrorLevel))})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	c := s.DirectClient()
	if _, err := c.Handshake(f.Context(), &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		f.Fatal(err)
	}
	r, err := c.Mount(f.Context(), &qtfsv1.MountRequest{Path: []byte(ft.exp), Caller: root})
	if err != nil || r.GetErrno() != 0 {
		f.Fatalf("mount: %v %v", r, err)
	}
	return c, r.GetMount()
}

// FuzzLookup feeds arbitrary paths and names to every rpc that takes
// them. Invalid ones must be refused with the validator's errno, and
// nothing outside the export may ever change, whatever the input.
func FuzzLookup(f *testing.F) {
	for _, s := range [][2]string{
		{"", "f"}, {"d", "e"}, {"esc", "etc"}, {"esc/etc", "passwd"}, {"up/outside", "secret"}, {"out", "secret"},
		{"d/back", "outside"}, {"..", "x"}, {"d/../..", "x"}, {"", ".."}, {"", "a/b"}, {"/tmp", "x"}, {"d", "\x00"},
		{"d//e", "x"}, {"", "out"}, {"", "esc"},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	ft := newFuzzTree(f)
	c, m := newFuzzServer(f, ft)
	before := ft.outsideState(f)
	f.Fuzz(func(t *testing.T, path, name []byte) {
		ctx := t.Context()
		ft.restore(t)
		want := qfs.ValidPath(path)
		if want == 0 {
			want = qfs.ValidName(name)
		}
		type op struct {
			name string
			call func() (errnoReply, error)
		}
		ops := []op{
			{"Lookup", func() (errnoReply, error) {
				return c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Path: path, Name: name})
			}},
			{"Mkdir", func() (errnoReply, error) {
				return c.Mkdir(ctx, &qtfsv1.MkdirRequest{Mount: m, Caller: root, Path: path, Name: name, Mode: 0o755})
			}},
			{"Mknod", func() (errnoReply, error) {
				return c.Mknod(ctx, &qtfsv1.MknodRequest{Mount: m, Caller: root, Path: path, Name: name, Mode: unix.S_IFIFO | 0o644})
			}},
			{"Symlink", func() (errnoReply, error) {
				return c.Symlink(ctx, &qtfsv1.SymlinkRequest{Mount: m, Caller: root, Path: path, Name: name, Target: []byte("/")})
			}},
			{"Create", func() (errnoReply, error) {
				r, err := c.Create(ctx, &qtfsv1.CreateRequest{Mount: m, Caller: root, Path: path, Name: name, Flags: unix.O_RDWR | unix.O_TRUNC, Mode: 0o644})
				if r.GetHandle() != 0 {
					c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: r.GetHandle()})
				}
				return r, err
			}},
			{"Link", func() (errnoReply, error) {
				return c.Link(ctx, &qtfsv1.LinkRequest{Mount: m, Caller: root, Path: []byte("f"), NewPath: path, NewName: name})
			}},
			{"Rename", func() (errnoReply, error) {
				return c.Rename(ctx, &qtfsv1.RenameRequest{Mount: m, Caller: root, OldPath: path, OldName: name,
					NewPath: []byte("d"), NewName: []byte("moved")})
			}},
			{"Unlink", func() (errnoReply, error) {
				return c.Unlink(ctx, &qtfsv1.UnlinkRequest{Mount: m, Caller: root, Path: path, Name: name})
			}},
			{"Rmdir", func() (errnoReply, error) {
				return c.Rmdir(ctx, &qtfsv1.RmdirRequest{Mount: m, Caller: root, Path: path, Name: name})
			}},
		}
		full := qfs.JoinPath(path, name)
		pathOps := []op{
			{"Open", func() (errnoReply, error) {
				r, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: full, Flags: unix.O_RDWR | unix.O_TRUNC})
				if r.GetHandle() != 0 {
					c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: r.GetHandle()})
				}
				return r, err
			}},
			{"Setattr", func() (errnoReply, error) {
				return c.Setattr(ctx, &qtfsv1.SetattrRequest{Mount: m, Caller: root, Path: full,
					Valid: uint32(qtfsv1.SetattrValid_SETATTR_VALID_MODE | qtfsv1.SetattrValid_SETATTR_VALID_SIZE), Mode: 0o777})
			}},
			{"Setxattr", func() (errnoReply, error) {
				return c.Setxattr(ctx, &qtfsv1.SetxattrRequest{Mount: m, Caller: root, Path: full, Name: []byte("user.fuzz"), Value: name})
			}},
		}
		for _, o := range ops {
			r, err := o.call()
			if err != nil {
				t.Fatalf("%s(%q, %q): rpc error %v", o.name, path, name, err)
			}
			if want != 0 && r.GetErrno() != int32(want) {
				t.Fatalf("%s(%q, %q): errno %d, want %d from validation", o.name, path, name, r.GetErrno(), want)
			}
		}
		fullWant := qfs.ValidPath(full)
		for _, o := range pathOps {
			r, err := o.call()
			if err != nil {
				t.Fatalf("%s(%q): rpc error %v", o.name, full, err)
			}
			if fullWant != 0 && r.GetErrno() != int32(fullWant) {
				t.Fatalf("%s(%q): errno %d, want %d from validation", o.name, full, r.GetErrno(), fullWant)
			}
		}
		if after := ft.outsideState(t); after != before {
			t.Fatalf("path %q name %q changed the host outside the export:\nbefore:\n%s\nafter:\n%s", path, name, before, after)
		}
	})
}

// FuzzMount feeds arbitrary host paths to Mount: a mount may only ever be
// rooted at a directory inside the export.
func FuzzMount(f *testing.F) {
	ft := newFuzzTree(f)
	for _, s := range []string{ft.exp, ft.exp + "/d", ft.exp + "/d/e", ft.exp + "/esc", ft.exp + "/out", ft.exp + "/d/back",
		ft.exp + "/..", ft.exp + "/../outside", ft.outside, ft.exp + "x", "/", "", "relative", ft.exp + "/", ft.exp + "/d\x00"} {
		f.Add([]byte(s))
	}
	c, _ := newFuzzServer(f, ft)
	inside := map[[2]uint64]bool{}
	for _, d := range []string{"", "d", "d/e"} {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(ft.exp, d), &st); err != nil {
			f.Fatal(err)
		}
		inside[[2]uint64{st.Dev, st.Ino}] = true
	}
	f.Fuzz(func(t *testing.T, path []byte) {
		r, err := c.Mount(t.Context(), &qtfsv1.MountRequest{Path: path, Caller: root})
		if err != nil {
			t.Fatalf("Mount(%q): %v", path, err)
		}
		if r.GetErrno() != 0 {
			return
		}
		if a := r.GetRoot(); !inside[[2]uint64{a.GetDev(), a.GetIno()}] {
			t.Fatalf("Mount(%q) rooted at ino %d outside the export's directories", path, a.GetIno())
		}
	})
}

// errnoReply is what every FileSystem reply has.
type errnoReply interface{ GetErrno() int32 }
