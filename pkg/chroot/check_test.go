package chroot

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheck holds a plan against a DPU made of temporary directories:
// binds are at their source's path, so the DPU's paths are the plan's.
func TestCheck(t *testing.T) {
	dpu := t.TempDir()
	for _, d := range []string{"var/log", "etc/cni", "usr/local/sbin"} {
		if err := os.MkdirAll(filepath.Join(dpu, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dpu, "etc/file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	p := func(rel string) string { return filepath.Join(dpu, rel) }
	base := func() Config {
		return Config{
			Root:  "/var/lib/qtfs/root",
			Binds: []BindSpec{{Path: p("var/log"), Key: "binds[0]"}, {Path: p("etc"), Key: "binds[1]"}},
			Remotes: []RemoteSpec{
				{Path: p("etc/cni"), Key: "mounts[0]"},
				{Path: p("lib/docker"), Key: "mounts[1]"},
				// Inside another host mount: the host makes it.
				{Path: p("lib/docker/containers"), Key: "mounts[2]"},
			},
		}
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want []string // each with its key; none: no error
	}{
		{"all there", func(c *Config) {}, nil},
		{"a host mount inside a bind, missing on the DPU", func(c *Config) {
			c.Remotes = append(c.Remotes, RemoteSpec{Path: p("var/log/pods"), Key: "mounts[3]"})
		}, []string{"mounts[3]: mount point " + p("var/log/pods") + " does not exist on the DPU, and it lies inside the bind of the DPU's " +
			p("var/log") + " (binds[0]), which the chroot never writes into: create it on the DPU (mkdir -p " + p("var/log/pods") +
			"), or do not bind " + p("var/log")}},
		{"a tmpfs inside a bind, missing on the DPU", func(c *Config) {
			c.Tmpfs = []TmpfsSpec{{Path: p("etc/x/y"), Key: "tmpfs[0]"}}
		}, []string{"tmpfs[0]: mount point " + p("etc/x/y") + " does not exist on the DPU"}},
		{"a mount point inside a bind that is a file", func(c *Config) {
			c.Remotes = append(c.Remotes, RemoteSpec{Path: p("etc/file"), Key: "mounts[3]"})
		}, []string{"mounts[3]: mount point " + p("etc/file") + " on the DPU is not a directory"}},
		{"a bind's source missing", func(c *Config) {
			c.Binds = append(c.Binds, BindSpec{Path: p("opt"), Key: "binds[2]"})
		}, []string{"binds[2]: the DPU's " + p("opt") + ": "}},
		{"a bind's source is a file", func(c *Config) {
			c.Binds = append(c.Binds, BindSpec{Path: p("etc/file"), Key: "binds[2]"})
			c.Remotes = c.Remotes[1:]
		}, []string{"binds[2]: the DPU's " + p("etc/file") + " is not a directory"}},
		{"an optional bind missing, with a mount inside", func(c *Config) {
			c.Binds = append(c.Binds, BindSpec{Path: p("opt"), Optional: true, Key: "binds[2]"})
			c.Remotes = append(c.Remotes, RemoteSpec{Path: p("opt/cni"), Key: "mounts[3]"})
		}, nil},
		{"the rexec binary missing", func(c *Config) {
			c.Binds = append(c.Binds, BindSpec{Path: p("usr"), Key: "binds[2]"})
			c.ShimDir, c.Shims, c.Rexec, c.ShimKey = p("usr/local/sbin"), []string{"runc"}, p("rexec"), "shims"
		}, []string{"shims: the DPU's " + p("rexec") + ": "}},
		{"several at once", func(c *Config) {
			c.Remotes = append(c.Remotes, RemoteSpec{Path: p("var/log/pods"), Key: "mounts[3]"}, RemoteSpec{Path: p("etc/kubernetes"), Key: "mounts[4]"})
		}, []string{"mounts[3]: mount point " + p("var/log/pods"), "mounts[4]: mount point " + p("etc/kubernetes")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			plan, err := Plan(c)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			err = Check(plan)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("no error")
			}
			var ke *KeyError
			if !errors.As(err, &ke) {
				t.Errorf("error %v is not a KeyError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("made on the DPU, it passes", func(t *testing.T) {
		c := base()
		c.Remotes = append(c.Remotes, RemoteSpec{Path: p("var/log/pods"), Key: "mounts[3]"})
		plan, err := Plan(c)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(p("var/log/pods"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := Check(plan); err != nil {
			t.Fatal(err)
		}
	})
}
