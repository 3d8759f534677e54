package server

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qtfs/qtfs/pkg/config"
)

// FuzzParseExport: an accepted export has an absolute, clean path, and no
// empty operation name.
func FuzzParseExport(f *testing.F) {
	for _, s := range []string{"/srv", "/srv:ro", "/srv:ro:ops=read+lock", "/srv:ops=", "rel", "/a:b:c", "/srv:ops=read:ops=write", "/x/../..:rw"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseExport(s)
		if err != nil {
			return
		}
		if !filepath.IsAbs(e.Path) || filepath.Clean(e.Path) != e.Path {
			t.Fatalf("ParseExport(%q).Path = %q", s, e.Path)
		}
		for _, op := range e.Ops {
			if op == "" || strings.ContainsAny(op, "+:") {
				t.Fatalf("ParseExport(%q): operation name %q", s, op)
			}
		}
	})
}

// FuzzParseSize: an accepted size is never negative.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "64K", "256MiB", "2GB", "-1", "9223372036854775807", "8589934591G", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}

// FuzzServerConfig loads arbitrary YAML as qtfs-server's config file, as
// the command does, and validates the result: nothing may panic, and the
// exports, listeners and limits of an accepted config make sense.
func FuzzServerConfig(f *testing.F) {
	for _, s := range []string{
		"listen: [tcp://0.0.0.0:12121]\nexport: [/srv, /proc:ro]\ntls_cert: /c\ntls_key: /k\ntls_client_ca: /ca\n",
		"listen: [unix:///run/q.sock]\nexport: ['/srv:ro:ops=read+lock']\nmax_sessions: 4\nmax_inflight_bytes_per_session: 16M\n",
		"listen: [vsock://any:1]\nexport: [/]\nallow_cid: [3, x]\n",
		"export: /srv\n",
		"max_sessions: -1\n",
		"bogus: 1\n",
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, yaml []byte) {
		if len(yaml) > 64<<10 {
			return
		}
		cfg := filepath.Join(dir, "server.yaml")
		if err := os.WriteFile(cfg, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		var s Settings
		set := flag.NewFlagSet("qtfs-server", flag.ContinueOnError)
		set.SetOutput(nopWriter{})
		s.Flags(set)
		if _, _, err := (config.Source{ConfigFlag: "config"}).Load(set, []string{"--config", cfg}, &s); err != nil {
			return
		}
		if strings.HasPrefix(string(yaml), "bogus: 1\n") {
			t.Fatalf("unknown key accepted in %q", yaml)
		}
		v, err := s.validate()
		if err != nil {
			return
		}
		if len(v.exports) == 0 || len(v.listen) == 0 {
			t.Fatalf("validated config without exports or listeners: %q", yaml)
		}
		if v.limits.MaxSessions < 0 || v.limits.MaxHandlesPerSession < 0 || v.limits.MaxInflightPerSession < 0 || v.limits.MaxInflightBytesPerSession < 0 {
			t.Fatalf("validated negative limits %+v from %q", v.limits, yaml)
		}
	})
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
