package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// chrootTimeout bounds one command run inside the offload chroot: a hang
// fails the test instead of stalling the run.
const chrootTimeout = 90 * time.Second

// chrootCtx is offDPU.chroot with a deadline.
func (d *offDPU) chrootCtx(root, config, script string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), chrootTimeout)
	defer cancel()
	c := d.cmd("chroot", root, "/bin/sh", "-c", script)
	cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "QTFS_CONFIG=" + config, "HOME=/"}
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("no end after %v: %w", chrootTimeout, ctx.Err())
	}
	return string(out), err
}

// timed is the result of a command run in the background.
type timed struct {
	out  string
	err  error
	took time.Duration
}

// background runs f in a goroutine and delivers its result with its
// duration.
func background(f func() (string, error)) <-chan timed {
	ch := make(chan timed, 1)
	go func() {
		t0 := time.Now()
		out, err := f()
		ch <- timed{out: out, err: err, took: time.Since(t0)}
	}()
	return ch
}

// TestOffloadServerRestart builds the offload environment from a config,
// keeps a program working inside the chroot, and restarts the server
// twice under it: once after SIGKILL, once after SIGTERM. While the
// server is away, a file operation and a new connection to the proxied
// socket wait (the restart is quicker than the config's
// reconnect_timeout) and succeed once it is back, and the program never
// sees an error. After each restart the host's /proc is listed again, a
// file written before the restart is read back and a new one written, a
// new proxied connection reaches the host-only HTTP server, a shim runs
// its binary on the host, and `qtfs-client status` shows the server with
// a round trip. The stalls are logged.
func TestOffloadServerRestart(t *testing.T) {
	needMachine(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("needs curl (the HTTP client run inside the chroot): scripts/deps.sh installs it")
	}
	const reconnectTimeout = 20 * time.Second
	data := hostDir(t)
	writeFile(t, filepath.Join(data, "greeting"), "hello from the host\n")
	hostOnly := hostDir(t)
	sock := filepath.Join(hostOnly, "http.sock")
	serverArgs := []string{"--socket-allow", sock, "--exec-allow", "sha256sum"}
	exports := []string{"/proc", data}
	e := newEnvWith(t, serverArgs, exports...)
	d := newOffDPU(t, e.net.DPU)

	// The host-only HTTP server and a host-only file, on a tmpfs mounted
	// after the DPU's mount namespace was made: the DPU cannot see them.
	if err := unix.Mount("tmpfs", hostOnly, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(hostOnly, unix.MNT_DETACH) })
	marker := filepath.Join(hostOnly, "marker")
	writeFile(t, marker, "only on the host "+randHex(8)+"\n")
	sum := sha256.Sum256([]byte(mustRead(t, marker)))
	markerSum := hex.EncodeToString(sum[:])
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "host http: %s %s\n", r.Method, r.URL.Path)
	}), ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(l)
	t.Cleanup(func() { hs.Close() })
	if out, err := d.sh("test -e " + marker); err == nil {
		t.Fatalf("the DPU sees the host-only file %s (%s)", marker, out)
	}

	root := filepath.Join(hostDir(t), "root")
	runtimeDir := t.TempDir()
	config := filepath.Join(e.pki, "client.yaml")
	writeFile(t, config, fmt.Sprintf(`# qtfs-client run, e2e: server restarts
server: %[1]s
tls_cert: %[2]s/client.pem
tls_key: %[2]s/client-key.pem
tls_ca: %[2]s/ca.pem
runtime_dir: %[3]s
log_format: console
reconnect_timeout: %[8]v
root: %[4]s
binds: ["/usr:ro", "/bin:ro", "/sbin:ro", "/lib:ro", "/lib64:ro,optional", "/etc:ro", "%[2]s:ro"]
tmpfs: ["/run", "/tmp:1777"]
mounts:
  - /proc
  - %[5]s
proxies:
  - listen: /run/app/http.sock
    host: %[6]s
    mode: "0666"
shims: [sha256sum]
rexec: %[7]s
`, e.uri, e.pki, runtimeDir, root, data, sock, bin("rexec"), reconnectTimeout))
	daemon := d.startRun(t, config)
	// zap's console encoder writes a duration in seconds.
	if out := daemon.p.output(); !regexp.MustCompile(fmt.Sprintf(`"reconnect_timeout": %g\b`, reconnectTimeout.Seconds())).MatchString(out) {
		t.Errorf("the session does not use the config's reconnect_timeout %v:\n%s", reconnectTimeout, out)
	}
	chroot := func(script string) (string, error) { return d.chrootCtx(root, config, script) }
	mustChroot := func(t *testing.T, script string) string {
		t.Helper()
		out, err := chroot(script)
		if err != nil {
			t.Fatalf("in the chroot: %s: %v\n%s", script, err, out)
		}
		return out
	}

	// The program that keeps working: each round reads a host file,
	// rewrites another, lists the host's /proc, and prints "ok N TIME";
	// any error it sees is printed as "ERR".
	loop := d.cmd("chroot", root, "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "/bin/sh", "-c", fmt.Sprintf(`
		i=0
		while [ ! -e /tmp/stop ]; do
			i=$((i+1))
			g=$(cat %[1]s/greeting 2>&1) || echo "ERR $i read: $g"
			[ "$g" = "hello from the host" ] || echo "ERR $i read: got $g"
			echo "$i" > %[1]s/loop.out 2>/tmp/err || echo "ERR $i write: $(cat /tmp/err)"
			n=$(ls /proc 2>/tmp/err | grep -c '^[0-9]*$') || echo "ERR $i ls /proc: $(cat /tmp/err)"
			[ "$n" -gt 0 ] || echo "ERR $i: /proc lists $n processes"
			echo "ok $i $(date +%%s.%%N)"
			sleep 0.2
		done
		echo "stopped after $i"`, data))
	prog := start(t, loop.Path, loop.Args[1:]...)
	// progress waits until the program has done n more rounds.
	rounds := func() int {
		n := 0
		for _, l := range strings.Split(prog.output(), "\n") {
			if strings.HasPrefix(l, "ok ") {
				n++
			}
		}
		return n
	}
	progress := func(t *testing.T, n int) {
		t.Helper()
		want := rounds() + n
		for deadline := time.Now().Add(60 * time.Second); rounds() < want; time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the program in the chroot did not get to %d rounds:\n%s", want, prog.output())
			}
		}
	}
	progress(t, 3)

	type restart struct {
		name  string
		stop  func(t *testing.T)
		stall time.Duration
	}
	restarts := []*restart{
		{name: "SIGKILL", stop: func(t *testing.T) { e.killServer(t) }},
		{name: "SIGTERM", stop: func(t *testing.T) {
			p := e.server
			p.stop(t)
			if st := p.cmd.ProcessState; st == nil || st.ExitCode() != 0 {
				t.Fatalf("the server did not end cleanly on SIGTERM: %v\n%s", st, p.output())
			}
		}},
	}
	hostLine := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(root) + `\s.*\s(\d+(\.\d+)?(ns|µs|ms|s))\s+\d+\s+\d+\s+\d+\s+\d+\s+ready$`)
	for n, r := range restarts {
		ok := t.Run(fmt.Sprintf("restart after %s", r.name), func(t *testing.T) {
			before := fmt.Sprintf("before-%d", n)
			mustChroot(t, fmt.Sprintf("echo round %d > %s/%s", n, data, before))
			if got := mustRead(t, filepath.Join(data, before)); got != fmt.Sprintf("round %d\n", n) {
				t.Fatalf("the host reads %q", got)
			}

			r.stop(t)
			down := time.Now()
			// While the server is away: a file operation, and a new
			// connection to the proxied socket.
			fsOp := background(func() (string, error) { return chroot("ls /proc >/dev/null && cat " + filepath.Join(data, before)) })
			httpOp := background(func() (string, error) {
				return chroot(`curl -sS --max-time 60 --unix-socket /run/app/http.sock http://host/during-outage`)
			})
			const outage = 2 * time.Second
			time.Sleep(outage) // the fault's duration
			for name, ch := range map[string]<-chan timed{"file operation": fsOp, "proxied connection": httpOp} {
				select {
				case res := <-ch:
					t.Fatalf("the %s started while the server was down ended before it was back (after %v): %v\n%s", name, res.took, res.err, res.out)
				default:
				}
			}
			e.server = nil
			e.startServer(12121, serverArgs, exports...)
			restarted := time.Now()
			t.Logf("server down for %v", restarted.Sub(down).Round(time.Millisecond))

			fs := <-fsOp
			if fs.err != nil || fs.out != fmt.Sprintf("round %d\n", n) {
				t.Fatalf("the file operation made during the outage: %v, %q", fs.err, fs.out)
			}
			r.stall = down.Add(fs.took).Sub(restarted)
			t.Logf("file operation during the outage waited %v and succeeded: the first success came %v after the server was ready",
				fs.took.Round(time.Millisecond), r.stall.Round(time.Millisecond))
			if fs.took > reconnectTimeout+10*time.Second {
				t.Errorf("the file operation waited %v, past the reconnect timeout %v", fs.took, reconnectTimeout)
			}
			h := <-httpOp
			if h.err != nil || h.out != "host http: GET /during-outage\n" {
				t.Fatalf("the proxied connection made during the outage: %v, %q\nrun daemon:\n%s", h.err, h.out, daemon.p.output())
			}
			t.Logf("proxied connection during the outage waited %v and succeeded (%v after the server was ready)",
				h.took.Round(time.Millisecond), down.Add(h.took).Sub(restarted).Round(time.Millisecond))

			// The host's /proc again: the new server's pid is there.
			spid := e.server.cmd.Process.Pid
			out := mustChroot(t, fmt.Sprintf("ls /proc | grep -c '^[0-9]*$'; test -d /proc/%d && echo server-seen", spid))
			if f := strings.Fields(out); len(f) != 2 || f[1] != "server-seen" {
				t.Fatalf("/proc after the restart: %q (new server pid %d)", out, spid)
			}
			// A file of before the restart, and a new one.
			if got := mustChroot(t, "cat "+filepath.Join(data, before)); got != fmt.Sprintf("round %d\n", n) {
				t.Fatalf("%s after the restart: %q", before, got)
			}
			after := fmt.Sprintf("after-%d", n)
			mustChroot(t, fmt.Sprintf("echo written after %s > %s/%s", r.name, data, after))
			if got := mustRead(t, filepath.Join(data, after)); got != "written after "+r.name+"\n" {
				t.Fatalf("the host reads %s: %q", after, got)
			}
			// A new proxied connection.
			if got := mustChroot(t, `curl -sS --max-time 20 --unix-socket /run/app/http.sock http://host/after`); got != "host http: GET /after\n" {
				t.Fatalf("curl after the restart: %q", got)
			}
			// A shim: sha256sum runs on the host, where the file exists.
			got := mustChroot(t, "readlink /usr/local/sbin/sha256sum; test -e "+marker+" || echo not-on-the-dpu; sha256sum "+marker)
			if want := "rexec\nnot-on-the-dpu\n" + markerSum + "  " + marker + "\n"; got != want {
				t.Fatalf("the shim after the restart: %q, want %q", got, want)
			}
			// Status: the run daemon is ready, with a round trip.
			st, err := d.cmd(bin("qtfs-client"), "status", "--runtime-dir", runtimeDir, "--config", "/dev/null").CombinedOutput()
			m := hostLine.FindSubmatch(st)
			if err != nil || m == nil || !strings.Contains(string(st), e.uri) {
				t.Fatalf("status after the restart (want the run root ready, with an RTT): %v\n%s", err, st)
			}
			t.Logf("status: server %s, RTT %s", e.uri, m[1])
			// The program goes on.
			progress(t, 3)
		})
		if !ok {
			break
		}
	}

	// The program never saw an error, and went on after each restart.
	if _, err := chroot("touch /tmp/stop"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-prog.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the program in the chroot did not stop:\n%s", prog.output())
	}
	out := prog.output()
	var stamps []float64
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "ERR") {
			t.Errorf("the program in the chroot saw an error: %s", l)
		}
		if f := strings.Fields(l); len(f) == 3 && f[0] == "ok" {
			if ts, err := strconv.ParseFloat(f[2], 64); err == nil {
				stamps = append(stamps, ts)
			}
		}
	}
	var gaps []float64
	for i := 1; i < len(stamps); i++ {
		gaps = append(gaps, stamps[i]-stamps[i-1])
	}
	sort.Float64s(gaps)
	if len(gaps) < 10 {
		t.Fatalf("the program did %d rounds:\n%s", len(stamps), out)
	}
	t.Logf("program in the chroot: %d rounds, longest pause %.2fs (both outages), next %.2fs", len(stamps), gaps[len(gaps)-1], gaps[len(gaps)-2])
	for _, r := range restarts {
		t.Logf("stall after the %s restart: first success %v after the new server was ready", r.name, r.stall.Round(time.Millisecond))
	}
	if st := daemon.p.output(); strings.Count(st, "qtfs session re-established") < len(restarts) {
		t.Errorf("the run daemon did not re-establish its session after each restart:\n%s", st)
	}

	daemon.stop(t, syscall.SIGTERM)
	if code := daemon.p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("qtfs-client run exited %d:\n%s", code, daemon.p.output())
	}
	if left := d.mountsUnder(root); len(left) > 0 {
		t.Fatalf("still mounted: %v", left)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
