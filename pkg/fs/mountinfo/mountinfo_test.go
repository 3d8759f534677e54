package mountinfo

import (
	"bytes"
	"os"
	"reflect"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want Mount
		ok   bool
	}{
		{"proc(5) example", "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
			Mount{ID: 36, Parent: 35, Major: 98, Minor: 0, Root: "/mnt1", MountPoint: "/mnt/parent", Options: "rw,noatime",
				Optional: []string{"master:1"}, FSType: "ext3", Source: "/dev/root", SuperOptions: "rw,errors=continue"}, true},
		{"no optional field", "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory",
			Mount{ID: 35, Parent: 31, Major: 0, Minor: 32, Root: "/", MountPoint: "/sys/fs/cgroup/memory", Options: "rw,relatime",
				FSType: "cgroup", Source: "cgroup", SuperOptions: "rw,memory"}, true},
		{"two optional fields", "40 1 0:5 / /a rw shared:2 master:7 - tmpfs tmpfs rw",
			Mount{ID: 40, Parent: 1, Major: 0, Minor: 5, Root: "/", MountPoint: "/a", Options: "rw",
				Optional: []string{"shared:2", "master:7"}, FSType: "tmpfs", Source: "tmpfs", SuperOptions: "rw"}, true},
		{"escapes", `50 1 8:1 /a\040b /mnt/x\040y\011z\134w rw - fuse.qtfs qtfs:h:/my\040dir rw,user_id=0`,
			Mount{ID: 50, Parent: 1, Major: 8, Minor: 1, Root: "/a b", MountPoint: "/mnt/x y\tz\\w", Options: "rw",
				FSType: "fuse.qtfs", Source: "qtfs:h:/my dir", SuperOptions: "rw,user_id=0"}, true},
		{"empty source", "51 1 0:60 / /e rw - tmpfs  rw",
			Mount{ID: 51, Parent: 1, Major: 0, Minor: 60, Root: "/", MountPoint: "/e", Options: "rw", FSType: "tmpfs", SuperOptions: "rw"}, true},
		{"no separator", "36 35 98:0 /mnt1 /mnt/parent rw,noatime ext3 /dev/root rw", Mount{}, false},
		{"separator too early", "36 35 98:0 /mnt1 /mnt - ext3 /dev/root rw", Mount{}, false},
		{"fields missing after the separator", "36 35 98:0 / /m rw - ext3 /dev/root", Mount{}, false},
		{"fields past the super options", "36 35 98:0 / /m rw - ext3 /dev/root rw extra", Mount{}, false},
		{"bad id", "x 35 98:0 / /m rw - ext3 /dev/root rw", Mount{}, false},
		{"bad device", "36 35 98 / /m rw - ext3 /dev/root rw", Mount{}, false},
		{"id too large", "4294967296 35 98:0 / /m rw - ext3 /dev/root rw", Mount{}, false},
		{"empty", "", Mount{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ParseLine(tc.line)
			if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseLine(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
			}
			if ok {
				if back := string(got.AppendMountinfo(nil)); back != tc.line+"\n" {
					t.Errorf("written back as %q, want %q", back, tc.line)
				}
			}
		})
	}
}

func TestPeerGroups(t *testing.T) {
	for _, tc := range []struct {
		name           string
		optional       []string
		shared, master int
	}{
		{"private", nil, 0, 0},
		{"shared", []string{"shared:1"}, 1, 0},
		{"slave", []string{"master:3"}, 0, 3},
		{"shared slave", []string{"shared:9", "master:3", "propagate_from:2"}, 9, 3},
		{"unbindable", []string{"unbindable"}, 0, 0},
		{"malformed", []string{"shared:x", "master:-1", "shared"}, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Mount{Optional: tc.optional}
			if shared, master := m.PeerGroups(); shared != tc.shared || master != tc.master {
				t.Errorf("PeerGroups() = %d, %d; want %d, %d", shared, master, tc.shared, tc.master)
			}
		})
	}
}

func TestParseSkipsMalformedLines(t *testing.T) {
	data := "1 0 0:1 / / rw - rootfs rootfs rw\ngarbage\n\n2 1 0:2 / /proc rw - proc proc rw"
	got := Parse([]byte(data))
	if len(got) != 2 || got[0].ID != 1 || got[1].MountPoint != "/proc" {
		t.Fatalf("Parse = %+v", got)
	}
}

func TestUnescape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`plain`, `plain`},
		{`a\040b`, `a b`},
		{`\134`, `\`},
		{`\011\012`, "\t\n"},
		{`a\04`, `a\04`},
		{`a\x40`, `a\x40`},
		{`bad\09x`, `bad\09x`},
		{`\400`, `\400`}, // past a byte
		{`\`, `\`},
	} {
		if got := Unescape(tc.in); got != tc.want {
			t.Errorf("Unescape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := string(AppendEscaped(nil, "a b\tc\nd\\e")); got != `a\040b\011c\012d\134e` {
		t.Errorf("AppendEscaped = %q", got)
	}
}

func TestAppendMounts(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Mount
		want string
	}{
		{"cgroup", Mount{MountPoint: "/sys/fs/cgroup/memory", Options: "rw,nosuid,nodev,noexec,relatime", FSType: "cgroup", Source: "cgroup", SuperOptions: "rw,memory"},
			"cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\n"},
		{"read-only mount", Mount{MountPoint: "/r", Options: "ro,relatime", FSType: "ext4", Source: "/dev/sda1", SuperOptions: "rw,errors=remount-ro"},
			"/dev/sda1 /r ext4 ro,relatime,errors=remount-ro 0 0\n"},
		{"read-only filesystem", Mount{MountPoint: "/r", Options: "rw", FSType: "squashfs", Source: "/dev/loop0", SuperOptions: "ro"},
			"/dev/loop0 /r squashfs ro 0 0\n"},
		{"superblock flags first", Mount{MountPoint: "/s", Options: "rw,noatime", FSType: "ext4", Source: "/dev/sdb", SuperOptions: "rw,sync,lazytime,data=ordered"},
			"/dev/sdb /s ext4 rw,sync,lazytime,noatime,data=ordered 0 0\n"},
		{"escapes", Mount{MountPoint: "/a b", Options: "rw", FSType: "tmpfs", Source: "my src", SuperOptions: "rw"},
			`my\040src /a\040b tmpfs rw 0 0` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(tc.m.AppendMounts(nil)); got != tc.want {
				t.Errorf("AppendMounts = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestKernelTables holds the package to the kernel's own tables: every
// line of this process's mountinfo parses and is written back unchanged,
// and the mounts file written from it is the kernel's.
func TestKernelTables(t *testing.T) {
	var info, mounts []byte
	var err error
	for try := 0; try < 5; try++ {
		// Other programs may mount meanwhile: read both again when
		// they do not describe the same mounts.
		if info, err = os.ReadFile("/proc/self/mountinfo"); err != nil {
			t.Skipf("skipped: no /proc/self/mountinfo: %v", err)
		}
		if mounts, err = os.ReadFile("/proc/self/mounts"); err != nil {
			t.Skipf("skipped: no /proc/self/mounts: %v", err)
		}
		if bytes.Count(info, []byte("\n")) == bytes.Count(mounts, []byte("\n")) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	ms := Parse(info)
	var backInfo, backMounts []byte
	for i := range ms {
		backInfo = ms[i].AppendMountinfo(backInfo)
		backMounts = ms[i].AppendMounts(backMounts)
	}
	if !bytes.Equal(backInfo, info) {
		t.Errorf("mountinfo written back differs:\n got %s\nwant %s", backInfo, info)
	}
	if !bytes.Equal(backMounts, mounts) {
		t.Errorf("mounts written from mountinfo differ from the kernel's:\n got %s\nwant %s", backMounts, mounts)
	}
}

// FuzzParse holds Parse and AppendMountinfo together: what Parse accepts
// is written back into a line that parses to the same Mount.
func FuzzParse(f *testing.F) {
	f.Add([]byte("36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"))
	f.Add([]byte(`50 1 8:1 /a\040b /x\134 rw - fuse.qtfs  rw` + "\n1 1 0:0 / / - - - - -\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, m := range Parse(data) {
			line := m.AppendMountinfo(nil)
			again := Parse(line)
			if len(again) != 1 || !reflect.DeepEqual(again[0], m) {
				t.Fatalf("%+v written as %q parses to %+v", m, line, again)
			}
			_ = m.AppendMounts(nil)
		}
	})
}
