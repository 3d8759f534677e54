package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

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
	root := filepath.Join(hostDir(t), "root")
	config := filepath.Join(e.pki, "client.yaml")
	writeFile(t, config, fmt.Sprintf(`server: %[1]s
tls_cert: %[2]s/client.pem
tls_key: %[2]s/client-key.pem
tls_ca: %[2]s/ca.pem
runtime_dir: %[3]s
log_format: console
root: %[4]s
binds: ["/usr:ro", "/bin:ro", "/sbin:ro", "/lib:ro", "/lib64:ro,optional", "/etc:ro"]
tmpfs: ["/run", "/tmp:1777"]
mounts: [/proc, /sys/fs/cgroup]
`, e.uri, e.pki, t.TempDir(), root))
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
