package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
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

// offDPU is a DPU with its own pid namespace too (the harness's dpu has
// mount and network namespaces only): the host's processes are then
// visible on the DPU only through the host's /proc.
type offDPU struct {
	t      testing.TB
	holder *exec.Cmd // unshare, whose child is pid 1 of the namespace
	init   int       // that child's pid, as the host sees it
}

func newOffDPU(t testing.TB, netns string) *offDPU {
	t.Helper()
	d := &offDPU{t: t}
	// --kill-child: when unshare dies, the namespace's pid 1 dies, and
	// with it every process of the DPU, and its mount namespace.
	d.holder = exec.Command("ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private",
		"--pid", "--fork", "--kill-child", "--mount-proc", "--", "sleep", "infinity")
	if err := d.holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.holder.Process.Kill(); d.holder.Wait() })
	own, _ := os.Readlink("/proc/self/ns/pid")
	for i := 0; ; i++ {
		for _, c := range childrenOf(d.holder.Process.Pid) {
			ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", c))
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c))
			if ns != "" && ns != own && strings.HasSuffix(exe, "/sleep") {
				d.init = c
			}
		}
		if d.init != 0 {
			break
		}
		if i > 300 {
			t.Fatal("the DPU namespace holder did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return d
}

// stopChild stops the daemon that runs under p (nsenter, which runs it
// in the DPU's pid namespace) as systemctl stop would: SIGTERM to the
// child whose executable is named exe, SIGKILL once grace has passed.
// Not finding it, or its outliving grace, fails t.
func stopChild(t testing.TB, p *proc, exe string, grace time.Duration) {
	t.Helper()
	var pid int
	for _, c := range childrenOf(p.cmd.Process.Pid) {
		if e, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); strings.HasSuffix(e, "/"+exe) {
			pid = c
		}
	}
	if pid == 0 {
		t.Errorf("cannot find %s under nsenter:\n%s", exe, tail(p.output(), 80))
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		syscall.Kill(pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("%s did not stop on SIGTERM within %v:\n%s", exe, grace, tail(p.output(), 80))
	}
}

// childrenOf lists the pids whose parent is pid.
func childrenOf(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// cmd runs a command in the DPU's mount, network and pid namespaces.
func (d *offDPU) cmd(name string, args ...string) *exec.Cmd {
	a := append([]string{"-t", strconv.Itoa(d.init), "-m", "-n", "-p", "--", name}, args...)
	return exec.Command("nsenter", a...)
}

func (d *offDPU) sh(script string) (string, error) {
	out, err := d.cmd("sh", "-c", script).CombinedOutput()
	return string(out), err
}

func (d *offDPU) mustSh(script string) string {
	d.t.Helper()
	out, err := d.sh(script)
	if err != nil {
		d.t.Fatalf("dpu: %s: %v\n%s", script, err, out)
	}
	return out
}

// chroot runs a shell script inside the offload chroot, with the PATH of
// a login shell and the client config for rexec.
func (d *offDPU) chroot(root, config, script string) (string, error) {
	cmd := d.cmd("chroot", root, "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "QTFS_CONFIG=" + config, "HOME=/"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// runDaemon is a `qtfs-client run` started on the DPU.
type runDaemon struct {
	p   *proc
	pid int // the daemon (nsenter forks it into the pid namespace)
}

func (d *offDPU) startRun(t testing.TB, config string) *runDaemon {
	t.Helper()
	cmd := d.cmd(bin("qtfs-client"), "run", "--config", config)
	p := start(t, cmd.Path, cmd.Args[1:]...)
	r := &runDaemon{p: p}
	// Runs before start's cleanup stops nsenter: the daemon tears its
	// chroot down on SIGTERM; SIGKILL by pid if it does not end.
	t.Cleanup(func() {
		if r.pid == 0 {
			return
		}
		r.signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			t.Errorf("cleanup: qtfs-client run %d did not end on SIGTERM; killing it", r.pid)
			r.signal(syscall.SIGKILL)
			<-p.done
		}
		r.pid = 0
	})
	p.waitFor(t, "qtfs-client run ready", 60*time.Second)
	for _, c := range childrenOf(p.cmd.Process.Pid) {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", c)); strings.HasSuffix(exe, "/qtfs-client") {
			r.pid = c
		}
	}
	if r.pid == 0 {
		t.Fatal("cannot find the qtfs-client run process under nsenter")
	}
	return r
}

func (r *runDaemon) signal(sig syscall.Signal) {
	if r.pid != 0 {
		syscall.Kill(r.pid, sig)
	}
}

// stop sends SIGTERM and waits for the daemon to exit.
func (r *runDaemon) stop(t testing.TB, sig syscall.Signal) {
	t.Helper()
	r.signal(sig)
	select {
	case <-r.p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("qtfs-client run did not exit after %v:\n%s", sig, r.p.output())
	}
	r.pid = 0
}

// mountsUnder lists the DPU's mounts at or beneath dir, with counts.
func (d *offDPU) mountsUnder(dir string) map[string]int {
	out := d.mustSh("cat /proc/self/mountinfo")
	m := map[string]int{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			m[f[4]]++
		}
	}
	return m
}

// hostCgroup makes a cgroup on the host and returns the directory that
// holds it, and its path as /proc/PID/cgroup shows it.
func hostCgroup(t *testing.T) (dir, rel string) {
	t.Helper()
	base := "/sys/fs/cgroup"
	if _, err := os.Stat(base + "/cgroup.controllers"); err != nil {
		base = "/sys/fs/cgroup/pids" // cgroup v1
		if _, err := os.Stat(base + "/cgroup.procs"); err != nil {
			t.Skip("no cgroup v2 nor a v1 pids hierarchy under /sys/fs/cgroup")
		}
	}
	rel = "/qtfs-e2e-" + randHex(4)
	dir = base + rel
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Skipf("cannot make a host cgroup: %v", err)
	}
	t.Cleanup(func() {
		for i := 0; i < 100 && os.Remove(dir) != nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	})
	return dir, rel
}

// TestOffload builds the whole offload environment from one config, with
// the DPU side in its own network, mount and pid namespaces, and runs a
// program inside the chroot that sees the host's world: its processes
// through /proc, a cgroup, an HTTP server that listens only on the host
// (through a socket proxy), a host binary through a shim. It crashes the
// daemon, starts it again (the mounts are repaired, not stacked) and
// stops it: nothing is left mounted or listening.
func TestOffload(t *testing.T) {
	needMachine(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl (the HTTP client run inside the chroot): scripts/deps.sh installs it")
	}
	data := hostDir(t)
	os.WriteFile(filepath.Join(data, "greeting"), []byte("hello from the host\n"), 0o644)
	hostOnly := hostDir(t)
	sock := filepath.Join(hostOnly, "http.sock")
	e := newEnvWith(t, []string{"--socket-allow", sock, "--exec-allow", "kill"}, "/proc", "/sys/fs/cgroup", data)
	d := newOffDPU(t, e.net.DPU)

	// The host-only HTTP server, on a tmpfs mounted after the DPU's mount
	// namespace was made: the DPU cannot see the socket file.
	if err := unix.Mount("tmpfs", hostOnly, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(hostOnly, unix.MNT_DETACH) })
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host http: %s %s\n", r.Method, r.URL.Path)
	})}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	if out, err := d.sh("test -e " + sock); err == nil {
		t.Fatalf("the DPU sees the host-only socket %s (%s)", sock, out)
	}

	// A host process in a host cgroup.
	cgDir, cgRel := hostCgroup(t)
	marker := start(t, "sleep", "3607")
	mpid := marker.cmd.Process.Pid
	if err := os.WriteFile(cgDir+"/cgroup.procs", []byte(strconv.Itoa(mpid)), 0); err != nil {
		t.Fatal(err)
	}

	root := filepath.Join(hostDir(t), "root")
	runtimeDir := t.TempDir()
	config := filepath.Join(e.pki, "client.yaml")
	writeFile(t, config, fmt.Sprintf(`# qtfs-client run, e2e
server: %[1]s
tls_cert: %[2]s/client.pem
tls_key: %[2]s/client-key.pem
tls_ca: %[2]s/ca.pem
runtime_dir: %[3]s
log_format: console
root: %[4]s
binds: ["/usr:ro", "/bin:ro", "/sbin:ro", "/lib:ro", "/lib64:ro,optional", "/etc:ro", "%[2]s:ro"]
tmpfs: ["/run", "/tmp:1777"]
mounts:
  - /proc
  - /sys/fs/cgroup
  - %[5]s
proxies:
  - listen: /run/app/http.sock
    host: %[6]s
    mode: "0666"
shims: [kill]
rexec: %[7]s
`, e.uri, e.pki, runtimeDir, root, data, sock, bin("rexec")))

	first := d.startRun(t, config)
	// A crash: SIGKILL leaves stale FUSE mounts and a stale socket file.
	first.stop(t, syscall.SIGKILL)
	if n := d.mountsUnder(root); len(n) == 0 {
		t.Fatal("nothing left mounted after SIGKILL: the crash test tests nothing")
	}
	daemon := d.startRun(t, config)
	if out := daemon.p.output(); !strings.Contains(out, "detaching a stale mount whose daemon is gone") || !strings.Contains(out, "chroot: kept") {
		t.Errorf("the second run did not repair and keep:\n%s", out)
	}
	for mp, n := range d.mountsUnder(root) {
		if n > 1 && !strings.HasPrefix(mp, root+"/dev/") { // the DPU's own /dev may stack
			t.Errorf("%s is mounted %d times after the second run", mp, n)
		}
	}

	t.Run("the host's processes through /proc", func(t *testing.T) {
		out, err := d.chroot(root, config, fmt.Sprintf(`
			ls /proc | grep -c '^[0-9]*$'; ls /local_proc | grep -c '^[0-9]*$'
			tr '\0' ' ' < /proc/%[1]d/cmdline; echo
			test -e /local_proc/%[1]d && echo "on the DPU too"; true`, mpid))
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		f := strings.Split(strings.TrimSpace(out), "\n")
		hostN, _ := strconv.Atoi(f[0])
		dpuN, _ := strconv.Atoi(f[1])
		if len(f) != 3 || f[2] != "sleep 3607" || hostN <= dpuN {
			t.Fatalf("inside the chroot: /proc has %d processes, /local_proc %d, the host's sleep is %q:\n%s", hostN, dpuN, f[2], out)
		}
	})

	t.Run("a host cgroup", func(t *testing.T) {
		out, err := d.chroot(root, config, fmt.Sprintf(`grep -F '%[2]s' /proc/%[1]d/cgroup >/dev/null && cat /sys/fs/cgroup/%[3]s/cgroup.procs`,
			mpid, cgRel, strings.TrimPrefix(cgDir, "/sys/fs/cgroup/")))
		if err != nil || strings.TrimSpace(out) != strconv.Itoa(mpid) {
			t.Fatalf("cgroup.procs of %s through the chroot: %q, %v", cgRel, out, err)
		}
	})

	t.Run("HTTP over the proxied socket", func(t *testing.T) {
		out, err := d.chroot(root, config, `curl -sS --max-time 20 --unix-socket /run/app/http.sock http://host/v1/ping`)
		if err != nil || out != "host http: GET /v1/ping\n" {
			t.Fatalf("curl: %q, %v", out, err)
		}
		out, err = d.chroot(root, config, `head -c 3000000 /dev/zero | curl -sS --max-time 20 --unix-socket /run/app/http.sock --data-binary @- http://host/upload`)
		if err != nil || out != "host http: POST /upload\n" {
			t.Fatalf("curl POST: %q, %v", out, err)
		}
	})

	t.Run("a host file at its host path", func(t *testing.T) {
		out, err := d.chroot(root, config, "cat "+filepath.Join(data, "greeting"))
		if err != nil || out != "hello from the host\n" {
			t.Fatalf("%q, %v", out, err)
		}
	})

	t.Run("status", func(t *testing.T) {
		out, err := d.cmd(bin("qtfs-client"), "status", "--runtime-dir", runtimeDir, "--config", "/dev/null").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, w := range []string{root + "/proc", root + "/run/app/http.sock", sock, e.uri, "ready"} {
			if !strings.Contains(string(out), w) {
				t.Errorf("status does not show %q:\n%s", w, out)
			}
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, root) && strings.Contains(l, "stale") {
				t.Errorf("status shows a mount of the chroot as stale: %s", l)
			}
		}
	})

	t.Run("a host binary through a shim", func(t *testing.T) {
		// /usr/local/sbin/kill is a link to rexec: the kill runs on the
		// host, where the pid exists (it does not in the DPU's pid
		// namespace).
		out, err := d.chroot(root, config, fmt.Sprintf(`readlink /usr/local/sbin/kill; env kill -TERM %d`, mpid))
		if err != nil || !strings.HasPrefix(out, "rexec\n") {
			t.Fatalf("kill through the shim: %q, %v", out, err)
		}
		select {
		case <-marker.done:
		case <-time.After(10 * time.Second):
			t.Fatal("the host process is still alive")
		}
	})

	t.Run("teardown leaves nothing mounted or listening", func(t *testing.T) {
		daemon.stop(t, syscall.SIGTERM)
		if code := daemon.p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("qtfs-client run exited %d:\n%s", code, daemon.p.output())
		}
		if left := d.mountsUnder(root); len(left) > 0 {
			t.Fatalf("still mounted: %v", left)
		}
		if out := d.mustSh("cat /proc/net/unix"); strings.Contains(out, root) {
			t.Fatalf("a socket under the root is still listening:\n%s", out)
		}
		if _, err := os.Lstat(filepath.Join(root, "run/app/http.sock")); err == nil {
			t.Fatal("the proxy's socket file is left")
		}
	})
}

func writeFile(t testing.TB, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestOffloadConfigErrors shows that a wrong config is refused, with the
// file, line, key and reason, before anything is mounted.
func TestOffloadConfigErrors(t *testing.T) {
	needMachine(t)
	data := hostDir(t)
	e := newEnvWith(t, []string{"--socket-allow", "/run/qtfs-e2e-allowed.sock"}, data)
	d := newOffDPU(t, e.net.DPU)
	root := filepath.Join(hostDir(t), "root")
	base := fmt.Sprintf("server: %s\ntls_cert: %[2]s/client.pem\ntls_key: %[2]s/client-key.pem\ntls_ca: %[2]s/ca.pem\nruntime_dir: %[3]s\nroot: %[4]s\ntmpfs: [/run]\n",
		e.uri, e.pki, t.TempDir(), root)
	for _, tc := range []struct {
		name, extra string
		want        []string
	}{
		{"unknown key", "mountpoints: [/x]\n", []string{"client.yaml: line 8: unknown key mountpoints"}},
		{"not exported", "mounts: [" + data + ", /var/lib/docker]\n", []string{"client.yaml:8: mounts[1]: the server: /var/lib/docker is not exported (exports: " + data + ")"}},
		{"duplicate mount point", "mounts: [" + data + ", " + data + "]\n", []string{"client.yaml:8: mounts[1]: duplicate mount point " + data + " (also mounts[0])"}},
		{"socket not allowed", "proxies:\n  - listen: /run/x.sock\n    host: /run/other.sock\n", []string{"client.yaml:10: proxies[0].host: /run/other.sock is not allowed by the server (its --socket-allow list has /run/qtfs-e2e-allowed.sock)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			config := filepath.Join(t.TempDir(), "client.yaml")
			writeFile(t, config, base+tc.extra)
			cmd := d.cmd(bin("qtfs-client"), "run", "--config", config)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2:\n%s", err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
			if !strings.Contains(string(out), "nothing was mounted") && !strings.Contains(string(out), "unknown key") {
				t.Errorf("output does not say nothing was mounted:\n%s", out)
			}
			if left := d.mountsUnder(root); len(left) > 0 {
				t.Fatalf("mounted despite the error: %v", left)
			}
		})
	}
}

// ctrinitImage writes an OCI image archive named name whose one layer
// holds the static binary bin at /ctrinit, and returns its path.
func ctrinitImage(t *testing.T, dir, bin, name string) string {
	t.Helper()
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "ctrinit", Mode: 0o755, Size: int64(len(exe)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
	tw.Write(exe)
	tw.Close()
	p := filepath.Join(dir, "ctrinit-layer.tar")
	if err := os.WriteFile(p, layer.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return ociImage(t, dir, name, p, nil, []string{"/ctrinit", "sleep"})
}

// TestOffloadContainerd drives Debian's containerd, a server no one here
// wrote, running on the host, with Debian's ctr from inside the DPU's
// chroot, through the proxied containerd socket.
func TestOffloadContainerd(t *testing.T) {
	needMachine(t)
	containerd, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("needs containerd and ctr on the host: scripts/deps.sh installs them (apt-get install containerd)")
	}
	ctrBin, err := exec.LookPath("ctr")
	if err != nil {
		t.Skip("needs ctr: apt-get install containerd")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("needs runc: apt-get install runc")
	}
	// containerd on the host, with everything of its own under a temp dir.
	cdir := hostDir(t)
	csock := filepath.Join(cdir, "containerd.sock")
	writeFile(t, filepath.Join(cdir, "config.toml"), fmt.Sprintf(`version = 2
root = "%[1]s/root"
state = "%[1]s/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "%[2]s"
[ttrpc]
  address = "%[2]s.ttrpc"
`, cdir, csock))
	ns := "qtfs-e2e-" + randHex(3)
	id := "qtfs-e2e-" + randHex(4)
	hostCtr := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, ctrBin, append([]string{"--address", csock, "-n", ns}, args...)...).CombinedOutput()
		return string(out), err
	}
	t0 := time.Now()
	cd := start(t, containerd, "--config", filepath.Join(cdir, "config.toml"), "--log-level", "warn")
	for i := 0; ; i++ {
		if _, err := hostCtr("version"); err == nil {
			break
		}
		if i > 300 {
			t.Fatalf("containerd did not answer:\n%s", cd.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("containerd answers after %v", time.Since(t0).Round(time.Millisecond))
	// Runs before containerd is stopped (cleanups run last first).
	t.Cleanup(func() {
		// Whatever the test left: the task, the container, mounts.
		hostCtr("task", "kill", "-s", "SIGKILL", id)
		time.Sleep(200 * time.Millisecond)
		hostCtr("task", "delete", "--force", id)
		hostCtr("container", "delete", id)
		ms, _ := os.ReadFile("/proc/self/mountinfo")
		for _, l := range strings.Split(string(ms), "\n") {
			if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], cdir+"/") {
				unix.Unmount(f[4], unix.MNT_DETACH)
			}
		}
		// A shim that outlived its task (the test failed before the
		// delete) is detached from containerd: stop it by pid.
		for _, pid := range runProcesses() {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cmd, []byte("-address\x00"+csock+"\x00")) {
				t.Logf("cleanup: killing containerd shim %d", pid)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		// runc leaves the namespace's (empty) cgroup behind.
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + ns)
		for _, d := range append(dirs, "/sys/fs/cgroup/"+ns) {
			os.Remove(d)
		}
	})

	// containerd's root is exported and mounted at its host path, as
	// /var/lib/containerd would be: ctr mounts a snapshot to read the
	// image's /etc/passwd when it makes a container.
	e := newEnvWith(t, []string{"--socket-allow", csock}, cdir)
	d := newOffDPU(t, e.net.DPU)

	// The image: a static binary, as an OCI layout tarball.
	initBin := filepath.Join(e.pki, "ctrinit")
	build := exec.Command("go", "build", "-o", initBin, "./test/e2e/testdata/ctrinit")
	build.Dir = moduleRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the container's binary: %v\n%s", err, out)
	}
	image := "docker.io/library/qtfs-e2e:latest"
	tarball := ctrinitImage(t, e.pki, initBin, image)

	root := filepath.Join(hostDir(t), "root")
	config := filepath.Join(e.pki, "client.yaml")
	writeFile(t, config, fmt.Sprintf(`server: %[1]s
tls_cert: %[2]s/client.pem
tls_key: %[2]s/client-key.pem
tls_ca: %[2]s/ca.pem
runtime_dir: %[3]s
log_format: console
root: %[4]s
binds: ["/usr:ro", "/bin:ro", "/sbin:ro", "/lib:ro", "/lib64:ro,optional", "/etc:ro", "%[2]s:ro"]
tmpfs: ["/run", "/tmp:1777"]
mounts: ["%[6]s"]
proxies:
  - listen: /run/containerd/containerd.sock
    host: %[5]s
`, e.uri, e.pki, t.TempDir(), root, csock, cdir))
	daemon := d.startRun(t, config)

	ctr := func(args ...string) string {
		t.Helper()
		a := append([]string{"chroot", root, "ctr", "--address", "/run/containerd/containerd.sock", "-n", ns}, args...)
		cmd := d.cmd(a[0], a[1:]...)
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CONTAINERD_SNAPSHOTTER=native", "HOME=/"}
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		t.Logf("ctr %s: %v", strings.Join(args, " "), time.Since(t0).Round(time.Millisecond))
		if err != nil {
			t.Fatalf("ctr %s (in the DPU's chroot): %v\n%s\ncontainerd:\n%s", strings.Join(args, " "), err, out, cd.output())
		}
		return string(out)
	}
	if out := ctr("version"); !strings.Contains(out, "Server:") || !strings.Contains(out, "Revision:") {
		t.Fatalf("ctr version:\n%s", out)
	}
	ctr("images", "import", "--snapshotter", "native", tarball)
	if out := ctr("images", "ls", "-q"); !strings.Contains(out, image) {
		t.Fatalf("the imported image is not listed:\n%s", out)
	}
	ctr("run", "-d", "--null-io", "--snapshotter", "native", image, id)
	var pid int
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out := ctr("task", "ls")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == id && f[2] == "RUNNING" {
				pid, _ = strconv.Atoi(f[1])
			}
		}
		if pid > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task never ran:\n%s", out)
		}
	}
	// The container runs on the host.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err != nil || string(b) != "/ctrinit\x00sleep\x00" {
		t.Fatalf("host process %d: %q, %v", pid, b, err)
	}
	ctr("task", "kill", "-s", "SIGKILL", id)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		out := ctr("task", "ls")
		if strings.Contains(out, "STOPPED") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task did not stop:\n%s", out)
		}
	}
	ctr("task", "delete", id)
	ctr("container", "delete", id)
	if out := ctr("container", "ls", "-q"); strings.Contains(out, id) {
		t.Fatalf("the container is still listed:\n%s", out)
	}
	ctr("images", "rm", image)
	if st := daemon.p.output(); strings.Contains(st, "fd passing") {
		t.Errorf("fd passing was attempted:\n%s", st)
	}
	daemon.stop(t, syscall.SIGTERM)
	if left := d.mountsUnder(root); len(left) > 0 {
		t.Fatalf("still mounted: %v", left)
	}
}

// TestDeployUnits runs systemd-analyze verify on the units in deploy/,
// with their binaries replaced by the ones built for this run (dockerd by
// a stand-in when it is not installed).
func TestDeployUnits(t *testing.T) {
	needMachine(t)
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("needs systemd-analyze: apt-get install systemd")
	}
	dir := t.TempDir()
	dockerd, err := exec.LookPath("dockerd")
	if err != nil {
		dockerd = filepath.Join(dir, "dockerd")
		writeFile(t, dockerd, "#!/bin/sh\n")
		os.Chmod(dockerd, 0o755)
	}
	units, _ := filepath.Glob(filepath.Join(moduleRoot(t), "deploy", "systemd", "*.service"))
	if len(units) < 3 {
		t.Fatalf("deploy/systemd has %d units", len(units))
	}
	var names []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.NewReplacer("/usr/bin/qtfs-server", bin("qtfs-server"), "/usr/bin/qtfs-client", bin("qtfs-client"),
			"/usr/sbin/dockerd", dockerd).Replace(string(b))
		for _, want := range []string{"Restart=", "Description="} {
			if !strings.Contains(s, want) {
				t.Errorf("%s has no %s", filepath.Base(u), want)
			}
		}
		if strings.HasPrefix(filepath.Base(u), "qtfs-") && !strings.Contains(s, "Type=notify") {
			t.Errorf("%s does not wait for readiness (Type=notify)", filepath.Base(u))
		}
		p := filepath.Join(dir, filepath.Base(u))
		writeFile(t, p, s)
		names = append(names, p)
	}
	out, err := exec.Command(analyze, append([]string{"verify"}, names...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestDeployConfigs checks the example configs: the client's with
// `qtfs-client run --check`, the server's through qtfs-server's own
// config loader (an unknown key or a bad export fails it) and against the
// client's mounts and proxies.
func TestDeployConfigs(t *testing.T) {
	needMachine(t)
	root := moduleRoot(t)
	b, err := os.ReadFile(filepath.Join(root, "deploy/config/client.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(t.TempDir(), "client.yaml")
	writeFile(t, client, strings.ReplaceAll(string(b), "/usr/bin/rexec", bin("rexec")))
	out, err := exec.Command(bin("qtfs-client"), "run", "--check", "--config", client).CombinedOutput()
	if err != nil {
		t.Fatalf("qtfs-client run --check: %v\n%s", err, out)
	}
	for _, want := range []string{"remote    /proc", "remote    /sys/fs/cgroup", "proxy     /run/containerd/containerd.sock", "link      /usr/local/sbin/runc"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the plan has no %q:\n%s", want, out)
		}
	}
	// The server's config: every key known (a bad one makes it exit 2
	// before listening), every client mount exported, every proxy allowed.
	server := filepath.Join(root, "deploy/config/server.yaml")
	cmd := exec.Command(bin("qtfs-server"), "--config", server, "--listen", "unix:///nonexistent-dir-qtfs/x.sock", "--metrics-listen", "")
	sout, _ := cmd.CombinedOutput()
	if strings.Contains(string(sout), "unknown key") || strings.Contains(string(sout), "config ") {
		t.Fatalf("qtfs-server rejects deploy/config/server.yaml:\n%s", sout)
	}
	sb, _ := os.ReadFile(server)
	exports, allowed := yamlList(string(sb), "export"), yamlList(string(sb), "socket_allow")
	for _, m := range yamlList(string(b), "mounts") {
		p, _, _ := strings.Cut(m, ":")
		ok := false
		for _, e := range exports {
			e, _, _ = strings.Cut(e, ":")
			ok = ok || p == e || strings.HasPrefix(p, e+"/")
		}
		if !ok {
			t.Errorf("client mount %s is not exported by the example server config", p)
		}
	}
	if len(allowed) == 0 || !strings.Contains(string(b), "host: "+allowed[0]) {
		t.Errorf("the example proxy does not match socket_allow %q", allowed)
	}
}

// yamlList returns the items of a top-level "key:" list of "  - item" lines.
func yamlList(doc, key string) []string {
	var out []string
	in := false
	for _, l := range strings.Split(doc, "\n") {
		switch {
		case strings.HasPrefix(l, key+":"):
			in = true
		case in && strings.HasPrefix(l, "  - "):
			item := strings.TrimSpace(strings.TrimPrefix(l, "  - "))
			if i := strings.Index(item, " #"); i >= 0 {
				item = strings.TrimSpace(item[:i])
			}
			out = append(out, item)
		case in && strings.HasPrefix(l, "#"), in && strings.TrimSpace(l) == "":
		case in:
			in = false
		}
	}
	return out
}
