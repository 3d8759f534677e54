package hostfs_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// hostMountTree is an export for MountOnHost tests, with the server over
// it, its logs and metrics, and a session with the export mounted.
type hostMountTree struct {
	base, exp string
	s         *hostfs.Server
	c         *hostfs.DirectClient
	m         uint64
	reg       *prometheus.Registry
	logs      *observer.ObservedLogs
}

// newHostMountTree makes base/exp with the directories and files the
// tests mount on and from, and a server allowing the kinds in allow. The
// server's exports are exp, exp/inner, exp/holder/deep (whose roots are
// never targets), and base/ro read-only and base/ops with the operation
// lists given.
func newHostMountTree(t *testing.T, allow []string, ops ...[]string) *hostMountTree {
	t.Helper()
	base := t.TempDir()
	exp := filepath.Join(base, "exp")
	for _, d := range []string{"l1", "l2", "up", "work", "merged", "romerged", "tmp", "bsrc", "bdst", "plain",
		"hostbind", "hosttmp", "inner", "holder/deep", "magic"} {
		if err := os.MkdirAll(filepath.Join(exp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"ro/src", "ro/dst", "ops/tmp"} {
		if err := os.MkdirAll(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, data := range map[string]string{"l1/a": "from l1", "l2/b": "from l2", "l2/a": "hidden by l1",
		"bsrc/s": "bound", "f1": "file one", "f2": "file two"} {
		if err := os.WriteFile(filepath.Join(exp, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("l1", filepath.Join(exp, "link")); err != nil {
		t.Fatal(err)
	}
	exports := []hostfs.Export{{Path: exp}, {Path: filepath.Join(exp, "inner")}, {Path: filepath.Join(exp, "holder", "deep")},
		{Path: filepath.Join(base, "ro"), ReadOnly: true}}
	if len(ops) > 0 {
		exports = append(exports, hostfs.Export{Path: filepath.Join(base, "ops"), Ops: ops[0]})
	}
	core, logs := observer.New(zap.DebugLevel)
	reg := prometheus.NewRegistry()
	s, err := hostfs.New(hostfs.Options{Exports: exports, Logger: zap.New(core), Registerer: reg, MountAllow: allow})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, m := session(t, s, exp)
	return &hostMountTree{base: base, exp: exp, s: s, c: c, m: m, reg: reg, logs: logs}
}

// unmountAll unmounts whatever is mounted on p when the test ends, also
// when it failed half way.
func unmountAll(t *testing.T, p string) {
	t.Cleanup(func() {
		for range 8 {
			if unix.Unmount(p, unix.MNT_DETACH) != nil {
				return
			}
		}
	})
}

func (ht *hostMountTree) mount(t *testing.T, req *qtfsv1.MountOnHostRequest) syscall.Errno {
	t.Helper()
	if req.Mount == 0 {
		req.Mount = ht.m
	}
	if req.Caller == nil {
		req.Caller = root
	}
	if len(req.Target) > 0 && ht.m == req.Mount {
		unmountAll(t, filepath.Join(ht.exp, string(req.Target)))
	}
	r, err := ht.c.MountOnHost(t.Context(), req)
	if err != nil {
		t.Fatalf("MountOnHost: %v", err)
	}
	return syscall.Errno(r.GetErrno())
}

func (ht *hostMountTree) unmount(t *testing.T, target string, flags uint32) syscall.Errno {
	t.Helper()
	r, err := ht.c.UnmountOnHost(t.Context(), &qtfsv1.UnmountOnHostRequest{Mount: ht.m, Caller: root, Target: []byte(target), Flags: flags})
	if err != nil {
		t.Fatalf("UnmountOnHost: %v", err)
	}
	return syscall.Errno(r.GetErrno())
}

// devOf is the device number of a host path.
func devOf(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Dev
}

func statfsOf(t *testing.T, p string) unix.Statfs_t {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// mountinfoLine is the host's mountinfo line of the topmost mount on p.
func mountinfoLine(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	line := ""
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			line = l
		}
	}
	return line
}

func needMountRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: the test mounts overlay, tmpfs and binds on the host: run it as root")
	}
}

// TestMountOnHostOff: without mount_allow every request is refused with
// EPERM, counted and logged, and an unknown kind is a configuration
// error.
func TestMountOnHostOff(t *testing.T) {
	exp := t.TempDir()
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: exp}}, Logger: zap.New(core), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, m := session(t, s, exp)
	if err := os.Mkdir(filepath.Join(exp, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := c.MountOnHost(t.Context(), &qtfsv1.MountOnHostRequest{Mount: m, Caller: root, Target: []byte("d"), FsType: "tmpfs"})
	if err != nil || syscall.Errno(r.GetErrno()) != syscall.EPERM {
		t.Fatalf("MountOnHost: %v errno %d, want EPERM", err, r.GetErrno())
	}
	u, err := c.UnmountOnHost(t.Context(), &qtfsv1.UnmountOnHostRequest{Mount: m, Caller: root, Target: []byte("d")})
	if err != nil || syscall.Errno(u.GetErrno()) != syscall.EPERM {
		t.Fatalf("UnmountOnHost: %v errno %d, want EPERM", err, u.GetErrno())
	}
	if n := gather(t, reg, "qtfs_server_refusals_total", map[string]string{"reason": "host_mount"}); n != 2 {
		t.Errorf("refusals counted %v, want 2", n)
	}
	if n := gather(t, reg, "qtfs_server_host_mounts_total", map[string]string{"op": "mount", "type": "tmpfs", "result": "EPERM"}); n != 1 {
		t.Errorf("qtfs_server_host_mounts_total{mount,tmpfs,EPERM} = %v, want 1", n)
	}
	if logs.FilterMessage("refused: host_mount: off").Len() == 0 {
		t.Errorf("the refusal was not logged: %v", logs.All())
	}
	if fs, err := os.ReadDir(filepath.Join(exp, "d")); err != nil || len(fs) != 0 {
		t.Errorf("d: %v %v", fs, err)
	}
	if _, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: exp}}, MountAllow: []string{"tmpfs", "nfs"}}); err == nil ||
		!strings.Contains(err.Error(), `"nfs"`) {
		t.Errorf("MountAllow nfs: %v, want an unknown kind error", err)
	}
}

// TestMountOnHost makes, changes and unmounts overlay, tmpfs and bind
// mounts beneath an export, and sees them from the host and through the
// server.
func TestMountOnHost(t *testing.T) {
	needMountRoot(t)
	ht := newHostMountTree(t, []string{"overlay", "tmpfs", "bind"})
	exp := ht.exp
	expDev := devOf(t, exp)

	t.Run("tmpfs", func(t *testing.T) {
		p := filepath.Join(exp, "tmp")
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs",
			Flags: unix.MS_NOSUID | unix.MS_NODEV, Options: "size=1m,,mode=0755"}); e != 0 {
			t.Fatalf("mount: %v", e)
		}
		if st := statfsOf(t, p); st.Type != unix.TMPFS_MAGIC || devOf(t, p) == expDev || st.Flags&unix.ST_NOSUID == 0 {
			t.Fatalf("%s: statfs type %#x flags %#x, want a nosuid tmpfs", p, st.Type, st.Flags)
		}
		t.Logf("mountinfo: %s", mountinfoLine(t, p))
		if err := os.WriteFile(filepath.Join(p, "hello"), []byte("hi"), 0o644); err != nil {
			t.Fatal(err)
		}
		l, err := ht.c.Lookup(t.Context(), &qtfsv1.LookupRequest{Mount: ht.m, Caller: root, Path: []byte("tmp"), Name: []byte("hello")})
		if err != nil || l.GetErrno() != 0 || l.GetAttr().GetSize() != 2 {
			t.Fatalf("Lookup tmp/hello through the server: %v errno %d attr %v", err, l.GetErrno(), l.GetAttr())
		}
		g, err := ht.c.Getattr(t.Context(), &qtfsv1.GetattrRequest{Mount: ht.m, Caller: root, Path: []byte("tmp/hello")})
		if err != nil || g.GetErrno() != 0 || g.GetAttr().GetDev() != devOf(t, p) {
			t.Fatalf("Getattr tmp/hello: %v errno %d attr %v", err, g.GetErrno(), g.GetAttr())
		}
		// A remount of the superblock of a tmpfs the server made.
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), Flags: unix.MS_REMOUNT | unix.MS_NOSUID, Options: "size=2m"}); e != 0 {
			t.Fatalf("remount size=2m: %v", e)
		}
		if st := statfsOf(t, p); uint64(st.Blocks)*uint64(st.Bsize) != 2<<20 {
			t.Errorf("after remount: %d blocks of %d", st.Blocks, st.Bsize)
		}
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), Flags: unix.MS_PRIVATE}); e != 0 {
			t.Fatalf("MS_PRIVATE: %v", e)
		}
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), Flags: unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY}); e != 0 {
			t.Fatalf("remount read-only: %v", e)
		}
		if st := statfsOf(t, p); st.Flags&unix.ST_RDONLY == 0 {
			t.Errorf("after a read-only remount: flags %#x", st.Flags)
		}
		if e := ht.unmount(t, "tmp", 0); e != 0 {
			t.Fatalf("unmount: %v", e)
		}
		if devOf(t, p) != expDev {
			t.Fatal("tmp is still a mount point")
		}
		if e := ht.unmount(t, "tmp", 0); e != syscall.EINVAL {
			t.Errorf("second unmount: %v, want EINVAL", e)
		}
	})

	t.Run("legacy magic number", func(t *testing.T) {
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Source: "kubelet-secret",
			Flags: 0xc0ed0000 | unix.MS_NOSUID}); e != 0 {
			t.Fatalf("mount: %v", e)
		}
		if line := mountinfoLine(t, filepath.Join(exp, "tmp")); !strings.Contains(line, " tmpfs kubelet-secret ") {
			t.Errorf("mountinfo %q: want the source kubelet-secret", line)
		}
		if e := ht.unmount(t, "tmp", unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); e != 0 {
			t.Fatalf("unmount: %v", e)
		}
	})

	t.Run("overlay", func(t *testing.T) {
		p := filepath.Join(exp, "merged")
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay",
			Lower: [][]byte{[]byte("l1"), []byte("l2")}, Upper: []byte("up"), Work: []byte("work"), Options: "index=off"}); e != 0 {
			t.Fatalf("mount: %v", e)
		}
		if st := statfsOf(t, p); st.Type != unix.OVERLAYFS_SUPER_MAGIC {
			t.Fatalf("statfs type %#x, want overlay", st.Type)
		}
		t.Logf("mountinfo: %s", mountinfoLine(t, p))
		if a, err := os.ReadFile(filepath.Join(p, "a")); err != nil || string(a) != "from l1" {
			t.Errorf("merged/a: %q %v, want l1's", a, err)
		}
		if b, err := os.ReadFile(filepath.Join(p, "b")); err != nil || string(b) != "from l2" {
			t.Errorf("merged/b: %q %v, want l2's", b, err)
		}
		if err := os.WriteFile(filepath.Join(p, "new"), []byte("w"), 0o644); err != nil {
			t.Fatal(err)
		}
		if data, err := os.ReadFile(filepath.Join(exp, "up", "new")); err != nil || string(data) != "w" {
			t.Errorf("up/new: %q %v: the write did not land in upper", data, err)
		}
		l, err := ht.c.Lookup(t.Context(), &qtfsv1.LookupRequest{Mount: ht.m, Caller: root, Path: []byte("merged"), Name: []byte("b")})
		if err != nil || l.GetErrno() != 0 {
			t.Fatalf("Lookup merged/b through the server: %v errno %d", err, l.GetErrno())
		}
		if e := ht.unmount(t, "merged", 0); e != 0 {
			t.Fatalf("unmount: %v", e)
		}
		if ents, _ := os.ReadDir(p); len(ents) != 0 {
			t.Errorf("merged after unmount: %v", ents)
		}
	})

	t.Run("read-only overlay", func(t *testing.T) {
		p := filepath.Join(exp, "romerged")
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("romerged"), FsType: "overlay",
			Lower: [][]byte{[]byte("l2"), []byte("l1")}}); e != 0 {
			t.Fatalf("mount: %v", e)
		}
		if a, err := os.ReadFile(filepath.Join(p, "a")); err != nil || string(a) != "hidden by l1" {
			t.Errorf("romerged/a: %q %v, want l2's", a, err)
		}
		if err := os.WriteFile(filepath.Join(p, "new"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write in a read-only overlay: %v, want EROFS", err)
		}
		if e := ht.unmount(t, "romerged", unix.MNT_DETACH); e != 0 {
			t.Fatalf("unmount: %v", e)
		}
	})

	t.Run("bind", func(t *testing.T) {
		p := filepath.Join(exp, "bdst")
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("bdst"), Bind: []byte("bsrc"), Flags: unix.MS_BIND | unix.MS_REC}); e != 0 {
			t.Fatalf("bind: %v", e)
		}
		if data, err := os.ReadFile(filepath.Join(p, "s")); err != nil || string(data) != "bound" {
			t.Fatalf("bdst/s: %q %v", data, err)
		}
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("bdst"), Flags: unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY}); e != 0 {
			t.Fatalf("read-only remount of the bind: %v", e)
		}
		if err := os.WriteFile(filepath.Join(p, "x"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write in a read-only bind: %v, want EROFS", err)
		}
		// Not the superblock of the host's filesystem.
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("bdst"), Flags: unix.MS_REMOUNT}); e != syscall.EPERM {
			t.Errorf("remount without MS_BIND of a bind: %v, want EPERM", e)
		}
		if e := ht.unmount(t, "bdst", 0); e != 0 {
			t.Fatalf("unmount: %v", e)
		}
		if _, err := os.Stat(filepath.Join(p, "s")); err == nil {
			t.Error("bdst/s still there")
		}
		// A file onto a file.
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("f2"), Bind: []byte("f1"), Flags: unix.MS_BIND}); e != 0 {
			t.Fatalf("bind a file: %v", e)
		}
		if data, _ := os.ReadFile(filepath.Join(exp, "f2")); string(data) != "file one" {
			t.Errorf("f2: %q", data)
		}
		if e := ht.unmount(t, "f2", 0); e != 0 {
			t.Fatalf("unmount f2: %v", e)
		}
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("f2"), Bind: []byte("bsrc"), Flags: unix.MS_BIND}); e != syscall.ENOTDIR {
			t.Errorf("a directory onto a file: %v, want ENOTDIR", e)
		}
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("bdst"), Bind: []byte("f1"), Flags: unix.MS_BIND}); e != syscall.ENOTDIR {
			t.Errorf("a file onto a directory: %v, want ENOTDIR", e)
		}
	})

	t.Run("host mounts", func(t *testing.T) {
		// A bind the test makes, not the server: the host's, never
		// unmounted for the DPU, unless it is a tmpfs or an overlay.
		src := filepath.Join(exp, "bsrc")
		if st := statfsOf(t, src); st.Type == unix.TMPFS_MAGIC || st.Type == unix.OVERLAYFS_SUPER_MAGIC {
			src = "/proc/sys"
		}
		hb := filepath.Join(exp, "hostbind")
		unmountAll(t, hb)
		if err := unix.Mount(src, hb, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		for _, flags := range []uint32{0, unix.MNT_DETACH} {
			if e := ht.unmount(t, "hostbind", flags); e != syscall.EPERM {
				t.Errorf("unmount of the host's bind (flags %#x): %v, want EPERM", flags, e)
			}
		}
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("hostbind"), Flags: unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY}); e != syscall.EPERM {
			t.Errorf("remount of the host's bind: %v, want EPERM", e)
		}
		if mountinfoLine(t, hb) == "" {
			t.Error("the host's bind is gone")
		}
		ht.refused(t, "not_dpu_mount")
		// A tmpfs the host made: the DPU may unmount it (kubelet's
		// secrets of an earlier run), but not resize it.
		tp := filepath.Join(exp, "hosttmp")
		unmountAll(t, tp)
		if err := unix.Mount("tmpfs", tp, "tmpfs", 0, "size=64k"); err != nil {
			t.Fatal(err)
		}
		if e := ht.mount(t, &qtfsv1.MountOnHostRequest{Target: []byte("hosttmp"), Flags: unix.MS_REMOUNT, Options: "size=1g"}); e != syscall.EPERM {
			t.Errorf("remount of the superblock of the host's tmpfs: %v, want EPERM", e)
		}
		if e := ht.unmount(t, "hosttmp", 0); e != 0 {
			t.Errorf("unmount of the host's tmpfs: %v", e)
		}
		if e := ht.unmount(t, "plain", 0); e != syscall.EINVAL {
			t.Errorf("unmount of a directory that is no mount point: %v, want EINVAL", e)
		}
	})

	t.Run("umount2 through /proc/self/fd", func(t *testing.T) {
		// What the server relies on: umount2 of /proc/self/fd/N/NAME with
		// UMOUNT_NOFOLLOW follows the magic link in the middle and
		// unmounts the topmost mount on NAME. And what it need not rely
		// on: umount2 of /proc/self/fd/N, N opened on a directory before
		// a mount was made on it, unmounts that mount (the lookup of a
		// mount point crosses it), while a statfs through the same link
		// sees the directory beneath; with UMOUNT_NOFOLLOW it acts on the
		// link itself, which is no mount: EINVAL.
		p := filepath.Join(exp, "magic")
		unmountAll(t, p)
		under, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(under)
		dir, err := unix.Open(exp, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(dir)
		mountTmp := func() {
			t.Helper()
			if err := unix.Mount("tmpfs", p, "tmpfs", 0, "size=64k"); err != nil {
				t.Fatal(err)
			}
		}
		mountTmp()
		if err := unix.Unmount("/proc/self/fd/"+strconv.Itoa(dir)+"/magic", unix.UMOUNT_NOFOLLOW); err != nil {
			t.Errorf("umount2 /proc/self/fd/DIR/magic NOFOLLOW: %v", err)
		}
		if devOf(t, p) != expDev {
			t.Fatal("still mounted")
		}
		mountTmp()
		link := "/proc/self/fd/" + strconv.Itoa(under)
		if st := statfsOf(t, link); st.Type != statfsOf(t, exp).Type {
			t.Errorf("statfs through the fd opened before the mount: type %#x, want the export's", st.Type)
		}
		if err := unix.Unmount(link, unix.UMOUNT_NOFOLLOW); err != unix.EINVAL {
			t.Errorf("umount2 /proc/self/fd/UNDER NOFOLLOW: %v, want EINVAL", err)
		}
		if err := unix.Unmount(link, 0); err != nil {
			t.Errorf("umount2 /proc/self/fd/UNDER: %v", err)
		}
		if devOf(t, p) != expDev {
			t.Error("still mounted")
		}
	})

	t.Run("refused", func(t *testing.T) {
		uid1000 := &qtfsv1.Caller{Uid: 1000, Gid: 1000}
		for _, tc := range []struct {
			name string
			req  *qtfsv1.MountOnHostRequest
			want syscall.Errno
		}{
			{"unknown type", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "proc"}, syscall.EPERM},
			{"no type", &qtfsv1.MountOnHostRequest{Target: []byte("tmp")}, syscall.EINVAL},
			{"an export's root", &qtfsv1.MountOnHostRequest{Target: []byte("inner"), FsType: "tmpfs"}, syscall.EPERM},
			{"a directory holding an export's root", &qtfsv1.MountOnHostRequest{Target: []byte("holder"), FsType: "tmpfs"}, syscall.EPERM},
			{"the mount's root", &qtfsv1.MountOnHostRequest{Target: []byte(""), FsType: "tmpfs"}, syscall.EPERM},
			{"..", &qtfsv1.MountOnHostRequest{Target: []byte("tmp/../inner"), FsType: "tmpfs"}, syscall.EINVAL},
			{"a lower with ..", &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay", Lower: [][]byte{[]byte("../x")}}, syscall.EINVAL},
			{"a symlink target", &qtfsv1.MountOnHostRequest{Target: []byte("link"), FsType: "tmpfs"}, syscall.ELOOP},
			{"through a symlink", &qtfsv1.MountOnHostRequest{Target: []byte("link/a"), Bind: []byte("f1"), Flags: unix.MS_BIND}, syscall.ELOOP},
			{"a symlink lower", &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay", Lower: [][]byte{[]byte("link")}}, syscall.ELOOP},
			{"a symlink bind source", &qtfsv1.MountOnHostRequest{Target: []byte("bdst"), Bind: []byte("link"), Flags: unix.MS_BIND}, syscall.ELOOP},
			{"caller uid 1000", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Caller: uid1000}, syscall.EPERM},
			{"MS_MOVE", &qtfsv1.MountOnHostRequest{Target: []byte("bdst"), Bind: []byte("bsrc"), Flags: unix.MS_MOVE}, syscall.EPERM},
			{"MS_MANDLOCK", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Flags: unix.MS_MANDLOCK}, syscall.EPERM},
			{"MS_REC on a new mount", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Flags: unix.MS_REC}, syscall.EPERM},
			{"context=", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Options: "size=1m,context=system_u:object_r:tmp_t:s0"}, syscall.EPERM},
			{"mpol=", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Options: "mpol=bind:0"}, syscall.EPERM},
			{"an overlay option on a tmpfs", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Options: "index=off"}, syscall.EPERM},
			{"a value that is not a word", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Options: "size=1m/x"}, syscall.EPERM},
			{"lowerdir in the options", &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay", Lower: [][]byte{[]byte("l1")},
				Options: "lowerdir=/etc"}, syscall.EPERM},
			{"upperdir in the options", &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay", Lower: [][]byte{[]byte("l1")},
				Options: "upperdir=/etc"}, syscall.EPERM},
			{"an overlay without lowers", &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay"}, syscall.EINVAL},
			{"an overlay with upper but no work", &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay",
				Lower: [][]byte{[]byte("l1")}, Upper: []byte("up")}, syscall.EINVAL},
			{"a source that is a path", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Source: "/dev/sda1"}, syscall.EPERM},
			{"a source with a +", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs", Source: "a+b"}, syscall.EPERM},
			{"two propagation types", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), Flags: unix.MS_SHARED | unix.MS_PRIVATE}, syscall.EPERM},
			{"MS_SHARED on an export's root", &qtfsv1.MountOnHostRequest{Target: []byte("inner"), Flags: unix.MS_SHARED}, syscall.EPERM},
			{"MS_PRIVATE on no mount point", &qtfsv1.MountOnHostRequest{Target: []byte("plain"), Flags: unix.MS_PRIVATE}, syscall.EINVAL},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if e := ht.mount(t, tc.req); e != tc.want {
					t.Fatalf("errno %v, want %v", e, tc.want)
				}
			})
		}
		for _, tc := range []struct {
			name   string
			target string
			flags  uint32
			want   syscall.Errno
		}{
			{"MNT_EXPIRE", "tmp", unix.MNT_EXPIRE, syscall.EPERM},
			{"an unknown flag", "tmp", 0x100, syscall.EPERM},
			{"an export's root", "inner", 0, syscall.EPERM},
			{"the mount's root", "", unix.MNT_DETACH, syscall.EPERM},
			{"..", "tmp/..", 0, syscall.EINVAL},
			{"a symlink", "link", 0, syscall.ELOOP},
		} {
			t.Run("unmount "+tc.name, func(t *testing.T) {
				if e := ht.unmount(t, tc.target, tc.flags); e != tc.want {
					t.Fatalf("errno %v, want %v", e, tc.want)
				}
			})
		}
		for _, p := range []string{"tmp", "merged", "bdst", "f2", "inner", "holder"} {
			if devOf(t, filepath.Join(exp, p)) != expDev {
				t.Errorf("%s was mounted on", p)
			}
		}
	})

	t.Run("read-only export", func(t *testing.T) {
		c, m := mountDirect(t, ht.s, filepath.Join(ht.base, "ro"))
		for _, req := range []*qtfsv1.MountOnHostRequest{
			{Mount: m, Caller: root, Target: []byte("dst"), Bind: []byte("src"), Flags: unix.MS_BIND},
			{Mount: m, Caller: root, Target: []byte("dst"), FsType: "tmpfs"},
		} {
			unmountAll(t, filepath.Join(ht.base, "ro", "dst"))
			r, err := c.MountOnHost(t.Context(), req)
			if err != nil || syscall.Errno(r.GetErrno()) != syscall.EROFS {
				t.Errorf("%v: %v errno %d, want EROFS", req, err, r.GetErrno())
			}
		}
	})

	if n := gather(t, ht.reg, "qtfs_server_host_mounts_total", map[string]string{"op": "mount", "type": "overlay", "result": "OK"}); n != 2 {
		t.Errorf("overlays made: %v, want 2", n)
	}
	if n := gather(t, ht.reg, "qtfs_server_host_mounts_total", map[string]string{"op": "unmount", "type": "tmpfs", "result": "OK"}); n != 3 {
		t.Errorf("tmpfs unmounted: %v, want 3", n)
	}
	made := ht.logs.FilterMessage("host mount made").All()
	if len(made) != 6 {
		t.Errorf("%d log lines of mounts made, want 6", len(made))
	}
	for _, l := range made {
		if target, _ := l.ContextMap()["target"].(string); !strings.HasPrefix(target, exp+"/") {
			t.Errorf("a mount made is logged without its host path: %v", l.ContextMap())
		}
	}
}

// TestMountOnHostAllowList: only the kinds in mount_allow are made, and an
// export with an operation list must name the mount group.
func TestMountOnHostAllowList(t *testing.T) {
	needMountRoot(t)
	ht := newHostMountTree(t, []string{"tmpfs"}, []string{"read", "write"})
	for _, tc := range []struct {
		name string
		req  *qtfsv1.MountOnHostRequest
		want syscall.Errno
	}{
		{"overlay", &qtfsv1.MountOnHostRequest{Target: []byte("merged"), FsType: "overlay", Lower: [][]byte{[]byte("l1")}}, syscall.EPERM},
		{"bind", &qtfsv1.MountOnHostRequest{Target: []byte("bdst"), Bind: []byte("bsrc"), Flags: unix.MS_BIND}, syscall.EPERM},
		{"tmpfs", &qtfsv1.MountOnHostRequest{Target: []byte("tmp"), FsType: "tmpfs"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e := ht.mount(t, tc.req); e != tc.want {
				t.Fatalf("errno %v, want %v", e, tc.want)
			}
			if tc.want == 0 {
				if e := ht.unmount(t, string(tc.req.Target), 0); e != 0 {
					t.Fatalf("unmount: %v", e)
				}
			}
		})
	}
	ht.refused(t, "mount_allow")

	c, m := mountDirect(t, ht.s, filepath.Join(ht.base, "ops"))
	unmountAll(t, filepath.Join(ht.base, "ops", "tmp"))
	r, err := c.MountOnHost(t.Context(), &qtfsv1.MountOnHostRequest{Mount: m, Caller: root, Target: []byte("tmp"), FsType: "tmpfs"})
	if err != nil || syscall.Errno(r.GetErrno()) != syscall.EPERM {
		t.Fatalf("MountOnHost in an export without the mount group: %v errno %d, want EPERM", err, r.GetErrno())
	}
	if n := gather(t, ht.reg, "qtfs_server_refusals_total", map[string]string{"reason": "op_not_allowed"}); n != 1 {
		t.Errorf("op_not_allowed refusals: %v, want 1", n)
	}
	if devOf(t, filepath.Join(ht.base, "ops", "tmp")) != devOf(t, filepath.Join(ht.base, "ops")) {
		t.Error("mounted in an export whose operations do not include the mount group")
	}
}

// refused checks that a refusal of host mounts for why was counted and
// logged.
func (ht *hostMountTree) refused(t *testing.T, why string) {
	t.Helper()
	if n := gather(t, ht.reg, "qtfs_server_refusals_total", map[string]string{"reason": "host_mount"}); n < 1 {
		t.Errorf("host_mount refusals counted %v times", n)
	}
	if ht.logs.FilterMessage("refused: host_mount: "+why).Len() == 0 {
		t.Errorf("refusal %q not logged", why)
	}
}
