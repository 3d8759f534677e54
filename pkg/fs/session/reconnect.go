package fuseclient

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// DefaultReconnectTimeout is SessionOptions.ReconnectTimeout when it is
// zero.
const DefaultReconnectTimeout = 30 * time.Second

// timing is how the liveness checks and the reconnect loop pace
// themselves.
type timing struct {
	// watch is how often the watchdog looks at the calls in flight.
	watch time.Duration
	// probeAfter is how long calls may wait with no reply at all before
	// the watchdog asks the server whether it is still there.
	probeAfter time.Duration
	// probeTimeout bounds that question; no answer marks the session
	// down.
	probeTimeout time.Duration
	// retryProbe bounds one attempt of the reconnect loop.
	retryProbe time.Duration
	// backoffMin and backoffMax bound the pause between attempts.
	backoffMin, backoffMax time.Duration
	// killCheck is how old a call for an interrupted FUSE request must be
	// before the watchdog looks whether its caller is being killed.
	killCheck time.Duration
}

var defaultTiming = timing{
	watch:        time.Second,
	probeAfter:   3 * time.Second,
	probeTimeout: 5 * time.Second,
	retryProbe:   time.Second,
	backoffMin:   50 * time.Millisecond,
	backoffMax:   2 * time.Second,
	killCheck:    500 * time.Millisecond,
}

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

// connControl is what a *grpc.ClientConn offers beyond invoking RPCs; the
// reconnect loop uses it when the connection has it.
type connControl interface {
	GetState() connectivity.State
	Connect()
	ResetConnectBackoff()
}

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

// pendingRelease is a handle released while the session was down, to be
// released on the server if the same server session comes back.
type pendingRelease struct {
	gen, server uint64
}

// reconn keeps a Session alive across connection failures: it notices a
// lost or silent server, handshakes again, maps the caller's mount and
// handle ids to the current server session's, and re-opens files lazily.
type reconn struct {
	s       *Session
	conn    connControl // nil when the connection offers no control
	timeout time.Duration
	t       timing
	hello   *qtfsv1.HandshakeRequest

	// genMu is read-held by every call from the translation of its ids
	// to its reply, and write-held while the session is handshaken
	// again: a call never carries ids of one server session into
	// another.
	genMu sync.RWMutex

	mu        sync.Mutex
	gen       uint64 // the server session; 1 is the first handshake
	up        bool
	gaveUp    bool      // the current outage outlasted the timeout
	downSince time.Time // start of the current outage
	upCh      chan struct{}
	giveUpCh  chan struct{}
	epoch     context.Context // calls derive from it; cancelled on giving up
	stopEpoch context.CancelFunc
	looping   bool
	closed    bool
	pending   []pendingRelease

	stop     chan struct{}
	stopOnce sync.Once
	done     sync.WaitGroup
	// life is the parent of the watchdog's and the loop's calls; close
	// cancels it.
	life    context.Context
	endLife context.CancelFunc

	tmu     sync.Mutex // guards the id tables
	nextID  uint64
	mounts  map[uint64]*mountRec
	handles map[uint64]*handleRec

	inflight     atomic.Int64
	lastActivity atomic.Int64 // unix nanoseconds of the last reply, or of the first call after an idle spell
	// lockHolders counts the handles that hold locks on the server: while
	// there are any, the watchdog checks the server even when no call
	// waits, so that a restart is noticed and the locks are taken again
	// soon, before someone else takes them.
	lockHolders atomic.Int64
	// busy wakes the watchdog when a call starts or a handle takes locks
	// after an idle spell: while idle it arms no timer, so an idle client
	// costs no wake-ups.
	busy chan struct{}
	// watchRounds counts the watchdog's rounds.
	watchRounds atomic.Int64

	// callers are the calls made for FUSE requests, whose callers may be
	// killed meanwhile.
	callers callers
}

func newReconn(s *Session, cc grpc.ClientConnInterface, timeout time.Duration, t timing, hello *qtfsv1.HandshakeRequest) *reconn {
	r := &reconn{
		s:       s,
		timeout: timeout,
		t:       t,
		hello:   hello,
		gen:     1,
		up:      true,
		stop:    make(chan struct{}),
		busy:    make(chan struct{}, 1),
		mounts:  map[uint64]*mountRec{},
		handles: map[uint64]*handleRec{},
	}
	r.epoch, r.stopEpoch = context.WithCancel(context.Background())
	r.life, r.endLife = context.WithCancel(context.Background())
	if c, ok := cc.(connControl); ok {
		r.conn = c
	}
	r.lastActivity.Store(time.Now().UnixNano())
	r.done.Add(1)
	go r.watch()
	return r
}

// close stops the watchdog and the reconnect loop; calls waiting for the
// session get ENOTCONN.
func (r *reconn) close() {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		r.stopEpoch()
		r.mu.Unlock()
		r.endLife()
		close(r.stop)
	})
	r.done.Wait()
}

// state returns whether the session is up, and its generation.
func (r *reconn) state() (bool, uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.up, r.gen
}

// waitUp waits until the session is up and returns its generation and
// the context calls of this epoch derive from. It gives up when the
// outage outlasts the timeout: EIO for a call that was sent before
// (inflight), ENOTCONN for a new one; EINTR when ctx ends first.
func (r *reconn) waitUp(ctx context.Context, inflight bool) (uint64, context.Context, syscall.Errno) {
	failed := syscall.ENOTCONN
	if inflight {
		failed = syscall.EIO
	}
	for {
		r.mu.Lock()
		switch {
		case r.closed:
			r.mu.Unlock()
			return 0, nil, failed
		case r.up:
			gen, epoch := r.gen, r.epoch
			r.mu.Unlock()
			return gen, epoch, 0
		case r.gaveUp:
			r.mu.Unlock()
			return 0, nil, failed
		}
		upCh, giveUpCh := r.upCh, r.giveUpCh
		r.mu.Unlock()
		select {
		case <-upCh:
		case <-giveUpCh:
		case <-r.stop:
		case <-ctx.Done():
			return 0, nil, syscall.EINTR
		}
	}
}

// markDown records that the server session gen is lost or unreachable
// and starts the reconnect loop. Calls wait for it to come back, at most
// for the timeout.
func (r *reconn) markDown(gen uint64, why string, err error) {
	r.mu.Lock()
	if r.closed || gen != r.gen || !r.up {
		r.mu.Unlock()
		return
	}
	r.up = false
	r.gaveUp = false
	r.downSince = time.Now()
	r.upCh = make(chan struct{})
	giveUpCh := make(chan struct{})
	r.giveUpCh = giveUpCh
	start := !r.looping
	r.looping = true
	r.mu.Unlock()
	r.s.metrics.sessionUp.Set(0)
	r.s.log.Warn("qtfs connection lost: reconnecting; calls wait for it",
		zap.String("server", r.s.server), zap.String("why", why), zap.Error(err),
		zap.Duration("timeout", r.timeout))
	time.AfterFunc(r.timeout, func() { r.giveUp(giveUpCh) })
	if start {
		r.done.Add(1)
		go r.loop()
	}
}

// giveUp ends the wait of the outage whose channel is ch: calls in flight
// are cancelled and get EIO, new calls get ENOTCONN until the session is
// back.
func (r *reconn) giveUp(ch chan struct{}) {
	r.mu.Lock()
	if r.up || r.closed || r.giveUpCh != ch || r.gaveUp {
		r.mu.Unlock()
		return
	}
	r.gaveUp = true
	close(ch)
	r.stopEpoch()
	r.epoch, r.stopEpoch = context.WithCancel(context.Background())
	down := time.Since(r.downSince)
	r.mu.Unlock()
	r.s.log.Error("qtfs server unreachable past the reconnect timeout: calls fail (EIO in flight, ENOTCONN new) until it is back",
		zap.String("server", r.s.server), zap.Duration("down", down), zap.Duration("timeout", r.timeout))
}

// setUp marks the session up again with generation gen.
func (r *reconn) setUp(gen uint64) {
	r.mu.Lock()
	if r.closed || r.up {
		r.mu.Unlock()
		return
	}
	same := gen == r.gen
	r.gen = gen
	r.up = true
	r.looping = false
	close(r.upCh)
	down := time.Since(r.downSince)
	var pending []pendingRelease
	for _, p := range r.pending {
		if p.gen == gen {
			pending = append(pending, p)
		}
	}
	r.pending = nil
	r.mu.Unlock()
	r.lastActivity.Store(time.Now().UnixNano())
	r.s.metrics.sessionUp.Set(1)
	if same {
		r.s.log.Info("qtfs connection back: the server still holds the session",
			zap.String("server", r.s.server), zap.Duration("down", down))
	} else {
		r.s.metrics.reconnects.Inc()
		r.s.log.Info("qtfs session re-established: mounts and open files are re-opened on first use",
			zap.String("server", r.s.server), zap.Duration("down", down), zap.Uint64("generation", gen))
	}
	for _, p := range pending {
		ctx, cancel := context.WithTimeout(r.life, r.t.probeTimeout)
		_, _ = r.s.client.Release(ctx, &qtfsv1.ReleaseRequest{Handle: p.server})
		cancel()
	}
}

// loop reconnects: it asks the server whether it still knows the
// session, and handshakes again when it does not, until the session is up
// or the Session is closed.
func (r *reconn) loop() {
	defer r.done.Done()
	backoff := r.t.backoffMin
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		r.mu.Lock()
		if r.closed || r.up {
			r.looping = false
			r.mu.Unlock()
			return
		}
		gen := r.gen
		r.mu.Unlock()
		if r.conn != nil {
			r.conn.ResetConnectBackoff()
			r.conn.Connect()
		}
		ctx, cancel := context.WithTimeout(r.life, r.t.retryProbe)
		_, err := r.s.client.Getattr(ctx, probeRequest(), grpc.WaitForReady(true))
		cancel()
		switch {
		case err == nil:
			r.setUp(gen)
			continue
		case status.Code(err) == codes.FailedPrecondition:
			if r.rehandshake(gen) {
				continue
			}
		}
		select {
		case <-r.stop:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.t.backoffMax)
	}
}

// rehandshake opens a new server session (generation gen+1) on the
// connection, once no call of the old one is running.
func (r *reconn) rehandshake(gen uint64) bool {
	// Calls of the old session end fast (the server no longer knows it);
	// wait for them a little, without blocking new readers for good.
	deadline := time.Now().Add(r.t.retryProbe)
	for !r.genMu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer r.genMu.Unlock()
	ctx, cancel := context.WithTimeout(r.life, 10*r.t.retryProbe)
	defer cancel()
	resp, err := r.s.client.Handshake(ctx, r.hello, grpc.WaitForReady(true))
	if err != nil {
		r.s.log.Warn("qtfs reconnect: handshake failed", zap.String("server", r.s.server), zap.Error(err))
		return false
	}
	if resp.GetProtocolVersion() != ProtocolVersion {
		r.s.log.Error("qtfs reconnect: the server now speaks another protocol version",
			zap.String("server", resp.GetServer()), zap.Uint32("version", resp.GetProtocolVersion()))
		return false
	}
	if m := int(resp.GetMaxMessageBytes()); m > 0 && m-messageMargin < r.s.chunk {
		r.s.log.Error("qtfs reconnect: the server now accepts smaller messages than this session's chunk; large reads and writes will fail",
			zap.Int("max_message_bytes", m), zap.Int("chunk", r.s.chunk))
	}
	if r.s.calls != nil {
		r.s.calls.SetChannelToken(channelToken(resp))
	}
	// Locks first, while no call runs: a call waiting for the session
	// (a blocking lock wait on another handle) must not take a lock this
	// client held before the restart.
	r.retakeLocks(gen + 1)
	r.setUp(gen + 1)
	return true
}

// retakeLocks opens again, in the new server session gen, every handle
// that holds locks, and takes its locks again (serverHandle). It runs
// under genMu (write) before the session is marked up. A connection that
// fails meanwhile leaves the remaining handles to be opened again, and
// their locks taken again, on first use.
func (r *reconn) retakeLocks(gen uint64) {
	r.tmu.Lock()
	ids := make([]uint64, 0, min(len(r.handles), 64))
	for id := range r.handles {
		ids = append(ids, id)
	}
	r.tmu.Unlock()
	slices.Sort(ids) // oldest first, as they were taken
	for _, id := range ids {
		r.tmu.Lock()
		h := r.handles[id]
		r.tmu.Unlock()
		if h == nil {
			continue
		}
		h.mu.Lock()
		held := !h.gone && !h.locks.empty()
		h.mu.Unlock()
		if !held {
			continue
		}
		_, _, retry := r.serverHandle(r.life, gen, id)
		if retry {
			return
		}
	}
}

// watch is the watchdog. It cancels the calls whose caller is being
// killed. When calls wait, or handles hold locks, and no reply came for a
// while, it asks the server (a cheap Getattr) and marks the session down
// when no answer comes: a dead link (no reset, no error) is noticed this
// way, and so is a server restart while locks are held.
func (r *reconn) watch() {
	defer r.done.Done()
	tick := time.NewTicker(r.t.watch)
	defer tick.Stop()
	for {
		if r.idle() {
			// Nothing to watch until a call starts or a lock is taken.
			tick.Stop()
			select {
			case <-r.stop:
				return
			case <-r.busy:
			}
			tick.Reset(r.t.watch)
		}
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		r.watchRounds.Add(1)
		if r.conn != nil && r.conn.GetState() == connectivity.Shutdown {
			return
		}
		r.callers.reap("/proc", r.t.killCheck, r.s.log)
		up, gen := r.state()
		if !up || r.idle() || time.Since(time.Unix(0, r.lastActivity.Load())) < r.t.probeAfter {
			continue
		}
		ctx, cancel := context.WithTimeout(r.life, r.t.probeTimeout)
		_, err := r.s.client.Getattr(ctx, probeRequest())
		cancel()
		switch status.Code(err) {
		case codes.OK:
			r.lastActivity.Store(time.Now().UnixNano())
		case codes.Unavailable, codes.DeadlineExceeded, codes.FailedPrecondition:
			r.markDown(gen, "no answer to a probe while calls wait", err)
		}
	}
}

// probeRequest is a call every server answers at once with an errno (no
// mount 0 exists), as long as it knows the session.
func probeRequest() *qtfsv1.GetattrRequest {
	return &qtfsv1.GetattrRequest{Mount: 0, Caller: &qtfsv1.Caller{}}
}

// idle says the watchdog has nothing to watch: no call waits and no
// handle holds locks.
func (r *reconn) idle() bool { return r.inflight.Load() == 0 && r.lockHolders.Load() == 0 }

// wakeWatch ends the watchdog's idle wait.
func (r *reconn) wakeWatch() {
	select {
	case r.busy <- struct{}{}:
	default:
	}
}

// begin and end bracket one RPC for the watchdog.
func (r *reconn) begin() {
	if r.inflight.Add(1) == 1 {
		r.lastActivity.Store(time.Now().UnixNano())
		r.wakeWatch()
	}
}

func (r *reconn) end(replied bool) {
	if replied {
		r.lastActivity.Store(time.Now().UnixNano())
	}
	r.inflight.Add(-1)
}

// ---------------------------------------------------------------- ids

// translate replaces the caller's ids in req by the server's ids of
// session gen, mounting and opening again what was made in an earlier
// session. It returns a function that puts the caller's ids back, and an
// errno; retry says the session failed meanwhile (call again once it is
// back).
func (r *reconn) translate(ctx context.Context, gen uint64, req any) (restore func(), e syscall.Errno, retry bool) {
	c := callOf(req)
	var saved [3]uint64
	var ptrs [3]*uint64
	n := 0
	restore = func() {
		for i := 0; i < n; i++ {
			*ptrs[i] = saved[i]
		}
	}
	set := func(p *uint64, v uint64) {
		saved[n], ptrs[n] = *p, p
		n++
		*p = v
	}
	if c.mountF.ok() {
		if p := c.mountF.ptr(req); *p != 0 {
			id, e, retry := r.serverMount(ctx, gen, *p)
			if e != 0 || retry {
				return restore, e, retry
			}
			set(p, id)
		}
	}
	for _, f := range c.handlesF {
		p := f.ptr(req)
		if *p == 0 {
			continue
		}
		id, e, retry := r.serverHandle(ctx, gen, *p)
		if e != 0 || retry {
			return restore, e, retry
		}
		set(p, id)
	}
	return restore, 0, false
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
	return context.WithTimeout(ctx, 10*r.t.retryProbe)
}

// sessionFailed tells whether err says the session gen is lost or the
// connection broke, and marks it down if so.
func (r *reconn) sessionFailed(gen uint64, err error) bool {
	switch status.Code(err) {
	case codes.FailedPrecondition, codes.Unavailable:
		r.markDown(gen, "a call failed", err)
		return true
	}
	return false
}

// register records what a successful call made or changed (the
// method's record: a mount, a handle, a lock) and replaces the server's
// id in resp by the caller's. req holds the caller's ids again.
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

// recordLock records a lock the server granted, or released, through
// the handle of req (the caller's id) in session gen.
func (r *reconn) recordLock(gen uint64, req *qtfsv1.SetlkRequest) {
	r.tmu.Lock()
	h := r.handles[req.GetHandle()]
	r.tmu.Unlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.forgotten || h.gone || h.gen != gen {
		return
	}
	held := !h.locks.empty()
	h.locks.apply(req)
	switch now := !h.locks.empty(); {
	case now && !held:
		if r.lockHolders.Add(1) == 1 {
			r.wakeWatch()
		}
	case held && !now:
		r.lockHolders.Add(-1)
	}
}

// markGone makes every later use of h fail with EIO; its locks are no
// longer held. Called with h.mu held.
func (r *reconn) markGone(h *handleRec) {
	h.gone = true
	r.dropLocks(h)
}

// dropLocks forgets h's locks. Called with h.mu held.
func (r *reconn) dropLocks(h *handleRec) {
	if !h.locks.empty() {
		r.lockHolders.Add(-1)
	}
	h.locks = handleLocks{}
}

// relock takes the locks of ls again, without waiting, through server
// handle server. It returns the lock it could not take and the errno of
// the refusal, or a transport error.
func (r *reconn) relock(ctx context.Context, server uint64, ls *handleLocks) (heldLock, syscall.Errno, error) {
	for _, l := range ls.all() {
		resp, err := r.s.client.Setlk(ctx, &qtfsv1.SetlkRequest{
			Handle: server, Owner: l.owner, Flock: l.flock,
			Lock: &qtfsv1.Lock{Start: l.start, End: l.end, Type: l.typ},
		})
		if err != nil {
			return l, 0, err
		}
		if e := r.s.wireErrno("Setlk", resp.GetErrno()); e != 0 {
			return l, e, nil
		}
	}
	return heldLock{}, 0, nil
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

// ready waits (briefly) for the connection to be ready before a request
// that cannot be sent twice, so that it is not lost in a connection that
// is still coming up; false when it is not ready.
func (r *reconn) ready(ctx context.Context) bool {
	if r.conn == nil {
		return true
	}
	type waiter interface {
		WaitForStateChange(context.Context, connectivity.State) bool
	}
	w, ok := r.conn.(waiter)
	for {
		st := r.conn.GetState()
		switch st {
		case connectivity.Ready:
			return true
		case connectivity.Idle:
			r.conn.Connect()
		case connectivity.TransientFailure, connectivity.Shutdown:
			return false
		}
		if !ok {
			return false
		}
		wctx, cancel := context.WithTimeout(ctx, r.t.retryProbe)
		changed := w.WaitForStateChange(wctx, st)
		cancel()
		if !changed {
			return false
		}
	}
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

// withTimeout is context.WithTimeout, or WithCancel when timeout is 0.
func withTimeout(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, timeout)
}

// ---------------------------------------------------------------- locks

// heldLock is one lock a handle holds on the server.
type heldLock struct {
	flock bool
	// owner is the kernel's lock owner of the request that took it; the
	// server does not use it, it is sent again as it came.
	owner uint64
	// start and end (inclusive, math.MaxUint64 for "to end of file") are
	// the range of a record lock.
	start, end uint64
	typ        uint32 // F_RDLCK or F_WRLCK
}

// handleLocks are the locks the server granted through one handle, as
// the server holds them: its record locks are F_OFD_* locks of the
// handle's open file description, which all the handle's lock owners
// share (the server does not use the owner), and its flock(2) lock is the
// description's too. So a lock replaces, over its range, whatever the
// handle held there, whoever took it; an unlock removes it; and a new
// lock merges with a neighbour of the same type, as the host kernel
// merges them.
//
// Requests on one handle are recorded in the order their replies came;
// two requests on overlapping ranges of one handle that cross on the wire
// may be recorded in the other order than the server applied them.
type handleLocks struct {
	// posix are the record locks, sorted by start, without overlap.
	posix []heldLock
	// flock is the flock(2) lock, when flockHeld.
	flock     heldLock
	flockHeld bool
}

func (ls *handleLocks) empty() bool { return len(ls.posix) == 0 && !ls.flockHeld }

// all returns the locks to take again: the record locks in order, then
// the flock lock.
func (ls *handleLocks) all() []heldLock {
	out := slices.Clone(ls.posix)
	if ls.flockHeld {
		out = append(out, ls.flock)
	}
	return out
}

// apply records the effect of a granted Setlk request.
func (ls *handleLocks) apply(req *qtfsv1.SetlkRequest) {
	l := req.GetLock()
	typ := l.GetType()
	locked := typ == syscall.F_RDLCK || typ == syscall.F_WRLCK
	if req.GetFlock() {
		ls.flock, ls.flockHeld = heldLock{}, locked
		if locked {
			ls.flock = heldLock{flock: true, owner: req.GetOwner(), end: math.MaxUint64, typ: typ}
		}
		return
	}
	start, end := l.GetStart(), l.GetEnd()
	if end >= math.MaxInt64 {
		// The server reads every end from here on as "to end of file".
		end = math.MaxUint64
	}
	if end < start {
		return
	}
	out := make([]heldLock, 0, len(ls.posix)+2)
	for _, p := range ls.posix {
		if p.end < start || p.start > end {
			out = append(out, p)
			continue
		}
		if p.start < start {
			left := p
			left.end = start - 1
			out = append(out, left)
		}
		if p.end > end {
			right := p
			right.start = end + 1
			out = append(out, right)
		}
	}
	if locked {
		out = append(out, heldLock{owner: req.GetOwner(), start: start, end: end, typ: typ})
	}
	slices.SortFunc(out, func(a, b heldLock) int { return cmp.Compare(a.start, b.start) })
	merged := out[:0]
	for _, p := range out {
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if last.typ == p.typ && last.end != math.MaxUint64 && last.end+1 == p.start {
				last.end = p.end
				continue
			}
		}
		merged = append(merged, p)
	}
	ls.posix = merged
}

// lockTypeName names a lock type for a log line.
func lockTypeName(typ uint32) string {
	switch typ {
	case syscall.F_RDLCK:
		return "read"
	case syscall.F_WRLCK:
		return "write"
	case syscall.F_UNLCK:
		return "unlock"
	}
	return "unknown"
}
