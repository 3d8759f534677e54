package config

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary YAML, an environment value and a command line
// to Load. It must never panic or hang; what it accepts must follow the
// precedence rules (a flag on the command line wins), and an unknown key
// in the file is refused.
func FuzzLoad(f *testing.F) {
	for _, seed := range []struct{ yaml, env, args string }{
		{"listen: [tcp://127.0.0.1:1]\nlog_level: warn\ninsecure: true\n", "", ""},
		{"listen: tcp://h:1\n", "unix:///a, unix:///b", "--log-level debug"},
		{"bogus: 1\n", "", ""},
		{"listen: {a: b}\n", "", "--listen x"},
		{"a: &a [*a, *a]\n", "", ""},
		{"log_level: !!binary aGVsbG8=\n", "", ""},
		{"---\n---\n", "", "mount SRC DST -f"},
		{"insecure: yes\n", "", "--insecure=false"},
		{"\t\x00", "", "--config"},
	} {
		f.Add([]byte(seed.yaml), seed.env, seed.args)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, yaml []byte, env, args string) {
		if len(yaml) > 64<<10 || len(args) > 4096 || len(env) > 4096 {
			return
		}
		cfg := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(cfg, yaml, 0o600); err != nil {
			t.Fatal(err)
		}
		if strings.ContainsRune(env, 0) {
			env = strings.ReplaceAll(env, "\x00", "")
		}
		t.Setenv("QTFS_LISTEN", env)
		var s settings
		set := newSet(&s)
		set.SetOutput(discard{})
		argv := append([]string{"--config", cfg}, strings.Fields(args)...)
		_, _, err := (Source{ConfigFlag: "config", Interleaved: true}).Load(set, argv, &s)
		if err != nil {
			return
		}
		if strings.HasPrefix(string(yaml), "bogus: 1\n") {
			t.Fatalf("Load accepted an unknown key in %q", yaml)
		}
		// The last --log-level on the command line (before "--") wins over
		// file and env. The flags that take a value consume the next
		// argument unless they have "=".
		fields := strings.Fields(args)
		want, given := "", false
		for i := 0; i < len(fields); i++ {
			f := fields[i]
			if f == "--" {
				break
			}
			name, val, hasVal := strings.Cut(strings.TrimLeft(f, "-"), "=")
			if !strings.HasPrefix(f, "-") || f == "-" {
				continue
			}
			switch name {
			case "log-level", "listen", "config":
				if !hasVal && i+1 < len(fields) {
					val = fields[i+1]
					i++
				}
				if name == "log-level" {
					want, given = val, true
				}
			}
		}
		if given && s.LogLevel != want {
			t.Fatalf("--log-level %q on the command line, got %q", want, s.LogLevel)
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

var _ = flag.ContinueOnError
