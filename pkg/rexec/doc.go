// Package rexec is the DPU side of rexec: it runs a binary on the host
// through a qtfs-server's Exec service so that the caller cannot tell it
// from a local run. Run carries one process over one stream; Main is the
// rexec command around it (flags, settings, dialing, the terminal,
// signals, inherited files).
//
// The command:
//
//	rexec [--server URI] [TLS] [-t] [--cwd DIR] [--env K=V]... BINARY [ARG...]
//
// Invoked under any other name than "rexec" (a symlink or hard link such as
// /usr/local/bin/runc → rexec), it takes no flags of its own: it runs the
// host binary of that name with all its arguments, so "runc --help" reaches
// runc. Its settings then come from the environment (QTFS_SERVER or
// REXEC_SERVER, QTFS_TLS_CERT, ...) and /etc/qtfs/client.yaml.
//
// What crosses:
//   - argv (argv[0] as the caller wrote it), the whole environment (the
//     server drops what its policy denies, LD_PRELOAD and friends by
//     default), the working directory (the same path on the host; the
//     DPU's chroot mirrors host paths).
//   - stdin, stdout and stderr, binary-safe, with back-pressure both ways:
//     output is read from the stream only as fast as it is written out,
//     stdin only as fast as the stream takes it. EOF on stdin reaches the
//     process as EOF (with a pty: as the VEOF character).
//   - Regular files open at fd 3 and above that this process inherited
//     (not close-on-exec) are reopened on the host by path, with the same
//     flags, at the same offset and fd number. Pipes, sockets, terminals,
//     devices, deleted files and anything else are not passed; numbers
//     below the highest passed fd that were not passed are /dev/null on
//     the host.
//   - SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH sent
//     to rexec are delivered to the remote process; with a pty, SIGWINCH
//     becomes a window-size change instead.
//   - With -t, or when stdin and stdout are both terminals, the host
//     allocates a pty (stdout and stderr both arrive on stdout); a local
//     terminal on stdin is put in raw mode and restored on every way out
//     but SIGKILL. stdout must be a terminal too for the automatic choice,
//     so that "rexec cat f > copy" stays binary-safe.
//
// Exit codes: the remote status, or 128+signal when the remote process died
// of a signal; 126 when the host refuses the binary (the message names the
// allow-list) or cannot run it, 127 when the binary is not on the host,
// 255 when rexec itself fails (no server, unreachable, refused, connection
// lost, bad usage). Messages of rexec's own start with "rexec: ".
//
// If rexec dies or the connection drops, the server kills the remote
// process group; a process that exited by itself (runc run -d) leaves its
// detached children running.
//
// Lock order: Run holds one lock, its send mutex (gRPC allows one sender at
// a time); nothing else is locked while it is held.
package rexec
