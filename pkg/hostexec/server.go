package hostexec

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// DefaultMaxRunning bounds the processes running at once when
// Options.MaxRunning is 0.
const DefaultMaxRunning = 256

// Timing and sizes of a run.
const (
	startTimeout = 30 * time.Second      // wait for the first (start) request
	outputChunk  = 256 << 10             // largest stdout/stderr message
	pipeSize     = 1 << 20               // requested output pipe capacity
	stdinQueue   = 16                    // stdin chunks queued ahead of the process
	drainIdle    = 50 * time.Millisecond // after exit: stop after this long without output
	drainMax     = 2 * time.Second       // after exit: stop after this long in any case
	logArgs      = 64                    // argv entries logged
	logArgBytes  = 256                   // bytes logged per argv entry
	maxSignal    = 64                    // highest signal number accepted
)

// Options configure a Server.
type Options struct {
	// Allow lists the binaries that may run: absolute paths, or bare names
	// looked up in the server's PATH. Each is compared with symlinks
	// followed. Empty: nothing runs.
	Allow []string
	// EnvDeny lists environment variables dropped from the caller's
	// environment: names, or prefixes ending in "*". Nil means
	// DefaultEnvDeny; an empty non-nil slice drops nothing.
	EnvDeny []string
	// MaxRunning bounds the processes running at once (0: DefaultMaxRunning).
	MaxRunning int
	// Logger receives one line per run; nil logs nothing.
	Logger *zap.Logger
	// Registerer receives the qtfs_exec_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server implements the qtfs.v1 Exec service.
type Server struct {
	qtfsv1.UnimplementedExecServer
	allow   []string
	envDeny []string
	log     *zap.Logger
	m       *metrics
	slots   chan struct{}
}

// New checks opts and returns a Server. Allow-list entries that do not
// resolve now are kept (they may appear later) and logged at warn.
func New(opts Options) (*Server, error) {
	s := &Server{log: opts.Logger, envDeny: opts.EnvDeny}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if s.envDeny == nil {
		s.envDeny = DefaultEnvDeny
	}
	for _, a := range opts.Allow {
		if err := checkAllowEntry(a); err != nil {
			return nil, fmt.Errorf("hostexec: exec-allow: %w", err)
		}
		if filepath.IsAbs(a) {
			a = filepath.Clean(a)
		}
		s.allow = append(s.allow, a)
		if _, err := resolve(a); err != nil {
			s.log.Warn("hostexec: allow-list entry does not resolve now", zap.String("entry", a), zap.Error(err))
		}
	}
	n := opts.MaxRunning
	if n <= 0 {
		n = DefaultMaxRunning
	}
	s.slots = make(chan struct{}, n)
	m, err := newMetrics(opts.Registerer, func() float64 { return float64(len(s.slots)) })
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// Register adds the Exec service to g.
func (s *Server) Register(g grpc.ServiceRegistrar) { qtfsv1.RegisterExecServer(g, s) }

// Allow returns the allow-list as configured.
func (s *Server) Allow() []string { return append([]string(nil), s.allow...) }

// Running is the number of processes running now.
func (s *Server) Running() int { return len(s.slots) }

// Run serves one rexec stream: one process. See the package comment.
func (s *Server) Run(stream qtfsv1.Exec_RunServer) (err error) {
	t0 := time.Now()
	ctx := stream.Context()
	log := s.log.With(zap.String("peer", transport.PeerIdentity(ctx)))
	var r *run
	defer func() {
		if p := recover(); p != nil {
			log.Error("hostexec: handler panic", zap.Any("panic", p), zap.Stack("stack"))
			if r != nil {
				r.kill()
			}
			err = status.Error(codes.Internal, "hostexec: internal error")
		}
	}()

	req, err := recvFirst(stream)
	if err != nil {
		return err
	}
	st := req.GetStart()
	if st == nil {
		s.m.refusal("invalid")
		s.m.run(resultRefused, 0)
		log.Warn("hostexec: refused: first message is not start")
		return status.Error(codes.InvalidArgument, "hostexec: the first message of a run must be start")
	}
	log = log.With(zap.Strings("argv", logArgv(st)), zap.Bool("tty", st.GetTty()))
	if err := validateStart(st); err != nil {
		s.m.refusal("invalid")
		return s.finishEarly(stream, log, &runError{CodeCannotRun, resultRefused, "invalid request: " + err.Error()})
	}
	path, err := resolve(string(st.GetBinary()))
	if err != nil {
		return s.finishEarly(stream, log, err.(*runError))
	}
	log = log.With(zap.String("path", path))
	if !allowed(s.allow, path) {
		s.m.refusal("not_allowed")
		return s.finishEarly(stream, log, &runError{CodeCannotRun, resultRefused, s.notAllowed(string(st.GetBinary()), path)})
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.m.refusal("exhausted")
		s.m.run(resultExhausted, 0)
		log.Warn("hostexec: refused: too many processes running", zap.Int("max", cap(s.slots)))
		return status.Errorf(codes.ResourceExhausted, "hostexec: %d processes are running already (the server's limit)", cap(s.slots))
	}

	r, err = s.start(stream, st, path)
	if err != nil {
		var re *runError
		if !errors.As(err, &re) {
			re = &runError{CodeCannotRun, resultFailed, err.Error()}
		}
		return s.finishEarly(stream, log, re)
	}
	log = log.With(zap.Int("pid", r.pid))
	return s.serve(stream, r, log, t0)
}

// notAllowed is the refusal message: it names the allow-list so that the
// user knows what to change.
func (s *Server) notAllowed(bin, path string) string {
	what := bin
	if path != bin {
		what = fmt.Sprintf("%s (%s)", bin, path)
	}
	if len(s.allow) == 0 {
		return fmt.Sprintf("%s is not allowed on the host: the allow-list is empty (qtfs-server --exec-allow BINARY)", what)
	}
	return fmt.Sprintf("%s is not allowed on the host: the allow-list (qtfs-server --exec-allow) has %s", what, strings.Join(s.allow, ", "))
}

// finishEarly answers a run that never started.
func (s *Server) finishEarly(stream qtfsv1.Exec_RunServer, log *zap.Logger, re *runError) error {
	s.m.run(re.result, 0)
	log.Warn("hostexec: not run", zap.Int32("code", re.code), zap.String("result", re.result), zap.String("reason", re.msg))
	return stream.Send(&qtfsv1.ExecResponse{Msg: &qtfsv1.ExecResponse_Exit{Exit: &qtfsv1.ExecExit{Code: re.code, Error: re.msg}}})
}

// recvFirst waits for the first request, at most startTimeout. When it
// times out, returning ends the stream, which ends the Recv left behind.
func recvFirst(stream qtfsv1.Exec_RunServer) (*qtfsv1.ExecRequest, error) {
	type result struct {
		req *qtfsv1.ExecRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		req, err := stream.Recv()
		ch <- result{req, err}
	}()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.req, r.err
	case <-timer.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "hostexec: no start request within %v", startTimeout)
	}
}

// validateStart checks the bounds of a start request.
func validateStart(st *qtfsv1.ExecStart) error {
	noNUL := func(what string, b []byte) error {
		if bytes.IndexByte(b, 0) >= 0 {
			return fmt.Errorf("%s contains NUL", what)
		}
		return nil
	}
	bin := st.GetBinary()
	switch {
	case len(bin) == 0:
		return errors.New("no binary")
	case len(bin) > unix.PathMax:
		return errors.New("binary name too long")
	case len(st.GetCwd()) > unix.PathMax:
		return errors.New("cwd too long")
	}
	if err := noNUL("binary", bin); err != nil {
		return err
	}
	if err := noNUL("argv0", st.GetArgv0()); err != nil {
		return err
	}
	if err := noNUL("cwd", st.GetCwd()); err != nil {
		return err
	}
	for i, a := range st.GetArgs() {
		if err := noNUL(fmt.Sprintf("argument %d", i+1), a); err != nil {
			return err
		}
	}
	return nil
}

func logArgv(st *qtfsv1.ExecStart) []string {
	argv0 := st.GetArgv0()
	if len(argv0) == 0 {
		argv0 = st.GetBinary()
	}
	all := append([][]byte{argv0}, st.GetArgs()...)
	var out []string
	for i, a := range all {
		if i == logArgs {
			out = append(out, fmt.Sprintf("... (%d more)", len(all)-logArgs))
			break
		}
		if len(a) > logArgBytes {
			a = append(a[:logArgBytes:logArgBytes], "..."...)
		}
		out = append(out, string(a))
	}
	return out
}

// output is one of the process's output streams as the server reads it.
type output struct {
	f    *os.File
	kind string // "stdout" or "stderr"
	wrap func([]byte) *qtfsv1.ExecResponse
	// mu orders the read deadline's changes (see pump); own is true once
	// the pump set a drain deadline of its own.
	mu  sync.Mutex
	own bool
}

// run is one started process.
type run struct {
	s      *Server
	stream qtfsv1.Exec_RunServer
	cmd    *exec.Cmd
	pid    int
	tty    *os.File // the pty master, nil without -t
	stdin  *os.File // where stdin goes: a pipe's write end, or the master
	outs   []*output

	mu     sync.Mutex // guards exited; held while a signal is sent
	exited bool
	exitAt atomic.Int64 // UnixNano of the exit, 0 before

	stdinQ   chan []byte
	finished chan struct{} // closed when the run is over
	sendMu   sync.Mutex
}

// start starts the process. Errors are *runError or plain errors (126).
func (s *Server) start(stream qtfsv1.Exec_RunServer, st *qtfsv1.ExecStart, path string) (*run, error) {
	cwd := string(st.GetCwd())
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, &runError{CodeCannotRun, resultFailed, fmt.Sprintf("working directory %q is not absolute", cwd)}
	}
	if fi, err := os.Stat(cwd); err != nil || !fi.IsDir() {
		return nil, &runError{CodeCannotRun, resultFailed, fmt.Sprintf("working directory %s does not exist on the host "+
			"(the DPU's paths must mirror the host's; choose another with --cwd)", cwd)}
	}
	extra, err := openFiles(st.GetFiles())
	if err != nil {
		return nil, &runError{CodeCannotRun, resultFailed, "passing open files: " + err.Error()}
	}
	defer closeFiles(extra)

	argv0 := string(st.GetArgv0())
	if argv0 == "" {
		argv0 = string(st.GetBinary())
	}
	args := []string{argv0}
	for _, a := range st.GetArgs() {
		args = append(args, string(a))
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       args,
		Env:        filterEnv(st.GetEnv(), s.envDeny),
		Dir:        cwd,
		ExtraFiles: extra,
	}
	r := &run{s: s, stream: stream, cmd: cmd, stdinQ: make(chan []byte, stdinQueue), finished: make(chan struct{})}

	var childEnds, parentEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
	}()
	fail := func(err error) (*run, error) {
		for _, f := range parentEnds {
			f.Close()
		}
		return nil, err
	}
	if st.GetTty() {
		m, sl, err := openPTY()
		if err != nil {
			return fail(err)
		}
		parentEnds, childEnds = append(parentEnds, m), append(childEnds, sl)
		if err := setWindow(m, st.GetWindow()); err != nil {
			return fail(fmt.Errorf("pty window size: %w", err))
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = sl, sl, sl
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		r.tty, r.stdin = m, m
		r.outs = []*output{{f: m, kind: "stdout", wrap: wrapStdout}}
	} else {
		var p [6]*os.File // stdin r,w; stdout r,w; stderr r,w
		for i := 0; i < 6; i += 2 {
			if p[i], p[i+1], err = os.Pipe(); err != nil {
				for _, f := range p[:i] {
					f.Close()
				}
				return fail(fmt.Errorf("pipe: %w", err))
			}
		}
		childEnds = append(childEnds, p[0], p[3], p[5])
		parentEnds = append(parentEnds, p[1], p[2], p[4])
		growPipe(p[2])
		growPipe(p[4])
		cmd.Stdin, cmd.Stdout, cmd.Stderr = p[0], p[3], p[5]
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		r.stdin = p[1]
		r.outs = []*output{{f: p[2], kind: "stdout", wrap: wrapStdout}, {f: p[4], kind: "stderr", wrap: wrapStderr}}
	}
	defaultSignalsForChildren()
	if err := cmd.Start(); err != nil {
		code, result := int32(CodeCannotRun), resultFailed
		if errors.Is(err, fs.ErrNotExist) {
			code, result = CodeNotFound, resultNotFound
		}
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fail(&runError{code, result, fmt.Sprintf("%s: cannot run on the host: %v", path, err)})
	}
	r.pid = cmd.Process.Pid
	return r, nil
}

func wrapStdout(b []byte) *qtfsv1.ExecResponse {
	return &qtfsv1.ExecResponse{Msg: &qtfsv1.ExecResponse_Stdout{Stdout: b}}
}

func wrapStderr(b []byte) *qtfsv1.ExecResponse {
	return &qtfsv1.ExecResponse{Msg: &qtfsv1.ExecResponse_Stderr{Stderr: b}}
}

// growPipe asks for a larger pipe so that big outputs move in big chunks;
// failing (a lower pipe-max-size) only costs speed.
func growPipe(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
	}
}

// serve carries a started process to its end and answers exit.
func (s *Server) serve(stream qtfsv1.Exec_RunServer, r *run, log *zap.Logger, t0 time.Time) error {
	ctx := stream.Context()
	defer func() {
		close(r.finished)
		r.stdin.Close()
		for _, o := range r.outs {
			o.f.Close()
		}
	}()
	if err := r.send(&qtfsv1.ExecResponse{Msg: &qtfsv1.ExecResponse_Started{Started: &qtfsv1.ExecStarted{
		Pid: uint32(r.pid), Path: []byte(r.cmd.Path)}}}); err != nil {
		r.kill()
		r.wait()
		s.m.run(resultKilled, time.Since(t0))
		log.Info("hostexec: run killed: client gone before start", zap.Error(err))
		return err
	}
	go r.recvLoop()
	go r.stdinWriter()
	var pumps sync.WaitGroup
	for _, o := range r.outs {
		pumps.Add(1)
		go func() { defer pumps.Done(); r.pump(o) }()
	}
	waited := make(chan *os.ProcessState, 1)
	go func() { waited <- r.wait() }()

	var ps *os.ProcessState
	killed := false
	select {
	case ps = <-waited:
	case <-ctx.Done():
		killed = r.kill()
		ps = <-waited
	}
	pumps.Wait()
	d := time.Since(t0)

	code, sig := exitCode(ps)
	result := resultOK
	switch {
	case killed:
		result = resultKilled
	case sig != 0:
		result = resultSignaled
	case code != 0:
		result = resultNonZero
	}
	s.m.run(result, d)
	fields := []zap.Field{zap.Int32("exit", code), zap.Duration("duration", d), zap.String("result", result)}
	if sig != 0 {
		fields = append(fields, zap.String("signal", unix.SignalName(syscall.Signal(sig))))
	}
	if killed {
		log.Info("hostexec: run killed: the client went away first", fields...)
		return status.FromContextError(ctx.Err()).Err()
	}
	if err := r.send(&qtfsv1.ExecResponse{Msg: &qtfsv1.ExecResponse_Exit{Exit: &qtfsv1.ExecExit{Code: code, Signal: sig}}}); err != nil {
		log.Info("hostexec: run ended, exit not delivered", append(fields, zap.Error(err))...)
		return err
	}
	log.Info("hostexec: run", fields...)
	return nil
}

// exitCode is the shell's view of a wait status: the status, or
// 128+signal.
func exitCode(ps *os.ProcessState) (code int32, sig uint32) {
	if ps == nil {
		return 255, 0
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal()), uint32(ws.Signal())
	}
	return int32(ps.ExitCode()), 0
}

func (r *run) send(m *qtfsv1.ExecResponse) error {
	r.sendMu.Lock()
	defer r.sendMu.Unlock()
	return r.stream.Send(m)
}

// wait learns of the exit without reaping (so the pid stays ours while
// signals may still be sent), marks the run exited, starts the output
// drain, then reaps.
func (r *run) wait() *os.ProcessState {
	var info unix.Siginfo
	for {
		if err := unix.Waitid(unix.P_PID, r.pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != unix.EINTR {
			break
		}
	}
	r.mu.Lock()
	r.exited = true
	r.mu.Unlock()
	r.exitAt.Store(time.Now().UnixNano())
	for _, o := range r.outs {
		o.mu.Lock()
		if !o.own {
			// Wake a Read blocked since before the exit; the pump then
			// reads on with a drain deadline of its own.
			o.f.SetReadDeadline(time.Now())
		}
		o.mu.Unlock()
	}
	r.cmd.Wait()
	return r.cmd.ProcessState
}

// kill sends SIGKILL to the process group and the process, unless the
// process exited already; it reports whether it sent them.
func (r *run) kill() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.exited || r.pid == 0 {
		return false
	}
	unix.Kill(-r.pid, unix.SIGKILL)
	unix.Kill(r.pid, unix.SIGKILL)
	return true
}

// groupSignal reports whether sig is one a terminal sends to a whole
// foreground process group.
func groupSignal(sig unix.Signal) bool {
	switch sig {
	case unix.SIGINT, unix.SIGQUIT, unix.SIGHUP, unix.SIGWINCH:
		return true
	}
	return false
}

// signal delivers a signal from the client (see the package comment).
func (r *run) signal(sig unix.Signal) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.exited {
		return
	}
	target := r.pid
	if groupSignal(sig) {
		target = -r.pid
		if r.tty != nil {
			if pg := foregroundGroup(r.tty); pg > 0 {
				target = -pg
			}
		}
	}
	if err := unix.Kill(target, sig); err != nil && target < 0 {
		unix.Kill(r.pid, sig)
	}
}

// pump sends one output stream, one read in flight at a time. After the
// exit it reads with a drain deadline it sets itself before each Read; a
// deadline it did not set (the wake-up from wait) only makes it loop.
func (r *run) pump(o *output) {
	buf := make([]byte, outputChunk)
	for {
		o.mu.Lock()
		if ex := r.exitAt.Load(); ex != 0 {
			dl := time.Now().Add(drainIdle)
			if limit := time.Unix(0, ex).Add(drainMax); dl.After(limit) {
				dl = limit
			}
			o.f.SetReadDeadline(dl)
			o.own = true
		}
		o.mu.Unlock()
		n, err := o.f.Read(buf)
		if n > 0 {
			if serr := r.send(o.wrap(bytes.Clone(buf[:n]))); serr != nil {
				return
			}
			r.s.m.moved(o.kind, n)
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				o.mu.Lock()
				own := o.own
				o.mu.Unlock()
				if !own {
					continue
				}
			}
			// io.EOF, EIO from a pty master whose slave is closed, our own
			// drain deadline, or the file closed.
			return
		}
	}
}

// recvLoop reads the client's requests until the stream ends.
func (r *run) recvLoop() {
	eof := false
	closeStdin := func() {
		if !eof {
			eof = true
			close(r.stdinQ)
		}
	}
	for {
		req, err := r.stream.Recv()
		if err != nil {
			// io.EOF is the client's half-close: no more stdin. Any other
			// error ends the stream, and serve sees the context end.
			closeStdin()
			return
		}
		switch m := req.GetMsg().(type) {
		case *qtfsv1.ExecRequest_Stdin:
			if eof || len(m.Stdin) == 0 {
				continue
			}
			select {
			case r.stdinQ <- m.Stdin:
			case <-r.finished:
				return
			}
		case *qtfsv1.ExecRequest_StdinEof:
			closeStdin()
		case *qtfsv1.ExecRequest_Signal:
			if m.Signal > 0 && m.Signal <= maxSignal {
				r.signal(unix.Signal(m.Signal))
			}
		case *qtfsv1.ExecRequest_Resize:
			if r.tty != nil {
				setWindow(r.tty, m.Resize)
			}
		}
	}
}

// stdinWriter writes queued stdin to the process. A write error (the
// process closed its stdin or exited) discards the rest. EOF closes the
// pipe, or with a pty types the VEOF character (twice when a partial line
// is pending, once to flush it and once to end the input).
func (r *run) stdinWriter() {
	var last byte
	wrote, broken := false, false
	for {
		select {
		case b, ok := <-r.stdinQ:
			if !ok {
				if r.tty == nil {
					r.stdin.Close()
				} else if !broken {
					eof := []byte{eofChar(r.tty)}
					if wrote && last != '\n' {
						eof = append(eof, eof[0])
					}
					r.stdin.Write(eof)
				}
				return
			}
			if broken {
				continue
			}
			if _, err := r.stdin.Write(b); err != nil {
				broken = true
				continue
			}
			r.s.m.moved("stdin", len(b))
			wrote, last = true, b[len(b)-1]
		case <-r.finished:
			return
		}
	}
}
