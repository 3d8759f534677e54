package hostfs

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
)

// hostTable is a host's mount table in the cgroup v1 layout, with a few
// mounts that must never be listed for a mount of /sys/fs/cgroup: a
// sibling whose name shares the prefix, the parents, a mount on the root
// itself (made after the root was opened) and what lies beneath it.
const hostTable = `1 1 0:1 / / rw - rootfs rootfs rw
22 1 0:21 / /proc rw,relatime - proc proc rw
23 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
42 23 0:40 / /sys/fs/cgroupx rw - tmpfs tmpfs rw
43 35 0:41 / /sys/fs/cgroup/memory/a\040b rw - tmpfs my\040src rw
44 31 0:42 / /sys/fs/cgroup rw - tmpfs over rw
45 44 0:43 / /sys/fs/cgroup/hidden rw - tmpfs hidden rw
46 1 0:44 / /srv/data rw - ext4 /dev/sdb rw
47 46 0:45 /sub /srv/data/bind rw - ext4 /dev/sdb rw
`

func TestMountsBeneath(t *testing.T) {
	table := mountinfo.Parse([]byte(hostTable))
	type want struct {
		id, parent                        uint32
		root, path, fstype, source, super string
	}
	for _, tc := range []struct {
		name   string
		holder uint32
		root   string
		want   []want
		// all: the whole table, each mount after its parent.
		all   bool
		errno syscall.Errno
	}{
		{"cgroup v1 tmpfs", 31, "/sys/fs/cgroup", []want{
			{31, 23, "/", "", "tmpfs", "tmpfs", "ro,mode=755"},
			{32, 31, "/", "cpu", "cgroup", "cgroup", "rw,cpu"},
			{35, 31, "/", "memory", "cgroup", "cgroup", "rw,memory"},
			{43, 35, "/", "memory/a b", "tmpfs", "my src", "rw"},
			{41, 31, "/", "unified", "cgroup2", "cgroup2", "rw"},
		}, false, 0},
		{"one controller", 35, "/sys/fs/cgroup/memory", []want{
			{35, 31, "/", "", "cgroup", "cgroup", "rw,memory"},
			{43, 35, "/", "a b", "tmpfs", "my src", "rw"},
		}, false, 0},
		{"a directory in a controller", 35, "/sys/fs/cgroup/memory/docker", []want{
			{35, 31, "/docker", "", "cgroup", "cgroup", "rw,memory"},
		}, false, 0},
		{"a directory of the root filesystem", 1, "/srv", []want{
			{1, 1, "/srv", "", "rootfs", "rootfs", "rw"},
			{46, 1, "/", "data", "ext4", "/dev/sdb", "rw"},
			{47, 46, "/sub", "data/bind", "ext4", "/dev/sdb", "rw"},
		}, false, 0},
		{"the whole tree", 1, "/", nil, true, 0},
		{"holder unknown", 99, "/sys/fs/cgroup", nil, false, syscall.ENOENT},
		{"root not beneath the holder", 35, "/sys/fs/cgroup", nil, false, syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, truncated, e := mountsBeneath(table, tc.holder, tc.root, 1<<20)
			if e != tc.errno || truncated {
				t.Fatalf("errno %v truncated %v, want %v", e, truncated, tc.errno)
			}
			if tc.all {
				if len(got) != len(table) {
					t.Fatalf("%d mounts, want %d", len(got), len(table))
				}
				seen := map[uint32]bool{}
				for i, m := range got {
					if i > 0 && !seen[m.GetParentId()] {
						t.Errorf("%d (%s) listed before its parent %d", m.GetId(), m.GetPath(), m.GetParentId())
					}
					seen[m.GetId()] = true
				}
				return
			}
			var lines []string
			for _, m := range got {
				lines = append(lines, fmt.Sprintf("%d %d %s %q %s %s %s", m.GetId(), m.GetParentId(), m.GetRoot(), m.GetPath(),
					m.GetFsType(), m.GetSource(), m.GetSuperOptions()))
			}
			var wantLines []string
			for _, w := range tc.want {
				wantLines = append(wantLines, fmt.Sprintf("%d %d %s %q %s %s %s", w.id, w.parent, w.root, w.path, w.fstype, w.source, w.super))
			}
			if strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
				t.Errorf("mounts:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(wantLines, "\n"))
			}
		})
	}
}

func TestMountsBeneathBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("1 1 0:1 / / rw - rootfs rootfs rw\n")
	for i := 2; i < 100; i++ {
		fmt.Fprintf(&b, "%d 1 0:%d / /m%d rw - tmpfs tmpfs rw\n", i, i, i)
	}
	table := mountinfo.Parse([]byte(b.String()))
	got, truncated, e := mountsBeneath(table, 1, "/", 10*(hostMountOverhead+30))
	if e != 0 || !truncated || len(got) < 2 || len(got) > 12 {
		t.Fatalf("%d mounts, truncated %v, errno %v; want about ten, truncated", len(got), truncated, e)
	}
	for i, m := range got {
		if want := fmt.Sprintf("m%d", i+1); i > 0 && string(m.GetPath()) != want {
			t.Fatalf("mount %d is %q, want %q: the first ones are kept", i, m.GetPath(), want)
		}
	}
	if _, _, e := mountsBeneath(table, 1, "/", 1); e != syscall.EIO {
		t.Fatalf("budget too small for the holder: errno %v, want EIO", e)
	}
}

func TestRelBeneath(t *testing.T) {
	for _, tc := range []struct {
		p, dir, want string
		ok           bool
	}{
		{"/a/b", "/a", "b", true},
		{"/a", "/a", "", true},
		{"/ab", "/a", "", false},
		{"/a/b", "/", "a/b", true},
		{"/", "/", "", true},
		{"", "/", "", false},
		{"a", "/", "", false},
		{"/a", "/a/b", "", false},
	} {
		if got, ok := relBeneath(tc.p, tc.dir); got != tc.want || ok != tc.ok {
			t.Errorf("relBeneath(%q, %q) = %q, %v; want %q, %v", tc.p, tc.dir, got, ok, tc.want, tc.ok)
		}
	}
}
