package session

import (
	"context"
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

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// DefaultReconnectTimeout is Options.ReconnectTimeout when it is zero.
const DefaultReconnectTimeout = 30 * time.Second

// Timing is how the liveness checks and the reconnect loop pace
// themselves (Options.Timing).
type Timing struct {
	// Watch is how often the watchdog looks at the calls in flight.
	Watch time.Duration
	// ProbeAfter is how long calls may wait with no reply at all before
	// the watchdog asks the server whether it is still there.
	ProbeAfter time.Duration
	// ProbeTimeout bounds that question; no answer marks the session
	// down.
	ProbeTimeout time.Duration
	// RetryProbe bounds one attempt of the reconnect loop.
	RetryProbe time.Duration
	// BackoffMin and BackoffMax bound the pause between attempts.
	BackoffMin, BackoffMax time.Duration
	// KillCheck is how old a call made for a caller (CallOptions.For)
	// whose request was interrupted must be before the watchdog looks
	// whether the caller is being killed.
	KillCheck time.Duration
}

// DefaultTiming is the Timing of a Session whose Options name none.
var DefaultTiming = Timing{
	Watch:        time.Second,
	ProbeAfter:   3 * time.Second,
	ProbeTimeout: 5 * time.Second,
	RetryProbe:   time.Second,
	BackoffMin:   50 * time.Millisecond,
	BackoffMax:   2 * time.Second,
	KillCheck:    500 * time.Millisecond,
}

// connControl is what a *grpc.ClientConn offers beyond invoking RPCs; the
// reconnect loop uses it when the connection has it.
type connControl interface {
	GetState() connectivity.State
	Connect()
	ResetConnectBackoff()
}

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
	t       Timing
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

func newReconn(s *Session, cc grpc.ClientConnInterface, timeout time.Duration, t Timing, hello *qtfsv1.HandshakeRequest) *reconn {
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
		ctx, cancel := context.WithTimeout(r.life, r.t.ProbeTimeout)
		_, _ = r.s.client.Release(ctx, &qtfsv1.ReleaseRequest{Handle: p.server})
		cancel()
	}
}

// loop reconnects: it asks the server whether it still knows the
// session, and handshakes again when it does not, until the session is up
// or the Session is closed.
func (r *reconn) loop() {
	defer r.done.Done()
	backoff := r.t.BackoffMin
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
		ctx, cancel := context.WithTimeout(r.life, r.t.RetryProbe)
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
		backoff = min(2*backoff, r.t.BackoffMax)
	}
}

// rehandshake opens a new server session (generation gen+1) on the
// connection, once no call of the old one is running.
func (r *reconn) rehandshake(gen uint64) bool {
	// Calls of the old session end fast (the server no longer knows it);
	// wait for them a little, without blocking new readers for good.
	deadline := time.Now().Add(r.t.RetryProbe)
	for !r.genMu.TryLock() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer r.genMu.Unlock()
	ctx, cancel := context.WithTimeout(r.life, 10*r.t.RetryProbe)
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
	tick := time.NewTicker(r.t.Watch)
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
			tick.Reset(r.t.Watch)
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
		r.callers.reap("/proc", r.t.KillCheck, r.s.log)
		up, gen := r.state()
		if !up || r.idle() || time.Since(time.Unix(0, r.lastActivity.Load())) < r.t.ProbeAfter {
			continue
		}
		ctx, cancel := context.WithTimeout(r.life, r.t.ProbeTimeout)
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
		wctx, cancel := context.WithTimeout(ctx, r.t.RetryProbe)
		changed := w.WaitForStateChange(wctx, st)
		cancel()
		if !changed {
			return false
		}
	}
}
