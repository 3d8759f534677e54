package hostfs

import (
	"context"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// openFlagsPassed are the open(2) flags a client may ask for; others are
// dropped (O_DIRECT, O_ASYNC, O_LARGEFILE, O_CLOEXEC: the server's business).
const openFlagsPassed = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_SYNC | unix.O_DSYNC |
	unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_NOATIME | unix.O_TRUNC | unix.O_EXCL

// tmpfileBit is O_TMPFILE without the O_DIRECTORY it includes.
const tmpfileBit = unix.O_TMPFILE &^ unix.O_DIRECTORY

// openFlags checks and filters client open flags; the result always has
// O_NOFOLLOW and O_NOCTTY.
func (s *Server) openFlags(op string, raw uint32, create bool) (int, syscall.Errno) {
	f := int(raw)
	switch {
	case f&unix.O_ACCMODE == unix.O_ACCMODE,
		f&unix.O_PATH != 0,
		f&tmpfileBit != 0,
		!create && f&unix.O_CREAT != 0,
		create && f&unix.O_DIRECTORY != 0:
		return 0, s.refuse(op, "bad_flags", syscall.EINVAL)
	}
	return f&openFlagsPassed | unix.O_NOFOLLOW | unix.O_NOCTTY, 0
}

func writeIntent(flags int) bool {
	return flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0
}

// Open opens a file or directory beneath the mount and returns a handle,
// with the first bytes of the file when read_inline asks for them.
func (s *Server) Open(ctx context.Context, req *qtfsv1.OpenRequest) (*qtfsv1.OpenResponse, error) {
	const op = "Open"
	resp := &qtfsv1.OpenResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(ss *session, m *mount) syscall.Errno {
		if e := s.checkPath(op, req.GetPath()); e != 0 {
			return e
		}
		if len(req.GetReadAlso()) > qfs.MaxReadAlso {
			return s.refuse(op, "read_also_count", syscall.EINVAL)
		}
		for _, name := range req.GetReadAlso() {
			if e := s.checkName(op, name); e != 0 {
				return e
			}
		}
		flags, e := s.openFlags(op, req.GetFlags(), false)
		if e != 0 {
			return e
		}
		if writeIntent(flags) {
			if e := s.checkWritable(op, m.readOnly); e != 0 {
				return e
			}
		}
		// O_NONBLOCK keeps the open of a fifo without a peer from blocking
		// the server; it is cleared again when the client did not ask.
		fd, err := openBeneath(m.fd, string(req.GetPath()), flags|unix.O_NONBLOCK, 0)
		if err != nil {
			return s.walkErrno(op, req.GetPath(), err)
		}
		if e := s.newHandle(op, ss, m, fd, flags, req.GetCaller(), inlineReads{
			data: req.GetReadInline(), entries: req.GetReaddirInline(), closeAtEOF: req.GetCloseAtEof(),
			probeXattrs: req.GetProbeXattrs() && m.ops.allows("Listxattr")}, resp); e != 0 {
			return e
		}
		if resp.Closed && resp.InlineEof && qfs.SpecialKind(m.kind) {
			resp.AlsoRead = s.readAlso(m, req.GetPath(), req.GetReadAlso(), req.GetReadInline())
		}
		return 0
	})
	if err != nil {
		return nil, err
	}
	if resp.Errno != 0 {
		return &qtfsv1.OpenResponse{Errno: resp.Errno}, nil
	}
	return resp, nil
}

// readAlsoBytes bounds what OpenRequest.read_also reads of each file
// (qfs.MaxReadAlso bounds how many).
const readAlsoBytes = 16 << 10

// readAlso reads the files names of path's directory whole, for the
// opens the client expects next (OpenRequest.read_also). The caller's
// credentials are in force, as for the Open itself. A file that cannot be
// opened read-only, is not a regular file, or is larger than limit (and
// readAlsoBytes) is left out.
func (s *Server) readAlso(m *mount, path []byte, names [][]byte, limit uint32) []*qtfsv1.ReadAlso {
	if len(names) == 0 {
		return nil
	}
	dir, _ := qfs.SplitPath(path)
	n := min(int(limit), readAlsoBytes, s.maxData)
	var out []*qtfsv1.ReadAlso
	for _, name := range names {
		fd, err := openBeneath(m.fd, string(qfs.JoinPath(dir, name)), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			continue
		}
		if a, err := fstat(fd); err == nil && a.GetMode()&unix.S_IFMT == unix.S_IFREG {
			buf := make([]byte, n)
			if got, err := unix.Pread(fd, buf, 0); err == nil && got < n {
				s.met.read(got)
				out = append(out, &qtfsv1.ReadAlso{Name: name, Attr: a, Data: buf[:got]})
			}
		}
		closeFd(fd)
	}
	return out
}

// inlineReads are the reads an Open does for its client (OpenRequest
// read_inline, readdir_inline, close_at_eof, probe_xattrs).
type inlineReads struct {
	data, entries uint32
	closeAtEOF    bool
	probeXattrs   bool
}

// newHandle finishes an open: restores the blocking mode, stats, reads
// inline data or entries and stores the handle, or with closeAtEOF
// closes the file when the inline read took all of it. fd is consumed.
func (s *Server) newHandle(op string, ss *session, m *mount, fd, flags int, caller *qtfsv1.Caller,
	in inlineReads, resp *qtfsv1.OpenResponse) syscall.Errno {
	if flags&unix.O_NONBLOCK == 0 {
		if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err == nil {
			_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_NONBLOCK)
		}
	}
	attr, err := fstat(fd)
	if err != nil {
		closeFd(fd)
		return s.errnoOf(op, err)
	}
	dir := attr.Mode&unix.S_IFMT == unix.S_IFDIR
	if dir && in.entries > 0 && m.ops.allows("Readdir") {
		if e := s.listInline(op, fd, in.entries, resp); e != 0 {
			closeFd(fd)
			return e
		}
	}
	if in.data > 0 && !dir && flags&unix.O_ACCMODE != unix.O_WRONLY {
		n := min(int(in.data), s.maxData)
		buf := make([]byte, n)
		// A failed inline read leaves the handle usable: the client's
		// next Read reports the error.
		if got, err := unix.Pread(fd, buf, 0); err == nil {
			resp.InlineData = buf[:got]
			resp.InlineEof = got < n
			s.met.read(got)
		}
	}
	if in.probeXattrs {
		// The list's size alone: one syscall, no copy.
		n, err := unix.Flistxattr(fd, nil)
		resp.NoXattrs = err == nil && n == 0
	}
	if in.closeAtEOF && (resp.InlineEof || resp.EntriesEof) && flags&unix.O_ACCMODE == unix.O_RDONLY {
		closeFd(fd)
		resp.Closed, resp.Attr, resp.FlushNeedless = true, attr, true
		return 0
	}
	id, e := ss.addHandle(fd, flags, dir, m, caller)
	if e != 0 {
		return e
	}
	resp.Handle = id
	resp.Attr = attr
	resp.FlushNeedless = !dir && s.closeIsSilent(fd, attr.GetDev())
	return 0
}

// closeIsSilent reports whether close(2) of fd, on device dev, can report
// nothing write(2) and fsync(2) do not: local disk filesystems and tmpfs
// write back on their own and report errors at fsync. Network and FUSE
// filesystems (and overlayfs, whose upper layer may be either) can fail a
// close, so Flush is sent for them. Answers are kept per device.
func (s *Server) closeIsSilent(fd int, dev uint64) bool {
	if v, ok := s.silentClose.Load(dev); ok {
		return v.(bool)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return false
	}
	silent := false
	switch uint64(st.Type) {
	case unix.EXT4_SUPER_MAGIC, unix.XFS_SUPER_MAGIC, unix.BTRFS_SUPER_MAGIC, unix.TMPFS_MAGIC, unix.F2FS_SUPER_MAGIC:
		silent = true
	}
	s.silentClose.Store(dev, silent)
	return silent
}

// Create creates (or, without O_EXCL, opens) a regular file and returns a
// handle. A symlink in the name's place is never followed (ELOOP).
func (s *Server) Create(ctx context.Context, req *qtfsv1.CreateRequest) (*qtfsv1.CreateResponse, error) {
	const op = "Create"
	resp := &qtfsv1.CreateResponse{}
	err := s.onMount(ctx, req.GetMount(), req.GetCaller(), &resp.Errno, func(ss *session, m *mount) syscall.Errno {
		if e := s.checkDirName(op, req.GetPath(), req.GetName()); e != 0 {
			return e
		}
		flags, e := s.openFlags(op, req.GetFlags(), true)
		if e != 0 {
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
		// Try to create first, so the server knows whether the file is
		// new (only a new file's mode may be corrected below).
		var fd int
		created := false
		for try := 0; ; try++ {
			fd, err = openBeneath(dirfd, name, flags|unix.O_CREAT|unix.O_EXCL|unix.O_NONBLOCK, perm)
			if err == nil {
				created = true
				break
			}
			if err != unix.EEXIST || flags&unix.O_EXCL != 0 || try == 8 {
				break
			}
			fd, err = openBeneath(dirfd, name, flags|unix.O_NONBLOCK, 0)
			if err != unix.ENOENT { // ENOENT: removed meanwhile, create again
				break
			}
		}
		if err != nil {
			return s.walkErrno(op, req.GetPath(), err)
		}
		if created {
			if attr, err := fstat(fd); err == nil && attr.Mode&0o777 != perm&0o777 && !hasDefaultACL(dirfd) {
				_ = unix.Fchmod(fd, attr.Mode&0o7000|perm&0o777)
			}
		}
		var or qtfsv1.OpenResponse
		if e := s.newHandle(op, ss, m, fd, flags, req.GetCaller(), inlineReads{}, &or); e != 0 {
			return e
		}
		resp.Handle, resp.Attr, resp.FlushNeedless = or.Handle, or.Attr, or.FlushNeedless
		resp.DirAttr = dirAttr(dirfd)
		return 0
	})
	if err != nil {
		return nil, err
	}
	if resp.Errno != 0 {
		return &qtfsv1.CreateResponse{Errno: resp.Errno}, nil
	}
	return resp, nil
}

// Read is one pread(2), or read(2) for files that refuse pread(2) with
// ESPIPE.
func (s *Server) Read(ctx context.Context, req *qtfsv1.ReadRequest) (*qtfsv1.ReadResponse, error) {
	const op = "Read"
	resp := &qtfsv1.ReadResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		if int64(req.GetSize()) > int64(s.maxData) {
			return s.refuse(op, "too_large", syscall.EINVAL)
		}
		if req.GetOffset() < 0 {
			return syscall.EINVAL
		}
		if h.dir {
			return syscall.EISDIR
		}
		buf := readBuffer(int(req.GetSize()))
		n, err := unix.Pread(h.fd, *buf, req.GetOffset())
		if err == nil {
			h.ra.read(h.fd, req.GetOffset(), n)
		}
		if err == unix.ESPIPE {
			// A file without positions (a pipe, some proc and sysfs
			// files): read(2) is what the caller's read was.
			n, err = readStream(ctx, h.fd, *buf)
		}
		if err != nil {
			return s.errnoOf(op, err)
		}
		s.lendRead(resp, buf, n)
		s.met.read(n)
		return 0
	})
	return reply(resp, err)
}

// Write is one pwrite(2), or write(2) for O_APPEND handles and for files
// that refuse pwrite(2) with ESPIPE (pipes, some proc and sysfs files,
// where the refused pwrite did nothing); it returns once the host's call
// returned. One Write is always one host write: cgroup and proc files
// act on each write(2) they get.
func (s *Server) Write(ctx context.Context, req *qtfsv1.WriteRequest) (*qtfsv1.WriteResponse, error) {
	const op = "Write"
	resp := &qtfsv1.WriteResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		if e := s.checkWritable(op, h.readOnly); e != 0 {
			return e
		}
		if len(req.GetData()) > s.maxData {
			return s.refuse(op, "too_large", syscall.EINVAL)
		}
		if req.GetOffset() < 0 {
			return syscall.EINVAL
		}
		if h.dir {
			return syscall.EISDIR
		}
		var n int
		var err error
		if h.flags&unix.O_APPEND != 0 {
			n, err = unix.Write(h.fd, req.GetData())
		} else {
			n, err = unix.Pwrite(h.fd, req.GetData(), req.GetOffset())
			if err == unix.ESPIPE {
				n, err = writeStream(ctx, h.fd, req.GetData())
			}
		}
		if err != nil {
			return s.errnoOf(op, err)
		}
		resp.Written = uint32(n)
		s.met.wrote(n)
		return 0
	})
	return reply(resp, err)
}

// Flush closes a duplicate of the handle's fd, so a host filesystem that
// reports write-back errors at close (NFS) reports them here. OFD and flock
// locks stay: they belong to the open file description.
func (s *Server) Flush(ctx context.Context, req *qtfsv1.FlushRequest) (*qtfsv1.ErrnoResponse, error) {
	const op = "Flush"
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		nfd, err := unix.FcntlInt(uintptr(h.fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return s.errnoOf(op, err)
		}
		return s.errnoOf(op, unix.Close(nfd))
	})
	return reply(resp, err)
}

// Fsync is fsync(2) or fdatasync(2) of the handle.
func (s *Server) Fsync(ctx context.Context, req *qtfsv1.FsyncRequest) (*qtfsv1.ErrnoResponse, error) {
	const op = "Fsync"
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		if req.GetDatasync() {
			return s.errnoOf(op, unix.Fdatasync(h.fd))
		}
		return s.errnoOf(op, unix.Fsync(h.fd))
	})
	return reply(resp, err)
}

// Release closes a handle. Operations still running on it finish first;
// the fd is closed by the last of them.
func (s *Server) Release(ctx context.Context, req *qtfsv1.ReleaseRequest) (*qtfsv1.ErrnoResponse, error) {
	ss, err := s.session(ctx)
	if err != nil {
		return nil, err
	}
	return &qtfsv1.ErrnoResponse{Errno: int32(ss.removeHandle(req.GetHandle()))}, nil
}

// Fallocate is fallocate(2) on the handle.
func (s *Server) Fallocate(ctx context.Context, req *qtfsv1.FallocateRequest) (*qtfsv1.ErrnoResponse, error) {
	const op = "Fallocate"
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		if e := s.checkWritable(op, h.readOnly); e != 0 {
			return e
		}
		return s.errnoOf(op, unix.Fallocate(h.fd, req.GetMode(), req.GetOffset(), req.GetLength()))
	})
	return reply(resp, err)
}

// Lseek finds data or holes (SEEK_DATA, SEEK_HOLE) in the handle's file.
func (s *Server) Lseek(ctx context.Context, req *qtfsv1.LseekRequest) (*qtfsv1.LseekResponse, error) {
	const op = "Lseek"
	resp := &qtfsv1.LseekResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		if w := req.GetWhence(); w != unix.SEEK_DATA && w != unix.SEEK_HOLE {
			return syscall.EINVAL
		}
		if h.dir { // the position of a directory handle belongs to Readdir
			return syscall.EISDIR
		}
		off, err := unix.Seek(h.fd, req.GetOffset(), int(req.GetWhence()))
		if err != nil {
			return s.errnoOf(op, err)
		}
		resp.Offset = off
		return 0
	})
	return reply(resp, err)
}

// CopyFileRange is one copy_file_range(2) between two handles of the
// session; the length is bounded, so the copy may be short.
func (s *Server) CopyFileRange(ctx context.Context, req *qtfsv1.CopyFileRangeRequest) (*qtfsv1.CopyFileRangeResponse, error) {
	const op = "CopyFileRange"
	resp := &qtfsv1.CopyFileRangeResponse{}
	err := s.onHandle(ctx, req.GetHandleIn(), &resp.Errno, func(ss *session, in *handle) syscall.Errno {
		out, e := ss.handle(req.GetHandleOut())
		if e != 0 {
			return e
		}
		defer out.put()
		if e := s.checkWritable(op, out.readOnly); e != 0 {
			return e
		}
		offIn, offOut := req.GetOffsetIn(), req.GetOffsetOut()
		if offIn < 0 || offOut < 0 {
			return syscall.EINVAL
		}
		n, err := unix.CopyFileRange(in.fd, &offIn, out.fd, &offOut,
			int(min(req.GetLength(), maxCopyLength)), int(req.GetFlags()))
		if err != nil {
			return s.errnoOf(op, err)
		}
		resp.Copied = uint64(n)
		return 0
	})
	return reply(resp, err)
}

// Host readahead for a handle read in sequence.
//
// A client reading a file in sequence has several Reads of up to 1 MiB in
// flight; they reach the host side by side and not quite in order, which
// the host kernel's own readahead takes for random reads, so each Read
// waited for the disk. A handle whose reads keep landing next to the
// furthest one so far asks the host to read raWindow ahead of it
// (posix_fadvise WILLNEED starts the reads and does not wait for them).
const (
	raWindow = 8 << 20
	// raMinRead: smaller reads (metadata files, /proc) start nothing.
	raMinRead = 64 << 10
)

// readahead is a handle's sequential-read state.
type readahead struct {
	mu sync.Mutex
	// end is the furthest end of a read so far, ahead how far the host
	// was asked to read.
	end, ahead int64
}

// read notes a read of n bytes at off on fd and starts host readahead
// when the handle is read in sequence. It returns the range it asked the
// host to read (length 0: none).
func (r *readahead) read(fd int, off int64, n int) (from, length int64) {
	if n < raMinRead {
		return 0, 0
	}
	end := off + int64(n)
	r.mu.Lock()
	if off > r.end+raWindow || end < r.end-raWindow {
		// Not near the others: a random read starts afresh.
		r.end, r.ahead = end, end
		r.mu.Unlock()
		return 0, 0
	}
	r.end = max(r.end, end)
	from = max(r.ahead, r.end)
	if from-r.end >= raWindow/2 {
		r.mu.Unlock()
		return 0, 0
	}
	r.ahead = r.end + raWindow
	length = r.ahead - from
	r.mu.Unlock()
	_ = unix.Fadvise(fd, from, length, unix.FADV_WILLNEED)
	return from, length
}
