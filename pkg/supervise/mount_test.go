package supervise

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// mountProg makes the mount calls of TestMountCarriedOut in the directory
// it runs in (served) and in SUPERVISE_PATHS's second path (local), and
// prints each call's errno.
func mountProg() int {
	paths := strings.Split(os.Getenv("SUPERVISE_PATHS"), ":")
	served, local := paths[0], paths[1]
	res := map[string]result{}
	do := func(name string, err error) {
		r := result{Call: name}
		if err != nil {
			r.Errno = int(err.(syscall.Errno))
		}
		res[name] = r
	}
	probe := func(name, p string) {
		var stx unix.Statx_t
		err := unix.Statx(unix.AT_FDCWD, p, unix.AT_STATX_DONT_SYNC, 0, &stx)
		r := result{Call: name}
		if err != nil {
			r.Errno = int(err.(syscall.Errno))
		}
		if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
			r.Type = 1 // a mount root
		}
		res[name] = r
	}
	probe("probe of a host mount root", served+"/t")
	probe("probe of a directory", served+"/src")
	probe("probe of /", "/")
	do("tmpfs", unix.Mount("tmpfs", served+"/t", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=755"))
	do("overlay", unix.Mount("overlay", "merged", "overlay", 0, `index=off,lowerdir=l\:1:l2,upperdir=u,workdir=w`))
	do("overlay without a layer", unix.Mount("overlay", "merged", "overlay", 0, "lowerdir=nowhere"))
	do("bind", unix.Mount(served+"/src", served+"/t", "", unix.MS_BIND|unix.MS_REC, ""))
	do("private", unix.Mount("", served+"/t", "", unix.MS_PRIVATE, ""))
	do("refused", unix.Mount("tmpfs", served+"/refused", "tmpfs", 0, ""))
	do("umount2", unix.Unmount(served+"/t", unix.MNT_DETACH))
	do("local", unix.Mount("x", local, "nosuchfs-qtfs", 0, ""))
	do("missing target", unix.Mount("tmpfs", served+"/missing", "tmpfs", 0, ""))
	_, err := unix.Fsopen("tmpfs", 0)
	do("fsopen", err)
	// A thread of its own mount namespace mounts privately, as dockerd's
	// chrootarchive children do: the call runs as it is.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			do("own namespace", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			do("own namespace", err)
			return
		}
		do("own namespace", unix.Mount("tmpfs", served+"/t", "tmpfs", 0, ""))
	}()
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

// fakeMounter serves the files beneath dir and records what it is asked,
// with each file named by its path.
type fakeMounter struct {
	dir   string
	mu    sync.Mutex
	calls []string
}

func (m *fakeMounter) name(f *os.File) string {
	if f == nil {
		return "-"
	}
	p, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if rel, err := filepath.Rel(m.dir, p); err == nil && !strings.HasPrefix(rel, "..") {
		return rel
	}
	return p
}

func (m *fakeMounter) Serves(f *os.File) bool {
	return !strings.HasPrefix(m.name(f), "/")
}

func (m *fakeMounter) Mount(c *MountCall) error {
	var lower []string
	for _, l := range c.Lower {
		lower = append(lower, m.name(l))
	}
	m.record(fmt.Sprintf("mount %s type=%q source=%q flags=%#x bind=%s lower=%v upper=%s work=%s options=%q uid=%d",
		m.name(c.Target), c.FsType, c.Source, c.Flags, m.name(c.Bind), lower, m.name(c.Upper), m.name(c.Work), c.Options, c.UID))
	if filepath.Base(m.name(c.Target)) == "refused" {
		return unix.EPERM
	}
	return nil
}

func (m *fakeMounter) Unmount(c *UnmountCall) error {
	m.record(fmt.Sprintf("umount2 %s flags=%#x", m.name(c.Target), c.Flags))
	return nil
}

// MountRoot says t is a mount root (of the host, as it were).
func (m *fakeMounter) MountRoot(f *os.File) (root, ok bool) {
	if !m.Serves(f) {
		return false, false
	}
	return m.name(f) == "t", true
}

func (m *fakeMounter) record(s string) {
	m.mu.Lock()
	m.calls = append(m.calls, s)
	m.mu.Unlock()
}

// TestMountCarriedOut: mount(2) and umount2(2) of targets the Mounter
// serves reach it decoded, with every path resolved as the caller named
// it and its answer given to the caller; the others run as they are,
// and so do those of a thread in a mount namespace of its own. The new
// mount API fails with ENOSYS.
func TestMountCarriedOut(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mount(2) is carried out only for callers with CAP_SYS_ADMIN")
	}
	served, local := t.TempDir(), t.TempDir()
	for _, d := range []string{"t", "merged", `l:1`, "l2", "u", "w", "src", "refused"} {
		if err := os.Mkdir(filepath.Join(served, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := &fakeMounter{dir: served}
	t.Cleanup(func() { unix.Unmount(served+"/t", unix.MNT_DETACH) }) // only if the test is wrong
	res, stats := supervisedAs(t, "mount", served, Options{Mounter: m}, served, local)
	want := map[string]int{
		"tmpfs": 0, "overlay": 0, "bind": 0, "private": 0, "umount2": 0,
		"refused":                 int(unix.EPERM),
		"overlay without a layer": int(unix.ENOENT),
		"local":                   int(unix.ENODEV),
		"missing target":          int(unix.ENOENT),
		"fsopen":                  int(unix.ENOSYS),
		"own namespace":           0,
	}
	for k, e := range want {
		if r, ok := res[k]; !ok || r.Errno != e {
			t.Errorf("%s: errno %d (%v), want %d", k, r.Errno, ok, e)
		}
	}
	for k, root := range map[string]bool{"probe of a host mount root": true, "probe of a directory": false, "probe of /": true} {
		if r := res[k]; r.Errno != 0 || (r.Type == 1) != root {
			t.Errorf("%s: %+v, want a mount root %v", k, r, root)
		}
	}
	wantCalls := []string{
		`mount t type="tmpfs" source="tmpfs" flags=0x6 bind=- lower=[] upper=- work=- options="size=1m,mode=755" uid=0`,
		`mount merged type="overlay" source="overlay" flags=0x0 bind=- lower=[l:1 l2] upper=u work=w options="index=off" uid=0`,
		`mount t type="" source="" flags=0x5000 bind=src lower=[] upper=- work=- options="" uid=0`,
		`mount t type="" source="" flags=0x40000 bind=- lower=[] upper=- work=- options="" uid=0`,
		`mount refused type="tmpfs" source="tmpfs" flags=0x0 bind=- lower=[] upper=- work=- options="" uid=0`,
		`umount2 t flags=0x2`,
	}
	if !reflect.DeepEqual(m.calls, wantCalls) {
		t.Errorf("the Mounter was asked\n%s\nwant\n%s", strings.Join(m.calls, "\n"), strings.Join(wantCalls, "\n"))
	}
	if stats.Mounts != uint64(len(wantCalls)) {
		t.Errorf("stats %+v: want %d mounts", stats, len(wantCalls))
	}
}

func TestOverlayLayers(t *testing.T) {
	for _, tc := range []struct {
		data, rest string
		layers     map[string][]string
		bad        bool
	}{
		{data: "lowerdir=/a:/b,upperdir=/u,workdir=/w", layers: map[string][]string{
			"lowerdir": {"/a", "/b"}, "upperdir": {"/u"}, "workdir": {"/w"}}},
		{data: `index=off,lowerdir=/a\:x:b,userxattr`, rest: "index=off,userxattr", layers: map[string][]string{
			"lowerdir": {"/a:x", "b"}}},
		{data: `lowerdir=/a\,b,xino=on`, rest: "xino=on", layers: map[string][]string{"lowerdir": {"/a,b"}}},
		{data: "upperdir=/u", bad: true},
		{data: "lowerdir=/a::/b", bad: true},
		{data: "lowerdir=/a,upperdir=/u,upperdir=/v", bad: true},
	} {
		rest, layers, err := overlayLayers(tc.data)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: no error", tc.data)
			}
			continue
		}
		if err != nil || rest != tc.rest || !reflect.DeepEqual(layers, tc.layers) {
			t.Errorf("%q: %q %v %v, want %q %v", tc.data, rest, layers, err, tc.rest, tc.layers)
		}
	}
}

// TestRestartGetsKeptAnswer: a carried-out call whose answer its caller
// did not take is answered from what was kept when it comes again, once.
func TestRestartGetsKeptAnswer(t *testing.T) {
	var r restarts
	n := &notif{Pid: 7}
	n.Data.Nr = unix.SYS_MOUNT
	n.Data.Args = [6]uint64{1, 2, 3, 4, 5, 6}
	if _, ok := r.take(n); ok {
		t.Fatal("an answer kept for nothing")
	}
	r.keep(n, -int32(unix.EPERM))
	other := *n
	other.Pid = 8
	if _, ok := r.take(&other); ok {
		t.Error("another thread's call got the kept answer")
	}
	if e, ok := r.take(n); !ok || e != -int32(unix.EPERM) {
		t.Errorf("restarted call: %d %v, want the kept EPERM", e, ok)
	}
	if _, ok := r.take(n); ok {
		t.Error("the kept answer was given twice")
	}
}
