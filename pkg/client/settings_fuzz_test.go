package client

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/config"
)

// FuzzParseRemote: whatever ParseRemote accepts has an absolute, clean
// host path, and parsing what it means again gives the same value. (A
// host path holding ":/" cannot be written without a server: "/a:/b"
// reads as server "/a", path "/b".)
func FuzzParseRemote(f *testing.F) {
	for _, s := range []string{"host:/proc", "/srv", "[::1]:/srv", "h:relative", "", ":/", "a:/b/../../c", "h:/x\x00y", "::/a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRemote(s)
		if err != nil {
			return
		}
		if !filepath.IsAbs(r.Path) || filepath.Clean(r.Path) != r.Path {
			t.Fatalf("ParseRemote(%q).Path = %q: not absolute and clean", s, r.Path)
		}
		if strings.Contains(r.Path, ":/") {
			return
		}
		again := r.Path
		if r.Server != "" {
			again = r.Server + ":" + r.Path
		}
		r2, err := ParseRemote(again)
		if err != nil || r2 != r {
			t.Fatalf("ParseRemote(%q) = %+v, ParseRemote(%q) = %+v, %v", s, r, again, r2, err)
		}
	})
}

// FuzzParseMountOptions: -o lists never panic, and every accepted list
// names only known options.
func FuzzParseMountOptions(f *testing.F) {
	for _, s := range []string{"ro", "rw,allow_other", "cache=none", "cache=bogus", "ro,,debug", "x=y", "cache", "ro=1", "cache=auto,cache=strict"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := ParseMountOptions([]string{s}); err != nil {
			return
		}
		for _, o := range strings.Split(s, ",") {
			key, _, _ := strings.Cut(strings.TrimSpace(o), "=")
			if key != "" && !knownMountOption(key) {
				t.Fatalf("ParseMountOptions(%q) accepted unknown option %q", s, key)
			}
		}
	})
}

// knownMountOption reports whether key is one of the -o options the help
// text of ParseMountOptions lists.
func knownMountOption(key string) bool {
	for _, o := range []string{key, key + "=x"} {
		if _, err := ParseMountOptions([]string{o}); err == nil || !strings.Contains(err.Error(), "unknown mount option") {
			return true
		}
	}
	return false
}

// FuzzClientConfig loads arbitrary YAML as qtfs-client's config file, the
// way the command does, then derives the server URI and security from it:
// nothing may panic, and unknown keys are refused.
func FuzzClientConfig(f *testing.F) {
	for _, s := range []string{
		"server: tcp://10.0.0.1:12121\ntls_cert: /c\ntls_key: /k\ntls_ca: /ca\n",
		"servers:\n  host: unix:///run/q.sock\n  other: vsock://2:1\n",
		"insecure: true\ninsecure_non_loopback: true\nserver: tcp://[::1]:1\n",
		"servers: [a, b]\n",
		"runtime_dir: ~\nlog_level: 7\n",
		"unknown_key: 1\n",
	} {
		f.Add([]byte(s), "host:/proc")
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, yaml []byte, remote string) {
		if len(yaml) > 64<<10 {
			return
		}
		cfg := filepath.Join(dir, "client.yaml")
		if err := os.WriteFile(cfg, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		var s clientconf.Settings
		set := flag.NewFlagSet("qtfs-client", flag.ContinueOnError)
		set.SetOutput(nopWriter{})
		s.Flags(set)
		if _, _, err := (config.Source{ConfigFlag: "config", Interleaved: true}).Load(set, []string{"--config", cfg}, &s); err != nil {
			return
		}
		if strings.HasPrefix(string(yaml), "unknown_key: 1\n") {
			t.Fatalf("unknown key accepted in %q", yaml)
		}
		r, err := ParseRemote(remote)
		if err != nil {
			return
		}
		u, err := ServerURI(&s, r)
		if err != nil {
			return
		}
		_ = s.Security().Validate(u, false)
	})
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }
