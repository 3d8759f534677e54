package e2e

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The docker offload as deploy/ describes it: Debian's containerd on the
// host, qtfs-server started from deploy/config/server.yaml, the DPU in
// its own network, mount and pid namespaces running qtfs-client run from
// deploy/config/client.yaml and dockerd as deploy/systemd's
// docker-offload.service starts it; the configs are changed only in the
// transport, the TLS files and the chroot's root.

// hostContainerd is the host's containerd on its standard socket: the one
// that runs, or one the test starts (and stops).
func hostContainerd(t testing.TB) {
	t.Helper()
	const sock = "/run/containerd/containerd.sock"
	if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
		c.Close()
		return
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("needs containerd on the host: scripts/deps.sh installs it (apt-get install containerd)")
	}
	cd := start(t, bin, "--log-level", "warn")
	for i := 0; ; i++ {
		if c, err := net.DialTimeout("unix", sock, time.Second); err == nil {
			c.Close()
			break
		}
		if i > 300 {
			t.Fatalf("containerd did not listen on %s:\n%s", sock, cd.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replaceLines applies the replacements to doc, each of which must match
// a whole line once: a deploy config that changed shape fails the test
// rather than being tested half-changed.
func replaceLines(t testing.TB, name, doc string, repl [][2]string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	for _, r := range repl {
		n := 0
		for i, l := range lines {
			if l == r[0] {
				lines[i] = r[1]
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s: the line %q is there %d times, want once: the test's edits of the example config need updating", name, r[0], n)
		}
	}
	return strings.Join(lines, "\n")
}

// offloadConfigs writes the deploy/ configs with the transport, TLS and
// root of this test, and the client config edited further by clientEdits
// (as replaceLines takes them), and returns their paths.
func offloadConfigs(t testing.TB, hostIP, pkiDir, root string, clientEdits ...[2]string) (serverConfig, clientConfig string) {
	t.Helper()
	mod := moduleRoot(t)
	sb, err := os.ReadFile(filepath.Join(mod, "deploy/config/server.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	uri := fmt.Sprintf("tcp://%s:12121", hostIP)
	server := replaceLines(t, "server.yaml", string(sb), [][2]string{
		{"  - vsock://any:12121", "  - " + uri},
		{"# tls_cert: /etc/qtfs/server.pem", "tls_cert: " + pkiDir + "/server.pem"},
		{"# tls_key: /etc/qtfs/server-key.pem", "tls_key: " + pkiDir + "/server-key.pem"},
		{"# tls_client_ca: /etc/qtfs/ca.pem", "tls_client_ca: " + pkiDir + "/ca.pem"},
	})
	serverConfig = filepath.Join(pkiDir, "server.yaml")
	writeFile(t, serverConfig, server)
	cb, err := os.ReadFile(filepath.Join(mod, "deploy/config/client.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	client := replaceLines(t, "client.yaml", string(cb), [][2]string{
		{"server: vsock://host:12121", "server: " + uri},
		{"# tls_cert: /etc/qtfs/client.pem", "tls_cert: /etc/qtfs/client.pem"},
		{"# tls_key: /etc/qtfs/client-key.pem", "tls_key: /etc/qtfs/client-key.pem"},
		{"# tls_ca: /etc/qtfs/ca.pem", "tls_ca: /etc/qtfs/ca.pem"},
		{"root: /var/lib/qtfs/root", "root: " + root},
		{"rexec: /usr/bin/rexec", "rexec: " + bin("rexec")},
	})
	client = replaceLines(t, "client.yaml", client, clientEdits)
	// The DPU's /etc is the chroot's: rexec there reads
	// /etc/qtfs/client.yaml, as deploy/README.md says.
	if _, err := os.Stat("/etc/qtfs"); err == nil {
		t.Skip("/etc/qtfs exists on this machine: the docker offload test installs its client config there and will not overwrite one")
	}
	if err := os.MkdirAll("/etc/qtfs", 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll("/etc/qtfs") })
	for _, f := range []string{"ca.pem", "client.pem", "client-key.pem"} {
		b, err := os.ReadFile(filepath.Join(pkiDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("/etc/qtfs", f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	clientConfig = "/etc/qtfs/client.yaml"
	writeFile(t, clientConfig, client)
	return serverConfig, clientConfig
}

// dockerUnit returns the ExecStart command line and the environment of
// deploy/systemd/docker-offload.service.
func dockerUnit(t testing.TB) (argv, env []string) {
	t.Helper()
	return unitCommand(t, "docker-offload.service")
}

// unitCommand returns the ExecStart command line and the environment of
// the unit deploy/systemd/name.
func unitCommand(t testing.TB, name string) (argv, env []string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy/systemd", name))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "ExecStart="); ok {
			argv = strings.Fields(v)
		}
		if v, ok := strings.CutPrefix(l, "Environment="); ok {
			env = append(env, v)
		}
	}
	if len(argv) == 0 {
		t.Fatalf("%s has no ExecStart=", name)
	}
	return argv, env
}

// busyboxImage writes a docker import tarball: a root filesystem with
// the static busybox and its applets as links.
func busyboxImage(t testing.TB, dir string) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skip("needs the static busybox: apt-get install busybox-static")
	}
	p := filepath.Join(dir, "busybox.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Mode: 0o755, Typeflag: tar.TypeDir})
	}
	tw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb)), Typeflag: tar.TypeReg})
	tw.Write(bb)
	for _, a := range []string{"sh", "echo", "cat", "sleep", "tty", "ls", "true", "ip", "id", "printf", "head"} {
		tw.WriteHeader(&tar.Header{Name: "bin/" + a, Linkname: "busybox", Typeflag: tar.TypeSymlink})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// offloadedDocker is dockerd running in the DPU's chroot.
type offloadedDocker struct {
	d    *offDPU
	root string
	sock string // its socket, in the chroot
	p    *proc
}

// startDockerd starts dockerd as the unit does: its ExecStart (qtfs-client
// exec, which enters the chroot) with its environment, plus extra flags. It runs until
// stopped or until the test life ends; t is the (sub)test that fails if
// it does not start.
func startDockerd(t, life testing.TB, d *offDPU, root string, extra ...string) *offloadedDocker {
	t.Helper()
	return startDockerdArgv(t, life, d, root, "/run/docker.sock", func(argv []string) []string { return append(argv, extra...) })
}

// startDockerdArgv is startDockerd with the unit's command line as
// rewrite makes it, and the socket it listens on.
func startDockerdArgv(t, life testing.TB, d *offDPU, root, sock string, rewrite func([]string) []string) *offloadedDocker {
	t.Helper()
	argv, env := dockerUnit(t)
	if argv[0] == "/usr/bin/qtfs-client" {
		argv[0] = bin("qtfs-client") // the unit's, as built for this run
	}
	argv = rewrite(argv)
	cmd := d.cmd(argv[0], argv[1:]...)
	cmd.Env = append([]string{"HOME=/root"}, env...)
	p := startCmd(life, cmd)
	od := &offloadedDocker{d: d, root: root, sock: sock, p: p}
	// Runs before startCmd's cleanup, which signals nsenter only: dockerd
	// is its child in the DPU's pid namespace.
	life.Cleanup(func() {
		select {
		case <-p.done:
		default:
			od.stop(life)
		}
	})
	for i := 0; ; i++ {
		if out, err := od.docker("version", "--format", "{{.Server.Version}}"); err == nil {
			t.Logf("dockerd %s answers in the chroot", strings.TrimSpace(out))
			return od
		}
		select {
		case <-p.done:
			t.Fatalf("dockerd exited:\n%s", p.output())
		default:
		}
		if i > 600 {
			t.Fatalf("dockerd did not answer:\n%s", p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// docker runs the docker CLI of the DPU in the chroot, as the operator's
// shell on the DPU would (against the socket in the chroot).
func (od *offloadedDocker) docker(args ...string) (string, error) {
	return od.dockerIn("", args...)
}

func (od *offloadedDocker) dockerIn(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := od.d.cmd("/usr/bin/docker", append([]string{"-H", "unix://" + od.root + od.sock}, args...)...)
	cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	cmd.Env = []string{"HOME=/root", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (od *offloadedDocker) must(t testing.TB, args ...string) string {
	t.Helper()
	out, err := od.docker(args...)
	if err != nil {
		t.Fatalf("docker %s: %v\n%s\ndockerd:\n%s", strings.Join(args, " "), err, out, od.tail())
	}
	return out
}

// tail is the end of dockerd's log.
func (od *offloadedDocker) tail() string {
	out := od.p.output()
	if len(out) > 6000 {
		out = out[len(out)-6000:]
	}
	return out
}

// stop ends dockerd as systemctl stop would (SIGTERM to the main pid).
func (od *offloadedDocker) stop(t testing.TB) {
	t.Helper()
	stopChild(t, od.p, "dockerd", time.Minute)
}

// hostPid is the pid of a container's process as containerd reports it,
// which must be a process of the host.
func (od *offloadedDocker) hostPid(t testing.TB, id string) int {
	t.Helper()
	pid, err := strconv.Atoi(strings.TrimSpace(od.must(t, "inspect", "-f", "{{.State.Pid}}", id)))
	if err != nil || pid <= 0 {
		t.Fatalf("the pid of %s: %v", id, err)
	}
	return pid
}

// keepHostDirs removes, when the test ends, the host directories the
// offload makes that did not exist before it.
func keepHostDirs(t testing.TB, dirs ...string) {
	for _, d := range dirs {
		if _, err := os.Lstat(d); errors.Is(err, os.ErrNotExist) {
			t.Cleanup(func() {
				if err := os.RemoveAll(d); err != nil {
					t.Logf("cleanup: %v", err)
				}
			})
		}
	}
}

// dockerOffload is the whole docker offload: containerd and qtfs-server
// on the host, the DPU with qtfs-client run and dockerd in its chroot.
type dockerOffload struct {
	net   *netPair
	pki   string
	root  string
	srv   *proc
	d     *offDPU
	run   *runDaemon
	od    *offloadedDocker
	image string // a docker import tarball of busybox
}

// newDockerOffload sets the offload up as deploy/README.md says, or skips
// the test with the reason when the machine lacks a part.
func newDockerOffload(t testing.TB) *dockerOffload {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	for _, b := range []string{"containerd", "runc", "/usr/sbin/dockerd", "/usr/bin/docker"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s: scripts/deps.sh installs docker.io, containerd and runc", b)
		}
	}
	if out, err := exec.Command("pgrep", "-x", "dockerd").Output(); err == nil {
		t.Skipf("a dockerd runs on this machine (pid %s): the test would share /var/lib/docker with it", strings.TrimSpace(string(out)))
	}
	keepHostDirs(t, "/var/lib/docker", "/run/docker", "/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/etc/docker")
	hostContainerd(t)
	o := &dockerOffload{net: newNetPair(t)}
	o.pki = pki(t, o.net.HostIP)
	o.root = filepath.Join(hostDir(t), "root")
	serverConfig, clientConfig := offloadConfigs(t, o.net.HostIP, o.pki, o.root)
	o.srv = start(t, "nsenter", "--net=/run/netns/"+o.net.Host, "--", bin("qtfs-server"), "--config", serverConfig, "--log-format", "console")
	o.srv.waitFor(t, "qtfs-server ready", 20*time.Second)
	o.d = newOffDPU(t, o.net.DPU)
	o.run = o.d.startRun(t, clientConfig)
	o.image = busyboxImage(t, o.pki)
	o.od = startDockerd(t, t, o.d, o.root)
	// Whatever a failed step leaves: the containers (dockerd, started
	// again by a step, is stopped by its own cleanup).
	t.Cleanup(func() {
		if out, _ := o.od.docker("ps", "-aq"); strings.TrimSpace(out) != "" {
			o.od.docker(append([]string{"rm", "-f"}, strings.Fields(out)...)...)
		}
	})
	return o
}

// TestOffloadDocker: Debian's dockerd, unmodified, in the DPU's chroot,
// runs containers on the host.
func TestOffloadDocker(t *testing.T) {
	o := newDockerOffload(t)
	top, d, root, srv, run, image, od := t, o.d, o.root, o.srv, o.run, o.image, o.od

	t.Run("info", func(t *testing.T) {
		out := od.must(t, "info", "--format", "{{.Driver}} {{.CgroupVersion}} {{.KernelVersion}}")
		if !strings.HasPrefix(out, "overlay2 ") {
			t.Fatalf("docker info: %s", out)
		}
	})
	const img = "qtfs-e2e/busybox:latest"
	t.Run("import", func(t *testing.T) {
		od.must(t, "import", image, img)
		if out := od.must(t, "images", "--format", "{{.Repository}}:{{.Tag}}"); !strings.Contains(out, img) {
			t.Fatalf("images: %s", out)
		}
		// The layers are the host's files.
		if ents, err := os.ReadDir("/var/lib/docker/overlay2/l"); err != nil || len(ents) == 0 {
			t.Fatalf("no overlay2 layer on the host: %v %v", ents, err)
		}
		// overlay2's probe of the host's overlay (opaque directories,
		// redirects, through the DPU's view of the upper layer) passed.
		if strings.Contains(od.p.output(), "Not using native diff") {
			t.Errorf("dockerd does not use overlay2's native diff:\n%s", od.tail())
		}
	})
	t.Run("run", func(t *testing.T) {
		out := od.must(t, "run", "--rm", "--network", "none", img, "echo", "hello from the host")
		if out != "hello from the host\n" {
			t.Fatalf("docker run: %q", out)
		}
	})
	t.Run("run with the default network", func(t *testing.T) {
		out := od.must(t, "run", "--rm", img, "sh", "-c", "echo ok; ls /sys/class/net")
		if out != "ok\nlo\n" {
			t.Fatalf("docker run: %q", out)
		}
	})
	t.Run("run with the host's network", func(t *testing.T) {
		hostNet, _ := os.Readlink("/proc/self/ns/net")
		id := strings.TrimSpace(od.must(t, "run", "-d", "--network", "host", img, "sleep", "600"))
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", od.hostPid(t, id)))
		if err != nil || ns != hostNet {
			t.Fatalf("the container's network namespace %q, %v; the host's %q", ns, err, hostNet)
		}
		od.must(t, "rm", "-f", id)
	})
	t.Run("run -d, logs, exec, top, stop", func(t *testing.T) {
		id := strings.TrimSpace(od.must(t, "run", "-d", "--name", "e2e-d", img, "sh", "-c", "echo to stdout; echo to stderr >&2; exec sleep 600"))
		pid := od.hostPid(t, id)
		// The process is the host's, in a cgroup of the container, and
		// not a process of the DPU.
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || string(cmdline) != "sleep\x00600\x00" {
			t.Fatalf("host process %d: %q, %v", pid, cmdline, err)
		}
		if cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid)); !strings.Contains(string(cg), id) {
			t.Errorf("host process %d is not in the container's cgroup:\n%s", pid, cg)
		}
		if out, _ := d.sh(fmt.Sprintf("cat /proc/%d/cmdline 2>/dev/null", pid)); strings.Contains(out, "600") {
			t.Fatalf("the container's process is a DPU process too")
		}
		// Its root is the overlay dockerd mounted, made on the host.
		var st unix.Statfs_t
		if err := unix.Statfs(fmt.Sprintf("/proc/%d/root", pid), &st); err != nil || st.Type != unix.OVERLAYFS_SUPER_MAGIC {
			t.Errorf("the container's root is no overlay on the host: %#x, %v", st.Type, err)
		}
		if n := len(overlayMounts(t)); n == 0 {
			t.Errorf("no overlay under /var/lib/docker/overlay2 on the host while the container runs")
		}
		var logs string
		for i := 0; i < 50; i++ {
			if logs = od.must(t, "logs", id); strings.Contains(logs, "to stderr") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !strings.Contains(logs, "to stdout\n") || !strings.Contains(logs, "to stderr\n") {
			t.Fatalf("docker logs: %q", logs)
		}
		if out := od.must(t, "exec", id, "sh", "-c", "echo exec; echo exec-err >&2"); !strings.Contains(out, "exec\n") || !strings.Contains(out, "exec-err\n") {
			t.Fatalf("docker exec: %q", out)
		}
		if out := od.must(t, "top", id); !strings.Contains(out, "sleep 600") {
			t.Fatalf("docker top: %s", out)
		}
		od.must(t, "stop", "-t", "1", id)
		if out := od.must(t, "inspect", "-f", "{{.State.Status}}", id); strings.TrimSpace(out) != "exited" {
			t.Fatalf("after stop: %s", out)
		}
		od.must(t, "rm", id)
		if left := overlayMounts(t); len(left) > 0 {
			t.Errorf("docker rm left overlays mounted on the host: %v", left)
		}
	})
	t.Run("run -i", func(t *testing.T) {
		out, err := od.dockerIn("line one\nline two\n", "run", "-i", "--rm", "--network", "none", img, "cat")
		if err != nil || out != "line one\nline two\n" {
			t.Fatalf("docker run -i: %q, %v\n%s", out, err, od.tail())
		}
	})
	t.Run("run -t", func(t *testing.T) {
		out := od.must(t, "run", "-t", "--rm", "--network", "none", img, "tty")
		if !strings.HasPrefix(out, "/dev/pts/") {
			t.Fatalf("docker run -t: %q", out)
		}
	})
	t.Run("attach", func(t *testing.T) {
		id := strings.TrimSpace(od.must(t, "run", "-d", "--network", "none", img, "sh", "-c", "sleep 2; echo attached; sleep 1"))
		if out := od.must(t, "attach", id); !strings.Contains(out, "attached\n") {
			t.Fatalf("docker attach: %q", out)
		}
		od.must(t, "rm", "-f", id)
	})
	t.Run("cp", func(t *testing.T) {
		id := strings.TrimSpace(od.must(t, "run", "-d", "--network", "none", img, "sleep", "600"))
		src := filepath.Join(t.TempDir(), "cp-in") // a file of the DPU, read by the docker CLI
		writeFile(t, src, "copied in\n")
		od.must(t, "cp", src, id+":/tmp/cp-in")
		if out := od.must(t, "exec", id, "cat", "/tmp/cp-in"); out != "copied in\n" {
			t.Fatalf("after docker cp: %q", out)
		}
		od.must(t, "rm", "-f", id)
	})

	t.Run("a bind volume lands on the host", func(t *testing.T) {
		// Beneath a qtfs mount: dockerd makes the missing source through
		// it, on the host, where runc then binds it.
		src := "/var/lib/docker/qtfs-e2e-volume-" + randHex(3)
		t.Cleanup(func() { os.RemoveAll(src) })
		od.must(t, "run", "--rm", "--network", "none", "-v", src+":/data", img, "sh", "-c", "echo written in the container > /data/f")
		if b, err := os.ReadFile(src + "/f"); err != nil || string(b) != "written in the container\n" {
			t.Fatalf("the host's %s/f: %q, %v", src, b, err)
		}
	})
	t.Run("dockerd restart with live-restore", func(t *testing.T) {
		od.stop(t)
		od = startDockerd(t, top, d, root, "--live-restore")
		id := strings.TrimSpace(od.must(t, "run", "-d", "--network", "none", img, "sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done"))
		pid := od.hostPid(t, id)
		od.stop(t)
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			t.Fatalf("the container's process ended with dockerd despite live-restore: %v", err)
		}
		od = startDockerd(t, top, d, root, "--live-restore")
		if got := od.hostPid(t, id); got != pid {
			t.Fatalf("after the restart the container's pid is %d, want %d", got, pid)
		}
		// The output keeps coming, through the FIFOs bridged again.
		before := strings.Count(od.must(t, "logs", id), "tick")
		time.Sleep(1500 * time.Millisecond)
		if after := strings.Count(od.must(t, "logs", id), "tick"); after <= before {
			t.Fatalf("no output after the restart (%d lines, then %d)\n%s", before, after, od.tail())
		}
		if out := od.must(t, "exec", id, "echo", "still here"); out != "still here\n" {
			t.Fatalf("exec after the restart: %q", out)
		}
		od.must(t, "rm", "-f", id)
	})
	t.Run("dockerd restart, ps -a", func(t *testing.T) {
		id := strings.TrimSpace(od.must(t, "create", "--network", "none", "--name", "e2e-kept", img, "true"))
		od.stop(t)
		od = startDockerd(t, top, d, root)
		if out := od.must(t, "ps", "-a", "--format", "{{.ID}} {{.Names}}"); !strings.Contains(out, "e2e-kept") {
			t.Fatalf("after the restart, ps -a: %s", out)
		}
		od.must(t, "start", "-a", id)
		od.must(t, "rm", id)
	})

	t.Run("teardown leaves nothing", func(t *testing.T) {
		od.must(t, "rmi", img)
		od.stop(t)
		run.stop(t, syscall.SIGTERM)
		if left := d.mountsUnder(root); len(left) > 0 {
			t.Fatalf("still mounted: %v", left)
		}
		if left := overlayMounts(t); len(left) > 0 {
			t.Errorf("overlays left mounted on the host: %v", left)
		}
		if out := d.mustSh("cat /proc/net/unix"); strings.Contains(out, root) {
			t.Errorf("a socket under the chroot still listens:\n%s", out)
		}
		// No shim of dockerd's containerd namespace is left on the host,
		// nor any process of the DPU but its pid 1.
		for _, pid := range allPids() {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmd), "-namespace\x00moby\x00") {
				t.Errorf("a shim of dockerd's containers is left on the host: %d %q", pid, cmd)
			}
		}
		for _, comm := range strings.Fields(d.mustSh("ps -e -o comm=")) {
			if comm != "sleep" && comm != "sh" && comm != "ps" { // pid 1, and this look
				t.Errorf("a process is left on the DPU: %s", comm)
			}
		}
		if ents, _ := os.ReadDir("/run/docker/containerd"); len(ents) > 0 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("stdio FIFO directories left on the host: %v", names)
		}
		sc := bufio.NewScanner(strings.NewReader(srv.output()))
		for sc.Scan() {
			if strings.Contains(sc.Text(), "panic") {
				t.Errorf("server: %s", sc.Text())
			}
		}
	})
}

// overlayMounts lists the host's mounts beneath /var/lib/docker/overlay2.
func overlayMounts(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], "/var/lib/docker/overlay2/") {
			out = append(out, f[4])
		}
	}
	return out
}

// allPids lists the processes of the host.
func allPids() []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}
