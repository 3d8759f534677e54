package sockproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// ChunkSize is the most data one message carries, and the most each
// direction of a connection holds in memory.
const ChunkSize = 64 << 10

// DefaultMaxConns bounds the connections open at once (each side) when
// the options say 0.
const DefaultMaxConns = 1024

// Timing of the host side.
const (
	openTimeout = 30 * time.Second // wait for the first (open) request
	dialTimeout = 10 * time.Second // connect to the host socket
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Allow lists the host unix socket paths clients may connect to:
	// absolute paths. Each is compared with symlinks resolved.
	Allow []string
	// MaxConns bounds the connections open at once (0: DefaultMaxConns).
	MaxConns int
	// Logger receives a line per connection; nil logs nothing.
	Logger *zap.Logger
	// Registerer receives the qtfs_sockproxy_* metrics; nil registers none.
	Registerer prometheus.Registerer
}

// Server implements the qtfs.v1 SocketProxy service (the host side).
type Server struct {
	qtfsv1.UnimplementedSocketProxyServer
	allow []string
	log   *zap.Logger
	m     *metrics
	slots chan struct{}
}

// NewServer checks opts and returns a Server. Entries that do not exist
// yet are kept (the socket may appear later).
func NewServer(opts ServerOptions) (*Server, error) {
	s := &Server{log: opts.Logger}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	for _, a := range opts.Allow {
		if !filepath.IsAbs(a) || strings.IndexByte(a, 0) >= 0 {
			return nil, fmt.Errorf("sockproxy: socket-allow %q: want an absolute path", a)
		}
		a = filepath.Clean(a)
		s.allow = append(s.allow, a)
		if fi, err := os.Stat(a); err != nil {
			s.log.Warn("sockproxy: allow-list entry does not exist now", zap.String("path", a), zap.Error(err))
		} else if fi.Mode()&os.ModeSocket == 0 {
			s.log.Warn("sockproxy: allow-list entry is not a socket now", zap.String("path", a), zap.Stringer("mode", fi.Mode()))
		}
	}
	n := opts.MaxConns
	if n <= 0 {
		n = DefaultMaxConns
	}
	s.slots = make(chan struct{}, n)
	m, err := newMetrics("qtfs_sockproxy", "on the host", opts.Registerer, func() float64 { return float64(len(s.slots)) })
	if err != nil {
		return nil, err
	}
	s.m = m
	return s, nil
}

// Register adds the SocketProxy service to g.
func (s *Server) Register(g grpc.ServiceRegistrar) { qtfsv1.RegisterSocketProxyServer(g, s) }

// Allow returns the allow-list as configured.
func (s *Server) Allow() []string { return append([]string(nil), s.allow...) }

// Active is the number of connections open now.
func (s *Server) Active() int { return len(s.slots) }

// List implements SocketProxy.List.
func (s *Server) List(context.Context, *qtfsv1.SocketListRequest) (*qtfsv1.SocketListResponse, error) {
	resp := &qtfsv1.SocketListResponse{}
	for _, a := range s.allow {
		resp.Paths = append(resp.Paths, []byte(a))
	}
	return resp, nil
}

// resolvePath is p with symlinks resolved, or p itself when it does not
// resolve (the connect then reports why).
func resolvePath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// allowed finds the allow-list entry that path (resolved) stands for.
func (s *Server) allowed(resolved string) bool {
	for _, a := range s.allow {
		if a == resolved || resolvePath(a) == resolved {
			return true
		}
	}
	return false
}

func (s *Server) notAllowed(path string) string {
	if len(s.allow) == 0 {
		return fmt.Sprintf("%s is not allowed on the host: the allow-list is empty (qtfs-server --socket-allow PATH)", path)
	}
	return fmt.Sprintf("%s is not allowed on the host: the allow-list (qtfs-server --socket-allow) has %s", path, strings.Join(s.allow, ", "))
}

// validPath checks the bounds of a requested path.
func validPath(p []byte) error {
	switch {
	case len(p) == 0:
		return errors.New("empty path")
	case len(p) > qfs.PathMax:
		return errors.New("path too long")
	case bytes.IndexByte(p, 0) >= 0:
		return errors.New("path contains NUL")
	case p[0] != '/':
		return errors.New("path is not absolute")
	case filepath.Clean(string(p)) != string(p):
		return errors.New("path is not clean")
	}
	return nil
}

func sendError(stream qtfsv1.SocketProxy_ConnectServer, e syscall.Errno, msg string) error {
	return stream.Send(&qtfsv1.SocketResponse{Msg: &qtfsv1.SocketResponse_Error{Error: &qtfsv1.SocketError{Errno: int32(e), Message: msg}}})
}

// Connect implements SocketProxy.Connect: one proxied connection.
func (s *Server) Connect(stream qtfsv1.SocketProxy_ConnectServer) (err error) {
	ctx := stream.Context()
	log := s.log.With(zap.String("peer", transport.PeerIdentity(ctx)))
	defer func() {
		if p := recover(); p != nil {
			log.Error("sockproxy: handler panic", zap.Any("panic", p), zap.Stack("stack"))
			err = status.Error(codes.Internal, "sockproxy: internal error")
		}
	}()
	req, err := recvOpen(stream)
	if err != nil {
		return err
	}
	open := req.GetOpen()
	if open == nil {
		s.m.conns.WithLabelValues(resultRefused).Inc()
		log.Warn("sockproxy: refused: the first message is not open")
		return status.Error(codes.InvalidArgument, "sockproxy: the first message of a connection must be open")
	}
	if err := validPath(open.GetPath()); err != nil {
		s.m.conns.WithLabelValues(resultRefused).Inc()
		log.Warn("sockproxy: refused: invalid path", zap.ByteString("path", open.GetPath()), zap.Error(err))
		return sendError(stream, syscall.EINVAL, "invalid socket path: "+err.Error())
	}
	path := string(open.GetPath())
	resolved := resolvePath(path)
	log = log.With(zap.String("path", path))
	if !s.allowed(resolved) {
		s.m.conns.WithLabelValues(resultRefused).Inc()
		msg := s.notAllowed(path)
		log.Warn("sockproxy: refused: not allowed", zap.String("resolved", resolved), zap.Strings("allow", s.allow))
		return sendError(stream, syscall.EACCES, msg)
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		s.m.conns.WithLabelValues(resultExhausted).Inc()
		log.Warn("sockproxy: refused: too many connections", zap.Int("max", cap(s.slots)))
		return status.Errorf(codes.ResourceExhausted, "sockproxy: %d connections are open already (the server's limit)", cap(s.slots))
	}
	d := net.Dialer{Timeout: dialTimeout}
	c, err := d.DialContext(ctx, "unix", resolved)
	if err != nil {
		e, _ := qfs.ToErrno(err)
		result := resultFailed
		if e == syscall.ENOENT {
			result = resultNotFound
		}
		s.m.conns.WithLabelValues(result).Inc()
		log.Warn("sockproxy: connect failed", zap.Error(err))
		return sendError(stream, e, fmt.Sprintf("connect %s on the host: %s", path, reason(err)))
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	s.m.conns.WithLabelValues(resultOK).Inc()
	if err := stream.Send(&qtfsv1.SocketResponse{Msg: &qtfsv1.SocketResponse_Connected{Connected: &qtfsv1.SocketConnected{Path: []byte(resolved)}}}); err != nil {
		return err
	}
	t0 := time.Now()
	log.Debug("sockproxy: connected")
	up, down, err := s.pump(stream, conn, log)
	log.Debug("sockproxy: closed", zap.Int64("to_host", up), zap.Int64("from_host", down),
		zap.Duration("took", time.Since(t0)), zap.Error(err))
	return err
}

// reason is the errno's text when err carries one, else err's.
func reason(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e.Error()
	}
	return err.Error()
}

// recvOpen waits for the first request, at most openTimeout.
func recvOpen(stream qtfsv1.SocketProxy_ConnectServer) (*qtfsv1.SocketRequest, error) {
	type result struct {
		req *qtfsv1.SocketRequest
		err error
	}
	ch := make(chan result, 1)
	go func() {
		req, err := stream.Recv()
		ch <- result{req, err}
	}()
	timer := time.NewTimer(openTimeout)
	defer timer.Stop()
	select {
	case r := <-ch:
		return r.req, r.err
	case <-timer.C:
		return nil, status.Errorf(codes.DeadlineExceeded, "sockproxy: no open request within %v", openTimeout)
	}
}

// pump forwards bytes both ways until both directions are closed or one
// fails. The host-to-DPU direction runs in its own goroutine, which is
// the only sender of the stream; pump waits for it before returning.
func (s *Server) pump(stream qtfsv1.SocketProxy_ConnectServer, conn *net.UnixConn, log *zap.Logger) (int64, int64, error) {
	var up, down atomic.Int64
	var err error
	// fromHost ends with nil after sending close_write, or with the error
	// it reported to the DPU (or could not report).
	fromHost := make(chan error, 1)
	go func() {
		buf, oob := make([]byte, ChunkSize), make([]byte, oobSize)
		for {
			n, rerr := readChunk(conn, buf, oob)
			if n > 0 && !errors.Is(rerr, ErrFDPassing) {
				if err := stream.Send(&qtfsv1.SocketResponse{Msg: &qtfsv1.SocketResponse_Data{Data: buf[:n]}}); err != nil {
					fromHost <- err
					return
				}
				down.Add(int64(n))
				s.m.moved("from_host", n)
			}
			switch {
			case rerr == nil:
				continue
			case errors.Is(rerr, io.EOF):
				fromHost <- stream.Send(&qtfsv1.SocketResponse{Msg: &qtfsv1.SocketResponse_CloseWrite{CloseWrite: true}})
				return
			case errors.Is(rerr, ErrFDPassing):
				s.m.cuts.WithLabelValues(cutFDPassing).Inc()
				log.Error("sockproxy: the host socket passed file descriptors; they were closed and the connection is cut")
				_ = sendError(stream, syscall.EPROTO, "the host socket passed file descriptors (SCM_RIGHTS), which a proxied socket cannot carry")
				fromHost <- rerr
				return
			case errors.Is(rerr, net.ErrClosed):
				fromHost <- rerr
				return
			default:
				s.m.cuts.WithLabelValues(cutIO).Inc()
				e, _ := qfs.ToErrno(rerr)
				_ = sendError(stream, e, "read from the host socket: "+rerr.Error())
				fromHost <- rerr
				return
			}
		}
	}()
	// toHost ends with nil at the DPU's close_write (or the end of its
	// sending), or with an error.
	toHost := make(chan error, 1)
	go func() {
		for {
			req, rerr := stream.Recv()
			if errors.Is(rerr, io.EOF) {
				toHost <- conn.CloseWrite()
				return
			}
			if rerr != nil {
				toHost <- rerr
				return
			}
			switch m := req.GetMsg().(type) {
			case *qtfsv1.SocketRequest_Data:
				n, werr := conn.Write(m.Data)
				up.Add(int64(n))
				s.m.moved("to_host", n)
				if werr != nil {
					toHost <- werr
					return
				}
			case *qtfsv1.SocketRequest_CloseWrite:
				toHost <- conn.CloseWrite()
				return
			default:
				toHost <- status.Error(codes.InvalidArgument, "sockproxy: unexpected message after open")
				return
			}
		}
	}()
	var hostDone, dpuDone bool
	for !hostDone || !dpuDone {
		select {
		case err = <-fromHost:
			hostDone = true
			if err != nil {
				conn.Close()
				if errors.Is(err, ErrFDPassing) {
					err = nil // reported to the DPU with a SocketError
				}
				return up.Load(), down.Load(), err
			}
		case err = <-toHost:
			dpuDone = true
			if err != nil {
				var st interface{ GRPCStatus() *status.Status }
				if !errors.As(err, &st) {
					s.m.cuts.WithLabelValues(cutIO).Inc()
					e, _ := qfs.ToErrno(err)
					log.Debug("sockproxy: write to the host socket failed", zap.Error(err))
					conn.Close()
					if !hostDone {
						<-fromHost // the sender stops once conn is closed
					}
					_ = sendError(stream, e, "write to the host socket: "+err.Error())
					return up.Load(), down.Load(), nil
				}
				// The stream failed or was cancelled: stop the sender.
				conn.Close()
				if !hostDone {
					<-fromHost
				}
				return up.Load(), down.Load(), err
			}
		}
	}
	return up.Load(), down.Load(), nil
}
