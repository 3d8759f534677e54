package clientconf

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/qtfs/qtfs/pkg/logging"
	"github.com/qtfs/qtfs/pkg/transport"
)

// DefaultConfigPath is read when no --config is given and it exists.
const DefaultConfigPath = "/etc/qtfs/client.yaml"

// Settings are the connection settings of the DPU-side commands; each
// flag is also a config key and a QTFS_ environment variable (see package
// config). Servers is config only.
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

// Flags declares the settings on set.
func (s *Settings) Flags(set *flag.FlagSet) {
	set.StringVar(&s.Config, "config", DefaultConfigPath, "YAML config `file` (keys are the flag names with _ for -; servers: maps names to URIs)")
	set.StringVar(&s.Server, "server", "", "server `URI` (tcp://HOST:PORT, unix:///PATH, vsock://CID:PORT) or a name from servers:; overrides the SERVER of --remote")
	set.StringVar(&s.TLSCert, "tls-cert", "", "client certificate `file` (PEM) for tcp://")
	set.StringVar(&s.TLSKey, "tls-key", "", "client private key `file` (PEM)")
	set.StringVar(&s.TLSCA, "tls-ca", "", "CA `file` the server certificate must chain to")
	set.BoolVar(&s.Insecure, "insecure", false, "plain TCP without TLS (loopback addresses only)")
	set.BoolVar(&s.InsecureNonLoopback, "insecure-non-loopback", false, "with --insecure: also allow plain TCP to non-loopback addresses")
	set.StringVar(&s.RuntimeDir, "runtime-dir", defaultRuntimeDir(), "`dir` for mount daemons' control sockets and logs")
	logging.Flags(set, &s.LogLevel, &s.LogFormat)
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

// ErrNoServer is ServerURI's error when nothing names a server; callers
// wrap it with what the user can do about it.
var ErrNoServer = errors.New("no server")

// ServerURI resolves the server: the server setting, else name (the
// SERVER of a --remote, "" for none). A name listed under servers: stands
// for its URI; anything else is a URI, or a host name or address (TCP,
// default port).
func (s *Settings) ServerURI(name string) (transport.URI, error) {
	raw := s.Server
	if raw == "" {
		raw = name
	}
	if raw == "" {
		return transport.URI{}, ErrNoServer
	}
	if u, ok := s.Servers[raw]; ok && u != "" {
		raw = u
	}
	return transport.ParseURI(raw)
}
