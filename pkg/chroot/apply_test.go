package chroot

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
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

// fakeRemote mounts a tmpfs in place of a host export and makes the
// directories listed in dirs inside it, as the host would have them.
type fakeRemote struct{ target string }

func (f fakeRemote) Unmount() error { return unix.Unmount(f.target, 0) }

func mountFake(dirs map[string][]string) func(ctx context.Context, a Action) (Unmounter, error) {
	return func(ctx context.Context, a Action) (Unmounter, error) {
		if err := unix.Mount("host:"+a.Source, a.Target, "tmpfs", 0, "mode=0755"); err != nil {
			return nil, err
		}
		for _, d := range dirs[a.Path] {
			os.MkdirAll(filepath.Join(a.Target, d), 0o755)
		}
		return fakeRemote{a.Target}, nil
	}
}

func countAt(t *testing.T, target string) int {
	t.Helper()
	ms, err := ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return len(at(ms, target))
}

func beneath(t *testing.T, root string) []string {
	t.Helper()
	ms, err := ReadMountinfo()
	if err != nil {
		t.Fatal(err)
	}
	return Beneath(ms, root)
}

func TestApply(t *testing.T) {
	if !inMountNS(t) {
		return
	}
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
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
			{Path: "/hostfs/sub", Key: "mounts[0]"},
			{Path: "/hostfs", Key: "mounts[1]"},
			{Path: "/run/docker", Key: "mounts[2]"},
		},
		ShimDir: "/usr/local/sbin",
		Shims:   []string{"runc", "kill"},
		Rexec:   rexec,
	}
	plan, err := Plan(cfg)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Logger: zaptest.NewLogger(t), Remote: mountFake(map[string][]string{"/hostfs": {"sub"}}), StaleFSType: "tmpfs"}
	results := func(tr *Tree) map[string]Result {
		m := map[string]Result{}
		for _, ap := range tr.Applied() {
			m[ap.Path] = ap.Result
		}
		return m
	}

	tr, err := Apply(context.Background(), root, plan, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("built", func(t *testing.T) {
		for _, a := range plan {
			if a.Kind == Link || a.Path == "/bin" || a.Path == "/no-such-dir-qtfs" {
				continue
			}
			if n := countAt(t, a.Target); n != 1 {
				t.Errorf("%s: %d mounts", a.Path, n)
			}
		}
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

	t.Run("a second run keeps what is in place and repairs the rest", func(t *testing.T) {
		// As after a crash: the old tree is not torn down; one mount is
		// stacked on top of /run as well.
		if err := unix.Mount("tmpfs", root+"/etc", "tmpfs", 0, ""); err != nil {
			t.Fatal(err)
		}
		tr2, err := Apply(context.Background(), root, plan, opts)
		if err != nil {
			t.Fatal(err)
		}
		res := results(tr2)
		for p, want := range map[string]Result{
			"/usr": Kept, "/run": Kept, "/local_proc": Kept, "/dev": Kept, "/usr/local/sbin": Kept,
			"/usr/local/sbin/rexec": Kept, "/usr/local/sbin/runc": Kept,
			"/etc":    Repaired, // a stack
			"/hostfs": Repaired, // a remote found there is stale
		} {
			if res[p] != want {
				t.Errorf("%s: %v, want %v", p, res[p], want)
			}
		}
		for _, a := range plan {
			if a.Kind == Link || a.Path == "/bin" || a.Path == "/no-such-dir-qtfs" {
				continue
			}
			if n := countAt(t, a.Target); n != 1 {
				t.Errorf("%s: %d mounts after the second run", a.Path, n)
			}
		}
		tr = tr2
	})

	t.Run("teardown leaves nothing mounted", func(t *testing.T) {
		if err := tr.Teardown(); err != nil {
			t.Fatal(err)
		}
		if left := beneath(t, root); len(left) != 0 {
			t.Fatalf("still mounted: %q", left)
		}
	})

	t.Run("an error rolls back", func(t *testing.T) {
		bad := cfg
		// /hostfs/missing is not on the (fake) host: it is not created.
		bad.Remotes = append(append([]RemoteSpec(nil), cfg.Remotes...), RemoteSpec{Path: "/hostfs/missing", Key: "mounts[3]"})
		plan, err := Plan(bad)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Apply(context.Background(), root, plan, opts)
		if err == nil || !strings.Contains(err.Error(), "mounts[3]: ") || !strings.Contains(err.Error(), "does not exist") {
			t.Fatalf("Apply: %v", err)
		}
		if left := beneath(t, root); len(left) != 0 {
			t.Fatalf("still mounted after the failure: %q", left)
		}
	})
}

func mustReadlink(t *testing.T, p string) string {
	t.Helper()
	s, _ := os.Readlink(p)
	return s
}
