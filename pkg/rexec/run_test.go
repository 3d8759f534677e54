package rexec

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/qtfs/qtfs/pkg/hostexec"
	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// helperArgv, when set in the environment, makes the test binary run Main
// with that argv (JSON) instead of the tests: the real command in a real
// process, for what needs one (signals, inherited fds, a terminal).
const helperArgv = "REXEC_TEST_MAIN_ARGV"

func TestMain(m *testing.M) {
	if a := os.Getenv(helperArgv); a != "" {
		var argv []string
		if err := json.Unmarshal([]byte(a), &argv); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(99)
		}
		os.Unsetenv(helperArgv)
		os.Exit(Main(argv))
	}
	os.Exit(m.Run())
}

// server starts a hostexec server allowing allow on a fresh unix socket
// and returns its URI and a connection to it.
func server(t *testing.T, allow ...string) (string, *grpc.ClientConn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "rexec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return serverAt(t, filepath.Join(dir, "s"), allow...)
}

// serverAt is server on the unix socket path.
func serverAt(t *testing.T, path string, allow ...string) (string, *grpc.ClientConn) {
	t.Helper()
	u := transport.URI{Scheme: transport.Unix, Path: path}
	var sec transport.Security
	creds, err := transport.ServerCredentials(sec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := transport.Listen(context.Background(), u, sec)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := hostexec.New(hostexec.Options{Allow: allow, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(append(transport.ServerOptions(), grpc.Creds(creds), grpc.WaitForHandlers(true))...)
	srv.Register(g)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := transport.Dial(ctx, u, sec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return u.String(), cc
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestStreamsAreBinarySafe(t *testing.T) {
	_, cc := server(t, "sh", "cat")
	data := randomBytes(t, 48<<20)
	for _, tc := range []struct {
		name   string
		o      Options
		stdout []byte
		stderr []byte
	}{
		{"stdin to stdout", Options{Binary: "cat"}, data, nil},
		{"stdin to stderr", Options{Binary: "sh", Args: []string{"-c", "cat >&2"}}, nil, data},
		{"both outputs interleaved", Options{Binary: "sh", Args: []string{"-c", "head -c 1000000 | tee /dev/stderr"}}, data[:1000000], data[:1000000]},
		{"no stdin is EOF", Options{Binary: "cat"}, []byte{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			tc.o.Stdout, tc.o.Stderr = &out, &errb
			if tc.name != "no stdin is EOF" {
				tc.o.Stdin = bytes.NewReader(data)
			}
			res, err := Run(context.Background(), cc, tc.o)
			if err != nil || res.Code != 0 {
				t.Fatalf("Run: %+v, %v (stderr %q)", res, err, errb.String())
			}
			if !bytes.Equal(out.Bytes(), tc.stdout) || !bytes.Equal(errb.Bytes(), tc.stderr) {
				t.Fatalf("stdout %x (%d bytes), stderr %x (%d bytes): not what was sent",
					sha256.Sum256(out.Bytes()), out.Len(), sha256.Sum256(errb.Bytes()), errb.Len())
			}
		})
	}
}

func TestStdinEOFReachesTheProcess(t *testing.T) {
	_, cc := server(t, "wc")
	pr, pw := io.Pipe()
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() {
		res, err := Run(context.Background(), cc, Options{Binary: "wc", Args: []string{"-c"}, Stdin: pr, Stdout: &out})
		if err == nil && res.Code != 0 {
			err = fmt.Errorf("code %d", res.Code)
		}
		done <- err
	}()
	pw.Write([]byte("12345"))
	select {
	case <-done:
		t.Fatal("wc ended before stdin did")
	case <-time.After(300 * time.Millisecond):
	}
	pw.Close()
	if err := <-done; err != nil || strings.TrimSpace(out.String()) != "5" {
		t.Fatalf("wc -c: %q, %v", out.String(), err)
	}
}

func TestTTY(t *testing.T) {
	_, cc := server(t, "sh", "cat")
	t.Run("a pty with the window size", func(t *testing.T) {
		var out bytes.Buffer
		res, err := Run(context.Background(), cc, Options{Binary: "sh", Args: []string{"-c", "tty; stty size; [ -t 2 ] && echo stderr-tty"},
			TTY: true, Window: &qtfsv1.WindowSize{Rows: 33, Cols: 101}, Stdout: &out})
		if err != nil || res.Code != 0 {
			t.Fatalf("%+v %v", res, err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\r\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "/dev/pts/") || lines[1] != "33 101" || lines[2] != "stderr-tty" {
			t.Fatalf("output %q", out.String())
		}
	})
	t.Run("resize on SIGWINCH", func(t *testing.T) {
		sigs := make(chan os.Signal, 1)
		pr, pw := io.Pipe()
		size := &qtfsv1.WindowSize{Rows: 40, Cols: 120}
		done := make(chan Result, 1)
		go func() {
			res, _ := Run(context.Background(), cc, Options{Binary: "sh",
				Args: []string{"-c", `trap 'stty size; exit 7' WINCH; echo ready; while :; do sleep 0.05; done`},
				TTY:  true, Stdout: pw, Signals: sigs, WindowSize: func() *qtfsv1.WindowSize { return size }})
			pw.Close()
			done <- res
		}()
		buf := make([]byte, 64)
		if n, _ := pr.Read(buf); !strings.Contains(string(buf[:n]), "ready") {
			t.Fatalf("got %q", buf[:n])
		}
		sigs <- syscall.SIGWINCH
		rest, _ := io.ReadAll(pr)
		if res := <-done; res.Code != 7 || !strings.Contains(string(rest), "40 120") {
			t.Fatalf("code %d output %q", res.Code, rest)
		}
	})
	for _, tc := range []struct{ name, in string }{
		{"stdin EOF ends the input", "hello\n"},
		{"stdin EOF after a partial line", "partial"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := Run(ctx, cc, Options{Binary: "cat", TTY: true, Stdin: strings.NewReader(tc.in), Stdout: &out})
			if err != nil || res.Code != 0 || !strings.Contains(out.String(), strings.TrimSpace(tc.in)) {
				t.Fatalf("%+v %v output %q", res, err, out.String())
			}
		})
	}
}

func TestWriteErrorEndsTheRun(t *testing.T) {
	_, cc := server(t, "cat")
	_, err := Run(context.Background(), cc, Options{Binary: "cat", Stdin: strings.NewReader("x"), Stdout: failWriter{}})
	if err == nil || !strings.Contains(err.Error(), "write stdout") {
		t.Fatalf("Run: %v", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// helper starts the test binary as the rexec command with argv.
func helper(t *testing.T, argv ...string) *exec.Cmd {
	t.Helper()
	a, _ := json.Marshal(argv)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperArgv+"="+string(a))
	return cmd
}

func TestMainExitCodes(t *testing.T) {
	uri, _ := server(t, "sh")
	dir := t.TempDir()
	os.Symlink(os.Args[0], filepath.Join(dir, "sh"))
	for _, tc := range []struct {
		name   string
		argv   []string
		env    []string
		code   int
		out    string
		stderr string
	}{
		{"exit status", []string{"rexec", "--server", uri, "sh", "-c", "echo hi; exit 5"}, nil, 5, "hi\n", ""},
		{"signal death", []string{"rexec", "--server", uri, "sh", "-c", "kill -USR1 $$"}, nil, 128 + 10, "", ""},
		{"not allowed", []string{"rexec", "--server", uri, "cat"}, nil, 126, "", "rexec: cat"},
		{"not found", []string{"rexec", "--server", uri, "no-such-binary-qtfs"}, nil, 127, "", "rexec: no-such-binary-qtfs: not found"},
		{"unreachable", []string{"rexec", "--server", "unix://" + dir + "/none.sock", "--connect-timeout", "300ms", "sh"}, nil, 255, "", "rexec: transport: dial unix://"},
		{"no server", []string{"rexec", "sh"}, nil, 255, "", "rexec: no server"},
		{"server from REXEC_SERVER", []string{"rexec", "sh", "-c", "echo env"}, []string{"REXEC_SERVER=" + uri}, 0, "env\n", ""},
		{"multi-call name", []string{filepath.Join(dir, "sh"), "-c", `cat /proc/$$/cmdline`, "arg1"}, []string{"QTFS_SERVER=" + uri}, 0, "arg1\n", ""},
		{"--env and --cwd", []string{"rexec", "--server", uri, "--env", "X=y", "--cwd", dir, "sh", "-c", `echo $X; pwd`}, nil, 0, "y\n" + dir + "\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := helper(t, tc.argv...)
			cmd.Env = append(cmd.Env, "QTFS_CONFIG="+filepath.Join(dir, "none.yaml"))
			cmd.Env = append(cmd.Env, tc.env...)
			os.WriteFile(filepath.Join(dir, "none.yaml"), nil, 0o600)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || (tc.name != "multi-call name" && out.String() != tc.out) || !strings.Contains(errb.String(), tc.stderr) {
				t.Fatalf("code %d stdout %q stderr %q; want %d %q %q", code, out.String(), errb.String(), tc.code, tc.out, tc.stderr)
			}
			if want := filepath.Join(dir, "sh") + "\x00-c\x00cat /proc/$$/cmdline\x00arg1\x00"; tc.name == "multi-call name" && out.String() != want {
				t.Fatalf("multi-call: argv0 and args %q", out.String())
			}
		})
	}
}

func TestMainPassesInheritedFiles(t *testing.T) {
	uri, _ := server(t, "sh")
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	os.WriteFile(in, []byte("0123456789"), 0o644)
	fin, _ := os.Open(in)
	defer fin.Close()
	fin.Seek(6, io.SeekStart)
	out := filepath.Join(dir, "out")
	fout, _ := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	defer fout.Close()
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	defer pw.Close()
	// fd 3: in at offset 6; fd 4: a pipe (not passed); fd 5: out, append.
	cmd := helper(t, "rexec", "--server", uri, "sh", "-c",
		`cat <&3; echo; readlink /proc/$$/fd/4; echo to-out >&5; [ -e /proc/$$/fd/6 ] || echo no-fd6`)
	cmd.ExtraFiles = []*os.File{fin, pr, fout}
	b, err := cmd.CombinedOutput()
	if err != nil || string(b) != "6789\n/dev/null\nno-fd6\n" {
		t.Fatalf("%v: %q", err, b)
	}
	if got, _ := os.ReadFile(out); string(got) != "to-out\n" {
		t.Fatalf("out holds %q", got)
	}
}

func TestInheritedFilesSkipsOwnFiles(t *testing.T) {
	f, err := os.Open("/proc/self/status") // close-on-exec, as all of Go's
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files, err := InheritedFiles()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range files {
		if int(x.Fd) == int(f.Fd()) {
			t.Fatalf("own close-on-exec file listed: %v", x)
		}
	}
}

func TestMainForwardsSignals(t *testing.T) {
	uri, _ := server(t, "sh")
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH} {
		name := unix.SignalName(sig)[3:]
		t.Run(name, func(t *testing.T) {
			cmd := helper(t, "rexec", "--server", uri, "sh", "-c",
				fmt.Sprintf(`trap 'echo got %s; exit 3' %s; echo ready; while :; do sleep 0.05; done`, name, name))
			pr, pw := io.Pipe()
			cmd.Stdout = pw
			var errb bytes.Buffer
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			buf := make([]byte, 64)
			if n, _ := pr.Read(buf); string(buf[:n]) != "ready\n" {
				t.Fatalf("got %q", buf[:n])
			}
			cmd.Process.Signal(sig)
			n, _ := pr.Read(buf)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 || string(buf[:n]) != "got "+name+"\n" {
				t.Fatalf("%v, output %q, stderr %q", err, buf[:n], errb.String())
			}
		})
	}
}

// openTestPTY opens a pty pair for a helper's terminal.
func openTestPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	master = os.NewFile(uintptr(m), "ptmx")
	t.Cleanup(func() { master.Close(); s.Close() })
	return master, s
}

// readUntil reads the master until the output holds want.
func readUntil(t *testing.T, m *os.File, seen *bytes.Buffer, want string) {
	t.Helper()
	buf := make([]byte, 4096)
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(seen.String(), want) {
		m.SetReadDeadline(deadline)
		n, err := m.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("waiting for %q: %v; seen %q", want, err, seen.String())
		}
	}
}

func TestMainTerminal(t *testing.T) {
	uri, _ := server(t, "sh")
	m, s := openTestPTY(t)
	if err := unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 33, Col: 101}); err != nil {
		t.Fatal(err)
	}
	before, err := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	// No -t: stdin and stdout are terminals, so a pty is allocated.
	cmd := helper(t, "rexec", "--server", uri, "sh", "-c", `stty size; trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done`)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s, s, s
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var seen bytes.Buffer
	readUntil(t, m, &seen, "ready")
	if !strings.Contains(seen.String(), "33 101") {
		t.Fatalf("remote window: %q", seen.String())
	}
	raw, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if raw.Lflag&(unix.ICANON|unix.ECHO|unix.ISIG) != 0 {
		t.Fatalf("local terminal not in raw mode: lflag %#o", raw.Lflag)
	}
	// A local resize reaches the remote pty.
	if err := unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 40, Col: 120}); err != nil {
		t.Fatal(err)
	}
	readUntil(t, m, &seen, "40 120")
	// ^C typed locally travels as a byte and interrupts the remote
	// process through its terminal.
	m.Write([]byte{3})
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 128+int(syscall.SIGINT) {
		t.Fatalf("exit %v, want %d; output %q", err, 128+int(syscall.SIGINT), seen.String())
	}
	after, _ := unix.IoctlGetTermios(int(s.Fd()), unix.TCGETS)
	if after.Lflag != before.Lflag || after.Iflag != before.Iflag || after.Oflag != before.Oflag || after.Cflag != before.Cflag {
		t.Fatalf("terminal not restored: before %+v after %+v", before, after)
	}
}

// TestMainWaitsForServer: rexec started while the server is not listening
// yet (restarting) waits for it and runs the binary once it is up.
func TestMainWaitsForServer(t *testing.T) {
	dir, err := os.MkdirTemp("", "rexec")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	cmd := helper(t, "rexec", "--server", "unix://"+sock, "--connect-timeout", "20s", "sh", "-c", "echo up")
	cmd.Env = append(cmd.Env, "QTFS_CONFIG="+filepath.Join(dir, "none.yaml"))
	os.WriteFile(filepath.Join(dir, "none.yaml"), nil, 0o600)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	serverAt(t, sock, "sh")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("rexec: %v; stderr %q", err, errb.String())
	}
	if out.String() != "up\n" || time.Since(start) < 700*time.Millisecond {
		t.Fatalf("stdout %q after %v; want the output once the server is up", out.String(), time.Since(start))
	}
}
