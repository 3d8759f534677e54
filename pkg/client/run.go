package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"

	"github.com/qtfs/qtfs/pkg/chroot"
	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/ctrdproxy"
	"github.com/qtfs/qtfs/pkg/fifo"
	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/sdnotify"
	"github.com/qtfs/qtfs/pkg/sockproxy"
	"github.com/qtfs/qtfs/pkg/version"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Timing of the run daemon.
const (
	runDialTimeout  = 15 * time.Second // one connection attempt
	runBackoffStart = time.Second      // first wait after a failed attempt
	runBackoffMax   = 30 * time.Second // longest wait between attempts
	runMountTimeout = 60 * time.Second // one host mount
	runUnmountWait  = 10 * time.Second // for a FUSE connection to end
	// runRedialMax is the longest pause of gRPC's own reconnecting once
	// the daemon is up: a restarted server is found within it even when
	// nothing else asks for the connection.
	runRedialMax = 2 * time.Second
)

// States of the run daemon, as `qtfs-client status` shows them.
const (
	StateConnecting = "connecting"
	StateMounting   = "mounting"
	StateReady      = "ready"
	StateStopping   = "stopping"
)

// Run is `qtfs-client run`: it connects to the server (retrying with
// backoff while it cannot), checks the config against the server, builds
// the chroot (mounts, the server making the host directories of the
// mounts that the host lacks; shims), starts the socket proxies, reports ready to
// systemd, and on ctx's end tears everything down in reverse order. A
// config error (IsConfigError) is returned before anything is mounted.
func Run(ctx context.Context, rc *RunConfig, log *zap.Logger) error {
	plan, err := rc.check()
	if err != nil {
		return err
	}
	root := plan.chroot.Root
	runDir := filepath.Join(rc.RuntimeDir, "run")
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return fmt.Errorf("run: runtime dir: %w", err)
	}
	unlock, err := lockRoot(runDir, root)
	if err != nil {
		return err
	}
	defer unlock()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pm, err := sockproxy.NewClientMetrics(reg)
	if err != nil {
		return err
	}
	fm, err := fifo.NewClientMetrics(reg)
	if err != nil {
		return err
	}
	d := &runDaemon{rc: rc, plan: plan, log: log, reg: reg, pm: pm, fm: fm}
	d.st = RunStatus{PID: os.Getpid(), Config: rc.Config, Root: root, Server: plan.uri.String(),
		State: StateConnecting, Started: time.Now(), Shims: rc.Shims}
	ctl, err := startControl(controlSocket(runDir, os.Getpid()), func(ctx context.Context) any { return d.snapshot(ctx) }, log)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	defer ctl.Close()
	if rc.MetricsListen != "" {
		stop, err := serveMetrics(rc.MetricsListen, reg, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	cc, sess, err := d.connect(ctx)
	if err != nil || cc == nil {
		return err // nil: stopped while connecting
	}
	defer cc.Close()
	defer sess.Close()
	if err := sess.RegisterMetrics(reg); err != nil {
		log.Warn("metrics", zap.Error(err))
	}
	allowed, proxyErr := listSockets(ctx, cc)
	if err := rc.checkServer(plan, sess.Exports(), allowed, proxyErr); err != nil {
		return err
	}

	d.setState(StateMounting, "")
	tree, err := chroot.Apply(ctx, root, plan.actions, chroot.Options{
		Logger:      log.Named("chroot"),
		Remote:      d.mountRemote,
		StaleFSType: fuseclient.FsType,
	})
	if err != nil {
		return fmt.Errorf("run: build %s: %w", root, err)
	}
	d.mu.Lock()
	d.tree = tree
	d.mu.Unlock()
	defer func() {
		if err := tree.Teardown(); err != nil {
			log.Error("teardown", zap.Error(err))
		} else {
			log.Info("chroot torn down", zap.String("root", root))
		}
	}()
	// Runs before the teardown: mounts going away are expected from now.
	defer d.setState(StateStopping, "")
	defer d.closeProxies()
	for _, ps := range plan.proxies {
		if err := d.startProxy(cc, root, ps); err != nil {
			return fmt.Errorf("run: %s: %w", ps.Key, err)
		}
	}

	sups, err := startSupervisors(superviseSocket(runDir, root), log.Named("supervise"))
	if err != nil {
		return err
	}
	defer sups.Close()

	d.setState(StateReady, "")
	summary := fmt.Sprintf("%s ready: %d host mounts, %d socket proxies, %d shims, server %s",
		root, len(plan.mounts), len(plan.proxies), len(rc.Shims), plan.uri)
	log.Info("qtfs-client run ready", zap.String("root", root), zap.Int("mounts", len(plan.mounts)),
		zap.Int("proxies", len(plan.proxies)), zap.Strings("shims", rc.Shims), zap.String("server", plan.uri.String()))
	_ = sdnotify.Ready(summary)

	<-ctx.Done()
	log.Info("stopping: tearing the chroot down", zap.String("root", root))
	_ = sdnotify.Stopping()
	d.setState(StateStopping, "")
	return nil
}

// runDaemon is the state of one run.
type runDaemon struct {
	rc   *RunConfig
	plan *runPlan
	log  *zap.Logger
	reg  prometheus.Registerer
	pm   *sockproxy.ClientMetrics

	mu      sync.Mutex
	st      RunStatus
	sess    *session.Session
	tree    *chroot.Tree
	proxies []*sockproxy.Proxy
	// closers end the containerd API proxies and their FIFO bridges,
	// in order, before proxies close.
	closers []func() error
	fm      *fifo.ClientMetrics
	remotes map[string]*remoteMount
}

func (d *runDaemon) setState(state, errMsg string) {
	d.mu.Lock()
	d.st.State, d.st.Error = state, errMsg
	d.mu.Unlock()
}

// startProxy starts the socket proxy ps: a listening one that moves
// bytes, or, for the containerd API, a ctrdproxy that reaches the host
// socket through an in-process one and bridges stdio FIFOs.
func (d *runDaemon) startProxy(cc *grpc.ClientConn, root string, ps proxySpec) error {
	conn := waitConn{cc: cc, wait: d.plan.reconnect}
	opts := sockproxy.ProxyOptions{
		Listen:  filepath.Join(root, ps.Listen),
		Remote:  ps.Host,
		Mode:    ps.Mode,
		Logger:  d.log.Named("sockproxy"),
		Metrics: d.pm,
	}
	if !ps.Containerd {
		p, err := sockproxy.Listen(conn, opts)
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.proxies = append(d.proxies, p)
		d.mu.Unlock()
		return nil
	}
	dialer, err := sockproxy.NewDialer(conn, opts)
	if err != nil {
		return err
	}
	bridger, err := fifo.NewBridger(conn, fifo.BridgerOptions{Root: root, Logger: d.log.Named("fifo"), Metrics: d.fm})
	if err != nil {
		dialer.Close()
		return err
	}
	cp, err := ctrdproxy.Listen(ctrdproxy.Options{Listen: opts.Listen, Mode: ps.Mode, Dial: dialer.DialContext,
		Fifos: bridger, Root: root, Logger: d.log.Named("ctrdproxy")})
	if err != nil {
		bridger.Close()
		dialer.Close()
		return err
	}
	d.mu.Lock()
	d.proxies = append(d.proxies, dialer)
	d.closers = append(d.closers, cp.Close, bridger.Close)
	d.mu.Unlock()
	return nil
}

// closeProxies stops the proxies, last first: the containerd API servers
// and their bridges, then the proxies that carry bytes.
func (d *runDaemon) closeProxies() {
	d.mu.Lock()
	ps, cs := d.proxies, d.closers
	d.proxies, d.closers = nil, nil
	d.mu.Unlock()
	for _, c := range cs {
		if err := c(); err != nil {
			d.log.Warn("close the containerd API proxy", zap.Error(err))
		}
	}
	for i := len(ps) - 1; i >= 0; i-- {
		if err := ps[i].Close(); err != nil {
			d.log.Warn("close socket proxy", zap.String("listen", ps[i].Listen()), zap.Error(err))
		}
	}
}

// connect dials the server and opens a session, retrying with backoff
// until it succeeds or ctx ends (then it returns nils).
func (d *runDaemon) connect(ctx context.Context) (*grpc.ClientConn, *session.Session, error) {
	uri, sec := d.plan.uri, d.rc.Security()
	var sess *session.Session
	open := func(ctx context.Context, cc *grpc.ClientConn) (err error) {
		sess, err = session.New(ctx, cc, "qtfs-client run "+version.Version, d.log,
			session.Options{ReconnectTimeout: d.plan.reconnect, DialChannel: channelDialer(uri, sec)})
		return err
	}
	failed := 0
	retry := clientconf.Retry{First: runBackoffStart, Max: runBackoffMax, Attempt: runDialTimeout,
		Again: func(attempt int, err error, pause time.Duration) bool {
			failed = attempt
			msg := fmt.Sprintf("server %s: %v", uri, err)
			d.setState(StateConnecting, msg)
			d.log.Warn("cannot reach the server, retrying", zap.String("server", uri.String()), zap.Error(err),
				zap.Int("attempt", attempt), zap.Duration("retry_in", pause))
			_ = sdnotify.Status(fmt.Sprintf("connecting (attempt %d): %s", attempt, msg))
			return true
		}}
	cc, err := clientconf.DialRetry(ctx, uri, sec, retry, open, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: runRedialMax},
		MinConnectTimeout: runDialTimeout,
	}))
	if err != nil {
		// Every error is retried: ctx ends, or its deadline comes before
		// the next attempt.
		<-ctx.Done()
		return nil, nil, nil
	}
	d.mu.Lock()
	d.sess = sess
	d.st.ServerName = sess.ServerName()
	d.mu.Unlock()
	d.log.Info("connected", zap.String("server", uri.String()), zap.String("server_name", sess.ServerName()), zap.Int("attempt", failed+1))
	return cc, sess, nil
}

// waitConn is the connection the socket proxies use: a new proxied
// connection made while the server is away (restarting, link cut) waits
// for it, at most wait, instead of being closed at once. Once its stream
// is open, a connection lives and dies with the server connection it was
// opened on.
type waitConn struct {
	cc   *grpc.ClientConn
	wait time.Duration
}

func (w waitConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return w.cc.Invoke(ctx, method, args, reply, opts...)
}

// NewStream opens a stream, waiting for the connection to be ready at
// most w.wait; the stream's own life is not bounded.
func (w waitConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if w.cc.GetState() == connectivity.TransientFailure {
		// Try now rather than at the end of gRPC's backoff.
		w.cc.ResetConnectBackoff()
	}
	sctx, cancel := context.WithCancel(ctx)
	var settled sync.Mutex // the first of the timer and NewStream's return wins
	timedOut, opened := false, false
	timer := time.AfterFunc(w.wait, func() {
		settled.Lock()
		defer settled.Unlock()
		if !opened {
			timedOut = true
			cancel()
		}
	})
	s, err := w.cc.NewStream(sctx, desc, method, append(opts, grpc.WaitForReady(true))...)
	settled.Lock()
	opened = true
	late := timedOut
	settled.Unlock()
	timer.Stop()
	switch {
	case late:
		cancel()
		if err == nil {
			err = context.DeadlineExceeded
		}
		return nil, fmt.Errorf("run: the server was not reachable within the reconnect timeout (%v): %w", w.wait, err)
	case err != nil:
		cancel()
		return nil, err
	}
	// sctx ends with ctx: the stream's caller cancels that when done.
	return s, nil
}

// listSockets asks the server which sockets it proxies; the error says
// why it does not.
func listSockets(ctx context.Context, cc grpc.ClientConnInterface) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, runDialTimeout)
	defer cancel()
	resp, err := qtfsv1.NewSocketProxyClient(cc).List(ctx, &qtfsv1.SocketListRequest{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range resp.GetPaths() {
		out = append(out, string(p))
	}
	return out, nil
}

// remoteMount is one host mount the daemon serves.
type remoteMount struct {
	srv    *fuse.Server
	path   string // inside the chroot
	target string // on the DPU
	source string // the host path
	log    *zap.Logger
	served chan struct{}
}

// Unmount unmounts, detaching a busy mount and aborting its FUSE
// connection so that nothing hangs on it, and waits for it to end.
func (r *remoteMount) Unmount() error {
	if err := r.srv.Unmount(); err != nil {
		r.log.Warn("mount busy, detaching it", zap.String("mountpoint", r.target), zap.Error(err))
		detach(r.target, r.log)
	}
	select {
	case <-r.served:
	case <-time.After(runUnmountWait):
		r.log.Warn("FUSE connection did not close in time", zap.String("mountpoint", r.target))
	}
	return nil
}

// mountRemote is the chroot's callback for a host mount.
func (d *runDaemon) mountRemote(ctx context.Context, a chroot.Action) (chroot.Unmounter, error) {
	m := a.Data.(runMount)
	d.mu.Lock()
	sess := d.sess
	d.mu.Unlock()
	mctx, cancel := context.WithTimeout(ctx, runMountTimeout)
	defer cancel()
	// On the host's proc root, /proc/<pid> of a process in the chroot
	// (whose root is offload_root) is a directory of the mount: its
	// mountinfo and mounts show the host's mounts, exe, cwd and root read
	// as the process sees them, and every other entry links into
	// local_proc/<pid>/; /proc/self of a process outside the chroot links
	// into the DPU's proc at local_proc. The chroot's local_proc and root
	// are the defaults; options of the entry win.
	localProc, offloadRoot := m.Flags.LocalProc, m.Flags.OffloadRoot
	if c := d.plan.chroot; c.LocalProc != "" {
		if localProc == "" {
			localProc = c.LocalProc
		}
		if offloadRoot == "" {
			offloadRoot = c.Root
		}
	}
	srv, err := fuseclient.Mount(mctx, sess, a.Target, fuseclient.MountOptions{
		RemotePath:  a.Source,
		Cache:       m.Flags.Cache,
		ReadOnly:    m.Flags.ReadOnly,
		AllowOther:  m.Flags.AllowOther,
		Debug:       m.Flags.Debug,
		FsName:      d.plan.uri.String() + ":" + a.Source,
		LocalProc:   localProc,
		OffloadRoot: offloadRoot,
		Logger:      d.log.Named("fs"),
		// The chroot mirrors the host's paths: a directory the host lacks
		// yet (a fresh host) is made there, and one inside another host
		// mount shows through it before it is mounted on.
		Create: true,
	})
	if err != nil {
		return nil, err
	}
	r := &remoteMount{srv: srv, path: a.Path, target: a.Target, source: a.Source, log: d.log, served: make(chan struct{})}
	go func() {
		srv.Wait()
		close(r.served)
		d.mu.Lock()
		stopping := d.st.State == StateStopping
		d.mu.Unlock()
		if !stopping {
			d.log.Warn("a host mount went away while running (unmounted from outside?)", zap.String("mountpoint", a.Target))
		}
	}()
	d.mu.Lock()
	if d.remotes == nil {
		d.remotes = map[string]*remoteMount{}
	}
	d.remotes[a.Path] = r
	d.mu.Unlock()
	return r, nil
}

// lockRoot takes the lock of root in runDir, so that one daemon at a time
// builds it. The lock file holds the holder's pid.
func lockRoot(runDir, root string) (func(), error) {
	sum := sha256.Sum256([]byte(root))
	p := filepath.Join(runDir, "root-"+hex.EncodeToString(sum[:8])+".lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("run: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := os.ReadFile(p)
		f.Close()
		holder := strings.TrimSpace(string(b))
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("run: %s is in use by another qtfs-client run (pid %s, lock %s)", root, holder, p)
		}
		return nil, fmt.Errorf("run: lock %s: %w", p, err)
	}
	f.Truncate(0)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return func() { f.Close() }, nil
}

// serveMetrics serves reg on addr until the returned stop is called.
func serveMetrics(addr string, reg *prometheus.Registry, log *zap.Logger) (func(), error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("run: metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics", zap.Error(err))
		}
	}()
	log.Info("metrics", zap.String("listen", l.Addr().String()))
	return func() { srv.Close() }, nil
}
