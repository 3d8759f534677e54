package fuseclient_test

// The FUSE tests never touch a mount from the process that serves it. The
// test binary re-executes itself as a child (QTFS_TEST_SERVE=1) that runs a
// hostfs server and this package's client over a unix socket, mounts, says
// "ready" on stdout, answers "stats" and "reset" lines on stdin (the
// server-side count of each RPC), and unmounts on SIGTERM or stdin EOF.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
)

const (
	envServe    = "QTFS_TEST_SERVE"
	envExport   = "QTFS_TEST_EXPORT"
	envMount    = "QTFS_TEST_MOUNTPOINT"
	envRemote   = "QTFS_TEST_REMOTE"
	envCache    = "QTFS_TEST_CACHE"
	envReadOnly = "QTFS_TEST_READONLY"
	envAllow    = "QTFS_TEST_ALLOW_OTHER"
	envTimeout  = "QTFS_TEST_OP_TIMEOUT"
	envStall    = "QTFS_TEST_STALL"
	envLogLevel = "QTFS_TEST_LOGLEVEL"
	envLocal    = "QTFS_TEST_LOCAL_PROC"
	envOffload  = "QTFS_TEST_OFFLOAD_ROOT"
	// envSpecialTTL is how long the kernel keeps the entries and
	// attributes of a special mount (fuseclient.WithSpecialTTL).
	envSpecialTTL = "QTFS_TEST_SPECIAL_TTL"
	// envExtra lists more mounts of the same session, as JSON
	// [[remote, mountpoint]...], exported too.
	envExtra = "QTFS_TEST_EXTRA"
	// envDebug set to 1 traces every FUSE request of the child (with
	// QTFS_TEST_LOGLEVEL=info or debug).
	envDebug = "QTFS_TEST_FUSE_DEBUG"
)

func TestMain(m *testing.M) {
	if os.Getenv(envServe) == "1" {
		if err := serve(); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	if role := os.Getenv(envChrootRole); role != "" {
		os.Exit(chrootRole(role))
	}
	os.Exit(m.Run())
}

// rpcCounter counts the FileSystem RPCs the child's server receives, and
// stalls those named in stall until their caller gives up.
type rpcCounter struct {
	mu     sync.Mutex
	counts map[string]int
	stall  string
}

func (c *rpcCounter) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	op := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	c.mu.Lock()
	c.counts[op]++
	c.mu.Unlock()
	if op == c.stall {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return h(ctx, req)
}

// serve is the child: server, client and mount, until SIGTERM or stdin EOF.
func serve() error {
	level := zapcore.WarnLevel
	if l := os.Getenv(envLogLevel); l != "" {
		if err := level.Set(l); err != nil {
			return err
		}
	}
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(os.Stderr), level))
	defer log.Sync()

	var extra [][2]string
	if v := os.Getenv(envExtra); v != "" {
		if err := json.Unmarshal([]byte(v), &extra); err != nil {
			return err
		}
	}
	exports := []hostfs.Export{{Path: os.Getenv(envExport)}}
	for _, x := range extra {
		exports = append(exports, hostfs.Export{Path: x[0]})
	}
	counter := &rpcCounter{counts: map[string]int{}, stall: os.Getenv(envStall)}
	srv, err := hostfs.New(hostfs.Options{
		Exports:     exports,
		Logger:      log.Named("hostfs"),
		ServerName:  "hostfs-test",
		Interceptor: counter.intercept,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	g := grpc.NewServer(srv.ServerOptions()...)
	srv.Register(g)
	sockDir, err := os.MkdirTemp("", "qtfs-fuseclient-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(sockDir)
	sock := filepath.Join(sockDir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	go g.Serve(ln)
	defer g.Stop()

	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := session.New(ctx, cc, "fuseclient-test", log.Named("client"), session.Options{})
	if err != nil {
		return err
	}
	policy := fuseclient.CacheDefault
	if c := os.Getenv(envCache); c != "" {
		if policy, err = fuseclient.ParseCachePolicy(c); err != nil {
			return err
		}
	}
	remote := os.Getenv(envRemote)
	if remote == "" {
		remote = os.Getenv(envExport)
	}
	var opTimeout time.Duration
	if v := os.Getenv(envTimeout); v != "" {
		if opTimeout, err = time.ParseDuration(v); err != nil {
			return err
		}
	}
	mnt := os.Getenv(envMount)
	opts := fuseclient.MountOptions{
		RemotePath:  remote,
		Cache:       policy,
		ReadOnly:    os.Getenv(envReadOnly) == "1",
		AllowOther:  os.Getenv(envAllow) == "1",
		FsName:      "qtfs:test:" + remote,
		OpTimeout:   opTimeout,
		Debug:       os.Getenv(envDebug) == "1",
		Logger:      log.Named("mount"),
		LocalProc:   os.Getenv(envLocal),
		OffloadRoot: os.Getenv(envOffload),
	}
	if v := os.Getenv(envSpecialTTL); v != "" {
		ttl, err := time.ParseDuration(v)
		if err != nil {
			return err
		}
		opts = fuseclient.WithSpecialTTL(opts, ttl)
	}
	server, err := fuseclient.Mount(ctx, sess, mnt, opts)
	if err != nil {
		return err
	}
	servers := []*fuse.Server{server}
	for _, x := range extra {
		s, err := fuseclient.Mount(ctx, sess, x[1], fuseclient.MountOptions{
			RemotePath: x[0],
			FsName:     "qtfs:test:" + x[0],
			OpTimeout:  opTimeout,
			Logger:     log.Named("mount"),
		})
		if err != nil {
			return err
		}
		servers = append(servers, s)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	fmt.Println("ready")
loop:
	for {
		select {
		case <-sigs:
			break loop
		case l, ok := <-lines:
			if !ok {
				break loop
			}
			switch l {
			case "stats":
				counter.mu.Lock()
				b, _ := json.Marshal(counter.counts)
				counter.mu.Unlock()
				fmt.Println(string(b))
			case "reset":
				counter.mu.Lock()
				clear(counter.counts)
				counter.mu.Unlock()
				fmt.Println("ok")
			}
		}
	}
	var uerr error
	for i := len(servers) - 1; i >= 0; i-- {
		for try := 0; try < 50; try++ {
			if err := servers[i].Unmount(); err == nil {
				break
			} else if try == 49 {
				uerr = err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return uerr
}

// syncBuffer collects the child's stderr.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// mountCfg describes one test mount.
type mountCfg struct {
	// export is the exported host directory; a new temporary one when "".
	export string
	// sub, when set, mounts this directory beneath the export.
	sub      string
	cache    string
	readOnly bool
	// allowOther lets other users than root use the mount.
	allowOther bool
	// opTimeout is the mount's RPC deadline ("" for the default).
	opTimeout string
	// stall names an RPC the server never answers.
	stall string
	// localProc and offloadRoot are the proc options of the mount.
	localProc, offloadRoot string
	// specialTTL, when set, is how long the kernel keeps the entries and
	// attributes of a special mount ("1h"; a second when "").
	specialTTL string
	// mountpoint, when set, is where the mount goes (a new temporary
	// directory otherwise).
	mountpoint string
	// extra are more mounts of the same session: host path and
	// mountpoint of each (default options).
	extra [][2]string
}

// testMount is a mount served by a child process.
type testMount struct {
	t      *testing.T
	export string // host path of the export
	dir    string // host path of the mounted directory
	mnt    string // the mountpoint
	extra  []string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string
	stderr *syncBuffer
	done   chan struct{}
	mu     sync.Mutex
	exited bool
}

// startMount starts a child serving a mount and waits until it answers.
func startMount(t *testing.T, cfg mountCfg) *testMount {
	t.Helper()
	testutil.RequireFUSE(t)
	export := cfg.export
	if export == "" {
		export = t.TempDir()
	}
	dir := export
	if cfg.sub != "" {
		dir = filepath.Join(export, cfg.sub)
	}
	tm := &testMount{
		t:      t,
		export: export,
		dir:    dir,
		mnt:    cfg.mountpoint,
		lines:  make(chan string, 16),
		stderr: &syncBuffer{},
		done:   make(chan struct{}),
	}
	if tm.mnt == "" {
		tm.mnt = t.TempDir()
	}
	for _, x := range cfg.extra {
		tm.extra = append(tm.extra, x[1])
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(),
		envServe+"=1",
		envExport+"="+export,
		envRemote+"="+dir,
		envMount+"="+tm.mnt,
		envCache+"="+cfg.cache,
	)
	if cfg.readOnly {
		cmd.Env = append(cmd.Env, envReadOnly+"=1")
	}
	if cfg.allowOther {
		cmd.Env = append(cmd.Env, envAllow+"=1")
	}
	cmd.Env = append(cmd.Env, envTimeout+"="+cfg.opTimeout, envStall+"="+cfg.stall,
		envLocal+"="+cfg.localProc, envOffload+"="+cfg.offloadRoot, envSpecialTTL+"="+cfg.specialTTL)
	if len(cfg.extra) > 0 {
		b, _ := json.Marshal(cfg.extra)
		cmd.Env = append(cmd.Env, envExtra+"="+string(b))
	}
	cmd.Stderr = tm.stderr
	if tm.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tm.cmd = cmd
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			tm.lines <- sc.Text()
		}
		close(tm.lines)
	}()
	go func() {
		cmd.Wait()
		close(tm.done)
	}()
	t.Cleanup(tm.stop)
	select {
	case l, ok := <-tm.lines:
		if !ok || l != "ready" {
			t.Fatalf("child did not mount (got %q): %s", l, tm.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("child did not mount within 30s: %s", tm.stderr.String())
	}
	return tm
}

// path returns name inside the mount.
func (tm *testMount) path(name ...string) string {
	return filepath.Join(append([]string{tm.mnt}, name...)...)
}

// host returns name inside the mounted host directory.
func (tm *testMount) host(name ...string) string {
	return filepath.Join(append([]string{tm.dir}, name...)...)
}

// request sends a control line to the child and returns its answer.
func (tm *testMount) request(line string) string {
	tm.t.Helper()
	if _, err := fmt.Fprintln(tm.stdin, line); err != nil {
		tm.t.Fatalf("control %q: %v", line, err)
	}
	select {
	case l, ok := <-tm.lines:
		if !ok {
			tm.t.Fatalf("control %q: child exited: %s", line, tm.stderr.String())
		}
		return l
	case <-time.After(10 * time.Second):
		tm.t.Fatalf("control %q: no answer", line)
	}
	return ""
}

// resetStats zeroes the server-side RPC counts.
func (tm *testMount) resetStats() {
	tm.t.Helper()
	if got := tm.request("reset"); got != "ok" {
		tm.t.Fatalf("reset: got %q", got)
	}
}

// stats returns the server-side RPC counts since the last reset.
func (tm *testMount) stats() map[string]int {
	tm.t.Helper()
	var m map[string]int
	if err := json.Unmarshal([]byte(tm.request("stats")), &m); err != nil {
		tm.t.Fatalf("stats: %v", err)
	}
	return m
}

// stop unmounts: SIGTERM to the child, which unmounts and exits; a
// detached unmount when it did not.
func (tm *testMount) stop() {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if tm.exited {
		return
	}
	tm.exited = true
	_ = tm.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-tm.done:
	case <-time.After(20 * time.Second):
		// Shutdown speed is not what these tests check (the e2e tests
		// do, with the real daemon); what it leaves behind is, below.
		tm.t.Logf("child %d did not exit 20s after SIGTERM; killing it", tm.cmd.Process.Pid)
		_ = tm.cmd.Process.Kill()
		<-tm.done
	}
	for _, mnt := range append([]string{tm.mnt}, tm.extra...) {
		if mounted(mnt) {
			tm.t.Errorf("%s still mounted after the child exited; detaching it", mnt)
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	}
	if tm.t.Failed() {
		tm.t.Logf("child stderr:\n%s", tm.stderr.String())
	}
}

// mounted reports whether a mount sits on dir, from /proc/self/mountinfo.
func mounted(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && f[4] == dir {
			return true
		}
	}
	return false
}

// mountOptions returns the options of the mount on dir and its type.
func mountOptions(dir string) (opts, fstype string, err error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != dir {
			continue
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				opts, fstype = f[5], f[i+1]
			}
		}
	}
	if fstype == "" {
		return "", "", errors.New("not mounted")
	}
	return opts, fstype, nil
}
