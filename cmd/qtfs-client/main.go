// Command qtfs-client mounts a qtfs server's exports on a DPU.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"go.uber.org/zap"

	"github.com/qtfs/qtfs/pkg/client"
	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/config"
	"github.com/qtfs/qtfs/pkg/logging"
	"github.com/qtfs/qtfs/pkg/version"
)

const usage = `qtfs-client mounts directories that a qtfs-server exports from its host.

Usage:
  qtfs-client mount [-f] [-o ro,cache=auto|none|strict,allow_other] [--server URI] [TLS] --remote [SERVER:]PATH MOUNTPOINT
  qtfs-client umount [--lazy] MOUNTPOINT
  qtfs-client run [--check] [--config /etc/qtfs/client.yaml]
  qtfs-client exec [--config /etc/qtfs/client.yaml] -- PROGRAM [ARG...]
  qtfs-client status
  qtfs-client --version

  TLS = --tls-cert F --tls-key F --tls-ca F | --insecure
  SERVER is a name from servers: in /etc/qtfs/client.yaml, or a host name or address (tcp, port 12121).

Run 'qtfs-client COMMAND --help' for the flags of a command.
`

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return 2
	}
	switch args[0] {
	case "mount":
		return mount(args[1:])
	case "umount", "unmount":
		return umount(args[1:])
	case "exec":
		return execCmd(args[1:])
	case "run":
		return runCmd(args[1:])
	case "status":
		return status(args[1:])
	case "--version", "-version", "version":
		fmt.Println("qtfs-client", version.Version)
		return 0
	case "-h", "--help", "-help", "help":
		fmt.Print(usage)
		return 0
	}
	fmt.Fprintf(os.Stderr, "qtfs-client: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func fail(code int, err error) int {
	fmt.Fprintf(os.Stderr, "qtfs-client: %v\n", err)
	return code
}

// load parses a subcommand's flags; ok=false means exit with code. The
// config file may hold the run command's keys too (one client.yaml).
func load(name, help string, set *flag.FlagSet, s *clientconf.Settings, args []string) ([]string, int, bool) {
	var file clientconf.File
	file.Flags(set)
	defer func() { *s = file.Settings }()
	set.Usage = func() { fmt.Fprint(set.Output(), help+"\nFlags:\n"); set.PrintDefaults() }
	_, rest, err := clientconf.Source{Interleaved: true}.Load(set, args, &file)
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0, false
	}
	if err != nil {
		return nil, fail(2, fmt.Errorf("%s: %w", name, err)), false
	}
	return rest, 0, true
}

const mountHelp = `Usage: qtfs-client mount [-f] [-o OPTIONS] [--server URI] [TLS] --remote [SERVER:]PATH MOUNTPOINT

Mounts host PATH (an export of the server, or a directory beneath one) on MOUNTPOINT and
returns once the mount answers. The mount is served by a background daemon (logs and
control socket in --runtime-dir) unless -f keeps it in the foreground.

-o options: ro, rw, allow_other, debug, cache=auto|none|strict, local_proc=DIR, offload_root=DIR,
            reconnect_timeout=DURATION
  cache=auto        short attribute timeouts, page cache kept while mtime holds (default)
  cache=none        no caching, direct I/O (default for /proc, /sys and cgroup exports)
  cache=strict      long timeouts: the host never changes files behind this mount
  local_proc=DIR    on a host /proc mount, the DPU's own proc as the callers see it
                    (default /local_proc): /proc/self of a caller outside the offload
                    chroot links to DIR/<caller pid>
  offload_root=DIR  on a host /proc mount, /proc/<pid> of a DPU process whose root is DIR
                    (the offload chroot) is a directory of the mount: mountinfo and mounts
                    show the host's mounts, exe and cwd read as the process sees them,
                    root is /, every other entry links to local_proc/<pid>/<entry>; its
                    /proc/self reads as its bare <pid>
  reconnect_timeout=DURATION
                    when the server restarts or the link fails, callers wait this long
                    for the reconnect (default 30s), then get EIO (calls in flight) or
                    ENOTCONN (new calls) until the server is back
`

func mount(args []string) int {
	var s clientconf.Settings
	set := flag.NewFlagSet("qtfs-client mount", flag.ContinueOnError)
	fg := set.Bool("f", false, "stay in the foreground (for systemd units and debugging)")
	var opts []string
	set.Var(config.NewStringList(&opts), "o", "mount `options`, comma-separated (repeatable)")
	remote := set.String("remote", "", "what to mount: `[SERVER:]PATH`")
	rest, code, ok := load("mount", mountHelp, set, &s, args)
	if !ok {
		return code
	}
	if len(rest) != 1 {
		return fail(2, errors.New("mount: want exactly one MOUNTPOINT (see --help)"))
	}
	r, err := client.ParseRemote(*remote)
	if err != nil {
		return fail(2, fmt.Errorf("mount: %w", err))
	}
	mf, err := client.ParseMountOptions(opts)
	if err != nil {
		return fail(2, fmt.Errorf("mount: %w", err))
	}
	req := client.MountRequest{Settings: s, Remote: r, Mountpoint: rest[0], Flags: mf, Foreground: *fg}
	if _, err := client.ServerURI(&s, r); err != nil {
		return fail(2, fmt.Errorf("mount: %w", err))
	}
	if !*fg {
		if err := client.Background(req, args); err != nil {
			return fail(1, err)
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	err = client.Foreground(ctx, req, func(dest string) (*zap.Logger, error) {
		l, err := logging.NewTo(s.LogLevel, s.LogFormat, dest)
		if err == nil {
			l.Info("qtfs-client starting", zap.String("version", version.Version))
		}
		return l, err
	})
	if err != nil {
		return fail(1, err)
	}
	return 0
}

const umountHelp = `Usage: qtfs-client umount [--lazy] MOUNTPOINT

Unmounts a qtfs mount; its daemon then exits. --lazy detaches a busy mount at once
(it is freed when the last user lets go).
`

func umount(args []string) int {
	var s clientconf.Settings
	set := flag.NewFlagSet("qtfs-client umount", flag.ContinueOnError)
	lazy := set.Bool("lazy", false, "detach a busy mount now (MNT_DETACH)")
	rest, code, ok := load("umount", umountHelp, set, &s, args)
	if !ok {
		return code
	}
	if len(rest) != 1 {
		return fail(2, errors.New("umount: want exactly one MOUNTPOINT"))
	}
	if err := client.Unmount(rest[0], *lazy); err != nil {
		return fail(1, err)
	}
	return 0
}

const statusHelp = `Usage: qtfs-client status

Lists the qtfs mounts of this machine: remote, server, round-trip time, daemon pid;
and for each 'qtfs-client run' daemon its socket proxies, server and state.
`

func status(args []string) int {
	var s clientconf.Settings
	set := flag.NewFlagSet("qtfs-client status", flag.ContinueOnError)
	rest, code, ok := load("status", statusHelp, set, &s, args)
	if !ok {
		return code
	}
	if len(rest) != 0 {
		return fail(2, fmt.Errorf("status: unexpected argument %q", rest[0]))
	}
	if err := client.PrintStatus(context.Background(), os.Stdout, s.RuntimeDir); err != nil {
		return fail(1, err)
	}
	return 0
}

const execHelp = `Usage: qtfs-client exec [--config /etc/qtfs/client.yaml] -- PROGRAM [ARG...]

Runs PROGRAM in the chroot that qtfs-client run keeps for this config (chroot to its
root, working directory /, this environment), under run's syscall supervisor:
statfs(2) and fstatfs(2) of the qtfs mounts answer with the host's filesystem (cgroup2fs
for a cgroup v2 /sys/fs/cgroup, not FUSE's type); mount(2) and umount2(2) beneath a
qtfs mount (dockerd's overlay2 layers, kubelet's tmpfs volumes) are made on the host,
at the same path, as far as the server's mount_allow permits, so that the host's runc
sees them; the new mount API (fsopen, open_tree, ...) fails with ENOSYS, and programs
fall back to mount(2). Mounts made in a mount namespace of the program's own stay on
the DPU. Every other call runs as it is.
Use it as ExecStart= of an offloaded service instead of RootDirectory=. It fails
when no qtfs-client run serves the root.
`

func execCmd(args []string) int {
	var prog []string
	for i, a := range args {
		if a == "--" {
			args, prog = args[:i], args[i+1:]
			break
		}
	}
	set := flag.NewFlagSet("qtfs-client exec", flag.ContinueOnError)
	set.Usage = func() { fmt.Fprint(set.Output(), execHelp+"\nFlags:\n"); set.PrintDefaults() }
	rc, err := client.LoadRunConfig(set, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return fail(2, fmt.Errorf("exec: %w", err))
	}
	if len(prog) == 0 {
		set.Usage()
		return 2
	}
	err = client.Exec(rc, prog)
	if client.IsConfigError(err) {
		return fail(2, fmt.Errorf("exec: the config is wrong:\n%w", err))
	}
	return fail(1, err)
}

const runHelp = `Usage: qtfs-client run [--check] [--config /etc/qtfs/client.yaml]

Builds the offload environment the config describes and keeps it up until SIGTERM: one
connection to the server, the chroot (binds of the DPU's directories, the DPU's proc at
/local_proc, its /dev, the host's exports at their host paths), socket proxies to host
sockets, and rexec shims on PATH. Then it tears everything down in reverse order.
--check only checks the config and prints what run would do, in order.
Exit status 2: the config is wrong (file, line, key and reason are printed).
`

func runCmd(args []string) int {
	set := flag.NewFlagSet("qtfs-client run", flag.ContinueOnError)
	set.Usage = func() { fmt.Fprint(set.Output(), runHelp+"\nFlags:\n"); set.PrintDefaults() }
	check := set.Bool("check", false, "check the config, print the plan and exit")
	rc, err := client.LoadRunConfig(set, args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return fail(2, fmt.Errorf("run: %w", err))
	}
	if *check {
		if err := client.CheckRunConfig(rc, os.Stdout); err != nil {
			return fail(2, fmt.Errorf("run: the config is wrong:\n%w", err))
		}
		return 0
	}
	log, err := logging.New(rc.LogLevel, rc.LogFormat)
	if err != nil {
		return fail(2, fmt.Errorf("run: %w", err))
	}
	defer log.Sync()
	log.Info("qtfs-client run starting", zap.String("version", version.Version), zap.String("config", rc.Config))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := client.Run(ctx, rc, log); err != nil {
		if client.IsConfigError(err) {
			return fail(2, fmt.Errorf("run: the config is wrong, nothing was mounted:\n%w", err))
		}
		return fail(1, fmt.Errorf("run: %w", err))
	}
	return 0
}
