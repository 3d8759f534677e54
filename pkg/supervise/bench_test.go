package supervise

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// syscallLoop makes SUPERVISE_N openat+fstat+close rounds of /proc/self/stat, none
// of them notified, and prints how long they took in nanoseconds.
func syscallLoop() int {
	n, _ := strconv.Atoi(os.Getenv("SUPERVISE_N"))
	var st unix.Stat_t
	t0 := time.Now()
	for i := 0; i < n; i++ {
		fd, err := unix.Openat(unix.AT_FDCWD, "/proc/self/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return 1
		}
		unix.Fstat(fd, &st)
		unix.Close(fd)
	}
	fmt.Println(time.Since(t0).Nanoseconds())
	return 0
}

// BenchmarkFilterOverhead runs the same loop of syscalls that the filter
// does not notify (openat, fstat, close) in a program under the filter
// and in one without, alternating, and reports the time per round of
// each and their ratio: what the filter costs the calls it lets through.
//
//	go test -run '^$' -bench FilterOverhead -benchtime 10x ./pkg/supervise/
func BenchmarkFilterOverhead(b *testing.B) {
	const rounds = 200000
	runOne := func(filtered bool) time.Duration {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			b.Fatal(err)
		}
		defer unix.Close(fds[0])
		child := os.NewFile(uintptr(fds[1]), "listener-socket")
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SUPERVISE_N="+strconv.Itoa(rounds))
		if filtered {
			cmd.Env = append(cmd.Env, "SUPERVISE_LAUNCH=loop")
			cmd.ExtraFiles = []*os.File{child}
		} else {
			cmd.Env = append(cmd.Env, "SUPERVISE_PROG=loop")
		}
		var out strings.Builder
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		child.Close()
		if filtered {
			l, err := ReceiveListener(fds[0])
			if err != nil {
				b.Fatal(err)
			}
			s := Serve(l, Options{})
			defer s.Close()
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		ns, err := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
		if err != nil {
			b.Fatalf("%q: %v", out.String(), err)
		}
		return time.Duration(ns)
	}
	var with, without time.Duration
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			with += runOne(true)
			without += runOne(false)
		} else {
			without += runOne(false)
			with += runOne(true)
		}
	}
	per := func(d time.Duration) float64 { return float64(d) / float64(b.N*rounds) }
	b.ReportMetric(per(with), "filtered-ns/round")
	b.ReportMetric(per(without), "plain-ns/round")
	b.ReportMetric(per(with)/per(without), "filtered/plain")
	b.ReportMetric(0, "ns/op")
}
