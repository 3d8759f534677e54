package client

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/transport"
)

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

// MountFlags are the -o options of `qtfs-client mount`.
type MountFlags struct {
	ReadOnly   bool
	AllowOther bool
	Debug      bool
	Cache      fuseclient.CachePolicy
	// LocalProc and OffloadRoot are fuseclient.MountOptions' (proc mounts).
	LocalProc   string
	OffloadRoot string
	// ReconnectTimeout is session.Options' (0: its default).
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

// ServerURI resolves the server a mount of r uses (see
// clientconf.Settings.ServerURI).
func ServerURI(s *clientconf.Settings, r Remote) (transport.URI, error) {
	u, err := s.ServerURI(r.Server)
	if errors.Is(err, clientconf.ErrNoServer) {
		return u, fmt.Errorf("%w: give --remote HOST:/PATH, --server URI, or server: in the config", err)
	}
	return u, err
}
