package rexec

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/term"
	"google.golang.org/grpc"

	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/config"
	"github.com/qtfs/qtfs/pkg/logging"
	"github.com/qtfs/qtfs/pkg/transport"
	"github.com/qtfs/qtfs/pkg/version"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Name is the command's own name; under any other name it is multi-call.
const Name = "rexec"

// ServerEnv names the server when --server is not given; it wins over
// QTFS_SERVER and the config file.
const ServerEnv = "REXEC_SERVER"

// DialTimeout is how long rexec waits, by default, for a server that does
// not answer yet (restarting) before it fails (--connect-timeout).
const DialTimeout = 15 * time.Second

// ForwardedSignals are the signals rexec delivers to the remote process.
var ForwardedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH}

const usage = `rexec runs a binary on the host through qtfs-server, as if it ran here.

Usage:
  rexec [--server URI] [TLS] [-t] [--cwd DIR] [--env K=V]... BINARY [ARG...]
     TLS = --tls-cert F --tls-key F --tls-ca F | --insecure

Invoked through a symlink or hard link under another name (runc -> rexec),
it runs the host's binary of that name with every argument, and takes its
settings from the environment and the config file only.

The server is --server, else $REXEC_SERVER, else $QTFS_SERVER, else server:
in /etc/qtfs/client.yaml; a name listed under servers: there stands for its
URI. Every flag is also a QTFS_ variable (--tls-ca is QTFS_TLS_CA).

Exit status: the remote one (128+N when it died of signal N); 126 when the
host refuses or cannot run BINARY, 127 when it has no such binary, 255 when
rexec fails (no server, unreachable, refused, connection lost).

Flags:
`

// invocation is a parsed command line.
type invocation struct {
	// s is what rexec reads of client.yaml: the settings, the keys that
	// only `qtfs-client run` uses accepted and ignored.
	s       clientconf.File
	tty     bool
	cwd     string
	env     []string
	binary  string
	argv0   string
	args    []string
	version bool
	multi   bool
	// connectTimeout bounds the wait for a server that is not listening.
	connectTimeout time.Duration
}

// parse reads argv (os.Args). done is true when there is nothing to run
// (help, a usage error), with code the exit status.
func parse(argv []string, stderr io.Writer) (inv *invocation, code int, done bool) {
	inv = &invocation{}
	set := flag.NewFlagSet(Name, flag.ContinueOnError)
	set.SetOutput(stderr)
	inv.s.Flags(set)
	set.BoolVar(&inv.tty, "t", false, "allocate a pty on the host (default when stdin and stdout are terminals)")
	set.StringVar(&inv.cwd, "cwd", "", "working `dir` on the host (default: the current one, the same path on the host)")
	set.Var(config.NewStringList(&inv.env), "env", "set `K=V` in the remote environment (repeatable)")
	set.BoolVar(&inv.version, "version", false, "print the version and exit")
	set.DurationVar(&inv.connectTimeout, "connect-timeout", DialTimeout,
		"how long to wait for a server that is not listening yet (restarting) before failing")
	set.Usage = func() { fmt.Fprint(set.Output(), usage); set.PrintDefaults() }

	name := Name
	if len(argv) > 0 {
		name = filepath.Base(argv[0])
	}
	src := clientconf.Source{ServerEnv: ServerEnv}
	var cmdline []string
	if name != Name {
		// Multi-call: every argument is the remote binary's.
		inv.multi = true
		inv.binary, inv.argv0, inv.args = name, argv[0], argv[1:]
	} else if len(argv) > 0 {
		cmdline = argv[1:]
	}
	_, rest, err := src.Load(set, cmdline, &inv.s)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, 0, true
		}
		fmt.Fprintf(stderr, "rexec: %v\n", err)
		return nil, CodeFailed, true
	}
	if inv.version {
		fmt.Fprintln(stderr, "rexec", version.Version)
		return nil, 0, true
	}
	if !inv.multi {
		if len(rest) == 0 {
			fmt.Fprintln(stderr, "rexec: no BINARY given (see rexec --help)")
			return nil, CodeFailed, true
		}
		inv.binary, inv.argv0, inv.args = rest[0], rest[0], rest[1:]
	}
	for _, e := range inv.env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			fmt.Fprintf(stderr, "rexec: --env %q: want K=V\n", e)
			return nil, CodeFailed, true
		}
	}
	return inv, 0, false
}

// serverURI resolves the server setting (a URI, or a name from servers:).
func (inv *invocation) serverURI() (transport.URI, error) {
	u, err := inv.s.ServerURI("")
	if errors.Is(err, clientconf.ErrNoServer) {
		return u, fmt.Errorf("%w: pass --server URI, set %s or QTFS_SERVER, or put server: in %s", err, ServerEnv, clientconf.DefaultConfigPath)
	}
	return u, err
}

// environ is os.Environ with the --env settings applied.
func environ(base, set []string) []string {
	out := append([]string(nil), base...)
	for _, kv := range set {
		k, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, e := range out {
			if strings.HasPrefix(e, k+"=") {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// Main is the rexec command; argv is os.Args. It returns the exit status.
func Main(argv []string) int {
	// First of all, before this process opens any file of its own.
	files, ferr := InheritedFiles()

	inv, code, done := parse(argv, os.Stderr)
	if done {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "rexec: "+format+"\n", a...)
		return CodeFailed
	}
	if ferr != nil {
		return fail("%v", ferr)
	}
	log, err := logging.New(inv.s.LogLevel, inv.s.LogFormat)
	if err != nil {
		return fail("%v", err)
	}
	defer log.Sync()

	cwd := inv.cwd
	if cwd == "" {
		if cwd, err = os.Getwd(); err != nil {
			return fail("current directory: %v (pass --cwd DIR)", err)
		}
	} else if !filepath.IsAbs(cwd) {
		return fail("--cwd %s: must be an absolute path", cwd)
	}
	bin := inv.binary
	if strings.Contains(bin, "/") && !filepath.IsAbs(bin) {
		bin = filepath.Join(cwd, bin)
	}

	uri, err := inv.serverURI()
	if err != nil {
		return fail("%v", err)
	}
	cc, err := dialServer(uri, inv.s.Security(), inv.connectTimeout)
	if err != nil {
		return fail("%v", err)
	}
	defer cc.Close()

	stdinTTY := term.IsTerminal(int(os.Stdin.Fd()))
	tty := inv.tty || (stdinTTY && term.IsTerminal(int(os.Stdout.Fd())))
	o := Options{
		Binary: bin,
		Argv0:  inv.argv0,
		Args:   inv.args,
		Env:    environ(os.Environ(), inv.env),
		Cwd:    cwd,
		TTY:    tty,
		Files:  files,
		Stdin:  os.Stdin,
		Stdout: os.Stdout,
		Stderr: os.Stderr,
	}
	if tty {
		o.WindowSize = func() *qtfsv1.WindowSize { return windowOf(0, 1, 2) }
		o.Window = o.WindowSize()
		if stdinTTY {
			old, err := term.MakeRaw(int(os.Stdin.Fd()))
			if err != nil {
				return fail("terminal raw mode: %v", err)
			}
			defer term.Restore(int(os.Stdin.Fd()), old)
		}
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, ForwardedSignals...)
	defer signal.Stop(sigs)
	o.Signals = sigs
	o.Started = func(pid uint32, path string) {
		log.Debug("rexec: started", zap.Uint32("pid", pid), zap.String("path", path), zap.Stringer("server", uri))
	}

	res, err := Run(context.Background(), cc, o)
	if err != nil {
		return fail("%s: %v", uri, err)
	}
	if res.Err != "" {
		fmt.Fprintf(os.Stderr, "rexec: %s\n", res.Err)
	}
	return res.Code
}

// dialServer connects to the server, waiting up to timeout for one that
// is not listening yet (restarting: connection refused, no socket file);
// other failures (TLS, identity) end it at once.
func dialServer(uri transport.URI, sec transport.Security, timeout time.Duration) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	retry := clientconf.Retry{First: 50 * time.Millisecond, Max: time.Second,
		Again: func(_ int, err error, _ time.Duration) bool { return clientconf.NotListening(err) }}
	cc, err := clientconf.DialRetry(ctx, uri, sec, retry, nil)
	if err != nil && clientconf.NotListening(err) {
		return nil, fmt.Errorf("%w (waited %v: --connect-timeout)", err, timeout)
	}
	return cc, err
}
