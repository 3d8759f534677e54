package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Peer names, in the order they run in each round.
const (
	PeerLocal    = "local"
	PeerLoopback = "gofuse-loopback"
	PeerNoPT     = "gofuse-loopback-nopt"
	PeerSSHFS    = "sshfs"
	PeerQtfsTLS  = "qtfs-tcp-tls"
	PeerQtfsUnix = "qtfs-unix"
)

// AllPeers is every peer, in run order.
var AllPeers = []string{PeerLocal, PeerLoopback, PeerNoPT, PeerSSHFS, PeerQtfsTLS, PeerQtfsUnix}

// peer is one way of reaching the backing directory (and the host's /proc).
type peer struct {
	name string
	data string // the backing directory as this peer shows it
	proc string // the host's /proc as this peer shows it; "" when it has none
	// procNote says why proc is "" or how it was mounted.
	procNote string
	// The processes behind the data mount and the /proc mount. nil: none
	// (the local peer has no daemon).
	dataClient, dataServer group
	procClient, procServer group
	// daemons are checked before each workload: a dead one fails the
	// workloads that need it instead of hanging them.
	daemons []*daemon
	// rpcs counts the FileSystem RPCs of the peer's qtfs-server (the data
	// and /proc mounts share it); nil for the other peers.
	rpcs rpcCounter
	// fuse is false for the local peer only. Its random reads run from
	// the page cache (the ceiling); the FUSE peers drop their own page cache
	// of the file first and so reach the host's, which is warm.
	fuse bool
}

// alive returns an error naming the first daemon of the peer that exited.
func (p *peer) alive() error {
	for _, d := range p.daemons {
		if d.exited() {
			return fmt.Errorf("bench: %s: %s exited: %v: %s", p.name, d.name, d.waitErr, d.logTail())
		}
	}
	return nil
}

// mountDir is the mount point of a peer's mount named suffix.
func (e *env) mountDir(name string) (string, error) {
	dir := filepath.Join(e.cfg.WorkDir, "mnt", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("bench: mount point: %w", err)
	}
	return dir, nil
}

// startPeer starts the named peer's servers and mounts.
func (e *env) startPeer(ctx context.Context, name string) (*peer, error) {
	switch name {
	case PeerLocal:
		return &peer{name: name, data: e.data, proc: "/proc", procNote: "the local /proc"}, nil
	case PeerLoopback:
		return e.startLoopback(ctx, name, e.cfg.Loopback, "-q", "-directmount")
	case PeerNoPT:
		return e.startLoopback(ctx, name, e.cfg.LoopbackNoPT)
	case PeerSSHFS:
		return e.startSSHFS(ctx)
	case PeerQtfsTLS:
		return e.startQtfs(ctx, name, true)
	case PeerQtfsUnix:
		return e.startQtfs(ctx, name, false)
	}
	return nil, fmt.Errorf("bench: unknown peer %q (want one of %s)", name, strings.Join(AllPeers, ", "))
}

// loopbackMount starts a go-fuse loopback binary (with its flags) serving
// src on a new mount point named mntName, and registers its teardown.
func (e *env) loopbackMount(ctx context.Context, mntName, src, bin string, flags ...string) (*daemon, string, error) {
	mnt, err := e.mountDir(mntName)
	if err != nil {
		return nil, "", err
	}
	argv := append(append([]string{bin}, flags...), mnt, src)
	d, err := startDaemon(e.log, e.logDir, mntName, argv...)
	if err != nil {
		return nil, "", err
	}
	e.onClose(func() {
		d.stop(e.log, nil, 10*time.Second)
		e.detach(mnt)
	})
	if err := d.waitMounted(ctx, mnt, 15*time.Second); err != nil {
		return nil, "", err
	}
	return d, mnt, nil
}

func (e *env) startLoopback(ctx context.Context, name, bin string, flags ...string) (*peer, error) {
	d, mnt, err := e.loopbackMount(ctx, name, e.data, bin, flags...)
	if err != nil {
		return nil, err
	}
	p := &peer{name: name, data: mnt, fuse: true, dataClient: treeGroup(d.pid()), daemons: []*daemon{d}}
	pd, pmnt, err := e.loopbackMount(ctx, name+"-proc", "/proc", bin, flags...)
	if err != nil {
		p.procNote = "no /proc mount: " + err.Error()
		return p, nil
	}
	p.proc, p.procClient, p.procNote = pmnt, treeGroup(pd.pid()), "go-fuse loopback of /proc"
	p.daemons = append(p.daemons, pd)
	return p, nil
}

// sshKeys makes the sshd host key and the client key, once.
func (e *env) sshKeys(ctx context.Context) (string, error) {
	dir := filepath.Join(e.cfg.WorkDir, "ssh")
	if _, err := os.Stat(filepath.Join(dir, "authorized_keys")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("bench: ssh dir: %w", err)
	}
	for _, k := range []string{"host_key", "id"} {
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qtfs-bench", "-f", filepath.Join(dir, k)).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("bench: ssh-keygen %s: %w: %s", k, err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "id.pub"))
	if err != nil {
		return "", fmt.Errorf("bench: ssh key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return "", fmt.Errorf("bench: authorized_keys: %w", err)
	}
	// sshd refuses to start without its privilege separation directory,
	// which the distribution's service unit normally creates.
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			return "", fmt.Errorf("bench: /run/sshd: %w", err)
		}
		e.onClose(func() { _ = os.Remove("/run/sshd") })
	}
	return dir, nil
}

// sshfsMount starts an sshd of its own on a free loopback port and sshfs
// mounting remote from it on mount point mntName. One sshd per mount keeps
// the server-side processes of each mount apart.
func (e *env) sshfsMount(ctx context.Context, mntName, remote string, extra ...string) (client, server group, ds []*daemon, mnt string, err error) {
	keys, err := e.sshKeys(ctx)
	if err != nil {
		return nil, nil, nil, "", err
	}
	port, err := freePort()
	if err != nil {
		return nil, nil, nil, "", err
	}
	conf := filepath.Join(keys, mntName+"-sshd_config")
	text := fmt.Sprintf(`# sshd of the qtfs benchmark: loopback only, key auth only.
Port %d
ListenAddress 127.0.0.1
HostKey %s
PidFile none
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel ERROR
`, port, filepath.Join(keys, "host_key"), filepath.Join(keys, "authorized_keys"))
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		return nil, nil, nil, "", fmt.Errorf("bench: sshd config: %w", err)
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
	}
	sd, err := startDaemon(e.log, e.logDir, mntName+"-sshd", sshd, "-D", "-e", "-f", conf)
	if err != nil {
		return nil, nil, nil, "", err
	}
	e.onClose(func() { sd.stop(e.log, nil, 5*time.Second) })
	if err := waitTCP(ctx, port, sd, 10*time.Second); err != nil {
		return nil, nil, nil, "", err
	}
	mnt, err = e.mountDir(mntName)
	if err != nil {
		return nil, nil, nil, "", err
	}
	opts := append([]string{
		"IdentityFile=" + filepath.Join(keys, "id"),
		"StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "BatchMode=yes", "LogLevel=ERROR",
		"port=" + strconv.Itoa(port),
	}, extra...)
	fd, err := startDaemon(e.log, e.logDir, mntName, "sshfs", "-f", "-o", strings.Join(opts, ","), "root@127.0.0.1:"+remote, mnt)
	if err != nil {
		return nil, nil, nil, "", err
	}
	// sshfs double-forks its ssh, which the runner adopts as a subreaper.
	portArg := "-oport=" + strconv.Itoa(port)
	isOurSSH := func(argv []string) bool {
		return len(argv) > 0 && filepath.Base(argv[0]) == "ssh" && slices.Contains(argv, portArg)
	}
	known := map[int]bool{fd.pid(): true, sd.pid(): true}
	e.onClose(func() {
		fd.stop(e.log, func() error { return unix.Unmount(mnt, 0) }, 10*time.Second)
		e.detach(mnt)
		for _, o := range adoptedOrphans(isOurSSH, known) {
			reapOrphan(o, 3*time.Second)
		}
	})
	if err := fd.waitMounted(ctx, mnt, 20*time.Second); err != nil {
		return nil, nil, nil, "", err
	}
	client = func() []int {
		pids := descendants(processTable(), fd.pid())
		for _, o := range adoptedOrphans(isOurSSH, known) {
			pids = append(pids, o.pid)
		}
		return pids
	}
	return client, treeGroup(sd.pid()), []*daemon{sd, fd}, mnt, nil
}

// waitTCP waits until something accepts connections on 127.0.0.1:port.
func waitTCP(ctx context.Context, port int, d *daemon, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	for {
		var dialer net.Dialer
		c, err := dialer.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if d.exited() {
			return fmt.Errorf("bench: %s exited: %v: %s", d.name, d.waitErr, d.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s: nothing listens on %s after %v: %s", d.name, addr, timeout, d.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (e *env) startSSHFS(ctx context.Context) (*peer, error) {
	c, s, ds, mnt, err := e.sshfsMount(ctx, PeerSSHFS, e.data)
	if err != nil {
		return nil, err
	}
	p := &peer{name: PeerSSHFS, data: mnt, fuse: true, dataClient: c, dataServer: s, daemons: ds}
	// /proc files report size 0: without direct_io sshfs reads nothing.
	pc, ps, pds, pmnt, err := e.sshfsMount(ctx, PeerSSHFS+"-proc", "/proc", "direct_io")
	if err != nil {
		p.procNote = "no /proc mount: " + err.Error()
		return p, nil
	}
	p.proc, p.procClient, p.procServer, p.procNote = pmnt, pc, ps, "sshfs -o direct_io of /proc"
	p.daemons = append(p.daemons, pds...)
	return p, nil
}

// qtfsPKI makes the CA, server and client certificates, once.
func (e *env) qtfsPKI(ctx context.Context) (string, error) {
	dir := filepath.Join(e.cfg.WorkDir, "pki")
	if _, err := os.Stat(filepath.Join(dir, "client.pem")); err == nil {
		return dir, nil
	}
	out, err := exec.CommandContext(ctx, e.cfg.QtfsServer, "gen-certs", "--out", dir, "--server-name", "127.0.0.1", "--client-name", "bench").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("bench: qtfs-server gen-certs: %w: %s", err, out)
	}
	return dir, nil
}

// startQtfs starts a qtfs-server of its own for the peer (TCP loopback with
// mutual TLS, or a unix socket), exporting the backing directory and /proc,
// and a qtfs-client mount -f of each.
func (e *env) startQtfs(ctx context.Context, name string, tls bool) (*peer, error) {
	pki, err := e.qtfsPKI(ctx)
	if err != nil {
		return nil, err
	}
	var uri string
	srvArgs := []string{e.cfg.QtfsServer}
	cliTLS := []string{}
	if tls {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		uri = fmt.Sprintf("tcp://127.0.0.1:%d", port)
		srvArgs = append(srvArgs, "--tls-cert", filepath.Join(pki, "server.pem"), "--tls-key", filepath.Join(pki, "server-key.pem"),
			"--tls-client-ca", filepath.Join(pki, "ca.pem"))
		cliTLS = []string{"--tls-cert", filepath.Join(pki, "client.pem"), "--tls-key", filepath.Join(pki, "client-key.pem"),
			"--tls-ca", filepath.Join(pki, "ca.pem")}
	} else {
		uri = "unix://" + filepath.Join(e.runDir, name+".sock")
	}
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", metricsPort)
	srvArgs = append(srvArgs, "--config", "/dev/null", "--listen", uri, "--export", e.data, "--export", "/proc",
		"--metrics-listen", metrics, "--log-level", "warn", "--log-format", "console")
	sd, err := startDaemon(e.log, e.logDir, name+"-server", srvArgs...)
	if err != nil {
		return nil, err
	}
	e.onClose(func() { sd.stop(e.log, nil, 10*time.Second) })
	// At log level warn the ready line is not printed: wait for the
	// listener instead.
	if tls {
		port, _ := strconv.Atoi(uri[strings.LastIndexByte(uri, ':')+1:])
		if err := waitTCP(ctx, port, sd, 15*time.Second); err != nil {
			return nil, err
		}
	} else if err := waitPath(ctx, strings.TrimPrefix(uri, "unix://"), sd, 15*time.Second); err != nil {
		return nil, err
	}
	p := &peer{name: name, fuse: true, dataServer: treeGroup(sd.pid()), procServer: treeGroup(sd.pid()), daemons: []*daemon{sd},
		rpcs: serverRPCs(metrics)}
	mount := func(mntName, remote string) (*daemon, string, error) {
		mnt, err := e.mountDir(mntName)
		if err != nil {
			return nil, "", err
		}
		args := append([]string{e.cfg.QtfsClient, "mount", "-f", "--config", "/dev/null", "--server", uri}, cliTLS...)
		args = append(args, "--runtime-dir", e.runDir, "--log-level", "warn", "--log-format", "console", "--remote", remote, mnt)
		cd, err := startDaemon(e.log, e.logDir, mntName, args...)
		if err != nil {
			return nil, "", err
		}
		e.onClose(func() {
			cd.stop(e.log, func() error {
				out, err := exec.Command(e.cfg.QtfsClient, "umount", "--config", "/dev/null", "--runtime-dir", e.runDir, mnt).CombinedOutput()
				if err != nil {
					return fmt.Errorf("qtfs-client umount %s: %w: %s", mnt, err, out)
				}
				return nil
			}, 10*time.Second)
			e.detach(mnt)
		})
		if err := cd.waitMounted(ctx, mnt, 20*time.Second); err != nil {
			return nil, "", err
		}
		return cd, mnt, nil
	}
	cd, mnt, err := mount(name, e.data)
	if err != nil {
		return nil, err
	}
	p.data, p.dataClient = mnt, treeGroup(cd.pid())
	p.daemons = append(p.daemons, cd)
	pd, pmnt, err := mount(name+"-proc", "/proc")
	if err != nil {
		p.procNote = "no /proc mount: " + err.Error()
		return p, nil
	}
	p.proc, p.procClient, p.procNote = pmnt, treeGroup(pd.pid()), "qtfs mount of the exported /proc (cache=none, chosen automatically)"
	p.daemons = append(p.daemons, pd)
	return p, nil
}

// waitPath waits until path exists (a unix socket being created).
func waitPath(ctx context.Context, path string, d *daemon, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if d.exited() {
			return fmt.Errorf("bench: %s exited: %v: %s", d.name, d.waitErr, d.logTail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s: no %s after %v: %s", d.name, path, timeout, d.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// detach lazily unmounts mnt if it is still mounted.
func (e *env) detach(mnt string) {
	if !mounted(mnt) {
		return
	}
	if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
		e.log.Warn("lazy unmount failed", zap.String("mountpoint", mnt), zap.Error(err))
		return
	}
	e.log.Warn("mount was still there after its daemon stopped: detached it", zap.String("mountpoint", mnt))
}
