package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// daemon is a long-running process the run started: a server or a mount
// daemon. Its output goes to a log file in the work directory.
type daemon struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed once the process has exited and was reaped
	waitErr error         // valid after done
}

// startDaemon starts argv as a daemon named name, with its output in
// logDir/name.log. It runs in its own process group (a Ctrl-C at the terminal
// reaches only the runner, which then tears down in order) and gets SIGTERM
// if the runner dies.
func startDaemon(log *zap.Logger, logDir, name string, argv ...string) (*daemon, error) {
	logPath := filepath.Join(logDir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("bench: %s: log file: %w", name, err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	d := &daemon{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		d.waitErr = cmd.Wait()
		f.Close()
		close(d.done)
	}()
	log.Debug("started", zap.String("daemon", name), zap.Int("pid", cmd.Process.Pid), zap.Strings("argv", argv))
	return d, nil
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// exited reports whether the process has ended.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// logTail is the end of the daemon's log, for error messages.
func (d *daemon) logTail() string { return fileTail(d.logPath, 800) }

func fileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// stop asks the daemon to end with polite (an unmount command, or nil), then
// SIGTERM, then SIGKILL, waiting up to grace at each step.
func (d *daemon) stop(log *zap.Logger, polite func() error, grace time.Duration) {
	if d.exited() {
		return
	}
	if polite != nil {
		if err := polite(); err != nil {
			log.Warn("polite stop failed", zap.String("daemon", d.name), zap.Error(err))
		}
		if d.wait(grace) {
			return
		}
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if d.wait(grace) {
		return
	}
	log.Warn("daemon ignored SIGTERM, killing it", zap.String("daemon", d.name), zap.Int("pid", d.pid()))
	_ = d.cmd.Process.Kill()
	d.wait(grace)
}

func (d *daemon) wait(t time.Duration) bool {
	select {
	case <-d.done:
		return true
	case <-time.After(t):
		return false
	}
}

// waitLog waits until the daemon's log holds want, the daemon exits, or
// the timeout passes.
func (d *daemon) waitLog(ctx context.Context, want string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if b, err := os.ReadFile(d.logPath); err == nil && strings.Contains(string(b), want) {
			return nil
		}
		if d.exited() {
			return fmt.Errorf("bench: %s exited before %q: %v: %s", d.name, want, d.waitErr, d.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s: no %q after %v: %s", d.name, want, timeout, d.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitMounted waits until mnt is a mount point that answers stat, or the
// daemon serving it exits, or the timeout passes.
func (d *daemon) waitMounted(ctx context.Context, mnt string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if mounted(mnt) {
			if _, err := os.Stat(mnt); err == nil {
				return nil
			}
		}
		if d.exited() {
			return fmt.Errorf("bench: %s exited before %s was mounted: %v: %s", d.name, mnt, d.waitErr, d.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s: %s not mounted after %v: %s", d.name, mnt, timeout, d.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// mountPoints lists the mount points of this mount namespace, unescaped.
func mountPoints() []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeMount(fields[4]))
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space…) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mounted reports whether path is a mount point.
func mounted(path string) bool {
	for _, m := range mountPoints() {
		if m == path {
			return true
		}
	}
	return false
}

// detachAll lazily unmounts every mount at or below dir (deepest first):
// the leftovers of a run that was killed before it could clean up.
func detachAll(log *zap.Logger, dir string) {
	mps := mountPoints()
	for i := len(mps) - 1; i >= 0; i-- {
		m := mps[i]
		if m == dir || strings.HasPrefix(m, dir+"/") {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				log.Warn("detach stale mount", zap.String("mountpoint", m), zap.Error(err))
			} else {
				log.Info("detached a stale mount", zap.String("mountpoint", m))
			}
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// orphan is a process that was re-parented to the runner (a child
// subreaper): the ssh that sshfs starts and leaves.
type orphan struct {
	pid  int
	argv []string
}

// adoptedOrphans lists the runner's children that it did not start itself
// and whose argv satisfies match.
func adoptedOrphans(match func(argv []string) bool, known map[int]bool) []orphan {
	self := os.Getpid()
	var out []orphan
	for _, p := range processTable() {
		if p.ppid == self && !known[p.pid] && match(p.argv) {
			out = append(out, orphan{pid: p.pid, argv: p.argv})
		}
	}
	return out
}

// reapOrphan waits up to grace for an adopted process to exit, then
// SIGTERMs it and reaps it.
func reapOrphan(o orphan, grace time.Duration) {
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(o.pid, &ws, unix.WNOHANG, nil)
		if pid == o.pid || errors.Is(err, unix.ECHILD) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = unix.Kill(o.pid, unix.SIGTERM)
	var ws unix.WaitStatus
	for i := 0; i < 40; i++ {
		pid, err := unix.Wait4(o.pid, &ws, unix.WNOHANG, nil)
		if pid == o.pid || errors.Is(err, unix.ECHILD) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = unix.Kill(o.pid, unix.SIGKILL)
	_, _ = unix.Wait4(o.pid, &ws, 0, nil)
}
