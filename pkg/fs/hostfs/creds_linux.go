package hostfs

import (
	"bufio"
	"errors"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// credSwitcher runs functions with a caller's filesystem identity on the
// current OS thread.
type credSwitcher struct {
	log     *zap.Logger
	enabled bool     // false when the server cannot change ids (not root)
	uid     uint32   // the server's own fsuid, restored after each switch
	gid     uint32   // the server's own fsgid
	groups  []uint32 // the server's own supplementary groups
}

func newCredSwitcher(log *zap.Logger) (credSwitcher, error) {
	c := credSwitcher{log: log, uid: uint32(os.Geteuid()), gid: uint32(os.Getegid())}
	gs, err := unix.Getgroups()
	if err != nil {
		return c, err
	}
	for _, g := range gs {
		c.groups = append(c.groups, uint32(g))
	}
	c.enabled = hasCap(unix.CAP_SETUID) && hasCap(unix.CAP_SETGID)
	if !c.enabled {
		log.Warn("hostfs: no CAP_SETUID/CAP_SETGID: every operation runs as the server's own user, not as the caller")
	}
	return c, nil
}

// hasCap reports whether the process has capability c in its effective set.
func hasCap(c int) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return os.Geteuid() == 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			bits, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && bits&(1<<uint(c)) != 0
		}
	}
	return os.Geteuid() == 0
}

// run calls fn with the fsuid, fsgid and groups of caller on a locked OS
// thread and restores the server's identity afterwards. A nil caller, or
// one that is the server's own uid and gid, runs fn unchanged.
func (c *credSwitcher) run(caller *qtfsv1.Caller, fn func() syscall.Errno) syscall.Errno {
	if !c.enabled || caller == nil || (caller.GetUid() == c.uid && caller.GetGid() == c.gid && c.uid == 0) {
		return fn()
	}
	uid, gid, groups := caller.GetUid(), caller.GetGid(), caller.GetGroups()
	if uid == math.MaxUint32 || gid == math.MaxUint32 || len(groups) > maxGroups {
		return syscall.EINVAL
	}
	runtime.LockOSThread()
	restored := true
	defer func() {
		if !c.restore() {
			restored = false
			c.log.Error("hostfs: could not restore the server's identity on a thread; the thread is discarded")
		}
		if restored {
			runtime.UnlockOSThread()
		}
	}()
	if e := setGroups(groups); e != 0 {
		return e
	}
	if e := setFsgid(gid); e != 0 {
		return e
	}
	if e := setFsuid(uid); e != 0 {
		return e
	}
	return fn()
}

// restore puts the server's identity back on the current thread.
func (c *credSwitcher) restore() bool {
	return setFsuid(c.uid) == 0 && setFsgid(c.gid) == 0 && setGroups(c.groups) == 0
}

// setFsuid sets the thread's fsuid and checks it took: setfsuid(2) reports
// failure only by not changing the id.
func setFsuid(uid uint32) syscall.Errno {
	if _, err := unix.SetfsuidRetUid(int(uid)); err != nil {
		return errnoFrom(err)
	}
	if cur, _ := unix.SetfsuidRetUid(-1); uint32(cur) != uid {
		return syscall.EPERM
	}
	return 0
}

func setFsgid(gid uint32) syscall.Errno {
	if _, err := unix.SetfsgidRetGid(int(gid)); err != nil {
		return errnoFrom(err)
	}
	if cur, _ := unix.SetfsgidRetGid(-1); uint32(cur) != gid {
		return syscall.EPERM
	}
	return 0
}

// setGroups sets the supplementary groups of the calling thread only: the
// raw system call, unlike syscall.Setgroups, does not touch other threads.
func setGroups(groups []uint32) syscall.Errno {
	var p unsafe.Pointer
	if len(groups) > 0 {
		p = unsafe.Pointer(&groups[0])
	}
	_, _, e := unix.RawSyscall(sysSetgroups, uintptr(len(groups)), uintptr(p), 0)
	return e
}

func errnoFrom(err error) syscall.Errno {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
