package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServerKeepsSysmonAwake checks that qtfs-server runs, in the process
// it was started as, with the GODEBUG setting that keeps the Go runtime's
// sysmon thread out of its deep sleep (cmd/qtfs-server/sysmon.go), and
// that the setting does what it is there for: the idle server's threads
// wake about 100 times a second (sysmon's 10 ms polling), where with the
// runtime's default (GODEBUG=schedtrace=0, which the server leaves alone)
// they sleep.
func TestServerKeepsSysmonAwake(t *testing.T) {
	needMachine(t)
	for _, tc := range []struct {
		name    string
		godebug string // "" for none
		want    string
		awake   bool
	}{
		{"default", "", "schedtrace=2147483647", true},
		{"schedtrace=0 kept", "schedtrace=0", "schedtrace=0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(bin("qtfs-server"), "--listen", "unix://"+filepath.Join(dir, "s.sock"),
				"--export", dir, "--metrics-listen", "", "--log-format", "console")
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, "GODEBUG=") {
					cmd.Env = append(cmd.Env, kv)
				}
			}
			if tc.godebug != "" {
				cmd.Env = append(cmd.Env, "GODEBUG="+tc.godebug)
			}
			p := startCmd(t, cmd)
			p.waitFor(t, "qtfs-server ready", 20*time.Second)
			pid := p.cmd.Process.Pid

			environ, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
			if err != nil {
				t.Fatal(err)
			}
			var godebug []string
			for _, kv := range bytes.Split(environ, []byte{0}) {
				if v, ok := bytes.CutPrefix(kv, []byte("GODEBUG=")); ok {
					godebug = append(godebug, string(v))
				}
			}
			if len(godebug) != 1 || godebug[0] != tc.want {
				t.Fatalf("the server (pid %d) runs with GODEBUG %q, want [%q]", pid, godebug, tc.want)
			}

			// Idle: no client. Count every thread's context switches.
			time.Sleep(500 * time.Millisecond)
			before := contextSwitches(t, pid)
			const window = 2 * time.Second
			time.Sleep(window)
			n := contextSwitches(t, pid) - before
			t.Logf("idle server: %d context switches in %v", n, window)
			if tc.awake && n < 100 {
				t.Errorf("idle server with sysmon kept awake: %d context switches in %v, want about 200 (sysmon polling every 10 ms)", n, window)
			}
			if !tc.awake && n >= 100 {
				t.Errorf("idle server with the runtime's default: %d context switches in %v, want few (sysmon asleep)", n, window)
			}
		})
	}
}

// contextSwitches sums the voluntary and involuntary context switches of
// every thread of process pid.
func contextSwitches(t *testing.T, pid int) int {
	t.Helper()
	tasks, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/status")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("threads of pid %d: %v", pid, err)
	}
	total := 0
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended
		}
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, err := strconv.Atoi(strings.TrimSpace(v))
				if err != nil {
					t.Fatalf("%s: %q", f, line)
				}
				total += n
			}
		}
	}
	return total
}
