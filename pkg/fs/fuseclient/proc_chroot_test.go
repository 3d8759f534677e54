package fuseclient_test

// The chroot test runs a program the way the offload runs dockerd: in a
// chroot whose /proc is a mount of the host's proc root (with the chroot
// as OffloadRoot) and whose /sys/fs/cgroup is a mount of the host's. The
// test binary plays three roles for it (QTFS_TEST_CHROOT_ROLE):
//
//	setup  in a mount namespace of its own, binds /usr (and the links to
//	       it), /dev, the DPU's proc at /local_proc and itself at /prog
//	       into the chroot, then chroots and executes /prog as the probe
//	probe  looks at itself through /proc as a program in the chroot does
//	       and reports on stdout, as JSON
//	echo   says hello (the probe re-executes /proc/self/exe as it)

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
)

const (
	envChrootRole = "QTFS_TEST_CHROOT_ROLE"
	envChrootRoot = "QTFS_TEST_CHROOT_ROOT"
)

// probeReport is what the probe saw.
type probeReport struct {
	Pid, Tid              int
	Self, ThreadSelf      string
	Exe, Executable       string
	Cwd, Root             string
	FifoSame              bool
	OomScoreAdj           string
	NetSame               bool
	Mountinfo, Mounts     string
	ThreadMountinfo       string // /proc/thread-self/mountinfo, as moby/sys/mountinfo reads it
	TaskListed            bool   // the thread's directory is listed in /proc/self/task
	Reexec                string
	Errors                []string
	SelfListed, PidListed bool
}

// chrootRole plays role and returns the exit code.
func chrootRole(role string) int {
	switch role {
	case "setup":
		if err := chrootSetup(os.Getenv(envChrootRoot)); err != nil {
			fmt.Fprintln(os.Stderr, "chroot setup:", err)
			return 3
		}
		return 0 // not reached: the probe replaced this process
	case "probe":
		r := probe()
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "probe:", err)
			return 1
		}
		return 0
	case "echo":
		fmt.Print("hello")
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown role", role)
	return 2
}

// chrootSetup makes root a chroot the test binary runs in, and executes
// the probe in it. It runs in a mount namespace of its own: what it
// mounts goes away with the probe.
func chrootSetup(root string) error {
	for _, name := range []string{"bin", "lib", "lib64", "sbin", "usr"} {
		src := "/" + name
		fi, err := os.Lstat(src)
		if err != nil {
			continue
		}
		dst := filepath.Join(root, name)
		if fi.Mode()&os.ModeSymlink != 0 {
			t, err := os.Readlink(src)
			if err != nil {
				return err
			}
			if err := os.Symlink(t, dst); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
			continue
		}
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
	}
	for _, b := range [][2]string{{"/proc", "local_proc"}, {"/dev", "dev"}} {
		if err := unix.Mount(b[0], filepath.Join(root, b[1]), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", b[0], err)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	prog := filepath.Join(root, "prog")
	if err := os.WriteFile(prog, nil, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(exe, prog, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", exe, err)
	}
	if err := unix.Chroot(root); err != nil {
		return err
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	env := []string{envChrootRole + "=probe"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envChrootRole+"=") {
			env = append(env, kv)
		}
	}
	return syscall.Exec("/prog", []string{"/prog", "-test.run=^$"}, env)
}

// probe looks at this process through /proc, inside the chroot.
func probe() probeReport {
	r := probeReport{Pid: os.Getpid()}
	fail := func(what string, err error) { r.Errors = append(r.Errors, what+": "+err.Error()) }
	var err error
	if r.Self, err = os.Readlink("/proc/self"); err != nil {
		fail("readlink /proc/self", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		r.Tid = unix.Gettid()
		if r.ThreadSelf, err = os.Readlink("/proc/thread-self"); err != nil {
			fail("readlink /proc/thread-self", err)
		}
		if b, err := os.ReadFile("/proc/thread-self/mountinfo"); err != nil {
			fail("read /proc/thread-self/mountinfo", err)
		} else {
			r.ThreadMountinfo = string(b)
		}
		if names, err := os.ReadDir("/proc/self/task"); err != nil {
			fail("list /proc/self/task", err)
		} else {
			for _, n := range names {
				r.TaskListed = r.TaskListed || (n.Name() == strconv.Itoa(r.Tid) && n.IsDir())
			}
		}
	}()
	<-done
	if r.Exe, err = os.Readlink("/proc/self/exe"); err != nil {
		fail("readlink /proc/self/exe", err)
	}
	if r.Executable, err = os.Executable(); err != nil {
		fail("os.Executable", err)
	}
	if r.Cwd, err = os.Readlink("/proc/self/cwd"); err != nil {
		fail("readlink /proc/self/cwd", err)
	}
	if r.Root, err = os.Readlink("/proc/self/root"); err != nil {
		fail("readlink /proc/self/root", err)
	}

	// containerd's fifo package: open the FIFO with O_PATH, then open it
	// through /proc/self/fd/N once the dev and ino of the two agree.
	func() {
		if err := unix.Mkfifo("/fifo", 0o600); err != nil {
			fail("mkfifo", err)
			return
		}
		fd, err := unix.Open("/fifo", unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			fail("open O_PATH", err)
			return
		}
		defer unix.Close(fd)
		p := "/proc/self/fd/" + strconv.Itoa(fd)
		var a, b unix.Stat_t
		if err := unix.Fstat(fd, &a); err != nil {
			fail("fstat", err)
			return
		}
		if err := unix.Stat(p, &b); err != nil {
			fail("stat "+p, err)
			return
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			fail("open "+p, err)
			return
		}
		defer f.Close()
		buf := []byte{0}
		if _, err := f.Write([]byte("x")); err != nil {
			fail("write the FIFO", err)
		} else if _, err := f.Read(buf); err != nil || buf[0] != 'x' {
			fail("read the FIFO", fmt.Errorf("%q, %v", buf, err))
		}
		r.FifoSame = a.Dev == b.Dev && a.Ino == b.Ino
	}()

	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("500"), 0); err != nil {
		fail("write /proc/self/oom_score_adj", err)
	}
	if b, err := os.ReadFile("/local_proc/self/oom_score_adj"); err != nil {
		fail("read oom_score_adj", err)
	} else {
		r.OomScoreAdj = strings.TrimSpace(string(b))
	}
	var n1, n2 unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &n1); err != nil {
		fail("stat /proc/self/ns/net", err)
	} else if err := unix.Stat("/local_proc/self/ns/net", &n2); err != nil {
		fail("stat /local_proc/self/ns/net", err)
	} else {
		r.NetSame = n1.Ino == n2.Ino && n1.Dev == n2.Dev
	}

	if b, err := os.ReadFile("/proc/self/mountinfo"); err != nil {
		fail("read /proc/self/mountinfo", err)
	} else {
		r.Mountinfo = string(b)
	}
	if b, err := os.ReadFile("/proc/self/mounts"); err != nil {
		fail("read /proc/self/mounts", err)
	} else {
		r.Mounts = string(b)
	}
	if es, err := os.ReadDir("/proc"); err != nil {
		fail("list /proc", err)
	} else {
		for _, e := range es {
			r.SelfListed = r.SelfListed || e.Name() == "self" && e.Type()&os.ModeSymlink != 0
			r.PidListed = r.PidListed || e.Name() == strconv.Itoa(r.Pid) && e.IsDir()
		}
	}

	// dockerd re-executes itself through /proc/self/exe.
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), envChrootRole+"=echo")
	if out, err := cmd.Output(); err != nil {
		fail("run /proc/self/exe", err)
	} else {
		r.Reexec = string(out)
	}
	return r
}

// TestProcChroot runs a program in a chroot like the offload's, with the
// host's proc and /sys/fs/cgroup mounted in it, and checks what it sees
// of itself: readlink /proc/self gives its pid, /proc/self/exe its path
// (and re-executes it), /proc/self/fd/N reopens its files, its writes to
// /proc/self/oom_score_adj land, and /proc/self/mountinfo shows the
// host's filesystem types: proc for /proc, and for /sys/fs/cgroup the
// host's mount and every one beneath it (cgroup v1 controllers, cgroup2).
func TestProcChroot(t *testing.T) {
	testutil.RequireFUSE(t)
	var st unix.Statfs_t
	if err := unix.Statfs("/proc", &st); err != nil || uint64(st.Type) != unix.PROC_SUPER_MAGIC {
		t.Skip("skipped: /proc is not a proc filesystem here")
	}
	root, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"proc", "sys/fs/cgroup", "local_proc", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const cgroup = "/sys/fs/cgroup"
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var host []mountinfo.Mount // the host's mounts at and beneath /sys/fs/cgroup
	for _, m := range mountinfo.Parse(info) {
		if m.MountPoint == cgroup || strings.HasPrefix(m.MountPoint, cgroup+"/") {
			host = append(host, m)
		}
	}
	cfg := mountCfg{export: "/proc", mountpoint: filepath.Join(root, "proc"), localProc: "/local_proc", offloadRoot: root}
	if len(host) > 0 {
		cfg.extra = [][2]string{{cgroup, filepath.Join(root, cgroup)}}
	} else {
		t.Log("nothing is mounted on /sys/fs/cgroup here: only /proc is checked")
	}
	tm := startMount(t, cfg)

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChrootRole+"=setup", envChrootRoot+"="+root)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if errors.Is(err, syscall.EPERM) || strings.Contains(stderr.String(), "operation not permitted") {
			t.Skipf("skipped: the chroot cannot be set up here (%v %s): the test needs a mount namespace of its own and bind mounts", err, stderr.String())
		}
		t.Fatalf("probe: %v\n%s", err, stderr.String())
	}
	var r probeReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("probe report %q: %v\n%s", out, err, stderr.String())
	}
	for _, e := range r.Errors {
		t.Errorf("probe: %s", e)
	}
	pid := strconv.Itoa(r.Pid)
	switch {
	case r.Self != pid:
		t.Errorf("readlink /proc/self = %q, want %s", r.Self, pid)
	case r.ThreadSelf != fmt.Sprintf("%d/task/%d", r.Pid, r.Tid):
		t.Errorf("readlink /proc/thread-self = %q, want %d/task/%d", r.ThreadSelf, r.Pid, r.Tid)
	}
	if r.Exe != "/prog" || r.Executable != "/prog" {
		t.Errorf("readlink /proc/self/exe = %q, os.Executable() = %q; want /prog", r.Exe, r.Executable)
	}
	if r.Cwd != "/" || r.Root != "/" {
		t.Errorf("readlink /proc/self/cwd = %q, root = %q; want / and /", r.Cwd, r.Root)
	}
	if !r.FifoSame {
		t.Errorf("a FIFO reopened through /proc/self/fd/N is not the one opened")
	}
	if r.OomScoreAdj != "500" {
		t.Errorf("oom_score_adj after writing 500 through /proc/self: %q", r.OomScoreAdj)
	}
	if !r.NetSame {
		t.Errorf("/proc/self/ns/net is not the process's network namespace")
	}
	if r.Reexec != "hello" {
		t.Errorf("/proc/self/exe re-executed said %q, want hello", r.Reexec)
	}
	if !r.SelfListed || !r.PidListed {
		t.Errorf("listing /proc: self listed as a link %v, %s listed as a directory %v", r.SelfListed, pid, r.PidListed)
	}

	view := mountinfo.Parse([]byte(r.Mountinfo))
	byPoint := map[string]mountinfo.Mount{}
	ids := map[uint32]bool{}
	for _, m := range view {
		if ids[m.ID] {
			t.Errorf("mount id %d appears twice in the view", m.ID)
		}
		ids[m.ID] = true
		byPoint[m.MountPoint] = m
	}
	if m := byPoint["/proc"]; m.FSType != "proc" || m.Source != "proc" {
		t.Errorf("/proc in the view: %+v, want the host's proc", m)
	}
	for _, h := range host {
		m, ok := byPoint[h.MountPoint]
		if !ok || m.FSType != h.FSType || m.SuperOptions != h.SuperOptions || m.Source != h.Source {
			t.Errorf("%s in the view: %+v (listed %v); the host has %s %s %s", h.MountPoint, m, ok, h.FSType, h.Source, h.SuperOptions)
		}
	}
	if r.ThreadMountinfo != r.Mountinfo {
		t.Errorf("/proc/thread-self/mountinfo is not the view of /proc/self/mountinfo:\n%s", r.ThreadMountinfo)
	}
	if !r.TaskListed {
		t.Errorf("/proc/self/task does not list the thread %d as a directory", r.Tid)
	}
	if t.Failed() {
		t.Logf("the probe's mountinfo:\n%s", r.Mountinfo)
	}
	if !strings.Contains(r.Mounts, "\nproc /proc proc ") && !strings.HasPrefix(r.Mounts, "proc /proc proc ") {
		t.Errorf("/proc/self/mounts has no proc line for /proc:\n%s", r.Mounts)
	}
	if len(host) > 0 {
		if st := tm.stats(); st["Mounts"] < 1 {
			t.Errorf("the server saw no Mounts call: %v", st)
		}
	}
}
