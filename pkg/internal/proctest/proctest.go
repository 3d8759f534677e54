// Package proctest holds what the tests of several packages need to work
// with processes of the host and the files of its /proc.
package proctest

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
	"time"
)

// Sleeper starts a sleep(1) for the test, a process of the "host", and
// stops it, by pid, when the test ends. The test is skipped without
// sleep(1).
func Sleeper(t testing.TB) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	if err := cmd.Start(); err != nil {
		t.Skipf("skipped: no sleep(1) to start a host process: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd
}

// WaitAsleep waits until the host process pid sleeps: a process just
// started may still be loading its program, and its files change as it
// does.
func WaitAsleep(t testing.TB, pid string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + pid + "/status")
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(st, []byte("\nState:\tS")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %s does not go to sleep:\n%s", pid, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// WithoutSigQ drops the SigQ line of a /proc/<pid>/status: a count of the
// whole user's queued signals, which any other process may move between
// two reads.
func WithoutSigQ(status []byte) []byte {
	var out [][]byte
	for _, l := range bytes.Split(status, []byte("\n")) {
		if !bytes.HasPrefix(l, []byte("SigQ:")) {
			out = append(out, l)
		}
	}
	return bytes.Join(out, []byte("\n"))
}
