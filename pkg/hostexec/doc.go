// Package hostexec is the host side of rexec: the qtfs.v1 Exec service,
// which runs allow-listed host binaries for a DPU and carries each
// process's life over one bidirectional gRPC stream.
//
// One Run stream is one process. The first request is ExecStart; the
// server resolves the binary (an absolute path, or a name looked up in the
// server's own PATH), follows symlinks, and compares the result with the
// allow-list (each entry resolved the same way, at every request, so a
// package upgrade that moves a binary behind a symlink is followed). It
// answers ExecStarted and then streams stdout and stderr; requests carry
// stdin, stdin EOF, signals and window sizes; the last response is
// ExecExit.
//
// What the process gets:
//   - argv[0] is the caller's argv0; the executable is the resolved path.
//   - The caller's environment less the deny-list (Options.EnvDeny,
//     DefaultEnvDeny when nil). An entry "NAME" drops NAME, an entry
//     "PREFIX*" drops every variable starting with PREFIX.
//   - The caller's working directory, which must exist on the host (the
//     DPU's chroot mirrors host paths). A missing one fails the run (126).
//   - stdin, stdout and stderr are pipes, or with ExecStart.tty one pty
//     (opened from /dev/ptmx; the process is a session leader with the pty
//     as its controlling terminal).
//   - Each ExecFile is opened on the host by path with the caller's flags
//     (O_CREAT, O_EXCL and O_TRUNC dropped), moved to the caller's offset
//     and placed at the same fd number. Numbers between 3 and the highest
//     passed fd that the caller did not pass are /dev/null; nothing above
//     the highest is open. A path that is not a regular file on the host, or
//     cannot be opened, fails the run (126). Other kinds of fd (pipes,
//     sockets, terminals, devices) are not passed: rexec sends regular files
//     only.
//   - The process runs with the server's credentials (root on a normal
//     host): the Exec service gives an authenticated peer the power of the
//     allow-listed binaries, no more and no less. Allow-listing a multi-call
//     binary (busybox) allows every applet, since argv0 chooses it.
//
// Invariants:
//   - Nothing runs unless its resolved path is on the allow-list; a refusal
//     is answered with ExecExit{code: 126} naming the allow-list, logged at
//     warn and counted (qtfs_exec_refusals_total). A binary that does not
//     exist on the host is ExecExit{code: 127}.
//   - Every run is logged at info (peer, argv, path, pid, exit code, signal,
//     duration) and counted in qtfs_exec_runs_total{result} and
//     qtfs_exec_duration_seconds. No label holds a path or an argument.
//   - Output is read only as fast as the stream sends it (one chunk in
//     flight per output), so a slow reader stops the process on a full
//     pipe instead of growing the server's memory. Stdin is queued at most
//     stdinQueue chunks deep; beyond that the server stops reading the
//     stream, and gRPC flow control stops the client.
//   - ExecExit comes after all of the process's output. Once the process
//     has exited, its output pipes are read until they are empty and then
//     no further: a child it left behind holding them (runc run -d leaves
//     the container with runc's stdio) neither keeps the stream open nor
//     gets its later output sent. The drain stops after drainIdle without
//     data, and after drainMax in any case.
//   - When the stream ends before the process exited (rexec was killed,
//     the connection dropped, the client cancelled, the server stops), the
//     process group is sent SIGKILL. A child that left the group on purpose
//     (setsid, setpgid: daemons, runc's container) survives, as does
//     anything left behind by a process that exited by itself.
//   - Signals are sent only while the process is not yet reaped: the
//     server learns of the exit with waitid(WNOWAIT), marks the run exited
//     under run.mu, and only then reaps, so a signal never reaches a
//     recycled pid.
//   - A handler panic is recovered, logged and answered with INTERNAL; the
//     process is killed.
//
// Signals: SIGINT, SIGQUIT, SIGHUP and SIGWINCH are what a terminal sends
// to a whole foreground process group, and go to the process group (with
// a pty: to the pty's foreground group); every other signal goes to the
// process alone, as kill(1) would send it. A program starts with every
// signal at its default action, also when the server itself was started
// with SIGHUP or SIGINT ignored (nohup): the server then handles them, and
// drops them.
//
// Lock order: Server has no lock. run.mu guards the exited flag and is
// held while a signal is sent; run.sendMu serialises stream.Send. Neither
// is taken while holding the other.
package hostexec
