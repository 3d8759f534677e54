package testutil

import (
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

// RequireFUSE skips the test, with the reason and the fix, when it cannot
// mount: it needs root and a /dev/fuse it can open. Each tool named must
// also be on PATH.
func RequireFUSE(t testing.TB, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: FUSE mount tests mount directly and need root (run the tests as root, e.g. sudo go test)")
	}
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("skipped: /dev/fuse cannot be opened (%v): load the fuse module (modprobe fuse) or give the container /dev/fuse", err)
	}
	f.Close()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipped: %s is needed to work through the mount and is not on PATH (install it)", tool)
		}
	}
}

// WaitFor polls cond until it holds; it fails the test when it does not
// within d.
func WaitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// FreeAddr returns a TCP address on 127.0.0.1 that is free now. Another
// process may take it before the test listens on it.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
