package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// The server keeps the Go runtime's system monitor thread (sysmon) from
// its deep sleep.
//
// sysmon sleeps until woken while every P is idle, which for a server is
// the time between two requests. The first system call of the next
// request wakes it (a futex wake), and a wake by a system call sets it
// polling every 20 µs until all Ps are idle again: every small request
// costs two or three extra context switches of a thread that has nothing
// to do. Where a context switch is dear (a virtual machine: 10-20 µs of
// CPU each on the test machine) this was a quarter of the server's CPU
// under a stream of small requests, and the wake-ups delayed the
// requests themselves. A sysmon that never sleeps that way backs off to
// polling every 10 ms when there is nothing to retake: about 100 wake-ups
// a second while idle, and none per request.
//
// The runtime has one switch for it: it does not enter the deep sleep
// while schedtrace is set, and schedtrace can only be set in the
// environment at start. So the server starts itself again (same pid,
// arguments and fds) with the largest schedtrace period, 2^31-1 ms (24.8
// days): its only output is one scheduler summary line on stderr every
// 24.8 days of host uptime, the first at start when the host has been up
// longer than that. A GODEBUG that already names schedtrace is left as it
// is: GODEBUG=schedtrace=0 gives the runtime's default behaviour.
//
// The client does not do this: its FUSE readers wait in blocking reads,
// from which sysmon takes their Ps back, which keeps it polling anyway;
// there the setting measured no gain and would cost idle wake-ups.
const sysmonSetting = "schedtrace=2147483647"

// sysmonEnv returns env with sysmonSetting added to GODEBUG, and whether
// it added it (not when GODEBUG already names schedtrace).
func sysmonEnv(env []string) ([]string, bool) {
	out := append([]string(nil), env...)
	for i, kv := range out {
		v, ok := strings.CutPrefix(kv, "GODEBUG=")
		if !ok {
			continue
		}
		// The runtime reads the first GODEBUG of the environment.
		for _, setting := range strings.Split(v, ",") {
			if strings.HasPrefix(setting, "schedtrace=") {
				return env, false
			}
		}
		if v != "" {
			v += ","
		}
		out[i] = "GODEBUG=" + v + sysmonSetting
		return out, true
	}
	return append(out, "GODEBUG="+sysmonSetting), true
}

// keepSysmonAwake starts the server again with sysmonSetting unless its
// environment already decides schedtrace. It returns only when it did
// not (or could not) start it again.
func keepSysmonAwake() {
	env, changed := sysmonEnv(os.Environ())
	if !changed {
		return
	}
	err := syscall.Exec("/proc/self/exe", os.Args, env)
	fmt.Fprintf(os.Stderr, "qtfs-server: warning: running without GODEBUG=%s (could not start again with it: %v)\n", sysmonSetting, err)
}
