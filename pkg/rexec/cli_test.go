package rexec

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		argv   []string
		env    map[string]string
		config string
		// want
		binary, argv0, server string
		args, envSet          []string
		tty, multi            bool
		cwd                   string
		code                  int
		done                  bool
		errText               string
	}{
		{name: "plain", argv: []string{"rexec", "--server", "unix:///run/q.sock", "true"},
			binary: "true", argv0: "true", server: "unix:///run/q.sock"},
		{name: "flags then args that look like flags", argv: []string{"rexec", "-t", "--cwd", "/srv", "--env", "A=1", "--env", "B=2", "runc", "--help", "-t"},
			binary: "runc", argv0: "runc", args: []string{"--help", "-t"}, envSet: []string{"A=1", "B=2"}, tty: true, cwd: "/srv"},
		{name: "double dash", argv: []string{"rexec", "--", "-weird"}, binary: "-weird", argv0: "-weird"},
		{name: "multi-call takes no flags", argv: []string{"/usr/local/bin/runc", "--server", "x", "state", "c1"},
			binary: "runc", argv0: "/usr/local/bin/runc", args: []string{"--server", "x", "state", "c1"}, multi: true},
		{name: "multi-call without arguments", argv: []string{"runc"}, binary: "runc", argv0: "runc", multi: true},
		{name: "QTFS_SERVER", argv: []string{"rexec", "true"}, env: map[string]string{"QTFS_SERVER": "tcp://h:1"},
			binary: "true", argv0: "true", server: "tcp://h:1"},
		{name: "REXEC_SERVER wins over QTFS_SERVER", argv: []string{"rexec", "true"}, env: map[string]string{"QTFS_SERVER": "tcp://h:1", "REXEC_SERVER": "tcp://h:2"},
			binary: "true", argv0: "true", server: "tcp://h:2"},
		{name: "--server wins over REXEC_SERVER", argv: []string{"rexec", "--server", "tcp://h:3", "true"}, env: map[string]string{"REXEC_SERVER": "tcp://h:2"},
			binary: "true", argv0: "true", server: "tcp://h:3"},
		{name: "config file, with keys rexec does not use", argv: []string{"runc", "list"},
			config: "server: hostA\nservers:\n  hostA: tcp://10.0.0.1:12121\ntls_ca: /etc/qtfs/ca.pem\nmounts:\n  - remote: /proc\n",
			binary: "runc", argv0: "runc", args: []string{"list"}, server: "hostA", multi: true},
		{name: "no binary", argv: []string{"rexec", "--server", "x"}, done: true, code: 255, errText: "no BINARY"},
		{name: "bad --env", argv: []string{"rexec", "--env", "novalue", "true"}, done: true, code: 255, errText: "want K=V"},
		{name: "unknown flag", argv: []string{"rexec", "--bogus", "true"}, done: true, code: 255, errText: "bogus"},
		{name: "help", argv: []string{"rexec", "--help"}, done: true, code: 0, errText: "Usage:"},
		{name: "version", argv: []string{"rexec", "--version"}, done: true, code: 0, errText: "rexec "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"QTFS_SERVER", "REXEC_SERVER", "QTFS_CONFIG"} {
				t.Setenv(k, "")
				os.Unsetenv(k)
			}
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg := filepath.Join(t.TempDir(), "client.yaml")
			if err := os.WriteFile(cfg, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Setenv("QTFS_CONFIG", cfg)
			var stderr bytes.Buffer
			inv, code, done := parse(tc.argv, &stderr)
			if done != tc.done || code != tc.code {
				t.Fatalf("done %v code %d (stderr %q), want done %v code %d", done, code, stderr.String(), tc.done, tc.code)
			}
			if tc.errText != "" && !strings.Contains(stderr.String(), tc.errText) {
				t.Fatalf("stderr %q does not contain %q", stderr.String(), tc.errText)
			}
			if done {
				return
			}
			if inv.binary != tc.binary || inv.argv0 != tc.argv0 || inv.s.Server != tc.server || inv.tty != tc.tty ||
				inv.multi != tc.multi || inv.cwd != tc.cwd || !sameStrings(inv.args, tc.args) || !sameStrings(inv.env, tc.envSet) {
				t.Fatalf("parsed %+v", inv)
			}
		})
	}
}

func TestServerURI(t *testing.T) {
	inv := &invocation{}
	inv.s.Servers = map[string]string{"hostA": "tcp://10.0.0.1:7000"}
	for _, tc := range []struct{ server, want, err string }{
		{"hostA", "tcp://10.0.0.1:7000", ""},
		{"unix:///run/q.sock", "unix:///run/q.sock", ""},
		{"10.0.0.2", "tcp://10.0.0.2:12121", ""},
		{"", "", "no server"},
		{"tcp://", "", "missing host"},
	} {
		t.Run(tc.server, func(t *testing.T) {
			inv.s.Server = tc.server
			u, err := inv.serverURI()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("%v, %v; want %s", u, err, tc.want)
			}
		})
	}
}

func TestEnviron(t *testing.T) {
	got := environ([]string{"A=1", "B=2", "AB=3"}, []string{"A=9", "C=4"})
	want := []string{"A=9", "B=2", "AB=3", "C=4"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("environ = %v, want %v", got, want)
	}
}

func sameStrings(a, b []string) bool { return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b) }
