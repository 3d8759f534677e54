package chroot

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func paths(acts []Action) []string {
	var out []string
	for _, a := range acts {
		out = append(out, a.Kind.String()+" "+a.Path)
	}
	return out
}

func TestPlanOrder(t *testing.T) {
	acts, err := Plan(Config{
		Root:      "/var/lib/qtfs/root",
		Binds:     []BindSpec{{Path: "/usr", ReadOnly: true, Key: "binds[0]"}, {Path: "/etc", Key: "binds[1]"}},
		Tmpfs:     []TmpfsSpec{{Path: "/run", Key: "tmpfs[0]"}},
		LocalProc: "/local_proc",
		Dev:       true,
		Remotes: []RemoteSpec{
			{Path: "/sys/fs/cgroup", Key: "mounts[0]"}, // a child listed before its parent
			{Path: "/sys", Key: "mounts[1]"},
			{Path: "/proc", Key: "mounts[2]"},
			{Path: "/run/docker", Key: "mounts[3]"},
			{Path: "/var/lib/docker", Key: "mounts[4]"},
		},
		Links:   []LinkSpec{{Path: "/var/run", Target: "/run", Key: "links[0]"}},
		ShimDir: "/usr/local/sbin",
		Shims:   []string{"runc", "kill"},
		Rexec:   "/usr/bin/rexec",
		ShimKey: "shims",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"root /", "bind /usr", "bind /etc", "tmpfs /run", "proc /local_proc", "bind /dev", "remote /sys", "remote /proc",
		"remote /run/docker", "link /var/run",
		"remote /sys/fs/cgroup", "remote /var/lib/docker", "tmpfs /usr/local/sbin",
		"bind-file /usr/local/sbin/rexec", "link /usr/local/sbin/runc", "link /usr/local/sbin/kill",
	}
	if got := paths(acts); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	create := map[string]bool{}
	parent := map[string]string{}
	for _, a := range acts {
		if a.Kind == RootBind {
			if a.Target != "/var/lib/qtfs/root" || a.Key != "root" {
				t.Errorf("the root's action: %+v", a)
			}
			continue
		}
		if a.Target != "/var/lib/qtfs/root"+a.Path {
			t.Errorf("%s: target %s", a.Path, a.Target)
		}
		create[a.Path] = a.CreateTarget
		if a.ParentKind != 0 {
			parent[a.Path] = fmt.Sprintf("%s %s %s", a.ParentKind, a.ParentPath, a.ParentKey)
		}
	}
	for p, want := range map[string]string{
		"/sys/fs/cgroup":        "remote /sys mounts[1]",
		"/run/docker":           "tmpfs /run tmpfs[0]",
		"/usr/local/sbin":       "bind /usr binds[0]",
		"/usr/local/sbin/rexec": "tmpfs /usr/local/sbin shims",
		"/var/lib/docker":       "",
		"/usr":                  "",
	} {
		if parent[p] != want {
			t.Errorf("%s: parent %q, want %q", p, parent[p], want)
		}
	}
	for p, want := range map[string]bool{
		"/usr": true, "/run/docker": true, // in the root's own tree, in a tmpfs
		"/sys/fs/cgroup": false, "/usr/local/sbin": false, // in a host export, in a DPU bind
		"/usr/local/sbin/rexec": true, "/var/lib/docker": true,
	} {
		if create[p] != want {
			t.Errorf("%s: CreateTarget %v, want %v", p, create[p], want)
		}
	}
	for _, a := range acts {
		if a.Path == "/dev" && !a.Recursive {
			t.Error("/dev is not bound recursively")
		}
		if a.Path == "/usr" && !a.ReadOnly {
			t.Error("/usr is not read-only")
		}
	}
}

func TestPlanErrors(t *testing.T) {
	base := func() Config {
		return Config{Root: "/r", Binds: []BindSpec{{Path: "/usr", Key: "binds[0]"}}}
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want []string // substrings, each with its key
	}{
		{"relative root", func(c *Config) { c.Root = "var/root" }, []string{"root: "}},
		{"root is /", func(c *Config) { c.Root = "/" }, []string{"root: "}},
		{"duplicate mount point", func(c *Config) {
			c.Remotes = []RemoteSpec{{Path: "/usr", Key: "mounts[0]"}}
		}, []string{"mounts[0]: duplicate mount point /usr (also binds[0])"}},
		{"duplicate remote", func(c *Config) {
			c.Remotes = []RemoteSpec{{Path: "/proc", Key: "mounts[0]"}, {Path: "/proc", Key: "mounts[1]"}}
		}, []string{"mounts[1]: duplicate mount point /proc (also mounts[0])"}},
		{"relative path", func(c *Config) {
			c.Remotes = []RemoteSpec{{Path: "proc", Key: "mounts[0]"}}
		}, []string{`mounts[0]: host path "proc" is not an absolute path`}},
		{"unclean path", func(c *Config) {
			c.Tmpfs = []TmpfsSpec{{Path: "/run/../tmp", Key: "tmpfs[0]"}}
		}, []string{`tmpfs[0]: tmpfs "/run/../tmp" is not clean`}},
		{"the root itself", func(c *Config) {
			c.Remotes = []RemoteSpec{{Path: "/", Key: "mounts[0]"}}
		}, []string{"mounts[0]: host path is the chroot's root itself"}},
		{"inside the local proc", func(c *Config) {
			c.LocalProc, c.LocalProcKey = "/local_proc", "local_proc"
			c.Remotes = []RemoteSpec{{Path: "/local_proc/x", Key: "mounts[0]"}}
		}, []string{"mounts[0]: /local_proc/x lies inside the DPU's proc"}},
		{"inside a link", func(c *Config) {
			c.Links = []LinkSpec{{Path: "/var/run", Target: "/run", Key: "links[0]"}}
			c.Remotes = []RemoteSpec{{Path: "/var/run/docker", Key: "mounts[0]"}}
		}, []string{"mounts[0]: /var/run/docker lies beneath /var/run, which is not a directory"}},
		{"bad shims", func(c *Config) {
			c.ShimDir, c.Rexec, c.ShimKey = "/usr/local/sbin", "/usr/bin/rexec", "shims"
			c.Shims = []string{"runc", "a/b", "runc", "rexec"}
		}, []string{`shims: "a/b" is not a binary name`, `shims: "runc" is listed twice`, `shims: "rexec" is rexec itself`}},
		{"shims without rexec", func(c *Config) {
			c.ShimDir, c.ShimKey, c.Shims = "/usr/local/sbin", "shims", []string{"runc"}
		}, []string{"shims: the rexec binary"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.edit(&c)
			_, err := Plan(c)
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
}
