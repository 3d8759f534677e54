// Package session is the DPU side's call runtime: a handshaken session
// with a qtfs-server's FileSystem service that survives the loss of its
// server session and of its connection, and Call, the one way to make a
// call on it. The FUSE nodes (package fuseclient) build requests and read
// replies; what happens between the two is this package's.
//
// A call (Call):
//   - runs each attempt under its ctx and CallOptions.Timeout, never under
//     a FUSE request's context (Go's preemption signals interrupt FUSE
//     requests every few milliseconds). A call made for a process that may
//     be killed while it waits (CallOptions.For) is cancelled, with EINTR,
//     by the watchdog once that process's request was interrupted and the
//     process has SIGKILL pending or is a zombie already (killed.go): the
//     killed process does not wait for the server, and the server stops
//     the operation.
//   - returns the reply and an errno. A filesystem error is the errno of
//     the reply (ENOSYS from the wire becomes EOPNOTSUPP, which the kernel
//     does not take as "disable this operation for good"; an errno out of
//     range is EIO). A gRPC error is a transport or session failure: the
//     call waits for the reconnect and is sent again, or fails with an
//     errno of Session.rpcErrno (EIO; EAGAIN for a server limit; EINTR for
//     a cancelled lock wait).
//   - sends a copy of the request that carries the server session's ids
//     (translate): the caller's request is never written to.
//
// Reconnecting (reconnect.go): a FAILED_PRECONDITION reply (the server
// lost the session: it restarted, or this is a new connection), an
// UNAVAILABLE one (the connection broke) or a watchdog probe left
// unanswered (a silent link) marks the session down; a loop then asks the
// server whether it still knows the session (a link that came back) or
// handshakes again.
//   - The mount and handle ids callers hold are the session's own (ids.go):
//     each maps to the server's id of the current server session, and a
//     mount or an open file of an earlier one is mounted or opened again on
//     its first use after the reconnect, by path (the path Session.TrackPath
//     gives it, where it is now), with its open flags minus O_CREAT, O_EXCL
//     and O_TRUNC, and only if the path still names the same file (dev,
//     ino); otherwise its calls get EIO.
//   - Locks granted through a handle (OFD record locks, flock) are recorded
//     per handle (locks.go); after a new handshake, and before calls
//     resume, every handle holding locks is opened again and its locks
//     taken again without waiting. A lock someone else took meanwhile makes
//     the handle lost: EIO for every later use, and a warning naming the
//     path. While handles hold locks the watchdog probes the server even
//     when no call waits.
//   - A call waits for the reconnect at most Options.ReconnectTimeout; past
//     it, calls in flight get EIO and new calls ENOTCONN at once until the
//     session is back. Nothing hangs past that bound.
//   - A request is sent again after a reconnect when it never reached the
//     server (FAILED_PRECONDITION, or the connection was not ready) or when
//     sending it twice does no harm (reads, positional writes, setattr,
//     fsync...). Creating, removing and renaming entries, appending writes
//     and conditional xattr changes lost with the connection get EIO: they
//     may or may not have been done, and are never done twice. Nor is a
//     request of a method the method table does not know.
//
// The method table (methods.go): what the session does with each unary
// method of the FileSystem service is declared once, in fileSystemMethods:
// the request fields that hold mount and handle ids (translated on every
// attempt), whether a request is sent again after a reconnect, its route
// when a call stream carries calls (large reads and writes and the
// handshake go as calls of their own), whether it ends its handle's life
// or may go without its reply, and what a success records (a mount, a
// handle, a lock). Every fact's zero value is the cautious one.
// TestMethodTable fails when a method of the service has no entry, or an
// entry no method.
//
// Invariants:
//   - A call never carries ids of one server session into another: each
//     attempt holds reconn.genMu (read) from the translation of its ids to
//     the record of its reply, and a new handshake takes it for writing.
//   - The watchdog arms no timer while no call waits and no handle holds
//     locks: an idle client costs no wake-ups.
//   - A Release is sent only when the server session that opened its handle
//     is the current one (one of a session that may come back is sent when
//     it does); the handle is forgotten afterwards, and so are its locks.
//
// Lock order (a lock may be taken while holding the ones before it):
//
//	reconn.genMu (read by an attempt, write by a new handshake)
//	  → handleRec.mu (a re-open; a handshake re-taking locks)
//	    → mountRec.mu (a re-mount)
//	      → reconn.mu
//
// The Mount, Open and Setlk RPCs of a re-open are made under genMu (read)
// and the record's lock, each with its own deadline. reconn.tmu (the id
// tables), callers.mu, killedCall.mu and Session.mu are leaves.
//
// Metrics (qtfs_client_*) count from the start and are exported once
// Session.RegisterMetrics is called.
package session
