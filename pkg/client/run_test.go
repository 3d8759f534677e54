package client

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	"github.com/qtfs/qtfs/pkg/server"
)

// runChildEnv names the config of a `qtfs-client run` the test binary runs
// instead of testing, until SIGTERM.
const runChildEnv = "QTFS_CLIENT_TEST_RUN_CONFIG"

// runChild is the child side of TestRunChroot: the run daemon, which
// serves the FUSE mounts the parent looks at. After the teardown nothing
// is left mounted beneath the root.
func runChild(t *testing.T, config string) {
	set := flag.NewFlagSet("run", flag.ContinueOnError)
	rc, err := LoadRunConfig(set, []string{"--config", config})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, rc, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, m := range readMountinfo(t, "/proc/self/mountinfo") {
		if m.MountPoint == rc.Root || strings.HasPrefix(m.MountPoint, rc.Root+"/") {
			left = append(left, m.MountPoint)
		}
	}
	if len(left) > 0 {
		t.Fatalf("still mounted after the teardown: %q", left)
	}
}

// readMountinfo reads and parses a mountinfo file of proc.
func readMountinfo(t *testing.T, name string) []mountinfo.Mount {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return mountinfo.Parse(data)
}

// lines collects a process's output and tells when a line holds want.
type lines struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	want  string
	found chan struct{}
	once  sync.Once
}

func (l *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l.mu.Lock()
		l.buf.WriteString(sc.Text() + "\n")
		l.mu.Unlock()
		if strings.Contains(sc.Text(), l.want) {
			l.once.Do(func() { close(l.found) })
		}
	}
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestRunChroot runs `qtfs-client run` against a real server on a host
// where the management plane never ran: an export root is missing (the
// server makes it at start), mount points are missing beneath the exports
// (made by Mount with create, one of them inside another qtfs mount of
// the config, listed before it, whose cache keeps negative entries), and
// the chroot's root itself does not exist yet. The run daemon serves its FUSE mounts from a child process in
// a private mount namespace; this process looks at them through
// /proc/PID. The root is a mount point shared in a peer group of its own,
// and so is every qtfs mount beneath it.
func TestRunChroot(t *testing.T) {
	if config := os.Getenv(runChildEnv); config != "" {
		runChild(t, config)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (FUSE mounts in a private mount namespace): run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("needs /dev/fuse: modprobe fuse")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare(1): apt-get install util-linux")
	}
	base := t.TempDir()
	host, dpu := filepath.Join(base, "host"), filepath.Join(base, "dpu")
	for _, d := range []string{host + "/var/log", dpu + "/etc"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	docker, containers, pods := host+"/var/lib/docker", host+"/var/lib/docker/containers", host+"/var/log/pods"
	root := filepath.Join(base, "not/yet/root")

	// The server, in this process.
	sock := filepath.Join(base, "qtfs.sock")
	core, slogs := observer.New(zap.InfoLevel)
	slog := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core()))
	sctx, scancel := context.WithCancel(context.Background())
	sdone := make(chan error, 1)
	go func() {
		sdone <- server.Run(sctx, server.Settings{Listen: []string{"unix://" + sock}, Export: []string{docker, host + "/var/log"}}, slog)
	}()
	t.Cleanup(func() {
		scancel()
		select {
		case err := <-sdone:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("the server did not stop")
		}
	})
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-sdone:
			t.Fatalf("server: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
		if i > 500 {
			t.Fatal("the server does not listen")
		}
	}

	config := filepath.Join(base, "client.yaml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`server: unix://%s
runtime_dir: %s
root: %s
dev: false
local_proc: ""
binds: ["%s/etc:ro"]
tmpfs: [/run]
mounts:
  - %s
  - %s:cache=strict
  - %s
`, sock, filepath.Join(base, "runtime"), root, dpu, containers, docker, pods)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), runChildEnv+"="+config)
	out := &lines{want: "qtfs-client run ready", found: make(chan struct{})}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go out.read(pr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); pw.Close() }()
	stopped := false
	stop := func() error {
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			cmd.Process.Kill() // its mount namespace, and every mount, ends with it
			<-exited
			return fmt.Errorf("qtfs-client run did not end on SIGTERM")
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
		t.Logf("qtfs-client run:\n%s", out)
	})
	select {
	case <-out.found:
	case err := <-exited:
		stopped = true
		t.Fatalf("qtfs-client run ended before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("qtfs-client run is not ready after 60s")
	}
	pid := cmd.Process.Pid // unshare execs the test binary

	ms := readMountinfo(t, fmt.Sprintf("/proc/%d/mountinfo", pid))
	var rootMount *mountinfo.Mount
	rootGroup := 0
	qtfs := map[string]int{} // the peer group of each qtfs mount, by its path in the chroot
	for i, m := range ms {
		shared, _ := m.PeerGroups()
		switch {
		case m.MountPoint == root:
			if rootMount != nil {
				t.Errorf("the root is mounted twice")
			}
			rootMount, rootGroup = &ms[i], shared
		case strings.HasPrefix(m.MountPoint, root+"/"):
			if shared == 0 {
				t.Errorf("%s (%s) is not shared", m.MountPoint, m.FSType)
			}
			if m.FSType == fuseclient.FsType {
				qtfs[strings.TrimPrefix(m.MountPoint, root)] = shared
			}
		}
	}
	t.Run("the root is a mount point, shared in a peer group of its own", func(t *testing.T) {
		if rootMount == nil {
			t.Fatalf("the root is no mount point")
		}
		if rootGroup == 0 {
			t.Fatalf("the root is not shared: %+v", rootMount)
		}
		for _, m := range ms {
			if shared, _ := m.PeerGroups(); shared == rootGroup && m.MountPoint != root && !strings.HasPrefix(m.MountPoint, root+"/") {
				t.Errorf("%s outside the root is in its peer group", m.MountPoint)
			}
		}
	})
	t.Run("every qtfs mount is there and shared", func(t *testing.T) {
		for _, p := range []string{docker, containers, pods} {
			shared, ok := qtfs[p]
			if !ok {
				t.Errorf("%s is not a qtfs mount in the chroot (qtfs mounts and their peer groups: %v)", p, qtfs)
				continue
			}
			if shared == 0 || shared == rootGroup {
				t.Errorf("%s: shared:%d (the root's %d)", p, shared, rootGroup)
			}
		}
	})
	t.Run("the host directories were made and logged", func(t *testing.T) {
		for _, p := range []string{docker, containers, pods} {
			if fi, err := os.Stat(p); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
				t.Errorf("on the host, %s: %v %v", p, fi, err)
			}
		}
		if slogs.FilterMessage("an export's directory did not exist: created it").FilterField(zap.String("created", docker)).Len() != 1 {
			t.Errorf("the server did not log making the export root %s", docker)
		}
		made := fmt.Sprint(slogs.FilterMessage("created host directories for a mount").All())
		for _, p := range []string{containers, pods} {
			if !strings.Contains(made, p) {
				t.Errorf("the server did not log making %s: %s", p, made)
			}
			if !strings.Contains(out.String(), "the server created the mount's host directories") || !strings.Contains(out.String(), p) {
				t.Errorf("the client did not log that the server made %s", p)
			}
		}
	})
	t.Run("a file written in the chroot is on the host", func(t *testing.T) {
		p := fmt.Sprintf("/proc/%d/root%s%s/0.log", pid, root, pods)
		if err := os.WriteFile(p, []byte("hello\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(pods + "/0.log"); err != nil || string(b) != "hello\n" {
			t.Fatalf("on the host: %q %v", b, err)
		}
	})

	if err := stop(); err != nil {
		t.Fatalf("qtfs-client run: %v", err)
	}
	if o := out.String(); !strings.Contains(o, "--- PASS: "+t.Name()) || !strings.Contains(o, "chroot torn down") {
		t.Errorf("the run daemon did not end cleanly")
	}
}
