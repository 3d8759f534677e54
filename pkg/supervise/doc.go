// Package supervise is the syscall layer of offloaded programs: a
// seccomp user-notification filter that a launcher installs right before
// it executes the program (its threads and children inherit it), and a
// supervisor that answers the filter's notifications.
//
// Why: a FUSE mount cannot carry everything an offloaded management plane
// asks of its filesystems. statfs(2) of a FUSE mount always reports
// FUSE's f_type, and programs decide by it (runc, dockerd and kubelet
// take /sys/fs/cgroup for cgroup v2 only when f_type is
// CGROUP2_SUPER_MAGIC). The supervisor answers statfs and fstatfs of the
// files the Statfser says are its own (the qtfs mounts) with the host's
// statfs of that path, type and flags included, and lets every other call
// run as it is.
//
// mount(2) and umount2(2) whose target the Mounter serves (beneath a
// qtfs mount's root) are carried out by the Mounter (on the host: a
// mount on the DPU would hide nothing from the host's runc), with every
// path the call names (target, bind source, overlay layers) opened in the
// caller's view; the caller gets the Mounter's answer. Only callers in
// the supervisor's own mount namespace and with CAP_SYS_ADMIN are taken:
// a program that unshared its namespace to mount privately (dockerd's
// chrootarchive children) mounts locally. The new mount API (fsopen,
// open_tree, move_mount, ...) fails with ENOSYS without a notification:
// its programs fall back to mount(2), as on kernels before 5.2.
//
// With ConfineSignals, kill(2) and pidfd_open(2) of a pid that is not a
// process in the caller's own root fail with ESRCH: to a program in the
// offload chroot a number names the host's process (its /proc is the
// host's but for the chroot's own processes), and kubelet kills the pids
// left in a pod's host cgroup; on the DPU the same number would be a
// stranger.
//
// statx(2) is notified only as mount-utils' mount-point probe
// (AT_FDCWD, AT_STATX_DONT_SYNC, an empty mask): it answers the kernel's
// statx with STATX_ATTR_MOUNT_ROOT as the Mounter says (a tmpfs kubelet
// mounted on the host is a mount root there, not on the DPU).
//
// The filter notifies only the calls it names (statfs, fstatfs, mount,
// umount2, kill, pidfd_open, the statx probe); every
// other syscall runs at full speed, decided by a few BPF instructions
// (openat and the like are never notified). A call of another
// architecture than the supervisor's runs as it is.
//
// Invariants:
//   - Target memory is read with process_vm_readv and used only after
//     SECCOMP_IOCTL_NOTIF_ID_VALID says the call still waits; the file is
//     opened by the supervisor itself, in the caller's root
//     (/proc/<tid>/root with RESOLVE_IN_ROOT), so a path never leads the
//     supervisor outside what the caller could reach. A descriptor of the
//     caller is reopened through /proc/<tid>/fd, never taken across the
//     check.
//   - Only statfs's answer is written into the caller's memory, after a
//     second ID check, and only at the buffer it passed.
//   - Answering is idempotent: a call that a signal restarted is notified
//     again and answered again; a mount the Mounter made whose answer did
//     not reach its caller is kept (same thread, same arguments, 30 s) and
//     given to the restarted call instead of a second mount. The filter asks for
//     SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19), so a Go
//     program's preemption signals do not restart a call the supervisor
//     holds; on older kernels the filter is installed without it.
//   - Without a supervisor (it died), the notified calls fail with ENOSYS;
//     nothing else is affected.
//
// Lock order: Supervisor.mu guards its closing state and is a leaf.
package supervise
