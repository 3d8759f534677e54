// Package fs holds what both sides of the qtfs filesystem share: the
// validation of names and paths that travel on the wire, the conversion
// of errors into Linux errno values, and the conversion between stat(2)
// results and the wire's Attr.
//
// The host side lives in pkg/fs/hostfs (confined walks beneath each
// export's root, per-caller credentials, the handle table) and the DPU side
// in pkg/fs/fuseclient (go-fuse nodes that speak the FileSystem service).
//
// Invariants:
//   - A name or path from the wire is checked with ValidName / SplitPath
//     before any use; nothing else in the tree re-validates.
//   - Errors become errno once, at a boundary, with ToErrno; unknown errors
//     become EIO (never ENOSYS, which makes the kernel disable an op).
package fs
