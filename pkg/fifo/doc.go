// Package fifo makes a FIFO on the DPU and a FIFO on the host at the same
// path behave as one FIFO: the qtfs.v1 Fifo service on the host (Server)
// and its DPU end (Bridger).
//
// Why it exists: the kernel keeps a FIFO's pipe on the machine that opens
// it and never sends a FIFO's open, read or write to FUSE. The container
// stdio of an offloaded dockerd is made of FIFOs that dockerd opens on
// the DPU and the containerd-shim opens on the host: without a bridge
// each side waits for a partner that never comes.
//
// Where it lives, and why there: a bridge needs a direction (who writes,
// who reads), and the filesystem never learns it (the opens are not
// sent). The containerd API says it explicitly: CreateTaskRequest and
// ExecProcessRequest name the stdin, stdout and stderr FIFOs, so the
// bridges are started by the containerd-aware socket proxy
// (pkg/ctrdproxy) before it forwards those requests, when the FIFOs exist
// on the DPU and the shim has not opened them yet. This package knows
// nothing of containerd: it carries one FIFO one way.
//
// A bridge, TO_DPU (stdout, stderr): the server makes the host FIFO
// beneath an export when it is missing (and its directories, as mkdir
// -p), then opens it for reading, which waits, as open(2) does, for a
// writer on the host (the shim); the DPU end opens its FIFO for writing,
// which waits for dockerd's reader. Bytes go in order; when the host's
// last writer closes, the server sends eof and the DPU end closes its
// writer, so dockerd reads EOF. FROM_DPU (stdin) is the mirror image:
// the DPU end reads, the host end writes, and the DPU's EOF closes the
// host writer.
//
// Invariants:
//   - Host paths are confined like every other path of the server: the
//     FIFO must lie beneath an export, and its directory is walked (and
//     made) with hostfs's walk beneath the export's root, which never
//     follows a symlink (ELOOP); "", ".", ".." and names with "/" or NUL
//     are refused before. Only
//     FIFOs are made, opened or removed; a FIFO is made only on a
//     writable export.
//   - No goroutine or descriptor outlives its bridge: a blocking open
//     that waits for a peer is released by opening the other end
//     non-blocking (the peer that never came is stood in for, for an
//     instant), so a bridge whose stream ends, or a container that exits
//     before its FIFOs are opened, leaves nothing waiting. Reads and
//     writes use non-blocking descriptors in the runtime's poller, so
//     closing one ends them.
//   - Memory is bounded per bridge: one chunk (ChunkSize) between a read
//     and its write; a slow reader stops the writer through gRPC flow
//     control and the pipe's buffer.
//   - Metrics carry no path: qtfs_fifo_* on the host,
//     qtfs_client_fifo_* on the DPU.
//
// Lock order: Server has no lock. Bridger.mu guards its set of live
// bridges and is a leaf.
package fifo
