package fuseclient

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func TestParsePid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		ok   bool
	}{
		{"1", 1, true},
		{"4194304", 4194304, true},
		{"4294967295", 4294967295, true},
		{"4294967296", 0, false},
		{"0", 0, false},
		{"01", 0, false},
		{"", 0, false},
		{"+1", 0, false},
		{"-1", 0, false},
		{"12a", 0, false},
		{"self", 0, false},
		{"99999999999", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parsePid(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parsePid(%q) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseTgid(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want uint32
		ok   bool
	}{
		{"status", "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\n", 4242, true},
		{"last line", "Name:\tx\nTgid:\t7", 7, true},
		{"no tgid", "Name:\tx\nPid:\t7\n", 0, false},
		{"zero", "Name:\tx\nTgid:\t0\n", 0, false},
		{"garbage", "Name:\tx\nTgid:\tabc\n", 0, false},
		{"first line is no Tgid line", "Tgid:\t5\n", 0, false},
		{"too large", "Name:\tx\nTgid:\t4294967296\n", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parseTgid([]byte(tc.in))
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseTgid = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func FuzzParseTgid(f *testing.F) {
	f.Add([]byte("Name:\tx\nTgid:\t12\n"))
	f.Add([]byte("\nTgid:"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, ok := parseTgid(b); ok && v == 0 {
			t.Fatalf("parseTgid(%q) accepted 0", b)
		}
	})
}

func TestHostSelfLink(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"self/mounts", "1/mounts"},
		{"self/net", "1/net"},
		{"self", "1"},
		{"selfish/x", "selfish/x"},
		{"/proc/self/mounts", "/proc/self/mounts"},
		{"bus/pci", "bus/pci"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := string(hostSelfLink([]byte(tc.in))); got != tc.want {
				t.Errorf("hostSelfLink(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestProcOptions(t *testing.T) {
	for _, tc := range []struct {
		name           string
		opts           MountOptions
		local, offload string
		wantErr        bool
	}{
		{"defaults", MountOptions{}, DefaultLocalProc, "", false},
		{"set", MountOptions{LocalProc: "/x/lp/", OffloadRoot: "/var/lib/qtfs/root/"}, "/x/lp", "/var/lib/qtfs/root", false},
		{"relative local", MountOptions{LocalProc: "lp"}, "", "", true},
		{"relative root", MountOptions{OffloadRoot: "root"}, "", "", true},
		{"NUL", MountOptions{LocalProc: "/a\x00b"}, "", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, o, err := procOptions(tc.opts)
			if (err != nil) != tc.wantErr || l != tc.local || o != tc.offload {
				t.Errorf("procOptions = %q, %q, %v; want %q, %q, error %v", l, o, err, tc.local, tc.offload, tc.wantErr)
			}
		})
	}
}

// fakeProc builds a directory that stands for the DPU's proc: threads
// with a status, processes with a root link.
func fakeProc(t *testing.T, threads map[uint32]uint32, roots map[uint32]string) string {
	t.Helper()
	dir := t.TempDir()
	for tid, tgid := range threads {
		d := filepath.Join(dir, fmt.Sprint(tid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		status := fmt.Sprintf("Name:\tproc%d\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t%d\nPid:\t%d\n", tid, tgid, tid)
		if err := os.WriteFile(filepath.Join(d, "status"), []byte(status), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for pid, root := range roots {
		d := filepath.Join(dir, fmt.Sprint(pid))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(root, filepath.Join(d, "root")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sys"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func callerCtx(pid uint32) context.Context {
	return &fuse.Context{Caller: fuse.Caller{Pid: pid}}
}

// TestProcRootLinks checks the targets of the links a proc root mount
// makes itself, for callers named by thread id, and the offload rule.
func TestProcRootLinks(t *testing.T) {
	const root = "/var/lib/qtfs/root"
	dir := fakeProc(t,
		map[uint32]uint32{100: 100, 101: 100, 200: 200, 300: 300, 303: 300},
		map[uint32]string{100: "/", 300: root, 301: root + "/sub", 302: root})
	for pid, links := range map[uint32]map[string]string{
		300: {"exe": root + "/usr/bin/dockerd", "cwd": root},
		302: {"exe": "/usr/bin/outside", "cwd": root + "/gone (deleted)"},
	} {
		for name, target := range links {
			if err := os.Symlink(target, filepath.Join(dir, fmt.Sprint(pid), name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := &procRoot{localProc: "/local_proc", offloadRoot: root, procDir: dir, at: time.Unix(1, 0)}
	for _, tc := range []struct {
		name   string
		thread bool
		caller uint32
		want   string
		errno  syscall.Errno
	}{
		{"self of a main thread", false, 100, "/local_proc/100", 0},
		{"self of another thread", false, 101, "/local_proc/100", 0},
		{"thread-self", true, 101, "/local_proc/100/task/101", 0},
		{"thread-self of a main thread", true, 200, "/local_proc/200/task/200", 0},
		{"self of an offloaded process", false, 300, "300", 0},
		{"self of an offloaded process's thread", false, 303, "300", 0},
		{"thread-self of an offloaded process's thread", true, 303, "300/task/303", 0},
		{"caller without a pid", false, 0, "", syscall.ENOENT},
		{"caller gone", false, 999, "", syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, e := p.selfTarget(callerCtx(tc.caller), tc.thread)
			if got != tc.want || e != tc.errno {
				t.Errorf("target = %q, %v; want %q, %v", got, e, tc.want, tc.errno)
			}
		})
	}
	if _, e := p.selfTarget(context.Background(), false); e != syscall.ENOENT {
		t.Errorf("self without a FUSE caller: %v, want ENOENT", e)
	}
	for _, tc := range []struct {
		pid        uint32
		name, want string
	}{
		{300, "exe", "/usr/bin/dockerd"},
		{300, "cwd", "/"},
		{300, "root", "/"},
		{302, "exe", "/local_proc/302/exe"}, // out of the chroot
		{302, "cwd", "/local_proc/302/cwd"}, // gone
		{300, "fd", "/local_proc/300/fd"},
	} {
		t.Run(fmt.Sprintf("%d/%s", tc.pid, tc.name), func(t *testing.T) {
			l := &procLink{p: p, kind: pidEntryKind(tc.name), pid: tc.pid, name: tc.name}
			if got, e := l.target(callerCtx(100)); got != tc.want || e != 0 {
				t.Errorf("target = %q, %v; want %q", got, e, tc.want)
			}
		})
	}
	everything := &procRoot{localProc: "/lp", offloadRoot: "/", procDir: dir}
	if got := everything.magicTarget(302, "exe"); got != "/usr/bin/outside" {
		t.Errorf("offload root /: exe %q, want the DPU's link", got)
	}

	classify := []struct {
		name string
		kind entryKind
		pid  uint32
	}{
		{"self", entrySelf, 0},
		{"thread-self", entryThreadSelf, 0},
		{"300", entryLocalPid, 300},
		{"302", entryLocalPid, 302},
		{"301", entryNone, 0}, // beneath the chroot is not in it
		{"100", entryNone, 0}, // root "/": a DPU process outside the chroot
		{"555", entryNone, 0}, // not on the DPU: the host's
		{"0300", entryNone, 0},
		{"mounts", entryNone, 0},
	}
	for _, tc := range classify {
		t.Run("classify "+tc.name, func(t *testing.T) {
			if kind, pid := p.classify(tc.name); kind != tc.kind || pid != tc.pid {
				t.Errorf("classify(%q) = %v, %d; want %v, %d", tc.name, kind, pid, tc.kind, tc.pid)
			}
		})
	}
	if got := p.localPids(); !slices.Equal(got, []uint32{300, 302}) {
		t.Errorf("localPids = %v, want [300 302]", got)
	}

	off := &procRoot{localProc: p.localProc, procDir: p.procDir, at: p.at}
	if kind, _ := off.classify("300"); kind != entryNone {
		t.Errorf("rule off: 300 classified %v", kind)
	}
	if got := off.localPids(); got != nil {
		t.Errorf("rule off: localPids = %v", got)
	}
	if got, _ := off.selfTarget(callerCtx(300), false); got != "/local_proc/300" {
		t.Errorf("rule off: self of 300 %q, want the local proc's", got)
	}
}

// TestProcRootListing checks a listing of a proc root: self and
// thread-self are the client's links, the host's entries of offloaded
// pids are left out and the offloaded pids follow the host's entries, as
// the client's directories;
// seeking into either part works.
func TestProcRootListing(t *testing.T) {
	attr := func(ino uint64, mode uint32) *qtfsv1.Attr {
		return &qtfsv1.Attr{Ino: ino, Dev: 4, Mode: mode, Nlink: 1}
	}
	c := &fakeDirClient{calls: map[string]int{}, entries: []*qtfsv1.DirEntry{
		{Name: []byte("mounts"), Ino: 10, Type: syscall.S_IFLNK, Offset: 3, Attr: attr(10, syscall.S_IFLNK|0o777)},
		{Name: []byte("self"), Ino: 11, Type: syscall.S_IFLNK, Offset: 4, Attr: attr(11, syscall.S_IFLNK|0o777)},
		{Name: []byte("thread-self"), Ino: 12, Type: syscall.S_IFLNK, Offset: 5, Attr: attr(12, syscall.S_IFLNK|0o777)},
		{Name: []byte("1"), Ino: 13, Type: syscall.S_IFDIR, Offset: 260, Attr: attr(13, syscall.S_IFDIR|0o555)},
		{Name: []byte("300"), Ino: 14, Type: syscall.S_IFDIR, Offset: 559, Attr: attr(14, syscall.S_IFDIR|0o555)},
		{Name: []byte("400"), Ino: 15, Type: syscall.S_IFDIR, Offset: 659, Attr: attr(15, syscall.S_IFDIR|0o555)},
	}}
	dir := fakeProc(t, nil, map[uint32]string{1: "/", 300: "/chroot", 77: "/chroot"})
	m := &mountFS{sess: testSession(t, c), log: zaptest.NewLogger(t), timeout: time.Second, rootDev: 4, inos: newInoMap(4)}
	m.proc = &procRoot{m: m, localProc: "/lp", offloadRoot: "/chroot", procDir: dir}
	m.root = &node{m: m}
	d := m.newDirHandle(7, m.root)
	read := func() []fuse.DirEntry { return readAll(t, d) }
	local := func(kind entryKind, pid uint32) uint64 { return m.inos.ino(localDev, entryIno(kind, pid)) }
	want := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Off: 1},
		{Name: "..", Mode: syscall.S_IFDIR, Off: 2},
		{Name: "mounts", Ino: 10, Mode: syscall.S_IFLNK, Off: 5},
		{Name: "self", Ino: local(entrySelf, 0), Mode: syscall.S_IFLNK, Off: 6},
		{Name: "thread-self", Ino: local(entryThreadSelf, 0), Mode: syscall.S_IFLNK, Off: 7},
		{Name: "1", Ino: 13, Mode: syscall.S_IFDIR, Off: 262},
		{Name: "400", Ino: 15, Mode: syscall.S_IFDIR, Off: 661},
		{Name: "77", Ino: local(entryLocalPid, 77), Mode: syscall.S_IFDIR, Off: localCookieBase + 1},
		{Name: "300", Ino: local(entryLocalPid, 300), Mode: syscall.S_IFDIR, Off: localCookieBase + 2},
	}
	if got := read(); !slices.Equal(got, want) {
		t.Errorf("entries:\n got %v\nwant %v", got, want)
	}
	for _, tc := range []struct {
		off  uint64
		from int
	}{{localCookieBase + 1, 8}, {localCookieBase + 2, 9}, {661, 7}, {262, 6}, {5, 3}, {0, 0}} {
		if e := d.Seekdir(context.Background(), tc.off); e != 0 {
			t.Fatal(e)
		}
		if got := read(); !slices.Equal(got, want[tc.from:]) {
			t.Errorf("after seeking to %d:\n got %v\nwant %v", tc.off, got, want[tc.from:])
		}
	}
	if d.local[0] != 77 || d.local[1] != 300 {
		t.Errorf("local snapshot %v", d.local)
	}
}

// mountsClient answers Mounts with a fixed list and counts the calls.
type mountsClient struct {
	qtfsv1.FileSystemClient
	mu     sync.Mutex
	calls  int
	mounts []*qtfsv1.HostMount
}

func (c *mountsClient) Mounts(ctx context.Context, req *qtfsv1.MountsRequest, _ ...grpc.CallOption) (*qtfsv1.MountsResponse, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return &qtfsv1.MountsResponse{Mounts: c.mounts}, nil
}

// TestProcMountTable reads the mount table of an offloaded process
// through its directory: the DPU's file rewritten for the mounts of the
// process's mount table, one Mounts RPC per mount within the TTL.
func TestProcMountTable(t *testing.T) {
	dir := fakeProc(t, nil, map[uint32]string{300: "/chroot"})
	dpuTable := "20 1 254:0 / / rw - ext4 /dev/vda rw\n" +
		"25 20 0:50 / /sys/fs/cgroup rw,relatime shared:5 - fuse.qtfs q " + fuseSuper + "\n" +
		"26 20 0:77 / /other rw - fuse.qtfs q " + fuseSuper + "\n"
	if err := os.WriteFile(filepath.Join(dir, "300", "mountinfo"), []byte(dpuTable), 0o444); err != nil {
		t.Fatal(err)
	}
	c := &mountsClient{mounts: hostCgroupV1[:2]}
	cg := &mountFS{sess: testSession(t, c), log: zaptest.NewLogger(t), timeout: time.Second}
	cg.hostMounts.ttl = time.Hour
	table := &mountTable{byDev: map[uint64]*mountFS{unix.Mkdev(0, 50): cg}}
	p := &procRoot{localProc: "/lp", offloadRoot: "/chroot", procDir: dir, mounts: table}
	want := "20 1 254:0 / / rw - ext4 /dev/vda rw\n" +
		"25 20 0:50 / /sys/fs/cgroup rw,relatime shared:5 - tmpfs tmpfs ro,mode=755\n" +
		"1073741824 25 0:50 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:5 - cgroup cgroup rw,cpu\n" +
		"26 20 0:77 / /other rw - fuse.qtfs q " + fuseSuper + "\n"
	for i := 0; i < 5; i++ {
		got, e := p.tableView(callerCtx(300), 300, "mountinfo", false)
		if e != 0 || string(got) != want {
			t.Fatalf("mountinfo: %v\n%s\nwant:\n%s", e, got, want)
		}
	}
	got, e := p.tableView(callerCtx(300), 300, "mountinfo", true)
	if e != 0 || !strings.Contains(string(got), "\ncgroup /sys/fs/cgroup/cpu cgroup rw,nosuid,nodev,noexec,relatime,cpu 0 0\n") {
		t.Errorf("mounts: %v\n%s", e, got)
	}
	if c.calls != 1 {
		t.Errorf("6 reads: %d Mounts RPCs, want 1", c.calls)
	}
	if _, e := p.tableView(callerCtx(300), 999, "mountinfo", false); e != syscall.ENOENT {
		t.Errorf("mount table of a process that is gone: %v, want ENOENT", e)
	}
}
