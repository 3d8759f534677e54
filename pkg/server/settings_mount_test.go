package server

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/qtfs/qtfs/pkg/config"
)

// TestMountAllowSettings: mount_allow is a flag, a config key and an
// environment variable, reaches hostfs.Options.MountAllow, and names
// known kinds only.
func TestMountAllowSettings(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "server.yaml")
	if err := os.WriteFile(yaml, []byte("mount_allow: [overlay, tmpfs]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
		err  string
	}{
		{name: "default", want: nil},
		{name: "flags", args: []string{"--mount-allow", "overlay", "--mount-allow", "bind", "--mount-allow", "overlay"}, want: []string{"overlay", "bind"}},
		{name: "environment", env: map[string]string{"QTFS_MOUNT_ALLOW": "tmpfs, bind"}, want: []string{"tmpfs", "bind"}},
		{name: "config file", args: []string{"--config", yaml}, want: []string{"overlay", "tmpfs"}},
		{name: "flags win", args: []string{"--config", yaml, "--mount-allow", "bind"}, want: []string{"bind"}},
		{name: "unknown", args: []string{"--mount-allow", "nfs"}, err: `mount-allow "nfs": unknown kind`},
		{name: "a filesystem that is no kind", args: []string{"--mount-allow", "proc"}, err: "want overlay, tmpfs, bind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			var s Settings
			set := flag.NewFlagSet("qtfs-server", flag.ContinueOnError)
			s.Flags(set)
			args := append(slices.Clone(tc.args), "--listen", "unix:///run/q.sock", "--export", "/srv")
			if !slices.Contains(tc.args, "--config") {
				args = append([]string{"--config", ""}, args...)
			}
			if _, _, err := (config.Source{ConfigFlag: "config"}).Load(set, args, &s); err != nil {
				t.Fatal(err)
			}
			v, err := s.validate()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(v.mountAllow, tc.want) {
				t.Fatalf("mount allow %q, want %q", v.mountAllow, tc.want)
			}
		})
	}
}
