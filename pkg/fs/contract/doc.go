// Package contract is the conformance suite of the qtfs FileSystem service:
// one set of table-driven tests that every implementation and every way of
// reaching it (in process, through gRPC) must pass, so that all of them are
// held to the same behaviour.
//
// Run takes a Factory that starts the implementation under test over a set
// of host directories and says how to open sessions to it. The suite builds
// its own trees on the host, drives every rpc through the client, and
// checks results both through the client and directly on the host
// (ownership, modes, contents, that nothing outside an export changed).
//
// Invariants the suite holds implementations to:
//   - every rpc answers filesystem failures with a Linux errno, and calls
//     before Handshake with FAILED_PRECONDITION;
//   - bad paths and names are refused (EINVAL, ENAMETOOLONG) before the
//     filesystem is touched, and no symlink inside an export is followed;
//   - read-only exports refuse every change with EROFS;
//   - operations run with the caller's uid, gid and groups (when the suite
//     runs as root);
//   - a session's end releases its handles.
//
// Subtests run one after the other (the open-handle count is checked after
// each), so the package holds no locks.
package contract
