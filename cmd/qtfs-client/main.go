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
	"github.com/qtfs/qtfs/pkg/config"
	"github.com/qtfs/qtfs/pkg/logging"
	"github.com/qtfs/qtfs/pkg/version"
)

const usage = `qtfs-client mounts directories that a qtfs-server exports from its host.

Usage:
  qtfs-client mount [-f] [-o ro,cache=auto|none|strict,allow_other] [--server URI] [TLS] --remote [SERVER:]PATH MOUNTPOINT
  qtfs-client umount [--lazy] MOUNTPOINT
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

// load parses a subcommand's flags; ok=false means exit with code.
func load(name, help string, set *flag.FlagSet, s *client.Settings, args []string) ([]string, int, bool) {
	s.Flags(set)
	set.Usage = func() { fmt.Fprint(set.Output(), help+"\nFlags:\n"); set.PrintDefaults() }
	src := config.Source{ConfigFlag: "config", DefaultPath: client.DefaultConfigPath, Interleaved: true}
	_, rest, err := src.Load(set, args, s)
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

-o options: ro, rw, allow_other, debug, cache=auto|none|strict
  cache=auto    short attribute timeouts, page cache kept while mtime holds (default)
  cache=none    no caching, direct I/O (default for /proc, /sys and cgroup exports)
  cache=strict  long timeouts: the host never changes files behind this mount
`

func mount(args []string) int {
	var s client.Settings
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
	if _, err := s.ServerURI(r); err != nil {
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
	var s client.Settings
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

Lists the qtfs mounts of this machine: remote, server, round-trip time, daemon pid.
`

func status(args []string) int {
	var s client.Settings
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
