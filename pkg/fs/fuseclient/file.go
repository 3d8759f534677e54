package fuseclient

import (
	"context"
	"math"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"google.golang.org/grpc/mem"

	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// fileHandle is a file open on the server.
type fileHandle struct {
	m *mountFS
	h uint64
	// n is the node the file was opened on.
	n *node
	// flags are the open(2) flags of the kernel's open.
	flags uint32

	mu sync.Mutex
	// inline holds the bytes the Open RPC read at offset 0; reads that
	// go on from where the previous one stopped are served from it, once.
	inline    []byte
	inlinePos int64
	inlineEOF bool
	hasInline bool
	// flushNeedless: the server says close(2) on the file's filesystem
	// reports nothing write(2) and fsync(2) do not, so Flush sends nothing.
	flushNeedless bool
	// closedAtOpen: the server closed the file after the Open's inline
	// read (a small /proc or /sys file read whole). A use that needs the
	// server's file opens it again; fstat goes by path instead.
	closedAtOpen bool
}

var (
	_ fs.FileReader    = (*fileHandle)(nil)
	_ fs.FileWriter    = (*fileHandle)(nil)
	_ fs.FileFlusher   = (*fileHandle)(nil)
	_ fs.FileFsyncer   = (*fileHandle)(nil)
	_ fs.FileReleaser  = (*fileHandle)(nil)
	_ fs.FileGetattrer = (*fileHandle)(nil)
	_ fs.FileSetattrer = (*fileHandle)(nil)
	_ fs.FileAllocater = (*fileHandle)(nil)
	_ fs.FileLseeker   = (*fileHandle)(nil)
	_ fs.FileGetlker   = (*fileHandle)(nil)
	_ fs.FileSetlker   = (*fileHandle)(nil)
	_ fs.FileSetlkwer  = (*fileHandle)(nil)
)

func (m *mountFS) newFileHandle(h uint64, n *node, flags uint32) *fileHandle {
	m.sess.HandleOpened()
	return &fileHandle{m: m, h: h, n: n, flags: flags}
}

// Large reads and writes of cached files go out as several RPCs at once:
// the parts cross the connection, and the host reads or writes them,
// side by side instead of one after the other. Direct-I/O files (proc,
// sysfs, cgroup, cache=none) and O_APPEND writes keep one RPC per chunk,
// in order: there a read or write must reach the host as one call.
const (
	// ioPart is the size of one part.
	ioPart = 256 << 10
	// ioSplitMin is the smallest read or write that is split.
	ioSplitMin = 2 * ioPart
)

// split reports whether a transfer of size bytes goes out in parts, and
// their size.
func (f *fileHandle) split(size int, write bool) (int, bool) {
	m := f.m
	if size < ioSplitMin || m.directIO || (write && f.flags&syscall.O_APPEND != 0) {
		return 0, false
	}
	return min(ioPart, m.sess.Chunk()), true
}

// parallel runs part(i) for i in [0, parts) at once and returns how many
// of the parts, from the first, fully succeeded, and the error of the
// first part when it failed.
func parallel(parts int, part func(i int) (full bool, e syscall.Errno)) (int, syscall.Errno) {
	full := make([]bool, parts)
	errs := make([]syscall.Errno, parts)
	var wg sync.WaitGroup
	for i := 1; i < parts; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			full[i], errs[i] = part(i)
		}()
	}
	full[0], errs[0] = part(0)
	wg.Wait()
	if errs[0] != 0 {
		return 0, errs[0]
	}
	n := 0
	for n < parts && errs[n] == 0 && full[n] {
		n++
	}
	return n, 0
}

// handleID is the handle stat and attribute changes go through: none (the
// path) for a file the server closed at open, which a stat should not
// open again.
func (f *fileHandle) handleID() uint64 {
	if f.closedAtOpen {
		return 0
	}
	return f.h
}

func (f *fileHandle) setInline(data []byte, eof bool) {
	f.mu.Lock()
	f.inline, f.inlinePos, f.inlineEOF, f.hasInline = data, 0, eof, true
	f.mu.Unlock()
}

// takeInline serves a read from the Open RPC's bytes when it continues
// where the previous read stopped. Any other read, a read past them, or
// a write drops them: a file read again from the start is read afresh.
func (f *fileHandle) takeInline(off int64, size int) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.hasInline {
		return nil, false
	}
	if off != f.inlinePos {
		f.dropInlineLocked()
		return nil, false
	}
	if off < int64(len(f.inline)) {
		end := min(int64(len(f.inline)), off+int64(size))
		out := f.inline[off:end]
		f.inlinePos = end
		return out, true
	}
	eof := f.inlineEOF
	f.dropInlineLocked()
	if eof {
		return nil, true
	}
	return nil, false
}

func (f *fileHandle) dropInlineLocked() {
	f.inline, f.hasInline = nil, false
}

// Read reads at off, in RPCs of at most the session's chunk size.
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if data, ok := f.takeInline(off, len(dest)); ok {
		return fuse.ReadResultData(data), 0
	}
	m := f.m
	chunk := m.sess.Chunk()
	if size, ok := f.split(len(dest), false); ok {
		return f.readParts(ctx, dest, off, size)
	}
	if len(dest) <= chunk {
		resp, e := session.Call(context.Background(), m.sess, "Read", qtfsv1.FileSystemClient.Read,
			&qtfsv1.ReadRequest{Handle: f.h, Offset: off, Size: uint32(len(dest))}, m.callOptsFor(ctx))
		if e != 0 {
			return nil, f.vanished(e)
		}
		if len(resp.GetData()) > len(dest) {
			return nil, syscall.EIO
		}
		m.sess.CountRead(len(resp.GetData()))
		return fuse.ReadResultData(resp.GetData()), 0
	}
	n := 0
	for n < len(dest) {
		want := min(chunk, len(dest)-n)
		resp, e := session.Call(context.Background(), m.sess, "Read", qtfsv1.FileSystemClient.Read,
			&qtfsv1.ReadRequest{Handle: f.h, Offset: off + int64(n), Size: uint32(want)}, m.callOptsFor(ctx))
		if e != 0 {
			if n > 0 {
				break
			}
			return nil, e
		}
		got := resp.GetData()
		if len(got) > want {
			return nil, syscall.EIO
		}
		n += copy(dest[n:], got)
		m.sess.CountRead(len(got))
		if len(got) < want {
			break
		}
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// vanished is the errno of a read of a file the server closed at open
// that could not be opened again for it: a read through a file held open
// on the host gives ESRCH once its process ended (/proc/PID) and ENODEV
// once its device or cgroup is removed (sysfs, cgroupfs), where opening
// it again gives ENOENT.
func (f *fileHandle) vanished(e syscall.Errno) syscall.Errno {
	if !f.closedAtOpen || e != syscall.ENOENT {
		return e
	}
	if f.m.kind == qtfsv1.FsKind_FS_KIND_PROC {
		return syscall.ESRCH
	}
	return syscall.ENODEV
}

// prefix is the bytes the parts moved without a gap: the full parts and
// the short one after them, which ends the transfer.
func prefix(moved []int, full int) int {
	n := 0
	for i := 0; i < len(moved) && i <= full; i++ {
		n += moved[i]
	}
	return n
}

// readParts reads len(dest) bytes at off in parts of size bytes, at once.
// The result ends at the first short part; it hands the buffers the
// parts' data arrived in to go-fuse, which writes them to the kernel
// without joining them first. Every part is made for the FUSE request
// ctx: when its caller is killed, all of them are cancelled.
func (f *fileHandle) readParts(ctx context.Context, dest []byte, off int64, size int) (fuse.ReadResult, syscall.Errno) {
	m := f.m
	parts := (len(dest) + size - 1) / size
	data := make([][]byte, parts)
	bufs := make([]mem.Buffer, parts)
	got := make([]int, parts)
	full, e := parallel(parts, func(i int) (bool, syscall.Errno) {
		lo := i * size
		want := min(size, len(dest)-lo)
		resp, e := session.Call(context.Background(), m.sess, "Read", qtfsv1.FileSystemClient.Read,
			&qtfsv1.ReadRequest{Handle: f.h, Offset: off + int64(lo), Size: uint32(want)}, session.CallOptions{Timeout: m.timeout, For: requestCaller(ctx), Data: true})
		if resp != nil {
			bufs[i] = m.sess.TakeReadBuffer(resp)
		}
		if e != 0 {
			return false, e
		}
		if len(resp.GetData()) > want {
			return false, syscall.EIO
		}
		data[i], got[i] = resp.GetData(), len(resp.GetData())
		m.sess.CountRead(got[i])
		return got[i] == want, 0
	})
	r := &partsResult{bufs: bufs}
	if e != 0 {
		r.Done()
		return nil, e
	}
	n := min(full+1, parts)
	r.parts, r.size = data[:n], prefix(got, full)
	return r, 0
}

// partsResult is the data of a read made of several parts, in order;
// only the last may be short.
type partsResult struct {
	parts [][]byte
	size  int
	// bufs are the received buffers the parts alias, given back once the
	// reply is written.
	bufs []mem.Buffer
}

func (r *partsResult) Size() int { return r.size }

func (r *partsResult) Done() {
	r.parts = nil
	for i, b := range r.bufs {
		if b != nil {
			b.Free()
			r.bufs[i] = nil
		}
	}
}

// Bytes joins the parts into buf (or a new buffer when it is too small).
func (r *partsResult) Bytes(buf []byte) ([]byte, fuse.Status) {
	if cap(buf) < r.size {
		buf = make([]byte, r.size)
	}
	buf = buf[:0]
	for _, p := range r.parts {
		buf = append(buf, p...)
	}
	return buf, fuse.OK
}

// Slices lets go-fuse write the parts with one writev.
func (r *partsResult) Slices() ([][]byte, fuse.Status) { return r.parts, fuse.OK }

// writeParts writes data at off in parts of size bytes, at once, and
// returns how much was written from off on without a gap. Like readParts,
// every part is made for the FUSE request ctx.
func (f *fileHandle) writeParts(ctx context.Context, data []byte, off int64, size int) (uint32, syscall.Errno) {
	m := f.m
	parts := (len(data) + size - 1) / size
	wrote := make([]int, parts)
	full, e := parallel(parts, func(i int) (bool, syscall.Errno) {
		lo := i * size
		want := min(size, len(data)-lo)
		resp, e := session.Call(context.Background(), m.sess, "Write", qtfsv1.FileSystemClient.Write,
			&qtfsv1.WriteRequest{Handle: f.h, Offset: off + int64(lo), Data: data[lo : lo+want]}, session.CallOptions{Timeout: m.timeout, For: requestCaller(ctx), Data: true})
		if e != 0 {
			return false, e
		}
		w := int(resp.GetWritten())
		if w > want {
			return false, syscall.EIO
		}
		wrote[i] = w
		m.sess.CountWritten(w)
		return w == want, 0
	})
	if e != 0 {
		return 0, e
	}
	return uint32(prefix(wrote, full)), 0
}

// Write writes data at off, in RPCs of at most the session's chunk size.
// It returns once the host's writes returned.
func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	f.mu.Lock()
	f.dropInlineLocked()
	f.mu.Unlock()
	if f.n != nil {
		defer f.n.attrsChanged()
	}
	if size, ok := f.split(len(data), true); ok {
		return f.writeParts(ctx, data, off, size)
	}
	m := f.m
	n := 0
	for n < len(data) || len(data) == 0 {
		want := min(m.sess.Chunk(), len(data)-n)
		resp, e := session.Call(context.Background(), m.sess, "Write", qtfsv1.FileSystemClient.Write,
			&qtfsv1.WriteRequest{Handle: f.h, Offset: off + int64(n), Data: data[n : n+want]}, m.callOptsFor(ctx))
		if e != 0 {
			if n > 0 {
				break
			}
			return 0, e
		}
		w := int(resp.GetWritten())
		if w > want {
			return 0, syscall.EIO
		}
		n += w
		m.sess.CountWritten(w)
		if w < want || len(data) == 0 {
			break
		}
	}
	return uint32(n), 0
}

// flushNeeded reports whether a close(2) of the file has something to
// ask of the server. Not on proc, sysfs and cgroup mounts: those
// filesystems keep no data to write back and report nothing at close.
// Nor on a read-only file: its close writes nothing back, and its locks
// belong to the handle, released with it. Nor where the host's close(2)
// could only repeat what the writes said (flush_needless). Such a file
// is opened with FOPEN_NOFLUSH (noFlush), so the kernel does not even
// send FLUSH: a close costs no round trip to this daemon either.
func (f *fileHandle) flushNeeded() bool {
	return !f.m.special && f.flags&syscall.O_ACCMODE != syscall.O_RDONLY && !f.flushNeedless
}

// noFlush is the FOPEN_ flag that spares the kernel's FLUSH of a file
// whose close needs nothing (see flushNeeded).
func (f *fileHandle) noFlush() uint32 {
	if f.flushNeeded() {
		return 0
	}
	return fuse.FOPEN_NOFLUSH
}

// Flush is called on each close(2) of a descriptor of the file opened
// without FOPEN_NOFLUSH: it reaches the host's close(2) of a duplicate of
// the handle's descriptor, whose errors (a network filesystem's) the
// caller of close(2) gets.
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno {
	m := f.m
	if !f.flushNeeded() {
		return 0
	}
	_, e := session.Call(context.Background(), m.sess, "Flush", qtfsv1.FileSystemClient.Flush, &qtfsv1.FlushRequest{Handle: f.h}, m.callOpts())
	return e
}

// Fsync reaches the host's fsync(2), or fdatasync(2) when flags say so.
// Like a read or write, it is cancelled when its caller is killed.
func (f *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	m := f.m
	_, e := session.Call(context.Background(), m.sess, "Fsync", qtfsv1.FileSystemClient.Fsync,
		&qtfsv1.FsyncRequest{Handle: f.h, Datasync: flags&1 != 0}, m.callOptsFor(ctx))
	return e
}

// Release closes the file on the server.
func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	m := f.m
	m.sess.HandleClosed()
	_, e := session.Call(context.Background(), m.sess, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: f.h}, m.callOpts())
	return e
}

// Getattr is fstat(2): it works once the file is unlinked.
func (f *fileHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.n.getattr(ctx, f.handleID(), out)
}

// Setattr is ftruncate(2), fchmod(2), fchown(2) and futimens(3).
func (f *fileHandle) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.n.setattr(ctx, f.h, in, out)
}

// Allocate is fallocate(2); it is cancelled when its caller is killed.
func (f *fileHandle) Allocate(ctx context.Context, off, size uint64, mode uint32) syscall.Errno {
	if off > math.MaxInt64 || size > math.MaxInt64 {
		return syscall.EFBIG
	}
	m := f.m
	_, e := session.Call(context.Background(), m.sess, "Fallocate", qtfsv1.FileSystemClient.Fallocate,
		&qtfsv1.FallocateRequest{Handle: f.h, Mode: mode, Offset: int64(off), Length: int64(size)}, m.callOptsFor(ctx))
	if f.n != nil {
		f.n.attrsChanged()
	}
	return e
}

// Lseek answers SEEK_DATA and SEEK_HOLE; the kernel handles the others.
func (f *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	if off > math.MaxInt64 {
		return 0, syscall.ENXIO
	}
	m := f.m
	resp, e := session.Call(context.Background(), m.sess, "Lseek", qtfsv1.FileSystemClient.Lseek,
		&qtfsv1.LseekRequest{Handle: f.h, Offset: int64(off), Whence: whence}, m.callOpts())
	if e != 0 {
		return 0, e
	}
	if resp.GetOffset() < 0 {
		return 0, syscall.EIO
	}
	return uint64(resp.GetOffset()), 0
}

// lockEOF is the kernel's "to end of file" (OFFSET_MAX); the wire says
// math.MaxUint64.
const lockEOF = math.MaxInt64

func lockToWire(lk *fuse.FileLock) *qtfsv1.Lock {
	end := lk.End
	if end >= lockEOF {
		end = math.MaxUint64
	}
	return &qtfsv1.Lock{Start: min(lk.Start, lockEOF), End: end, Type: lk.Typ}
}

// lockFromWire converts a lock of a reply; the kernel fails the call with
// EIO on any lock it cannot represent, so such a lock is EIO here.
func lockFromWire(l *qtfsv1.Lock, out *fuse.FileLock) syscall.Errno {
	if l == nil {
		return syscall.EIO
	}
	switch l.GetType() {
	case syscall.F_UNLCK:
		*out = fuse.FileLock{Typ: syscall.F_UNLCK}
		return 0
	case syscall.F_RDLCK, syscall.F_WRLCK:
	default:
		return syscall.EIO
	}
	end := l.GetEnd()
	if end > lockEOF {
		end = lockEOF
	}
	if l.GetStart() > end {
		return syscall.EIO
	}
	// The holder's pid is a host pid, or a DPU pid the host cannot vouch
	// for: report none.
	*out = fuse.FileLock{Start: l.GetStart(), End: end, Typ: l.GetType()}
	return 0
}

// Getlk tests for a lock that would conflict with lk.
func (f *fileHandle) Getlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32, out *fuse.FileLock) syscall.Errno {
	m := f.m
	resp, e := session.Call(context.Background(), m.sess, "Getlk", qtfsv1.FileSystemClient.Getlk,
		&qtfsv1.GetlkRequest{Handle: f.h, Owner: owner, Lock: lockToWire(lk)}, m.callOpts())
	if e != 0 {
		return e
	}
	return lockFromWire(resp.GetLock(), out)
}

// Setlk takes or releases a record lock, or a flock(2) lock, without
// waiting.
func (f *fileHandle) Setlk(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	m := f.m
	_, e := session.Call(context.Background(), m.sess, "Setlk", qtfsv1.FileSystemClient.Setlk, &qtfsv1.SetlkRequest{
		Handle: f.h, Owner: owner, Lock: lockToWire(lk), Flock: flags&fuse.LK_FLOCK != 0,
	}, m.callOpts())
	return e
}

// Setlkw waits for a lock as long as it is held elsewhere: it has no
// deadline and ends with EINTR when the caller is interrupted.
func (f *fileHandle) Setlkw(ctx context.Context, owner uint64, lk *fuse.FileLock, flags uint32) syscall.Errno {
	m := f.m
	_, e := session.Call(ctx, m.sess, "Setlkw", qtfsv1.FileSystemClient.Setlk, &qtfsv1.SetlkRequest{
		Handle: f.h, Owner: owner, Lock: lockToWire(lk), Wait: true, Flock: flags&fuse.LK_FLOCK != 0,
	}, session.CallOptions{})
	return e
}
