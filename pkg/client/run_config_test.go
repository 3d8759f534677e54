package client

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func loadRun(t *testing.T, yaml string) (*RunConfig, error) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "client.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	set := flag.NewFlagSet("run", flag.ContinueOnError)
	set.SetOutput(io.Discard)
	return LoadRunConfig(set, []string{"--config", p})
}

const goodRun = `server: unix:///run/qtfs.sock
root: /var/lib/qtfs/root
binds: ["/usr:ro", "/etc", "/lib64:ro,optional"]
tmpfs: ["/run", "/tmp:1777"]
mounts:
  - /proc
  - /sys:ro
  - /sys/fs/cgroup
  - /var/lib/docker:cache=strict
proxies:
  - listen: /run/containerd/containerd.sock
  - listen: /run/x.sock
    host: /srv/x.sock
    mode: "0600"
`

func TestRunConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		want []string // "line: key: reason" parts
	}{
		{"unknown key", goodRun + "mountz: [/x]\n", []string{"client.yaml: line 15: unknown key mountz"}},
		{"duplicate mount", strings.Replace(goodRun, "  - /sys:ro\n", "  - /sys:ro\n  - /proc\n", 1),
			[]string{":8: mounts[2]: duplicate mount point /proc (also mounts[0])"}},
		{"bad mount option", strings.Replace(goodRun, "/sys:ro", "/sys:rx", 1),
			[]string{":7: mounts[1]: -o rx: unknown mount option"}},
		{"socket inside a host mount", strings.Replace(goodRun, "listen: /run/x.sock", "listen: /var/lib/docker/x.sock", 1),
			[]string{":12: proxies[1].listen: /var/lib/docker/x.sock lies inside the host mount /var/lib/docker (mounts[3])"}},
		{"duplicate socket", strings.Replace(goodRun, "listen: /run/x.sock", "listen: /run/containerd/containerd.sock", 1),
			[]string{":12: proxies[1].listen: /run/containerd/containerd.sock is also the socket of proxies[0]"}},
		{"bad mode", strings.Replace(goodRun, `"0600"`, `"rw"`, 1), []string{":14: proxies[1].mode:"}},
		{"bad tmpfs mode", strings.Replace(goodRun, "/tmp:1777", "/tmp:999", 1), []string{":4: tmpfs[1]: mode"}},
		{"no server", strings.Replace(goodRun, "server: unix:///run/qtfs.sock\n", "", 1), []string{"client.yaml: server: missing"}},
		{"tcp without TLS", strings.Replace(goodRun, "unix:///run/qtfs.sock", "tcp://192.0.2.1:12121", 1), []string{":1: server: ", "TLS"}},
		{"missing cert file", goodRun + "tls_ca: /nonexistent/ca.pem\n", []string{":15: tls_ca: open /nonexistent/ca.pem"}},
		{"shims without rexec", goodRun + "shims: [runc]\nrexec: /nonexistent/rexec\n", []string{":16: rexec: the rexec binary"}},
		{"reconnect timeout not a duration", goodRun + "reconnect_timeout: soon\n", []string{`:15: reconnect_timeout: "soon": want a positive duration such as 30s`}},
		{"reconnect timeout zero", goodRun + "reconnect_timeout: 0s\n", []string{`:15: reconnect_timeout: "0s": want a positive duration`}},
		{"reconnect timeout negative", goodRun + "reconnect_timeout: -5s\n", []string{`:15: reconnect_timeout: "-5s": want a positive duration`}},
		{"reconnect timeout per mount", strings.Replace(goodRun, "/sys:ro", "/sys:ro,reconnect_timeout=5s", 1),
			[]string{":7: mounts[1]: reconnect_timeout is not a per-mount option here", "top-level key reconnect_timeout:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := loadRun(t, tc.yaml)
			if err == nil {
				_, err = rc.check()
			}
			if err == nil {
				t.Fatal("no error")
			}
			if !IsConfigError(err) {
				t.Errorf("not a config error: %v", err)
			}
			if !strings.Contains(err.Error(), "client.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		rc, err := loadRun(t, goodRun)
		if err != nil {
			t.Fatal(err)
		}
		p, err := rc.check()
		if err != nil {
			t.Fatal(err)
		}
		if len(p.mounts) != 4 || len(p.proxies) != 2 || p.proxies[0].Host != "/run/containerd/containerd.sock" || p.proxies[1].Mode != 0o600 {
			t.Fatalf("plan: %+v", p)
		}
		if !p.mounts[0].Flags.AllowOther {
			t.Error("run mounts are not allow_other")
		}
		if p.reconnect != session.DefaultReconnectTimeout {
			t.Errorf("reconnect timeout %v without the key, want the default %v", p.reconnect, session.DefaultReconnectTimeout)
		}
		t.Run("against the server", func(t *testing.T) {
			exports := []*qtfsv1.ExportInfo{{Path: []byte("/proc")}, {Path: []byte("/sys")}}
			err := rc.checkServer(p, exports, []string{"/run/containerd/containerd.sock"}, nil)
			for _, w := range []string{
				":9: mounts[3]: the server: /var/lib/docker is not exported (exports: /proc, /sys)",
				":13: proxies[1].host: /srv/x.sock is not allowed by the server (its --socket-allow list has /run/containerd/containerd.sock)",
			} {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "mounts[2]") {
				t.Errorf("/sys/fs/cgroup lies in the /sys export: %v", err)
			}
			err = rc.checkServer(p, exports, nil, errors.New("unimplemented"))
			if err == nil || !strings.Contains(err.Error(), "offers no socket proxy") {
				t.Errorf("no socket proxy: %v", err)
			}
		})
	})
}

func TestRunConfigReconnectTimeout(t *testing.T) {
	for _, tc := range []struct {
		name, value string
		want        time.Duration
	}{
		{"default", "", session.DefaultReconnectTimeout},
		{"seconds", "5s", 5 * time.Second},
		{"minutes", "2m", 2 * time.Minute},
		{"mixed", "1m30s", 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := goodRun
			if tc.value != "" {
				y += "reconnect_timeout: " + tc.value + "\n"
			}
			rc, err := loadRun(t, y)
			if err != nil {
				t.Fatal(err)
			}
			p, err := rc.check()
			if err != nil {
				t.Fatal(err)
			}
			if p.reconnect != tc.want {
				t.Fatalf("reconnect timeout %v, want %v", p.reconnect, tc.want)
			}
			var b strings.Builder
			if err := CheckRunConfig(rc, &b); err != nil || !strings.Contains(b.String(), "reconnect timeout "+tc.want.String()) {
				t.Fatalf("--check output does not show the timeout %v (%v):\n%s", tc.want, err, b.String())
			}
		})
	}
}

// TestRunConfigMountPointOnTheDPU is the case of a mount point inside a
// bind of a DPU directory (/var/log/pods with /var/log bound) that the DPU
// lacks: check reports it, with the line, the key and the fix, before
// anything is mounted; once the DPU has the directory it passes. A host
// mount inside another host mount needs nothing on the DPU.
func TestRunConfigMountPointOnTheDPU(t *testing.T) {
	dpu := t.TempDir()
	varlog := filepath.Join(dpu, "var/log")
	if err := os.MkdirAll(varlog, 0o755); err != nil {
		t.Fatal(err)
	}
	y := fmt.Sprintf(`server: unix:///run/qtfs.sock
binds: ["%[1]s/var/log"]
mounts:
  - %[1]s/var/lib/docker
  - %[1]s/var/log/pods
  - %[1]s/var/lib/docker/containers
`, dpu)
	rc, err := loadRun(t, y)
	if err != nil {
		t.Fatal(err)
	}
	_, err = rc.check()
	want := fmt.Sprintf("client.yaml:5: mounts[1]: mount point %[1]s/pods does not exist on the DPU, and it lies inside the bind of the DPU's %[1]s (binds[0]), which the chroot never writes into: create it on the DPU (mkdir -p %[1]s/pods), or do not bind %[1]s", varlog)
	if err == nil || !IsConfigError(err) || !strings.Contains(err.Error(), want) {
		t.Fatalf("check: %v\nwant %q", err, want)
	}
	if strings.Contains(err.Error(), "mounts[2]") {
		t.Errorf("a host mount inside a host mount is refused: %v", err)
	}
	var b strings.Builder
	if err := CheckRunConfig(rc, &b); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("--check: %v", err)
	}
	if err := os.Mkdir(filepath.Join(varlog, "pods"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := rc.check(); err != nil {
		t.Fatalf("with the directory on the DPU: %v", err)
	}
}
