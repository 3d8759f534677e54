package hostfs

import (
	"bytes"
	"context"
	"syscall"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Extended attributes are reached through an O_PATH|O_NOFOLLOW fd of the
// entry and its /proc/self/fd name: the magic link leads to exactly that
// inode (a symlink stays itself), works for every file type, and needs no
// open(2) permission, so the xattr permission rules apply as locally.

// checkXattrName validates an attribute name as the kernel would.
func (s *Server) checkXattrName(op string, name []byte) syscall.Errno {
	switch {
	case len(name) == 0:
		return s.refuse(op, "invalid_name", syscall.EINVAL)
	case len(name) > maxXattrNameLen:
		return s.refuse(op, "invalid_name", syscall.ERANGE)
	case bytes.IndexByte(name, 0) >= 0:
		return s.refuse(op, "invalid_name", syscall.EINVAL)
	}
	return 0
}

// onNode runs fn with the /proc/self/fd name of path's entry beneath m.
func (s *Server) onNode(op string, m *mount, path []byte, fn func(proc string) syscall.Errno) syscall.Errno {
	if e := s.checkPath(op, path); e != 0 {
		return e
	}
	fd, err := openNode(m.fd, path)
	if err != nil {
		return s.walkErrno(op, path, err)
	}
	defer closeFd(fd)
	return fn(procFdPath(fd))
}

// Getxattr reads an extended attribute; size 0 asks for its size.
func (s *Server) Getxattr(ctx context.Context, req *qtfsv1.GetxattrRequest) (*qtfsv1.GetxattrResponse, error) {
	const op = "Getxattr"
	resp := &qtfsv1.GetxattrResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkXattrName(op, req.GetName()); e != 0 {
			return e
		}
		return s.onNode(op, m, req.GetPath(), func(proc string) syscall.Errno {
			var buf []byte
			if req.GetSize() > 0 {
				buf = make([]byte, min(req.GetSize(), maxXattrSize))
			}
			n, err := unix.Getxattr(proc, string(req.GetName()), buf)
			if err != nil {
				return s.errnoOf(op, err)
			}
			resp.Size = uint32(n)
			if buf != nil {
				resp.Value = buf[:n]
			}
			return 0
		})
	})
	return reply(resp, err)
}

// Setxattr writes an extended attribute (flags XATTR_CREATE, XATTR_REPLACE).
func (s *Server) Setxattr(ctx context.Context, req *qtfsv1.SetxattrRequest) (*qtfsv1.ErrnoResponse, error) {
	const op = "Setxattr"
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkXattrName(op, req.GetName()); e != 0 {
			return e
		}
		if len(req.GetValue()) > maxXattrSize {
			return s.refuse(op, "too_large", syscall.E2BIG)
		}
		if req.GetFlags()&^(unix.XATTR_CREATE|unix.XATTR_REPLACE) != 0 {
			return s.refuse(op, "bad_flags", syscall.EINVAL)
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		return s.onNode(op, m, req.GetPath(), func(proc string) syscall.Errno {
			return s.errnoOf(op, unix.Setxattr(proc, string(req.GetName()), req.GetValue(), int(req.GetFlags())))
		})
	})
	return reply(resp, err)
}

// Listxattr lists attribute names, NUL-separated; size 0 asks for the size.
func (s *Server) Listxattr(ctx context.Context, req *qtfsv1.ListxattrRequest) (*qtfsv1.ListxattrResponse, error) {
	const op = "Listxattr"
	resp := &qtfsv1.ListxattrResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		return s.onNode(op, m, req.GetPath(), func(proc string) syscall.Errno {
			var buf []byte
			if req.GetSize() > 0 {
				buf = make([]byte, min(req.GetSize(), maxXattrSize))
			}
			n, err := unix.Listxattr(proc, buf)
			if err != nil {
				return s.errnoOf(op, err)
			}
			resp.Size = uint32(n)
			if buf != nil {
				resp.Names = buf[:n]
			}
			return 0
		})
	})
	return reply(resp, err)
}

// Removexattr removes an extended attribute.
func (s *Server) Removexattr(ctx context.Context, req *qtfsv1.RemovexattrRequest) (*qtfsv1.ErrnoResponse, error) {
	const op = "Removexattr"
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkXattrName(op, req.GetName()); e != 0 {
			return e
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		return s.onNode(op, m, req.GetPath(), func(proc string) syscall.Errno {
			return s.errnoOf(op, unix.Removexattr(proc, string(req.GetName())))
		})
	})
	return reply(resp, err)
}
