package server

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/qtfs/qtfs/pkg/config"
	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/hostexec"
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
	MetricsListen       string   `yaml:"metrics_listen"`
	LogLevel            string   `yaml:"log_level"`
	LogFormat           string   `yaml:"log_format"`
}

// Flags declares the settings on set.
func (s *Settings) Flags(set *flag.FlagSet) {
	set.StringVar(&s.Config, "config", DefaultConfigPath, "YAML config `file` (keys are the flag names with _ for -)")
	set.Var(config.NewStringList(&s.Listen), "listen", "serve on `URI`: tcp://HOST:PORT, unix:///PATH or vsock://CID:PORT (repeatable)")
	set.Var(config.NewStringList(&s.Export), "export", "export host directory `PATH[:ro]` (repeatable)")
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
	set.StringVar(&s.MetricsListen, "metrics-listen", "", "serve Prometheus metrics on `ADDR` (e.g. 127.0.0.1:9121; off when empty)")
	set.StringVar(&s.LogLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	set.StringVar(&s.LogFormat, "log-format", "auto", "log `format`: auto, json, console")
}

// ParseExport parses "PATH" or "PATH:ro" (also ":rw").
func ParseExport(s string) (hostfs.Export, error) {
	path, opt, hasOpt := strings.Cut(s, ":")
	e := hostfs.Export{Path: path}
	if hasOpt {
		switch opt {
		case "ro":
			e.ReadOnly = true
		case "rw":
		default:
			return e, fmt.Errorf("export %q: unknown option %q (want :ro or :rw)", s, opt)
		}
	}
	if !filepath.IsAbs(path) {
		return e, fmt.Errorf("export %q: path must be absolute", s)
	}
	e.Path = filepath.Clean(path)
	return e, nil
}

// validated is what Settings mean once checked.
type validated struct {
	exports  []hostfs.Export
	listen   []transport.URI
	security transport.Security
	// execEnvDeny is ExecEnvDeny without empty entries; nil when the
	// setting was never given (then hostexec uses its default).
	execEnvDeny []string
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
