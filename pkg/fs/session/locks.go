package session

import (
	"cmp"
	"context"
	"math"
	"slices"
	"syscall"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

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
