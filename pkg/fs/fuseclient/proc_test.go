package fuseclient_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	"github.com/qtfs/qtfs/pkg/internal/proctest"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
)

// requireProcMount mounts the host's proc root with the given proc
// options; LocalProc "/proc" makes the links land in this process's own
// proc, which is the same pid namespace.
func requireProcMount(t *testing.T, localProc, offloadRoot string) *testMount {
	t.Helper()
	return requireProcMountCfg(t, mountCfg{localProc: localProc, offloadRoot: offloadRoot})
}

// requireProcMountCfg is requireProcMount with the options of cfg (its
// export is /proc).
func requireProcMountCfg(t *testing.T, cfg mountCfg) *testMount {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/proc", &st); err != nil || uint64(st.Type) != unix.PROC_SUPER_MAGIC {
		t.Skip("skipped: /proc is not a proc filesystem here")
	}
	cfg.export = "/proc"
	return startMount(t, cfg)
}

// TestProcSelf checks that self and thread-self of a mount of the host's
// proc root mean the process that reads them, not the server.
func TestProcSelf(t *testing.T) {
	tm := requireProcMount(t, "/proc", "")
	pid := os.Getpid()
	if got, err := os.Readlink(tm.path("self")); err != nil || got != fmt.Sprintf("/proc/%d", pid) {
		t.Errorf("readlink self: %q, %v; want /proc/%d", got, err, pid)
	}
	fi, err := os.Lstat(tm.path("self"))
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("lstat self: %v, %v; want a symlink", fi, err)
	}
	status, err := os.ReadFile(tm.path("self", "status"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("\nPid:\t%d\n", pid); !bytes.Contains(status, []byte(want)) {
		t.Errorf("self/status through the mount names another process (want %q):\n%s", want, status)
	}

	// From a thread other than the main one: the thread group for self,
	// the thread for thread-self.
	type res struct {
		tid         int
		self, tself string
		err         error
	}
	ch := make(chan res)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var r res
		r.tid = unix.Gettid()
		if r.self, r.err = os.Readlink(tm.path("self")); r.err == nil {
			r.tself, r.err = os.Readlink(tm.path("thread-self"))
		}
		ch <- r
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.self != fmt.Sprintf("/proc/%d", pid) {
		t.Errorf("self from thread %d: %q, want /proc/%d", r.tid, r.self, pid)
	}
	if want := fmt.Sprintf("/proc/%d/task/%d", pid, r.tid); r.tself != want {
		t.Errorf("thread-self from thread %d: %q, want %q", r.tid, r.tself, want)
	}

	// Another process reading the mount gets its own.
	out, err := exec.Command("sh", "-c", `echo $$; exec readlink "$1"`, "sh", tm.path("self")).Output()
	if err != nil {
		t.Fatalf("sh: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) != 2 || f[1] != "/proc/"+f[0] {
		t.Errorf("self read by another process: %q, want /proc/<its pid>", out)
	}
}

// TestProcSelfDefaultLocal checks the default local proc directory.
func TestProcSelfDefaultLocal(t *testing.T) {
	tm := requireProcMount(t, "", "")
	if got, err := os.Readlink(tm.path("self")); err != nil || got != fmt.Sprintf("/local_proc/%d", os.Getpid()) {
		t.Errorf("readlink self: %q, %v; want /local_proc/%d", got, err, os.Getpid())
	}
}

// TestProcRootSelfLinks checks that the proc root's links into "self"
// follow the host's pid 1.
func TestProcRootSelfLinks(t *testing.T) {
	tm := requireProcMount(t, "/proc", "")
	for _, tc := range []struct{ name, want string }{{"mounts", "1/mounts"}, {"net", "1/net"}} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := os.Lstat("/proc/" + tc.name); err != nil {
				t.Skipf("skipped: no /proc/%s here", tc.name)
			}
			if got, err := os.Readlink(tm.path(tc.name)); err != nil || got != tc.want {
				t.Errorf("readlink %s: %q, %v; want %q", tc.name, got, err, tc.want)
			}
		})
	}
	// Other programs may mount and unmount meanwhile: read both again
	// when they differ.
	var got, want []byte
	var err error
	for try := 0; try < 5; try++ {
		if want, err = os.ReadFile("/proc/1/mounts"); err != nil {
			t.Skipf("skipped: /proc/1/mounts unreadable: %v", err)
		}
		if got, err = os.ReadFile(tm.path("mounts")); err != nil || bytes.Equal(got, want) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !bytes.Equal(got, want) {
		t.Errorf("mounts through the mount (%d bytes, %v) differ from /proc/1/mounts (%d bytes)", len(got), err, len(want))
	}
}

// TestProcMagicLinks reads the magic links of a host process: the host's
// text, never followed by the server.
func TestProcMagicLinks(t *testing.T) {
	tm := requireProcMount(t, "/proc", "")
	cmd := proctest.Sleeper(t)
	pid := strconv.Itoa(cmd.Process.Pid)
	for _, name := range []string{"exe", "cwd", "root", "fd/0", "fd/1", "ns/net", "ns/pid", "ns/mnt"} {
		t.Run(name, func(t *testing.T) {
			want, err := os.Readlink("/proc/" + pid + "/" + name)
			if err != nil {
				t.Skipf("skipped: %v", err)
			}
			got, err := os.Readlink(tm.path(pid, name))
			if err != nil || got != want {
				t.Errorf("readlink %s/%s through the mount: %q, %v; host %q", pid, name, got, err, want)
			}
			fi, err := os.Lstat(tm.path(pid, name))
			if err != nil || fi.Mode()&os.ModeSymlink == 0 {
				t.Errorf("lstat: %v, %v; want a symlink", fi, err)
			}
		})
	}
}

// TestProcPidsComeAndGo checks that a host process shows in the mount as
// soon as it starts and is gone as soon as it ended, and that reading a
// file of an ended process fails as on the host.
func TestProcPidsComeAndGo(t *testing.T) {
	tm := requireProcMount(t, "/proc", "")
	cmd := proctest.Sleeper(t)
	pid := strconv.Itoa(cmd.Process.Pid)
	if _, err := os.Stat(tm.path(pid)); err != nil {
		t.Fatalf("a process just started is not in the mount: %v", err)
	}
	for _, f := range []string{"cmdline", "status", "stat"} {
		// status shows counters of the whole user (SigQ) that other
		// processes move: read both again when they differ.
		var got, host []byte
		var err error
		for try := 0; try < 5; try++ {
			if host, err = os.ReadFile("/proc/" + pid + "/" + f); err != nil {
				t.Fatal(err)
			}
			if got, err = os.ReadFile(tm.path(pid, f)); err != nil || bytes.Equal(proctest.WithoutSigQ(got), proctest.WithoutSigQ(host)) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil || !bytes.Equal(proctest.WithoutSigQ(got), proctest.WithoutSigQ(host)) {
			t.Errorf("%s through the mount: %q, %v; host %q", f, got, err, host)
		}
	}
	held, err := os.Open(tm.path(pid, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	hostHeld, err := os.Open("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	defer hostHeld.Close()
	buf := make([]byte, 4096)
	if _, err := held.Read(buf); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	if _, err := os.Stat(tm.path(pid)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat of an ended process: %v, want ENOENT", err)
	}
	if _, err := os.ReadFile(tm.path(pid, "status")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("open of an ended process's file: %v, want ENOENT", err)
	}
	_, hostErr := hostHeld.ReadAt(buf, 0)
	_, err = held.ReadAt(buf, 0)
	if hostErr == nil || !errors.Is(err, errnoOf(hostErr)) {
		t.Errorf("read of a file held open past the process's end: %v; on the host %v", err, hostErr)
	}
	if errors.Is(err, syscall.EIO) {
		t.Errorf("read of an ended process's file gave EIO")
	}
}

// TestProcScanKeepsPidEntries checks that a scan of /proc (a listing,
// then a few files of each process) looks nothing up on the host the
// second time: the names of the processes the listing gave and of their
// files are kept (specialTTL); only the opens go out.
func TestProcScanKeepsPidEntries(t *testing.T) {
	// What is kept is kept an hour here, not a second: nothing the first
	// scan fetched runs out during the second, however slow the run.
	tm := requireProcMountCfg(t, mountCfg{localProc: "/proc", specialTTL: "1h"})
	pid := strconv.Itoa(os.Getppid()) // lives as long as the test
	var listed map[string]bool        // what the last listing gave
	// scan lists the root and reads two files of pid; it reports whether
	// a process the listing before it gave has ended since.
	scan := func() (ended bool) {
		t.Helper()
		ents, err := os.ReadDir(tm.path())
		if err != nil {
			t.Fatal(err)
		}
		now := make(map[string]bool, len(ents))
		for _, e := range ents {
			now[e.Name()] = true
		}
		for name := range listed {
			ended = ended || !now[name]
		}
		listed = now
		for _, f := range []string{"stat", "status"} {
			if _, err := os.ReadFile(tm.path(pid, f)); err != nil {
				t.Fatal(err)
			}
		}
		return ended
	}
	// One thread: the client reads status along with stat for the
	// thread that opened both before (TestProcScanReadsAhead).
	// A slow run may miss the read-ahead's window: a few tries.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for try := 0; ; try++ {
		ended := scan()
		tm.resetStats()
		ended = scan() || ended
		st := tm.stats()
		if st["Lookup"] != 0 {
			t.Fatalf("second scan: RPCs %v, want no Lookup", st)
		}
		// A process that ended is dropped from the root's entries, and
		// the kernel then drops the root's attributes too: the next walk
		// through the root asks for them (a busy machine, as under CI).
		if st["Getattr"] != 0 && !ended {
			t.Fatalf("second scan: RPCs %v with no process ended, want no Getattr", st)
		}
		if st["Open"] == 2 {
			break
		}
		if try == 4 {
			t.Fatalf("second scan: RPCs %v, want 2 Opens (the root; stat, status read along)", st)
		}
	}
}

// TestProcScanReadsAhead checks the reading ahead for scans of /proc: once
// a thread opened stat then status in a process's directory, its open of
// stat in another one brings status along, and its open of status that
// follows costs no RPC and reads the host's content. Another caller, or
// an open later than scanWindow, asks the host.
func TestProcScanReadsAhead(t *testing.T) {
	tm := requireProcMount(t, "/proc", "")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pids := []string{strconv.Itoa(proctest.Sleeper(t).Process.Pid), strconv.Itoa(proctest.Sleeper(t).Process.Pid),
		strconv.Itoa(proctest.Sleeper(t).Process.Pid)}
	for _, pid := range pids {
		proctest.WaitAsleep(t, pid)
	}
	read := func(pid, name string) []byte {
		t.Helper()
		b, err := os.ReadFile(tm.path(pid, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	opens := func() int {
		t.Helper()
		return tm.stats()["Open"]
	}
	// The order is learnt, and the read-ahead used, only when the opens
	// follow within scanWindow: a slow run (the race detector) may miss
	// it, so a few tries are allowed.
	var got []byte
	for try := 0; ; try++ {
		read(pids[0], "stat")
		read(pids[0], "status") // learnt: status follows stat
		tm.resetStats()
		read(pids[1], "stat")
		got = read(pids[1], "status")
		n := opens()
		if n == 1 {
			break
		}
		if try == 4 {
			t.Fatalf("stat then status of the next process: %d Opens, want 1", n)
		}
	}
	host, err := os.ReadFile("/proc/" + pids[1] + "/status")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(proctest.WithoutSigQ(got), proctest.WithoutSigQ(host)) {
		t.Errorf("status read along: %q; host %q", got, host)
	}

	tm.resetStats()
	read(pids[2], "stat")
	if out, err := exec.Command("cat", tm.path(pids[2], "status")).CombinedOutput(); err != nil {
		t.Fatalf("cat: %v %s", err, out)
	}
	if n := opens(); n != 2 {
		t.Errorf("status opened by another process: %d Opens, want 2", n)
	}

	tm.resetStats()
	read(pids[0], "stat")
	time.Sleep(50 * time.Millisecond)
	read(pids[0], "status")
	if n := opens(); n != 2 {
		t.Errorf("status opened 50 ms after stat: %d Opens, want 2", n)
	}
}

// TestProcEndedPidsDropped checks that the kernel's entry of a process a
// listing named is dropped as soon as the client sees the process gone:
// by an open of one of its files, or by a listing without it. stat(2)
// then says ENOENT at once, not when the entry's second runs out.
func TestProcEndedPidsDropped(t *testing.T) {
	tm := requireProcMount(t, "/proc", "")
	// listedThenEnded starts a process, lists the root (which gives the
	// kernel an entry of it) and ends the process.
	listedThenEnded := func(t *testing.T) (string, time.Time) {
		cmd := proctest.Sleeper(t)
		pid := strconv.Itoa(cmd.Process.Pid)
		if _, err := os.ReadDir(tm.path()); err != nil {
			t.Fatal(err)
		}
		listed := time.Now()
		if _, err := os.Stat(tm.path(pid)); err != nil {
			t.Fatalf("a process just listed is not in the mount: %v", err)
		}
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		return pid, listed
	}
	// goneSoon waits for stat to say ENOENT. The entry is dropped on a
	// goroutine: allow it a moment, well within the entry's own second.
	goneSoon := func(t *testing.T, pid string, listed time.Time) {
		t.Helper()
		for {
			_, err := os.Stat(tm.path(pid))
			if errors.Is(err, syscall.ENOENT) {
				return
			}
			if time.Since(listed) > 250*time.Millisecond {
				t.Fatalf("stat of an ended process: %v, want ENOENT", err)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t.Run("by an open", func(t *testing.T) {
		pid, listed := listedThenEnded(t)
		if _, err := os.ReadFile(tm.path(pid, "status")); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("open of an ended process's file: %v, want ENOENT", err)
		}
		goneSoon(t, pid, listed)
	})
	t.Run("in a rename", func(t *testing.T) {
		// rename(2) holds the locks of both directories, the root's too,
		// while the client looks the missing source up in the process's
		// directory: the drop that ENOENT starts must not wait for it.
		pid := strconv.Itoa(os.Getppid())
		if _, err := os.ReadDir(tm.path()); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- os.Rename(tm.path(pid, "no-such-file"), tm.path("renamed")) }()
		select {
		case err := <-done:
			if !errors.Is(err, syscall.ENOENT) {
				t.Errorf("rename of a missing file of a process: %v, want ENOENT", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("rename of a missing file of a process hangs")
		}
		if _, err := os.Stat(tm.path(pid)); err != nil {
			t.Errorf("stat of a living process after its entry was dropped: %v", err)
		}
	})
	t.Run("by a listing", func(t *testing.T) {
		pid, listed := listedThenEnded(t)
		names, err := os.ReadDir(tm.path())
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range names {
			if e.Name() == pid {
				t.Fatalf("the listing has the ended process %s", pid)
			}
		}
		goneSoon(t, pid, listed)
	})
}

// errnoOf returns the errno inside err (EIO when there is none).
func errnoOf(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}

// TestProcOffloadRule checks the rule for processes of the offload
// chroot: with OffloadRoot "/" every local process counts as one, so the
// test's own pid is the client's directory, whose entries lead into the
// local proc, listed once; with a root no process has, the host's
// directory shows.
func TestProcOffloadRule(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name  string
		root  string
		local bool
	}{
		{"in the chroot", "/", true},
		{"outside", "/nonexistent/offload/root", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := requireProcMount(t, "/proc", tc.root)
			fi, err := os.Lstat(tm.path(pid))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.IsDir() {
				t.Errorf("%s is not a directory (mode %v)", pid, fi.Mode())
			}
			status, err := os.ReadFile(tm.path(pid, "status"))
			if err != nil || !bytes.Contains(status, []byte("\nPid:\t"+pid+"\n")) {
				t.Errorf("status of %s: %v", pid, err)
			}
			target, err := os.Readlink(tm.path(pid, "status"))
			if tc.local && (err != nil || target != "/proc/"+pid+"/status") {
				t.Errorf("readlink %s/status: %q, %v; want /proc/%s/status", pid, target, err, pid)
			}
			if !tc.local && err == nil {
				t.Errorf("%s/status of the host's process is a link to %q", pid, target)
			}
			want := "/proc/" + pid
			if tc.local {
				want = pid // its directory in the mount
			}
			if self, err := os.Readlink(tm.path("self")); err != nil || self != want {
				t.Errorf("readlink self: %q, %v; want %q", self, err, want)
			}
			entries, err := os.ReadDir(tm.path())
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for _, e := range entries {
				seen[e.Name()]++
				if e.Name() == pid && !e.IsDir() {
					t.Errorf("listing: %s type %v, want a directory", pid, e.Type())
				}
				if (e.Name() == "self" || e.Name() == "thread-self") && e.Type()&os.ModeSymlink == 0 {
					t.Errorf("listing: %s type %v, want a symlink", e.Name(), e.Type())
				}
			}
			for name, n := range seen {
				if n > 1 {
					t.Errorf("listing: %s appears %d times", name, n)
				}
			}
			if seen[pid] != 1 || seen["self"] != 1 {
				t.Errorf("listing: %s seen %d times, self %d times", pid, seen[pid], seen["self"])
			}
		})
	}
}

// TestProcPidDir looks into the directory of an offloaded process (the
// test's own, with OffloadRoot "/"): its names are the local proc's, as
// links into it except mountinfo and mounts (files the client makes) and
// exe, cwd and root (the process's own view); through it a file of the
// process reopens by /proc/self/fd/N, and its mount table shows the proc
// mount itself as the host's proc.
func TestProcPidDir(t *testing.T) {
	tm := requireProcMount(t, "/proc", "/")
	pid := strconv.Itoa(os.Getpid())
	if got, err := os.Readlink(tm.path("self")); err != nil || got != pid {
		t.Fatalf("readlink self: %q, %v; want %s", got, err, pid)
	}
	type res struct {
		tid   int
		tself string
		err   error
	}
	ch := make(chan res)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var r res
		r.tid = unix.Gettid()
		r.tself, r.err = os.Readlink(tm.path("thread-self"))
		ch <- r
	}()
	if r := <-ch; r.err != nil || r.tself != fmt.Sprintf("%s/task/%d", pid, r.tid) {
		t.Errorf("readlink thread-self from thread %d: %q, %v", r.tid, r.tself, r.err)
	}

	entries, err := os.ReadDir(tm.path("self"))
	if err != nil {
		t.Fatal(err)
	}
	local, err := os.ReadDir("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]os.FileMode{}
	for _, e := range entries {
		types[e.Name()] = e.Type()
	}
	if len(entries) != len(local) {
		t.Errorf("%d names, the local proc's directory has %d", len(entries), len(local))
	}
	for name, want := range map[string]os.FileMode{"mountinfo": 0, "mounts": 0, "exe": os.ModeSymlink, "status": os.ModeSymlink, "fd": os.ModeSymlink} {
		if got, ok := types[name]; !ok || got != want {
			t.Errorf("listing: %s type %v (listed %v), want %v", name, got, ok, want)
		}
	}
	for _, name := range []string{"exe", "cwd"} {
		want, err := os.Readlink("/proc/self/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(tm.path("self", name)); err != nil || got != want {
			t.Errorf("readlink self/%s: %q, %v; want %q", name, got, err, want)
		}
	}
	if got, err := os.Readlink(tm.path("self", "root")); err != nil || got != "/" {
		t.Errorf("readlink self/root: %q, %v; want /", got, err)
	}

	f, err := os.CreateTemp(t.TempDir(), "fd")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	again, err := os.Open(tm.path("self", "fd", strconv.Itoa(int(f.Fd()))))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	var a, b unix.Stat_t
	if unix.Fstat(int(f.Fd()), &a) != nil || unix.Fstat(int(again.Fd()), &b) != nil || a.Dev != b.Dev || a.Ino != b.Ino {
		t.Errorf("reopened through self/fd: dev %d ino %d, the file's %d %d", b.Dev, b.Ino, a.Dev, a.Ino)
	}

	fi, err := os.Stat(tm.path("self", "mountinfo"))
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o444 || fi.Size() != 0 {
		t.Errorf("stat self/mountinfo: %v, %v; want a regular file 0444 of size 0", fi, err)
	}
	if _, err := os.OpenFile(tm.path("self", "mountinfo"), os.O_WRONLY, 0); !errors.Is(err, syscall.EACCES) {
		t.Errorf("open self/mountinfo for writing: %v, want EACCES", err)
	}
	info, err := os.ReadFile(tm.path("self", "mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	line := mountLine(t, info, tm.mnt)
	if line.FSType != "proc" || line.Source != "proc" {
		t.Errorf("the proc mount in its own view: %+v, want the host's proc", line)
	}
	mounts, err := os.ReadFile(tm.path("self", "mounts"))
	if err != nil || !bytes.Contains(mounts, []byte("proc "+tm.mnt+" proc ")) {
		t.Errorf("self/mounts has no proc line for %s: %v\n%s", tm.mnt, err, mounts)
	}
}

// mountLine returns the line of mount point mp of a mountinfo file.
func mountLine(t *testing.T, info []byte, mp string) mountinfo.Mount {
	t.Helper()
	var found mountinfo.Mount
	for _, m := range mountinfo.Parse(info) {
		if m.MountPoint == mp {
			found = m
		}
	}
	if found.MountPoint == "" {
		t.Fatalf("no line for %s in:\n%s", mp, info)
	}
	return found
}

// TestProcMountinfoCgroup mounts the host's /sys/fs/cgroup next to its
// proc root, in one session, and reads the mount table of an offloaded
// process (the test): the cgroup mount shows the host's type, and the
// host's mounts beneath it (cgroup v1 controllers, cgroup2) follow as
// lines beneath its mount point. Reading it again and again costs at
// most one Mounts RPC per mount and second.
func TestProcMountinfoCgroup(t *testing.T) {
	const cgroup = "/sys/fs/cgroup"
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var host []mountinfo.Mount
	for _, m := range mountinfo.Parse(info) {
		if m.MountPoint == cgroup || strings.HasPrefix(m.MountPoint, cgroup+"/") {
			host = append(host, m)
		}
	}
	if len(host) == 0 {
		t.Skip("skipped: nothing is mounted on /sys/fs/cgroup here")
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/proc", &st); err != nil || uint64(st.Type) != unix.PROC_SUPER_MAGIC {
		t.Skip("skipped: /proc is not a proc filesystem here")
	}
	cgMnt := t.TempDir()
	tm := startMount(t, mountCfg{export: "/proc", localProc: "/proc", offloadRoot: "/", extra: [][2]string{{cgroup, cgMnt}}})
	tm.resetStats()
	start := time.Now()
	const reads = 20
	var view []byte
	for i := 0; i < reads; i++ {
		if view, err = os.ReadFile(tm.path("self", "mountinfo")); err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	rpcs := tm.stats()["Mounts"]
	if limit := 2 * (int(elapsed/time.Second) + 1); rpcs < 1 || rpcs > limit {
		t.Errorf("%d reads in %v: %d Mounts RPCs, want 1 to %d (two mounts, one a second each)", reads, elapsed, rpcs, limit)
	}
	for _, h := range host {
		mp := cgMnt + strings.TrimPrefix(h.MountPoint, cgroup)
		m := mountLine(t, view, mp)
		if m.FSType != h.FSType || m.SuperOptions != h.SuperOptions || m.Source != h.Source || m.Root != h.Root {
			t.Errorf("%s in the view: %+v; the host's %s: %+v", mp, m, h.MountPoint, h)
		}
	}
}

// TestSpecialContent reads files whose size says nothing of their content
// (0 on proc, 4096 on sysfs, 0 on cgroup) through mounts of the kind's
// root, and of a tmpfs holding cgroup hierarchies, with the default cache
// policy.
func TestSpecialContent(t *testing.T) {
	type export struct {
		path  string
		files []string
	}
	exports := []export{
		{"/proc", []string{"cmdline", "sys/kernel/ostype"}},
		{"/sys", []string{"devices/system/cpu/possible", "devices/system/cpu/kernel_max"}},
	}
	if h := cgroupHierarchies(t); len(h) > 0 {
		file := "cgroup.clone_children"
		if h[0].v2 {
			file = "cgroup.max.depth"
		}
		exports = append(exports, export{h[0].mountpoint, []string{file}})
		if parent := filepath.Dir(h[0].mountpoint); onlyCgroupsBeneath(t, parent) {
			rel, _ := filepath.Rel(parent, h[0].mountpoint)
			exports = append(exports, export{parent, []string{rel + "/" + file}})
		}
	}
	for _, ex := range exports {
		t.Run(ex.path, func(t *testing.T) {
			tm := startMount(t, mountCfg{export: ex.path})
			for _, file := range ex.files {
				want, err := os.ReadFile(filepath.Join(ex.path, file))
				if err != nil || len(want) == 0 {
					t.Logf("%s skipped: %v (%d bytes)", file, err, len(want))
					continue
				}
				got, err := os.ReadFile(tm.path(file))
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("read %s through the mount: %q, %v; host %q", file, got, err, want)
				}
			}
		})
	}
}

// hierarchy is a cgroup filesystem mounted on this machine.
type hierarchy struct {
	mountpoint string
	v2         bool
}

// cgroupHierarchies lists the cgroup mounts, cgroup2 first.
func cgroupHierarchies(t *testing.T) []hierarchy {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var v1, v2 []hierarchy
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		for i, x := range f {
			if x != "-" || i+1 >= len(f) || len(f) < 5 {
				continue
			}
			switch f[i+1] {
			case "cgroup2":
				v2 = append(v2, hierarchy{f[4], true})
			case "cgroup":
				v1 = append(v1, hierarchy{f[4], false})
			}
		}
	}
	return append(v2, v1...)
}

// onlyCgroupsBeneath reports whether dir is a tmpfs holding nothing but
// cgroup mounts.
func onlyCgroupsBeneath(t *testing.T, dir string) bool {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil || uint64(st.Type) != unix.TMPFS_MAGIC {
		return false
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[4], dir+"/") {
			continue
		}
		if !strings.Contains(line, " - cgroup") {
			return false
		}
	}
	return true
}

// testCgroup makes a cgroup of the test in the first writable hierarchy
// and removes it (and what the test made in it) when the test ends.
func testCgroup(t *testing.T) (string, hierarchy) {
	t.Helper()
	for _, h := range cgroupHierarchies(t) {
		dir := filepath.Join(h.mountpoint, fmt.Sprintf("qtfs-fuseclient-%d", os.Getpid()))
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		t.Cleanup(func() {
			subs, _ := filepath.Glob(filepath.Join(dir, "*", "cgroup.procs"))
			for _, s := range subs {
				_ = os.Remove(filepath.Dir(s))
			}
			if err := os.Remove(dir); err != nil {
				t.Errorf("remove test cgroup %s: %v", dir, err)
			}
		})
		return dir, h
	}
	t.Skip("skipped: no writable cgroup hierarchy (mount cgroup2 on /sys/fs/cgroup, run as root)")
	return "", hierarchy{}
}

// writeOnce opens p for writing and writes data with one write(2),
// returning the errno (0 on success).
func writeOnce(p, data string) syscall.Errno {
	fd, err := unix.Open(p, unix.O_WRONLY, 0)
	if err != nil {
		return errnoOf(err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte(data)); err != nil {
		return errnoOf(err)
	}
	return 0
}

// TestCgroupThroughMount manages a cgroup through a mount of its
// hierarchy: mkdir, limits, moving a process, errors as the host gives
// them, each write(2) one Write RPC, rmdir.
func TestCgroupThroughMount(t *testing.T) {
	testutil.RequireFUSE(t)
	dir, h := testCgroup(t)
	tm := startMount(t, mountCfg{export: dir})
	if err := os.Mkdir(tm.path("c"), 0o755); err != nil {
		t.Fatalf("mkdir of a cgroup through the mount: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "c", "cgroup.procs")); err != nil {
		t.Fatalf("the host has no cgroup made through the mount: %v", err)
	}
	if err := os.Mkdir(tm.path("c"), 0o755); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("mkdir of an existing cgroup: %v, want EEXIST", err)
	}
	limit, good, bad := "notify_on_release", "1", "abc"
	if h.v2 {
		limit, good, bad = "cgroup.max.descendants", "3", "abc"
	}
	cases := []struct {
		name, file, data, hostWant string
	}{
		{"limit", limit, good + "\n", good},
		{"bad value", limit, bad, good},
		{"no such process", "cgroup.procs", "2147483646", ""},
		{"not a number", "cgroup.procs", "x1", ""},
	}
	tm.resetStats()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := writeOnce(filepath.Join(dir, "c", tc.file), tc.data)
			got := writeOnce(tm.path("c", tc.file), tc.data)
			if got != want {
				t.Errorf("write %q to %s: errno %v through the mount, %v on the host", tc.data, tc.file, got, want)
			}
			if tc.hostWant != "" {
				b, err := os.ReadFile(filepath.Join(dir, "c", tc.file))
				if err != nil || strings.TrimSpace(string(b)) != tc.hostWant {
					t.Errorf("host reads %q, %v; want %q", b, err, tc.hostWant)
				}
			}
		})
	}
	if got := tm.stats()["Write"]; got != len(cases) {
		t.Errorf("Write RPCs: %d for %d write(2) calls", got, len(cases))
	}

	cmd := proctest.Sleeper(t)
	pid := strconv.Itoa(cmd.Process.Pid)
	if e := writeOnce(tm.path("c", "cgroup.procs"), pid); e != 0 {
		t.Fatalf("move a process through the mount: %v", e)
	}
	cg, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil || !strings.Contains(string(cg), "/"+filepath.Base(dir)+"/c\n") {
		t.Errorf("host process cgroups after the move: %q, %v", cg, err)
	}
	procs, err := os.ReadFile(tm.path("c", "cgroup.procs"))
	if err != nil || strings.TrimSpace(string(procs)) != pid {
		t.Errorf("cgroup.procs through the mount: %q, %v; want %s", procs, err, pid)
	}
	if err := os.Remove(tm.path("c")); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("rmdir of a cgroup with a process: %v, want EBUSY", err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.Remove(tm.path("c"))
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			t.Fatalf("rmdir of an empty cgroup through the mount: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(filepath.Join(dir, "c")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup still on the host after rmdir: %v", err)
	}
}

// TestProcOpenReadClose: a small /proc file read whole at open costs one
// Open (the server closes it at once: no Release; its attributes answer
// the fstat that follows), and the same open file
// can still be read again from the start (it is opened again), stat'ed,
// and closed.
func TestProcOpenReadClose(t *testing.T) {
	// The file's name and attributes are kept an hour here, not a
	// second: none runs out during the reads, however slow the run.
	tm := requireProcMountCfg(t, mountCfg{localProc: "/proc", specialTTL: "1h"})
	want, err := os.ReadFile("/proc/sys/kernel/ostype")
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	if _, err := os.ReadFile(tm.path("sys/kernel/ostype")); err != nil { // looked up
		t.Fatal(err)
	}
	tm.resetStats()
	for range n {
		got, err := os.ReadFile(tm.path("sys/kernel/ostype"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read: %q, %v; want %q", got, err, want)
		}
	}
	st := tm.stats()
	if st["Open"] != n || st["Release"] != 0 || st["Getattr"] != 0 {
		t.Fatalf("%d whole reads (open, fstat, read, close): %v; want %d Opens, no Getattr (the Open's attributes answer fstat) and no Release", n, st, n)
	}

	f, err := os.Open(tm.path("uptime"))
	if err != nil {
		t.Fatal(err)
	}
	first, err := io.ReadAll(f)
	if err != nil || len(first) == 0 {
		t.Fatalf("read uptime: %q, %v", first, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("fstat of a file closed on the server: %v, %v", fi, err)
	}
	again := make([]byte, 256)
	k, err := f.ReadAt(again, 0)
	if k == 0 || (err != nil && err != io.EOF) {
		t.Fatalf("read again from the start: %d bytes, %v", k, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// The kernel sends the Release after close(2) returns.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if st = tm.stats(); st["Release"] > 0 || time.Now().After(deadline) {
			break
		}
	}
	if st["Open"] != n+2 || st["Release"] != 1 {
		t.Fatalf("open, read, stat, re-read, close: %v; want 2 more Opens (the re-read opens again) and its Release", st)
	}
}
