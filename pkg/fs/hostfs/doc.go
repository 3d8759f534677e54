// Package hostfs is the host side of the qtfs filesystem: the implementation
// of the qtfs.v1 FileSystem service over a set of exported host directories.
//
// A Server holds the exports (one O_PATH directory fd each, opened at New).
// Every gRPC connection is bound to a connection state by the stats.Handler
// that ServerOptions installs; Handshake creates the connection's session,
// which owns the mounts (O_PATH root fds beneath an export) and the open
// file handles of that peer. The connection ending, a second Handshake on
// the same connection, or Server.Close release everything the session owns.
// DirectClient gives the same behaviour in process, without gRPC.
//
// Invariants:
//   - Every path and name from the wire is checked with fs.ValidPath /
//     fs.ValidName before any system call; refusals are logged and counted
//     in qtfs_server_refusals_total.
//   - Resolution never leaves a mount root: directories are opened with
//     openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) from
//     the mount's root fd and the last name is acted on with *at calls that
//     do not follow symlinks (AT_SYMLINK_NOFOLLOW, O_NOFOLLOW, or an O_PATH
//     fd reached through /proc/self/fd, which names that exact inode). The
//     server never follows a symlink: a symlink inside a request path gives
//     ELOOP. Host sub-mounts beneath a mount root are crossed.
//   - Path operations run with the caller's fsuid, fsgid and supplementary
//     groups, set on a locked OS thread and restored before the thread is
//     unlocked. A thread whose identity could not be restored stays locked,
//     so the Go runtime discards it when its goroutine ends.
//     Operations on an open handle run with the server's identity: the
//     permission check happened when the handle was opened.
//   - Mount with create makes the directories of its path that are
//     missing, one component at a time beneath the export's fd (each opened
//     as above, made with mkdirat), with the caller's identity; what it
//     made is logged at info, counted and returned.
//   - Read-only exports refuse every change with EROFS. An export with an
//     operation allow-list (Export.Ops) refuses every other operation with
//     EPERM, through its mounts and the handles opened beneath them; an
//     open for writing needs Write allowed too.
//   - One Read or Write is one host read or write: pread(2)/pwrite(2) at
//     the request's offset, or read(2)/write(2) when the file refuses
//     positions (ESPIPE; some proc and sysfs files, pipes). cgroup and proc
//     files act on each write they get, and their errno is returned as is.
//   - The kind of filesystem (FsKind) of an export and of a mount root is
//     read from statfs(2): proc, sysfs, cgroup, cgroup2; a tmpfs holding
//     nothing but cgroup hierarchies (/sys/fs/cgroup in the cgroup v1 and
//     hybrid layouts) is cgroup. Clients never cache those.
//   - Mounts (mounts_linux.go) lists the host's mounts at and beneath a
//     mount's root from the server's /proc/self/mountinfo: the mount the
//     root fd lies on (by its mount id), then the mounts beneath the root
//     that walks from the root fd cross, parents first. A mount elsewhere,
//     or one made on the root itself after it was opened, is never listed.
//   - MountOnHost and UnmountOnHost (hostmount_linux.go) make, change and
//     unmount host mounts beneath a mount for the DPU's supervised
//     programs, as far as Options.MountAllow permits (nothing by
//     default): the caller must be root; every path is walked as above
//     and named to mount(2) and umount2(2) as /proc/self/fd/N of the fd
//     opened, never as a host path; no target is the mount's root, an
//     export's root or a directory holding one; and only overlay and
//     tmpfs mounts, and binds this server made, are changed or unmounted
//     (never a cgroup, proc or disk mount of the host beneath an export).
//     Each change is logged at info.
//   - A filesystem failure is an errno in the reply, never a gRPC status.
//     gRPC statuses are FAILED_PRECONDITION (no Handshake on this connection,
//     or the server is closed), INVALID_ARGUMENT (bad Handshake),
//     RESOURCE_EXHAUSTED (a Handshake past Limits.MaxSessions) and INTERNAL
//     (a handler panicked; the panic is recovered and logged).
//   - Mount ids and handle ids are per session and never reused within it.
//     An unknown handle is EBADF, an unknown mount ESTALE.
//   - Mounts and handles are reference counted: the table holds one
//     reference and every operation in flight holds one, so a Release or a
//     session end racing an operation never lets a file descriptor number be
//     reused under that operation. The fd is closed when the last reference
//     goes.
//   - Sizes are bounded: data per Read/Write by Options.MaxMessageBytes,
//     xattr values and lists by 64 KiB, entries per Readdir by 4096 and by
//     the reply size, mounts per session by a fixed limit. Limits
//     (limits.go) bound the sessions, and per session the open handles
//     (EMFILE), the requests served at once and their data (EAGAIN); a
//     connection may open only so many streams more than that. Past a
//     limit the request is refused, counted and logged (at most once a
//     second per reason), and the server goes on.
//   - A read or write of a file without positions (a pipe) that must wait
//     waits in slices and ends with EINTR once its call is cancelled (the
//     DPU caller was killed): no goroutine waits on a pipe for nobody. The
//     calls that may wait (a Setlk that waits, a Read or Write of a handle
//     without positions) are declared to the call stream server
//     (blockingCalls), which then watches a call channel for the client's
//     cancel while they run.
//
// Lock order (a lock may be taken while holding the ones before it):
//
//	Server.mu (read for operations that use an export fd, write in Close)
//	  → connState.mu
//	    → session.mu
//
// handle.dirMu (serialises Readdir on one directory handle) and handle.ra.mu
// (a handle's sequential-read state) are taken with none of the others
// held. No lock is held across a blocking wait (Setlk, a pipe).
// Server.limitLog.mu and Server.tokenMu are leaves. Server.hostMountMu
// (serialises MountOnHost and UnmountOnHost, guards the host mounts they
// made) is taken with none of the others held; only leaves are taken
// under it.
//
// The package is Linux only (openat2, Linux 5.6 or later).
package hostfs
