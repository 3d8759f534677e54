package fuseclient

import (
	"context"
	"strconv"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// readdirBatch is how many entries one Readdir RPC asks for.
const readdirBatch = 1024

// dirHandle is a directory open on the server. go-fuse serialises
// Readdirent, Lookup and Seekdir of one handle (it holds the handle's
// lock around them), so the stream state needs no lock of its own.
type dirHandle struct {
	m *mountFS
	h uint64
	n *node

	// batch holds the entries of the last Readdir RPC; next is the
	// index of the next one to hand out.
	batch []*qtfsv1.DirEntry
	next  int
	// off is the server's cookie to resume after: that of the last entry
	// received, 0 at the start.
	off uint64
	eof bool
	// dots is how many of "." and ".." were handed out. The server never
	// lists them; the kernel sees "." at offset 1, ".." at 2 and the
	// server's entries at their cookie + dotsOffset.
	dots int

	// proc is set when the handle lists the root of a proc mount: self
	// and thread-self are the client's links, and the offloaded DPU
	// processes (local, a snapshot taken when the listing starts) are
	// listed after the host's entries, as the client's directories, in
	// place of the host's processes of the same numbers. Local entry i has the kernel offset
	// localCookieBase+i+1.
	proc       *procRoot
	local      []uint32
	localSet   map[uint32]bool
	localPhase bool
	localNext  int
	// listed collects the host's pids of a proc root listing read from
	// its start, for procRoot.pruneUnlisted at its end; nil after a seek
	// elsewhere, or once handed over.
	listed map[string]struct{}

	// closedAtOpen: the Open listed the whole directory and the server
	// closed it; a rewind opens it again (as after a reconnect).
	closedAtOpen bool

	// ahead is the Readdir of the batch after the current one, sent when
	// the kernel starts on the current one: the host's stat of the next
	// entries then overlaps the hand-out of these.
	ahead *batchAhead
}

// batchAhead is a Readdir sent ahead of need. done closes when resp and
// e are set.
type batchAhead struct {
	off  uint64
	done chan struct{}
	resp *qtfsv1.ReaddirResponse
	e    syscall.Errno
}

// dotsOffset shifts the server's cookies (d_off, at most 2^63-1) past the
// offsets of "." and "..".
const dotsOffset = 2

var (
	_ fs.FileReaddirenter = (*dirHandle)(nil)
	_ fs.FileLookuper     = (*dirHandle)(nil)
	_ fs.FileSeekdirer    = (*dirHandle)(nil)
	_ fs.FileReleasedirer = (*dirHandle)(nil)
	_ fs.FileFsyncdirer   = (*dirHandle)(nil)
	_ fs.FileGetattrer    = (*dirHandle)(nil)
)

func (m *mountFS) newDirHandle(h uint64, n *node) *dirHandle {
	m.sess.HandleOpened()
	d := &dirHandle{m: m, h: h, n: n}
	if m.proc != nil && n == m.root {
		d.proc = m.proc
		d.snapshotLocal()
		d.listed = map[string]struct{}{}
	}
	return d
}

// snapshotLocal takes the list of offloaded DPU processes a proc root
// listing shows.
func (d *dirHandle) snapshotLocal() {
	d.local = d.proc.localPids()
	d.localSet = make(map[uint32]bool, len(d.local))
	for _, pid := range d.local {
		d.localSet[pid] = true
	}
}

// procKind tells which of the proc root's own entries a listed name is.
func (d *dirHandle) procKind(name string) (entryKind, uint32) {
	switch name {
	case "self":
		return entrySelf, 0
	case "thread-self":
		return entryThreadSelf, 0
	}
	if pid, ok := parsePid(name); ok && d.localSet[pid] {
		return entryLocalPid, pid
	}
	return entryNone, 0
}

// nextLocal hands out the next offloaded process of a proc root listing.
func (d *dirHandle) nextLocal() *fuse.DirEntry {
	if d.localNext >= len(d.local) {
		return nil
	}
	pid := d.local[d.localNext]
	d.localNext++
	return &fuse.DirEntry{
		Name: strconv.FormatUint(uint64(pid), 10),
		Mode: syscall.S_IFDIR,
		Ino:  d.m.inos.ino(localDev, entryIno(entryLocalPid, pid)),
		Off:  localCookieBase + uint64(d.localNext),
	}
}

// handleID is the handle stat goes through: none (the path) for a
// directory the server closed at open.
func (d *dirHandle) handleID() uint64 {
	if d.closedAtOpen {
		return 0
	}
	return d.h
}

// fill fetches the next batch of entries, with attributes: the one sent
// ahead when it is for the current position and did not fail, else by a
// Readdir of its own.
func (d *dirHandle) fill() syscall.Errno {
	if a := d.takeAhead(); a != nil && a.off == d.off && a.e == 0 {
		return d.take(a.resp.GetEntries(), a.resp.GetEof())
	}
	resp, e := d.readdir(d.off)
	if e != 0 {
		return e
	}
	return d.take(resp.GetEntries(), resp.GetEof())
}

// readdir asks the server for the batch after cookie off.
func (d *dirHandle) readdir(off uint64) (*qtfsv1.ReaddirResponse, syscall.Errno) {
	m := d.m
	return session.Call(context.Background(), m.sess, "Readdir", qtfsv1.FileSystemClient.Readdir, &qtfsv1.ReaddirRequest{
		Handle: d.h, Offset: off, MaxEntries: readdirBatch, Plus: true,
	}, m.callOpts())
}

// sendAhead sends the Readdir of the batch after the current one, unless
// the current one ends the directory or one is already on its way.
func (d *dirHandle) sendAhead() {
	if d.eof || d.ahead != nil {
		return
	}
	a := &batchAhead{off: d.off, done: make(chan struct{})}
	d.ahead = a
	go func() {
		a.resp, a.e = d.readdir(a.off)
		close(a.done)
	}()
}

// takeAhead waits for the Readdir sent ahead, if any, and hands it over.
func (d *dirHandle) takeAhead() *batchAhead {
	a := d.ahead
	if a != nil {
		d.ahead = nil
		<-a.done
	}
	return a
}

// take makes entries, from a Readdir or the Open's inline listing, the
// current batch; eof says they end the directory.
func (d *dirHandle) take(entries []*qtfsv1.DirEntry, eof bool) syscall.Errno {
	m := d.m
	if len(entries) > readdirBatch {
		m.log.Warn("qtfs readdir reply larger than asked", zap.Int("entries", len(entries)))
		return syscall.EIO
	}
	d.batch, d.next = d.batch[:0], 0
	for _, de := range entries {
		name := de.GetName()
		if string(name) == "." || string(name) == ".." {
			continue // handed out by Readdirent itself
		}
		if e := qfs.ValidName(name); e != 0 {
			m.log.Warn("qtfs readdir entry with an invalid name dropped", zap.ByteString("name", name))
			continue
		}
		d.batch = append(d.batch, de)
		if d.listed != nil {
			if _, ok := parsePid(string(name)); ok {
				d.listed[string(name)] = struct{}{}
			}
		}
	}
	if len(entries) > 0 {
		d.off = entries[len(entries)-1].GetOffset()
	}
	d.eof = eof || len(entries) == 0
	if d.eof && d.listed != nil {
		d.proc.pruneUnlisted(d.listed)
		d.listed = nil
	}
	return 0
}

// Readdirent hands out the next entry, fetching a batch when needed; nil
// at the end of the directory.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if d.dots < 2 {
		d.dots++
		if d.dots == 1 {
			return &fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.n.StableAttr().Ino, Off: 1}, 0
		}
		ino := d.n.StableAttr().Ino
		if _, parent := d.n.Parent(); parent != nil {
			ino = parent.StableAttr().Ino
		}
		return &fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: ino, Off: 2}, 0
	}
	for {
		if d.localPhase {
			return d.nextLocal(), 0
		}
		for d.next >= len(d.batch) {
			if d.eof {
				if d.proc == nil {
					return nil, 0
				}
				d.localPhase, d.localNext = true, 0
				return d.nextLocal(), 0
			}
			if e := d.fill(); e != 0 {
				return nil, e
			}
		}
		if d.next == 0 {
			// The reader is into this batch: it will most likely want
			// the next one too.
			d.sendAhead()
		}
		de := d.batch[d.next]
		d.next++
		if d.proc == nil {
			return d.entry(de), 0
		}
		switch kind, pid := d.procKind(string(de.GetName())); kind {
		case entryNone:
			return d.entry(de), 0
		case entryLocalPid:
			// Listed with the offloaded processes, after the host's.
			continue
		default:
			return &fuse.DirEntry{
				Name: string(de.GetName()),
				Mode: syscall.S_IFLNK,
				Ino:  d.m.inos.ino(localDev, entryIno(kind, pid)),
				Off:  de.GetOffset() + dotsOffset,
			}, 0
		}
	}
}

// entry converts a server's directory entry.
func (d *dirHandle) entry(de *qtfsv1.DirEntry) *fuse.DirEntry {
	out := &fuse.DirEntry{Name: string(de.GetName()), Off: de.GetOffset() + dotsOffset}
	if a := de.GetAttr(); a != nil {
		out.Mode = a.GetMode() & syscall.S_IFMT
		out.Ino = d.m.inos.ino(a.GetDev(), a.GetIno())
	} else {
		out.Mode = de.GetType() & syscall.S_IFMT
		out.Ino = d.m.inos.ino(d.m.rootDev, de.GetIno())
	}
	return out
}

// Lookup answers READDIRPLUS for an entry Readdirent handed out, from the
// attributes that came with it: no RPC. An entry whose attributes the
// server could not read is listed without them.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.proc != nil {
		if kind, pid := d.procKind(name); kind != entryNone {
			return d.proc.newEntry(ctx, d.n.EmbeddedInode(), kind, pid, out)
		}
	}
	var a *qtfsv1.Attr
	for i := d.next - 1; i >= 0 && i < len(d.batch); i-- {
		if string(d.batch[i].GetName()) == name {
			a = d.batch[i].GetAttr()
			break
		}
	}
	if a == nil {
		return nil, syscall.ENOENT
	}
	ch, e := d.n.newChild(ctx, a, out)
	if e == 0 {
		d.m.specialTimeouts(a, true, out)
	}
	return ch, e
}

// Seekdir restarts the stream after the entry at kernel offset off (0:
// the start, 1: after ".", 2: after "..").
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.batch, d.next, d.eof = d.batch[:0], 0, false
	d.localPhase, d.localNext = false, 0
	if d.proc != nil && off >= localCookieBase {
		// Among the offloaded processes, after all of the host's.
		d.dots, d.eof, d.localPhase = 2, true, true
		d.localNext = int(min(off-localCookieBase, uint64(len(d.local))))
		return 0
	}
	d.listed = nil
	if d.proc != nil && off == 0 {
		d.snapshotLocal() // rewinddir(3): a fresh listing
		d.listed = map[string]struct{}{}
	}
	if off < dotsOffset {
		d.dots, d.off = int(off), 0
	} else {
		d.dots, d.off = 2, off-dotsOffset
	}
	return 0
}

// Releasedir closes the directory on the server.
func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	d.takeAhead() // the server closes the handle after its last Readdir
	m := d.m
	m.sess.HandleClosed()
	session.Call(context.Background(), m.sess, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: d.h}, m.callOpts())
}

// Fsyncdir is fsync(2) of the directory.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	m := d.m
	_, e := session.Call(context.Background(), m.sess, "Fsync", qtfsv1.FileSystemClient.Fsync,
		&qtfsv1.FsyncRequest{Handle: d.h, Datasync: flags&1 != 0}, m.callOpts())
	return e
}

// Getattr is fstat(2) of the open directory.
func (d *dirHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return d.n.getattr(ctx, d.handleID(), out)
}
