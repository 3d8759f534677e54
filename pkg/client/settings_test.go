package client

import (
	"strings"
	"testing"

	"github.com/qtfs/qtfs/pkg/clientconf"
	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func TestParseRemote(t *testing.T) {
	for _, tc := range []struct {
		in, server, path, err string
	}{
		{"host:/proc", "host", "/proc", ""},
		{"/srv/data", "", "/srv/data", ""},
		{"10.0.0.2:/var/lib/docker/", "10.0.0.2", "/var/lib/docker", ""},
		{"[::1]:/srv", "[::1]", "/srv", ""},
		{"dpu-host:/a/../b", "dpu-host", "/b", ""},
		{"host:relative", "", "", "must be absolute"},
		{"", "", "", "missing"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r, err := ParseRemote(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || r.Server != tc.server || r.Path != tc.path {
				t.Fatalf("got %+v, %v; want %q %q", r, err, tc.server, tc.path)
			}
		})
	}
}

func TestServerURI(t *testing.T) {
	s := clientconf.Settings{Servers: map[string]string{"host": "unix:///run/qtfs.sock"}}
	for _, tc := range []struct {
		name    string
		flag    string
		remote  Remote
		want    string
		wantErr bool
	}{
		{"named server from config", "", Remote{Server: "host", Path: "/"}, "unix:///run/qtfs.sock", false},
		{"plain host is tcp default port", "", Remote{Server: "127.0.0.1", Path: "/"}, "tcp://127.0.0.1:12121", false},
		{"--server wins", "tcp://127.0.0.2:9", Remote{Server: "host", Path: "/"}, "tcp://127.0.0.2:9", false},
		{"nothing", "", Remote{Path: "/"}, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := s
			s.Server = tc.flag
			u, err := ServerURI(&s, tc.remote)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil && u.String() != tc.want {
				t.Fatalf("got %s, want %s", u, tc.want)
			}
		})
	}
}

func TestParseMountOptions(t *testing.T) {
	m, err := ParseMountOptions([]string{"ro,allow_other", "cache=none"})
	if err != nil || !m.ReadOnly || !m.AllowOther || m.Cache != fuseclient.CacheNone {
		t.Fatalf("got %+v, %v", m, err)
	}
	m, err = ParseMountOptions([]string{"local_proc=/x/", "offload_root=/var/lib/qtfs/root"})
	if err != nil || m.LocalProc != "/x" || m.OffloadRoot != "/var/lib/qtfs/root" {
		t.Fatalf("got %+v, %v", m, err)
	}
	for _, bad := range []string{"cache=sometimes", "nosuid", "ro=1", "local_proc=relative", "offload_root"} {
		if _, err := ParseMountOptions([]string{bad}); err == nil {
			t.Fatalf("-o %s accepted", bad)
		}
	}
}

func TestQtfsMounts(t *testing.T) {
	const mi = `22 1 0:21 / /proc rw,nosuid - proc proc rw
90 22 0:50 / /mnt/with\040space rw,nosuid,nodev - fuse.qtfs host:/srv rw,user_id=0,group_id=0
91 22 0:51 / /mnt/other rw - fuse.sshfs x:/ rw
92 22 0:52 / /mnt/q rw shared:4 - fuse.qtfs host:/proc rw
`
	got := qtfsMounts(mountinfo.Parse([]byte(mi)))
	if len(got) != 2 || got[0].MountPoint != "/mnt/with space" || got[0].Source != "host:/srv" || got[1].MountPoint != "/mnt/q" {
		t.Fatalf("got %+v", got)
	}
}

func TestCheckExported(t *testing.T) {
	ex := []*qtfsv1.ExportInfo{{Path: []byte("/srv")}, {Path: []byte("/proc")}}
	for _, tc := range []struct {
		path string
		ok   bool
	}{
		{"/srv", true}, {"/srv/a/b", true}, {"/proc/1", true},
		{"/srvx", false}, {"/etc", false}, {"/", false},
	} {
		err := checkExported(tc.path, ex)
		if (err == nil) != tc.ok {
			t.Fatalf("checkExported(%q) = %v, want ok=%v", tc.path, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "exports: /srv, /proc") {
			t.Fatalf("error does not list the exports: %v", err)
		}
	}
	if err := checkExported("/anything", []*qtfsv1.ExportInfo{{Path: []byte("/")}}); err != nil {
		t.Fatalf("root export: %v", err)
	}
}
