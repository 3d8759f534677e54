package fuseclient

import (
	"context"
	"math"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// xattrSizeMax is the largest extended attribute value or list
// (XATTR_SIZE_MAX).
const xattrSizeMax = 64 << 10

// maxCopy bounds one CopyFileRange RPC (the kernel's reply is 32 bits).
const maxCopy = 1 << 30

// fmodeExec is the kernel's FMODE_EXEC, set in the flags of an open for
// execve(2); it is no open(2) flag.
const fmodeExec = fuse.FMODE_EXEC

// node is one file, directory or other object of a mount.
type node struct {
	fs.Inode
	m *mountFS

	// A mount holds one node per inode the kernel knows (tens of
	// thousands after a tree walk): the fields are kept small, times as
	// monoNow values.
	mu sync.Mutex
	// opened says mtime and size hold what the previous open saw
	// (policy auto keeps the page cache while they do not change).
	opened    bool
	openNsec  uint32
	openMtime int64
	openSize  int64
	// dir is the listing state of a directory (nil until needed).
	dir *dirState
	// noCapsUntil: until then the file is known to have no
	// security.capability attribute (see capsKnownAbsent); noXattrsUntil:
	// no extended attribute at all (see xattrsKnownAbsent).
	noCapsUntil   int64
	noXattrsUntil int64
	// keptAttr, until keptUntil, are attributes the server just sent
	// that answer the kernel's next GETATTR: a directory's with a change
	// this client made in it (see dirChanged), a /proc or /sys file's
	// with its open (see keepOpenAttr).
	keptAttr  *qtfsv1.Attr
	keptUntil int64
}

// monoStart anchors monoNow.
var monoStart = time.Now()

// monoNow is a monotonic clock reading in nanoseconds, 8 bytes where a
// time.Time takes 24.
func monoNow() int64 { return int64(time.Since(monoStart)) }

var (
	_ fs.NodeLookuper       = (*node)(nil)
	_ fs.NodeGetattrer      = (*node)(nil)
	_ fs.NodeSetattrer      = (*node)(nil)
	_ fs.NodeReadlinker     = (*node)(nil)
	_ fs.NodeSymlinker      = (*node)(nil)
	_ fs.NodeMknoder        = (*node)(nil)
	_ fs.NodeMkdirer        = (*node)(nil)
	_ fs.NodeUnlinker       = (*node)(nil)
	_ fs.NodeRmdirer        = (*node)(nil)
	_ fs.NodeRenamer        = (*node)(nil)
	_ fs.NodeLinker         = (*node)(nil)
	_ fs.NodeOpener         = (*node)(nil)
	_ fs.NodeCreater        = (*node)(nil)
	_ fs.NodeOpendirHandler = (*node)(nil)
	_ fs.NodeStatfser       = (*node)(nil)
	_ fs.NodeGetxattrer     = (*node)(nil)
	_ fs.NodeSetxattrer     = (*node)(nil)
	_ fs.NodeListxattrer    = (*node)(nil)
	_ fs.NodeRemovexattrer  = (*node)(nil)
	_ fs.NodeCopyFileRanger = (*node)(nil)
	_ fs.NodeOnForgetter    = (*node)(nil)
)

// handle is an open file or directory of the server.
type handle interface {
	handleID() uint64
}

// path returns the node's path from the mount root as the wire carries
// it, or ENOENT when the node is in no directory (it was unlinked).
func (n *node) path() ([]byte, syscall.Errno) {
	root := n.m.root.EmbeddedInode()
	var names []string
	size := 0
	for p := n.EmbeddedInode(); p != root; {
		name, parent := p.Parent()
		if parent == nil {
			return nil, syscall.ENOENT
		}
		names = append(names, name)
		size += len(name) + 1
		if size > qfs.PathMax+1 {
			return nil, syscall.ENAMETOOLONG
		}
		p = parent
	}
	if len(names) == 0 {
		return nil, 0
	}
	out := make([]byte, 0, size-1)
	for i := len(names) - 1; i >= 0; i-- {
		out = append(out, names[i]...)
		if i > 0 {
			out = append(out, '/')
		}
	}
	return out, 0
}

// child returns the path of name in directory n.
func (n *node) child(name string) (dir, bname []byte, errno syscall.Errno) {
	bname = []byte(name)
	if e := qfs.ValidName(bname); e != 0 {
		return nil, nil, e
	}
	dir, errno = n.path()
	return dir, bname, errno
}

// fillAttr converts a wire Attr, with the mount's inode number.
func (m *mountFS) fillAttr(out *fuse.Attr, a *qtfsv1.Attr) {
	out.Ino = m.inos.ino(a.GetDev(), a.GetIno())
	out.Size = uint64(max(a.GetSize(), 0))
	out.Blocks = uint64(max(a.GetBlocks(), 0))
	out.Atime = uint64(a.GetAtimeSec())
	out.Atimensec = min(a.GetAtimeNsec(), 999999999)
	out.Mtime = uint64(a.GetMtimeSec())
	out.Mtimensec = min(a.GetMtimeNsec(), 999999999)
	out.Ctime = uint64(a.GetCtimeSec())
	out.Ctimensec = min(a.GetCtimeNsec(), 999999999)
	out.Mode = a.GetMode()
	out.Nlink = a.GetNlink()
	out.Uid = a.GetUid()
	out.Gid = a.GetGid()
	// The host's dev_t and the kernel's 32-bit encoding agree for every
	// major below 4096 and minor below 2^20.
	out.Rdev = uint32(a.GetRdev())
	out.Blksize = a.GetBlksize()
}

// newChild makes (or finds, for a hard link) the node of a reply's
// attributes and fills out.
func (n *node) newChild(ctx context.Context, a *qtfsv1.Attr, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if a == nil {
		return nil, syscall.EIO
	}
	n.m.fillAttr(&out.Attr, a)
	ch := n.NewInode(ctx, &node{m: n.m}, fs.StableAttr{Mode: a.GetMode() & syscall.S_IFMT, Ino: out.Attr.Ino})
	return ch, 0
}

// Lookup finds name in the directory, with its attributes, in one RPC.
func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	m := n.m
	if m.proc != nil && n == m.root {
		if ch, e, ok := m.proc.lookup(ctx, n, name, out); ok {
			return ch, e
		}
	}
	dir, bname, e := n.child(name)
	if e != 0 {
		return nil, e
	}
	if ch, e, ok := n.lookupListed(ctx, name, out); ok {
		return ch, e
	}
	caller := m.caller(ctx)
	resp, e := session.Call(context.Background(), m.sess, "Lookup", qtfsv1.FileSystemClient.Lookup,
		&qtfsv1.LookupRequest{Mount: m.id, Caller: caller, Path: dir, Name: bname}, m.callOpts())
	if e == 0 || e == syscall.ENOENT {
		n.missed(caller)
	}
	if e != 0 {
		n.failed(e)
		return nil, e
	}
	ch, e := n.newChild(ctx, resp.GetAttr(), out)
	if e == 0 {
		m.specialTimeouts(resp.GetAttr(), false, out)
	}
	return ch, e
}

// specialTimeouts sets how long the kernel keeps an entry of a special
// mount under the default policy, and its attributes: specialTTL, except
// for the name of a directory, which is looked up again on every walk so
// that a process, device or cgroup that is gone is gone at once. One
// exception to the exception: the directories a listing of a proc mount
// names (listed) are kept, since a scan of /proc lists it and then reads a
// few files of each process, walking through each process's directory
// again for each file. The client drops such an entry as soon as it sees
// the process gone (procRoot.sawGone, procRoot.pruneUnlisted).
func (m *mountFS) specialTimeouts(a *qtfsv1.Attr, listed bool, out *fuse.EntryOut) {
	if m.specialTTL <= 0 {
		return
	}
	out.SetAttrTimeout(m.specialTTL)
	if a.GetMode()&syscall.S_IFMT != syscall.S_IFDIR || listed && m.proc != nil {
		out.SetEntryTimeout(m.specialTTL)
	}
}

// failed is told the errno of a call on n (or, for a Lookup, in n) that
// failed: a proc mount drops the kernel's entry of a process found gone.
// A name missing from the directory of a living process costs that
// process's entry too, which the next walk looks up again.
func (n *node) failed(e syscall.Errno) {
	if n.m.proc != nil {
		n.m.proc.sawGone(n, e)
	}
}

// getattr stats the node, through h when it is open (which also works
// once the node is unlinked).
func (n *node) getattr(ctx context.Context, h uint64, out *fuse.AttrOut) syscall.Errno {
	m := n.m
	if h == 0 {
		if a := n.takeKeptAttr(); a != nil {
			m.fillAttr(&out.Attr, a)
			if m.specialTTL > 0 {
				out.SetTimeout(m.specialTTL)
			}
			return 0
		}
	}
	p, e := n.path()
	if e != 0 && h == 0 {
		return e
	}
	resp, e := session.Call(context.Background(), m.sess, "Getattr", qtfsv1.FileSystemClient.Getattr,
		&qtfsv1.GetattrRequest{Mount: m.id, Caller: m.caller(ctx), Path: p, Handle: h}, m.callOpts())
	n.failed(e)
	if e == syscall.ENOENT && h == 0 && n != m.root {
		// The inode's path is gone (removed or renamed on the host):
		// the inode is stale. stat(2) retries with a fresh lookup.
		n.parentListingWrong()
		return syscall.ESTALE
	}
	if e != 0 {
		return e
	}
	if resp.GetAttr() == nil {
		return syscall.EIO
	}
	m.fillAttr(&out.Attr, resp.GetAttr())
	if m.specialTTL > 0 {
		out.SetTimeout(m.specialTTL)
	}
	if h == 0 && n != m.root && out.Attr.Ino != n.StableAttr().Ino {
		// The path names another file now (renamed over on the host):
		// this inode is stale. stat(2) retries with a fresh lookup.
		n.parentListingWrong()
		return syscall.ESTALE
	}
	return 0
}

// Getattr answers stat(2); go-fuse passes an open handle of the node when
// it has one.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var h uint64
	if fh, ok := f.(handle); ok {
		h = fh.handleID()
	}
	return n.getattr(ctx, h, out)
}

// Setattr answers chmod, chown, truncate and utimes, on the open handle
// when the kernel names one.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var h uint64
	if fh, ok := f.(handle); ok {
		h = fh.handleID()
	}
	return n.setattr(ctx, h, in, out)
}

func (n *node) setattr(ctx context.Context, h uint64, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	p, e := n.path()
	if e != 0 && h == 0 {
		return e
	}
	m := n.m
	req := &qtfsv1.SetattrRequest{Mount: m.id, Caller: m.caller(ctx), Path: p, Handle: h}
	var valid qtfsv1.SetattrValid
	if mode, ok := in.GetMode(); ok {
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_MODE
		req.Mode = mode
	}
	if uid, ok := in.GetUID(); ok {
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_UID
		req.Uid = uid
	}
	if gid, ok := in.GetGID(); ok {
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_GID
		req.Gid = gid
	}
	if size, ok := in.GetSize(); ok {
		if size > math.MaxInt64 {
			return syscall.EFBIG
		}
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_SIZE
		req.Size = int64(size)
	}
	switch {
	case in.Valid&fuse.FATTR_ATIME_NOW != 0:
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_ATIME_NOW
	case in.Valid&fuse.FATTR_ATIME != 0:
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_ATIME
		req.AtimeSec, req.AtimeNsec = int64(in.Atime), in.Atimensec
	}
	switch {
	case in.Valid&fuse.FATTR_MTIME_NOW != 0:
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_MTIME_NOW
	case in.Valid&fuse.FATTR_MTIME != 0:
		valid |= qtfsv1.SetattrValid_SETATTR_VALID_MTIME
		req.MtimeSec, req.MtimeNsec = int64(in.Mtime), in.Mtimensec
	}
	if valid == 0 {
		// Nothing the host must change (a lock owner, a ctime, a
		// set-id clearing the host does itself): report the attributes.
		return n.getattr(ctx, h, out)
	}
	req.Valid = uint32(valid)
	resp, e := session.Call(context.Background(), m.sess, "Setattr", qtfsv1.FileSystemClient.Setattr, req, m.callOpts())
	n.attrsChanged() // also on failure: a part may have been applied
	if e != 0 {
		return e
	}
	if resp.GetAttr() == nil {
		return syscall.EIO
	}
	m.fillAttr(&out.Attr, resp.GetAttr())
	return 0
}

// Readlink returns the symlink's target; the kernel resolves it.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	p, e := n.path()
	if e != 0 {
		return nil, e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Readlink", qtfsv1.FileSystemClient.Readlink,
		&qtfsv1.ReadlinkRequest{Mount: m.id, Caller: m.caller(ctx), Path: p}, m.callOpts())
	if e != 0 {
		n.failed(e)
		return nil, e
	}
	t := resp.GetTarget()
	if len(t) == 0 || len(t) > qfs.PathMax {
		return nil, syscall.EIO
	}
	if m.proc != nil {
		if _, parent := n.Parent(); parent == m.root.EmbeddedInode() {
			t = hostSelfLink(t)
		}
	}
	return t, 0
}

// Symlink creates symlink name pointing to target.
func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, bname, e := n.child(name)
	if e != 0 {
		return nil, e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Symlink", qtfsv1.FileSystemClient.Symlink,
		&qtfsv1.SymlinkRequest{Mount: m.id, Caller: m.caller(ctx), Path: dir, Name: bname, Target: []byte(target)}, m.callOpts())
	if e != 0 {
		n.failedCreate(e)
		return nil, e
	}
	n.entryChanged(name, resp.GetAttr(), false)
	n.dirChanged(resp.GetDirAttr())
	return n.newChild(ctx, resp.GetAttr(), out)
}

// Mknod creates a fifo, socket, device or regular file. The kernel has
// applied the umask to mode already.
func (n *node) Mknod(ctx context.Context, name string, mode, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, bname, e := n.child(name)
	if e != 0 {
		return nil, e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Mknod", qtfsv1.FileSystemClient.Mknod,
		&qtfsv1.MknodRequest{Mount: m.id, Caller: m.caller(ctx), Path: dir, Name: bname, Mode: mode, Rdev: uint64(dev)}, m.callOpts())
	if e != 0 {
		n.failedCreate(e)
		return nil, e
	}
	n.entryChanged(name, resp.GetAttr(), false)
	n.dirChanged(resp.GetDirAttr())
	return n.newChild(ctx, resp.GetAttr(), out)
}

// Mkdir creates a directory. The kernel has applied the umask to mode.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	dir, bname, e := n.child(name)
	if e != 0 {
		return nil, e
	}
	m := n.m
	sent := time.Now()
	resp, e := session.Call(context.Background(), m.sess, "Mkdir", qtfsv1.FileSystemClient.Mkdir,
		&qtfsv1.MkdirRequest{Mount: m.id, Caller: m.caller(ctx), Path: dir, Name: bname, Mode: mode & 07777}, m.callOpts())
	if e != 0 {
		n.failedCreate(e)
		return nil, e
	}
	if resp.GetAttr().GetMode()&syscall.S_IFMT != syscall.S_IFDIR {
		// go-fuse refuses a directory that is none.
		n.dropListing()
		return nil, syscall.EIO
	}
	n.entryChanged(name, resp.GetAttr(), false)
	n.dirChanged(resp.GetDirAttr())
	ch, e := n.newChild(ctx, resp.GetAttr(), out)
	if cn, ok := ch.Operations().(*node); ok && e == 0 {
		// A new directory is empty: its names need no lookups.
		cn.newDirListing(sent)
	}
	return ch, e
}

// Unlink removes a non-directory.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	dir, bname, e := n.child(name)
	if e != 0 {
		return e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Unlink", qtfsv1.FileSystemClient.Unlink,
		&qtfsv1.UnlinkRequest{Mount: m.id, Caller: m.caller(ctx), Path: dir, Name: bname}, m.callOpts())
	n.removed(name, e)
	n.dirChanged(resp.GetDirAttr())
	return e
}

// Rmdir removes an empty directory.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	dir, bname, e := n.child(name)
	if e != 0 {
		return e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Rmdir", qtfsv1.FileSystemClient.Rmdir,
		&qtfsv1.RmdirRequest{Mount: m.id, Caller: m.caller(ctx), Path: dir, Name: bname}, m.callOpts())
	n.removed(name, e)
	n.dirChanged(resp.GetDirAttr())
	return e
}

// Rename moves name to newName in newParent, with renameat2 flags.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok || np.m != n.m {
		return syscall.EXDEV
	}
	oldDir, oldName, e := n.child(name)
	if e != 0 {
		return e
	}
	newDir, bnewName, e := np.child(newName)
	if e != 0 {
		return e
	}
	m := n.m
	_, e = session.Call(context.Background(), m.sess, "Rename", qtfsv1.FileSystemClient.Rename, &qtfsv1.RenameRequest{
		Mount: m.id, Caller: m.caller(ctx),
		OldPath: oldDir, OldName: oldName, NewPath: newDir, NewName: bnewName, Flags: flags,
	}, m.callOpts())
	// Both directories changed, or may have (a failure after the
	// move): their listings go.
	n.dropListing()
	np.dropListing()
	n.attrsChanged()
	np.attrsChanged()
	return e
}

// Link makes name in this directory a hard link to target.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	t, ok := target.(*node)
	if !ok || t.m != n.m {
		return nil, syscall.EXDEV
	}
	tp, e := t.path()
	if e != 0 {
		return nil, e
	}
	dir, bname, e := n.child(name)
	if e != 0 {
		return nil, e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Link", qtfsv1.FileSystemClient.Link,
		&qtfsv1.LinkRequest{Mount: m.id, Caller: m.caller(ctx), Path: tp, NewPath: dir, NewName: bname}, m.callOpts())
	if e != 0 {
		n.failedCreate(e)
		return nil, e
	}
	t.attrsChanged() // its link count
	n.entryChanged(name, resp.GetAttr(), false)
	n.dirChanged(resp.GetDirAttr())
	return n.newChild(ctx, resp.GetAttr(), out)
}

// openFlags removes from the kernel's open flags what must not reach the
// host: creation (Open never creates), O_DIRECT (the mount does direct
// I/O itself; the host's O_DIRECT would want aligned buffers) and
// FMODE_EXEC.
func openFlags(flags uint32) uint32 {
	return flags &^ (syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOCTTY | syscall.O_DIRECT | fmodeExec)
}

// fuseOpenFlags chooses the FOPEN_ flags of an open per cache policy and
// remembers what the open saw.
func (n *node) fuseOpenFlags(flags uint32, a *qtfsv1.Attr) uint32 {
	c := n.m.cache
	n.mu.Lock()
	same := n.opened && n.openMtime == a.GetMtimeSec() && n.openNsec == a.GetMtimeNsec() && n.openSize == a.GetSize()
	n.opened = a != nil
	n.openMtime, n.openNsec, n.openSize = a.GetMtimeSec(), a.GetMtimeNsec(), a.GetSize()
	n.mu.Unlock()
	switch {
	case n.m.directIO || flags&syscall.O_DIRECT != 0:
		return fuse.FOPEN_DIRECT_IO
	case c.keepAlways, c.keepIfUnchanged && same:
		return fuse.FOPEN_KEEP_CACHE
	}
	return 0
}

// Open opens the file on the host.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	p, e := n.path()
	if e != 0 {
		return nil, 0, e
	}
	m := n.m
	req := &qtfsv1.OpenRequest{Mount: m.id, Caller: m.caller(ctx), Path: p, Flags: openFlags(flags)}
	var resp *qtfsv1.OpenResponse
	var caller *fuse.Caller // of a proc mount's read-only open: for reading ahead
	if m.readInline > 0 && flags&syscall.O_ACCMODE == syscall.O_RDONLY {
		req.ReadInline = m.readInline
		req.CloseAtEof = m.sess.ReopensHandles()
		if m.proc != nil && req.CloseAtEof {
			caller, _ = fuse.FromContext(ctx)
			also, ahead := m.proc.planOpen(caller, n)
			if ahead != nil {
				// Read along with the open of another file of the
				// directory a moment ago: no round trip.
				resp = &qtfsv1.OpenResponse{Attr: ahead.attr, InlineData: ahead.data, InlineEof: true, Closed: true, FlushNeedless: true}
			}
			req.ReadAlso = also
		}
	}
	req.ProbeXattrs = n.knowsXattrsAbsence()
	if resp == nil {
		var e syscall.Errno
		resp, e = session.Call(context.Background(), m.sess, "Open", qtfsv1.FileSystemClient.Open, req, m.callOpts())
		if e != 0 {
			n.failed(e)
			return nil, 0, e
		}
		if m.proc != nil && len(resp.GetAlsoRead()) > 0 {
			m.proc.keepReadAhead(caller, n, resp.GetAlsoRead())
		}
	}
	if resp.GetNoXattrs() {
		n.xattrsAbsent()
	}
	fh := m.newFileHandle(resp.GetHandle(), n, flags)
	fh.flushNeedless = resp.GetFlushNeedless()
	fh.closedAtOpen = resp.GetClosed()
	n.keepOpenAttr(resp.GetAttr())
	m.sess.TrackPath(fh.h, n.path)
	if a := resp.GetAttr(); a != nil && n != m.root && m.inos.ino(a.GetDev(), a.GetIno()) != n.StableAttr().Ino {
		// The path names another file now: open(2) retries with a fresh
		// lookup on ESTALE.
		fh.Release(ctx)
		n.parentListingWrong()
		return nil, 0, syscall.ESTALE
	}
	if flags&syscall.O_TRUNC != 0 {
		n.attrsChanged()
	}
	if req.ReadInline > 0 && uint32(len(resp.GetInlineData())) <= req.ReadInline {
		fh.setInline(resp.GetInlineData(), resp.GetInlineEof())
	}
	return fh, n.fuseOpenFlags(flags, resp.GetAttr()) | fh.noFlush(), 0
}

// Create creates and opens a regular file in one RPC. The kernel has
// applied the umask to mode.
func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	dir, bname, e := n.child(name)
	if e != 0 {
		return nil, nil, 0, e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Create", qtfsv1.FileSystemClient.Create, &qtfsv1.CreateRequest{
		Mount: m.id, Caller: m.caller(ctx), Path: dir, Name: bname,
		Flags: (flags | syscall.O_CREAT) &^ (syscall.O_NOCTTY | syscall.O_DIRECT | fmodeExec), Mode: mode & 07777,
	}, m.callOpts())
	if e != 0 {
		n.failedCreate(e)
		return nil, nil, 0, e
	}
	n.entryChanged(name, resp.GetAttr(), false)
	n.dirChanged(resp.GetDirAttr())
	fh := m.newFileHandle(resp.GetHandle(), nil, flags)
	fh.flushNeedless = resp.GetFlushNeedless()
	ch, e := n.newChild(ctx, resp.GetAttr(), out)
	if e != 0 {
		fh.Release(ctx)
		return nil, nil, 0, e
	}
	cn, ok := ch.Operations().(*node)
	if !ok {
		fh.Release(ctx)
		return nil, nil, 0, syscall.EIO
	}
	fh.n = cn
	m.sess.TrackPath(fh.h, cn.path)
	if flags&syscall.O_EXCL != 0 {
		// The server made this file: it has no capability attribute.
		cn.capsAbsent()
	}
	return ch, fh, cn.fuseOpenFlags(flags, resp.GetAttr()) | fh.noFlush(), 0
}

// OpendirHandle opens the directory on the host; its handle feeds
// READDIR and READDIRPLUS.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	p, e := n.path()
	if e != 0 {
		return nil, 0, e
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Open", qtfsv1.FileSystemClient.Open, &qtfsv1.OpenRequest{
		Mount: m.id, Caller: m.caller(ctx), Path: p, Flags: syscall.O_RDONLY | syscall.O_DIRECTORY,
		ReaddirInline: readdirBatch, CloseAtEof: m.sess.ReopensHandles(),
	}, m.callOpts())
	if e != 0 {
		n.failed(e)
		return nil, 0, e
	}
	m.sess.TrackPath(resp.GetHandle(), n.path)
	d := m.newDirHandle(resp.GetHandle(), n)
	d.closedAtOpen = resp.GetClosed()
	if len(resp.GetEntries()) > 0 || resp.GetEntriesEof() {
		if e := d.take(resp.GetEntries(), resp.GetEntriesEof()); e != 0 {
			d.Releasedir(ctx, 0)
			return nil, 0, e
		}
	}
	return d, 0, 0
}

// Statfs answers statfs(2) for the filesystem the node lies on.
func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	p, e := n.path()
	if e != 0 {
		p = nil // an unlinked node: the mount root's filesystem
	}
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "Statfs", qtfsv1.FileSystemClient.Statfs,
		&qtfsv1.StatfsRequest{Mount: m.id, Caller: m.caller(ctx), Path: p}, m.callOpts())
	if e != 0 {
		return e
	}
	*out = fuse.StatfsOut{
		Blocks:  resp.GetBlocks(),
		Bfree:   resp.GetBfree(),
		Bavail:  resp.GetBavail(),
		Files:   resp.GetFiles(),
		Ffree:   resp.GetFfree(),
		Bsize:   resp.GetBsize(),
		NameLen: resp.GetNamelen(),
		Frsize:  resp.GetFrsize(),
	}
	return 0
}

// xattrReply copies an extended attribute value or name list into dest
// (size query when dest is empty).
func xattrReply(data []byte, size uint32, dest []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return size, 0
	}
	if len(data) > len(dest) {
		return uint32(len(data)), syscall.ERANGE
	}
	return uint32(copy(dest, data)), 0
}

// Getxattr reads one extended attribute (POSIX ACLs included).
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	p, e := n.path()
	if e != 0 {
		return 0, e
	}
	m := n.m
	caps := attr == capabilityXattr
	if caps && n.capsKnownAbsent() || n.xattrsKnownAbsent() {
		return 0, syscall.ENODATA
	}
	resp, e := session.Call(context.Background(), m.sess, "Getxattr", qtfsv1.FileSystemClient.Getxattr, &qtfsv1.GetxattrRequest{
		Mount: m.id, Caller: m.caller(ctx), Path: p, Name: []byte(attr), Size: uint32(min(len(dest), xattrSizeMax)),
	}, m.callOpts())
	if caps && e == syscall.ENODATA {
		n.capsAbsent()
	}
	if e == syscall.ERANGE {
		return resp.GetSize(), e
	}
	if e != 0 {
		return 0, e
	}
	return xattrReply(resp.GetValue(), resp.GetSize(), dest)
}

// Setxattr writes one extended attribute; flags are XATTR_CREATE or
// XATTR_REPLACE.
func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	p, e := n.path()
	if e != 0 {
		return e
	}
	m := n.m
	n.capsUnknown()
	_, e = session.Call(context.Background(), m.sess, "Setxattr", qtfsv1.FileSystemClient.Setxattr, &qtfsv1.SetxattrRequest{
		Mount: m.id, Caller: m.caller(ctx), Path: p, Name: []byte(attr), Value: data, Flags: flags,
	}, m.callOpts())
	n.attrsChanged()
	return e
}

// Listxattr lists the names of the extended attributes, NUL-separated.
func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p, e := n.path()
	if e != 0 {
		return 0, e
	}
	m := n.m
	if n.xattrsKnownAbsent() {
		return 0, 0
	}
	resp, e := session.Call(context.Background(), m.sess, "Listxattr", qtfsv1.FileSystemClient.Listxattr, &qtfsv1.ListxattrRequest{
		Mount: m.id, Caller: m.caller(ctx), Path: p, Size: uint32(min(len(dest), xattrSizeMax)),
	}, m.callOpts())
	if e == syscall.ERANGE {
		return resp.GetSize(), e
	}
	if e != 0 {
		return 0, e
	}
	if resp.GetSize() == 0 {
		n.xattrsAbsent()
	}
	return xattrReply(resp.GetNames(), resp.GetSize(), dest)
}

// Removexattr removes one extended attribute.
func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	p, e := n.path()
	if e != 0 {
		return e
	}
	m := n.m
	n.capsUnknown()
	_, e = session.Call(context.Background(), m.sess, "Removexattr", qtfsv1.FileSystemClient.Removexattr,
		&qtfsv1.RemovexattrRequest{Mount: m.id, Caller: m.caller(ctx), Path: p, Name: []byte(attr)}, m.callOpts())
	n.attrsChanged()
	return e
}

// CopyFileRange copies between two open files on the host, without the
// data crossing the connection.
func (n *node) CopyFileRange(ctx context.Context, fhIn fs.FileHandle, offIn uint64, out *fs.Inode,
	fhOut fs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok1 := fhIn.(*fileHandle)
	o, ok2 := fhOut.(*fileHandle)
	if !ok1 || !ok2 || in.m.sess != o.m.sess {
		return 0, syscall.EXDEV
	}
	if offIn > math.MaxInt64 || offOut > math.MaxInt64 || flags > math.MaxUint32 {
		return 0, syscall.EINVAL
	}
	length = min(length, maxCopy)
	m := n.m
	resp, e := session.Call(context.Background(), m.sess, "CopyFileRange", qtfsv1.FileSystemClient.CopyFileRange, &qtfsv1.CopyFileRangeRequest{
		HandleIn: in.h, OffsetIn: int64(offIn), HandleOut: o.h, OffsetOut: int64(offOut), Length: length, Flags: uint32(flags),
	}, m.callOpts())
	if e != 0 {
		return 0, e
	}
	if o.n != nil {
		o.n.attrsChanged()
	}
	if resp.GetCopied() > length {
		return 0, syscall.EIO
	}
	return uint32(resp.GetCopied()), 0
}
