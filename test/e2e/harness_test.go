package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built for this run; skipReason is set when the
// machine cannot run these tests.
var binDir, skipReason string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		skipReason = checkMachine()
		if skipReason == "" {
			dir, err := os.MkdirTemp("", "qtfs-e2e-bin-")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			defer os.RemoveAll(dir)
			if err := buildBinaries(dir); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
			binDir = dir
		}
		return m.Run()
	}())
}

func checkMachine() string {
	if os.Geteuid() != 0 {
		return "needs root (network and mount namespaces, FUSE mounts): run as root"
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return "needs /dev/fuse: modprobe fuse"
	}
	for _, c := range []string{"ip", "unshare", "nsenter", "sha256sum", "setpriv"} {
		if _, err := exec.LookPath(c); err != nil {
			return fmt.Sprintf("needs %s: apt-get install iproute2 util-linux coreutils", c)
		}
	}
	return ""
}

func buildBinaries(dir string) error {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return fmt.Errorf("e2e: find module root: %w", err)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/...")
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("e2e: go build: %v\n%s", err, out)
	}
	return nil
}

func needMachine(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

func bin(name string) string { return filepath.Join(binDir, name) }

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// netPair is two network namespaces joined by a veth pair: "host" at
// HostIP and "dpu" at DPUIP.
type netPair struct {
	Host, DPU     string
	HostIP, DPUIP string
}

var subnetMu sync.Mutex
var nextSubnet = 1

func newNetPair(t *testing.T) *netPair {
	t.Helper()
	subnetMu.Lock()
	sub := nextSubnet
	nextSubnet++
	subnetMu.Unlock()
	id := randHex(3)
	p := &netPair{
		Host:   "qtfs-h-" + id,
		DPU:    "qtfs-d-" + id,
		HostIP: fmt.Sprintf("10.199.%d.1", sub),
		DPUIP:  fmt.Sprintf("10.199.%d.2", sub),
	}
	run(t, "ip", "netns", "add", p.Host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.Host).Run() })
	run(t, "ip", "netns", "add", p.DPU)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.DPU).Run() })
	vh, vd := "qh"+id, "qd"+id
	run(t, "ip", "link", "add", vh, "netns", p.Host, "type", "veth", "peer", "name", vd, "netns", p.DPU)
	for _, c := range [][]string{
		{"-n", p.Host, "addr", "add", p.HostIP + "/30", "dev", vh},
		{"-n", p.DPU, "addr", "add", p.DPUIP + "/30", "dev", vd},
		{"-n", p.Host, "link", "set", vh, "up"},
		{"-n", p.DPU, "link", "set", vd, "up"},
		{"-n", p.Host, "link", "set", "lo", "up"},
		{"-n", p.DPU, "link", "set", "lo", "up"},
	} {
		run(t, "ip", c...)
	}
	return p
}

// proc is a started process whose stderr is kept for the test log.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr bytes.Buffer
	lines  chan string
	done   chan struct{}
}

// start runs a command and keeps its stderr; cleanup stops it by pid.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(name, args...), lines: make(chan string, 1024), done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	p.cmd.Stdout = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() { p.cmd.Wait(); pw.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("output of %s:\n%s", filepath.Base(name), p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// waitFor waits until a line containing s is printed.
func (p *proc) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l := <-p.lines:
			if strings.Contains(l, s) {
				return
			}
		case <-p.done:
			if strings.Contains(p.output(), s) {
				return
			}
			t.Fatalf("process exited before printing %q:\n%s", s, p.output())
		case <-deadline:
			t.Fatalf("no %q after %v:\n%s", s, timeout, p.output())
		}
	}
}

// stop sends SIGTERM, then SIGKILL after a grace period.
func (p *proc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// dpu is the DPU side: a process holding its own mount namespace inside
// the DPU network namespace; commands run in both through nsenter.
type dpu struct {
	t       *testing.T
	holder  *exec.Cmd
	runtime string
}

func newDPU(t *testing.T, netns string) *dpu {
	t.Helper()
	d := &dpu{t: t, runtime: t.TempDir()}
	d.holder = exec.Command("ip", "netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	if err := d.holder.Start(); err != nil {
		t.Fatal(err)
	}
	// ip netns exec execs unshare which execs sleep: the pid stays, but the
	// namespace switch happens in between, so wait until it has.
	own, _ := os.Readlink("/proc/self/ns/mnt")
	for i := 0; ; i++ {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", d.holder.Process.Pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", d.holder.Process.Pid))
		if err == nil && ns != own && strings.HasSuffix(exe, "/sleep") {
			break
		}
		if i > 200 {
			t.Fatalf("DPU namespace holder did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		// Unmount every qtfs mount of the DPU namespace, then end it.
		out, _ := d.exec("sh", "-c", "awk '$3 ~ /^fuse.qtfs/ {print $2}' /proc/mounts")
		for _, mp := range strings.Fields(out) {
			if o, err := d.exec(bin("qtfs-client"), "umount", "--lazy", mp); err != nil {
				t.Logf("cleanup umount %s: %v %s", mp, err, o)
			}
		}
		d.holder.Process.Kill()
		d.holder.Wait()
	})
	return d
}

// cmd returns a command that runs inside the DPU's namespaces.
func (d *dpu) cmd(name string, args ...string) *exec.Cmd {
	a := append([]string{"-t", fmt.Sprint(d.holder.Process.Pid), "-m", "-n", "--", name}, args...)
	return exec.Command("nsenter", a...)
}

// exec runs a command on the DPU and returns its combined output.
func (d *dpu) exec(name string, args ...string) (string, error) {
	out, err := d.cmd(name, args...).CombinedOutput()
	return string(out), err
}

// must runs a command on the DPU and fails the test when it fails.
func (d *dpu) must(name string, args ...string) string {
	d.t.Helper()
	out, err := d.exec(name, args...)
	if err != nil {
		d.t.Fatalf("dpu: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// sh runs a shell script on the DPU.
func (d *dpu) sh(script string) (string, error) { return d.exec("sh", "-c", script) }

func (d *dpu) mustSh(script string) string {
	d.t.Helper()
	out, err := d.sh(script)
	if err != nil {
		d.t.Fatalf("dpu: sh -c %q: %v\n%s", script, err, out)
	}
	return out
}

// pki writes a CA and certificates for server and client into a temp dir.
func pki(t *testing.T, serverNames ...string) string {
	t.Helper()
	dir := t.TempDir()
	run(t, bin("qtfs-server"), "gen-certs", "--out", dir, "--server-name", strings.Join(serverNames, ","), "--client-name", "dpu-e2e")
	return dir
}

// env is one host+DPU pair with a server exporting some directories and
// a DPU that can mount them.
type env struct {
	t      *testing.T
	net    *netPair
	dpu    *dpu
	pki    string
	server *proc
	uri    string
}

// newEnv starts qtfs-server in the host namespace on TCP with mutual TLS,
// exporting exports (PATH[:ro]).
func newEnv(t *testing.T, exports ...string) *env {
	t.Helper()
	return newEnvWith(t, nil, exports...)
}

// newEnvWith is newEnv with more qtfs-server arguments (--exec-allow ...).
func newEnvWith(t *testing.T, serverArgs []string, exports ...string) *env {
	t.Helper()
	needMachine(t)
	e := &env{t: t, net: newNetPair(t)}
	e.pki = pki(t, e.net.HostIP)
	e.uri = e.startServer(12121, serverArgs, exports...)
	e.dpu = newDPU(t, e.net.DPU)
	return e
}

// startServer starts a qtfs-server in the host network namespace on port
// and returns its URI; the first one is e.server.
func (e *env) startServer(port int, serverArgs []string, exports ...string) string {
	e.t.Helper()
	uri := fmt.Sprintf("tcp://%s:%d", e.net.HostIP, port)
	// nsenter, not ip netns exec: the latter also remounts /sys, which
	// hides the host's cgroup mounts from runc.
	args := []string{"--net=/run/netns/" + e.net.Host, "--", bin("qtfs-server"),
		"--listen", uri,
		"--tls-cert", e.pki + "/server.pem", "--tls-key", e.pki + "/server-key.pem", "--tls-client-ca", e.pki + "/ca.pem",
		"--log-format", "console"}
	for _, x := range exports {
		args = append(args, "--export", x)
	}
	p := start(e.t, "nsenter", append(args, serverArgs...)...)
	p.waitFor(e.t, "qtfs-server ready", 20*time.Second)
	if e.server == nil {
		e.server = p
	}
	return uri
}

// mount mounts host path remote on the DPU at mp (created) and returns mp.
func (e *env) mount(remote, mp string, extra ...string) string {
	e.t.Helper()
	out, err := e.tryMount(remote, mp, extra...)
	if err != nil {
		e.t.Fatalf("mount %s: %v\n%s", remote, err, out)
	}
	return mp
}

func (e *env) tryMount(remote, mp string, extra ...string) (string, error) {
	if err := os.MkdirAll(mp, 0o755); err != nil {
		e.t.Fatal(err)
	}
	args := append([]string{"mount",
		"--tls-cert", e.pki + "/client.pem", "--tls-key", e.pki + "/client-key.pem", "--tls-ca", e.pki + "/ca.pem",
		"--runtime-dir", e.dpu.runtime,
		"--remote", e.net.HostIP + ":" + remote, mp}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := e.dpu.cmd(bin("qtfs-client"), args...)
	out, err := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).CombinedOutput()
	return string(out), err
}
