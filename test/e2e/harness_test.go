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
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built for this run; skipReason is set when the
// machine cannot run these tests.
var binDir, skipReason string

// Everything a run makes carries its mark, so that the check at its end
// finds what this run (and no other one running at the same time) left:
// tmpRoot holds every temporary directory (TMPDIR points into it, so
// t.TempDir and os.MkdirTemp land there) and netnsPrefix starts the name
// of every network namespace.
var tmpRoot, netnsPrefix string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		skipReason = checkMachine()
		if skipReason != "" {
			return m.Run()
		}
		id := randHex(3)
		netnsPrefix = "qtfs-" + id + "-"
		// Short: unix socket paths beneath it have at most 107 bytes.
		root := filepath.Join(os.TempDir(), "qtfs-e2e-"+id)
		err := os.Mkdir(root, 0o755)
		if err == nil {
			err = os.Chmod(root, 0o755) // the tests' users other than root reach their dirs
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		tmpRoot = root
		os.Setenv("TMPDIR", root)
		dir, err := os.MkdirTemp("", "bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := buildBinaries(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			return 1
		}
		binDir = dir
		code := m.Run()
		if left := leftovers(30 * time.Second); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "FAIL: the e2e tests left behind (now removed where that is safe):\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
		return code
	}())
}

// leftovers lists what the run left: network namespaces with its prefix,
// mounts beneath its temporary root, and processes it started (children
// of this process, the built binaries, anything that runs from or names
// the temporary root). It waits up to grace for them to go away (a
// process may still be exiting), then ends the processes by pid, deletes
// the namespaces, and removes the temporary root when nothing is mounted
// beneath it.
func leftovers(grace time.Duration) []string {
	var left []string
	var pids []int
	var netns []string
	for deadline := time.Now().Add(grace); ; time.Sleep(250 * time.Millisecond) {
		left, pids, netns = nil, runProcesses(), runNetns()
		for _, ns := range netns {
			left = append(left, "network namespace "+ns)
		}
		mounts := runMounts()
		for _, m := range mounts {
			left = append(left, "mount "+m)
		}
		for _, pid := range pids {
			cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			left = append(left, fmt.Sprintf("process %d: %s", pid, strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))))
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, ns := range netns {
		exec.Command("ip", "netns", "del", ns).Run()
	}
	// Deepest first; detached, a mount no longer hides its directory from
	// the removal below, nor its content from it.
	mounts := runMountpoints()
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, mp := range mounts {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
	os.RemoveAll(binDir)
	if len(runMountpoints()) == 0 {
		os.RemoveAll(tmpRoot)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: %s is left in place: something is still mounted beneath it\n", tmpRoot)
	}
	return left
}

// runNetns lists the network namespaces named with netnsPrefix.
func runNetns() []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], netnsPrefix) {
			names = append(names, f[0])
		}
	}
	return names
}

// runMountpoints lists the mount points of runMounts.
func runMountpoints() []string {
	var out []string
	for _, m := range runMounts() {
		mp, _, _ := strings.Cut(m, " (")
		out = append(out, mp)
	}
	return out
}

// runMounts lists this mount namespace's mounts at or beneath tmpRoot,
// with their type.
func runMounts() []string {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || (f[4] != tmpRoot && !strings.HasPrefix(f[4], tmpRoot+"/")) {
			continue
		}
		fstype := "?"
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				fstype = f[i+1]
			}
		}
		out = append(out, f[4]+" ("+fstype+")")
	}
	return out
}

// runProcesses lists the live processes this run started and left:
// children of this process, and processes (in any namespace) whose
// executable lies under tmpRoot (the built binaries, the container's) or
// whose command line names it (daemons detached with our paths, such as
// a containerd shim).
func runProcesses() []int {
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		i := bytes.LastIndexByte(stat, ')')
		if err != nil || i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
			continue // exited; its parent reaps it
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if f[1] == strconv.Itoa(self) || strings.HasPrefix(exe, tmpRoot+"/") || bytes.Contains(cmd, []byte(tmpRoot+"/")) {
			out = append(out, pid)
		}
	}
	return out
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

func needMachine(t testing.TB) {
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

func run(t testing.TB, name string, args ...string) string {
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
	// HostVeth and DPUVeth are the ends of the veth pair.
	HostVeth, DPUVeth string
}

var subnetMu sync.Mutex
var nextSubnet = 1

func newNetPair(t testing.TB) *netPair {
	t.Helper()
	subnetMu.Lock()
	sub := nextSubnet
	nextSubnet++
	subnetMu.Unlock()
	id := randHex(3)
	p := &netPair{
		Host:     netnsPrefix + "h-" + id,
		DPU:      netnsPrefix + "d-" + id,
		HostIP:   fmt.Sprintf("10.199.%d.1", sub),
		DPUIP:    fmt.Sprintf("10.199.%d.2", sub),
		HostVeth: "qh" + id,
		DPUVeth:  "qd" + id,
	}
	run(t, "ip", "netns", "add", p.Host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.Host).Run() })
	run(t, "ip", "netns", "add", p.DPU)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.DPU).Run() })
	vh, vd := p.HostVeth, p.DPUVeth
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
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(name, args...))
}

// startCmd is start of a prepared command (its environment set).
func startCmd(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	name := cmd.Path
	p := &proc{cmd: cmd, lines: make(chan string, 1024), done: make(chan struct{})}
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	p.cmd.Stdout = pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20) // kubelet logs whole pod specs on one line
		// Whatever cannot be scanned is still read: a daemon must never
		// block on its full stderr pipe.
		defer io.Copy(io.Discard, pr)
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
func (p *proc) waitFor(t testing.TB, s string, timeout time.Duration) {
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
func (p *proc) stop(t testing.TB) {
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
		// The mount daemons detached themselves (no pid namespace ends
		// them here): they exit once unmounted, or are stopped by pid.
		stopMountDaemons(t, d.runtime)
		d.holder.Process.Kill()
		d.holder.Wait()
	})
	return d
}

// stopMountDaemons stops the `qtfs-client mount` daemons that ran with
// the runtime dir rt, as this pid namespace numbers them: each names its
// log <rt>/client/<pid>.log. A daemon gets a few seconds to end by itself
// (after its unmount), then SIGTERM, then SIGKILL. A pid is signalled
// only while it still runs the built qtfs-client.
func stopMountDaemons(t testing.TB, rt string) {
	logs, _ := filepath.Glob(filepath.Join(rt, "client", "*.log"))
	var pids []int
	for _, l := range logs {
		if pid, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(l), ".log")); err == nil {
			pids = append(pids, pid)
		}
	}
	ours := func(pid int) bool {
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if exe != bin("qtfs-client") {
			return false
		}
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		i := bytes.LastIndexByte(stat, ')')
		return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
	}
	waitGone := func(d time.Duration) bool {
		for deadline := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
			alive := false
			for _, pid := range pids {
				alive = alive || ours(pid)
			}
			if !alive {
				return true
			}
			if time.Now().After(deadline) {
				return false
			}
		}
	}
	if waitGone(5 * time.Second) {
		return
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		for _, pid := range pids {
			if ours(pid) {
				t.Logf("cleanup: mount daemon %d still runs: %v", pid, sig)
				syscall.Kill(pid, sig)
			}
		}
		if waitGone(10 * time.Second) {
			return
		}
	}
	t.Errorf("cleanup: mount daemons of %s survive SIGKILL", rt)
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
func pki(t testing.TB, serverNames ...string) string {
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
