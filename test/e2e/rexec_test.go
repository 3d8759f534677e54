package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tlsArgs are the DPU's client TLS flags.
func (e *env) tlsArgs() []string {
	return []string{"--tls-cert", e.pki + "/client.pem", "--tls-key", e.pki + "/client-key.pem", "--tls-ca", e.pki + "/ca.pem"}
}

// tlsEnv is the same as environment variables, for multi-call use.
func (e *env) tlsEnv() []string {
	return []string{"QTFS_SERVER=" + e.uri, "QTFS_TLS_CERT=" + e.pki + "/client.pem",
		"QTFS_TLS_KEY=" + e.pki + "/client-key.pem", "QTFS_TLS_CA=" + e.pki + "/ca.pem"}
}

// rexecCmd is rexec on the DPU talking to uri ("" for e.uri).
func (e *env) rexecCmd(uri string, args ...string) *exec.Cmd {
	if uri == "" {
		uri = e.uri
	}
	a := append(append([]string{"--server", uri}, e.tlsArgs()...), args...)
	cmd := e.dpu.cmd(bin("rexec"), a...)
	cmd.Env = append(os.Environ(), "QTFS_CONFIG=/dev/null")
	return cmd
}

type ran struct {
	stdout, stderr string
	code           int
}

// runCmd runs cmd with stdin and returns what it printed and its status.
func runCmd(t *testing.T, cmd *exec.Cmd, stdin io.Reader) ran {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &out, &errb
	err := cmd.Run()
	r := ran{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	return r
}

// rexec runs rexec on the DPU against the env's server.
func (e *env) rexec(args ...string) ran {
	e.t.Helper()
	return runCmd(e.t, e.rexecCmd("", args...), nil)
}

// hostAlive reports whether pid is a live, non-zombie process.
func hostAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] != 'Z'
}

func TestRexec(t *testing.T) {
	host := hostDir(t)
	allow := []string{"true", "false", "sh", "cat", "env", "pwd", "sha256sum", "wc", "echo", "tty", "stty"}
	var args []string
	for _, a := range allow {
		args = append(args, "--exec-allow", a)
	}
	e := newEnvWith(t, args, host)

	t.Run("exit status", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			code int
		}{
			{[]string{"true"}, 0},
			{[]string{"false"}, 1},
			{[]string{"sh", "-c", "exit 42"}, 42},
			{[]string{"sh", "-c", "kill -TERM $$"}, 128 + 15},
			{[]string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		} {
			t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
				if r := e.rexec(tc.args...); r.code != tc.code {
					t.Fatalf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
				}
			})
		}
	})

	t.Run("errors a user can act on", func(t *testing.T) {
		other := pki(t, e.net.HostIP) // a CA the server does not trust
		for _, tc := range []struct {
			name string
			cmd  *exec.Cmd
			code int
			msg  []string
		}{
			{"not allowed", e.rexecCmd("", "ls", "/"), 126, []string{"rexec: ls", "not allowed", "--exec-allow", "sh, cat"}},
			{"not found", e.rexecCmd("", "no-such-binary-qtfs"), 127, []string{"rexec: no-such-binary-qtfs: not found"}},
			{"unreachable", e.rexecCmd(fmt.Sprintf("tcp://%s:1", e.net.HostIP), "true"), 255, []string{"rexec: transport: dial", "refused"}},
			{"auth refused", e.dpu.cmd(bin("rexec"), "--server", e.uri, "--tls-cert", other+"/client.pem", "--tls-key", other+"/client-key.pem",
				"--tls-ca", e.pki+"/ca.pem", "true"), 255, []string{"rexec: ", "certificate"}},
			{"no TLS settings", e.dpu.cmd(bin("rexec"), "--server", e.uri, "true"), 255, []string{"rexec: ", "TLS"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.cmd.Env == nil {
					tc.cmd.Env = append(os.Environ(), "QTFS_CONFIG=/dev/null")
				}
				r := runCmd(t, tc.cmd, nil)
				if r.code != tc.code {
					t.Fatalf("exit %d, want %d (stderr %q)", r.code, tc.code, r.stderr)
				}
				for _, m := range tc.msg {
					if !strings.Contains(r.stderr, m) {
						t.Errorf("stderr %q does not contain %q", r.stderr, m)
					}
				}
			})
		}
	})

	t.Run("large streams intact", func(t *testing.T) {
		big := filepath.Join(host, "big")
		writeRandom(t, big, 256<<20)
		want := sha256File(t, big)
		// stdout: 256 MiB from the host.
		out := e.dpu.mustSh(fmt.Sprintf("%s | sha256sum", shellJoin(e.rexecCmd("", "cat", big).Args[1:]...)))
		if !strings.HasPrefix(out, want) {
			t.Fatalf("stdout sha256 %q, want %s", out, want)
		}
		// stdin: 256 MiB to the host, EOF ends sha256sum there.
		r := runCmd(t, e.rexecCmd("", "sha256sum"), mustOpen(t, big))
		if r.code != 0 || !strings.HasPrefix(r.stdout, want) {
			t.Fatalf("stdin sha256 %q (%d, %q), want %s", r.stdout, r.code, r.stderr, want)
		}
		// stderr, binary, separate from stdout.
		mid := filepath.Join(host, "mid")
		writeRandom(t, mid, 16<<20)
		out = e.dpu.mustSh(fmt.Sprintf("%s 2>&1 >/dev/null | sha256sum", shellJoin(e.rexecCmd("", "sh", "-c", "cat "+mid+" >&2; echo out").Args[1:]...)))
		if !strings.HasPrefix(out, sha256File(t, mid)) {
			t.Fatalf("stderr sha256 %q", out)
		}
		// EOF on stdin is propagated.
		if r := runCmd(t, e.rexecCmd("", "wc", "-c"), strings.NewReader("abc")); strings.TrimSpace(r.stdout) != "3" {
			t.Fatalf("wc -c printed %q", r.stdout)
		}
	})

	t.Run("signals are delivered", func(t *testing.T) {
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH} {
			name := strings.TrimPrefix(sigName(sig), "SIG")
			t.Run(name, func(t *testing.T) {
				cmd := e.rexecCmd("", "sh", "-c", fmt.Sprintf(`trap 'echo got %[1]s; exit 3' %[1]s; echo ready; while :; do sleep 0.05; done`, name))
				lines := startLines(t, cmd)
				lines.expect(t, "ready")
				cmd.Process.Signal(sig)
				lines.expect(t, "got "+name)
				if code := lines.code(t); code != 3 {
					t.Fatalf("exit %d, want 3", code)
				}
			})
		}
	})

	t.Run("killing rexec kills the remote process, not what detached", func(t *testing.T) {
		cmd := e.rexecCmd("", "sh", "-c", `echo $$; sleep 301 & echo $!; setsid sleep 302 & echo $!; wait`)
		lines := startLines(t, cmd)
		shPid, child, detached := lines.pid(t), lines.pid(t), lines.pid(t)
		t.Cleanup(func() { syscall.Kill(detached, syscall.SIGKILL); syscall.Kill(child, syscall.SIGKILL) })
		for i := 0; ; i++ {
			if sid, _ := unix.Getsid(detached); sid == detached {
				break
			}
			if i > 500 {
				t.Fatal("the setsid child never got its own session")
			}
			time.Sleep(10 * time.Millisecond)
		}
		cmd.Process.Kill()
		lines.code(t)
		for _, pid := range []int{shPid, child} {
			for deadline := time.Now().Add(15 * time.Second); hostAlive(pid); time.Sleep(50 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("remote pid %d still alive after rexec was killed", pid)
				}
			}
		}
		if !hostAlive(detached) {
			t.Fatal("the detached child was killed")
		}
	})

	t.Run("a leftover child does not hold rexec", func(t *testing.T) {
		t0 := time.Now()
		r := e.rexec("sh", "-c", "sleep 60 & echo $!")
		pid, _ := strconv.Atoi(strings.TrimSpace(r.stdout))
		if pid > 0 {
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
		}
		if d := time.Since(t0); r.code != 0 || d > 10*time.Second || pid == 0 {
			t.Fatalf("exit %d after %v, output %q", r.code, d, r.stdout)
		}
	})

	t.Run("environment policy", func(t *testing.T) {
		cmd := e.rexecCmd("", "--env", "BAZ=qux", "env")
		cmd.Env = append(cmd.Env, "FOO=bar", "LD_PRELOAD=/nonexistent-qtfs.so", "LD_LIBRARY_PATH=/nonexistent", "LD_AUDIT=/x", "SECRET_TOKEN=s")
		r := runCmd(t, cmd, nil)
		for _, want := range []string{"FOO=bar\n", "BAZ=qux\n", "SECRET_TOKEN=s\n"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("remote env lacks %q", want)
			}
		}
		for _, bad := range []string{"LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT"} {
			if strings.Contains(r.stdout, bad) {
				t.Errorf("remote env has %s", bad)
			}
		}
		// A server with its own deny-list.
		uri := e.startServer(12122, []string{"--exec-allow", "env", "--exec-env-deny", "SECRET_*"}, host)
		cmd = e.rexecCmd(uri, "env")
		cmd.Env = append(cmd.Env, "SECRET_TOKEN=s", "LD_LIBRARY_PATH=/nonexistent")
		r = runCmd(t, cmd, nil)
		if strings.Contains(r.stdout, "SECRET_TOKEN") || !strings.Contains(r.stdout, "LD_LIBRARY_PATH=/nonexistent") {
			t.Errorf("--exec-env-deny SECRET_* not applied: %q", r.stdout)
		}
	})

	t.Run("working directory", func(t *testing.T) {
		// (nsenter starts DPU commands in /: cd in a DPU shell.)
		if out := e.dpu.mustSh("cd " + host + " && " + shellJoin(e.rexecCmd("", "pwd").Args[1:]...)); strings.TrimSpace(out) != host {
			t.Fatalf("pwd %q, want %s", out, host)
		}
		if r := e.rexec("--cwd", "/tmp", "pwd"); strings.TrimSpace(r.stdout) != "/tmp" {
			t.Fatalf("pwd %q with --cwd /tmp", r.stdout)
		}
		if r := e.rexec("--cwd", "/no/such/dir", "pwd"); r.code != 126 || !strings.Contains(r.stderr, "does not exist on the host") {
			t.Fatalf("missing cwd: %d %q", r.code, r.stderr)
		}
	})

	t.Run("open files cross at their fd numbers", func(t *testing.T) {
		in, out, rw := filepath.Join(host, "fd-in"), filepath.Join(host, "fd-out"), filepath.Join(host, "fd-rw")
		os.WriteFile(in, []byte("0123456789"), 0o644)
		os.WriteFile(out, []byte("first\n"), 0o644)
		os.WriteFile(rw, []byte("abcdefgh"), 0o644)
		remote := `cat <&5; echo; echo second >&6; printf XY >&7; [ -e /proc/$$/fd/8 ] || echo no-fd8; readlink /proc/$$/fd/4`
		// 5, 6, 7: regular files (read at offset 4, append, read-write at
		// offset 2); 8: a device, not passed; 4: a gap, /dev/null.
		script := fmt.Sprintf(`exec 5<%s 6>>%s 7<>%s 8</dev/null; dd bs=1 count=4 <&5 >/dev/null 2>&1; dd bs=1 count=2 <&7 >/dev/null 2>&1; %s`,
			in, out, rw, shellJoin(e.rexecCmd("", "sh", "-c", remote).Args[1:]...))
		got := e.dpu.mustSh(script)
		if got != "456789\nno-fd8\n/dev/null\n" {
			t.Fatalf("remote saw %q", got)
		}
		if b, _ := os.ReadFile(out); string(b) != "first\nsecond\n" {
			t.Errorf("append fd wrote %q", b)
		}
		if b, _ := os.ReadFile(rw); string(b) != "abXYefgh" {
			t.Errorf("read-write fd at offset 2 gave %q", b)
		}
	})

	t.Run("pty", func(t *testing.T) {
		r := e.rexec("-t", "sh", "-c", "tty; stty size")
		if lines := strings.Split(strings.TrimSpace(r.stdout), "\r\n"); r.code != 0 || len(lines) != 2 || !strings.HasPrefix(lines[0], "/dev/pts/") || lines[1] != "24 80" {
			t.Fatalf("-t: exit %d output %q", r.code, r.stdout)
		}
		// A real local terminal (script(1) gives one): a pty is allocated
		// without -t, the window size crosses, the terminal is restored.
		if _, err := exec.LookPath("script"); err != nil {
			t.Skip("needs script(1) for a local terminal: apt-get install bsdutils")
		}
		inner := fmt.Sprintf("stty rows 33 cols 101; stty -g; %s; stty -g", shellJoin(e.rexecCmd("", "sh", "-c", "tty; stty size").Args[1:]...))
		// script's stdin stays open (an EOF there would be typed into the
		// terminal) and is closed once it is done.
		cmd := e.dpu.cmd("script", "-qec", inner, "/dev/null")
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pw.Close()
		cmd.Stdin = pr
		b, err := cmd.CombinedOutput()
		pr.Close()
		got := string(b)
		if err != nil {
			t.Fatalf("script: %v: %q", err, got)
		}
		lines := strings.Split(strings.ReplaceAll(strings.TrimSpace(got), "\r", ""), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[1], "/dev/pts/") || lines[2] != "33 101" || lines[0] != lines[3] {
			t.Fatalf("through a terminal: %q", got)
		}
	})

	t.Run("multi-call through a symlink and a hard link", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.Symlink(bin("rexec"), filepath.Join(dir, "echo")); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(bin("rexec"), filepath.Join(dir, "wc")); err != nil {
			t.Fatal(err)
		}
		cmd := e.dpu.cmd(filepath.Join(dir, "echo"), "--server", "not-a-flag-here", "hello")
		cmd.Env = append(append(os.Environ(), "QTFS_CONFIG=/dev/null"), e.tlsEnv()...)
		if r := runCmd(t, cmd, nil); r.code != 0 || r.stdout != "--server not-a-flag-here hello\n" {
			t.Fatalf("echo via symlink: %d %q %q", r.code, r.stdout, r.stderr)
		}
		cmd = e.dpu.cmd(filepath.Join(dir, "wc"), "-c")
		cmd.Env = append(append(os.Environ(), "QTFS_CONFIG=/dev/null"), e.tlsEnv()...)
		if r := runCmd(t, cmd, strings.NewReader("12345")); strings.TrimSpace(r.stdout) != "5" {
			t.Fatalf("wc via hard link: %d %q %q", r.code, r.stdout, r.stderr)
		}
	})

	t.Run("server from the environment or the config file", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "client.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("server: host1\nservers:\n  host1: %s\ntls_cert: %s/client.pem\ntls_key: %s/client-key.pem\ntls_ca: %s/ca.pem\n",
			e.uri, e.pki, e.pki, e.pki)), 0o600)
		for _, tc := range []struct {
			name string
			env  []string
		}{
			{"config file", []string{"QTFS_CONFIG=" + cfg}},
			{"REXEC_SERVER", append(e.tlsEnv()[1:], "REXEC_SERVER="+e.uri, "QTFS_SERVER=tcp://127.0.0.1:1", "QTFS_CONFIG=/dev/null")},
			{"QTFS_SERVER", append(e.tlsEnv(), "QTFS_CONFIG=/dev/null")},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cmd := e.dpu.cmd(bin("rexec"), "echo", "ok")
				cmd.Env = append(os.Environ(), tc.env...)
				if r := runCmd(t, cmd, nil); r.code != 0 || r.stdout != "ok\n" {
					t.Fatalf("%d %q %q", r.code, r.stdout, r.stderr)
				}
			})
		}
	})
}

// writeRandom fills path with n random bytes.
func writeRandom(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, n); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// shellJoin quotes a command line for sh -c: the nsenter arguments of a
// dpu.cmd are dropped by the callers (Args[1:] starts at nsenter's first
// argument), so this rebuilds "nsenter ... rexec ..." for a DPU shell.
func shellJoin(args ...string) string {
	// args are nsenter's; inside the DPU shell we are already in the
	// namespaces, so skip to the program after "--".
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return "QTFS_CONFIG=/dev/null " + strings.Join(q, " ")
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func sigName(s syscall.Signal) string {
	switch s {
	case syscall.SIGINT:
		return "SIGINT"
	case syscall.SIGTERM:
		return "SIGTERM"
	case syscall.SIGHUP:
		return "SIGHUP"
	case syscall.SIGQUIT:
		return "SIGQUIT"
	case syscall.SIGUSR1:
		return "SIGUSR1"
	case syscall.SIGUSR2:
		return "SIGUSR2"
	case syscall.SIGWINCH:
		return "SIGWINCH"
	}
	return fmt.Sprint(int(s))
}

// lineReader hands out a started command's stdout line by line, and its
// exit status once it ended.
type lineReader struct {
	ch     chan string
	exited chan int
}

func startLines(t *testing.T, cmd *exec.Cmd) *lineReader {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stdout = pw
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-waited
		if t.Failed() {
			t.Logf("rexec stderr: %s", errb.String())
		}
	})
	l := &lineReader{ch: make(chan string, 100), exited: make(chan int, 1)}
	go func() {
		b := make([]byte, 0, 256)
		one := make([]byte, 1)
		for {
			if _, err := pr.Read(one); err != nil {
				close(l.ch)
				return
			}
			if one[0] == '\n' {
				l.ch <- string(b)
				b = b[:0]
			} else {
				b = append(b, one[0])
			}
		}
	}()
	go func() {
		cmd.Wait()
		close(waited)
		pw.Close()
		l.exited <- cmd.ProcessState.ExitCode()
	}()
	return l
}

func (l *lineReader) next(t *testing.T) string {
	t.Helper()
	select {
	case s, ok := <-l.ch:
		if !ok {
			t.Fatal("output ended")
		}
		return s
	case <-time.After(15 * time.Second):
		t.Fatal("no output line within 15s")
	}
	return ""
}

func (l *lineReader) expect(t *testing.T, want string) {
	t.Helper()
	if got := l.next(t); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func (l *lineReader) pid(t *testing.T) int {
	t.Helper()
	s := l.next(t)
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("want a pid, got %q", s)
	}
	return n
}

// code waits for the command's exit status.
func (l *lineReader) code(t *testing.T) int {
	t.Helper()
	select {
	case c := <-l.exited:
		return c
	case <-time.After(15 * time.Second):
		t.Fatal("rexec did not exit")
	}
	return 0
}

// ociState is what `runc state` prints.
type ociState struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
	Bundle string `json:"bundle"`
}

// TestRexecRunc drives Debian's runc, a client nobody here wrote, from the
// DPU: the OCI bundle is written through a qtfs mount of a host directory
// (mounted at the same path, as the DPU's chroot mirrors host paths), the
// container runs on the host, its process is read through the mounted
// host /proc.
func TestRexecRunc(t *testing.T) {
	needMachine(t)
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("needs runc on the host: run scripts/deps.sh as root (apt-get install runc)")
	}
	host := hostDir(t)
	e := newEnvWith(t, []string{"--exec-allow", "runc"}, host, "/proc:ro")
	e.mount(host, host)
	procMnt := e.mount("/proc", filepath.Join(t.TempDir(), "hostproc"))

	// A static binary for the container's rootfs.
	initBin := filepath.Join(t.TempDir(), "ctrinit")
	build := exec.Command("go", "build", "-o", initBin, "./test/e2e/testdata/ctrinit")
	build.Dir = moduleRoot(t)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the container's binary: %v\n%s", err, out)
	}
	// The OCI config: runc's default spec, running our binary.
	specDir := t.TempDir()
	run(t, runc, "spec", "--bundle", specDir)
	var spec map[string]any
	b, _ := os.ReadFile(filepath.Join(specDir, "config.json"))
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["args"] = []string{"/ctrinit", "sleep"}
	proc["terminal"] = false
	spec["root"] = map[string]any{"path": "rootfs", "readonly": true}
	config, _ := json.MarshalIndent(spec, "", "  ")

	for _, style := range []string{"rexec runc", "runc symlink"} {
		t.Run(style, func(t *testing.T) {
			id := "qtfs-e2e-" + randHex(4)
			t.Cleanup(func() { exec.Command(runc, "delete", "--force", id).Run() })
			bundle := filepath.Join(host, id)
			// Prepare the bundle from the DPU, through the mount.
			e.dpu.mustSh(fmt.Sprintf("mkdir -p %[1]s/rootfs && cp %[2]s %[1]s/rootfs/ctrinit && chmod 755 %[1]s/rootfs/ctrinit", bundle, initBin))
			wr := e.dpu.cmd("sh", "-c", "cat > "+bundle+"/config.json")
			wr.Stdin = bytes.NewReader(config)
			if out, err := wr.CombinedOutput(); err != nil {
				t.Fatalf("write config.json on the DPU: %v %s", err, out)
			}
			if _, err := os.Stat(filepath.Join(bundle, "rootfs", "ctrinit")); err != nil {
				t.Fatalf("the bundle did not reach the host: %v", err)
			}

			runcCmd := func(args ...string) *exec.Cmd {
				if style == "rexec runc" {
					cmd := e.rexecCmd("", append([]string{"runc"}, args...)...)
					cmd.Dir = bundle
					return cmd
				}
				dir := t.TempDir()
				link := filepath.Join(dir, "runc")
				os.Symlink(bin("rexec"), link)
				cmd := e.dpu.cmd(link, args...)
				cmd.Env = append(append(os.Environ(), "QTFS_CONFIG=/dev/null"), e.tlsEnv()...)
				cmd.Dir = bundle
				return cmd
			}
			must := func(args ...string) ran {
				t.Helper()
				r := runCmd(t, runcCmd(args...), nil)
				if r.code != 0 {
					t.Fatalf("runc %s: exit %d\nstdout %s\nstderr %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
				}
				return r
			}
			state := func() ociState {
				t.Helper()
				var st ociState
				r := must("state", id)
				if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
					t.Fatalf("runc state printed %q: %v", r.stdout, err)
				}
				return st
			}

			if r := must("--version"); !strings.Contains(r.stdout, "runc version") {
				t.Fatalf("runc --version printed %q", r.stdout)
			}
			t0 := time.Now()
			r := must("run", "-d", "--bundle", bundle, id)
			if d := time.Since(t0); d > 20*time.Second {
				t.Fatalf("runc run -d held rexec for %v", d)
			}
			t.Logf("runc run -d: %v, output %q", time.Since(t0), r.stdout)
			st := state()
			if st.ID != id || st.Status != "running" || st.Pid <= 0 || st.Bundle != bundle {
				t.Fatalf("runc state: %+v", st)
			}
			// The container's process, read through the mounted host /proc.
			cmdline := e.dpu.must("cat", fmt.Sprintf("%s/%d/cmdline", procMnt, st.Pid))
			if cmdline != "/ctrinit\x00sleep\x00" {
				t.Fatalf("host /proc/%d/cmdline through the mount: %q", st.Pid, cmdline)
			}
			status := e.dpu.must("cat", fmt.Sprintf("%s/%d/status", procMnt, st.Pid))
			if !strings.Contains(status, "NSpid:\t"+strconv.Itoa(st.Pid)+"\t1") {
				t.Fatalf("the process is not pid 1 of its own pid namespace:\n%s", status)
			}
			// rexec is gone; the container, detached on purpose, runs on.
			if !hostAlive(st.Pid) {
				t.Fatal("the container's process died with runc")
			}

			must("kill", id, "KILL")
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				if st := state(); st.Status == "stopped" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("container still %s after kill", state().Status)
				}
			}
			must("delete", id)
			r = runCmd(t, runcCmd("state", id), nil)
			if r.code == 0 || !strings.Contains(r.stderr, "does not exist") {
				t.Fatalf("state after delete: exit %d, %q", r.code, r.stderr)
			}
		})
	}
}

// moduleRoot is the repository's root directory.
func moduleRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatalf("find module root: %v", err)
	}
	return strings.TrimSpace(string(out))
}
