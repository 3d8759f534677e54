package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

const cgroup2Magic = 0x63677270

// The test binary plays the launcher (SUPERVISE_LAUNCH: load the filter,
// send the listener over fd 3, exec itself) and the supervised program
// (SUPERVISE_PROG: make the calls, print what they returned).
func TestMain(m *testing.M) {
	switch {
	case os.Getenv("SUPERVISE_PROG") == "loop":
		os.Exit(syscallLoop())
	case os.Getenv("SUPERVISE_PROG") == "mount":
		os.Exit(mountProg())
	case os.Getenv("SUPERVISE_PROG") == "signal":
		os.Exit(signalProg())
	case os.Getenv("SUPERVISE_PROG") != "":
		os.Exit(prog())
	case os.Getenv("SUPERVISE_LAUNCH") != "":
		env := append(os.Environ(), "SUPERVISE_PROG="+os.Getenv("SUPERVISE_LAUNCH"))
		err := Exec("/proc/self/exe", []string{os.Args[0]}, env, func(l int) error { return SendListener(3, l) })
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	os.Exit(m.Run())
}

// result is one call of the supervised program.
type result struct {
	Call   string
	Type   int64
	Blocks uint64
	Errno  int
}

// prog makes statfs and fstatfs calls of the paths in SUPERVISE_PATHS,
// from several goroutines at once for a while (the Go runtime preempts
// its threads with signals meanwhile), and prints the last results.
func prog() int {
	paths := strings.Split(os.Getenv("SUPERVISE_PATHS"), ":")
	var mu sync.Mutex
	last := map[string]result{}
	call := func(name string, f func(*unix.Statfs_t) error) {
		var st unix.Statfs_t
		err := f(&st)
		r := result{Call: name, Type: st.Type, Blocks: st.Blocks}
		if err != nil {
			r.Errno = int(err.(syscall.Errno))
		}
		mu.Lock()
		last[name] = r
		mu.Unlock()
	}
	var wg sync.WaitGroup
	deadline := time.Now().Add(300 * time.Millisecond)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				for _, p := range paths {
					call("statfs "+p, func(st *unix.Statfs_t) error { return unix.Statfs(p, st) })
					f, err := os.Open(p)
					if err == nil {
						call("fstatfs "+p, func(st *unix.Statfs_t) error { return unix.Fstatfs(int(f.Fd()), st) })
						f.Close()
					}
				}
				call("statfs relative", func(st *unix.Statfs_t) error { return unix.Statfs(".", st) })
				call("statfs missing", func(st *unix.Statfs_t) error { return unix.Statfs("/nonexistent-qtfs", st) })
			}
		}()
	}
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(last)
	return 0
}

// supervised runs the program under a supervisor answering with statfs
// and returns its results.
func supervised(t *testing.T, cwd string, statfs StatfsFunc, paths ...string) (map[string]result, Stats) {
	t.Helper()
	return supervisedAs(t, "1", cwd, Options{Statfs: statfs}, paths...)
}

// supervisedAs runs the program of mode (SUPERVISE_LAUNCH) under a
// supervisor of opts and returns its results.
func supervisedAs(t *testing.T, mode, cwd string, opts Options, paths ...string) (map[string]result, Stats) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	child := os.NewFile(uintptr(fds[1]), "listener-socket")
	cmd := exec.Command(os.Args[0])
	cmd.Dir = cwd
	cmd.Env = append(os.Environ(), "SUPERVISE_LAUNCH="+mode, "SUPERVISE_PATHS="+strings.Join(paths, ":"))
	cmd.ExtraFiles = []*os.File{child}
	var out, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	l, err := ReceiveListener(fds[0])
	if err != nil {
		cmd.Wait()
		t.Fatalf("%v; the launcher said: %s", err, stderr.String())
	}
	opts.Logger = zaptest.NewLogger(t)
	s := Serve(l, opts)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the supervised program: %v\n%s", err, stderr.String())
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the supervisor did not stop once its program was gone")
	}
	var res map[string]result
	if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
		t.Fatalf("%v: %q", err, out.String())
	}
	return res, s.Stats()
}

// TestStatfsAnswered: statfs and fstatfs of the files the supervisor
// claims are answered with its statfs; the others run as they are.
func TestStatfsAnswered(t *testing.T) {
	ours := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(ours, &st); err != nil {
		t.Fatal(err)
	}
	dir := ours + "/sub"
	os.Mkdir(dir, 0o755)
	statfs := func(f *os.File, uid, gid uint32) (unix.Statfs_t, bool, error) {
		var fst unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
			return unix.Statfs_t{}, false, err
		}
		real, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
		if !strings.HasPrefix(real, ours) {
			return unix.Statfs_t{}, false, nil
		}
		if uid != uint32(os.Getuid()) {
			return unix.Statfs_t{}, true, fmt.Errorf("caller uid %d: %w", uid, unix.EPERM)
		}
		return unix.Statfs_t{Type: cgroup2Magic, Blocks: 4242}, true, nil
	}
	res, stats := supervised(t, dir, statfs, dir, "/proc")
	for _, k := range []string{"statfs " + dir, "fstatfs " + dir, "statfs relative"} {
		if r := res[k]; r.Errno != 0 || r.Type != cgroup2Magic || r.Blocks != 4242 {
			t.Errorf("%s: %+v, want the supervisor's answer", k, r)
		}
	}
	for _, k := range []string{"statfs /proc", "fstatfs /proc"} {
		if r := res[k]; r.Errno != 0 || r.Type != unix.PROC_SUPER_MAGIC {
			t.Errorf("%s: %+v, want the kernel's own answer", k, r)
		}
	}
	if r := res["statfs missing"]; r.Errno != int(unix.ENOENT) {
		t.Errorf("statfs of a missing path: %+v, want ENOENT", r)
	}
	if stats.Answered == 0 || stats.Continued == 0 {
		t.Errorf("stats %+v: want calls answered and calls continued", stats)
	}
	t.Logf("supervisor: %+v", stats)
}

// TestFilterNotifiesOnlyItsCalls runs the assembled filter in the BPF VM.
func TestFilterNotifiesOnlyItsCalls(t *testing.T) {
	filter, err := program()
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]bpf.Instruction, len(filter))
	for i, f := range filter {
		raw[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble()
	}
	vm, err := bpf.NewVM(raw)
	if err != nil {
		t.Fatal(err)
	}
	arch, _ := nativeArch()
	data := func(nr, arch uint32, args ...uint32) []byte {
		b := make([]byte, 64)
		// seccomp_data is in the host's byte order; both supported
		// architectures are little-endian, the VM loads big-endian
		// (so a test puts each word as the VM reads it).
		put := func(off int, v uint32) {
			b[off], b[off+1], b[off+2], b[off+3] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
		}
		put(0, nr)
		put(4, arch)
		for i, a := range args {
			put(offArgs+8*i, a)
		}
		return b
	}
	const fdcwd = 0xffffff9c
	for _, tc := range []struct {
		name     string
		nr, arch uint32
		want     uint32
		args     []uint32
	}{
		{"statx: the mount-point probe", unix.SYS_STATX, arch, unix.SECCOMP_RET_USER_NOTIF, []uint32{fdcwd, 0, unix.AT_STATX_DONT_SYNC, 0}},
		{"statx with a mask", unix.SYS_STATX, arch, unix.SECCOMP_RET_ALLOW, []uint32{fdcwd, 0, unix.AT_STATX_DONT_SYNC, unix.STATX_BASIC_STATS}},
		{"statx of other flags", unix.SYS_STATX, arch, unix.SECCOMP_RET_ALLOW, []uint32{fdcwd, 0, unix.AT_SYMLINK_NOFOLLOW, 0}},
		{"statx from a directory fd", unix.SYS_STATX, arch, unix.SECCOMP_RET_ALLOW, []uint32{3, 0, unix.AT_STATX_DONT_SYNC, 0}},
		{"statfs", unix.SYS_STATFS, arch, unix.SECCOMP_RET_USER_NOTIF, nil},
		{"fstatfs", unix.SYS_FSTATFS, arch, unix.SECCOMP_RET_USER_NOTIF, nil},
		{"mount", unix.SYS_MOUNT, arch, unix.SECCOMP_RET_USER_NOTIF, nil},
		{"umount2", unix.SYS_UMOUNT2, arch, unix.SECCOMP_RET_USER_NOTIF, nil},
		{"fsopen", unix.SYS_FSOPEN, arch, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS), nil},
		{"open_tree", unix.SYS_OPEN_TREE, arch, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS), nil},
		{"move_mount", unix.SYS_MOVE_MOUNT, arch, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS), nil},
		{"mount_setattr", unix.SYS_MOUNT_SETATTR, arch, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS), nil},
		{"kill", unix.SYS_KILL, arch, unix.SECCOMP_RET_USER_NOTIF, nil},
		{"pidfd_open", unix.SYS_PIDFD_OPEN, arch, unix.SECCOMP_RET_USER_NOTIF, nil},
		{"tgkill (the Go runtime's preemption)", unix.SYS_TGKILL, arch, unix.SECCOMP_RET_ALLOW, nil},
		{"openat", unix.SYS_OPENAT, arch, unix.SECCOMP_RET_ALLOW, nil},
		{"read", unix.SYS_READ, arch, unix.SECCOMP_RET_ALLOW, nil},
		{"statfs of another architecture", unix.SYS_STATFS, arch ^ 1, unix.SECCOMP_RET_ALLOW, nil},
	} {
		got, err := vm.Run(data(tc.nr, tc.arch, tc.args...))
		if err != nil {
			t.Fatal(err)
		}
		if uint32(got) != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, got, tc.want)
		}
	}
}
