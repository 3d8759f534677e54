package e2e

// The host's /proc, /sys and cgroup on the DPU. The host side is this
// process's namespaces: a qtfs-server exporting /proc, /sys and
// /sys/fs/cgroup on a unix socket. The DPU side runs in its own pid, mount
// and network namespaces (so its own /proc differs from the host's), with
// a proc of its own mounted at the local-proc path; it reaches the server
// through the socket file, as a DPU reaches the host over vsock, not
// through IP. Small programs the DPU side needs (one write(2), readlinks
// from a second thread, a ps-like scan) are this test binary itself,
// started with procHelperEnv set.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
)

// procHelperEnv makes this test binary run procHelper instead of tests.
const procHelperEnv = "QTFS_E2E_PROC_HELPER"

func init() {
	if os.Getenv(procHelperEnv) == "1" {
		os.Exit(procHelper(os.Args[1:]))
	}
}

// selfReport is what the "self" helper prints.
type selfReport struct {
	Pid, Tid         int
	Self, ThreadSelf string
	Status           string
	Err              string
}

// scanReport is what the "scan" helper prints.
type scanReport struct {
	Nanos  []int64
	Pids   int
	Errors int
}

// procHelper runs one helper command and returns the exit status:
//
//	write FILE DATA   one write(2) of DATA; prints "OK n" or the errno name
//	self DIR          readlinks of DIR/self and DIR/thread-self (from a
//	                  thread other than the main one) and DIR/self/status
//	held FILE         opens and reads FILE, prints "ready", waits for a
//	                  line on stdin, reads FILE again at offset 0 and
//	                  prints "OK" or the errno name
//	list DIR          prints "name type" of each entry (d_type: d, l, f)
//	scan DIR N        N scans of every DIR/<pid>/stat and status
func procHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no command")
		return 2
	}
	errnoName := func(err error) string {
		var e syscall.Errno
		if errors.As(err, &e) {
			return unix.ErrnoName(e)
		}
		return err.Error()
	}
	switch {
	case args[0] == "write" && len(args) == 3:
		fd, err := unix.Open(args[1], unix.O_WRONLY, 0)
		if err != nil {
			fmt.Println(errnoName(err))
			return 0
		}
		defer unix.Close(fd)
		n, err := unix.Write(fd, []byte(args[2]))
		if err != nil {
			fmt.Println(errnoName(err))
			return 0
		}
		fmt.Println("OK", n)
		return 0
	case args[0] == "self" && len(args) == 2:
		dir := args[1]
		ch := make(chan selfReport)
		go func() {
			runtime.LockOSThread() // this thread ends with the goroutine
			r := selfReport{Pid: os.Getpid(), Tid: unix.Gettid()}
			var err error
			if r.Self, err = os.Readlink(dir + "/self"); err == nil {
				if r.ThreadSelf, err = os.Readlink(dir + "/thread-self"); err == nil {
					var b []byte
					b, err = os.ReadFile(dir + "/self/status")
					r.Status = string(b)
				}
			}
			if err != nil {
				r.Err = err.Error()
			}
			ch <- r
		}()
		b, _ := json.Marshal(<-ch)
		fmt.Println(string(b))
		return 0
	case args[0] == "held" && len(args) == 2:
		f, err := os.Open(args[1])
		if err != nil {
			fmt.Println(errnoName(err))
			return 0
		}
		defer f.Close()
		buf := make([]byte, 64<<10)
		if _, err := f.Read(buf); err != nil {
			fmt.Println(errnoName(err))
			return 0
		}
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			return 1
		}
		if _, err := f.ReadAt(buf, 0); err != nil && !errors.Is(err, io.EOF) {
			fmt.Println(errnoName(err))
		} else {
			fmt.Println("OK")
		}
		// Exit once the test closed stdin: it reads the answer first.
		_, _ = io.Copy(io.Discard, os.Stdin)
		return 0
	case args[0] == "list" && len(args) == 2:
		entries, err := os.ReadDir(args[1])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for _, e := range entries {
			t := "f"
			switch {
			case e.Type()&os.ModeSymlink != 0:
				t = "l"
			case e.IsDir():
				t = "d"
			}
			fmt.Println(e.Name(), t)
		}
		return 0
	case args[0] == "scan" && len(args) == 3:
		n, err := strconv.Atoi(args[2])
		if err != nil || n < 1 {
			return 2
		}
		var r scanReport
		for range n {
			start := time.Now()
			pids, errs := psScan(args[1])
			r.Nanos = append(r.Nanos, int64(time.Since(start)))
			r.Pids, r.Errors = pids, r.Errors+errs
		}
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: bad command", args)
	return 2
}

// psScan reads stat and status of every process in dir, as ps(1) does;
// it returns how many processes it read and how many reads failed (a
// process that ended during the scan).
func psScan(dir string) (pids, errs int) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, 1
	}
	names, _ := f.Readdirnames(-1)
	f.Close()
	for _, name := range names {
		if name[0] < '1' || name[0] > '9' {
			continue
		}
		ok := true
		for _, file := range []string{"stat", "status"} {
			if _, err := os.ReadFile(dir + "/" + name + "/" + file); err != nil {
				ok = false
			}
		}
		if ok {
			pids++
		} else {
			errs++
		}
	}
	return pids, errs
}

// bgProc is a process the test started; it is stopped by pid.
type bgProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *bgProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *bgProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startBg starts cmd with its output kept; the returned process is
// killed and reaped when the test ends.
func startBg(tb testing.TB, cmd *exec.Cmd) *bgProc {
	tb.Helper()
	p := &bgProc{cmd: cmd, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() { p.stop() })
	return p
}

// stop ends the process: SIGTERM, then SIGKILL after a grace period.
func (p *bgProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill ends the process at once and waits until it is reaped.
func (p *bgProc) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// procEnv is a host-side server and a DPU side in its own pid, mount and
// network namespaces.
type procEnv struct {
	dir  string
	sock string
	// nsPid is the host pid of the DPU pid namespace's first process.
	nsPid int
	// localProc is the DPU's own proc, mounted in the DPU's mount
	// namespace; offloadRoot is the offload chroot's root there.
	localProc, offloadRoot string
	runtime                string
}

// newProcEnv starts the server and the DPU namespaces.
func newProcEnv(tb testing.TB) *procEnv {
	tb.Helper()
	if skipReason != "" {
		tb.Skip(skipReason)
	}
	for _, c := range []string{"unshare", "nsenter", "mount", "chroot", "sleep", "cat", "readlink", "stat", "sh"} {
		if _, err := exec.LookPath(c); err != nil {
			tb.Skipf("needs %s: apt-get install util-linux coreutils", c)
		}
	}
	// Short: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "qtfs-proc-")
	if err != nil {
		tb.Fatal(err)
	}
	pe := &procEnv{
		dir:         dir,
		sock:        filepath.Join(dir, "qtfs.sock"),
		localProc:   filepath.Join(dir, "local_proc"),
		offloadRoot: filepath.Join(dir, "offload_root"),
		runtime:     filepath.Join(dir, "run"),
	}
	for _, d := range []string{pe.localProc, pe.offloadRoot, pe.runtime} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	tb.Cleanup(func() {
		// The DPU's mounts on these two (its proc, the root filesystem)
		// live in its private mount namespace, gone by now; should one
		// still show here, the directory is not empty and stays, and
		// nothing beneath it is removed.
		for _, d := range []string{pe.offloadRoot, pe.localProc} {
			if err := os.Remove(d); err != nil {
				tb.Errorf("cleanup: %s: %v; leaving %s alone", d, err, dir)
				return
			}
		}
		os.RemoveAll(dir)
	})

	srv := exec.Command(bin("qtfs-server"), "--listen", "unix://"+pe.sock,
		"--export", "/proc", "--export", "/sys", "--export", "/sys/fs/cgroup", "--log-format", "console")
	srv.Env = append(os.Environ(), "QTFS_CONFIG=/dev/null")
	server := startBg(tb, srv)
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("qtfs-server output:\n%s", server.output())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(server.output(), "qtfs-server ready") {
		select {
		case <-server.done:
			tb.Fatalf("qtfs-server exited:\n%s", server.output())
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("qtfs-server not ready after 20s:\n%s", server.output())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// unshare forks the namespace's first process (the sleep) and kills
	// it when it dies itself; the sleep's end ends the pid namespace and
	// every process in it (the mount daemons too).
	holder := startBg(tb, exec.Command("unshare", "--net", "--mount", "--pid", "--fork", "--kill-child",
		"--mount-proc", "--propagation", "private", "sleep", "infinity"))
	ownNS, _ := os.Readlink("/proc/self/ns/pid")
	for i := 0; ; i++ {
		if pid := childOf(holder.cmd.Process.Pid); pid > 0 {
			ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			if err == nil && ns != ownNS && strings.HasSuffix(exe, "/sleep") {
				pe.nsPid = pid
				break
			}
		}
		if i > 500 {
			tb.Fatalf("DPU namespaces did not start: %s", holder.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Cleanup(func() {
		// Unmount the DPU's qtfs mounts (their daemons exit), then end
		// the namespaces.
		out, _ := pe.exec("sh", "-c", "awk '$3 ~ /^fuse.qtfs/ {print $2}' /proc/mounts")
		for _, mp := range strings.Fields(out) {
			if o, err := pe.exec(bin("qtfs-client"), "umount", "--lazy", mp); err != nil {
				tb.Logf("cleanup umount %s: %v %s", mp, err, o)
			}
		}
		holder.stop()
	})
	pe.must(tb, "mount", "-t", "proc", "proc", pe.localProc)
	return pe
}

// childOf returns the first child of pid, 0 when it has none.
func childOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	c, _ := strconv.Atoi(f[0])
	return c
}

// cmd returns a command that runs in the DPU's namespaces.
func (pe *procEnv) cmd(name string, args ...string) *exec.Cmd {
	a := append([]string{"-t", strconv.Itoa(pe.nsPid), "-m", "-n", "-p", "--", name}, args...)
	cmd := exec.Command("nsenter", a...)
	cmd.Env = append(os.Environ(), "QTFS_CONFIG=/dev/null")
	return cmd
}

// exec runs a command on the DPU and returns its combined output.
func (pe *procEnv) exec(name string, args ...string) (string, error) {
	out, err := pe.cmd(name, args...).CombinedOutput()
	return string(out), err
}

// must runs a command on the DPU and fails the test when it fails.
func (pe *procEnv) must(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := pe.exec(name, args...)
	if err != nil {
		tb.Fatalf("dpu: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// output runs a command on the DPU and returns its standard output only.
func (pe *procEnv) output(name string, args ...string) ([]byte, error) {
	cmd := pe.cmd(name, args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%w: %s", err, strings.TrimSpace(errb.String()))
	}
	return out, nil
}

// helperCmd is this test binary running procHelper on the DPU.
func (pe *procEnv) helperCmd(args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe: " + err.Error() // fails to start, and says why
	}
	cmd := pe.cmd(exe, args...)
	cmd.Env = append(cmd.Env, procHelperEnv+"=1")
	return cmd
}

// helper runs procHelper on the DPU and returns what it printed.
func (pe *procEnv) helper(tb testing.TB, args ...string) string {
	tb.Helper()
	cmd := pe.helperCmd(args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("dpu helper %v: %v\n%s", args, err, errb.String())
	}
	return strings.TrimSpace(string(out))
}

// mount mounts host path remote on the DPU at a new directory and
// returns it.
func (pe *procEnv) mount(tb testing.TB, remote, name string, opts ...string) string {
	tb.Helper()
	mp := filepath.Join(pe.dir, "mnt", name)
	if err := os.MkdirAll(mp, 0o755); err != nil {
		tb.Fatal(err)
	}
	pe.mountAt(tb, remote, mp, opts...)
	return mp
}

// mountAt mounts host path remote on the DPU at mp, a directory there.
func (pe *procEnv) mountAt(tb testing.TB, remote, mp string, opts ...string) {
	tb.Helper()
	args := []string{"mount", "--server", "unix://" + pe.sock, "--runtime-dir", pe.runtime, "--remote", remote}
	for _, o := range opts {
		args = append(args, "-o", o)
	}
	pe.must(tb, bin("qtfs-client"), append(args, mp)...)
}

// cgHierarchy is a cgroup hierarchy of the host under /sys/fs/cgroup.
type cgHierarchy struct {
	// rel is its path relative to /sys/fs/cgroup ("" when that is it).
	rel         string
	v2          bool
	controllers []string // v1: the hierarchy's controllers
}

func (h cgHierarchy) host() string { return filepath.Join("/sys/fs/cgroup", h.rel) }

func (h cgHierarchy) has(c string) bool { return slices.Contains(h.controllers, c) }

func (h cgHierarchy) String() string {
	if h.v2 {
		return "cgroup2:" + h.rel
	}
	return strings.Join(h.controllers, ",")
}

// hostHierarchies finds the cgroup hierarchies of the host the test
// manages: cgroup2, and the v1 hierarchies of memory, pids and cpu.
func hostHierarchies(t *testing.T) []cgHierarchy {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []cgHierarchy
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+3 >= len(f) {
			continue
		}
		mp := f[4]
		if mp != "/sys/fs/cgroup" && !strings.HasPrefix(mp, "/sys/fs/cgroup/") {
			continue
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(mp, "/sys/fs/cgroup"), "/")
		switch f[sep+1] {
		case "cgroup2":
			out = append(out, cgHierarchy{rel: rel, v2: true})
		case "cgroup":
			h := cgHierarchy{rel: rel}
			for _, o := range strings.Split(f[sep+3], ",") {
				if o == "memory" || o == "pids" || o == "cpu" {
					h.controllers = append(h.controllers, o)
				}
			}
			if len(h.controllers) > 0 {
				out = append(out, h)
			}
		}
	}
	if len(out) == 0 {
		t.Skip("skipped: no cgroup hierarchy under /sys/fs/cgroup (mount cgroup2 there)")
	}
	return out
}

// cgFile is a cgroup file the scenario writes and the value the host
// must read back.
type cgFile struct {
	file, value, want string
}

// limits returns the limits the scenario writes in hierarchy h, for a
// cgroup whose parent offers the v2 controllers in avail.
func (h cgHierarchy) limits(avail []string) []cgFile {
	var out []cgFile
	if h.v2 {
		out = append(out, cgFile{"cgroup.max.descendants", "5", "5"})
		if slices.Contains(avail, "memory") {
			out = append(out, cgFile{"memory.max", "67108864", "67108864"})
		}
		if slices.Contains(avail, "pids") {
			out = append(out, cgFile{"pids.max", "100", "100"})
		}
		if slices.Contains(avail, "cpu") {
			out = append(out, cgFile{"cpu.max", "50000 100000", "50000 100000"})
		}
		return out
	}
	if h.has("memory") {
		out = append(out, cgFile{"memory.limit_in_bytes", "67108864", "67108864"})
	}
	if h.has("pids") {
		out = append(out, cgFile{"pids.max", "100", "100"})
	}
	if h.has("cpu") {
		out = append(out, cgFile{"cpu.cfs_quota_us", "50000", "50000"})
	}
	return out
}

// usageFile is the memory usage file of h, "" when it has none.
func (h cgHierarchy) usageFile(avail []string) string {
	switch {
	case h.v2 && slices.Contains(avail, "memory"):
		return "memory.current"
	case !h.v2 && h.has("memory"):
		return "memory.usage_in_bytes"
	}
	return ""
}

// statFiles are stat files of h the scenario reads.
func (h cgHierarchy) statFiles(avail []string) []string {
	var out []string
	if h.v2 {
		out = append(out, "cgroup.stat")
		if slices.Contains(avail, "memory") {
			out = append(out, "memory.stat")
		}
		return out
	}
	if h.has("memory") {
		out = append(out, "memory.stat")
	}
	if h.has("pids") {
		out = append(out, "pids.current")
	}
	if h.has("cpu") {
		out = append(out, "cpu.stat")
	}
	return out
}

// testParent makes the test-owned parent cgroup in every hierarchy,
// enables the v2 controllers the root offers for its children, and
// removes it (moving stray processes out first) when the test ends. It
// returns the parent's name and the v2 controllers its children get.
func testParent(t *testing.T, hs []cgHierarchy) (string, []string) {
	t.Helper()
	name := "qtfs-e2e-" + randHex(4)
	var avail []string
	for _, h := range hs {
		dir := filepath.Join(h.host(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Skipf("skipped: cannot make a cgroup in %s: %v", h.host(), err)
		}
		t.Cleanup(func() { removeCgroupTree(t, h.host(), dir) })
		if h.v2 {
			b, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
			for _, c := range strings.Fields(string(b)) {
				if c == "memory" || c == "pids" || c == "cpu" {
					if os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("+"+c), 0) == nil {
						avail = append(avail, c)
					}
				}
			}
		}
	}
	return name, avail
}

// removeCgroupTree moves the processes of dir's cgroups to root and
// removes them, children first.
func removeCgroupTree(t *testing.T, root, dir string) {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		b, _ := os.ReadFile(filepath.Join(dirs[i], "cgroup.procs"))
		for _, pid := range strings.Fields(string(b)) {
			_ = os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(pid), 0)
		}
		var err error
		for try := 0; try < 50; try++ {
			if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cleanup: remove cgroup %s: %v", dirs[i], err)
		}
	}
}

// hostWrite does on the host what the "write" helper does on the DPU.
func hostWrite(p, data string) string {
	fd, err := unix.Open(p, unix.O_WRONLY, 0)
	if err != nil {
		return unix.ErrnoName(err.(syscall.Errno))
	}
	defer unix.Close(fd)
	n, err := unix.Write(fd, []byte(data))
	if err != nil {
		return unix.ErrnoName(err.(syscall.Errno))
	}
	return fmt.Sprint("OK ", n)
}

// sameSoon reads a file through the mount (dpu) and on the host until
// both agree; a live process's files may change between two reads.
func sameSoon(t *testing.T, what string, dpu func() ([]byte, error), host func() ([]byte, error)) []byte {
	t.Helper()
	var got, want []byte
	var err error
	for try := 0; try < 5; try++ {
		if want, err = host(); err != nil {
			t.Fatalf("%s on the host: %v", what, err)
		}
		if got, err = dpu(); err != nil {
			t.Fatalf("%s through the mount: %v", what, err)
		}
		if bytes.Equal(got, want) {
			return got
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("%s through the mount differs from the host's:\n dpu  %q\n host %q", what, got, want)
	return got
}

// TestKubeletLikeProc is an offloaded kubelet's use of the host's /proc,
// /sys and cgroup from the DPU: a host process in a fresh cgroup seen
// through the mount as on the host, its memory usage read, limits written,
// a second process moved in, the cgroup removed; /proc/self naming the DPU
// reader; host processes appearing and vanishing at once; the offload
// chroot's processes as links into the DPU's own proc.
func TestKubeletLikeProc(t *testing.T) {
	pe := newProcEnv(t)
	hs := hostHierarchies(t)
	t.Logf("cgroup hierarchies: %v", hs)

	// The offload chroot: the root filesystem bound on the chroot's
	// root, made before the qtfs mounts so that it holds none of them.
	pe.must(t, "mount", "--bind", "/", pe.offloadRoot)
	hproc := pe.mount(t, "/proc", "proc", "local_proc="+pe.localProc+",offload_root="+pe.offloadRoot)
	cgmp := pe.mount(t, "/sys/fs/cgroup", "cgroup")
	sysmp := pe.mount(t, "/sys", "sys")

	t.Run("mounts live on the DPU only", func(t *testing.T) {
		out := pe.must(t, "cat", "/proc/self/mountinfo")
		for _, mp := range []string{hproc, cgmp, sysmp} {
			if !strings.Contains(out, " "+mp+" ") {
				t.Errorf("%s not in the DPU's mount table", mp)
			}
		}
		if _, err := os.Stat(filepath.Join(hproc, "self")); err == nil {
			t.Errorf("the DPU's mount is visible on the host side")
		}
	})

	t.Run("self names the DPU reader", func(t *testing.T) {
		var r selfReport
		if err := json.Unmarshal([]byte(pe.helper(t, "self", hproc)), &r); err != nil || r.Err != "" {
			t.Fatalf("self helper: %v %s", err, r.Err)
		}
		t.Logf("DPU reader pid %d tid %d: self -> %s, thread-self -> %s", r.Pid, r.Tid, r.Self, r.ThreadSelf)
		if want := fmt.Sprintf("%s/%d", pe.localProc, r.Pid); r.Self != want {
			t.Errorf("readlink self = %q, want %q", r.Self, want)
		}
		if want := fmt.Sprintf("%s/%d/task/%d", pe.localProc, r.Pid, r.Tid); r.ThreadSelf != want {
			t.Errorf("readlink thread-self = %q, want %q", r.ThreadSelf, want)
		}
		exe, _ := os.Executable()
		comm := filepath.Base(exe)
		if len(comm) > 15 {
			comm = comm[:15]
		}
		if !strings.Contains(r.Status, fmt.Sprintf("\nPid:\t%d\n", r.Pid)) || !strings.HasPrefix(r.Status, "Name:\t"+comm+"\n") {
			t.Errorf("self/status through the mount names another process than the DPU reader (pid %d in the DPU):\n%s", r.Pid, r.Status)
		}
		if r.Pid == os.Getpid() || strings.Contains(r.Status, "qtfs-server") {
			t.Errorf("self/status names the host side:\n%s", r.Status)
		}
	})

	t.Run("mounts are the host's pid 1's", func(t *testing.T) {
		if got := strings.TrimSpace(pe.must(t, "readlink", hproc+"/mounts")); got != "1/mounts" {
			t.Errorf("readlink mounts = %q, want 1/mounts", got)
		}
		sameSoon(t, "mounts",
			func() ([]byte, error) { return pe.output("cat", hproc+"/mounts") },
			func() ([]byte, error) { return os.ReadFile("/proc/1/mounts") })
	})

	t.Run("processes appear and vanish at once", func(t *testing.T) {
		p := startBg(t, exec.Command("sleep", "300"))
		pid := strconv.Itoa(p.cmd.Process.Pid)
		if out, err := pe.exec("stat", "-c", "%F", hproc+"/"+pid); err != nil || strings.TrimSpace(out) != "directory" {
			t.Fatalf("a process just started on the host: stat through the mount: %q, %v", out, err)
		}
		held := pe.helperCmd("held", hproc+"/"+pid+"/stat")
		in, err := held.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		outPipe, err := held.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		h := startBg(t, held)
		lines := bufio.NewScanner(outPipe)
		if !lines.Scan() || lines.Text() != "ready" {
			t.Fatalf("held helper: %q %s", lines.Text(), h.output())
		}
		hostHeld, err := os.Open("/proc/" + pid + "/stat")
		if err != nil {
			t.Fatal(err)
		}
		defer hostHeld.Close()
		p.kill()

		out, err := pe.exec("stat", "-c", "%F", hproc+"/"+pid)
		if err == nil || !strings.Contains(out, "No such file or directory") {
			t.Errorf("a process that ended on the host: stat through the mount: %q, %v; want ENOENT", out, err)
		}
		out, err = pe.exec("cat", hproc+"/"+pid+"/status")
		if err == nil || !strings.Contains(out, "No such file or directory") {
			t.Errorf("a process that ended on the host: cat status through the mount: %q, %v; want ENOENT", out, err)
		}
		_, hostErr := hostHeld.ReadAt(make([]byte, 4096), 0)
		t.Logf("host pid %s ended: through the mount %s; on the host, a read of a held file: %v", pid, strings.TrimSpace(out), hostErr)
		var want string
		if e := (syscall.Errno)(0); errors.As(hostErr, &e) {
			want = unix.ErrnoName(e)
		}
		io.WriteString(in, "go\n")
		if !lines.Scan() || lines.Text() != want || want == "" {
			t.Errorf("read of a file held open past the process's end: %q through the mount, %q (%v) on the host", lines.Text(), want, hostErr)
		}
		in.Close()
	})

	t.Run("offload chroot processes are the DPU's", func(t *testing.T) {
		// The chroot's /proc is a mount of the host's proc, as the
		// offload makes it.
		chrootProc := filepath.Join(pe.offloadRoot, "proc")
		pe.mountAt(t, "/proc", chrootProc, "local_proc="+pe.localProc, "offload_root="+pe.offloadRoot)
		t.Cleanup(func() {
			if out, err := pe.exec(bin("qtfs-client"), "umount", "--lazy", chrootProc); err != nil {
				t.Logf("umount %s: %v %s", chrootProc, err, out)
			}
		})
		inChroot := func(script string) string {
			t.Helper()
			return strings.TrimSpace(pe.must(t, "chroot", pe.offloadRoot, "sh", "-c", script))
		}

		c := pe.cmd("chroot", pe.offloadRoot, "sh", "-c", "echo $$; exec sleep 300")
		out, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		p := startBg(t, c)
		sc := bufio.NewScanner(out)
		if !sc.Scan() {
			t.Skipf("skipped: cannot run sleep in a chroot of the root filesystem: %s", p.output())
		}
		dpuPid := strings.TrimSpace(sc.Text())
		t.Logf("process in the offload chroot: DPU pid %s", dpuPid)
		defer pe.exec("sh", "-c", "kill "+dpuPid)

		// Inside the chroot, /proc/self is the reader's pid, as the
		// kernel's link is, and a process of the chroot is a directory.
		if f := strings.Fields(inChroot("echo $$; exec readlink /proc/self")); len(f) != 2 || f[0] != f[1] {
			t.Errorf("readlink /proc/self in the chroot: %q, want the reader's pid", f)
		}
		if got := inChroot("stat -c %F /proc/" + dpuPid); got != "directory" {
			t.Errorf("/proc/%s in the chroot: %q, want a directory", dpuPid, got)
		}
		if got := strings.TrimSpace(pe.must(t, "stat", "-c", "%F", hproc+"/"+dpuPid)); got != "directory" {
			t.Errorf("%s/%s (a process in the offload chroot): %q, want a directory", hproc, dpuPid, got)
		}
		// exe is the program's path as the chroot names it.
		if got, want := inChroot("exec readlink /proc/self/exe"), inChroot(`readlink -f "$(command -v readlink)"`); got != want || want == "" {
			t.Errorf("readlink /proc/self/exe in the chroot = %q, want %q", got, want)
		}
		// mountinfo shows the host's proc at /proc, not the qtfs mount.
		info := inChroot("cat /proc/self/mountinfo")
		var procTypes []string
		for _, m := range mountinfo.Parse([]byte(info)) {
			if m.MountPoint == "/proc" {
				procTypes = append(procTypes, m.FSType)
			}
		}
		if !slices.Equal(procTypes, []string{"proc"}) {
			t.Errorf("/proc/self/mountinfo in the chroot: /proc is %q, want one line of type proc:\n%s", procTypes, info)
		}

		status := pe.must(t, "cat", hproc+"/"+dpuPid+"/status")
		if !strings.HasPrefix(status, "Name:\tsleep\n") || !strings.Contains(status, "\nPid:\t"+dpuPid+"\n") {
			t.Errorf("status of the chroot's process through the mount is not the DPU's:\n%s", status)
		}
		listed := map[string]string{}
		for _, l := range strings.Split(pe.helper(t, "list", hproc), "\n") {
			if f := strings.Fields(l); len(f) == 2 {
				if _, dup := listed[f[0]]; dup {
					t.Errorf("listing: %s twice", f[0])
				}
				listed[f[0]] = f[1]
			}
		}
		if listed[dpuPid] != "d" || listed["self"] != "l" || listed["1"] != "d" {
			t.Errorf("listing: %s %q, self %q, 1 %q; want d, l, d", dpuPid, listed[dpuPid], listed["self"], listed["1"])
		}
		// The DPU's pid 1 runs outside the chroot: /proc/1 is the host's.
		if got := strings.TrimSpace(pe.must(t, "stat", "-c", "%F", hproc+"/1")); got != "directory" {
			t.Errorf("%s/1: %q, want the host's directory", hproc, got)
		}
		host1, _ := os.ReadFile("/proc/1/stat")
		got1, _ := pe.output("cat", hproc+"/1/stat")
		if f1, f2 := strings.Fields(string(host1)), strings.Fields(string(got1)); len(f1) < 2 || len(f2) < 2 || f1[1] != f2[1] {
			t.Errorf("1/stat through the mount %q, host %q", got1, host1)
		}
	})

	for _, view := range []struct{ name, root string }{
		{"/sys/fs/cgroup", cgmp},
		{"/sys", filepath.Join(sysmp, "fs", "cgroup")},
	} {
		t.Run("cgroup via "+view.name, func(t *testing.T) {
			kubeletScenario(t, pe, hs, view.root, hproc)
		})
	}
}

// kubeletScenario is the cgroup part, with the host's /sys/fs/cgroup
// at cgRoot on the DPU.
func kubeletScenario(t *testing.T, pe *procEnv, hs []cgHierarchy, cgRoot, hproc string) {
	parent, avail := testParent(t, hs)
	pod := filepath.Join(parent, "pod")
	dpuDir := func(h cgHierarchy, f ...string) string {
		return filepath.Join(append([]string{cgRoot, h.rel, pod}, f...)...)
	}
	hostDir := func(h cgHierarchy, f ...string) string {
		return filepath.Join(append([]string{h.host(), pod}, f...)...)
	}

	// A fresh cgroup, made by the DPU.
	for _, h := range hs {
		pe.must(t, "mkdir", dpuDir(h))
		if _, err := os.Stat(hostDir(h, "cgroup.procs")); err != nil {
			t.Fatalf("%v: cgroup made through the mount is not on the host: %v", h, err)
		}
	}

	// A host process started in it.
	mark := "qtfs-e2e-mark-" + randHex(4)
	var join []string
	for _, h := range hs {
		join = append(join, hostDir(h, "cgroup.procs"))
	}
	a := exec.Command("sh", "-c", `for f in "$@"; do echo $$ > "$f" || exit 1; done; exec sleep 3599`, "sh")
	a.Args = append(a.Args, join...)
	a.Env = []string{"PATH=/usr/bin:/bin", "QTFS_E2E_MARK=" + mark}
	pa := startBg(t, a)
	apid := strconv.Itoa(pa.cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cmdline, _ := os.ReadFile("/proc/" + apid + "/cmdline")
		if string(cmdline) == "sleep\x003599\x00" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host process did not start in the cgroup: %s", pa.output())
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Seen through the mount as on the host.
	for _, f := range []string{"stat", "status", "cmdline", "cgroup", "environ"} {
		got := sameSoon(t, f,
			func() ([]byte, error) { return pe.output("cat", hproc+"/"+apid+"/"+f) },
			func() ([]byte, error) { return os.ReadFile("/proc/" + apid + "/" + f) })
		switch f {
		case "environ":
			if !bytes.Contains(got, []byte("QTFS_E2E_MARK="+mark)) {
				t.Errorf("environ through the mount lacks the process's variable: %q", got)
			}
		case "cgroup":
			if !bytes.Contains(got, []byte("/"+pod+"\n")) {
				t.Errorf("cgroup through the mount does not show %s: %q", pod, got)
			}
		}
	}

	for _, h := range hs {
		// Memory usage, read through the mount.
		if uf := h.usageFile(avail); uf != "" {
			got := sameSoon(t, uf,
				func() ([]byte, error) { return pe.output("cat", dpuDir(h, uf)) },
				func() ([]byte, error) { return os.ReadFile(hostDir(h, uf)) })
			t.Logf("%v: %s = %s", h, uf, strings.TrimSpace(string(got)))
			if v, err := strconv.ParseInt(strings.TrimSpace(string(got)), 10, 64); err != nil || v <= 0 {
				t.Errorf("%v: %s = %q, want a positive usage", h, uf, got)
			}
		}
		// Limits written through the mount, read back on the host.
		for _, l := range h.limits(avail) {
			if got := pe.helper(t, "write", dpuDir(h, l.file), l.value+"\n"); got != fmt.Sprintf("OK %d", len(l.value)+1) {
				t.Errorf("%v: write %s: %s", h, l.file, got)
			}
			b, err := os.ReadFile(hostDir(h, l.file))
			if err != nil || strings.TrimSpace(string(b)) != l.want {
				t.Errorf("%v: host reads %s = %q, %v; want %q", h, l.file, b, err, l.want)
			}
			// A bad value: the host's errno, unchanged.
			want := hostWrite(hostDir(h, l.file), "not-a-number")
			if got := pe.helper(t, "write", dpuDir(h, l.file), "not-a-number"); got != want || strings.HasPrefix(want, "OK") {
				t.Errorf("%v: bad value for %s: %s through the mount, %s on the host", h, l.file, got, want)
			}
		}
		want := hostWrite(hostDir(h, "cgroup.procs"), "2147483646")
		if got := pe.helper(t, "write", dpuDir(h, "cgroup.procs"), "2147483646"); got != want || strings.HasPrefix(want, "OK") {
			t.Errorf("%v: moving a process that does not exist: %s through the mount, %s on the host", h, got, want)
		}
		// Stat files.
		for _, f := range h.statFiles(avail) {
			got, err := pe.output("cat", dpuDir(h, f))
			if err != nil || len(got) == 0 {
				t.Errorf("%v: read %s through the mount: %q, %v", h, f, got, err)
			}
		}
	}

	// A second host process, moved in by the DPU.
	pb := startBg(t, exec.Command("sleep", "3600"))
	bpid := strconv.Itoa(pb.cmd.Process.Pid)
	for _, h := range hs {
		file := "cgroup.procs"
		if !h.v2 && h.has("pids") {
			file = "tasks"
		}
		if got := pe.helper(t, "write", dpuDir(h, file), bpid); got != fmt.Sprintf("OK %d", len(bpid)) {
			t.Errorf("%v: move %s through %s: %s", h, bpid, file, got)
		}
	}
	cg, err := os.ReadFile("/proc/" + bpid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(cg), ":/"+pod+"\n"); n != len(hs) {
		t.Errorf("host: the moved process is in %s in %d hierarchies, want %d:\n%s", pod, n, len(hs), cg)
	}
	for _, h := range hs {
		got, err := pe.output("cat", dpuDir(h, "cgroup.procs"))
		procs := strings.Fields(string(got))
		sort.Strings(procs)
		want := []string{apid, bpid}
		sort.Strings(want)
		if err != nil || !slices.Equal(procs, want) {
			t.Errorf("%v: cgroup.procs through the mount: %v, %v; want %v", h, procs, err, want)
		}
		if !h.v2 && h.has("pids") {
			sameSoon(t, "pids.current",
				func() ([]byte, error) { return pe.output("cat", dpuDir(h, "pids.current")) },
				func() ([]byte, error) { return os.ReadFile(hostDir(h, "pids.current")) })
		}
		if out, err := pe.exec("rmdir", dpuDir(h)); err == nil || !strings.Contains(out, "Device or resource busy") {
			t.Errorf("%v: rmdir of a cgroup with processes: %q, %v; want EBUSY", h, out, err)
		}
	}

	// The cgroup removed once its processes ended.
	pa.kill()
	pb.kill()
	for _, h := range hs {
		var out string
		var err error
		for try := 0; try < 50; try++ {
			if out, err = pe.exec("rmdir", dpuDir(h)); err == nil || !strings.Contains(out, "busy") {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("%v: rmdir through the mount: %v %s", h, err, out)
		}
		if _, err := os.Stat(hostDir(h)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v: cgroup still on the host after rmdir through the mount: %v", h, err)
		}
	}
}
