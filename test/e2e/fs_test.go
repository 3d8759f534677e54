package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// hostDir makes a directory (for an export or a mountpoint) that every
// user can reach: t.TempDir and its parent are 0700.
func hostDir(t testing.TB) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{filepath.Dir(d), d} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func sha256File(t *testing.T, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestFilesCrossBothWays(t *testing.T) {
	host := hostDir(t)
	e := newEnv(t, host)
	mp := e.mount(host, filepath.Join(t.TempDir(), "mnt"))

	// Host → DPU.
	if err := os.WriteFile(filepath.Join(host, "from-host"), []byte("host data\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := e.dpu.must("cat", mp+"/from-host"); got != "host data\n" {
		t.Fatalf("DPU read %q", got)
	}
	// The host side's mount namespace never sees the DPU's mount.
	if out, _ := exec.Command("grep", "-c", mp, "/proc/self/mountinfo").Output(); strings.TrimSpace(string(out)) != "0" {
		t.Fatalf("DPU mount visible on the host side")
	}
	// DPU → host.
	e.dpu.mustSh(fmt.Sprintf("mkdir %[1]s/d && echo dpu data > %[1]s/d/from-dpu && sync", mp))
	b, err := os.ReadFile(filepath.Join(host, "d", "from-dpu"))
	if err != nil || string(b) != "dpu data\n" {
		t.Fatalf("host read %q, %v", b, err)
	}
	// A change on the host shows on the DPU after the attribute timeout.
	if err := os.WriteFile(filepath.Join(host, "from-host"), []byte("changed on the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.dpu.must("cat", mp+"/from-host")
		if got == "changed on the host\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DPU still reads %q", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestLargeFileBothWays(t *testing.T) {
	host := hostDir(t)
	e := newEnv(t, host)
	mp := e.mount(host, filepath.Join(t.TempDir(), "mnt"))
	const mib = 256

	run(t, "dd", "if=/dev/urandom", "of="+filepath.Join(host, "up"), "bs=1M", fmt.Sprint("count=", mib), "status=none")
	want := sha256File(t, filepath.Join(host, "up"))
	got := strings.Fields(e.dpu.must("sha256sum", mp+"/up"))[0]
	if got != want {
		t.Fatalf("host→DPU sha256 %s, host has %s", got, want)
	}

	e.dpu.mustSh(fmt.Sprintf("dd if=/dev/urandom of=%s/down bs=1M count=%d status=none conv=fsync", mp, mib))
	dpuSum := strings.Fields(e.dpu.must("sha256sum", mp+"/down"))[0]
	if hostSum := sha256File(t, filepath.Join(host, "down")); hostSum != dpuSum {
		t.Fatalf("DPU→host sha256: host %s, DPU %s", hostSum, dpuSum)
	}
	if fi, err := os.Stat(filepath.Join(host, "down")); err != nil || fi.Size() != mib<<20 {
		t.Fatalf("host size %v, %v", fi, err)
	}
}

// semanticsScript exercises rename, link, symlink, xattr and lock semantics
// in directory $D; its output must be the same on the host and the mount.
const semanticsScript = `
set -u
cd "$D"
echo a > f; ln f hard; stat -c 'hard links: %h' f
[ "$(stat -c %i f)" = "$(stat -c %i hard)" ] && echo "same inode"
ln -s f sym; readlink sym; cat sym
ln -s ../../../../../etc/passwd escape; readlink escape
mv f g; ls
echo b > h; mv -T h g 2>&1; cat g
mkdir dir1 dir2; touch dir2/x
mv -T dir1 dir2 2>&1 | sed 's/.*: //'
mv --exchange sym hard 2>/dev/null && echo exchanged || echo "no exchange support in mv"
echo new > n; ln n n2 2>&1; ln n n2 2>&1 | sed 's/.*: //'
setfattr -n user.color -v blue g && getfattr --only-values -n user.color g; echo
setfattr -x user.color g; getfattr -n user.color g 2>&1 | sed 's/.*: //'
exec 9>lockfile
flock -n 9 && echo "locked"
sh -c 'flock -n 8 && echo "second lock taken (wrong)" || echo "second lock refused"' 8>lockfile
flock -u 9
sh -c 'flock -n 8 && echo "lock free again"' 8>lockfile
truncate -s 1000000 sparse; stat -c 'size %s' sparse
rm -r dir2 2>&1; rmdir dir1 2>&1 | sed 's/.*: //'; rmdir dir2 2>&1 | sed 's/.*: //'
mkdir -p nonempty/x; rmdir nonempty 2>&1 | sed 's/.*: //'
ls -a | tr '\n' ' '; echo
`

func TestSemanticsMatchHost(t *testing.T) {
	host := hostDir(t)
	e := newEnv(t, host)
	mp := e.mount(host, filepath.Join(t.TempDir(), "mnt"))

	local := hostDir(t)
	want, err := exec.Command("sh", "-c", "D="+local+"\n"+semanticsScript).CombinedOutput()
	if err != nil {
		t.Fatalf("on the host: %v\n%s", err, want)
	}
	if err := os.Mkdir(filepath.Join(host, "s"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := e.dpu.sh("D=" + mp + "/s\n" + semanticsScript)
	if err != nil {
		t.Fatalf("through the mount: %v\n%s", err, got)
	}
	if string(want) != got {
		t.Fatalf("through the mount:\n%s\non the host:\n%s", got, want)
	}
	t.Logf("same on both:\n%s", got)

	// A lock held on the host conflicts with one taken through the mount.
	holder := exec.Command("flock", "-x", filepath.Join(host, "s", "lockfile"), "sleep", "30")
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	time.Sleep(200 * time.Millisecond)
	if out, err := e.dpu.exec("flock", "-n", mp+"/s/lockfile", "true"); err == nil {
		t.Fatalf("lock taken through the mount while the host holds it: %s", out)
	}
}

func TestNonRootCaller(t *testing.T) {
	host := hostDir(t)
	if err := os.Mkdir(filepath.Join(host, "private"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(host, "private", "secret"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(host, "shared"), 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(host, "shared"), 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	e := newEnv(t, host)
	mp := e.mount(host, filepath.Join(hostDir(t), "mnt"), "-o", "allow_other")
	asUser := func(script string) (string, error) {
		return e.dpu.exec("setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "sh", "-c", script)
	}
	// The mount itself is open to uid 1000: refusals below are the files'.
	if out, err := asUser("ls " + mp + " && cat " + mp + "/shared/../private/../shared/.. >/dev/null 2>&1; stat " + mp + "/private"); err != nil {
		t.Fatalf("uid 1000 cannot use the mount at all: %v %s", err, out)
	}
	for _, tc := range []struct{ name, script string }{
		{"list private dir", "ls " + mp + "/private"},
		{"read private file", "cat " + mp + "/private/secret"},
		{"create in private dir", "touch " + mp + "/private/new"},
		{"create in root-owned dir", "touch " + mp + "/new"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := asUser(tc.script)
			if err == nil || !strings.Contains(out, "Permission denied") {
				t.Fatalf("uid 1000: %q: err %v, output %q; want Permission denied", tc.script, err, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(host, "new")); !os.IsNotExist(err) {
		t.Fatalf("refused create left a file on the host: %v", err)
	}
	if out, err := asUser("echo mine > " + mp + "/shared/mine && mkdir " + mp + "/shared/mydir"); err != nil {
		t.Fatalf("uid 1000 create in 0777 dir: %v %s", err, out)
	}
	for _, p := range []string{"shared/mine", "shared/mydir"} {
		out := run(t, "stat", "-c", "%u:%g", filepath.Join(host, p))
		if strings.TrimSpace(out) != "1000:1000" {
			t.Fatalf("%s owned by %s on the host, want 1000:1000", p, out)
		}
	}
}

func TestMountErrors(t *testing.T) {
	host := hostDir(t)
	e := newEnv(t, host)
	base := t.TempDir()

	t.Run("unexported path", func(t *testing.T) {
		out, err := e.tryMount("/etc", filepath.Join(base, "m1"))
		if err == nil || !strings.Contains(out, "/etc is not exported") {
			t.Fatalf("mount of an unexported path: err %v, output %q", err, out)
		}
		t.Logf("refused: %s", strings.TrimSpace(out))
	})
	t.Run("certificate from another CA", func(t *testing.T) {
		other := pki(t, e.net.HostIP)
		mp := filepath.Join(base, "m2")
		os.MkdirAll(mp, 0o755)
		out, err := e.dpu.exec(bin("qtfs-client"), "mount", "--tls-cert", other+"/client.pem", "--tls-key", other+"/client-key.pem",
			"--tls-ca", e.pki+"/ca.pem", "--runtime-dir", e.dpu.runtime, "--remote", e.net.HostIP+":"+host, mp)
		if err == nil {
			t.Fatalf("mount with a certificate from another CA succeeded")
		}
		t.Logf("refused: %s", strings.TrimSpace(out))
	})
	t.Run("plain tcp without --insecure", func(t *testing.T) {
		mp := filepath.Join(base, "m3")
		os.MkdirAll(mp, 0o755)
		out, err := e.dpu.exec(bin("qtfs-client"), "mount", "--runtime-dir", e.dpu.runtime, "--remote", e.net.HostIP+":"+host, mp)
		if err == nil || !strings.Contains(out, "--insecure") {
			t.Fatalf("plain TCP without TLS: err %v, output %q", err, out)
		}
	})
	t.Run("plain tcp with --insecure to a non-loopback address", func(t *testing.T) {
		mp := filepath.Join(base, "m4")
		os.MkdirAll(mp, 0o755)
		out, err := e.dpu.exec(bin("qtfs-client"), "mount", "--insecure", "--runtime-dir", e.dpu.runtime, "--remote", e.net.HostIP+":"+host, mp)
		if err == nil || !strings.Contains(out, "loopback") {
			t.Fatalf("--insecure to %s: err %v, output %q", e.net.HostIP, err, out)
		}
	})
	t.Run("name too long", func(t *testing.T) {
		mp := e.mount(host, filepath.Join(base, "m5"))
		out, err := e.dpu.exec("touch", mp+"/"+strings.Repeat("n", 256))
		if err == nil || !strings.Contains(out, "File name too long") {
			t.Fatalf("256-byte name: err %v, output %q", err, out)
		}
	})
}

func TestUmountAndSIGTERMLeaveNoMount(t *testing.T) {
	host := hostDir(t)
	e := newEnv(t, host)
	mounted := func(mp string) bool {
		out, _ := e.dpu.sh("grep -c ' " + mp + " ' /proc/mounts")
		return strings.TrimSpace(out) != "0"
	}

	mp := e.mount(host, filepath.Join(t.TempDir(), "a"))
	status := e.dpu.must(bin("qtfs-client"), "status", "--runtime-dir", e.dpu.runtime)
	if !strings.Contains(status, mp) || !strings.Contains(status, e.uri) {
		t.Fatalf("status does not list the mount:\n%s", status)
	}
	t.Logf("status:\n%s", status)
	e.dpu.must(bin("qtfs-client"), "umount", mp)
	if mounted(mp) {
		t.Fatalf("%s still mounted after umount", mp)
	}

	mp = e.mount(host, filepath.Join(t.TempDir(), "b"))
	pids, _ := filepath.Glob(filepath.Join(e.dpu.runtime, "client", "*.sock"))
	if len(pids) != 1 {
		t.Fatalf("want one mount daemon, have control sockets %v", pids)
	}
	var pid int
	fmt.Sscanf(filepath.Base(pids[0]), "%d.sock", &pid)
	// Keep the mount busy: SIGTERM must still leave no mount behind.
	busy := e.dpu.cmd("sh", "-c", "cd "+mp+" && sleep 30")
	if err := busy.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { busy.Process.Kill(); busy.Wait() }()
	time.Sleep(300 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for mounted(mp) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still mounted 15s after SIGTERM to the daemon", mp)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
