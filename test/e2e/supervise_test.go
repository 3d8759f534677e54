package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// supervisedRunConfig writes the config of a qtfs-client run of e's
// server whose chroot binds the DPU's system directories read-only and
// mounts /proc and mount (at their host paths), and returns the chroot's
// root and the config's path.
func supervisedRunConfig(t testing.TB, e *env, mount string) (root, config string) {
	t.Helper()
	root = filepath.Join(hostDir(t), "root")
	config = filepath.Join(e.pki, "client.yaml")
	writeFile(t, config, fmt.Sprintf(`server: %[1]s
tls_cert: %[2]s/client.pem
tls_key: %[2]s/client-key.pem
tls_ca: %[2]s/ca.pem
runtime_dir: %[3]s
log_format: console
root: %[4]s
binds: ["/usr:ro", "/bin:ro", "/sbin:ro", "/lib:ro", "/lib64:ro,optional", "/etc:ro"]
tmpfs: ["/run", "/tmp:1777"]
mounts: [/proc, %[5]s]
`, e.uri, e.pki, t.TempDir(), root, mount))
	return root, config
}

// TestSupervisedStatfs: a program started with `qtfs-client exec` in the
// offload chroot, the DPU in its own namespaces, sees the host's
// filesystem types in statfs(2) of the qtfs mounts (cgroup2 for the
// host's cgroup2 hierarchy, not FUSE's), where the same program started
// with a plain chroot sees FUSE's; paths of the DPU keep their own types.
func TestSupervisedStatfs(t *testing.T) {
	needMachine(t)
	want := map[string]string{}
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/proc"} {
		out, err := exec.Command("stat", "-f", "-c", "%T", p).Output()
		if err == nil {
			want[p] = strings.TrimSpace(string(out))
		}
	}
	if len(want) == 0 {
		t.Skip("stat -f answers for none of /sys/fs/cgroup, /proc")
	}
	e := newEnvWith(t, nil, "/proc", "/sys/fs/cgroup")
	d := newOffDPU(t, e.net.DPU)
	root, config := supervisedRunConfig(t, e, "/sys/fs/cgroup")
	run := d.startRun(t, config)

	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	script := "for p in " + strings.Join(paths, " ") + " /tmp; do echo \"$p $(stat -f -c %T $p)\"; done"
	types := func(out string) map[string]string {
		m := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if p, ty, ok := strings.Cut(l, " "); ok {
				m[p] = ty
			}
		}
		return m
	}
	out, err := d.cmd(bin("qtfs-client"), "exec", "--config", config, "--", "/bin/sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("qtfs-client exec: %v\n%s\nrun:\n%s", err, out, run.p.output())
	}
	got := types(string(out))
	for p, ty := range want {
		if got[p] != ty {
			t.Errorf("supervised: stat -f %s is %q, the host's is %q", p, got[p], ty)
		}
	}
	if got["/tmp"] != "tmpfs" {
		t.Errorf("supervised: stat -f /tmp (the chroot's own tmpfs) is %q", got["/tmp"])
	}
	plain, err := d.chroot(root, config, script)
	if err != nil {
		t.Fatalf("chroot: %v\n%s", err, plain)
	}
	for p, ty := range types(plain) {
		if p != "/tmp" && !strings.HasPrefix(ty, "fuse") {
			t.Errorf("unsupervised: stat -f %s is %q: the test tests nothing", p, ty)
		}
	}
	t.Logf("supervised: %v; unsupervised: %v", got, types(plain))
	if !strings.Contains(run.p.output(), "a supervised program is gone") {
		t.Errorf("the run daemon did not log the supervised program's end:\n%s", run.p.output())
	}
	// Without a run daemon, exec refuses with a clear message.
	other := filepath.Join(e.pki, "other.yaml")
	b, _ := os.ReadFile(config)
	writeFile(t, other, strings.Replace(string(b), "root: "+root, "root: "+root+"-none", 1))
	out, err = d.cmd(bin("qtfs-client"), "exec", "--config", other, "--", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "no qtfs-client run serves") {
		t.Errorf("exec without its run daemon: %v\n%s", err, out)
	}
}

// TestSupervisedMounts: a program started with `qtfs-client exec` mounts
// a tmpfs, an overlay and a bind beneath a qtfs mount with mount(8): the
// mounts are made on the host at the host paths (the host sees the tmpfs's
// file, the overlay's lower layer and its writes in the upper layer), the
// DPU sees their contents through qtfs, and umount(8) removes them on the
// host. A type the server does not allow is refused, a bind of a DPU
// directory onto a qtfs path fails with EXDEV, and a mount on the DPU's
// own tmpfs stays on the DPU. Signals stay in the chroot: kill of a DPU
// process outside it fails (ESRCH), kill of one of its own works.
func TestSupervisedMounts(t *testing.T) {
	needMachine(t)
	x := hostDir(t) // the export; the chroot mounts it at the same path
	for _, d := range []string{"tmp", "lower", "upper", "work", "merged", "src", "bindt", "bindro", "procm", "bindetc"} {
		if err := os.Mkdir(filepath.Join(x, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(x, "lower", "a.txt"), "from the lower layer\n")
	writeFile(t, filepath.Join(x, "src", "s.txt"), "bound\n")
	t.Cleanup(func() { // only when the test fails halfway
		for _, d := range []string{"tmp", "merged", "bindt", "bindro", "procm", "bindetc"} {
			unix.Unmount(filepath.Join(x, d), unix.MNT_DETACH)
		}
	})
	e := newEnvWith(t, []string{"--mount-allow", "overlay", "--mount-allow", "tmpfs", "--mount-allow", "bind"}, "/proc", x)
	d := newOffDPU(t, e.net.DPU)
	_, config := supervisedRunConfig(t, e, x)
	run := d.startRun(t, config)
	supervised := func(script string) (string, error) {
		out, err := d.cmd(bin("qtfs-client"), "exec", "--config", config, "--", "/bin/sh", "-c", script).CombinedOutput()
		return string(out), err
	}
	devOf := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Dev
	}
	exportDev := devOf(x)
	runPid, err := d.sh("pgrep -x qtfs-client")
	if err != nil {
		t.Fatalf("the run daemon's pid on the DPU: %v %s", err, runPid)
	}

	out, err := supervised(`set -e; X=` + x + `
mount -t tmpfs -o size=1m,mode=755 tmpfs $X/tmp
echo in the tmpfs > $X/tmp/f
mount -t overlay overlay -o lowerdir=$X/lower,upperdir=$X/upper,workdir=$X/work $X/merged
echo "merged: $(cat $X/merged/a.txt)"
echo written through the overlay > $X/merged/b.txt
mount --bind $X/src $X/bindt
echo "bound: $(cat $X/bindt/s.txt)"
mount --bind -o ro $X/src $X/bindro
touch $X/bindro/new 2>/dev/null && echo "read-only bind: writable" || echo "read-only bind: read-only"
mount -t proc proc $X/procm 2>&1 && echo "proc: mounted" || echo "proc: refused"
mount --bind /etc $X/bindetc 2>&1 && echo "bind of /etc: mounted" || echo "bind of /etc: refused"
mkdir -p /tmp/own && mount -t tmpfs tmpfs /tmp/own && echo "own: $(stat -f -c %T /tmp/own)"
kill -0 ` + strings.TrimSpace(runPid) + ` 2>/dev/null && echo "kill of a DPU process outside the chroot: delivered" || echo "kill of a DPU process outside the chroot: refused"
sleep 30 & kill $! && echo "kill of a process of the chroot: delivered"
`)
	t.Logf("supervised mounts:\n%s", out)
	if err != nil {
		t.Fatalf("qtfs-client exec: %v\n%s\nrun:\n%s", err, out, run.p.output())
	}
	for _, want := range []string{"merged: from the lower layer", "bound: bound", "read-only bind: read-only", "proc: refused", "bind of /etc: refused", "own: tmpfs",
		"kill of a DPU process outside the chroot: refused", "kill of a process of the chroot: delivered"} {
		if !strings.Contains(out, want) {
			t.Errorf("the DPU's output lacks %q", want)
		}
	}
	// On the host: the mounts are there, with what the DPU wrote.
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(x, "tmp"), &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Errorf("host: %s/tmp is no tmpfs (%#x, %v)", x, st.Type, err)
	}
	if b, err := os.ReadFile(filepath.Join(x, "tmp", "f")); err != nil || string(b) != "in the tmpfs\n" {
		t.Errorf("host: the tmpfs's file: %q %v", b, err)
	}
	if err := unix.Statfs(filepath.Join(x, "merged"), &st); err != nil || st.Type != unix.OVERLAYFS_SUPER_MAGIC {
		t.Errorf("host: %s/merged is no overlay (%#x, %v)", x, st.Type, err)
	}
	if b, err := os.ReadFile(filepath.Join(x, "upper", "b.txt")); err != nil || string(b) != "written through the overlay\n" {
		t.Errorf("host: the overlay's upper layer: %q %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(x, "bindt", "s.txt")); err != nil || string(b) != "bound\n" {
		t.Errorf("host: the bind: %q %v", b, err)
	}
	if err := unix.Statfs(filepath.Join(x, "bindro"), &st); err != nil || st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("host: %s/bindro is no read-only bind (flags %#x, %v)", x, st.Flags, err)
	}
	for _, p := range []string{"procm", "bindetc"} {
		if devOf(filepath.Join(x, p)) != exportDev {
			t.Errorf("host: a refused mount is on %s", p)
		}
	}
	if ok, _ := hostOwnMountAt("/tmp/own"); ok {
		t.Error("host: the DPU's own tmpfs is on the host")
	}

	out, err = supervised(`set -e; X=` + x + `
umount $X/tmp $X/merged $X/bindt $X/bindro
echo "tmp: $(ls -A $X/tmp | wc -l), merged: $(ls -A $X/merged | wc -l)"
`)
	if err != nil {
		t.Fatalf("umount: %v\n%s\nrun:\n%s", err, out, run.p.output())
	}
	for _, p := range []string{"tmp", "merged", "bindt", "bindro"} {
		if devOf(filepath.Join(x, p)) != exportDev {
			t.Errorf("host: %s is still mounted after umount", p)
		}
	}
	if strings.TrimSpace(out) != "tmp: 0, merged: 0" {
		t.Errorf("DPU: the unmounted directories are not empty again: %s", out)
	}
	if !strings.Contains(e.server.output(), "mount") {
		t.Errorf("the server logged no host mount:\n%s", e.server.output())
	}
}

// hostOwnMountAt reports whether the host's mount table has a mount at p.
func hostOwnMountAt(p string) (bool, error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == p {
			return true, nil
		}
	}
	return false, nil
}
