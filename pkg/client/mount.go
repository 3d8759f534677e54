package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/transport"
	"github.com/qtfs/qtfs/pkg/version"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// readyFDEnv names the fd on which a background mount daemon reports to
// the command that started it: "ok\n" once the mount answers, or
// "error: ...\n".
const readyFDEnv = "QTFS_INTERNAL_READY_FD"

// MountRequest is one `qtfs-client mount`.
type MountRequest struct {
	Settings   clientconf.Settings
	Remote     Remote
	Mountpoint string
	Flags      MountFlags
	Foreground bool
}

// StartTimeout bounds how long `qtfs-client mount` waits for its
// background daemon to report the mount ready.
const StartTimeout = 60 * time.Second

// Background starts the mount daemon as a detached child running the same
// command with -f, and returns once the mount answers or the child failed.
// args are the command-line arguments of the mount subcommand.
func Background(req MountRequest, args []string) error {
	if err := os.MkdirAll(req.Settings.RuntimeDir, 0o755); err != nil {
		return fmt.Errorf("runtime dir: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, append([]string{"mount", "-f"}, args...)...)
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, devnull, devnull
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start mount daemon: %w", err)
	}
	w.Close()
	logPath := filepath.Join(req.Settings.RuntimeDir, "client", strconv.Itoa(cmd.Process.Pid)+".log")

	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(r).ReadString('\n')
		done <- result{strings.TrimSpace(line), err}
	}()
	select {
	case res := <-done:
		if res.line == "ok" {
			_ = cmd.Process.Release()
			return nil
		}
		_ = cmd.Wait()
		if msg, ok := strings.CutPrefix(res.line, "error: "); ok {
			return errors.New(msg)
		}
		return fmt.Errorf("mount daemon exited before the mount was ready (log: %s)", logPath)
	case <-time.After(StartTimeout):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return fmt.Errorf("mount not ready after %v (log: %s)", StartTimeout, logPath)
	}
}

// channelDialer dials the call channels of a session with the server at u.
func channelDialer(u transport.URI, sec transport.Security) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) { return transport.DialChannel(ctx, u, sec) }
}

// pprofEnv names a loopback address ("127.0.0.1:6061") on which a mount
// daemon serves the Go runtime's profiles under /debug/pprof/; unset, it
// serves none. It is a diagnostic for profiling, not a setting.
const pprofEnv = "QTFS_PPROF"

// servePprof starts the profile listener pprofEnv asks for, if any; the
// returned function stops it.
func servePprof(log *zap.Logger) func() {
	addr := os.Getenv(pprofEnv)
	if addr == "" {
		return func() {}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		log.Warn("pprof listener", zap.String("addr", addr), zap.Error(err))
		return func() {}
	}
	if ta, ok := l.Addr().(*net.TCPAddr); !ok || !ta.IP.IsLoopback() {
		l.Close()
		log.Warn("pprof listener refused: not a loopback address", zap.String("addr", addr))
		return func() {}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	log.Info("pprof", zap.String("listen", l.Addr().String()))
	return func() { _ = srv.Close() }
}

// readyReporter is how a foreground daemon tells its starter how it went.
type readyReporter struct{ f *os.File }

func newReadyReporter() *readyReporter {
	fd, err := strconv.Atoi(os.Getenv(readyFDEnv))
	if err != nil || fd < 3 {
		return &readyReporter{}
	}
	os.Unsetenv(readyFDEnv)
	return &readyReporter{f: os.NewFile(uintptr(fd), "ready")}
}

func (r *readyReporter) background() bool { return r.f != nil }

func (r *readyReporter) report(err error) {
	if r.f == nil {
		return
	}
	if err == nil {
		io.WriteString(r.f, "ok\n")
	} else {
		fmt.Fprintf(r.f, "error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	}
	r.f.Close()
	r.f = nil
}

// Foreground runs the mount daemon in this process until ctx ends (then
// it unmounts) or the mount goes away (`qtfs-client umount`, umount(8)).
// newLog builds the logger; a background daemon logs to a file in the
// runtime directory.
func Foreground(ctx context.Context, req MountRequest, newLog func(w string) (*zap.Logger, error)) (err error) {
	ready := newReadyReporter()
	defer func() { ready.report(err) }()

	ctlDir := filepath.Join(req.Settings.RuntimeDir, "client")
	if err := os.MkdirAll(ctlDir, 0o755); err != nil {
		return fmt.Errorf("runtime dir: %w", err)
	}
	logDest := "stderr"
	if ready.background() {
		logDest = filepath.Join(ctlDir, strconv.Itoa(os.Getpid())+".log")
	}
	log, err := newLog(logDest)
	if err != nil {
		return err
	}
	defer log.Sync()
	defer servePprof(log)()

	mp, err := filepath.Abs(req.Mountpoint)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(mp); err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("mountpoint %s: not a directory", mp)
	}
	uri, err := ServerURI(&req.Settings, req.Remote)
	if err != nil {
		return err
	}
	sec := req.Settings.Security()
	if err := sec.Validate(uri, false); err != nil {
		return err
	}

	dialCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cc, err := transport.Dial(dialCtx, uri, sec)
	if err != nil {
		return err
	}
	defer cc.Close()
	sess, err := session.New(dialCtx, cc, "qtfs-client "+version.Version, log,
		session.Options{ReconnectTimeout: req.Flags.ReconnectTimeout, DialChannel: channelDialer(uri, sec)})
	if err != nil {
		return fmt.Errorf("server %s: %w", uri, err)
	}
	defer sess.Close()
	if err := checkExported(req.Remote.Path, sess.Exports()); err != nil {
		return fmt.Errorf("server %s: %w", uri, err)
	}
	fsName := req.Remote.Server + ":" + req.Remote.Path
	if req.Remote.Server == "" {
		fsName = uri.String() + ":" + req.Remote.Path
	}
	srv, err := fuseclient.Mount(dialCtx, sess, mp, fuseclient.MountOptions{
		RemotePath:  req.Remote.Path,
		Cache:       req.Flags.Cache,
		ReadOnly:    req.Flags.ReadOnly,
		AllowOther:  req.Flags.AllowOther,
		Debug:       req.Flags.Debug,
		FsName:      fsName,
		Logger:      log,
		LocalProc:   req.Flags.LocalProc,
		OffloadRoot: req.Flags.OffloadRoot,
		// No Create: as with sshfs, a remote path that does not exist (a
		// typing error, often) fails with ENOENT rather than leaving a
		// directory on the host. run creates the paths of its config.
	})
	if err != nil {
		// Mount's errors name the remote path, and the mountpoint when
		// the mount itself fails.
		return err
	}

	st := Status{
		PID:        os.Getpid(),
		Mountpoint: mp,
		Remote:     fsName,
		Server:     uri.String(),
		ServerName: sess.ServerName(),
		Started:    time.Now(),
		Log:        map[bool]string{true: logDest}[logDest != "stderr"],
	}
	ctl, err := startControl(controlSocket(ctlDir, st.PID), func(ctx context.Context) any {
		st := st
		st.RTT, st.Error = ping(ctx, sess)
		return st
	}, log)
	if err != nil {
		_ = srv.Unmount()
		return err
	}
	defer ctl.Close()

	log.Info("mounted", zap.String("remote", fsName), zap.String("mountpoint", mp), zap.String("server", uri.String()))
	ready.report(nil)

	served := make(chan struct{})
	go func() { srv.Wait(); close(served) }()
	select {
	case <-served:
		log.Info("unmounted", zap.String("mountpoint", mp))
		return nil
	case <-ctx.Done():
	}
	log.Info("unmounting", zap.String("mountpoint", mp))
	if err := srv.Unmount(); err != nil {
		log.Warn("mount busy, detaching it", zap.String("mountpoint", mp), zap.Error(err))
		detach(mp, log)
	}
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		log.Warn("FUSE connection did not close in time")
	}
	return nil
}

// checkExported refuses, with the list of exports, a path that lies in
// none of them; the server checks again.
func checkExported(path string, exports []*qtfsv1.ExportInfo) error {
	var names []string
	for _, e := range exports {
		ep := string(e.GetPath())
		if path == ep || ep == "/" || strings.HasPrefix(path, ep+"/") {
			return nil
		}
		names = append(names, ep)
	}
	if len(names) == 0 {
		return fmt.Errorf("%s is not exported: the server exports nothing to this client", path)
	}
	return fmt.Errorf("%s is not exported (exports: %s)", path, strings.Join(names, ", "))
}

// detach lazily unmounts mp and aborts its FUSE connection, so that
// processes still using it get ENOTCONN instead of hanging.
func detach(mp string, log *zap.Logger) {
	var st unix.Stat_t
	statErr := unix.Stat(mp, &st)
	if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
		log.Warn("detach failed", zap.String("mountpoint", mp), zap.Error(err))
	}
	if statErr == nil {
		abort := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", unix.Minor(st.Dev))
		if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
			log.Debug("abort FUSE connection", zap.String("file", abort), zap.Error(err))
		}
	}
}

// Unmount unmounts a qtfs mount; lazy detaches a busy one.
func Unmount(mountpoint string, lazy bool) error {
	mp, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	mounts, err := QtfsMounts()
	if err != nil {
		return err
	}
	found := false
	for _, m := range mounts {
		if m.MountPoint == mp {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%s: not a qtfs mount", mp)
	}
	if os.Geteuid() != 0 {
		args := []string{"-u", mp}
		if lazy {
			args = []string{"-u", "-z", mp}
		}
		if out, err := exec.Command("fusermount3", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("fusermount3 %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(mp, flags); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("%s: busy (a process uses it; --lazy detaches it now and frees it when unused)", mp)
		}
		return fmt.Errorf("umount %s: %w", mp, err)
	}
	return nil
}

// QtfsMounts lists the qtfs mounts this process can see.
func QtfsMounts() ([]mountinfo.Mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return qtfsMounts(mountinfo.Parse(data)), nil
}

// qtfsMounts returns the qtfs mounts of a mount table, in its order.
func qtfsMounts(table []mountinfo.Mount) []mountinfo.Mount {
	var out []mountinfo.Mount
	for _, m := range table {
		if m.FSType == fuseclient.FsType {
			out = append(out, m)
		}
	}
	return out
}
