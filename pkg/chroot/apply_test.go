package chroot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
)

// childEnv marks the test binary re-executed in its own mount namespace.
const childEnv = "QTFS_CHROOT_TEST_CHILD"

// inMountNS runs the calling test again in a private mount namespace
// (unshare(1)), where its mounts cannot leak; it returns true in the
// child, which then does the work.
func inMountNS(t *testing.T) bool {
	t.Helper()
	if os.Getenv(childEnv) == "1" {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount(2) in a private mount namespace): run the tests as root")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1): apt-get install util-linux")
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a private mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatal("the child did not pass")
	}
	return false
}

// fakeHost stands in for the host's exports: each Remote action gets a
// tmpfs of its own. Like the server asked to create (MountRequest.create),
// it makes the directory of a Remote inside another one, as the host's
// directory would show through the parent, unless that parent is
// read-only.
type fakeHost struct {
	// readOnly are the paths of read-only host mounts.
	readOnly map[string]bool
	// root is the chroot's root; the root is still a mount point at each
	// Unmount when rootMountedAtUnmount stays true.
	root                 string
	rootMountedAtUnmount *bool
}

type fakeRemote struct {
	target string
	h      *fakeHost
}

func (f fakeRemote) Unmount() error {
	if f.h.rootMountedAtUnmount != nil {
		ms, err := readMountinfo()
		if err != nil || len(at(ms, f.h.root)) == 0 {
			*f.h.rootMountedAtUnmount = false
		}
	}
	return unix.Unmount(f.target, 0)
}

func (h *fakeHost) mount(ctx context.Context, a Action) (Unmounter, error) {
	if a.ParentKind == Remote {
		if _, err := os.Stat(a.Target); errors.Is(err, os.ErrNotExist) {
			if h.readOnly[a.ParentPath] {
				return nil, fmt.Errorf("mount %s: create: %w", a.Source, unix.EROFS)
			}
			if err := os.Mkdir(a.Target, 0o755); err != nil {
				return nil, err
			}
		}
	}
	flags := uintptr(0)
	if h.readOnly[a.Path] {
		flags = unix.MS_RDONLY
	}
	if err := unix.Mount("host:"+a.Source, a.Target, "tmpfs", flags, "mode=0755"); err != nil {
		return nil, err
	}
	return fakeRemote{a.Target, h}, nil
}

// table reads this process's mount table.
func table(t *testing.T) []mountinfo.Mount {
	t.Helper()
	ms, err := readMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

func countAt(t *testing.T, target string) int {
	t.Helper()
	return len(at(table(t), target))
}

func mountedBeneath(t *testing.T, root string) []string {
	t.Helper()
	return beneath(table(t), root)
}

// mountOf returns the mount p lies on (the last listed, the top one).
func mountOf(ms []mountinfo.Mount, p string) mountinfo.Mount {
	var m mountinfo.Mount
	for _, x := range ms {
		if x.MountPoint == "/" || within(p, x.MountPoint) {
			m = x
		}
	}
	return m
}

// slaveEnv asks the test binary to do, instead of testing, what
// dockerd's chrootarchive does: in a mount namespace of its own, chroot to
// the directory the variable names and make "/" a slave, recursively.
const slaveEnv = "QTFS_CHROOT_TEST_SLAVE"

func init() {
	dir := os.Getenv(slaveEnv)
	if dir == "" {
		return
	}
	runtime.LockOSThread()
	err := unix.Unshare(unix.CLONE_NEWNS)
	if err == nil {
		err = unix.Chroot(dir)
	}
	if err == nil {
		err = unix.Chdir("/")
	}
	if err == nil {
		err = unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, "")
	}
	if errors.Is(err, unix.EINVAL) {
		fmt.Println("EINVAL")
		os.Exit(1)
	} else if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
	os.Exit(0)
}

// slaveInChroot runs the test binary as slaveEnv says, in a process of
// its own (a thread that changes its mount namespace would change the
// view of /proc/self of this process).
func slaveInChroot(dir string) error {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), slaveEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if strings.TrimSpace(string(out)) == "EINVAL" {
			return unix.EINVAL
		}
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

func TestApply(t *testing.T) {
	if !inMountNS(t) {
		return
	}
	// As on a systemd DPU, the DPU's mounts are shared.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	// mirror is a peer of the mount dir lies on: whatever propagated out
	// of the root into the DPU's tree would show beneath mirror/root.
	mirror := t.TempDir()
	if err := unix.Mount(dir, mirror, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mirror, unix.MNT_DETACH) })
	rexec := filepath.Join(dir, "rexec-binary")
	os.WriteFile(rexec, []byte("#!/bin/sh\necho rexec\n"), 0o755)
	cfg := Config{
		Root: root,
		Binds: []BindSpec{
			{Path: "/usr", ReadOnly: true, Key: "binds[0]"},
			{Path: "/bin", ReadOnly: true, Key: "binds[1]"}, // a symlink on merged-/usr systems
			{Path: "/etc", Key: "binds[2]"},
			{Path: "/no-such-dir-qtfs", Optional: true, Key: "binds[3]"},
		},
		Tmpfs:     []TmpfsSpec{{Path: "/run", Key: "tmpfs[0]"}, {Path: "/tmp", Mode: 0o777 | os.ModeSticky, Key: "tmpfs[1]"}},
		LocalProc: "/local_proc",
		Dev:       true,
		Remotes: []RemoteSpec{
			{Path: "/hostfs/sub", Key: "mounts[0]"}, // inside mounts[1]: the host makes it
			{Path: "/hostfs", Key: "mounts[1]"},
			{Path: "/run/docker", Key: "mounts[2]"},
			{Path: "/hostfs/sub/deeper", Key: "mounts[3]"},
		},
		ShimDir: "/usr/local/sbin",
		Shims:   []string{"runc", "kill"},
		Rexec:   rexec,
	}
	plan, err := Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if plan[0].Kind != RootBind {
		t.Fatalf("the plan does not start with the root: %v", plan[0])
	}
	rootLast := true
	host := &fakeHost{readOnly: map[string]bool{}, root: root, rootMountedAtUnmount: &rootLast}
	opts := Options{Logger: zaptest.NewLogger(t), Remote: host.mount, StaleFSType: "tmpfs"}
	results := func(tr *Tree) map[string]Result {
		m := map[string]Result{}
		for _, ap := range tr.Applied() {
			m[ap.Path] = ap.Result
		}
		return m
	}
	mounted := func(t *testing.T) {
		t.Helper()
		for _, a := range plan {
			if a.Kind == Link || a.Path == "/bin" || a.Path == "/no-such-dir-qtfs" {
				continue
			}
			if n := countAt(t, a.Target); n != 1 {
				t.Errorf("%s: %d mounts", a.Path, n)
			}
		}
	}
	// propagation checks the root's mount and what is beneath it.
	propagation := func(t *testing.T) {
		t.Helper()
		ms := table(t)
		here := at(ms, root)
		if len(here) != 1 || !boundOntoItself(ms, here[0]) {
			t.Fatalf("the root is not one mount bound onto itself: %+v", here)
		}
		if group := sharedGroup(here[0]); group == 0 || sharedOutside(ms, group, root) {
			t.Errorf("the root is not shared in a peer group of its own (shared:%d; / is shared:%d)", group, sharedGroup(mountOf(ms, "/")))
		}
		for _, m := range ms {
			if within(m.MountPoint, root) && sharedGroup(m) == 0 {
				t.Errorf("%s is not shared: %+v", m.MountPoint, m)
			}
			if within(m.MountPoint, mirror+"/root") && m.MountPoint != mirror+"/root" {
				t.Errorf("%s propagated out of the root into the DPU's tree", m.MountPoint)
			}
		}
		usr, src := at(ms, root+"/usr"), mountOf(ms, "/usr")
		master := -1 // the peer group the bind receives from
		if len(usr) == 1 {
			_, master = usr[0].PeerGroups()
		}
		if master == 0 || master != sharedGroup(src) {
			t.Errorf("the bind of /usr is not a slave of its source (bind %+v, source %+v)", usr, src)
		}
	}

	tr, err := Apply(context.Background(), root, plan, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("built", func(t *testing.T) {
		mounted(t)
		if r := results(tr)["/no-such-dir-qtfs"]; r != Skipped {
			t.Errorf("optional bind: %v", r)
		}
		if text, err := os.Readlink(root + "/bin"); err != nil || text != mustReadlink(t, "/bin") {
			if fi, _ := os.Lstat("/bin"); fi.Mode()&os.ModeSymlink != 0 {
				t.Errorf("/bin in the root: %q, %v", text, err)
			}
		}
		if _, err := os.Stat(root + "/usr/bin/sh"); err != nil {
			t.Errorf("the DPU's /usr is not there: %v", err)
		}
		if err := os.WriteFile(root+"/usr/qtfs-test", nil, 0o644); !errors.Is(err, unix.EROFS) {
			t.Errorf("write into the read-only /usr: %v", err)
		}
		if _, err := os.Stat(root + "/local_proc/self/status"); err != nil {
			t.Errorf("local proc: %v", err)
		}
		if fi, err := os.Stat(root + "/dev/null"); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
			t.Errorf("/dev/null: %v %v", fi, err)
		}
		if fi, err := os.Stat(root + "/tmp"); err != nil || fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
			t.Errorf("/tmp: %v %v", fi, err)
		}
		if text, err := os.Readlink(root + "/usr/local/sbin/runc"); err != nil || text != "rexec" {
			t.Errorf("runc shim: %q %v", text, err)
		}
		if b, err := os.ReadFile(root + "/usr/local/sbin/rexec"); err != nil || !strings.Contains(string(b), "echo rexec") {
			t.Errorf("rexec in the shim dir: %q %v", b, err)
		}
		// The shim tmpfs sits on the bind of /usr, not on the DPU's /usr.
		if n := countAt(t, "/usr/local/sbin"); n != 0 {
			t.Errorf("a mount propagated to the DPU's own /usr/local/sbin (%d)", n)
		}
		if n := countAt(t, "/usr/local/sbin/rexec"); n != 0 {
			t.Error("the rexec bind propagated to the DPU's /usr")
		}
	})
	t.Run("the root is shared, apart from the DPU's", propagation)
	t.Run("a private mount namespace in the chroot can make / a slave", func(t *testing.T) {
		if err := slaveInChroot(root); err != nil {
			t.Fatalf("mount(\"\", \"/\", MS_REC|MS_SLAVE) in the chroot: %v", err)
		}
		// What the root's mount point makes possible: a plain directory
		// fails so.
		plain := filepath.Join(dir, "plain")
		os.Mkdir(plain, 0o755)
		if err := slaveInChroot(plain); !errors.Is(err, unix.EINVAL) {
			t.Errorf("in a chroot that is no mount point: %v, want EINVAL", err)
		}
	})

	t.Run("a second run keeps what is in place and repairs the rest", func(t *testing.T) {
		// As after a crash: the old tree is not torn down; one mount is
		// stacked on top of /etc as well.
		if err := unix.Mount("tmpfs", root+"/etc", "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		tr2, err := Apply(context.Background(), root, plan, opts)
		if err != nil {
			t.Fatal(err)
		}
		res := results(tr2)
		for p, want := range map[string]Result{
			"/": Kept, "/usr": Kept, "/run": Kept, "/local_proc": Kept, "/dev": Kept, "/usr/local/sbin": Kept,
			"/usr/local/sbin/rexec": Kept, "/usr/local/sbin/runc": Kept,
			"/etc":        Repaired, // a stack
			"/hostfs":     Repaired, // a remote found there is stale
			"/hostfs/sub": Made,     // it went with the stale /hostfs
		} {
			if res[p] != want {
				t.Errorf("%s: %v, want %v", p, res[p], want)
			}
		}
		mounted(t)
		propagation(t)
		tr = tr2
	})

	t.Run("teardown leaves nothing mounted, the root last", func(t *testing.T) {
		if err := tr.Teardown(); err != nil {
			t.Fatal(err)
		}
		if left := mountedBeneath(t, root); len(left) != 0 {
			t.Fatalf("still mounted: %q", left)
		}
		if left := mountedBeneath(t, mirror+"/root"); len(left) != 0 {
			t.Fatalf("still mounted in the DPU's tree: %q", left)
		}
		if !rootLast {
			t.Error("the root was unmounted before a host mount in it")
		}
	})

	t.Run("a root bound onto itself but not shared is made shared", func(t *testing.T) {
		if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("", root, "", unix.MS_PRIVATE, ""); err != nil {
			t.Fatal(err)
		}
		tr, err := Apply(context.Background(), root, plan, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Teardown()
		if r := results(tr)["/"]; r != Repaired {
			t.Errorf("the root: %v, want repaired", r)
		}
		mounted(t)
		propagation(t)
	})

	t.Run("a root bound onto itself in the DPU's peer group leaves it", func(t *testing.T) {
		// A bind of a directory of a shared mount joins its peer group.
		if err := unix.Mount(root, root, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		tr, err := Apply(context.Background(), root, plan, opts)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Teardown()
		if r := results(tr)["/"]; r != Repaired {
			t.Errorf("the root: %v, want repaired", r)
		}
		propagation(t)
	})

	t.Run("stale mounts beneath a root not bound onto itself are detached, not hidden", func(t *testing.T) {
		if err := unix.Mount("tmpfs", root+"/etc", "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		tr, err := Apply(context.Background(), root, plan, opts)
		if err != nil {
			t.Fatal(err)
		}
		if r := results(tr)["/"]; r != Repaired {
			t.Errorf("the root: %v, want repaired", r)
		}
		mounted(t)
		if etc := at(table(t), root+"/etc"); len(etc) != 1 || etc[0].FSType == "tmpfs" {
			t.Errorf("/etc: %+v", etc)
		}
		if err := tr.Teardown(); err != nil {
			t.Fatal(err)
		}
		if left := mountedBeneath(t, root); len(left) != 0 {
			t.Fatalf("still mounted: %q", left)
		}
	})

	t.Run("an error rolls back", func(t *testing.T) {
		for _, tc := range []struct {
			name  string
			extra RemoteSpec
			ro    string
			want  string
		}{
			{"a host mount the host cannot make", RemoteSpec{Path: "/ro/missing", Key: "mounts[4]"}, "/ro",
				"mounts[4]: remote /ro/missing from /ro/missing: mount /ro/missing: create: read-only file system"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				bad := cfg
				bad.Remotes = append(append([]RemoteSpec(nil), cfg.Remotes...), RemoteSpec{Path: tc.ro, Key: "mounts[5]"}, tc.extra)
				host.readOnly = map[string]bool{tc.ro: true}
				defer func() { host.readOnly = map[string]bool{} }()
				plan, err := Plan(bad)
				if err != nil {
					t.Fatal(err)
				}
				_, err = Apply(context.Background(), root, plan, opts)
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Apply: %v, want %q", err, tc.want)
				}
				if left := mountedBeneath(t, root); len(left) != 0 {
					t.Fatalf("still mounted after the failure: %q", left)
				}
			})
		}
		t.Run("a tmpfs inside a host mount, missing on the host", func(t *testing.T) {
			bad := cfg
			bad.Tmpfs = append(append([]TmpfsSpec(nil), cfg.Tmpfs...), TmpfsSpec{Path: "/hostfs/cache", Key: "tmpfs[2]"})
			plan, err := Plan(bad)
			if err != nil {
				t.Fatal(err)
			}
			_, err = Apply(context.Background(), root, plan, opts)
			want := "tmpfs[2]: tmpfs /hostfs/cache: mount point /hostfs/cache does not exist on the host, and it lies inside the host mount /hostfs (mounts[1])"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Apply: %v, want %q", err, want)
			}
			if left := mountedBeneath(t, root); len(left) != 0 {
				t.Fatalf("still mounted after the failure: %q", left)
			}
		})
		t.Run("a mount point Check refuses: nothing is mounted", func(t *testing.T) {
			bad := cfg
			bad.Remotes = append(append([]RemoteSpec(nil), cfg.Remotes...), RemoteSpec{Path: "/etc/no-such-dir-qtfs", Key: "mounts[4]"})
			plan, err := Plan(bad)
			if err != nil {
				t.Fatal(err)
			}
			host.rootMountedAtUnmount = nil
			_, err = Apply(context.Background(), root, plan, opts)
			want := "mounts[4]: mount point /etc/no-such-dir-qtfs does not exist on the DPU"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Apply: %v, want %q", err, want)
			}
			if left := mountedBeneath(t, root); len(left) != 0 {
				t.Fatalf("mounted: %q", left)
			}
		})
	})

	t.Run("a root that does not exist yet is made", func(t *testing.T) {
		c := cfg
		c.Root = filepath.Join(dir, "new", "root")
		plan, err := Plan(c)
		if err != nil {
			t.Fatal(err)
		}
		tr, err := Apply(context.Background(), c.Root, plan, Options{Logger: opts.Logger, Remote: (&fakeHost{}).mount})
		if err != nil {
			t.Fatal(err)
		}
		if n := countAt(t, c.Root); n != 1 {
			t.Errorf("the new root: %d mounts", n)
		}
		if err := tr.Teardown(); err != nil {
			t.Fatal(err)
		}
		if left := mountedBeneath(t, c.Root); len(left) != 0 {
			t.Fatalf("still mounted: %q", left)
		}
	})
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	s, _ := os.Readlink(p)
	return s
}
