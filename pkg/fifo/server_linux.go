package fifo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Export is a host directory beneath which FIFOs may be bridged.
type Export struct {
	Path     string
	ReadOnly bool
}

// ServerOptions configure a Server.
type ServerOptions struct {
	Exports []Export
	// Logger receives a line per bridge; nil logs nothing.
	Logger *zap.Logger
	// Registerer receives the qtfs_fifo_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server implements the qtfs.v1 Fifo service (the host side).
type Server struct {
	qtfsv1.UnimplementedFifoServer
	exports []Export
	log     *zap.Logger
	m       *metrics
	active  atomic.Int64
}

// NewServer returns a Server for opts.
func NewServer(opts ServerOptions) (*Server, error) {
	s := &Server{log: opts.Logger}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	for _, e := range opts.Exports {
		if !path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path {
			return nil, fmt.Errorf("fifo: export %q: want a clean absolute path", e.Path)
		}
		s.exports = append(s.exports, e)
	}
	m, err := newMetrics("qtfs_fifo", "on the host", opts.Registerer, func() float64 { return float64(s.active.Load()) })
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// Register adds the Fifo service to g.
func (s *Server) Register(g grpc.ServiceRegistrar) { qtfsv1.RegisterFifoServer(g, s) }

// bridgeError is a refusal or failure the client hears as a SocketError.
type bridgeError struct {
	errno syscall.Errno
	msg   string
}

func (e *bridgeError) Error() string { return e.msg }

func refuse(errno syscall.Errno, format string, a ...any) *bridgeError {
	return &bridgeError{errno, fmt.Sprintf(format, a...)}
}

// locate finds the export p lies beneath and returns it with the path's
// components beneath it.
func (s *Server) locate(p []byte) (Export, []string, *bridgeError) {
	if len(p) == 0 || len(p) > 4096 || p[0] != '/' {
		return Export{}, nil, refuse(syscall.EINVAL, "fifo path %q: want an absolute path", p)
	}
	ps := string(p)
	var best Export
	found := false
	for _, e := range s.exports {
		if (e.Path == "/" || strings.HasPrefix(ps, e.Path+"/")) && len(e.Path) >= len(best.Path) {
			best, found = e, true
		}
	}
	if !found {
		return Export{}, nil, refuse(syscall.EACCES, "fifo path %s is not beneath an export", ps)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(ps, best.Path), "/")
	if e := qfs.ValidPath([]byte(rel)); e != 0 || rel == "" {
		return Export{}, nil, refuse(syscall.EINVAL, "fifo path %q: not a clean path", ps)
	}
	return best, strings.Split(rel, "/"), nil
}

// openDir opens the directory of the components dirs beneath root with
// hostfs's walk (never through a symlink), making the missing ones when
// create is set, as Mount's create does. It returns an O_PATH descriptor
// and the directories it made.
func openDir(root string, dirs []string, create bool) (int, []string, error) {
	rfd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil || len(dirs) == 0 {
		return rfd, nil, err
	}
	defer unix.Close(rfd)
	rel := path.Join(dirs...)
	var made []string
	if create {
		rels, err := hostfs.MkdirBeneath(rfd, rel)
		for _, m := range rels {
			made = append(made, path.Join(root, m))
		}
		if err != nil {
			return -1, made, err
		}
	}
	fd, err := hostfs.OpenDirBeneath(rfd, rel)
	return fd, made, err
}

// Bridge implements Fifo.Bridge.
func (s *Server) Bridge(stream qtfsv1.Fifo_BridgeServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return s.fail(stream, "", refuse(syscall.EINVAL, "the first message of a bridge must be open"))
	}
	dir := directionName(open.GetDirection())
	if dir == "" {
		return s.fail(stream, "", refuse(syscall.EINVAL, "fifo %s: no direction", open.GetPath()))
	}
	s.active.Add(1)
	defer s.active.Add(-1)
	log := s.log.With(zap.ByteString("path", open.GetPath()), zap.String("direction", dir))
	exp, comps, berr := s.locate(open.GetPath())
	if berr != nil {
		return s.fail(stream, dir, berr)
	}
	pfd, created, berr := s.makeFifo(exp, comps, open.GetMode())
	if berr != nil {
		log.Warn("fifo: bridge refused", zap.String("reason", berr.msg))
		return s.fail(stream, dir, berr)
	}
	defer unix.Close(pfd)
	if err := stream.Send(&qtfsv1.FifoResponse{Msg: &qtfsv1.FifoResponse_Ready{Ready: &qtfsv1.FifoReady{Created: created}}}); err != nil {
		return err
	}
	log.Debug("fifo: bridge ready", zap.Bool("created", created))
	ctx := stream.Context()
	f, err := openWait(ctx, pfd, dir == dirFromDPU)
	if err != nil {
		if ctx.Err() != nil {
			s.m.bridges.WithLabelValues(dir, resultCut).Inc()
			log.Debug("fifo: the DPU left before a host peer opened the FIFO")
			return nil
		}
		return s.fail(stream, dir, refuse(errnoOf(err), "fifo %s: open on the host: %v", open.GetPath(), err))
	}
	defer f.Close()
	// Closing f ends a Read or Write that waits on it.
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	if dir == dirToDPU {
		return s.toDPU(stream, f, log)
	}
	return s.fromDPU(stream, f, log)
}

// makeFifo opens the directory of the FIFO at comps beneath exp (making
// it when missing), makes the FIFO when it is missing, and returns an
// O_PATH descriptor of it.
func (s *Server) makeFifo(exp Export, comps []string, mode uint32) (int, bool, *bridgeError) {
	p := path.Join(exp.Path, path.Join(comps...))
	dfd, made, err := openDir(exp.Path, comps[:len(comps)-1], !exp.ReadOnly)
	if len(made) > 0 {
		s.log.Info("fifo: made host directories for a FIFO", zap.Strings("dirs", made))
	}
	if err != nil {
		return -1, false, refuse(errnoOf(err), "fifo %s: its directory on the host: %v", p, err)
	}
	defer unix.Close(dfd)
	name := comps[len(comps)-1]
	if mode == 0 {
		mode = 0o700
	}
	created := false
	if !exp.ReadOnly {
		err := unix.Mknodat(dfd, name, unix.S_IFIFO|(mode&0o777), 0)
		switch {
		case err == nil:
			created = true
		case !errors.Is(err, unix.EEXIST):
			return -1, false, refuse(errnoOf(err), "fifo %s: mkfifo on the host: %v", p, err)
		}
	}
	pfd, err := unix.Openat(dfd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, false, refuse(errnoOf(err), "fifo %s: on the host: %v", p, err)
	}
	if err := checkFifo(pfd); err != nil {
		unix.Close(pfd)
		return -1, false, refuse(syscall.EINVAL, "fifo %s: on the host: %v", p, err)
	}
	return pfd, created, nil
}

// toDPU reads the host FIFO until its last writer closes.
func (s *Server) toDPU(stream qtfsv1.Fifo_BridgeServer, f io.Reader, log *zap.Logger) error {
	buf := make([]byte, ChunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if serr := stream.Send(&qtfsv1.FifoResponse{Msg: &qtfsv1.FifoResponse_Data{Data: buf[:n]}}); serr != nil {
				s.m.bridges.WithLabelValues(dirToDPU, resultCut).Inc()
				return serr
			}
			s.m.moved(dirToDPU, n)
		}
		if errors.Is(err, io.EOF) {
			s.m.bridges.WithLabelValues(dirToDPU, resultOK).Inc()
			log.Debug("fifo: host writers closed; EOF to the DPU")
			return stream.Send(&qtfsv1.FifoResponse{Msg: &qtfsv1.FifoResponse_Eof{Eof: true}})
		}
		if err != nil {
			if stream.Context().Err() != nil {
				s.m.bridges.WithLabelValues(dirToDPU, resultCut).Inc()
				return nil
			}
			return s.fail(stream, dirToDPU, refuse(errnoOf(err), "fifo: read on the host: %v", err))
		}
	}
}

// fromDPU writes what the DPU sends into the host FIFO, until close_write.
func (s *Server) fromDPU(stream qtfsv1.Fifo_BridgeServer, f io.WriteCloser, log *zap.Logger) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			s.m.bridges.WithLabelValues(dirFromDPU, resultCut).Inc()
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		switch m := req.GetMsg().(type) {
		case *qtfsv1.FifoRequest_Data:
			if _, err := f.Write(m.Data); err != nil {
				return s.fail(stream, dirFromDPU, refuse(errnoOf(err), "fifo: write on the host: %v", err))
			}
			s.m.moved(dirFromDPU, len(m.Data))
		case *qtfsv1.FifoRequest_CloseWrite:
			s.m.bridges.WithLabelValues(dirFromDPU, resultOK).Inc()
			log.Debug("fifo: the DPU closed; EOF to the host")
			return f.Close()
		default:
			return s.fail(stream, dirFromDPU, refuse(syscall.EINVAL, "fifo: unexpected message"))
		}
	}
}

// fail sends err as the last message of the stream and counts it.
func (s *Server) fail(stream qtfsv1.Fifo_BridgeServer, dir string, err *bridgeError) error {
	if dir != "" {
		result := resultFailed
		if err.errno == syscall.EACCES || err.errno == syscall.EINVAL {
			result = resultRefused
		}
		s.m.bridges.WithLabelValues(dir, result).Inc()
	}
	return stream.Send(&qtfsv1.FifoResponse{Msg: &qtfsv1.FifoResponse_Error{Error: &qtfsv1.SocketError{Errno: int32(err.errno), Message: err.msg}}})
}

// Remove implements Fifo.Remove.
func (s *Server) Remove(_ context.Context, req *qtfsv1.FifoRemoveRequest) (*qtfsv1.ErrnoResponse, error) {
	if len(req.GetPaths()) > 64 {
		return &qtfsv1.ErrnoResponse{Errno: int32(syscall.EINVAL)}, nil
	}
	var first syscall.Errno
	for _, p := range req.GetPaths() {
		if e := s.remove(p); e != 0 && first == 0 {
			first = e
		}
	}
	return &qtfsv1.ErrnoResponse{Errno: int32(first)}, nil
}

func (s *Server) remove(p []byte) syscall.Errno {
	exp, comps, berr := s.locate(p)
	if berr != nil {
		s.log.Warn("fifo: remove refused", zap.ByteString("path", p), zap.String("reason", berr.msg))
		return berr.errno
	}
	if exp.ReadOnly {
		return syscall.EROFS
	}
	dfd, _, err := openDir(exp.Path, comps[:len(comps)-1], false)
	if errors.Is(err, unix.ENOENT) {
		return 0
	}
	if err != nil {
		return errnoOf(err)
	}
	defer unix.Close(dfd)
	name := comps[len(comps)-1]
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0
		}
		return errnoOf(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		s.log.Warn("fifo: remove refused: not a FIFO", zap.ByteString("path", p))
		return syscall.EINVAL
	}
	if err := unix.Unlinkat(dfd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return errnoOf(err)
	}
	// Its directory goes too once empty, never the export itself.
	if len(comps) > 1 {
		parent, _, err := openDir(exp.Path, comps[:len(comps)-2], false)
		if err == nil {
			unix.Unlinkat(parent, comps[len(comps)-2], unix.AT_REMOVEDIR)
			unix.Close(parent)
		}
	}
	return 0
}

// Directions, the values of the direction label.
const (
	dirToDPU   = "to_dpu"
	dirFromDPU = "from_dpu"
)

func directionName(d qtfsv1.FifoDirection) string {
	switch d {
	case qtfsv1.FifoDirection_FIFO_DIRECTION_TO_DPU:
		return dirToDPU
	case qtfsv1.FifoDirection_FIFO_DIRECTION_FROM_DPU:
		return dirFromDPU
	}
	return ""
}

// errnoOf is err's errno, EIO when it has none.
func errnoOf(err error) syscall.Errno {
	if e, ok := qfs.ToErrno(err); ok {
		return e
	}
	return syscall.EIO
}
