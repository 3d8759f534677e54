package client

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/transport"
)

// DefaultConfigPath is read when no --config is given and it exists.
const DefaultConfigPath = "/etc/qtfs/client.yaml"

// Settings are qtfs-client's settings; each flag is also a config key and
// a QTFS_ environment variable (see package config). Servers is config only.
type Settings struct {
	Config              string            `yaml:"-"`
	Server              string            `yaml:"server"`
	Servers             map[string]string `yaml:"servers"`
	TLSCert             string            `yaml:"tls_cert"`
	TLSKey              string            `yaml:"tls_key"`
	TLSCA               string            `yaml:"tls_ca"`
	Insecure            bool              `yaml:"insecure"`
	InsecureNonLoopback bool              `yaml:"insecure_non_loopback"`
	RuntimeDir          string            `yaml:"runtime_dir"`
	LogLevel            string            `yaml:"log_level"`
	LogFormat           string            `yaml:"log_format"`
}

// Flags declares the connection settings every subcommand shares.
func (s *Settings) Flags(set *flag.FlagSet) {
	set.StringVar(&s.Config, "config", DefaultConfigPath, "YAML config `file` (keys are the flag names with _ for -; servers: maps names to URIs)")
	set.StringVar(&s.Server, "server", "", "server `URI` (tcp://HOST:PORT, unix:///PATH, vsock://CID:PORT); overrides the SERVER of --remote")
	set.StringVar(&s.TLSCert, "tls-cert", "", "client certificate `file` (PEM) for tcp://")
	set.StringVar(&s.TLSKey, "tls-key", "", "client private key `file` (PEM)")
	set.StringVar(&s.TLSCA, "tls-ca", "", "CA `file` the server certificate must chain to")
	set.BoolVar(&s.Insecure, "insecure", false, "plain TCP without TLS (loopback addresses only)")
	set.BoolVar(&s.InsecureNonLoopback, "insecure-non-loopback", false, "with --insecure: also allow plain TCP to non-loopback addresses")
	set.StringVar(&s.RuntimeDir, "runtime-dir", defaultRuntimeDir(), "`dir` for mount daemons' control sockets and logs")
	set.StringVar(&s.LogLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	set.StringVar(&s.LogFormat, "log-format", "auto", "log `format`: auto, json, console")
}

func defaultRuntimeDir() string {
	if os.Geteuid() != 0 {
		if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
			return filepath.Join(d, "qtfs")
		}
		return filepath.Join(os.TempDir(), fmt.Sprintf("qtfs-%d", os.Geteuid()))
	}
	return "/run/qtfs"
}

// Security returns the transport settings.
func (s *Settings) Security() transport.Security {
	return transport.Security{
		CertFile:            s.TLSCert,
		KeyFile:             s.TLSKey,
		CAFile:              s.TLSCA,
		Insecure:            s.Insecure,
		InsecureNonLoopback: s.InsecureNonLoopback,
	}
}

// Remote is a parsed --remote [SERVER:]PATH.
type Remote struct {
	Server string // as written: a name from the config, a host, or ""
	Path   string // absolute host path
}

// ParseRemote splits [SERVER:]PATH; PATH must be absolute, SERVER may be a
// bracketed IPv6 address.
func ParseRemote(s string) (Remote, error) {
	if s == "" {
		return Remote{}, errors.New("--remote: missing [SERVER:]PATH")
	}
	var r Remote
	if i := strings.Index(s, ":/"); i >= 0 {
		r.Server, r.Path = s[:i], s[i+1:]
	} else {
		r.Path = s
	}
	if !strings.HasPrefix(r.Path, "/") {
		return r, fmt.Errorf("--remote %q: the host path must be absolute, as in host:/srv or /srv", s)
	}
	r.Path = filepath.Clean(r.Path)
	return r, nil
}

// ServerURI decides which server a remote means: --server wins, then a
// server named in the config, then a host name or address (TCP, default
// port), then the config's default server.
func (s *Settings) ServerURI(r Remote) (transport.URI, error) {
	raw := ""
	switch {
	case s.Server != "":
		raw = s.Server
	case r.Server != "" && s.Servers[r.Server] != "":
		raw = s.Servers[r.Server]
	case r.Server != "":
		raw = r.Server
	default:
		return transport.URI{}, errors.New("no server: give --remote HOST:/PATH, --server URI, or server: in the config")
	}
	return transport.ParseURI(raw)
}

// MountFlags are the -o options of `qtfs-client mount`.
type MountFlags struct {
	ReadOnly   bool
	AllowOther bool
	Debug      bool
	Cache      fuseclient.CachePolicy
	// LocalProc and OffloadRoot are fuseclient.MountOptions' (proc mounts).
	LocalProc   string
	OffloadRoot string
	// ReconnectTimeout is fuseclient.SessionOptions' (0: its default).
	ReconnectTimeout time.Duration
}

// ParseMountOptions parses a comma-separated -o list.
func ParseMountOptions(list []string) (MountFlags, error) {
	var m MountFlags
	for _, item := range list {
		for _, o := range strings.Split(item, ",") {
			key, val, hasVal := strings.Cut(strings.TrimSpace(o), "=")
			switch {
			case key == "":
			case key == "ro" && !hasVal:
				m.ReadOnly = true
			case key == "rw" && !hasVal:
				m.ReadOnly = false
			case key == "allow_other" && !hasVal:
				m.AllowOther = true
			case key == "debug" && !hasVal:
				m.Debug = true
			case key == "cache" && hasVal:
				c, err := fuseclient.ParseCachePolicy(val)
				if err != nil {
					return m, fmt.Errorf("-o cache=%s: %w", val, err)
				}
				m.Cache = c
			case (key == "local_proc" || key == "offload_root") && hasVal:
				if !filepath.IsAbs(val) {
					return m, fmt.Errorf("-o %s: want an absolute path", o)
				}
				if key == "local_proc" {
					m.LocalProc = filepath.Clean(val)
				} else {
					m.OffloadRoot = filepath.Clean(val)
				}
			case key == "reconnect_timeout" && hasVal:
				d, err := time.ParseDuration(val)
				if err != nil || d <= 0 {
					return m, fmt.Errorf("-o %s: want a positive duration such as 30s", o)
				}
				m.ReconnectTimeout = d
			default:
				return m, fmt.Errorf("-o %s: unknown mount option (known: ro, rw, allow_other, debug, cache=auto|none|strict, local_proc=DIR, offload_root=DIR, reconnect_timeout=DURATION)", o)
			}
		}
	}
	return m, nil
}
