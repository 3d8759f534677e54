package hostfs

import (
	"bytes"
	"context"
	"errors"
	"path"
	"strings"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Mount opens a directory inside an export as the root of a new mount.
// With create it first makes the directories of the path that are missing
// beneath the export (MkdirBeneath), with the caller's identity, and
// reports them in created. Where it may not make one, the missing
// directory is refused: EROFS on a read-only export, EPERM on one whose
// operations do not include Mkdir. A path that exists needs nothing made,
// and mounts as without create.
func (s *Server) Mount(ctx context.Context, req *qtfsv1.MountRequest) (*qtfsv1.MountResponse, error) {
	const op = "Mount"
	ss, err := s.session(ctx)
	if err != nil {
		return nil, err
	}
	resp := &qtfsv1.MountResponse{}
	p := req.GetPath()
	if len(p) == 0 || p[0] != '/' {
		resp.Errno = int32(s.refuse(op, "invalid_path", syscall.EINVAL, logBytes("path", p)))
		return resp, nil
	}
	if e := s.checkPath(op, p[1:]); e != 0 {
		resp.Errno = int32(e)
		return resp, nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, status.Error(codes.FailedPrecondition, "hostfs: server closed")
	}
	ex, rel, ok := s.findExport(string(p))
	if !ok {
		s.met.refusal("not_exported")
		s.log.Warn("refused: mount of a path outside every export", logBytes("path", p))
		resp.Errno = int32(syscall.EACCES)
		return resp, nil
	}
	create := req.GetCreate() && rel != ""
	mayCreate := !ex.readOnly && ex.ops.allows("Mkdir")
	m := &mount{fd: -1, readOnly: ex.readOnly, ops: ex.ops, ex: ex, rel: rel}
	e := s.creds.run(req.GetCaller(), func() syscall.Errno {
		if create && mayCreate {
			made, err := MkdirBeneath(ex.fd, rel)
			for i, d := range made {
				made[i] = path.Join(ex.path, d)
				resp.Created = append(resp.Created, []byte(made[i]))
			}
			if len(made) > 0 {
				s.met.mountCreated(len(made))
				s.log.Info("created host directories for a mount", zap.Uint64("session", ss.id),
					zap.String("client", ss.client), logBytes("path", p), zap.Strings("created", made))
			}
			if err != nil {
				return s.walkErrno(op, p, err)
			}
		}
		fd, err := openDirPath(ex.fd, []byte(rel))
		switch {
		case err == nil:
		case create && errors.Is(err, unix.ENOENT) && ex.readOnly:
			return s.refuse(op, "read_only", syscall.EROFS, logBytes("path", p))
		case create && errors.Is(err, unix.ENOENT):
			s.met.refusal("op_not_allowed")
			s.limitLog.log(s.log, "op_not_allowed", zap.String("op", op), zap.Uint64("session", ss.id),
				logBytes("path", p), zap.String("errno", "EPERM"), zap.String("needs", "Mkdir"))
			return syscall.EPERM
		default:
			return s.walkErrno(op, p, err)
		}
		m.fd = fd
		if resp.Root, err = fstat(fd); err != nil {
			return s.errnoOf(op, err)
		}
		if m.kind, err = fsKindOf(fd); err != nil {
			return s.errnoOf(op, err)
		}
		return 0
	})
	if e == 0 {
		m.refs.Store(1)
		resp.Mount, e = ss.addMount(m)
		if e != 0 {
			m.put()
		}
	} else {
		closeFd(m.fd)
	}
	if e != 0 {
		return &qtfsv1.MountResponse{Errno: int32(e), Created: resp.Created}, nil
	}
	resp.ReadOnly = m.readOnly
	resp.FsKind = m.kind
	s.log.Debug("mounted", zap.Uint64("session", ss.id), zap.Uint64("mount", resp.Mount), logBytes("path", p))
	return resp, nil
}

// mkdirCreate is the mode of the directories Mount makes with create.
const mkdirCreate = 0o755

// MkdirBeneath makes the directories of rel (a checked path relative to
// the export root dirfd) that are missing, as mkdir -p would, one
// component at a time: each is opened beneath its parent (openat2,
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS: a symlink on the way is ELOOP, as
// in every walk) and made with mkdirat in that parent's fd when missing,
// mode mkdirCreate whatever the umask, owned by the identity of the
// calling thread (the caller's). It returns the paths it made, relative
// to dirfd, parents first, also when it fails on the way.
//
// It is exported for the Fifo service, which makes the directories of its
// FIFOs by the same rules.
func MkdirBeneath(dirfd int, rel string) ([]string, error) {
	var made []string
	fd, own := dirfd, false
	defer func() {
		if own {
			closeFd(fd)
		}
	}()
	done := ""
	for _, name := range strings.Split(rel, "/") {
		next, err := openDirPath(fd, []byte(name))
		if errors.Is(err, unix.ENOENT) {
			err = unix.Mkdirat(fd, name, mkdirCreate)
			if err == nil {
				made = append(made, path.Join(done, name))
				if attr, err := lstatAt(fd, name); err == nil {
					fixMode(fd, name, mkdirCreate, attr)
				}
			}
			if err == nil || errors.Is(err, unix.EEXIST) { // EEXIST: made meanwhile
				next, err = openDirPath(fd, []byte(name))
			}
		}
		if err != nil {
			return made, err
		}
		if own {
			closeFd(fd)
		}
		fd, own = next, true
		done = path.Join(done, name)
	}
	return made, nil
}

// Lookup stats name in directory path, never following a symlink.
func (s *Server) Lookup(ctx context.Context, req *qtfsv1.LookupRequest) (*qtfsv1.EntryResponse, error) {
	const op = "Lookup"
	resp := &qtfsv1.EntryResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, req.GetPath(), req.GetName()); e != 0 {
			return e
		}
		dirfd, err := m.openDir(req.GetPath())
		if err != nil {
			return s.walkErrno(op, req.GetPath(), err)
		}
		defer m.closeDir(dirfd)
		resp.Attr, err = lstatAt(dirfd, string(req.GetName()))
		return s.errnoOf(op, err)
	})
	return reply(resp, err)
}

// reply returns resp, or only err when the session failed.
func reply[T any](resp *T, err error) (*T, error) {
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// parent is the directory holding a path's last name, or the mount root
// itself (name "") for the root path.
type parent struct {
	fd   int
	name string
	own  bool // fd was opened for this request
}

func (p parent) close() {
	if p.own {
		closeFd(p.fd)
	}
}

// openParent validates path and opens its parent directory beneath m.
func (s *Server) openParent(op string, m *mount, path []byte) (parent, syscall.Errno) {
	if e := s.checkPath(op, path); e != 0 {
		return parent{}, e
	}
	if len(path) == 0 {
		return parent{fd: m.fd}, 0
	}
	dir, name := qfs.SplitPath(path)
	fd, err := m.openDir(dir)
	if err != nil {
		return parent{}, s.walkErrno(op, path, err)
	}
	return parent{fd: fd, name: string(name), own: fd != m.fd}, 0
}

// Getattr stats a path (never following a symlink) or an open handle.
func (s *Server) Getattr(ctx context.Context, req *qtfsv1.GetattrRequest) (*qtfsv1.AttrResponse, error) {
	const op = "Getattr"
	resp := &qtfsv1.AttrResponse{}
	var err error
	if req.GetHandle() != 0 {
		err = s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
			var err error
			resp.Attr, err = fstat(h.fd)
			return s.errnoOf(op, err)
		})
		return reply(resp, err)
	}
	err = s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		p, e := s.openParent(op, m, req.GetPath())
		if e != 0 {
			return e
		}
		defer p.close()
		var err error
		resp.Attr, err = lstatAt(p.fd, p.name)
		return s.errnoOf(op, err)
	})
	return reply(resp, err)
}

const (
	setMode    = uint32(qtfsv1.SetattrValid_SETATTR_VALID_MODE)
	setUID     = uint32(qtfsv1.SetattrValid_SETATTR_VALID_UID)
	setGID     = uint32(qtfsv1.SetattrValid_SETATTR_VALID_GID)
	setSize    = uint32(qtfsv1.SetattrValid_SETATTR_VALID_SIZE)
	setAtime   = uint32(qtfsv1.SetattrValid_SETATTR_VALID_ATIME)
	setMtime   = uint32(qtfsv1.SetattrValid_SETATTR_VALID_MTIME)
	setAtimeNw = uint32(qtfsv1.SetattrValid_SETATTR_VALID_ATIME_NOW)
	setMtimeNw = uint32(qtfsv1.SetattrValid_SETATTR_VALID_MTIME_NOW)
)

// setattrTimes returns the utimensat times for req, and whether any time
// changes.
func setattrTimes(req *qtfsv1.SetattrRequest) ([]unix.Timespec, bool) {
	v := req.GetValid()
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	switch {
	case v&setAtimeNw != 0:
		ts[0] = unix.Timespec{Nsec: unix.UTIME_NOW}
	case v&setAtime != 0:
		ts[0] = unix.Timespec{Sec: req.GetAtimeSec(), Nsec: int64(req.GetAtimeNsec())}
	}
	switch {
	case v&setMtimeNw != 0:
		ts[1] = unix.Timespec{Nsec: unix.UTIME_NOW}
	case v&setMtime != 0:
		ts[1] = unix.Timespec{Sec: req.GetMtimeSec(), Nsec: int64(req.GetMtimeNsec())}
	}
	return ts, v&(setAtime|setMtime|setAtimeNw|setMtimeNw) != 0
}

func setattrOwner(req *qtfsv1.SetattrRequest) (uid, gid int, any bool) {
	uid, gid = -1, -1
	if req.GetValid()&setUID != 0 {
		uid = int(req.GetUid())
	}
	if req.GetValid()&setGID != 0 {
		gid = int(req.GetGid())
	}
	return uid, gid, uid != -1 || gid != -1
}

// Setattr changes owner, mode, size and times, in that order, then returns
// the attributes.
func (s *Server) Setattr(ctx context.Context, req *qtfsv1.SetattrRequest) (*qtfsv1.AttrResponse, error) {
	const op = "Setattr"
	resp := &qtfsv1.AttrResponse{}
	valid := req.GetValid()
	changes := valid&(setMode|setUID|setGID|setSize|setAtime|setMtime|setAtimeNw|setMtimeNw) != 0
	ts, times := setattrTimes(req)
	uid, gid, chown := setattrOwner(req)
	var err error
	if req.GetHandle() != 0 {
		err = s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
			if changes {
				if e := s.checkWritable(op, h.readOnly); e != 0 {
					return e
				}
			}
			if valid&setSize != 0 && req.GetSize() < 0 {
				return syscall.EINVAL
			}
			// The handle's permission check happened at open; ownership
			// and mode changes still need the caller's identity.
			return s.creds.run(req.GetCaller(), func() syscall.Errno {
				if chown {
					if err := unix.Fchown(h.fd, uid, gid); err != nil {
						return s.errnoOf(op, err)
					}
				}
				if valid&setMode != 0 {
					if err := unix.Fchmod(h.fd, req.GetMode()&0o7777); err != nil {
						return s.errnoOf(op, err)
					}
				}
				if valid&setSize != 0 {
					if err := unix.Ftruncate(h.fd, req.GetSize()); err != nil {
						return s.errnoOf(op, err)
					}
				}
				if times {
					if err := futimens(h.fd, ts); err != nil {
						return s.errnoOf(op, err)
					}
				}
				var err error
				resp.Attr, err = fstat(h.fd)
				return s.errnoOf(op, err)
			})
		})
		return reply(resp, err)
	}
	err = s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		p, e := s.openParent(op, m, req.GetPath())
		if e != 0 {
			return e
		}
		defer p.close()
		if changes {
			if e := s.checkWritable(op, m.readOnly); e != 0 {
				return e
			}
		}
		if valid&setSize != 0 && req.GetSize() < 0 {
			return syscall.EINVAL
		}
		if chown {
			flags := unix.AT_SYMLINK_NOFOLLOW
			if p.name == "" {
				flags = unix.AT_EMPTY_PATH
			}
			if err := unix.Fchownat(p.fd, p.name, uid, gid, flags); err != nil {
				return s.errnoOf(op, err)
			}
		}
		if valid&setMode != 0 {
			if e := s.chmodNoFollow(op, p, req.GetMode()&0o7777); e != 0 {
				return e
			}
		}
		if valid&setSize != 0 {
			fd, err := openBeneath(p.fd, p.name, unix.O_WRONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
			if err != nil {
				return s.walkErrno(op, req.GetPath(), err)
			}
			err = unix.Ftruncate(fd, req.GetSize())
			closeFd(fd)
			if err != nil {
				return s.errnoOf(op, err)
			}
		}
		if times {
			var err error
			if p.name == "" {
				err = unix.UtimesNanoAt(unix.AT_FDCWD, procFdPath(p.fd), ts, 0)
			} else {
				err = unix.UtimesNanoAt(p.fd, p.name, ts, unix.AT_SYMLINK_NOFOLLOW)
			}
			if err != nil {
				return s.errnoOf(op, err)
			}
		}
		var err error
		resp.Attr, err = lstatAt(p.fd, p.name)
		return s.errnoOf(op, err)
	})
	return reply(resp, err)
}

// chmodNoFollow changes the mode of p's entry; a symlink gives EOPNOTSUPP
// as on Linux. The entry is pinned with an O_PATH fd and changed through
// /proc/self/fd, so a concurrent swap for a symlink cannot redirect it.
func (s *Server) chmodNoFollow(op string, p parent, mode uint32) syscall.Errno {
	fd, err := openBeneath(p.fd, p.name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return s.errnoOf(op, err)
	}
	defer closeFd(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return s.errnoOf(op, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return syscall.EOPNOTSUPP
	}
	return s.errnoOf(op, unix.Fchmodat(unix.AT_FDCWD, procFdPath(fd), mode, 0))
}

// futimens is utimensat(fd, NULL, ts, 0).
func futimens(fd int, ts []unix.Timespec) error {
	_, _, e := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// Readlink returns a symlink's target.
func (s *Server) Readlink(ctx context.Context, req *qtfsv1.ReadlinkRequest) (*qtfsv1.ReadlinkResponse, error) {
	const op = "Readlink"
	resp := &qtfsv1.ReadlinkResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		p, e := s.openParent(op, m, req.GetPath())
		if e != 0 {
			return e
		}
		defer p.close()
		if p.name == "" {
			return syscall.EINVAL
		}
		buf := make([]byte, qfs.PathMax)
		n, err := unix.Readlinkat(p.fd, p.name, buf)
		if err != nil {
			return s.errnoOf(op, err)
		}
		resp.Target = buf[:n]
		return 0
	})
	return reply(resp, err)
}

// Symlink creates a symlink; the target is stored, never resolved.
func (s *Server) Symlink(ctx context.Context, req *qtfsv1.SymlinkRequest) (*qtfsv1.EntryResponse, error) {
	const op = "Symlink"
	resp := &qtfsv1.EntryResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, req.GetPath(), req.GetName()); e != 0 {
			return e
		}
		target := req.GetTarget()
		switch {
		case len(target) == 0:
			return syscall.ENOENT
		case len(target) >= qfs.PathMax:
			return s.refuse(op, "too_large", syscall.ENAMETOOLONG)
		case bytes.IndexByte(target, 0) >= 0:
			return s.refuse(op, "invalid_name", syscall.EINVAL)
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		dirfd, err := m.openDir(req.GetPath())
		if err != nil {
			return s.walkErrno(op, req.GetPath(), err)
		}
		defer m.closeDir(dirfd)
		name := string(req.GetName())
		if err := unix.Symlinkat(string(target), dirfd, name); err != nil {
			return s.errnoOf(op, err)
		}
		resp.Attr, err = lstatAt(dirfd, name)
		resp.DirAttr = dirAttr(dirfd)
		return s.errnoOf(op, err)
	})
	return reply(resp, err)
}

// dirAttr is the attributes of an open directory, for the dir_attr of a
// reply; nil when they cannot be read.
func dirAttr(dirfd int) *qtfsv1.Attr {
	a, err := fstat(dirfd)
	if err != nil {
		return nil
	}
	return a
}

// createMode returns the permission bits to create with in dirfd: mode
// less umask, unless the directory has a default ACL (then, as locally,
// the ACL rules and the umask is not applied).
func createMode(dirfd int, mode, umask uint32) uint32 {
	perm := mode & 0o7777
	if perm&umask&0o777 == 0 || hasDefaultACL(dirfd) {
		return perm
	}
	return perm &^ (umask & 0o777)
}

func hasDefaultACL(dirfd int) bool {
	n, err := unix.Getxattr(procFdPath(dirfd), "system.posix_acl_default", nil)
	return err == nil && n > 0
}

// fixMode gives the entry name in dirfd, just created by this server with
// permission bits want, those bits when the process umask took some away.
// attr is the entry's stat; the updated one is returned.
func fixMode(dirfd int, name string, want uint32, attr *qtfsv1.Attr) *qtfsv1.Attr {
	if attr.Mode&0o777 == want&0o777 || attr.Mode&unix.S_IFMT == unix.S_IFLNK || hasDefaultACL(dirfd) {
		return attr
	}
	fd, err := openBeneath(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return attr
	}
	defer closeFd(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Ino != attr.Ino || st.Dev != attr.Dev || st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return attr // replaced meanwhile: not ours to change
	}
	if unix.Fchmodat(unix.AT_FDCWD, procFdPath(fd), st.Mode&0o7000|want&0o777, 0) != nil {
		return attr
	}
	if a, err := fstat(fd); err == nil {
		return a
	}
	return attr
}

// Mknod creates a fifo, socket, device or regular file.
func (s *Server) Mknod(ctx context.Context, req *qtfsv1.MknodRequest) (*qtfsv1.EntryResponse, error) {
	const op = "Mknod"
	resp := &qtfsv1.EntryResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, req.GetPath(), req.GetName()); e != 0 {
			return e
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		if req.GetRdev() > 0xffffffff {
			return syscall.EINVAL
		}
		dirfd, err := m.openDir(req.GetPath())
		if err != nil {
			return s.walkErrno(op, req.GetPath(), err)
		}
		defer m.closeDir(dirfd)
		name := string(req.GetName())
		typ := req.GetMode() & unix.S_IFMT
		if typ == 0 {
			typ = unix.S_IFREG
		}
		perm := createMode(dirfd, req.GetMode(), req.GetUmask())
		if err := unix.Mknodat(dirfd, name, typ|perm, int(req.GetRdev())); err != nil {
			return s.errnoOf(op, err)
		}
		attr, err := lstatAt(dirfd, name)
		if err != nil {
			return s.errnoOf(op, err)
		}
		resp.Attr = fixMode(dirfd, name, perm, attr)
		resp.DirAttr = dirAttr(dirfd)
		return 0
	})
	return reply(resp, err)
}

// Mkdir creates a directory.
func (s *Server) Mkdir(ctx context.Context, req *qtfsv1.MkdirRequest) (*qtfsv1.EntryResponse, error) {
	const op = "Mkdir"
	resp := &qtfsv1.EntryResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, req.GetPath(), req.GetName()); e != 0 {
			return e
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		dirfd, err := m.openDir(req.GetPath())
		if err != nil {
			return s.walkErrno(op, req.GetPath(), err)
		}
		defer m.closeDir(dirfd)
		name := string(req.GetName())
		perm := createMode(dirfd, req.GetMode(), req.GetUmask())
		if err := unix.Mkdirat(dirfd, name, perm); err != nil {
			return s.errnoOf(op, err)
		}
		attr, err := lstatAt(dirfd, name)
		if err != nil {
			return s.errnoOf(op, err)
		}
		resp.Attr = fixMode(dirfd, name, perm, attr)
		resp.DirAttr = dirAttr(dirfd)
		return 0
	})
	return reply(resp, err)
}

// remove is Unlink (flags 0) and Rmdir (AT_REMOVEDIR).
func (s *Server) remove(ctx context.Context, op string, mountID uint64, caller *qtfsv1.Caller, dir, name []byte, flags int) (*qtfsv1.ErrnoResponse, error) {
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onMount(ctx, mountID, caller, &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, dir, name); e != 0 {
			return e
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		dirfd, err := m.openDir(dir)
		if err != nil {
			return s.walkErrno(op, dir, err)
		}
		defer m.closeDir(dirfd)
		if err := unix.Unlinkat(dirfd, string(name), flags); err != nil {
			return s.errnoOf(op, err)
		}
		resp.DirAttr = dirAttr(dirfd)
		return 0
	})
	return reply(resp, err)
}

// Unlink removes a non-directory.
func (s *Server) Unlink(ctx context.Context, req *qtfsv1.UnlinkRequest) (*qtfsv1.ErrnoResponse, error) {
	return s.remove(ctx, "Unlink", req.GetMount(), req.GetCaller(), req.GetPath(), req.GetName(), 0)
}

// Rmdir removes an empty directory.
func (s *Server) Rmdir(ctx context.Context, req *qtfsv1.RmdirRequest) (*qtfsv1.ErrnoResponse, error) {
	return s.remove(ctx, "Rmdir", req.GetMount(), req.GetCaller(), req.GetPath(), req.GetName(), unix.AT_REMOVEDIR)
}

// Rename is renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE.
func (s *Server) Rename(ctx context.Context, req *qtfsv1.RenameRequest) (*qtfsv1.ErrnoResponse, error) {
	const op = "Rename"
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, req.GetOldPath(), req.GetOldName()); e != 0 {
			return e
		}
		if e := s.checkDirName(op, req.GetNewPath(), req.GetNewName()); e != 0 {
			return e
		}
		if req.GetFlags()&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
			return s.refuse(op, "bad_flags", syscall.EINVAL)
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		olddir, err := m.openDir(req.GetOldPath())
		if err != nil {
			return s.walkErrno(op, req.GetOldPath(), err)
		}
		defer m.closeDir(olddir)
		newdir, err := m.openDir(req.GetNewPath())
		if err != nil {
			return s.walkErrno(op, req.GetNewPath(), err)
		}
		defer m.closeDir(newdir)
		return s.errnoOf(op, unix.Renameat2(olddir, string(req.GetOldName()), newdir, string(req.GetNewName()),
			uint(req.GetFlags())))
	})
	return reply(resp, err)
}

// Link makes a hard link; a symlink is linked itself, never followed.
func (s *Server) Link(ctx context.Context, req *qtfsv1.LinkRequest) (*qtfsv1.EntryResponse, error) {
	const op = "Link"
	resp := &qtfsv1.EntryResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, req.GetNewPath(), req.GetNewName()); e != 0 {
			return e
		}
		p, e := s.openParent(op, m, req.GetPath())
		if e != 0 {
			return e
		}
		defer p.close()
		if p.name == "" {
			return syscall.EPERM // the mount root is a directory
		}
		if e := s.checkWritable(op, m.readOnly); e != 0 {
			return e
		}
		newdir, err := m.openDir(req.GetNewPath())
		if err != nil {
			return s.walkErrno(op, req.GetNewPath(), err)
		}
		defer m.closeDir(newdir)
		name := string(req.GetNewName())
		if err := unix.Linkat(p.fd, p.name, newdir, name, 0); err != nil {
			return s.errnoOf(op, err)
		}
		resp.Attr, err = lstatAt(newdir, name)
		resp.DirAttr = dirAttr(newdir)
		return s.errnoOf(op, err)
	})
	return reply(resp, err)
}

// Statfs is fstatfs(2) of the filesystem holding path.
func (s *Server) Statfs(ctx context.Context, req *qtfsv1.StatfsRequest) (*qtfsv1.StatfsResponse, error) {
	const op = "Statfs"
	resp := &qtfsv1.StatfsResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		if e := s.checkPath(op, req.GetPath()); e != 0 {
			return e
		}
		fd, err := openNode(m.fd, req.GetPath())
		if err != nil {
			return s.walkErrno(op, req.GetPath(), err)
		}
		defer closeFd(fd)
		var st unix.Statfs_t
		if err := unix.Fstatfs(fd, &st); err != nil {
			return s.errnoOf(op, err)
		}
		resp.Blocks, resp.Bfree, resp.Bavail = st.Blocks, st.Bfree, st.Bavail
		resp.Files, resp.Ffree = st.Files, st.Ffree
		resp.Bsize, resp.Namelen, resp.Frsize = uint32(st.Bsize), uint32(st.Namelen), uint32(st.Frsize)
		resp.Type, resp.Flags = int64(st.Type), uint64(st.Flags)
		return 0
	})
	return reply(resp, err)
}
