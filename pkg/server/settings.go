package server

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/qtfs/qtfs/pkg/config"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/hostexec"
	"github.com/qtfs/qtfs/pkg/logging"
	"github.com/qtfs/qtfs/pkg/transport"
)

// DefaultConfigPath is read when no --config is given and it exists.
const DefaultConfigPath = "/etc/qtfs/server.yaml"

// Settings are qtfs-server's settings; each is a flag, a config key and a
// QTFS_ environment variable (see package config).
type Settings struct {
	Config              string   `yaml:"-"`
	Listen              []string `yaml:"listen"`
	Export              []string `yaml:"export"`
	TLSCert             string   `yaml:"tls_cert"`
	TLSKey              string   `yaml:"tls_key"`
	TLSClientCA         string   `yaml:"tls_client_ca"`
	Insecure            bool     `yaml:"insecure"`
	InsecureNonLoopback bool     `yaml:"insecure_non_loopback"`
	AllowUID            []string `yaml:"allow_uid"`
	AllowCID            []string `yaml:"allow_cid"`
	ExecAllow           []string `yaml:"exec_allow"`
	ExecEnvDeny         []string `yaml:"exec_env_deny"`
	SocketAllow         []string `yaml:"socket_allow"`
	MountAllow          []string `yaml:"mount_allow"`
	MetricsListen       string   `yaml:"metrics_listen"`
	// Limits (0: the default of hostfs.Limits).
	MaxSessions                int    `yaml:"max_sessions"`
	MaxHandlesPerSession       int    `yaml:"max_handles_per_session"`
	MaxInflightPerSession      int    `yaml:"max_inflight_per_session"`
	MaxInflightBytesPerSession string `yaml:"max_inflight_bytes_per_session"`
	LogLevel                   string `yaml:"log_level"`
	LogFormat                  string `yaml:"log_format"`
}

// Flags declares the settings on set.
func (s *Settings) Flags(set *flag.FlagSet) {
	set.StringVar(&s.Config, "config", DefaultConfigPath, "YAML config `file` (keys are the flag names with _ for -)")
	set.Var(config.NewStringList(&s.Listen), "listen", "serve on `URI`: tcp://HOST:PORT, unix:///PATH or vsock://CID:PORT (repeatable)")
	set.Var(config.NewStringList(&s.Export), "export", "export host directory `PATH[:ro|:rw][:ops=OP+OP...]` (repeatable); ops names the only operations allowed: read, write, xattr, lock, mount, or rpc names such as Lookup")
	set.StringVar(&s.TLSCert, "tls-cert", "", "server certificate `file` (PEM) for tcp://")
	set.StringVar(&s.TLSKey, "tls-key", "", "server private key `file` (PEM)")
	set.StringVar(&s.TLSClientCA, "tls-client-ca", "", "CA `file` client certificates must chain to (mutual TLS)")
	set.BoolVar(&s.Insecure, "insecure", false, "allow plain TCP without TLS (loopback addresses only)")
	set.BoolVar(&s.InsecureNonLoopback, "insecure-non-loopback", false, "with --insecure: also allow plain TCP on non-loopback addresses (anyone on the network can use the exports)")
	set.Var(config.NewStringList(&s.AllowUID), "allow-uid", "unix:// peers: allow this `uid` (repeatable; default: root and the server's uid)")
	set.Var(config.NewStringList(&s.AllowCID), "allow-cid", "vsock:// peers: allow this `CID` (repeatable; default: any)")
	set.Var(config.NewStringList(&s.ExecAllow), "exec-allow", "rexec: allow running this host `BINARY`: an absolute path, or a name looked up in PATH (repeatable; the Exec service is off without it)")
	if s.ExecEnvDeny == nil {
		s.ExecEnvDeny = append([]string(nil), hostexec.DefaultEnvDeny...)
	}
	set.Var(config.NewStringList(&s.ExecEnvDeny), "exec-env-deny", "rexec: drop the environment variable `NAME` (or NAME* for a prefix) from callers' environments (repeatable; replaces the default; '' drops none)")
	set.Var(config.NewStringList(&s.SocketAllow), "socket-allow", "socket proxy: allow DPU clients to connect to this host unix socket `PATH` (repeatable; the SocketProxy service is off without it)")
	set.Var(config.NewStringList(&s.MountAllow), "mount-allow", "host mounts: let the DPU's supervised programs mount this `KIND` beneath rw exports on the host: overlay, tmpfs or bind (repeatable; refused without it)")
	set.IntVar(&s.MaxSessions, "max-sessions", 0, fmt.Sprintf("refuse sessions (connections) past `N` (default %d)", hostfs.DefaultMaxSessions))
	set.IntVar(&s.MaxHandlesPerSession, "max-handles-per-session", 0, fmt.Sprintf("open files and directories one session may hold, `N` (default %d; past it EMFILE)", hostfs.DefaultMaxHandlesPerSession))
	set.IntVar(&s.MaxInflightPerSession, "max-inflight-per-session", 0, fmt.Sprintf("requests of one session served at once, `N` (default %d; past it EAGAIN)", hostfs.DefaultMaxInflightPerSession))
	set.StringVar(&s.MaxInflightBytesPerSession, "max-inflight-bytes-per-session", "", fmt.Sprintf("data of one session's requests served at once, `SIZE` in bytes or with K, M, G (default %dM; past it EAGAIN)", hostfs.DefaultMaxInflightBytesPerSession>>20))
	set.StringVar(&s.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on `ADDR` (e.g. 127.0.0.1:9121; off when empty)")
	logging.Flags(set, &s.LogLevel, &s.LogFormat)
}

// ParseExport parses "PATH", "PATH:ro" (also ":rw") and, after either or
// alone, ":ops=NAME+NAME..." naming the only operations allowed beneath
// PATH: the groups read, write, xattr, lock and mount, or FileSystem rpc
// names.
func ParseExport(s string) (hostfs.Export, error) {
	path, rest, hasOpt := strings.Cut(s, ":")
	e := hostfs.Export{Path: path}
	for hasOpt {
		var opt string
		opt, rest, hasOpt = strings.Cut(rest, ":")
		switch {
		case opt == "ro":
			e.ReadOnly = true
		case opt == "rw":
			e.ReadOnly = false
		case strings.HasPrefix(opt, "ops="):
			if e.Ops != nil {
				return e, fmt.Errorf("export %q: ops= given twice", s)
			}
			e.Ops = []string{}
			for _, op := range strings.Split(strings.TrimPrefix(opt, "ops="), "+") {
				if op == "" {
					return e, fmt.Errorf("export %q: empty operation name in ops=", s)
				}
				e.Ops = append(e.Ops, op)
			}
		default:
			return e, fmt.Errorf("export %q: unknown option %q (want :ro, :rw or :ops=OP+OP...)", s, opt)
		}
	}
	if !filepath.IsAbs(path) {
		return e, fmt.Errorf("export %q: path must be absolute", s)
	}
	e.Path = filepath.Clean(path)
	return e, nil
}

// ParseSize parses a byte count: digits, optionally followed by K, M or G
// (binary multiples; a trailing "iB" or "B" is allowed).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "B"), "i")
	shift := 0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift != 0 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > math.MaxInt64>>shift {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, M or G", s)
	}
	return v << shift, nil
}

// validated is what Settings mean once checked.
type validated struct {
	exports  []hostfs.Export
	listen   []transport.URI
	security transport.Security
	// execEnvDeny is ExecEnvDeny without empty entries; nil when the
	// setting was never given (then hostexec uses its default).
	execEnvDeny []string
	limits      hostfs.Limits
	// mountAllow is MountAllow, checked.
	mountAllow []string
}

func (s *Settings) validate() (*validated, error) {
	var v validated
	if len(s.Export) == 0 {
		return nil, errors.New("no exports: give --export PATH[:ro] (or export: in the config)")
	}
	seen := map[string]bool{}
	for _, e := range s.Export {
		ex, err := ParseExport(e)
		if err != nil {
			return nil, err
		}
		if seen[ex.Path] {
			return nil, fmt.Errorf("export %q: given twice", ex.Path)
		}
		seen[ex.Path] = true
		v.exports = append(v.exports, ex)
	}
	for _, l := range []struct {
		name string
		v    int
	}{{"max-sessions", s.MaxSessions}, {"max-handles-per-session", s.MaxHandlesPerSession}, {"max-inflight-per-session", s.MaxInflightPerSession}} {
		if l.v < 0 {
			return nil, fmt.Errorf("%s %d: must not be negative (0 means the default)", l.name, l.v)
		}
	}
	v.limits = hostfs.Limits{
		MaxSessions:           s.MaxSessions,
		MaxHandlesPerSession:  s.MaxHandlesPerSession,
		MaxInflightPerSession: s.MaxInflightPerSession,
	}
	if s.MaxInflightBytesPerSession != "" {
		n, err := ParseSize(s.MaxInflightBytesPerSession)
		if err != nil {
			return nil, fmt.Errorf("max-inflight-bytes-per-session: %w", err)
		}
		v.limits.MaxInflightBytesPerSession = n
	}
	if len(s.Listen) == 0 {
		return nil, errors.New("nothing to listen on: give --listen URI (tcp://HOST:PORT, unix:///PATH or vsock://CID:PORT)")
	}
	v.security = transport.Security{
		CertFile:            s.TLSCert,
		KeyFile:             s.TLSKey,
		CAFile:              s.TLSClientCA,
		Insecure:            s.Insecure,
		InsecureNonLoopback: s.InsecureNonLoopback,
	}
	for _, u := range s.AllowUID {
		var id uint32
		if _, err := fmt.Sscan(u, &id); err != nil {
			return nil, fmt.Errorf("allow-uid %q: not a number", u)
		}
		v.security.AllowedUIDs = append(v.security.AllowedUIDs, id)
	}
	for _, c := range s.AllowCID {
		var id uint32
		if _, err := fmt.Sscan(c, &id); err != nil {
			return nil, fmt.Errorf("allow-cid %q: not a number", c)
		}
		v.security.AllowedCIDs = append(v.security.AllowedCIDs, id)
	}
	for _, k := range s.MountAllow {
		if !slices.Contains(hostfs.MountKinds(), k) {
			return nil, fmt.Errorf("mount-allow %q: unknown kind (want %s)", k, strings.Join(hostfs.MountKinds(), ", "))
		}
		if !slices.Contains(v.mountAllow, k) {
			v.mountAllow = append(v.mountAllow, k)
		}
	}
	if s.ExecEnvDeny != nil {
		v.execEnvDeny = []string{}
		for _, d := range s.ExecEnvDeny {
			if d = strings.TrimSpace(d); d != "" {
				v.execEnvDeny = append(v.execEnvDeny, d)
			}
		}
	}
	for _, l := range s.Listen {
		u, err := transport.ParseURI(l)
		if err != nil {
			return nil, err
		}
		if err := v.security.Validate(u, true); err != nil {
			return nil, err
		}
		v.listen = append(v.listen, u)
	}
	return &v, nil
}
