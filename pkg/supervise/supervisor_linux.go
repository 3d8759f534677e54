package supervise

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
)

// StatfsFunc answers statfs for a file the supervisor opened (O_PATH) as
// the caller would have named it; uid and gid are the caller's. ok false
// lets the call run as it is (a file of another filesystem).
type StatfsFunc func(f *os.File, uid, gid uint32) (st unix.Statfs_t, ok bool, err error)

// Options configure a Supervisor.
type Options struct {
	// Statfs answers statfs and fstatfs; nil lets every call run as it
	// is.
	Statfs StatfsFunc
	// Mounter carries out mount(2) and umount2(2) of the targets it
	// serves; nil lets every such call run as it is.
	Mounter Mounter
	// ConfineSignals answers kill(2) and pidfd_open(2) of a pid outside
	// the caller's root with ESRCH (signal_linux.go).
	ConfineSignals bool
	// Logger receives the supervisor's logs; nil logs nothing.
	Logger *zap.Logger
}

// Stats are a supervisor's counters.
type Stats struct {
	Answered  uint64 // calls answered by the supervisor
	Continued uint64 // calls let run as they are
	Gone      uint64 // calls whose caller went away before the answer
	Mounts    uint64 // mount and umount2 calls the Mounter carried out or refused
}

// Supervisor answers the notifications of one filter's listener.
type Supervisor struct {
	fd   int
	opts Options
	log  *zap.Logger
	done chan struct{}
	wg   sync.WaitGroup

	answered, continued, gone, mounts atomic.Uint64

	// mountNS is the supervisor's mount namespace: only calls made in it
	// go to the Mounter.
	mountNS  unix.Stat_t
	pidNS    unix.Stat_t
	restarts restarts

	mu      sync.Mutex
	closing bool
}

// Serve answers the notifications of listener (which it owns from now on)
// until Close, or until no process is left under the filter.
func Serve(listener int, opts Options) *Supervisor {
	s := &Supervisor{fd: listener, opts: opts, log: opts.Logger, done: make(chan struct{})}
	if s.log == nil {
		s.log = zap.NewNop()
	}
	if err := unix.Stat("/proc/self/ns/mnt", &s.mountNS); err != nil {
		// Without it no caller is taken for one of this namespace.
		s.log.Warn("supervise: no mount namespace of its own: mounts run as they are", zap.Error(err))
		s.opts.Mounter = nil
	}
	if err := unix.Stat("/proc/self/ns/pid", &s.pidNS); err != nil {
		s.log.Warn("supervise: no pid namespace of its own: signals run as they are", zap.Error(err))
		s.opts.ConfineSignals = false
	}
	go s.loop()
	return s
}

// Done is closed once the supervisor stopped.
func (s *Supervisor) Done() <-chan struct{} { return s.done }

// Stats returns the counters.
func (s *Supervisor) Stats() Stats {
	return Stats{Answered: s.answered.Load(), Continued: s.continued.Load(), Gone: s.gone.Load(), Mounts: s.mounts.Load()}
}

// Close stops answering: the supervised programs' notified calls fail
// with ENOSYS from then on.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	<-s.done
	return nil
}

func (s *Supervisor) stopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

func (s *Supervisor) loop() {
	defer close(s.done)
	defer unix.Close(s.fd)
	defer s.wg.Wait()
	for !s.stopping() {
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 200)
		if errors.Is(err, unix.EINTR) || n == 0 {
			continue
		}
		if err != nil {
			s.log.Error("supervise: poll the listener", zap.Error(err))
			return
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			// POLLHUP: every process under the filter is gone.
			return
		}
		var nt notif
		if err := recv(s.fd, &nt); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // the call went away before it was received
			}
			s.log.Error("supervise: receive a notification", zap.Error(err))
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.answer(&nt)
		}()
	}
}

// answer handles one notified call.
func (s *Supervisor) answer(n *notif) {
	resp := notifResp{ID: n.ID}
	switch n.Data.Nr {
	case unix.SYS_STATFS, unix.SYS_FSTATFS:
		if !s.statfs(n, &resp) {
			resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		}
	case unix.SYS_KILL, unix.SYS_PIDFD_OPEN:
		if !s.opts.ConfineSignals || !s.signal(n, &resp) {
			resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		}
	case unix.SYS_STATX:
		if !s.statx(n, &resp) {
			resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		}
	case unix.SYS_MOUNT, unix.SYS_UMOUNT2:
		if !s.mount(n, &resp) {
			resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
		}
	default:
		resp.Flags = unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE
	}
	if resp.Flags&unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE != 0 {
		s.continued.Add(1)
	}
	if err := send(s.fd, &resp); err != nil {
		// ENOENT: the caller was killed, or a signal interrupted the call
		// (it is notified again, and answered again).
		s.gone.Add(1)
		if resp.Flags == 0 && (n.Data.Nr == unix.SYS_MOUNT || n.Data.Nr == unix.SYS_UMOUNT2) {
			// Carried out: a restart of the call must not do it twice.
			s.restarts.keep(n, resp.Error)
		}
		if !errors.Is(err, unix.ENOENT) {
			s.log.Warn("supervise: answer a call", zap.Error(err))
		}
		return
	}
	if resp.Flags == 0 {
		s.answered.Add(1)
	}
}

// statfs answers statfs(path, buf) or fstatfs(fd, buf); false lets the
// call run as it is.
func (s *Supervisor) statfs(n *notif, resp *notifResp) bool {
	if s.opts.Statfs == nil {
		return false
	}
	tid := int(n.Pid)
	var f *os.File
	var err error
	if n.Data.Nr == unix.SYS_STATFS {
		f, _, err = openArg(tid, n.Data.Args[0])
	} else {
		f, err = os.OpenFile("/proc/"+strconv.Itoa(tid)+"/fd/"+strconv.FormatUint(n.Data.Args[0]&0xffffffff, 10), unix.O_PATH|unix.O_CLOEXEC, 0)
	}
	// The name read and the file opened are the caller's only if its
	// call still waits.
	if !idValid(s.fd, n.ID) {
		if f != nil {
			f.Close()
		}
		return false
	}
	if err != nil {
		return false // the kernel gives the caller the right error
	}
	defer f.Close()
	c := callerCreds(tid)
	st, ok, err := s.opts.Statfs(f, c.uid, c.gid)
	if !ok {
		return false
	}
	if err != nil {
		e, _ := qfs.ToErrno(err)
		resp.Error = -int32(e)
		return true
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&st)), unsafe.Sizeof(st))
	if !idValid(s.fd, n.ID) {
		return false
	}
	if err := writeBytes(tid, n.Data.Args[1], buf); err != nil {
		resp.Error = -int32(unix.EFAULT)
	}
	return true
}

// openArg reads the path at addr of thread tid and opens it as the
// thread would (openInCaller); it returns the path too, for logs.
func openArg(tid int, addr uint64) (*os.File, string, error) {
	p, err := readString(tid, addr)
	if err != nil {
		return nil, "", err
	}
	f, err := openInCaller(tid, p)
	return f, p, err
}

// openInCaller opens p (O_PATH, following symlinks as statfs does) as
// thread tid would: in its root, from its working directory.
func openInCaller(tid int, p string) (*os.File, error) {
	if p == "" {
		return nil, unix.ENOENT
	}
	proc := "/proc/" + strconv.Itoa(tid)
	if !path.IsAbs(p) {
		root, err := os.Readlink(proc + "/root")
		if err != nil {
			return nil, err
		}
		cwd, err := os.Readlink(proc + "/cwd")
		if err != nil {
			return nil, err
		}
		wd, in := qfs.InRoot(cwd, root)
		if !in {
			return nil, fmt.Errorf("supervise: the working directory %s of %d is outside its root %s", cwd, tid, root)
		}
		p = path.Join(wd, p)
	}
	rootFd, err := unix.Open(proc+"/root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(rootFd)
	fd, err := unix.Openat2(rootFd, p, &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT})
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

// creds are a caller's effective ids and capabilities, from its
// /proc/<tid>/status.
type creds struct {
	uid, gid uint32
	caps     uint64 // CapEff
}

// callerCreds reads the creds of thread tid (root's ids and no
// capabilities when they cannot be read).
func callerCreds(tid int) creds {
	var c creds
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return c
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Uid:", "Gid:":
			if len(f) < 3 {
				continue
			}
			v, _ := strconv.ParseUint(f[2], 10, 32) // the effective id
			if f[0] == "Uid:" {
				c.uid = uint32(v)
			} else {
				c.gid = uint32(v)
			}
		case "CapEff:":
			c.caps, _ = strconv.ParseUint(f[1], 16, 64)
		}
	}
	return c
}

// has reports whether the caps hold capability cap.
func (c creds) has(cap int) bool { return c.caps&(1<<cap) != 0 }
