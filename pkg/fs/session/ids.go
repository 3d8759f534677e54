package session

import (
	"context"
	"math"
	"reflect"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// closedGen is the session generation of a handle the server closed
// right after opening it (OpenResponse.closed): no session has it, so its
// first use opens the file again and its Release sends nothing.
// closedHandle stands for its server id, which it has none of.
const (
	closedGen    = math.MaxUint64
	closedHandle = math.MaxUint64
)

// reopenMask are the open flags never replayed when a file is opened
// again after a reconnect: the file exists, and it must not be emptied.
const reopenMask = syscall.O_CREAT | syscall.O_EXCL | syscall.O_TRUNC

// mountRec is a mount the client made: the id the caller holds maps to
// the server's mount id of the current server session.
type mountRec struct {
	path   []byte
	caller *qtfsv1.Caller

	mu     sync.Mutex // serialises re-mounting
	server uint64
	gen    uint64
}

// handleRec is a file or directory the client opened: the id the caller
// holds maps to the server's handle of the current server session, and
// what is needed to open it again after a reconnect.
type handleRec struct {
	mount  uint64 // the client's mount id
	caller *qtfsv1.Caller
	flags  uint32
	path   []byte
	dev    uint64
	ino    uint64
	known  bool // dev and ino are known (the open returned attributes)

	mu     sync.Mutex // serialises re-opening; guards the fields below
	pathFn func() ([]byte, syscall.Errno)
	server uint64
	gen    uint64
	gone   bool // could not be opened again: every use fails, with EIO
	// or goneErrno: the open's own errno for a file closed at open, whose
	// open later is part of its life (a /proc file of a process that
	// ended), not a failed recovery.
	goneErrno syscall.Errno
	// locks are the locks the server granted through the handle, taken
	// again when it is opened again.
	locks handleLocks
	// forgotten: the handle was released; its locks no longer count.
	forgotten bool
}

func (h *handleRec) appending() bool { return h.flags&syscall.O_APPEND != 0 }

// translate returns req with the server's ids of session gen in place
// of the caller's, mounting and opening again what was made in an earlier
// session: req itself when it carries no id, a shallow copy of it
// otherwise (req is not written to), and an errno; retry says the session
// failed meanwhile (call again once it is back).
func (r *reconn) translate(ctx context.Context, gen uint64, req any) (wire any, e syscall.Errno, retry bool) {
	c := callOf(req)
	wire = req
	set := func(f field, id uint64) {
		if wire == req {
			wire = shallowCopy(req)
		}
		*f.ptr(wire) = id
	}
	if c.mountF.ok() {
		if id := c.mountF.uint(req); id != 0 {
			server, e, retry := r.serverMount(ctx, gen, id)
			if e != 0 || retry {
				return nil, e, retry
			}
			set(c.mountF, server)
		}
	}
	for _, f := range c.handlesF {
		id := f.uint(req)
		if id == 0 {
			continue
		}
		server, e, retry := r.serverHandle(ctx, gen, id)
		if e != 0 || retry {
			return nil, e, retry
		}
		set(f, server)
	}
	return wire, 0, false
}

// shallowCopy returns a new message of req's type with req's fields: its
// ids are the copy's own, its bytes and messages shared with req.
func shallowCopy(req any) any {
	v := reflect.ValueOf(req).Elem()
	c := reflect.New(v.Type())
	c.Elem().Set(v)
	return c.Interface()
}

// serverMount returns the server's id for mount id in session gen,
// mounting it again when it was made in an earlier session.
func (r *reconn) serverMount(ctx context.Context, gen, id uint64) (uint64, syscall.Errno, bool) {
	r.tmu.Lock()
	m := r.mounts[id]
	r.tmu.Unlock()
	if m == nil {
		return 0, syscall.ESTALE, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen == gen {
		return m.server, 0, false
	}
	ctx, cancel := r.reopenContext(ctx)
	defer cancel()
	resp, err := r.s.client.Mount(ctx, &qtfsv1.MountRequest{Path: m.path, Caller: m.caller})
	if err != nil {
		if r.sessionFailed(gen, err) {
			return 0, 0, true
		}
		return 0, r.s.rpcErrno("Mount", err), false
	}
	if e := r.s.wireErrno("Mount", resp.GetErrno()); e != 0 {
		r.s.log.Error("qtfs reconnect: the mount's root cannot be mounted again: its calls fail",
			zap.ByteString("remote", m.path), zap.String("errno", errnoLabel(e)))
		return 0, syscall.EIO, false
	}
	m.server, m.gen = resp.GetMount(), gen
	return m.server, 0, false
}

// serverHandle returns the server's id for handle id in session gen,
// opening the file again (by path, with its flags, never creating or
// truncating it) when it was opened in an earlier session. A file that
// cannot be opened again, or whose path now names another file, is gone:
// EIO for every later use.
func (r *reconn) serverHandle(ctx context.Context, gen, id uint64) (uint64, syscall.Errno, bool) {
	r.tmu.Lock()
	h := r.handles[id]
	r.tmu.Unlock()
	if h == nil {
		return 0, syscall.EBADF, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.gone && h.goneErrno != 0:
		return 0, h.goneErrno, false
	case h.gone:
		return 0, syscall.EIO, false
	case h.gen == gen:
		return h.server, 0, false
	}
	mount, e, retry := r.serverMount(ctx, gen, h.mount)
	if e != 0 || retry {
		return 0, e, retry
	}
	ctx, cancel := r.reopenContext(ctx)
	defer cancel()
	path := h.path
	if h.pathFn != nil {
		p, e := h.pathFn()
		if e != 0 {
			r.markGone(h)
			r.s.metrics.reopens.WithLabelValues("gone").Inc()
			r.s.log.Warn("qtfs reconnect: an open file has no path any more (unlinked): its calls fail with EIO",
				zap.ByteString("path", h.path))
			return 0, syscall.EIO, false
		}
		path = p
	}
	resp, err := r.s.client.Open(ctx, &qtfsv1.OpenRequest{Mount: mount, Caller: h.caller, Path: path, Flags: h.flags &^ reopenMask})
	if err != nil {
		if r.sessionFailed(gen, err) {
			return 0, 0, true
		}
		return 0, r.s.rpcErrno("Open", err), false
	}
	e = r.s.wireErrno("Open", resp.GetErrno())
	if e == 0 && h.known && (resp.GetAttr().GetDev() != h.dev || resp.GetAttr().GetIno() != h.ino) {
		_, _ = r.s.client.Release(ctx, &qtfsv1.ReleaseRequest{Handle: resp.GetHandle()})
		e = syscall.ESTALE
	}
	if e != 0 && h.gen == closedGen {
		r.markGone(h)
		h.goneErrno = e
		return 0, e, false
	}
	if e != 0 {
		r.markGone(h)
		r.s.metrics.reopens.WithLabelValues("gone").Inc()
		r.s.log.Warn("qtfs reconnect: an open file could not be opened again: its calls fail with EIO",
			zap.ByteString("path", path), zap.String("errno", errnoLabel(e)))
		return 0, syscall.EIO, false
	}
	server := resp.GetHandle()
	if !h.locks.empty() {
		lost, e, err := r.relock(ctx, server, &h.locks)
		if err != nil || e != 0 {
			// Whatever was taken again goes with the handle.
			_, _ = r.s.client.Release(ctx, &qtfsv1.ReleaseRequest{Handle: server})
		}
		if err != nil {
			if r.sessionFailed(gen, err) {
				return 0, 0, true
			}
			// Not known whether the lock was taken: try again on the
			// next use.
			return 0, r.s.rpcErrno("Setlk", err), false
		}
		if e != 0 {
			r.markGone(h)
			r.s.metrics.reopens.WithLabelValues("lock_lost").Inc()
			r.s.log.Warn("qtfs reconnect: a lock held through an open file could not be taken again (someone took it while the server was away): the file's calls fail with EIO",
				zap.ByteString("path", path), zap.Bool("flock", lost.flock), zap.String("type", lockTypeName(lost.typ)),
				zap.Uint64("start", lost.start), zap.Uint64("end", lost.end), zap.String("errno", errnoLabel(e)))
			return 0, syscall.EIO, false
		}
	}
	if h.gen != closedGen {
		r.s.metrics.reopens.WithLabelValues("ok").Inc()
	}
	h.server, h.gen = server, gen
	if ce := r.s.log.Check(zap.DebugLevel, "qtfs reconnect: file opened again"); ce != nil {
		ce.Write(zap.ByteString("path", path), zap.Uint64("handle", id))
	}
	return h.server, 0, false
}

// reopenContext bounds the RPCs of one re-open (Mount, or Open and the
// Setlk calls that take its locks again): the call's own context may have
// no deadline, and a re-open holds genMu (read) and the record's lock.
func (r *reconn) reopenContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, 10*r.t.RetryProbe)
}

// register records what a successful call made or changed (the
// method's record: a mount, a handle, a lock) and replaces the server's
// id in resp by the caller's. req holds the caller's ids.
func (r *reconn) register(gen uint64, req, resp any) {
	if rec := callOf(req).record; rec != nil {
		rec(r, gen, req, resp)
	}
}

// recordMount records the mount a Mount made.
func (r *reconn) recordMount(gen uint64, req, resp any) {
	q, p := req.(*qtfsv1.MountRequest), resp.(*qtfsv1.MountResponse)
	m := &mountRec{path: append([]byte(nil), q.GetPath()...), caller: cloneCaller(q.GetCaller()), server: p.GetMount(), gen: gen}
	p.Mount = r.add(func(id uint64) { r.mounts[id] = m })
}

// recordOpen records the handle an Open opened.
func (r *reconn) recordOpen(gen uint64, req, resp any) {
	q, p := req.(*qtfsv1.OpenRequest), resp.(*qtfsv1.OpenResponse)
	if p.GetClosed() {
		// Closed on the server after its inline read: opened again on
		// first use, like a handle of a lost session.
		p.Handle = r.addHandle(closedGen, q.GetMount(), q.GetCaller(), q.GetFlags(), q.GetPath(), p.GetAttr(), closedHandle)
		return
	}
	p.Handle = r.addHandle(gen, q.GetMount(), q.GetCaller(), q.GetFlags(), q.GetPath(), p.GetAttr(), p.GetHandle())
}

// recordCreate records the handle a Create opened.
func (r *reconn) recordCreate(gen uint64, req, resp any) {
	q, p := req.(*qtfsv1.CreateRequest), resp.(*qtfsv1.CreateResponse)
	p.Handle = r.addHandle(gen, q.GetMount(), q.GetCaller(), q.GetFlags(), qfs.JoinPath(q.GetPath(), q.GetName()), p.GetAttr(), p.GetHandle())
}

// recordSetlk records the lock a Setlk took or released.
func (r *reconn) recordSetlk(gen uint64, req, _ any) {
	r.recordLock(gen, req.(*qtfsv1.SetlkRequest))
}

func (r *reconn) add(store func(id uint64)) uint64 {
	r.tmu.Lock()
	defer r.tmu.Unlock()
	r.nextID++
	store(r.nextID)
	return r.nextID
}

func (r *reconn) addHandle(gen, mount uint64, caller *qtfsv1.Caller, flags uint32, path []byte, a *qtfsv1.Attr, server uint64) uint64 {
	if server == 0 {
		return 0
	}
	h := &handleRec{
		mount: mount, caller: cloneCaller(caller), flags: flags, path: append([]byte(nil), path...),
		dev: a.GetDev(), ino: a.GetIno(), known: a != nil, server: server, gen: gen,
	}
	return r.add(func(id uint64) { r.handles[id] = h })
}

// release forgets handle id. When the session is down it is not waited
// for: a handle of a lost session is gone with it, and one of a session
// that may come back is released then.
func (r *reconn) release(id uint64) (handled bool) {
	r.tmu.Lock()
	h := r.handles[id]
	r.tmu.Unlock()
	if h == nil {
		return true
	}
	up, gen := r.state()
	h.mu.Lock()
	stale := h.gone || h.gen != gen
	p := pendingRelease{gen: h.gen, server: h.server}
	h.mu.Unlock()
	if up && !stale {
		return false // the caller sends the Release, then forgets the handle
	}
	if !stale {
		r.mu.Lock()
		r.pending = append(r.pending, p)
		r.mu.Unlock()
	}
	r.forget(id)
	return true
}

func (r *reconn) forget(id uint64) {
	r.tmu.Lock()
	h := r.handles[id]
	delete(r.handles, id)
	r.tmu.Unlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	if !h.forgotten {
		h.forgotten = true
		r.dropLocks(h)
	}
	h.mu.Unlock()
}

// forgetMount drops mount id (the mount is gone on the client).
func (r *reconn) forgetMount(id uint64) {
	r.tmu.Lock()
	delete(r.mounts, id)
	r.tmu.Unlock()
}

// setPath gives handle id a function that returns its current path (the
// node's), used instead of the path it was opened by when it is opened
// again: a file renamed since is found where it is now.
func (r *reconn) setPath(id uint64, fn func() ([]byte, syscall.Errno)) {
	r.tmu.Lock()
	h := r.handles[id]
	r.tmu.Unlock()
	if h != nil {
		h.mu.Lock()
		h.pathFn = fn
		h.mu.Unlock()
	}
}

// retryable says whether a request that may have reached the server can
// be sent again after a reconnect (the method's replay class): reads,
// and changes that land the same way twice. Creating, removing and
// renaming entries, appending writes, conditional extended attribute
// changes and requests of methods the table does not know cannot: their
// callers get EIO.
func (r *reconn) retryable(req any) bool {
	c := callOf(req)
	switch c.retry {
	case replayAlways:
		return true
	case replayUnlessAppending:
		return !r.appending(c.writesF.uint(req))
	case replayUnlessFlagged:
		return c.flagsF.uint(req) == 0
	}
	return false
}

func (r *reconn) appending(id uint64) bool {
	r.tmu.Lock()
	h := r.handles[id]
	r.tmu.Unlock()
	return h != nil && h.appending()
}

func cloneCaller(c *qtfsv1.Caller) *qtfsv1.Caller {
	if c == nil {
		return nil
	}
	return proto.Clone(c).(*qtfsv1.Caller)
}

// currentMount returns the server's id of mount id in session gen, or 0
// when it has not been mounted again yet.
func (r *reconn) currentMount(gen, id uint64) uint64 {
	r.tmu.Lock()
	m := r.mounts[id]
	r.tmu.Unlock()
	if m == nil {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.gen != gen {
		return 0
	}
	return m.server
}
