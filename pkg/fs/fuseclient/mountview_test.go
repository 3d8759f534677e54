package fuseclient

import (
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// hm is a HostMount of a test.
func hm(id, parent uint32, root, path, opts, fstype, source, super string) *qtfsv1.HostMount {
	return &qtfsv1.HostMount{Id: id, ParentId: parent, Major: 0, Minor: id, Root: []byte(root), Path: []byte(path),
		Options: opts, FsType: fstype, Source: []byte(source), SuperOptions: super}
}

// hostCgroupV1 is what a host in the cgroup v1 layout answers for a
// mount of its /sys/fs/cgroup.
var hostCgroupV1 = []*qtfsv1.HostMount{
	hm(31, 23, "/", "", "rw,nosuid,nodev,noexec", "tmpfs", "tmpfs", "ro,mode=755"),
	hm(32, 31, "/", "cpu", "rw,nosuid,nodev,noexec,relatime", "cgroup", "cgroup", "rw,cpu"),
	hm(35, 31, "/", "memory", "rw,nosuid,nodev,noexec,relatime", "cgroup", "cgroup", "rw,memory"),
	hm(43, 35, "/", "memory/a b", "rw", "tmpfs", "my src", "rw"),
	hm(36, 31, "/", "devices", "rw,nosuid,nodev,noexec,relatime", "cgroup", "cgroup", "rw,devices"),
	hm(41, 31, "/", "unified", "rw,nosuid,nodev,noexec,relatime", "cgroup2", "cgroup2", "rw,nsdelegate"),
}

const fuseSuper = "rw,user_id=0,group_id=0,default_permissions,allow_other"

// TestHostView is the table of the mountinfo view: a DPU mount table and
// the host's mounts of its qtfs lines, and the table the view shows. The
// host's submounts are numbered from viewIDBase (1073741824).
func TestHostView(t *testing.T) {
	for _, tc := range []struct {
		name  string
		dpu   string
		hosts map[uint32][]*qtfsv1.HostMount // by the DPU line's minor
		want  string
	}{
		{
			name: "cgroup v1 controllers beneath /sys/fs/cgroup",
			dpu: "20 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
				"25 20 0:50 / /sys/fs/cgroup rw,nosuid,nodev,relatime shared:5 - fuse.qtfs qtfs:h:/sys/fs/cgroup " + fuseSuper + "\n" +
				"26 20 0:22 / /local_proc rw,relatime shared:6 - proc proc rw\n",
			hosts: map[uint32][]*qtfsv1.HostMount{50: hostCgroupV1},
			want: "20 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
				"25 20 0:50 / /sys/fs/cgroup rw,nosuid,nodev,relatime shared:5 - tmpfs tmpfs ro,mode=755\n" +
				"1073741824 25 0:50 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:5 - cgroup cgroup rw,cpu\n" +
				"1073741825 25 0:50 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:5 - cgroup cgroup rw,memory\n" +
				`1073741826 1073741825 0:50 / /sys/fs/cgroup/memory/a\040b rw shared:5 - tmpfs my\040src rw` + "\n" +
				"1073741827 25 0:50 / /sys/fs/cgroup/devices rw,nosuid,nodev,noexec,relatime shared:5 - cgroup cgroup rw,devices\n" +
				"1073741828 25 0:50 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate\n" +
				"26 20 0:22 / /local_proc rw,relatime shared:6 - proc proc rw\n",
		},
		{
			name: "a proc mount and the DPU's own mount beneath it",
			dpu: "26 20 0:51 / /proc rw,nosuid,nodev,relatime - fuse.qtfs qtfs:h:/proc " + fuseSuper + "\n" +
				"27 26 0:52 / /proc/sys/fs/binfmt_misc rw,relatime - binfmt_misc binfmt_misc rw\n",
			hosts: map[uint32][]*qtfsv1.HostMount{51: {hm(22, 1, "/", "", "rw,nosuid,nodev,noexec,relatime", "proc", "proc", "rw")}},
			want: "26 20 0:51 / /proc rw,nosuid,nodev,relatime - proc proc rw\n" +
				"27 26 0:52 / /proc/sys/fs/binfmt_misc rw,relatime - binfmt_misc binfmt_misc rw\n",
		},
		{
			name: "escaped paths with spaces",
			dpu:  `30 20 0:53 / /mnt/my\040dir rw - fuse.qtfs qtfs:h:/srv/my\040dir ` + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{53: {
				hm(60, 1, "/srv/my dir", "", "rw,relatime", "ext4", "/dev/sda1", "rw"),
				hm(61, 60, "/", "sub dir/x\ty", "rw", "tmpfs", "tmp fs", "rw,size=4k"),
			}},
			want: `30 20 0:53 /srv/my\040dir /mnt/my\040dir rw - ext4 /dev/sda1 rw` + "\n" +
				`1073741824 30 0:53 / /mnt/my\040dir/sub\040dir/x\011y rw - tmpfs tmp\040fs rw,size=4k` + "\n",
		},
		{
			name:  "a bind mount of a controller's directory",
			dpu:   "40 20 0:50 /memory/docker /run/memcg rw,relatime - fuse.qtfs qtfs:h:/sys/fs/cgroup " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{50: hostCgroupV1},
			want:  "40 20 0:50 /docker /run/memcg rw,relatime - cgroup cgroup rw,memory\n",
		},
		{
			name:  "a bind mount of a controller, its submount beneath",
			dpu:   "40 20 0:50 /memory /run/memcg ro,relatime - fuse.qtfs qtfs:h:/sys/fs/cgroup " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{50: hostCgroupV1},
			want: "40 20 0:50 / /run/memcg ro,relatime - cgroup cgroup rw,memory\n" +
				`1073741824 40 0:50 / /run/memcg/a\040b ro - tmpfs my\040src rw` + "\n",
		},
		{
			name:  "read-only: what is beneath is read-only too",
			dpu:   "25 20 0:50 / /sys/fs/cgroup ro,nosuid - fuse.qtfs qtfs:h:/sys/fs/cgroup " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{50: {hostCgroupV1[0], hostCgroupV1[1]}},
			want: "25 20 0:50 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n" +
				"1073741824 25 0:50 / /sys/fs/cgroup/cpu ro,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu\n",
		},
		{
			name: "a qtfs mount as the root",
			dpu:  "20 1 0:54 / / rw - fuse.qtfs qtfs:h:/ " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{54: {
				hm(1, 1, "/", "", "rw", "ext4", "/dev/vda", "rw"),
				hm(22, 1, "/", "proc", "rw", "proc", "proc", "rw"),
			}},
			want: "20 1 0:54 / / rw - ext4 /dev/vda rw\n" +
				"1073741824 20 0:54 / /proc rw - proc proc rw\n",
		},
		{
			name: "over-mounts: the top one shows",
			dpu:  "25 20 0:50 /a /x rw - fuse.qtfs q " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{50: {
				hm(1, 1, "/", "", "rw", "ext4", "/dev/vda", "rw"),
				hm(2, 1, "/", "a", "rw", "tmpfs", "under", "rw"),
				hm(3, 2, "/", "a", "rw", "tmpfs", "over", "rw"),
				hm(4, 3, "/", "a/b", "rw", "tmpfs", "on over", "rw"),
				hm(5, 2, "/", "a/c", "rw", "tmpfs", "hidden", "rw"),
			}},
			want: "25 20 0:50 / /x rw - tmpfs over rw\n" +
				"1073741824 25 0:50 / /x/b rw - tmpfs on\\040over rw\n",
		},
		{
			name:  "a FUSE mount this process does not serve",
			dpu:   "25 20 0:77 / /other rw - fuse.qtfs q " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{},
			want:  "25 20 0:77 / /other rw - fuse.qtfs q " + fuseSuper + "\n",
		},
		{
			name:  "a reply whose first mount is not the root's",
			dpu:   "25 20 0:50 / /x rw - fuse.qtfs q " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{50: {hm(2, 1, "/", "a", "rw", "tmpfs", "t", "rw")}},
			want:  "25 20 0:50 / /x rw - fuse.qtfs q " + fuseSuper + "\n",
		},
		{
			name: "invalid mounts of a reply are left out, with what is beneath them",
			dpu:  "25 20 0:50 / /x rw - fuse.qtfs q " + fuseSuper + "\n",
			hosts: map[uint32][]*qtfsv1.HostMount{50: {
				hm(1, 1, "/", "", "rw", "ext4", "/dev/vda", "rw"),
				hm(2, 1, "/", "a", "rw\n99 1 0:1 / /evil rw", "tmpfs", "t", "rw"),
				hm(3, 2, "/", "a/b", "rw", "tmpfs", "t", "rw"),
				hm(4, 1, "/", "../up", "rw", "tmpfs", "t", "rw"),
				hm(5, 1, "relative", "c", "rw", "tmpfs", "t", "rw"),
				hm(6, 1, "/", "d", "rw", "tmpfs", "t", "rw,a b"),
				hm(7, 1, "/", "e", "rw", "", "t", "rw"),
				hm(8, 1, "/", "ok", "rw", "tmpfs", "t", "rw"),
			}},
			want: "25 20 0:50 / /x rw - ext4 /dev/vda rw\n" +
				"1073741824 25 0:50 / /x/ok rw - tmpfs t rw\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v viewIDs
			dpu := mountinfo.Parse([]byte(tc.dpu))
			hosts := func(m *mountinfo.Mount) []*qtfsv1.HostMount {
				if m.FSType != FsType {
					return nil
				}
				return tc.hosts[m.Minor]
			}
			got := string(renderView(v.hostView(dpu, hosts), false))
			if got != tc.want {
				t.Errorf("view:\n%s\nwant:\n%s", got, tc.want)
			}
			// The same table again: the same ids.
			if again := string(renderView(v.hostView(dpu, hosts), false)); again != got {
				t.Errorf("second view differs:\n%s\nfirst:\n%s", again, got)
			}
		})
	}
}

// TestHostViewIDs checks that the ids of the host's submounts are apart
// from the DPU's and from each other when one FUSE mount shows twice
// (bound elsewhere): per DPU line.
func TestHostViewIDs(t *testing.T) {
	dpu := mountinfo.Parse([]byte(
		"25 20 0:50 / /sys/fs/cgroup rw - fuse.qtfs q " + fuseSuper + "\n" +
			"40 20 0:50 / /again rw - fuse.qtfs q " + fuseSuper + "\n"))
	var v viewIDs
	view := v.hostView(dpu, func(*mountinfo.Mount) []*qtfsv1.HostMount { return hostCgroupV1 })
	if len(view) != 2*len(hostCgroupV1) {
		t.Fatalf("%d lines, want %d", len(view), 2*len(hostCgroupV1))
	}
	ids := map[uint32]string{}
	for _, m := range view {
		if other, ok := ids[m.ID]; ok {
			t.Errorf("id %d is %s and %s", m.ID, other, m.MountPoint)
		}
		ids[m.ID] = m.MountPoint
		if m.ID != 25 && m.ID != 40 && m.ID < viewIDBase {
			t.Errorf("%s has id %d, among the DPU's", m.MountPoint, m.ID)
		}
	}
}

// TestHostViewMounts checks the mounts file of the view.
func TestHostViewMounts(t *testing.T) {
	dpu := mountinfo.Parse([]byte("25 20 0:50 / /sys/fs/cgroup rw,nosuid,nodev,relatime shared:5 - fuse.qtfs q " + fuseSuper + "\n"))
	var v viewIDs
	got := string(renderView(v.hostView(dpu, func(*mountinfo.Mount) []*qtfsv1.HostMount { return hostCgroupV1[:3] }), true))
	want := "tmpfs /sys/fs/cgroup tmpfs ro,nosuid,nodev,relatime,mode=755 0 0\n" +
		"cgroup /sys/fs/cgroup/cpu cgroup rw,nosuid,nodev,noexec,relatime,cpu 0 0\n" +
		"cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0\n"
	if got != want {
		t.Errorf("mounts:\n%s\nwant:\n%s", got, want)
	}
}

// TestHostMountsCache checks the cost of the host's mount lists: one
// fetch per TTL, however many readers, and one for readers that come
// while it is on its way.
func TestHostMountsCache(t *testing.T) {
	var now int64
	c := &hostMountsCache{ttl: time.Second, now: func() int64 { return now }}
	fetches := 0
	fetch := func() ([]*qtfsv1.HostMount, syscall.Errno) {
		fetches++
		return hostCgroupV1, 0
	}
	for i := 0; i < 10; i++ {
		if got, e := c.get(fetch); len(got) != len(hostCgroupV1) || e != 0 {
			t.Fatalf("get: %d mounts, %v", len(got), e)
		}
		now += int64(50 * time.Millisecond)
	}
	if fetches != 1 {
		t.Errorf("10 reads within the TTL: %d fetches, want 1", fetches)
	}
	now += int64(time.Second)
	c.get(fetch)
	if fetches != 2 {
		t.Errorf("a read past the TTL: %d fetches, want 2", fetches)
	}

	// A failure is kept for the TTL too.
	now += int64(2 * time.Second)
	failing := func() ([]*qtfsv1.HostMount, syscall.Errno) { fetches++; return nil, syscall.EOPNOTSUPP }
	if _, e := c.get(failing); e != syscall.EOPNOTSUPP {
		t.Errorf("failing fetch: %v", e)
	}
	if _, e := c.get(failing); e != syscall.EOPNOTSUPP || fetches != 3 {
		t.Errorf("after a failure: %v, %d fetches; want the failure kept, 3", e, fetches)
	}

	// A call whose caller was killed is not kept: the next reader asks.
	now += int64(2 * time.Second)
	interrupted := func() ([]*qtfsv1.HostMount, syscall.Errno) { fetches++; return nil, syscall.EINTR }
	c.get(interrupted)
	if _, e := c.get(fetch); e != 0 || fetches != 5 {
		t.Errorf("after an interrupted fetch: %v, %d fetches; want a new one, 5", e, fetches)
	}

	// Readers that come while a fetch is on its way wait for it.
	now += int64(2 * time.Second)
	gate := make(chan struct{})
	started := make(chan struct{})
	var mu sync.Mutex
	slow := func() ([]*qtfsv1.HostMount, syscall.Errno) {
		mu.Lock()
		fetches++
		mu.Unlock()
		close(started)
		<-gate
		return hostCgroupV1, 0
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.get(slow) }()
	<-started
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, _ := c.get(slow); len(got) != len(hostCgroupV1) {
				t.Errorf("waiting reader got %d mounts", len(got))
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let them queue behind the fetch
	close(gate)
	wg.Wait()
	if fetches != 6 {
		t.Errorf("5 readers around one fetch: %d fetches in all, want 6", fetches)
	}
}

// FuzzHostView feeds the view any reply a server could send: no panic,
// and the table written is one well-formed line per mount of the view
// (nothing from the wire adds a line or breaks one).
func FuzzHostView(f *testing.F) {
	seed, err := proto.Marshal(&qtfsv1.MountsResponse{Mounts: hostCgroupV1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed, "/")
	f.Add(seed, "/memory/docker")
	f.Fuzz(func(t *testing.T, reply []byte, root string) {
		var resp qtfsv1.MountsResponse
		if proto.Unmarshal(reply, &resp) != nil {
			return
		}
		line := mountinfo.Mount{ID: 25, Parent: 20, Major: 0, Minor: 50, Root: root, MountPoint: "/sys/fs/cgroup",
			Options: "rw,relatime", Optional: []string{"shared:5"}, FSType: FsType, Source: "q", SuperOptions: "rw"}
		var v viewIDs
		view := v.hostView([]mountinfo.Mount{line}, func(*mountinfo.Mount) []*qtfsv1.HostMount { return resp.GetMounts() })
		text := renderView(view, false)
		back := mountinfo.Parse(text)
		if len(back) != len(view) || strings.Count(string(text), "\n") != len(view) {
			t.Fatalf("%d mounts written as %d lines (%d parsed):\n%s", len(view), strings.Count(string(text), "\n"), len(back), text)
		}
		for i := range back {
			if back[i].MountPoint != view[i].MountPoint || back[i].FSType != view[i].FSType || back[i].Source != view[i].Source {
				t.Fatalf("line %d reads back as %+v, written from %+v", i, back[i], view[i])
			}
		}
		_ = renderView(view, true)
	})
}
