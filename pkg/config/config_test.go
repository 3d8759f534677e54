package config

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

type settings struct {
	Listen   []string `yaml:"listen"`
	LogLevel string   `yaml:"log_level"`
	Insecure bool     `yaml:"insecure"`
}

func newSet(s *settings) *flag.FlagSet {
	set := flag.NewFlagSet("test", flag.ContinueOnError)
	set.String("config", "", "config file")
	set.Var(NewStringList(&s.Listen), "listen", "listen URI")
	set.StringVar(&s.LogLevel, "log-level", "info", "log level")
	set.BoolVar(&s.Insecure, "insecure", false, "plain TCP")
	return set
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(cfg, []byte("listen: [tcp://127.0.0.1:1, tcp://127.0.0.1:2]\nlog_level: warn\ninsecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want settings
	}{
		{"file only", nil, []string{"--config", cfg},
			settings{Listen: []string{"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}, LogLevel: "warn", Insecure: true}},
		{"env beats file", map[string]string{"QTFS_LOG_LEVEL": "debug", "QTFS_LISTEN": "unix:///a, unix:///b"}, []string{"--config=" + cfg},
			settings{Listen: []string{"unix:///a", "unix:///b"}, LogLevel: "debug", Insecure: true}},
		{"flag beats env and file", map[string]string{"QTFS_LOG_LEVEL": "debug", "QTFS_LISTEN": "unix:///a"}, []string{"--config", cfg, "--log-level", "error", "--listen", "unix:///c", "--insecure=false"},
			settings{Listen: []string{"unix:///c"}, LogLevel: "error", Insecure: false}},
		{"config from env", map[string]string{"QTFS_CONFIG": cfg}, nil,
			settings{Listen: []string{"tcp://127.0.0.1:1", "tcp://127.0.0.1:2"}, LogLevel: "warn", Insecure: true}},
		{"no file, defaults", nil, nil, settings{LogLevel: "info"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var s settings
			set := newSet(&s)
			if _, _, err := (Source{ConfigFlag: "config", DefaultPath: filepath.Join(dir, "missing.yaml")}).Load(set, tc.args, &s); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s, tc.want) {
				t.Fatalf("got %+v, want %+v", s, tc.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: [x]\nlisten_addr: y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown key names file line and key", nil, []string{"--config", bad}, "config " + bad + ": line 2: unknown key listen_addr"},
		{"named file missing", nil, []string{"--config", filepath.Join(dir, "nope.yaml")}, "no such file"},
		{"bad env value", map[string]string{"QTFS_INSECURE": "maybe"}, nil, "QTFS_INSECURE=\"maybe\""},
		{"unknown flag", nil, []string{"--bogus"}, "flag provided but not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var s settings
			set := newSet(&s)
			set.SetOutput(new(strings.Builder))
			_, _, err := (Source{ConfigFlag: "config"}).Load(set, tc.args, &s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEnvName(t *testing.T) {
	if got := EnvName("tls-client-ca"); got != "QTFS_TLS_CLIENT_CA" {
		t.Fatal(got)
	}
}

func TestLoadInterleaved(t *testing.T) {
	for _, tc := range []struct {
		name        string
		interleaved bool
		args        []string
		wantPos     []string
		wantLevel   string
	}{
		{"flags after positionals", true, []string{"a", "--log-level", "debug", "b"}, []string{"a", "b"}, "debug"},
		{"double dash ends flags", true, []string{"a", "--", "--log-level"}, []string{"a", "--log-level"}, "info"},
		{"terminator after positional", true, []string{"a", "--", "b", "--log-level", "x"}, []string{"a", "b", "--log-level", "x"}, "info"},
		{"dash is positional", true, []string{"-", "--log-level", "warn"}, []string{"-"}, "warn"},
		{"stop at first positional", false, []string{"--log-level", "warn", "runc", "--log-level", "x"}, []string{"runc", "--log-level", "x"}, "warn"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s settings
			set := newSet(&s)
			_, pos, err := (Source{ConfigFlag: "config", Interleaved: tc.interleaved}).Load(set, tc.args, &s)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(pos, tc.wantPos) || s.LogLevel != tc.wantLevel {
				t.Fatalf("positional %q level %q; want %q %q", pos, s.LogLevel, tc.wantPos, tc.wantLevel)
			}
		})
	}
}

func TestVersionFlagNotFromEnvironment(t *testing.T) {
	t.Setenv("QTFS_VERSION", "1.2.3")
	var s settings
	set := newSet(&s)
	v := set.Bool("version", false, "print the version")
	if _, _, err := (Source{ConfigFlag: "config"}).Load(set, nil, &s); err != nil {
		t.Fatalf("QTFS_VERSION in the environment broke start-up: %v", err)
	}
	if *v {
		t.Fatal("--version set from the environment")
	}
}
