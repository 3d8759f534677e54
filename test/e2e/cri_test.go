package e2e

import (
	"bytes"
	"context"
	"encoding/json"
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

// The kubelet offload's CRI path: Debian's containerd with its CRI plugin
// on the host, reached from the DPU's chroot through the proxied
// /run/containerd/containerd.sock of deploy/config/client.yaml; the
// containers run on the host.

const (
	criPauseImage = "qtfs.e2e/pause:1"
	criImage      = "qtfs.e2e/busybox:1"
	criSock       = "/run/containerd/containerd.sock"
)

// kubeTools builds (once, then from Go's cache) kubelet and crictl with
// scripts/kube-tools.sh and returns their directory.
func kubeTools(t testing.TB) string {
	t.Helper()
	t0 := time.Now()
	cmd := exec.Command(filepath.Join(moduleRoot(t), "scripts", "kube-tools.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/kube-tools.sh: %v\n%s", err, stderr.String())
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Logf("kube tools built in %v", d.Round(time.Second))
	}
	return strings.TrimSpace(string(out))
}

// criOffload is the CRI side of the offload: containerd with CRI on the
// host, in the host's network namespace (its streaming server listens on
// the link the DPU reaches), qtfs-server and the DPU's qtfs-client run
// from deploy/'s configs, the kube tools bound into the chroot.
type criOffload struct {
	net    *netPair
	pki    string
	root   string
	tools  string
	config string // the client config
	cd     *proc  // containerd
	srv    *proc
	d      *offDPU
	run    *runDaemon
}

// newCRIOffload sets it up, or skips the test with the reason when the
// machine lacks a part.
func newCRIOffload(t testing.TB) *criOffload {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	for _, b := range []string{"containerd", "runc", "ctr"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("needs %s: scripts/deps.sh installs containerd and runc", b)
		}
	}
	if c, err := net.DialTimeout("unix", criSock, time.Second); err == nil {
		c.Close()
		t.Skipf("a containerd listens on %s: the test runs its own there", criSock)
	}
	o := &criOffload{tools: kubeTools(t)}
	keepHostDirs(t, "/var/lib/containerd", "/run/containerd", "/var/lib/kubelet", "/var/log/pods", "/var/log/containers",
		"/var/lib/docker", "/run/docker")
	o.net = newNetPair(t)
	o.pki = pki(t, o.net.HostIP)
	o.root = filepath.Join(hostDir(t), "root")
	o.startContainerd(t)
	serverConfig, clientConfig := offloadConfigs(t, o.net.HostIP, o.pki, o.root,
		[2]string{"  - /usr:ro", "  - /usr:ro\n  - " + o.tools + ":ro"})
	o.config = clientConfig
	o.srv = start(t, "nsenter", "--net=/run/netns/"+o.net.Host, "--", bin("qtfs-server"), "--config", serverConfig, "--log-format", "console")
	o.srv.waitFor(t, "qtfs-server ready", 20*time.Second)
	o.d = newOffDPU(t, o.net.DPU)
	o.run = o.d.startRun(t, clientConfig)
	return o
}

// startContainerd starts the host's containerd (startCRIContainerd) in
// the host's network namespace, its streaming server on the host's
// address of the link the DPU reaches.
func (o *criOffload) startContainerd(t testing.TB) {
	t.Helper()
	stream := fmt.Sprintf("stream_server_address = %q\n  stream_server_port = \"%d\"", o.net.HostIP, freePort(t))
	o.cd = startCRIContainerd(t, o.tools, hostDir(t), criSock, "", stream, o.net.Host)
}

// startCRIContainerd starts containerd with the CRI plugin as the offload
// wants it (see deploy/README.md), listening on sock: the cgroupfs
// driver, and stream (the streaming server's settings, "" for the
// default); base is the top of its config (root, state, the sockets; ""
// for the defaults), netns the network namespace it runs in ("" for this
// one). On a machine whose root lacks CAP_SYS_RESOURCE (this one) it sets
// restrict_oom_score_adj, without which runc fails every pod sandbox
// natively: CRI asks for oom_score_adj -998, which only CAP_SYS_RESOURCE
// may set ("can't get final child's PID from pipe: EOF"). The pause and
// container images are imported from archives the test makes (there is
// no registry). What a test leaves (pods, shims, mounts) is removed before
// containerd stops.
func startCRIContainerd(t testing.TB, tools, dir, sock, base, stream, netns string) *proc {
	t.Helper()
	restrict := "false"
	if !hasCap(unix.CAP_SYS_RESOURCE) {
		restrict = "true"
	}
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, fmt.Sprintf(`version = 2
%[1]s
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[2]q
  %[3]s
  restrict_oom_score_adj = %[4]s
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "%[5]s/cni-bin"
    conf_dir = "%[5]s/cni-conf"
`, base, criPauseImage, stream, restrict, dir))
	argv := []string{"containerd", "--config", cfg, "--log-level", "warn"}
	if netns != "" {
		argv = append([]string{"nsenter", "--net=/run/netns/" + netns, "--"}, argv...)
	}
	cd := start(t, argv[0], argv[1:]...)
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
	// Runs before containerd stops.
	t.Cleanup(func() { criCleanup(t, tools, sock, dir) })
	layer := busyboxImage(t, dir)
	for _, img := range []string{
		ociImage(t, dir, criPauseImage, layer, []string{"/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"}, nil),
		ociImage(t, dir, criImage, layer, nil, []string{"sh"}),
	} {
		if out, err := exec.Command("ctr", "--address", sock, "-n", "k8s.io", "images", "import", img).CombinedOutput(); err != nil {
			t.Fatalf("ctr images import: %v\n%s", err, out)
		}
	}
	return cd
}

// criCleanup removes the pods crictl on the host still sees through
// sock, stops the shims of that containerd that outlived them and
// unmounts what they left beneath /run/containerd, /var/lib/kubelet and
// dir.
func criCleanup(t testing.TB, tools, sock, dir string) {
	crictl := filepath.Join(tools, "crictl")
	ep := "unix://" + sock
	if out, _ := exec.Command(crictl, "-r", ep, "pods", "-q").Output(); len(bytes.TrimSpace(out)) > 0 {
		for _, id := range strings.Fields(string(out)) {
			exec.Command(crictl, "-r", ep, "stopp", id).Run()
			exec.Command(crictl, "-r", ep, "rmp", "-f", id).Run()
		}
	}
	for _, pid := range allPids() {
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cmd, []byte("-address\x00"+sock+"\x00")) {
			t.Logf("cleanup: killing shim %d", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, prefix := range []string{"/run/containerd/", "/var/lib/kubelet/", dir + "/"} {
		ms := hostMountsUnder(prefix)
		for i := len(ms) - 1; i >= 0; i-- { // the deepest, and the last stacked, first
			unix.Unmount(ms[i], unix.MNT_DETACH)
		}
	}
}

// crictl runs crictl in the DPU's chroot against the proxied socket, as
// the operator's shell on the DPU would, and returns its standard output
// (and its standard error when it fails).
func (o *criOffload) crictl(args ...string) (string, error) {
	out, errOut, err := o.crictlStreams(args...)
	if err != nil {
		return out + errOut, err
	}
	return out, nil
}

// crictlStreams is crictl with its standard output and error apart.
func (o *criOffload) crictlStreams(args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := o.d.cmd("chroot", append([]string{o.root, filepath.Join(o.tools, "crictl"),
		"--runtime-endpoint", "unix://" + criSock, "--image-endpoint", "unix://" + criSock, "--timeout", "30s"}, args...)...)
	cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

func (o *criOffload) mustCrictl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := o.crictl(args...)
	if err != nil {
		t.Fatalf("crictl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// criContainerPid is the host pid of a CRI container ("containerd://ID").
func criContainerPid(t testing.TB, o *criOffload, id string) int {
	t.Helper()
	id = strings.TrimPrefix(id, "containerd://")
	var st struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	out := o.mustCrictl(t, "inspect", id)
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Info.Pid <= 0 {
		t.Fatalf("crictl inspect %s: %v\n%s", id, err, out)
	}
	return st.Info.Pid
}

// hostMountsUnder lists the host's mount points beneath prefix.
func hostMountsUnder(prefix string) []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.HasPrefix(f[4], prefix) {
			out = append(out, f[4])
		}
	}
	return out
}

// hasCap reports whether this process has capability c in its effective
// set.
func hasCap(c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<c) != 0
		}
	}
	return false
}

// TestOffloadCRI: crictl in the DPU's chroot drives the host containerd's
// CRI plugin through the proxied socket: a pod sandbox and a container
// run on the host, their logs are read through qtfs, exec streams from
// the host's streaming server to the DPU, and stopping and removing them
// leaves nothing on the host.
func TestOffloadCRI(t *testing.T) {
	o := newCRIOffload(t)
	t.Run("version and info", func(t *testing.T) {
		if out := o.mustCrictl(t, "version"); !strings.Contains(out, "RuntimeName:  containerd") {
			t.Fatalf("crictl version: %s", out)
		}
		var info struct {
			Status struct {
				Conditions []struct {
					Type   string `json:"type"`
					Status bool   `json:"status"`
				} `json:"conditions"`
			} `json:"status"`
		}
		out := o.mustCrictl(t, "info")
		if err := json.Unmarshal([]byte(out), &info); err != nil {
			t.Fatalf("crictl info: %v\n%s", err, out)
		}
		for _, c := range info.Status.Conditions {
			if c.Type == "RuntimeReady" && !c.Status {
				t.Errorf("the runtime is not ready: %s", out)
			}
		}
	})
	t.Run("images imported on the host", func(t *testing.T) {
		if out := o.mustCrictl(t, "images"); !strings.Contains(out, "qtfs.e2e/busybox") || !strings.Contains(out, "qtfs.e2e/pause") {
			t.Fatalf("crictl images: %s", out)
		}
	})

	// A pod in the host's network namespace (CNI is not installed here),
	// logging beneath /var/log/pods, which the chroot mounts.
	uid := "e2e-" + randHex(4)
	logDir := "/var/log/pods/default_e2e-pod_" + uid
	cfgDir := filepath.Join(hostDir(t), "cri")
	os.MkdirAll(cfgDir, 0o755)
	podJSON := filepath.Join(cfgDir, "pod.json")
	ctrJSON := filepath.Join(cfgDir, "ctr.json")
	writeFile(t, podJSON, fmt.Sprintf(`{"metadata":{"name":"e2e-pod","namespace":"default","uid":%q,"attempt":0},
 "log_directory":%q,
 "linux":{"security_context":{"namespace_options":{"network":2}}}}`, uid, logDir))
	writeFile(t, ctrJSON, fmt.Sprintf(`{"metadata":{"name":"c1"},"image":{"image":%q},
 "command":["sh","-c","echo hello from the host; echo to stderr >&2; exec sleep 600"],"log_path":"c1/0.log","linux":{}}`, criImage))
	// crictl reads its configs on the DPU: they go to the chroot's /tmp.
	for _, f := range []string{podJSON, ctrJSON} {
		b, _ := os.ReadFile(f)
		if out, err := o.d.sh(fmt.Sprintf("cat > %s/tmp/%s <<'EOF'\n%s\nEOF", o.root, filepath.Base(f), b)); err != nil {
			t.Fatalf("copy %s into the chroot: %v %s", f, err, out)
		}
	}

	var pod, ctr string
	t.Run("runp, create, start, ps", func(t *testing.T) {
		pod = strings.TrimSpace(o.mustCrictl(t, "runp", "/tmp/pod.json"))
		ctr = strings.TrimSpace(o.mustCrictl(t, "create", pod, "/tmp/ctr.json", "/tmp/pod.json"))
		o.mustCrictl(t, "start", ctr)
		if out := o.mustCrictl(t, "ps", "--pod", pod); !strings.Contains(out, "Running") || !strings.Contains(out, "c1") {
			t.Fatalf("crictl ps: %s", out)
		}
		// The container's process is the host's, and not the DPU's.
		pid := criContainerPid(t, o, ctr)
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || string(cmdline) != "sleep\x00600\x00" {
			t.Fatalf("host process %d: %q, %v", pid, cmdline, err)
		}
		if out, _ := o.d.sh(fmt.Sprintf("cat /proc/%d/cmdline 2>/dev/null", pid)); strings.Contains(out, "600") {
			t.Fatal("the container's process is a DPU process too")
		}
	})
	if pod == "" || ctr == "" {
		t.FailNow()
	}
	t.Run("logs", func(t *testing.T) {
		var out, errOut string
		for i := 0; i < 50; i++ {
			// crictl logs gives each stream of the container on its own.
			if out, errOut, _ = o.crictlStreams("logs", ctr); strings.Contains(errOut, "to stderr") {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if out != "hello from the host\n" || !strings.Contains(errOut, "to stderr\n") {
			t.Fatalf("crictl logs: stdout %q, stderr %q", out, errOut)
		}
		if _, err := os.Stat(filepath.Join(logDir, "c1", "0.log")); err != nil {
			t.Errorf("the log is not the host's file: %v", err)
		}
	})
	t.Run("exec through the streaming server", func(t *testing.T) {
		if out := o.mustCrictl(t, "exec", ctr, "sh", "-c", "echo exec on the host; cat /proc/1/cmdline"); !strings.Contains(out, "exec on the host") {
			t.Fatalf("crictl exec: %q", out)
		}
		if out := o.mustCrictl(t, "exec", "--sync", ctr, "echo", "sync"); strings.TrimSpace(out) != "sync" {
			t.Fatalf("crictl exec --sync: %q", out)
		}
	})
	t.Run("stop, rm, stopp, rmp", func(t *testing.T) {
		o.mustCrictl(t, "stop", "--timeout", "1", ctr)
		if out := o.mustCrictl(t, "ps", "-a", "--pod", pod); !strings.Contains(out, "Exited") {
			t.Fatalf("after stop: %s", out)
		}
		o.mustCrictl(t, "rm", ctr)
		o.mustCrictl(t, "stopp", pod)
		o.mustCrictl(t, "rmp", pod)
		if out := o.mustCrictl(t, "pods", "-q"); strings.TrimSpace(out) != "" {
			t.Fatalf("pods left: %s", out)
		}
		for _, pid := range allPids() {
			if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cmd, []byte("-namespace\x00k8s.io\x00")) {
				t.Errorf("a shim is left on the host: %d %q", pid, cmd)
			}
		}
		if left := hostMountsUnder("/run/containerd/io.containerd."); len(left) > 0 {
			t.Errorf("mounts left on the host: %v", left)
		}
	})
	t.Run("teardown leaves nothing", func(t *testing.T) {
		o.run.stop(t, syscall.SIGTERM)
		if left := o.d.mountsUnder(o.root); len(left) > 0 {
			t.Fatalf("still mounted: %v", left)
		}
	})
}
