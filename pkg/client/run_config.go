package client

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qtfs/qtfs/pkg/chroot"
	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Defaults of `qtfs-client run`.
const (
	DefaultRoot      = "/var/lib/qtfs/root"
	DefaultLocalProc = "/local_proc"
	DefaultShimDir   = "/usr/local/sbin"
	DefaultProxyMode = 0o660
)

// RunConfig is the config file of `qtfs-client run`: the connection
// settings every subcommand reads, and what the offload environment
// holds. The other subcommands accept and ignore the run-only keys, so
// one /etc/qtfs/client.yaml serves them all (rexec too; see package
// clientconf).
type RunConfig struct {
	clientconf.Settings `yaml:",inline"`
	clientconf.Run      `yaml:",inline"`

	// lines maps keys ("mounts[2]") to their line in the file.
	lines map[string]int
}

// ConfigError is one error of a config file, with where it is.
type ConfigError struct {
	File string
	Line int
	Key  string
	Err  error
}

func (e *ConfigError) Error() string {
	where := e.File
	if where == "" && e.Key == "" {
		return e.Err.Error()
	}
	if where == "" {
		where = "config"
	}
	if e.Line > 0 {
		where += ":" + strconv.Itoa(e.Line)
	}
	if e.Key == "" {
		return where + ": " + e.Err.Error()
	}
	return where + ": " + e.Key + ": " + e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

// IsConfigError reports whether err is (or joins) a config error: the
// config must change before a new start can succeed.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}

// LoadRunConfig reads the run command's settings (file, environment, then
// the flags of set, which it declares) and checks what can be checked
// without the server.
func LoadRunConfig(set *flag.FlagSet, args []string) (*RunConfig, error) {
	rc := &RunConfig{}
	rc.Settings.Flags(set)
	file, rest, err := clientconf.Source{Interleaved: true}.Load(set, args, rc)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, &ConfigError{Err: err} // it names the file and line
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("unexpected argument %q (the run command takes its settings from --config)", rest[0])
	}
	if file == "" {
		return nil, &ConfigError{Err: fmt.Errorf("no config file: pass --config FILE (default %s)", clientconf.DefaultConfigPath)}
	}
	rc.Config = file
	if data, err := os.ReadFile(file); err == nil {
		rc.lines = clientconf.KeyLines(data)
	}
	return rc, nil
}

// errAt builds a ConfigError for key, with its line (or its parent's).
func (rc *RunConfig) errAt(key string, err error) *ConfigError {
	line := rc.lines[key]
	for k := key; line == 0 && k != ""; {
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
		line = rc.lines[k]
	}
	return &ConfigError{File: rc.Config, Line: line, Key: key, Err: err}
}

// keyed turns the KeyErrors joined in err into ConfigErrors.
func (rc *RunConfig) keyed(err error) error {
	var out []error
	var walk func(e error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		var ke *chroot.KeyError
		if errors.As(e, &ke) {
			out = append(out, rc.errAt(ke.Key, ke.Err))
			return
		}
		out = append(out, &ConfigError{File: rc.Config, Err: e})
	}
	walk(err)
	return errors.Join(out...)
}

// runMount is a host mount of the run command.
type runMount struct {
	Path  string
	Flags MountFlags
	Key   string
}

// proxySpec is a checked clientconf.Proxy.
type proxySpec struct {
	Listen, Host string // Listen inside the chroot
	Mode         os.FileMode
	Key          string
	// Containerd: the proxy speaks the containerd API (api: containerd).
	Containerd bool
}

// runPlan is a checked RunConfig.
type runPlan struct {
	uri transport.URI
	// reconnect is the session's reconnect timeout, never zero.
	reconnect time.Duration
	chroot    chroot.Config
	actions   []chroot.Action
	mounts    []runMount
	proxies   []proxySpec
}

// splitOpt cuts "PATH:OPTS".
func splitOpt(s string) (string, string) {
	p, o, _ := strings.Cut(s, ":")
	return strings.TrimSpace(p), strings.TrimSpace(o)
}

// check validates everything the server is not needed for, what the DPU
// must hold included (chroot.Check); every error is a *ConfigError
// (joined).
func (rc *RunConfig) check() (*runPlan, error) {
	var errs []error
	bad := func(key, format string, a ...any) { errs = append(errs, rc.errAt(key, fmt.Errorf(format, a...))) }
	p := &runPlan{}

	if rc.Server == "" {
		bad("server", "missing: the server's URI (tcp://HOST:PORT, vsock://CID:PORT, unix:///PATH), or a name from servers:")
	} else {
		u, err := rc.ServerURI("")
		if err != nil {
			bad("server", "%v", err)
		} else if err := rc.Security().Validate(u, false); err != nil {
			bad("server", "%v", err)
		}
		p.uri = u
	}
	p.reconnect = session.DefaultReconnectTimeout
	if rc.ReconnectTimeout != "" {
		d, err := time.ParseDuration(rc.ReconnectTimeout)
		if err != nil || d <= 0 {
			bad("reconnect_timeout", "%q: want a positive duration such as 30s or 2m", rc.ReconnectTimeout)
		} else {
			p.reconnect = d
		}
	}
	for key, f := range map[string]string{"tls_cert": rc.TLSCert, "tls_key": rc.TLSKey, "tls_ca": rc.TLSCA} {
		if f == "" {
			continue
		}
		if _, err := os.ReadFile(f); err != nil {
			bad(key, "%v", err)
		}
	}

	c := chroot.Config{Root: rc.Root, Dev: rc.Dev == nil || *rc.Dev, DevKey: "dev",
		LocalProc: DefaultLocalProc, LocalProcKey: "local_proc", ShimDir: rc.ShimDir, Shims: rc.Shims,
		Rexec: rc.Rexec, ShimKey: "shims"}
	if c.Root == "" {
		c.Root = DefaultRoot
	}
	if rc.LocalProc != nil {
		c.LocalProc = *rc.LocalProc
	}
	if c.ShimDir == "" {
		c.ShimDir = DefaultShimDir
	}
	if c.Rexec == "" && len(rc.Shims) > 0 {
		if exe, err := os.Executable(); err == nil {
			c.Rexec = filepath.Join(filepath.Dir(exe), "rexec")
		}
	}
	if len(rc.Shims) > 0 {
		if fi, err := os.Stat(c.Rexec); err != nil {
			bad("rexec", "the rexec binary for the shims: %v", err)
		} else if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			bad("rexec", "the rexec binary %s is not an executable file", c.Rexec)
		}
	}
	for i, b := range rc.Binds {
		key := fmt.Sprintf("binds[%d]", i)
		pth, opts := splitOpt(b)
		spec := chroot.BindSpec{Path: pth, Key: key}
		for _, o := range strings.Split(opts, ",") {
			switch strings.TrimSpace(o) {
			case "":
			case "ro":
				spec.ReadOnly = true
			case "rw":
				spec.ReadOnly = false
			case "optional":
				spec.Optional = true
			default:
				bad(key, "unknown option %q (want ro, rw, optional)", o)
			}
		}
		c.Binds = append(c.Binds, spec)
	}
	for i, t := range rc.Tmpfs {
		key := fmt.Sprintf("tmpfs[%d]", i)
		pth, m := splitOpt(t)
		spec := chroot.TmpfsSpec{Path: pth, Key: key}
		if m != "" {
			v, err := strconv.ParseUint(m, 8, 32)
			if err != nil || v&^0o1777 != 0 {
				bad(key, "mode %q: want octal permission bits such as 0755 or 1777", m)
			}
			spec.Mode = os.FileMode(v & 0o777)
			if v&0o1000 != 0 {
				spec.Mode |= os.ModeSticky
			}
		}
		c.Tmpfs = append(c.Tmpfs, spec)
	}
	for i, l := range rc.Links {
		key := fmt.Sprintf("links[%d]", i)
		pth, target := splitOpt(l)
		if target == "" {
			bad(key, "%q: want PATH:TARGET, as in /var/run:/run", l)
			continue
		}
		c.Links = append(c.Links, chroot.LinkSpec{Path: pth, Target: target, Key: key})
	}
	for i, m := range rc.Mounts {
		key := fmt.Sprintf("mounts[%d]", i)
		pth, opts := splitOpt(m)
		flags, err := ParseMountOptions([]string{opts})
		if err != nil {
			bad(key, "%v", err)
		} else if flags.ReconnectTimeout != 0 {
			bad(key, "reconnect_timeout is not a per-mount option here: the mounts of run share one connection; set the top-level key reconnect_timeout:")
		}
		flags.AllowOther = true // a shared chroot: every user of it needs the mounts
		rm := runMount{Path: pth, Flags: flags, Key: key}
		p.mounts = append(p.mounts, rm)
		c.Remotes = append(c.Remotes, chroot.RemoteSpec{Path: pth, ReadOnly: flags.ReadOnly, Key: key, Data: rm})
	}
	acts, err := chroot.Plan(c)
	if err != nil {
		errs = append(errs, rc.keyed(err))
	} else if err := chroot.Check(acts); err != nil {
		// What the DPU lacks, before anything is mounted.
		errs = append(errs, rc.keyed(err))
	}
	p.chroot, p.actions = c, acts

	seen := map[string]string{}
	for i, pc := range rc.Proxies {
		key := fmt.Sprintf("proxies[%d]", i)
		ps := proxySpec{Listen: pc.Listen, Host: pc.Host, Mode: DefaultProxyMode, Key: key}
		if ps.Host == "" {
			ps.Host = ps.Listen
		}
		if !path.IsAbs(ps.Listen) || path.Clean(ps.Listen) != ps.Listen {
			bad(key+".listen", "%q: want an absolute, clean path inside the chroot", ps.Listen)
			continue
		}
		if !path.IsAbs(ps.Host) || path.Clean(ps.Host) != ps.Host {
			bad(key+".host", "%q: want an absolute, clean host path", ps.Host)
			continue
		}
		if pc.Mode != "" {
			v, err := strconv.ParseUint(pc.Mode, 8, 32)
			if err != nil || v&^0o777 != 0 {
				bad(key+".mode", "%q: want octal permission bits such as 0660", pc.Mode)
			}
			ps.Mode = os.FileMode(v & 0o777)
		}
		switch pc.API {
		case "":
		case "containerd":
			ps.Containerd = true
		default:
			bad(key+".api", "%q: want containerd, or nothing for a proxy that moves bytes", pc.API)
		}
		if prev, dup := seen[ps.Listen]; dup {
			bad(key+".listen", "%s is also the socket of %s", ps.Listen, prev)
			continue
		}
		seen[ps.Listen] = key
		for _, m := range p.mounts {
			if ps.Listen == m.Path || strings.HasPrefix(ps.Listen, m.Path+"/") {
				bad(key+".listen", "%s lies inside the host mount %s (%s): the socket must be on the DPU, in a tmpfs such as /run", ps.Listen, m.Path, m.Key)
			}
		}
		for _, a := range acts {
			if a.Path == ps.Listen {
				bad(key+".listen", "%s is also a mount point (%s)", ps.Listen, a.Key)
			}
		}
		p.proxies = append(p.proxies, ps)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

// checkServer validates what needs the server: every mount must be
// exported to this client, every proxied socket allowed. allowed is nil
// when the server offers no socket proxy.
func (rc *RunConfig) checkServer(p *runPlan, exports []*qtfsv1.ExportInfo, allowed []string, proxyErr error) error {
	var errs []error
	for _, m := range p.mounts {
		if err := checkExported(m.Path, exports); err != nil {
			errs = append(errs, rc.errAt(m.Key, fmt.Errorf("the server: %w", err)))
		}
	}
	sort.Strings(allowed)
	for _, ps := range p.proxies {
		switch {
		case proxyErr != nil:
			errs = append(errs, rc.errAt(ps.Key+".host", fmt.Errorf("the server offers no socket proxy (%v): start qtfs-server with --socket-allow %s", proxyErr, ps.Host)))
		case !contains(allowed, ps.Host):
			have := "nothing"
			if len(allowed) > 0 {
				have = strings.Join(allowed, ", ")
			}
			errs = append(errs, rc.errAt(ps.Key+".host", fmt.Errorf("%s is not allowed by the server (its --socket-allow list has %s)", ps.Host, have)))
		}
	}
	return errors.Join(errs...)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// CheckRunConfig checks rc as `qtfs-client run` would before connecting
// and writes the plan it would carry out to w.
func CheckRunConfig(rc *RunConfig, w io.Writer) error {
	p, err := rc.check()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: ok (the server is checked at start: exports and socket allow-list)\n", rc.Config)
	fmt.Fprintf(w, "server %s (reconnect timeout %v), root %s\n", p.uri, p.reconnect, p.chroot.Root)
	for i, a := range p.actions {
		fmt.Fprintf(w, "%3d  %-9s %s", i+1, a.Kind, a.Path)
		if a.Source != "" && a.Source != a.Path {
			fmt.Fprintf(w, "  <- %s", a.Source)
		}
		if a.ReadOnly {
			fmt.Fprint(w, "  (ro)")
		}
		fmt.Fprintf(w, "  [%s]\n", a.Key)
	}
	for _, ps := range p.proxies {
		api := ""
		if ps.Containerd {
			api = ", containerd API"
		}
		fmt.Fprintf(w, "     proxy     %s -> host %s (mode %04o%s)  [%s]\n", ps.Listen, ps.Host, ps.Mode, api, ps.Key)
	}
	return nil
}
