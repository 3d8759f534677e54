// Package bench measures qtfs against what a user would otherwise reach for
// and against the ceilings above it, on one machine, side by side:
//
//  1. local: the backing directory itself (the disk ceiling);
//  2. gofuse-loopback: go-fuse's loopback example over the same directory
//     (the local FUSE ceiling: FUSE without a network);
//  3. sshfs: sshfs to an sshd of our own on 127.0.0.1 (the usual alternative);
//  4. qtfs-tcp-tls: qtfs-server and qtfs-client over TCP loopback with mutual TLS;
//  5. qtfs-unix: qtfs over a unix socket.
//
// Every peer exposes the same backing directory (on the real disk, not
// tmpfs) and, where it can, the host's /proc. The workloads (fio sequential
// and random I/O, small-file metadata, find+stat over a large tree, cp -a of a
// source tree, a ps-like /proc scan) run interleaved: round 1 runs every
// workload on peer 1, then peer 2, … peer 5; round 2 does it again. Each
// workload reports one figure (its unit and direction are part of the
// workload), the CPU time (utime+stime deltas) of the peer's client and
// server processes, and their peak RSS during the workload (VmHWM, reset
// through /proc/PID/clear_refs before it starts). Results are summarised as
// medians with their spread and rendered as a markdown report with the
// machine description.
//
// Invariants:
//   - Everything the run starts (servers, mount daemons, the ssh processes
//     sshfs leaves behind) is known by pid, and stopped by pid; everything it
//     mounts is unmounted, on success, on error and on SIGINT/SIGTERM.
//   - Only loopback addresses and a unix socket in the work directory are
//     used.
//   - What is measured excludes set-up: dropping caches, warming the host's
//     page cache and removing a workload's output happen outside the timed
//     part and outside the CPU deltas.
//
// Lock order: none. The runner is single-threaded; the only goroutines are
// the ones that wait for each started process, and they communicate through
// a channel closed on exit.
package bench
