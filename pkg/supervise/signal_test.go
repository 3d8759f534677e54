package supervise

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// signalProg signals itself and the process SUPERVISE_PATHS names (one in
// another root) with signal 0, by kill(2) and pidfd_open(2), and prints
// each call's errno.
func signalProg() int {
	other, _ := strconv.Atoi(os.Getenv("SUPERVISE_PATHS"))
	res := map[string]result{}
	do := func(name string, err error) {
		r := result{Call: name}
		if err != nil {
			r.Errno = int(err.(syscall.Errno))
		}
		res[name] = r
	}
	do("kill self", unix.Kill(os.Getpid(), 0))
	do("kill another root's process", unix.Kill(other, 0))
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	do("pidfd_open self", err)
	unix.Close(fd)
	fd, err = unix.PidfdOpen(other, 0)
	do("pidfd_open another root's process", err)
	if err == nil {
		unix.Close(fd)
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// TestSignalsConfined: with ConfineSignals, kill(2) and pidfd_open(2) of
// a process outside the caller's root fail with ESRCH (the number means
// the host's process to an offloaded program); the caller's own
// processes are signalled as they are.
func TestSignalsConfined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chroot(2) for a process of another root")
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs the static busybox: apt-get install busybox-static")
	}
	root := t.TempDir()
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	other := exec.Command(bb, "chroot", root, "/busybox", "sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	// Wait until it runs in its root.
	for i := 0; ; i++ {
		if r, _ := os.Readlink("/proc/" + strconv.Itoa(other.Process.Pid) + "/root"); r == root {
			break
		}
		if i > 1000 {
			t.Fatal("the process of another root did not start")
		}
	}
	res, stats := supervisedAs(t, "signal", t.TempDir(), Options{ConfineSignals: true}, strconv.Itoa(other.Process.Pid))
	want := map[string]int{
		"kill self": 0, "pidfd_open self": 0,
		"kill another root's process":       int(unix.ESRCH),
		"pidfd_open another root's process": int(unix.ESRCH),
	}
	for k, e := range want {
		if r, ok := res[k]; !ok || r.Errno != e {
			t.Errorf("%s: errno %d (%v), want %d", k, r.Errno, ok, e)
		}
	}
	if stats.Answered < 2 {
		t.Errorf("stats %+v: want the two refusals answered", stats)
	}
	// Without the supervisor the same kill reaches it.
	if err := unix.Kill(other.Process.Pid, 0); err != nil {
		t.Errorf("kill of the process without the supervisor: %v: the test tests nothing", err)
	}
}
