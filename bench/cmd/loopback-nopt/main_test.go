package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as the daemon: the mount is served from a
// subprocess, never from the process that touches it.
func TestMain(m *testing.M) {
	if os.Getenv("LOOPBACK_NOPT_SERVE") == "1" {
		os.Exit(run(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 4 && fs[4] == dir {
			return true
		}
	}
	return false
}

// cpuTicks is utime+stime of pid.
func cpuTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	var u, s uint64
	fmt.Sscan(f[11], &u)
	fmt.Sscan(f[12], &s)
	return u + s
}

func TestServesThroughTheDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount without fusermount: run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse (%v): create it with mknod -m 0666 /dev/fuse c 10 229", err)
	}
	orig, mnt := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(orig, "hello"), []byte("from the backing dir\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A sparse file: reading it costs the backing side nothing, so the
	// daemon's CPU is what serving the reads costs.
	const size = 512 << 20
	f, err := os.Create(filepath.Join(orig, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()

	cmd := exec.Command(os.Args[0], mnt, orig)
	cmd.Env = append(os.Environ(), "LOOPBACK_NOPT_SERVE=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if isMounted(t, mnt) {
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
			t.Errorf("%s still mounted after the daemon ended", mnt)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !isMounted(t, mnt) {
		if time.Now().After(deadline) {
			t.Fatalf("not mounted after 10 s: %s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	got, err := os.ReadFile(filepath.Join(mnt, "hello"))
	if err != nil || string(got) != "from the backing dir\n" {
		t.Fatalf("read through the mount: %q, %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("from the mount\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(orig, "new")); err != nil || string(got) != "from the mount\n" {
		t.Fatalf("written through the mount, read in the backing dir: %q, %v", got, err)
	}

	// Without passthrough every read is a FUSE request the daemon answers:
	// reading 512 MiB through the mount costs it CPU. (With passthrough the
	// kernel reads the backing file itself and the daemon stays idle.)
	sf, err := os.Open(filepath.Join(mnt, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if err := unix.Fadvise(int(sf.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	before := cpuTicks(t, cmd.Process.Pid)
	n, err := io.CopyBuffer(io.Discard, sf, make([]byte, 1<<20))
	if err != nil || n != size {
		t.Fatalf("read %d bytes, %v", n, err)
	}
	after := cpuTicks(t, cmd.Process.Pid)
	t.Logf("daemon CPU for reading %d MiB: %d ticks", size>>20, after-before)
	if after <= before {
		t.Fatalf("the daemon spent no CPU serving %d MiB of reads: the reads did not reach it (passthrough?)", size>>20)
	}
}
