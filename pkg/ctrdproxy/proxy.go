package ctrdproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/qtfs/qtfs/pkg/fifo"
	"github.com/qtfs/qtfs/pkg/sockproxy"
)

// The calls the proxy acts on.
const (
	methodCreateTask      = "/containerd.services.tasks.v1.Tasks/Create"
	methodExec            = "/containerd.services.tasks.v1.Tasks/Exec"
	methodGetTask         = "/containerd.services.tasks.v1.Tasks/Get"
	methodDeleteTask      = "/containerd.services.tasks.v1.Tasks/Delete"
	methodDeleteProcess   = "/containerd.services.tasks.v1.Tasks/DeleteProcess"
	methodCreateContainer = "/containerd.services.containers.v1.Containers/Create"
	methodUpdateContainer = "/containerd.services.containers.v1.Containers/Update"
)

// maxMessage bounds one message either way (containerd's own limit is
// 16 MiB).
const maxMessage = 64 << 20

// Options configure a Proxy.
type Options struct {
	// Listen is the unix socket to serve, a path of this process's view
	// (the chroot's root joined with the path inside it). A stale socket
	// there is replaced.
	Listen string
	// Mode is the socket file's permission (0660 when zero).
	Mode os.FileMode
	// Dial connects to the host's containerd socket (a
	// sockproxy.Proxy's DialContext).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Fifos bridges the tasks' stdio FIFOs; its root is the chroot.
	Fifos *fifo.Bridger
	// Root is the chroot in which the callers' paths are resolved ("" is
	// "/").
	Root string
	// Logger receives the proxy's logs; nil logs nothing.
	Logger *zap.Logger
}

// Proxy serves the containerd API on a local socket, forwarding it to the
// host's containerd.
type Proxy struct {
	opts    Options
	log     *zap.Logger
	l       net.Listener
	g       *grpc.Server
	cc      *grpc.ClientConn
	rootFd  int
	ownNet  unix.Stat_t // the DPU's own network namespace
	served  chan struct{}
	closing sync.Once
	stop    chan struct{} // closed by Close: the tenders stop
	tenders sync.WaitGroup

	mu    sync.Mutex
	procs map[procKey]*procIO
}

// procKey names a task's process: the container and, for an exec, its id.
type procKey struct{ container, exec string }

// Which stdio stream a bridge carries.
const (
	stdin = iota
	stdout
	stderr
)

// procIO is the stdio of one process: its bridges and the host FIFOs they
// made.
type procIO struct {
	bridges [3]*fifo.Bridge
	made    []string
}

// Listen starts serving opts.Listen.
func Listen(opts Options) (*Proxy, error) {
	if opts.Dial == nil || opts.Fifos == nil {
		return nil, errors.New("ctrdproxy: Dial and Fifos are required")
	}
	if opts.Mode == 0 {
		opts.Mode = 0o660
	}
	root := opts.Root
	if root == "" {
		root = "/"
	}
	p := &Proxy{opts: opts, log: opts.Logger, procs: map[procKey]*procIO{}, served: make(chan struct{}), stop: make(chan struct{})}
	if p.log == nil {
		p.log = zap.NewNop()
	}
	p.log = p.log.With(zap.String("listen", opts.Listen))
	if err := unix.Stat("/proc/self/ns/net", &p.ownNet); err != nil {
		return nil, fmt.Errorf("ctrdproxy: own network namespace: %w", err)
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("ctrdproxy: root %s: %w", root, err)
	}
	p.rootFd = fd
	cc, err := grpc.NewClient("passthrough:///containerd",
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return opts.Dial(ctx, "unix", addr) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctrdproxy: %w", err)
	}
	p.cc = cc
	if err := os.MkdirAll(filepath.Dir(opts.Listen), 0o755); err != nil {
		p.closeClient()
		return nil, fmt.Errorf("ctrdproxy: listen %s: %w", opts.Listen, err)
	}
	if err := sockproxy.RemoveStale(opts.Listen); err != nil {
		p.closeClient()
		return nil, err
	}
	l, err := net.Listen("unix", opts.Listen)
	if err != nil {
		p.closeClient()
		return nil, fmt.Errorf("ctrdproxy: listen %s: %w", opts.Listen, err)
	}
	if err := os.Chmod(opts.Listen, opts.Mode); err != nil {
		l.Close()
		p.closeClient()
		return nil, fmt.Errorf("ctrdproxy: listen %s: %w", opts.Listen, err)
	}
	p.l = l
	p.g = grpc.NewServer(grpc.UnknownServiceHandler(p.handle), grpc.ForceServerCodec(rawCodec{}),
		grpc.MaxRecvMsgSize(maxMessage), grpc.MaxSendMsgSize(maxMessage))
	go func() {
		defer close(p.served)
		p.g.Serve(l)
	}()
	p.log.Info("ctrdproxy: serving the host's containerd API")
	return p, nil
}

func (p *Proxy) closeClient() {
	p.cc.Close()
	unix.Close(p.rootFd)
}

// Close stops serving, ends the calls in flight and every bridge, and
// removes the socket file.
func (p *Proxy) Close() error {
	p.closing.Do(func() {
		close(p.stop)
		p.g.Stop()
		<-p.served
		p.mu.Lock()
		procs := p.procs
		p.procs = map[procKey]*procIO{}
		p.mu.Unlock()
		for _, io := range procs {
			io.close()
		}
		p.tenders.Wait()
		p.closeClient()
	})
	return nil
}

// rawCodec moves messages as the bytes they are on the wire.
type rawCodec struct{}

type frame struct{ b []byte }

func (rawCodec) Marshal(v any) ([]byte, error) {
	f, ok := v.(*frame)
	if !ok {
		return nil, fmt.Errorf("ctrdproxy: cannot marshal %T", v)
	}
	return f.b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	f, ok := v.(*frame)
	if !ok {
		return fmt.Errorf("ctrdproxy: cannot unmarshal into %T", v)
	}
	f.b = append(f.b[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

// outgoing carries the caller's metadata (containerd's namespace header
// among it) and deadline to the host.
func outgoing(ctx context.Context) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range md {
		switch {
		case strings.HasPrefix(k, ":"), k == "content-type", k == "user-agent", k == "te", strings.HasPrefix(k, "grpc-"):
			continue
		}
		out[k] = v
	}
	return metadata.NewOutgoingContext(ctx, out)
}

// handle serves one call of any method.
func (p *Proxy) handle(_ any, ss grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "ctrdproxy: no method")
	}
	ctx := outgoing(ss.Context())
	switch method {
	case methodCreateTask:
		return p.unary(ctx, ss, method, p.createTask)
	case methodExec:
		return p.unary(ctx, ss, method, p.exec)
	case methodGetTask:
		return p.unary(ctx, ss, method, p.getTask)
	case methodDeleteTask, methodDeleteProcess:
		return p.unary(ctx, ss, method, p.deleteProcess)
	case methodCreateContainer, methodUpdateContainer:
		return p.unary(ctx, ss, method, p.carrySpec)
	}
	return p.forward(ctx, ss, method)
}

// forward carries a call of any shape, untouched.
func (p *Proxy) forward(ctx context.Context, ss grpc.ServerStream, method string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := p.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
	if err != nil {
		return err
	}
	// Caller to host, in its own goroutine; it ends when the caller
	// closes its side or the call ends.
	go func() {
		for {
			var f frame
			if err := ss.RecvMsg(&f); err != nil {
				if errors.Is(err, io.EOF) {
					cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(&f); err != nil {
				return // the reason comes with RecvMsg below
			}
		}
	}()
	first := true
	for {
		var f frame
		err := cs.RecvMsg(&f)
		if first {
			first = false
			if h, herr := cs.Header(); herr == nil {
				ss.SendHeader(h)
			}
		}
		if err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := ss.SendMsg(&f); err != nil {
			return err
		}
	}
}

// hook acts on a unary call: it may change the request, call the host
// (call), and change the answer.
type hook func(ctx context.Context, req []byte, call func([]byte) ([]byte, error)) ([]byte, error)

// unary serves a unary call through h.
func (p *Proxy) unary(ctx context.Context, ss grpc.ServerStream, method string, h hook) error {
	var req frame
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	var header, trailer metadata.MD
	call := func(b []byte) ([]byte, error) {
		var resp frame
		err := p.cc.Invoke(ctx, method, &frame{b}, &resp, grpc.Header(&header), grpc.Trailer(&trailer))
		return resp.b, err
	}
	resp, err := h(ctx, req.b, call)
	if header != nil {
		ss.SendHeader(header)
	}
	if trailer != nil {
		ss.SetTrailer(trailer)
	}
	if err != nil {
		return err
	}
	return ss.SendMsg(&frame{resp})
}

// ioFields are the field numbers of a request's stdio paths.
type ioFields [3]protowire.Number

// bridgeIO bridges the stdio FIFOs a request names and returns the
// request naming them by their resolved paths. A path that is not a FIFO
// of the DPU (empty, a URI, a file) is left as it is, for the host.
func (p *Proxy) bridgeIO(req []byte, fs ioFields, log *zap.Logger) ([]byte, *procIO, error) {
	pio := &procIO{}
	for stream, num := range fs {
		path := getString(req, num)
		br, resolved, err := p.startBridge(path, stream, log)
		if err != nil {
			p.end(pio)
			return nil, nil, status.Errorf(codes.FailedPrecondition, "qtfs: the stdio FIFO %s cannot cross to the host: %v", path, err)
		}
		if br == nil {
			continue
		}
		pio.bridges[stream] = br
		if br.Created {
			pio.made = append(pio.made, resolved)
		}
		if resolved != path {
			if req, err = setBytes(req, num, []byte(resolved)); err != nil {
				p.end(pio)
				return nil, nil, status.Errorf(codes.InvalidArgument, "ctrdproxy: %v", err)
			}
		}
	}
	return req, pio, nil
}

// startBridge bridges the FIFO path that a process has as its stream
// (stdin, stdout, stderr), and returns the bridge and the resolved path;
// no bridge for a path that is not a FIFO of the DPU (empty, a URI, a
// file), which is left for the host.
func (p *Proxy) startBridge(path string, stream int, log *zap.Logger) (*fifo.Bridge, string, error) {
	if path == "" || !filepath.IsAbs(path) {
		return nil, "", nil
	}
	resolved, err := p.opts.Fifos.Resolve(path)
	if err != nil {
		log.Debug("ctrdproxy: a stdio path that is not a FIFO of the DPU is left for the host", zap.String("path", path), zap.Error(err))
		return nil, "", nil
	}
	dir := fifo.ToDPU
	if stream == stdin {
		dir = fifo.FromDPU
	}
	br, err := p.opts.Fifos.Start(resolved, dir)
	return br, resolved, err
}

// end closes the bridges of pio and removes the host FIFOs they made.
func (p *Proxy) end(pio *procIO) {
	pio.close()
	if len(pio.made) > 0 {
		if err := p.opts.Fifos.Remove(context.Background(), pio.made); err != nil {
			p.log.Warn("ctrdproxy: remove the host's stdio FIFOs", zap.Strings("paths", pio.made), zap.Error(err))
		}
	}
}

func (pio *procIO) close() {
	for _, br := range pio.bridges {
		if br != nil {
			br.Close()
		}
	}
}

// keep records pio as the stdio of k, ending what k had before.
func (p *Proxy) keep(k procKey, pio *procIO) {
	p.mu.Lock()
	old := p.procs[k]
	p.procs[k] = pio
	p.mu.Unlock()
	if old != nil {
		p.end(old)
	}
}

func (p *Proxy) createTask(ctx context.Context, req []byte, call func([]byte) ([]byte, error)) ([]byte, error) {
	k := procKey{container: getString(req, createTaskContainerID)}
	return p.startProcess(k, req, ioFields{createTaskStdin, createTaskStdout, createTaskStderr}, call)
}

func (p *Proxy) exec(ctx context.Context, req []byte, call func([]byte) ([]byte, error)) ([]byte, error) {
	k := procKey{container: getString(req, execContainerID), exec: getString(req, execExecID)}
	return p.startProcess(k, req, ioFields{execStdin, execStdout, execStderr}, call)
}

// startProcess bridges a new process's stdio, then forwards its request.
func (p *Proxy) startProcess(k procKey, req []byte, fs ioFields, call func([]byte) ([]byte, error)) ([]byte, error) {
	log := p.log.With(zap.String("container", k.container), zap.String("exec", k.exec))
	req, pio, err := p.bridgeIO(req, fs, log)
	if err != nil {
		log.Warn("ctrdproxy: stdio", zap.Error(err))
		return nil, err
	}
	// Kept before the call, so that a Tasks.Get meanwhile finds the
	// bridges and makes none of its own.
	p.keep(k, pio)
	resp, err := call(req)
	if err != nil {
		p.mu.Lock()
		if p.procs[k] == pio {
			delete(p.procs, k)
		}
		p.mu.Unlock()
		p.end(pio)
		return nil, err
	}
	log.Debug("ctrdproxy: stdio bridged", zap.Int("fifos", len(pio.made)))
	for stream, br := range pio.bridges {
		if br != nil {
			p.tend(k, stream, br)
		}
	}
	return resp, nil
}

// tend makes the bridge br of k's stream again when it is cut (the server
// restarted, the link broke, dockerd's reader went away) rather than
// carried to EOF, as long as k is live and nobody else made it again
// (Tasks.Get), with a backoff; it gives up once the DPU's FIFO is gone.
func (p *Proxy) tend(k procKey, stream int, br *fifo.Bridge) {
	p.tenders.Add(1)
	go func() {
		defer p.tenders.Done()
		backoff := 50 * time.Millisecond
		for {
			select {
			case <-br.Done():
			case <-p.stop:
				return
			}
			if br.EOF() || !p.owns(k, stream, br) {
				return
			}
			select {
			case <-time.After(backoff):
			case <-p.stop:
				return
			}
			backoff = min(2*backoff, 2*time.Second)
			next, err := p.opts.Fifos.Start(br.Path, br.Dir)
			if err != nil {
				if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
					p.log.Debug("ctrdproxy: a cut stdio bridge is not made again", zap.String("path", br.Path), zap.Error(err))
					return
				}
				continue // the server is away: try again, br stays the one to replace
			}
			p.mu.Lock()
			pio := p.procs[k]
			if pio == nil || pio.bridges[stream] != br {
				p.mu.Unlock()
				next.Close()
				return
			}
			pio.bridges[stream] = next
			p.mu.Unlock()
			p.log.Info("ctrdproxy: a cut stdio bridge made again", zap.String("container", k.container), zap.String("exec", k.exec), zap.String("path", br.Path))
			br, backoff = next, 50*time.Millisecond
		}
	}()
}

// owns reports whether br is still k's bridge of stream.
func (p *Proxy) owns(k procKey, stream int, br *fifo.Bridge) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	pio := p.procs[k]
	return pio != nil && pio.bridges[stream] == br
}

// getTask answers Tasks.Get, and bridges again the stdio of a live
// process that has none (a restarted dockerd attaches to it).
func (p *Proxy) getTask(ctx context.Context, req []byte, call func([]byte) ([]byte, error)) ([]byte, error) {
	resp, err := call(req)
	if err != nil {
		return nil, err
	}
	proc := getBytes(resp, getRespProcess)
	if st := getVarint(proc, processStatus); st == statusStopped || st == statusUnknown {
		return resp, nil
	}
	k := procKey{container: getString(req, getContainerID), exec: getString(req, getExecID)}
	p.mu.Lock()
	pio := p.procs[k]
	need := pio == nil
	if pio != nil {
		for _, br := range pio.bridges {
			if br != nil && !serves(br) {
				need = true
			}
		}
	}
	p.mu.Unlock()
	if !need {
		return resp, nil
	}
	log := p.log.With(zap.String("container", k.container), zap.String("exec", k.exec))
	fresh := &procIO{}
	if pio != nil {
		fresh.made = pio.made
	}
	for stream, num := range [3]protowire.Number{processStdin, processStdout, processStderr} {
		if pio != nil && pio.bridges[stream] != nil && serves(pio.bridges[stream]) {
			fresh.bridges[stream] = pio.bridges[stream]
			continue
		}
		path := getString(proc, num)
		br, resolved, err := p.startBridge(path, stream, log)
		if err != nil {
			log.Warn("ctrdproxy: bridge the stdio of a live process again", zap.String("path", path), zap.Error(err))
			continue
		}
		if br == nil {
			continue
		}
		fresh.bridges[stream] = br
		log.Info("ctrdproxy: stdio of a live process bridged again", zap.String("path", resolved))
	}
	p.mu.Lock()
	p.procs[k] = fresh
	p.mu.Unlock()
	for stream, br := range fresh.bridges {
		if br != nil && (pio == nil || pio.bridges[stream] != br) {
			p.tend(k, stream, br)
		}
	}
	return resp, nil
}

// serves reports whether br needs no making again: it still runs, or it
// carried EOF (done for good); one that was cut (its DPU reader went away)
// is made again.
func serves(br *fifo.Bridge) bool {
	select {
	case <-br.Done():
		return br.EOF()
	default:
		return true
	}
}

// deleteProcess forwards Tasks.Delete or DeleteProcess, then ends the
// process's bridges (all of the container's for Delete).
func (p *Proxy) deleteProcess(ctx context.Context, req []byte, call func([]byte) ([]byte, error)) ([]byte, error) {
	resp, err := call(req)
	if err != nil && status.Code(err) != codes.NotFound {
		return nil, err
	}
	container, exec := getString(req, getContainerID), getString(req, getExecID)
	var ended []*procIO
	p.mu.Lock()
	for k, pio := range p.procs {
		if k.container == container && (exec == "" || k.exec == exec) {
			ended = append(ended, pio)
			delete(p.procs, k)
		}
	}
	p.mu.Unlock()
	for _, pio := range ended {
		p.end(pio)
	}
	return resp, err
}

// carrySpec rewrites the OCI spec of Containers.Create and Update for
// the host (see rewriteSpec).
func (p *Proxy) carrySpec(ctx context.Context, req []byte, call func([]byte) ([]byte, error)) ([]byte, error) {
	ctr := getBytes(req, containerReqMsg)
	spec := getBytes(ctr, containerSpec)
	value := getBytes(spec, anyValue)
	if len(value) == 0 {
		return call(req)
	}
	id := getString(ctr, containerID)
	out, edit, err := rewriteSpec(value, p.isDPUNetns)
	if err != nil {
		p.log.Warn("ctrdproxy: an OCI spec that does not parse is forwarded as it is", zap.String("container", id), zap.Error(err))
		return call(req)
	}
	if edit.changed() {
		if spec, err = setBytes(spec, anyValue, out); err == nil {
			if ctr, err = setBytes(ctr, containerSpec, spec); err == nil {
				req, err = setBytes(req, containerReqMsg, ctr)
			}
		}
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "ctrdproxy: %v", err)
		}
		p.log.Info("ctrdproxy: the OCI spec carried to the host", zap.String("container", id),
			zap.Strings("dropped_hooks", edit.droppedHooks), zap.String("host_network_for", edit.hostNetwork))
	}
	for _, src := range edit.bindSources {
		if !p.onHost(src) {
			p.log.Warn("ctrdproxy: a bind mount's source is a path of the DPU, not of the host: runc on the host mounts the host's path of that name, which must exist there (mount the host's directory in the chroot, client.yaml mounts:, so that dockerd makes and checks it on the host)",
				zap.String("container", id), zap.String("source", src))
		}
	}
	if edit.bridgeNet {
		p.log.Warn("ctrdproxy: the container's network is dockerd's bridge, which is the DPU's: on the host it gets a network namespace with loopback only (use --network host or none)",
			zap.String("container", id))
	}
	return call(req)
}

// fuseSuperMagic is statfs's f_type of a FUSE filesystem: the chroot's
// qtfs mounts, whose paths are the host's.
const fuseSuperMagic = 0x65735546

// onHost reports whether path, in the chroot, lies on a qtfs mount, which
// is where the host's file of that path is.
func (p *Proxy) onHost(path string) bool {
	fd, err := unix.Openat2(p.rootFd, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && st.Type == fuseSuperMagic
}

// isDPUNetns reports whether path, in the chroot, is a bind of the DPU's
// own network namespace (dockerd's netns/default for --network host).
func (p *Proxy) isDPUNetns(path string) bool {
	fd, err := unix.Openat2(p.rootFd, path, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return false
	}
	return st.Dev == p.ownNet.Dev && st.Ino == p.ownNet.Ino
}
