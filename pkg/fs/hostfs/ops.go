package hostfs

import (
	"context"
	"syscall"

	"go.uber.org/zap"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// onMount runs fn for a request on mount id with the caller's identity and
// stores its errno in *errno. The error is a gRPC status for session
// failures only.
func (s *Server) onMount(ctx context.Context, id uint64, caller *qtfsv1.Caller, errno *int32,
	fn func(ss *session, m *mount) syscall.Errno) error {
	ss, err := s.session(ctx)
	if err != nil {
		return err
	}
	m, e := ss.mount(id)
	if e != 0 {
		*errno = int32(e)
		return nil
	}
	defer m.put()
	*errno = int32(s.creds.run(caller, func() syscall.Errno { return fn(ss, m) }))
	return nil
}

// onHandle runs fn on handle id with the server's identity.
func (s *Server) onHandle(ctx context.Context, id uint64, errno *int32, fn func(ss *session, h *handle) syscall.Errno) error {
	ss, err := s.session(ctx)
	if err != nil {
		return err
	}
	h, e := ss.handle(id)
	if e != 0 {
		*errno = int32(e)
		return nil
	}
	defer h.put()
	*errno = int32(fn(ss, h))
	return nil
}

// logBytes shortens wire bytes for a log line.
func logBytes(key string, b []byte) zap.Field {
	if len(b) > 256 {
		b = b[:256]
	}
	return zap.ByteString(key, b)
}

// refuse logs and counts a refusal and returns e.
func (s *Server) refuse(op, reason string, e syscall.Errno, fields ...zap.Field) syscall.Errno {
	s.met.refusal(reason)
	if ce := s.log.Check(zap.DebugLevel, "refused"); ce != nil {
		ce.Write(append(fields, zap.String("op", op), zap.String("reason", reason), zap.String("errno", errnoName(int32(e))))...)
	}
	return e
}

func (s *Server) checkPath(op string, p []byte) syscall.Errno {
	if e := qfs.ValidPath(p); e != 0 {
		return s.refuse(op, "invalid_path", e, logBytes("path", p))
	}
	return 0
}

func (s *Server) checkName(op string, n []byte) syscall.Errno {
	if e := qfs.ValidName(n); e != 0 {
		return s.refuse(op, "invalid_name", e, logBytes("name", n))
	}
	return 0
}

// checkDirName validates a directory path and a name in it.
func (s *Server) checkDirName(op string, dir, name []byte) syscall.Errno {
	if e := s.checkPath(op, dir); e != 0 {
		return e
	}
	return s.checkName(op, name)
}

func (s *Server) checkWritable(op string, readOnly bool) syscall.Errno {
	if readOnly {
		return s.refuse(op, "read_only", syscall.EROFS)
	}
	return 0
}

// walkErrno converts the error of a confined walk; a symlink met on the
// way (ELOOP) or an escape (EXDEV) is a refusal worth a warning.
func (s *Server) walkErrno(op string, path []byte, err error) syscall.Errno {
	e := s.errnoOf(op, err)
	if e == syscall.ELOOP || e == syscall.EXDEV {
		s.met.refusal("symlink")
		s.log.Warn("refused: symlink or escape in a request path", zap.String("op", op),
			logBytes("path", path), zap.String("errno", errnoName(int32(e))))
	}
	return e
}
