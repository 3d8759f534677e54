package fuseclient_test

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestKilledCallerNotStuck: a process blocked in a read the server does
// not answer is killed with SIGKILL. The kernel has sent the request, so
// it cannot drop it: without the client's help the process would stay in
// uninterruptible sleep until the operation timeout (a minute here). The
// client sees the caller is being killed and cancels the call; the
// process is gone in about a second, and the mount still answers.
func TestKilledCallerNotStuck(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "none", opTimeout: "60s", stall: "Read"})
	if err := os.WriteFile(tm.host("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	cat := exec.Command("cat", tm.path("f"))
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cat.Wait(); close(exited) }()
	t.Cleanup(func() {
		cat.Process.Kill()
		select {
		case <-exited:
		case <-time.After(70 * time.Second):
		}
	})
	select {
	case <-exited:
		t.Fatal("cat returned from a read the server never answers")
	case <-time.After(1500 * time.Millisecond):
	}
	killed := time.Now()
	if err := cat.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		t.Logf("killed reader gone %v after SIGKILL", time.Since(killed).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the killed reader still waits for the server 10s after SIGKILL")
	}
	if _, err := os.Stat(tm.path("f")); err != nil {
		t.Fatalf("stat after the kill: %v", err)
	}
}
