package session

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/session/sessiontest"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

const toEOF = math.MaxUint64

// TestHandleLocksApply is the record of a handle's locks: what the server
// holds after each granted request, as the host kernel keeps the locks of
// one open file description.
func TestHandleLocksApply(t *testing.T) {
	type req struct {
		start, end uint64
		typ        uint32
		flock      bool
	}
	lk := func(start, end uint64, typ uint32) req { return req{start: start, end: end, typ: typ} }
	const rd, wr, un = syscall.F_RDLCK, syscall.F_WRLCK, syscall.F_UNLCK
	type seg struct {
		start, end uint64
		typ        uint32
	}
	for _, tc := range []struct {
		name  string
		reqs  []req
		posix []seg
		flock int // -1 none, else the type
	}{
		{"nothing", nil, nil, -1},
		{"one lock", []req{lk(0, 99, wr)}, []seg{{0, 99, wr}}, -1},
		{"unlock all", []req{lk(0, 99, wr), lk(0, toEOF, un)}, nil, -1},
		{"unlock a hole", []req{lk(0, 99, wr), lk(10, 19, un)}, []seg{{0, 9, wr}, {20, 99, wr}}, -1},
		{"unlock the head", []req{lk(0, 99, wr), lk(0, 49, un)}, []seg{{50, 99, wr}}, -1},
		{"unlock past the end", []req{lk(10, 99, wr), lk(50, 200, un)}, []seg{{10, 49, wr}}, -1},
		{"downgrade a middle", []req{lk(0, 99, wr), lk(40, 59, rd)}, []seg{{0, 39, wr}, {40, 59, rd}, {60, 99, wr}}, -1},
		{"neighbours merge", []req{lk(0, 9, wr), lk(10, 19, wr)}, []seg{{0, 19, wr}}, -1},
		{"other types stay apart", []req{lk(0, 9, wr), lk(10, 19, rd)}, []seg{{0, 9, wr}, {10, 19, rd}}, -1},
		{"overlap replaces", []req{lk(0, 9, rd), lk(20, 29, rd), lk(5, 24, wr)}, []seg{{0, 4, rd}, {5, 24, wr}, {25, 29, rd}}, -1},
		{"to end of file", []req{lk(100, toEOF, wr), lk(0, 99, wr)}, []seg{{0, toEOF, wr}}, -1},
		{"kernel end of file", []req{lk(7, math.MaxInt64, rd)}, []seg{{7, toEOF, rd}}, -1},
		{"unlock to end of file", []req{lk(0, toEOF, wr), lk(100, toEOF, un)}, []seg{{0, 99, wr}}, -1},
		{"invalid range ignored", []req{lk(10, 5, wr)}, nil, -1},
		{"flock", []req{{typ: wr, flock: true}}, nil, wr},
		{"flock downgraded", []req{{typ: wr, flock: true}, {typ: rd, flock: true}}, nil, rd},
		{"flock released", []req{{typ: wr, flock: true}, {typ: un, flock: true}}, nil, -1},
		{"flock and record locks apart", []req{{typ: wr, flock: true}, lk(0, 0, rd), lk(0, toEOF, un)}, nil, wr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ls handleLocks
			for i, q := range tc.reqs {
				ls.apply(&qtfsv1.SetlkRequest{Owner: uint64(i + 1), Flock: q.flock,
					Lock: &qtfsv1.Lock{Start: q.start, End: q.end, Type: q.typ}})
			}
			var got []seg
			for _, p := range ls.posix {
				got = append(got, seg{p.start, p.end, p.typ})
			}
			if !slices.Equal(got, tc.posix) {
				t.Fatalf("record locks %v, want %v", got, tc.posix)
			}
			flock := -1
			if ls.flockHeld {
				flock = int(ls.flock.typ)
			}
			if flock != tc.flock {
				t.Fatalf("flock %d, want %d", flock, tc.flock)
			}
			if want := len(tc.posix) == 0 && tc.flock < 0; ls.empty() != want {
				t.Fatalf("empty() = %v, want %v", ls.empty(), want)
			}
			all := ls.all()
			if n := len(tc.posix) + min(tc.flock+1, 1); len(all) != n {
				t.Fatalf("all() gives %d locks, want %d", len(all), n)
			}
		})
	}
}

func (c *reconnectClient) setlk(h uint64, flock bool, typ uint32, start, end uint64) syscall.Errno {
	_, e := Call(context.Background(), c.s, "Setlk", qtfsv1.FileSystemClient.Setlk, &qtfsv1.SetlkRequest{
		Handle: h, Owner: 7, Flock: flock, Lock: &qtfsv1.Lock{Start: start, End: end, Type: typ},
	}, CallOptions{Timeout: opTimeout})
	return e
}

func (c *reconnectClient) getlk(h uint64, typ uint32, start, end uint64) (*qtfsv1.Lock, syscall.Errno) {
	resp, e := Call(context.Background(), c.s, "Getlk", qtfsv1.FileSystemClient.Getlk, &qtfsv1.GetlkRequest{
		Handle: h, Owner: 7, Lock: &qtfsv1.Lock{Start: start, End: end, Type: typ},
	}, CallOptions{Timeout: opTimeout})
	return resp.GetLock(), e
}

// hostLock tries to take a lock on the host file path without waiting, as
// a host process would: an OFD record lock, or flock(2). It returns the
// open file, which holds the lock when err is nil.
func hostLock(t *testing.T, path string, flock bool, typ int16, start, length int64) (*os.File, error) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if flock {
		how := unix.LOCK_EX
		if typ == unix.F_RDLCK {
			how = unix.LOCK_SH
		}
		err = unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
	} else {
		fl := unix.Flock_t{Type: typ, Whence: unix.SEEK_SET, Start: start, Len: length}
		err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &fl)
	}
	return f, err
}

// conflict reports whether err is the refusal of a lock held elsewhere.
func conflict(err error) bool {
	return err == unix.EAGAIN || err == unix.EACCES || err == unix.EWOULDBLOCK
}

// TestReconnectLocksRetaken: locks held through an open file survive a
// server restart. Right after the client has handshaken again (noticed by
// the watchdog, with no call made) it opens the file again and takes its
// locks again: a second session and a host process conflict with them,
// also where the handle holds a record lock only in part; what was
// unlocked before the restart is not taken again. Released with the
// handle, the locks are free.
func TestReconnectLocksRetaken(t *testing.T) {
	fs := sessiontest.NewServer(t)
	writeHost(t, fs, "f", strings.Repeat("x", 200))
	writeHost(t, fs, "g", "g")
	c := newReconnectClient(t, fs, 10*time.Second)
	h := c.open(t, "f", syscall.O_RDWR)
	unlocked := c.open(t, "g", syscall.O_RDWR)
	for _, step := range []struct {
		h          uint64
		flock      bool
		typ        uint32
		start, end uint64
	}{
		{h, false, syscall.F_WRLCK, 0, 99},
		{h, false, syscall.F_UNLCK, 10, 19},
		{h, false, syscall.F_RDLCK, 150, toEOF},
		{h, true, syscall.F_WRLCK, 0, toEOF},
		{unlocked, false, syscall.F_WRLCK, 0, toEOF},
		{unlocked, true, syscall.F_RDLCK, 0, toEOF},
		{unlocked, false, syscall.F_UNLCK, 0, toEOF},
		{unlocked, true, syscall.F_UNLCK, 0, toEOF},
	} {
		if e := c.setlk(step.h, step.flock, step.typ, step.start, step.end); e != 0 {
			t.Fatalf("setlk %+v: %v", step, e)
		}
	}
	if n := c.s.rc.lockHolders.Load(); n != 1 {
		t.Fatalf("%d handles hold locks, want 1", n)
	}

	fs.Restart()
	ok := c.s.metrics.reopens.WithLabelValues("ok")
	testutil.WaitFor(t, "the locked file opened again after the restart", 10*time.Second, func() bool { return metricValue(ok) >= 1 })

	c2 := newReconnectClient(t, fs, 10*time.Second)
	h2 := c2.open(t, "f", syscall.O_RDWR)
	for _, tc := range []struct {
		name       string
		flock      bool
		typ        uint32
		start, end uint64
		want       syscall.Errno
	}{
		{"write lock at 0", false, syscall.F_WRLCK, 0, 0, syscall.EAGAIN},
		{"read lock at 50", false, syscall.F_RDLCK, 50, 50, syscall.EAGAIN},
		{"write lock at 99", false, syscall.F_WRLCK, 99, 99, syscall.EAGAIN},
		{"write lock in the hole", false, syscall.F_WRLCK, 10, 19, 0},
		{"write lock between", false, syscall.F_WRLCK, 100, 149, 0},
		{"read lock over the read lock", false, syscall.F_RDLCK, 150, 300, 0},
		{"write lock over the read lock", false, syscall.F_WRLCK, 160, 160, syscall.EAGAIN},
		{"flock", true, syscall.F_WRLCK, 0, toEOF, syscall.EAGAIN},
		{"shared flock", true, syscall.F_RDLCK, 0, toEOF, syscall.EAGAIN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e := c2.setlk(h2, tc.flock, tc.typ, tc.start, tc.end); e != tc.want {
				t.Fatalf("second session: %v, want %v", e, tc.want)
			}
			if tc.want == 0 {
				if e := c2.setlk(h2, tc.flock, syscall.F_UNLCK, tc.start, tc.end); e != 0 {
					t.Fatal(e)
				}
			}
		})
	}
	if _, err := hostLock(t, filepath.Join(fs.Export, "f"), false, unix.F_WRLCK, 0, 1); !conflict(err) {
		t.Fatalf("a host process took a write lock the client holds: %v", err)
	}
	if _, err := hostLock(t, filepath.Join(fs.Export, "f"), true, unix.F_WRLCK, 0, 0); !conflict(err) {
		t.Fatalf("a host process took the flock the client holds: %v", err)
	}
	g := c2.open(t, "g", syscall.O_RDWR)
	if e := c2.setlk(g, false, syscall.F_WRLCK, 0, toEOF); e != 0 {
		t.Fatalf("a lock released before the restart was taken again: %v", e)
	}
	if e := c2.setlk(g, true, syscall.F_WRLCK, 0, toEOF); e != 0 {
		t.Fatalf("a flock released before the restart was taken again: %v", e)
	}

	// The handle works, and was opened again once: the file that held no
	// lock any more is opened again on first use only.
	if got, e := c.read(h, 0, 3); e != 0 || string(got) != "xxx" {
		t.Fatalf("read through the handle: %q, %v", got, e)
	}
	if n := metricValue(ok); n != 1 {
		t.Fatalf("%v re-opens before the unlocked file was used, want 1", n)
	}
	if l, e := c.getlk(h, syscall.F_WRLCK, 0, toEOF); e != 0 || l.GetType() != syscall.F_UNLCK {
		t.Fatalf("getlk through the lock holder: %v, %v", l, e)
	}

	if _, e := Call(context.Background(), c.s, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: h}, CallOptions{Timeout: opTimeout}); e != 0 {
		t.Fatal(e)
	}
	if n := c.s.rc.lockHolders.Load(); n != 0 {
		t.Fatalf("%d handles hold locks after the release, want 0", n)
	}
	if e := c2.setlk(h2, false, syscall.F_WRLCK, 0, toEOF); e != 0 {
		t.Fatalf("write lock after the holder's release: %v", e)
	}
	if e := c2.setlk(h2, true, syscall.F_WRLCK, 0, toEOF); e != 0 {
		t.Fatalf("flock after the holder's release: %v", e)
	}
}

// TestReconnectLockLost: while the server is away a host process takes a
// lock the client held. The client cannot take it again after the
// restart: the handle is lost, its reads, writes and lock calls fail with
// EIO (also once the host process let go), a warning names the file, and
// the session and its other files go on.
func TestReconnectLockLost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flock bool
		// the client's lock, and the host's conflicting one.
		typ                uint32
		start, end         uint64
		hostTyp            int16
		hostStart, hostLen int64
	}{
		{name: "write lock", typ: syscall.F_WRLCK, start: 100, end: 199, hostTyp: unix.F_RDLCK, hostStart: 150, hostLen: 1},
		{name: "read lock", typ: syscall.F_RDLCK, start: 0, end: toEOF, hostTyp: unix.F_WRLCK, hostStart: 1 << 20, hostLen: 0},
		{name: "flock", flock: true, typ: syscall.F_WRLCK, end: toEOF, hostTyp: unix.F_RDLCK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := sessiontest.NewServer(t)
			writeHost(t, fs, "f", "data")
			writeHost(t, fs, "other", "other")
			core, logs := observer.New(zapcore.WarnLevel)
			log := zap.New(zapcore.NewTee(core, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core()))
			c := newReconnectClientLog(t, fs, 10*time.Second, log)
			h := c.open(t, "f", syscall.O_RDWR)
			other := c.open(t, "other", syscall.O_RDONLY)
			if e := c.setlk(h, tc.flock, tc.typ, tc.start, tc.end); e != 0 {
				t.Fatal(e)
			}

			fs.Stop()
			host, err := hostLock(t, filepath.Join(fs.Export, "f"), tc.flock, tc.hostTyp, tc.hostStart, tc.hostLen)
			if err != nil {
				t.Fatalf("host lock while the server is away: %v", err)
			}
			fs.Restart()
			lost := c.s.metrics.reopens.WithLabelValues("lock_lost")
			testutil.WaitFor(t, "the lost lock noticed after the restart", 10*time.Second, func() bool { return metricValue(lost) >= 1 })

			ops := []struct {
				name string
				do   func() syscall.Errno
			}{
				{"read", func() syscall.Errno { _, e := c.read(h, 0, 4); return e }},
				{"write", func() syscall.Errno { return c.write(h, 0, []byte("lost")) }},
				{"setlk", func() syscall.Errno { return c.setlk(h, tc.flock, tc.typ, tc.start, tc.end) }},
				{"getlk", func() syscall.Errno { _, e := c.getlk(h, syscall.F_WRLCK, 0, toEOF); return e }},
			}
			for _, op := range ops {
				if e := op.do(); e != syscall.EIO {
					t.Fatalf("%s on the handle that lost its lock: %v, want EIO", op.name, e)
				}
			}
			host.Close() // the host process lets go: the handle stays lost
			for _, op := range ops {
				if e := op.do(); e != syscall.EIO {
					t.Fatalf("%s after the host let go: %v, want EIO", op.name, e)
				}
			}
			if data, _ := os.ReadFile(filepath.Join(fs.Export, "f")); string(data) != "data" {
				t.Fatalf("host file %q: a write went through a lost handle", data)
			}
			if got, e := c.read(other, 0, 5); e != 0 || string(got) != "other" {
				t.Fatalf("another file of the session: %q, %v", got, e)
			}
			if n := c.s.rc.lockHolders.Load(); n != 0 {
				t.Fatalf("%d handles hold locks, want 0", n)
			}
			warned := logs.FilterMessageSnippet("could not be taken again").All()
			if len(warned) != 1 {
				t.Fatalf("%d warnings about the lost lock, want 1", len(warned))
			}
			if p, _ := warned[0].ContextMap()["path"].(string); p != "f" {
				t.Fatalf("the warning names path %q, want %q", p, "f")
			}
			for _, x := range []uint64{h, other} {
				if _, e := Call(context.Background(), c.s, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: x}, CallOptions{Timeout: opTimeout}); e != 0 {
					t.Fatalf("release: %v", e)
				}
			}
			// No lock is held any more: the Releases do not wait.
			fs.WaitNoHandles(t, "the lost one was released (want 0: the re-open was released)")
		})
	}
}

// TestReconnectLockWaiter: a call waiting for a lock (F_SETLKW) that
// another handle of the same client holds is sent again after the server
// restarts, but only once the holder's lock is taken again: the waiter
// never steals it, and gets it once the holder lets go.
func TestReconnectLockWaiter(t *testing.T) {
	fs := sessiontest.NewServer(t)
	writeHost(t, fs, "f", "data")
	c := newReconnectClient(t, fs, 10*time.Second)
	holder := c.open(t, "f", syscall.O_RDWR)
	waiter := c.open(t, "f", syscall.O_RDWR)
	if e := c.setlk(holder, false, syscall.F_WRLCK, 0, toEOF); e != 0 {
		t.Fatal(e)
	}
	got := make(chan syscall.Errno, 1)
	go func() {
		_, e := Call(context.Background(), c.s, "Setlkw", qtfsv1.FileSystemClient.Setlk, &qtfsv1.SetlkRequest{
			Handle: waiter, Owner: 8, Wait: true, Lock: &qtfsv1.Lock{Start: 0, End: toEOF, Type: syscall.F_WRLCK},
		}, CallOptions{})
		got <- e
	}()
	testutil.WaitFor(t, "the waiter's call on the server", 5*time.Second, func() bool {
		return metricValue(c.s.metrics.ops.WithLabelValues("Setlk", "OK")) >= 1 && c.s.rc.inflight.Load() == 1
	})
	fs.Restart()
	// The waiter's handle is opened again when its call is sent again.
	testutil.WaitFor(t, "the waiter's call sent again", 10*time.Second, func() bool {
		_, gen := c.s.rc.state()
		return gen == 2 && handleGen(c, waiter) == 2
	})
	select {
	case e := <-got:
		t.Fatalf("the waiter got the holder's lock after the restart: %v", e)
	default:
	}
	if n := metricValue(c.s.metrics.reopens.WithLabelValues("lock_lost")); n != 0 {
		t.Fatalf("the holder lost its lock (%v)", n)
	}
	if e := c.write(holder, 0, []byte("DATA")); e != 0 {
		t.Fatalf("write through the holder: %v", e)
	}
	if e := c.setlk(holder, false, syscall.F_UNLCK, 0, toEOF); e != 0 {
		t.Fatal(e)
	}
	select {
	case e := <-got:
		if e != 0 {
			t.Fatalf("the waiter: %v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the lock once the holder let go")
	}
}

// handleGen returns the server session handle id was last opened in.
func handleGen(c *reconnectClient, id uint64) uint64 {
	r := c.s.rc
	r.tmu.Lock()
	h := r.handles[id]
	r.tmu.Unlock()
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gen
}
