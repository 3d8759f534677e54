// Package clientconf holds the settings every DPU-side command reads —
// rexec, `qtfs-client mount` and `qtfs-client run` — and the few things
// done with them: declaring their flags, loading /etc/qtfs/client.yaml,
// the QTFS_ environment and the command line into them, resolving the
// server to a URI, and dialing it with retries.
//
// It is small on purpose: rexec, exec'd for every runc call, links it, so
// it must never depend on go-fuse, the filesystem client, the chroot or
// the socket proxies (cmd/rexec's TestDeps holds it to that).
//
// Invariants:
//   - One client.yaml serves every command. Its keys are the Settings' and
//     Run's; any other key is an error for every command, with its file
//     and line. A command that does not use Run's keys accepts them
//     without reading their values.
//   - One resolution of the server: the server setting (--server,
//     QTFS_SERVER, server:), else the SERVER of a --remote; a name listed
//     under servers: stands for its URI, anything else is a URI or a host
//     (TCP, default port).
package clientconf
