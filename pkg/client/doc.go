// Package client is the DPU-side daemon behind the qtfs-client command:
// it turns clientconf.Settings (flags, QTFS_* environment,
// /etc/qtfs/client.yaml) and a --remote [SERVER:]PATH into a connection,
// a session and a FUSE mount, runs that mount in the background like sshfs (or in the
// foreground with -f), and answers `qtfs-client status` through a control
// socket per mount daemon in the runtime directory.
//
// A mount daemon owns its mount: on SIGTERM or SIGINT it unmounts, and
// when the mount is busy it detaches it and aborts the FUSE connection so
// that no stale mount is left behind.
package client
