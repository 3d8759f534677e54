package hostfs_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// mountTmpfs mounts a tmpfs named source on dir until the test ends.
func mountTmpfs(t *testing.T, source, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(source, dir, "tmpfs", 0, "size=64k"); err != nil {
		t.Skipf("skipped: mount a tmpfs on %s: %v (the test mounts: run it as root)", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// hostMounts calls Mounts on mount m and returns "path type source" of
// each mount it lists.
func hostMounts(t *testing.T, c *hostfs.DirectClient, m uint64) []string {
	t.Helper()
	r, err := c.Mounts(t.Context(), &qtfsv1.MountsRequest{Mount: m})
	if err != nil || r.GetErrno() != 0 {
		t.Fatalf("Mounts: %v errno %d", err, r.GetErrno())
	}
	var out []string
	for _, hm := range r.GetMounts() {
		out = append(out, string(hm.GetPath())+"|"+hm.GetFsType()+"|"+string(hm.GetSource()))
	}
	return out
}

// TestMountsConfined checks that Mounts lists the mounts beneath a
// mount's root and nothing outside it: not a sibling sharing the name's
// prefix, not the export's other directories, not a mount made on the
// root itself after the root was opened (the server's walks do not cross
// it), nor what lies beneath that.
func TestMountsConfined(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipped: the test mounts tmpfs filesystems: run it as root")
	}
	exp := t.TempDir()
	mountTmpfs(t, "one src", filepath.Join(exp, "in", "a b"))
	mountTmpfs(t, "two", filepath.Join(exp, "in", "a b", "c"))
	mountTmpfs(t, "outside", filepath.Join(exp, "out"))
	mountTmpfs(t, "prefix", filepath.Join(exp, "inx"))
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: exp, ReadOnly: true, Ops: []string{"read"}}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, whole := session(t, s, exp)
	r, err := c.Mount(t.Context(), &qtfsv1.MountRequest{Path: []byte(filepath.Join(exp, "in")), Caller: root})
	if err != nil || r.GetErrno() != 0 {
		t.Fatalf("mount in: %v errno %d", err, r.GetErrno())
	}
	in := r.GetMount()

	var st unix.Statfs_t
	if err := unix.Statfs(exp, &st); err != nil {
		t.Fatal(err)
	}
	got := hostMounts(t, c, in)
	if len(got) != 3 || got[1] != "a b|tmpfs|one src" || got[2] != "a b/c|tmpfs|two" || !strings.HasPrefix(got[0], "|") {
		t.Errorf("mounts beneath in: %q; want the holder, then a b and a b/c", got)
	}
	if got := hostMounts(t, c, whole); len(got) != 5 {
		t.Errorf("mounts beneath the export: %q; want the holder and four", got)
	}

	// The holder's root is the directory the mount's root is.
	resp, _ := c.Mounts(t.Context(), &qtfsv1.MountsRequest{Mount: in})
	hold := resp.GetMounts()[0]
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mountinfo.Parse(info) {
		if m.ID == hold.GetId() {
			rel, _ := filepath.Rel(m.MountPoint, filepath.Join(exp, "in"))
			if want := filepath.Join(m.Root, rel); string(hold.GetRoot()) != want || hold.GetFsType() != m.FSType {
				t.Errorf("holder %d: root %q type %s; want %q %s", m.ID, hold.GetRoot(), hold.GetFsType(), want, m.FSType)
			}
		}
	}

	// A mount on the root after it was opened hides nothing the server
	// sees: it is not listed, nor what is mounted beneath it.
	mountTmpfs(t, "over", filepath.Join(exp, "in"))
	mountTmpfs(t, "under over", filepath.Join(exp, "in", "d"))
	if got := hostMounts(t, c, in); len(got) != 3 {
		t.Errorf("after a mount on the root: %q; want the same three", got)
	}

	if r, err := c.Mounts(t.Context(), &qtfsv1.MountsRequest{Mount: 99}); err != nil || r.GetErrno() != int32(syscall.ESTALE) {
		t.Errorf("Mounts of an unknown mount: %v errno %d, want ESTALE", err, r.GetErrno())
	}
}

// TestMountsCgroup lists the host's /sys/fs/cgroup: in the cgroup v1 and
// hybrid layouts a tmpfs with a cgroup filesystem per controller
// beneath; each listed with the host's type and super options.
func TestMountsCgroup(t *testing.T) {
	const dir = "/sys/fs/cgroup"
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("skipped: %v", err)
	}
	want := map[string]mountinfo.Mount{}
	for _, m := range mountinfo.Parse(info) {
		if rel, ok := strings.CutPrefix(m.MountPoint, dir+"/"); ok {
			want[rel] = m
		}
	}
	if len(want) == 0 {
		t.Skip("skipped: nothing is mounted beneath /sys/fs/cgroup here (cgroup v2 only, or no cgroups)")
	}
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: dir, ReadOnly: true}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c, m := session(t, s, dir)
	r, err := c.Mounts(t.Context(), &qtfsv1.MountsRequest{Mount: m})
	if err != nil || r.GetErrno() != 0 {
		t.Fatalf("Mounts: %v errno %d", err, r.GetErrno())
	}
	got := r.GetMounts()
	if len(got) != len(want)+1 || len(got[0].GetPath()) != 0 {
		t.Fatalf("%d mounts, want the holder and %d", len(got), len(want))
	}
	for _, hm := range got[1:] {
		w, ok := want[string(hm.GetPath())]
		if !ok || hm.GetFsType() != w.FSType || hm.GetSuperOptions() != w.SuperOptions || string(hm.GetSource()) != w.Source ||
			hm.GetId() != w.ID || hm.GetMajor() != w.Major || hm.GetMinor() != w.Minor {
			t.Errorf("listed %s: %v; the host has %+v", hm.GetPath(), hm, w)
		}
	}
}
