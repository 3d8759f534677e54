package supervise

import (
	"os"
	"strconv"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// signal answers kill(2) and pidfd_open(2) of a pid (Options.ConfineSignals).
// An offloaded program names the host's processes by number: kubelet
// reads a pod cgroup's cgroup.procs (the host's, through qtfs) and kills
// what is left there. On the DPU that number is some DPU process, or
// none. So a pid that is not a process in the caller's own root (the
// chroot, where /proc shows the DPU's processes of the chroot and the
// host's for every other number) gets ESRCH, as a process already gone
// does: kubelet takes that as done. Signals between the chroot's own
// processes, to a process group (pid <= 0), or from a caller in another
// pid namespace than the supervisor's run as they are.
func (s *Supervisor) signal(n *notif, resp *notifResp) bool {
	pid := int32(n.Data.Args[0])
	if pid <= 0 {
		return false
	}
	tid := int(n.Pid)
	if !s.inOwnPidNS(tid) {
		return false
	}
	callerRoot, err := os.Readlink("/proc/" + strconv.Itoa(tid) + "/root")
	if err != nil {
		return false
	}
	targetRoot, err := os.Readlink("/proc/" + strconv.Itoa(int(pid)) + "/root")
	if err == nil && targetRoot == callerRoot {
		return false
	}
	if !idValid(s.fd, n.ID) {
		return false
	}
	resp.Error = -int32(unix.ESRCH)
	call := "kill"
	if n.Data.Nr == unix.SYS_PIDFD_OPEN {
		call = "pidfd_open"
	}
	s.log.Info("supervise: a signal to a pid outside the caller's root: ESRCH (the number is the host's process in the chroot's /proc)",
		zap.String("call", call), zap.Int32("pid", pid), zap.Uint64("signal", n.Data.Args[1]))
	return true
}

// inOwnPidNS reports whether thread tid is in the supervisor's pid
// namespace (its pids mean what they mean to the supervisor).
func (s *Supervisor) inOwnPidNS(tid int) bool {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(tid)+"/ns/pid", &st); err != nil {
		return false
	}
	return st.Dev == s.pidNS.Dev && st.Ino == s.pidNS.Ino
}
