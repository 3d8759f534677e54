// Package fuseclient is the DPU side of the qtfs filesystem: go-fuse v2
// nodes that serve a FUSE mount by calling the FileSystem service of a
// qtfs-server through a session.Session, whose Call is the one way they
// make a call (the session keeps itself alive across reconnects, maps ids
// and takes locks again: package session).
//
// Mount asks the server for a mount id rooted at a host path (an export or
// a directory beneath one) and mounts a go-fuse tree whose every operation
// becomes one call (a Read or a Write larger than the server's message
// limit becomes a few).
//
// How requests are built:
//   - A node knows no path of its own: it asks go-fuse for its current path
//     from the mount root (Inode.Parent, walked up to the root) on each
//     operation. A node that is in no directory any more (unlinked) has no
//     path; operations on it use an open handle when there is one and fail
//     with ENOENT otherwise. When the host removed or replaced the file
//     behind a path (within the attribute timeout), Getattr and Open answer
//     ESTALE, on which the kernel looks the name up again.
//   - Every request that acts for a process carries its uid, gid, pid and
//     supplementary groups (read from /proc/<pid>/status, cached briefly).
//   - The kernel applies the umask before it sends MKDIR, MKNOD and CREATE
//     (go-fuse never negotiates FUSE_DONT_MASK), so the umask sent is 0.
//   - Each RPC runs under its own deadline (MountOptions.OpTimeout,
//     session.CallOptions.Timeout) and context.Background, not the FUSE
//     request's context: Go programs receive a preemption signal every few
//     milliseconds, and every signal interrupts the FUSE request it is
//     blocked in. A read or write (every part of a large one), fsync,
//     fallocate or Mounts call names the request's caller
//     (session.CallOptions.For, requestCaller), so that the session's
//     watchdog cancels it once the request was interrupted and its caller
//     is being killed: the killed process does not wait for the server,
//     and the server stops waiting on a pipe for it. A blocking lock wait
//     (Setlkw) runs under the request's context with no deadline: it waits
//     as long as the lock is held and ends when the caller is interrupted
//     or the connection fails.
//   - A filesystem error is the errno of the reply, as session.Call returns
//     it (EIO, EAGAIN or EINTR for a transport failure; ENOSYS from the
//     wire already EOPNOTSUPP).
//   - The mount and handle ids nodes hold are the session's own, valid
//     across reconnects; an open handle tells the session where its file is
//     now (Session.TrackPath), so that a file renamed since is opened again
//     where it is.
//
// Invariants:
//   - Inode numbers are stable for the life of a mount and unique per host
//     (dev, ino): files of the mount root's filesystem keep their host
//     number; other filesystems get a per-device prefix; numbers that do
//     not fit get a number from a table. Hard links therefore share one
//     inode, which go-fuse deduplicates.
//   - READDIRPLUS is fed from the batched Readdir RPC with attributes:
//     listing a directory never costs one Lookup RPC per entry. The first
//     batch comes with the Open (readdir_inline), and a directory listed
//     whole there is closed by the server at once (close_at_eof), as is a
//     /proc or /sys file read whole by its Open: such a handle has no
//     server file until a use needs one (a rewind, a lock), when the
//     reconnect machinery opens it again by path; its Release costs
//     nothing. While the kernel takes one batch, the Readdir of the next
//     is on its way (dir.go: the host's stat of those entries overlaps
//     the hand-out of these).
//   - Reads and writes move at most min(1 MiB, server limit) per RPC; a
//     read or write of 512 KiB or more of a cached file goes out as
//     256 KiB parts at once (file.go), a direct-I/O one as one RPC. The
//     parts go through the session's data codec (session.CallOptions.Data):
//     a read part's data goes from the buffer its reply arrived in to the
//     kernel (the buffers go back to the pool when go-fuse wrote the
//     reply), a write part is encoded into a pooled buffer.
//   - Cached answers never outlive the mount's entry or attribute timeout
//     counted from when the server produced them (cache.go: directory
//     listings, a new file's lack of a capability attribute, a file's lack
//     of any extended attribute, the attributes that came with a change
//     or with the open of a /proc file), and the
//     client's own changes update or drop them when the server confirms
//     them.
//   - Names and attributes from the wire are checked before use: an entry
//     with an invalid name is dropped, an errno out of range is EIO.
//   - The entries a proc root mount makes itself (links, the directories
//     of offloaded processes and their entries) have inode numbers of a
//     device of their own (localDev), apart from every host inode.
//
// Cache policies (CachePolicy): auto keeps attributes and entries for one
// second and the page cache while a file's mtime and size hold; none
// caches nothing and opens files with direct I/O (the default on proc,
// sysfs and cgroup mounts, whose files report a size that is not their
// content's, and where each write(2) must reach the host as one write);
// strict keeps everything for an hour. Under auto and strict a directory
// looked up often is listed once with attributes and its listing answers
// LOOKUP, positive and negative, until the entry timeout (cache.go). On
// proc, sysfs and cgroup mounts a
// policy given explicitly changes the attribute and entry timeouts only:
// their files are always opened with direct I/O.
//
// Proc, sysfs and cgroup mounts (the server tells the kind of the mount
// root):
//   - Each write(2) is one FUSE WRITE of at most max_write bytes (direct
//     I/O), max_write fits one Write RPC, and the server does one host
//     write per Write RPC: cgroup files see the writes the caller made,
//     at the caller's offset, and the host's errno comes back unchanged.
//   - A read-only open reads the file's head in the Open RPC; close(2)
//     makes no Flush RPC (these filesystems write nothing back).
//   - On a mount of the host's proc root (proc.go), the root's links into
//     "self" (mounts, net) point into the host's pid 1, and with
//     MountOptions.OffloadRoot set, /proc/<pid> of a DPU process running
//     in the offload chroot is a directory of the client's (listings show
//     those after the host's entries): its mountinfo and mounts are the
//     mountinfo view (below), exe and cwd read as the process itself
//     reads them (the offload root taken off), root is "/", and every
//     other name is a link to LocalProc/<pid>/<name>, the DPU kernel's
//     own (fd/N, ns/*, oom_score_adj). self and thread-self are "<tgid>"
//     and "<tgid>/task/<tid>" of the calling thread when it is such a
//     process, as the kernel's links are, and lead into the DPU's own
//     proc (MountOptions.LocalProc) otherwise. Magic links of the host's
//     processes read back the host's text and are resolved by the DPU's
//     kernel, never by the server.
//   - The mountinfo view (mountview.go): an offloaded process's
//     mountinfo and mounts are the DPU kernel's, read when opened, with
//     each line of a FUSE mount this process serves showing the host's
//     filesystem of the directory it shows, followed by the host's mounts
//     beneath it (FileSystem.Mounts, kept hostMountsTTL per mount) as
//     lines of their own. A line is matched to its mount by its device,
//     which each mount records when mounted: a device names a mount
//     across bind mounts and mount namespaces, where ids and mount points
//     do not. The host's lines carry the FUSE mount's device (what stat(2)
//     reports for their files), its propagation and read-only flag, and
//     mount ids of the view's, apart from the DPU's. The rest of each
//     line, and every other line, is the DPU's.
//   - Under the default policy a proc root mount keeps, for a second, the
//     process directories a listing named, and drops one as soon as it
//     sees the process gone; and it reads ahead for scanners: the files a
//     thread opened one after the other in one process directory are read
//     along with the first of them in the next (proc.go).
//
// Lock order: mountFS.listings.mu → node.mu (dropping listings to bound
// their memory); otherwise node.mu and fileHandle.mu are leaves (no other
// lock is taken while one is held, and no RPC is made under them); the
// ino table, groups cache and procRoot (dropMu, scan.mu,
// namesMu, ids.mu) locks are leaves too, as are the process's mount table
// (served.mu) and a mount's hostMounts.mu (the Mounts RPC is made with no
// lock held; readers that come meanwhile wait for it unlocked). A
// directory handle has no lock: go-fuse holds its own lock of the handle
// around Readdirent, Lookup and Seekdir, the only RPC made under a go-fuse
// lock; the Readdir sent ahead runs on a goroutine of its own, and the
// handle waits for it before using its result or releasing the directory.
// The session's locks are its own: taken inside a call, never held when it
// returns.
//
// Metrics (qtfs_client_*) are the session's (Session.RegisterMetrics); the
// nodes count bytes and open handles through it.
package fuseclient
