package supervise

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Offsets in struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16 // args[i] at offArgs + 8*i; its low 32 bits first (little-endian)
)

// The statx(2) the filter notifies: mount-utils' mount-point probe
// (kubelet's IsLikelyNotMountPoint), statx(AT_FDCWD, path,
// AT_STATX_DONT_SYNC, 0, buf), which decides by STATX_ATTR_MOUNT_ROOT, a
// fact of the DPU's mount table where the host's is meant. Every other
// statx (os.Stat and the like ask for a mask) runs as it is.
const (
	statxProbeFlags = unix.AT_STATX_DONT_SYNC
	statxProbeMask  = 0
)

// nativeArch is the AUDIT_ARCH of the running binary.
func nativeArch() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, nil
	}
	return 0, fmt.Errorf("supervise: no seccomp filter for %s", runtime.GOARCH)
}

// notified are the syscalls the filter sends to the supervisor.
var notified = []uint32{unix.SYS_STATFS, unix.SYS_FSTATFS, unix.SYS_MOUNT, unix.SYS_UMOUNT2, unix.SYS_KILL, unix.SYS_PIDFD_OPEN}

// noNewMountAPI are the calls of the new mount API (Linux 5.2), which
// fail with ENOSYS under the filter without a notification: a mount made
// with them could not be carried to the host, and every program that
// uses them (libmount, runc) falls back to mount(2) on ENOSYS, as it does
// on a kernel without them.
var noNewMountAPI = []uint32{
	unix.SYS_FSOPEN, unix.SYS_FSCONFIG, unix.SYS_FSMOUNT, unix.SYS_FSPICK,
	unix.SYS_MOVE_MOUNT, unix.SYS_OPEN_TREE, unix.SYS_MOUNT_SETATTR,
}

// program assembles the filter: for the native architecture, notify the
// calls in notified and the statx mount-point probe, and fail those in
// noNewMountAPI with ENOSYS; allow everything else.
func program() ([]unix.SockFilter, error) {
	arch, err := nativeArch()
	if err != nil {
		return nil, err
	}
	checks := len(notified) + len(noNewMountAPI)
	// After the checks of the numbers: the statx probe's, then the
	// returns (allow, notify, ENOSYS).
	const statxInsns = 8
	insns := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		// Another architecture: to the allow return, past the load,
		// the checks and the statx probe's.
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: arch, SkipTrue: uint8(checks + 1 + statxInsns)},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
	}
	// The returns follow the checks: allow, notify, ENOSYS. The check at
	// index i (counting from 0) jumps over the checks after it, and then
	// the returns before its own.
	for i, nr := range notified {
		insns = append(insns, bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipTrue: uint8(checks - i - 1 + statxInsns + 1)})
	}
	for j, nr := range noNewMountAPI {
		i := len(notified) + j
		insns = append(insns, bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipTrue: uint8(checks - i - 1 + statxInsns + 2)})
	}
	// statx: notify the probe, allow the rest. Skips count from the
	// instruction after the jump; the allow return follows the last.
	atFdcwd := uint32(0xffffff9c) // AT_FDCWD, int -100
	insns = append(insns,
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.SYS_STATX, SkipTrue: 6},
		bpf.LoadAbsolute{Off: offArgs, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: atFdcwd, SkipTrue: 4},
		bpf.LoadAbsolute{Off: offArgs + 2*8, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: statxProbeFlags, SkipTrue: 2},
		bpf.LoadAbsolute{Off: offArgs + 3*8, Size: 4},
		// The probe: over the next instruction and the allow return.
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: statxProbeMask, SkipTrue: 2},
		// Not the probe: the allow return is next.
		bpf.Jump{Skip: 0},
	)
	insns = append(insns,
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
		bpf.RetConstant{Val: unix.SECCOMP_RET_USER_NOTIF},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
	)
	raw, err := bpf.Assemble(insns)
	if err != nil {
		return nil, fmt.Errorf("supervise: assemble the filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

// install loads the filter on the calling thread and returns the
// listener. The caller must hold its OS thread (runtime.LockOSThread) and
// exec from it: the filter is the thread's, and the program executed
// inherits it.
func install() (int, error) {
	filter, err := program()
	if err != nil {
		return -1, err
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// Without CAP_SYS_ADMIN the kernel wants no_new_privs; with it, the
	// program keeps its privileges as they are.
	if !hasSysAdmin() {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return -1, fmt.Errorf("supervise: no_new_privs: %w", err)
		}
	}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	for {
		fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
		runtime.KeepAlive(filter)
		if errno == 0 {
			return int(fd), nil
		}
		// Before Linux 5.19 the kernel does not know WAIT_KILLABLE_RECV.
		if errno == unix.EINVAL && flags&unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0 {
			flags &^= unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
			continue
		}
		return -1, fmt.Errorf("supervise: install the seccomp filter: %w", errors.Join(errno))
	}
}

// hasSysAdmin reports whether this process may load a filter without
// no_new_privs.
func hasSysAdmin() bool {
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[0].Effective&(1<<unix.CAP_SYS_ADMIN) != 0
}
