package fuseclient_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReaddirPlusFromBatch lists a 1000-entry directory and stats every
// entry, as `ls -l` does: READDIRPLUS must be fed from the batched Readdir
// RPC, never from one Lookup RPC per entry.
func TestReaddirPlusFromBatch(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	const n = 1000
	if err := os.Mkdir(tm.host("big"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(tm.host("big", fmt.Sprintf("entry-%04d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Other programs may drop the kernel's caches (drop_caches) during a
	// listing, which costs lookups that are no fault of the client: a
	// listing with too many RPCs is tried again.
	var problems []string
	for attempt := 0; attempt < 3; attempt++ {
		problems = listAndStat(t, tm, "big", n)
		if len(problems) == 0 {
			return
		}
	}
	t.Error(strings.Join(problems, "; "))
}

// listAndStat lists dir, lstat()s every entry and returns what the
// server-side RPC counts show was wrong.
func listAndStat(t *testing.T, tm *testMount, dir string, n int) []string {
	t.Helper()
	if _, err := os.Stat(tm.path(dir)); err != nil {
		t.Fatal(err)
	}
	tm.resetStats()
	start := time.Now()
	entries, err := os.ReadDir(tm.path(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("listed %d entries, want %d", len(entries), n)
	}
	for _, e := range entries {
		var st unix.Stat_t
		if err := unix.Lstat(tm.path(dir, e.Name()), &st); err != nil {
			t.Fatalf("lstat %s: %v", e.Name(), err)
		}
		if st.Size != 1 || st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Fatalf("%s: size %d mode %o", e.Name(), st.Size, st.Mode)
		}
	}
	took := time.Since(start)
	stats := tm.stats()
	t.Logf("listing and stat of %d entries: %v, RPCs %v", n, took, stats)
	var problems []string
	if took > 900*time.Millisecond {
		// The attributes READDIRPLUS gave live 1s; past that the kernel
		// asks again and the counts below mean nothing.
		return []string{fmt.Sprintf("listing took %v, longer than the attribute timeout", took)}
	}
	if got := stats["Lookup"]; got > 2 {
		problems = append(problems, fmt.Sprintf("Lookup RPCs: %d, want ~0 (READDIRPLUS must be fed from the Readdir batch)", got))
	}
	if got := stats["Getattr"]; got > 2 {
		problems = append(problems, fmt.Sprintf("Getattr RPCs: %d, want ~0", got))
	}
	// The first batch comes with the Open; Readdir fetches the rest.
	if got := stats["Open"] + stats["Readdir"]; stats["Open"] != 1 || got > 4 {
		problems = append(problems, fmt.Sprintf("Open %d and Readdir %d RPCs, want one Open and at most 3 Readdir for %d entries",
			stats["Open"], stats["Readdir"], n))
	}
	return problems
}

// TestHardLinksShareIno checks that hard links, made through the mount or
// on the host, show one inode number, which is the host's.
func TestHardLinksShareIno(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	if err := os.WriteFile(tm.path("a"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tm.path("a"), tm.path("b")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.host("c"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(tm.host("c"), tm.host("d")); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{"a", "b"}, {"c", "d"}} {
		t.Run(pair[0]+"+"+pair[1], func(t *testing.T) {
			var s1, s2, h unix.Stat_t
			if err := unix.Lstat(tm.path(pair[0]), &s1); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lstat(tm.path(pair[1]), &s2); err != nil {
				t.Fatal(err)
			}
			if err := unix.Lstat(tm.host(pair[0]), &h); err != nil {
				t.Fatal(err)
			}
			if s1.Ino != s2.Ino {
				t.Errorf("st_ino %d and %d, want one", s1.Ino, s2.Ino)
			}
			if s1.Ino != h.Ino {
				t.Errorf("st_ino %d through the mount, %d on the host", s1.Ino, h.Ino)
			}
			if s1.Nlink != 2 || s2.Nlink != 2 {
				t.Errorf("nlink %d and %d, want 2", s1.Nlink, s2.Nlink)
			}
		})
	}
}

// TestLargeFileRoundTrip writes 64 MiB through the mount and reads it back,
// through the mount and on the host, with the same SHA-256.
func TestLargeFileRoundTrip(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	const size = 64 << 20
	rng := rand.New(rand.NewPCG(1, 2))
	want := sha256.New()
	f, err := os.Create(tm.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	start := time.Now()
	for written := 0; written < size; written += len(buf) {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for j := range 8 {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		want.Write(buf)
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("write at %d: %v", written, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	t.Logf("wrote 64 MiB in %v", time.Since(start))

	sum := func(p string) []byte {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			t.Fatalf("read %s: %v", p, err)
		}
		if n != size {
			t.Fatalf("read %d bytes of %s, want %d", n, p, size)
		}
		return h.Sum(nil)
	}
	start = time.Now()
	viaMount := sum(tm.path("big"))
	t.Logf("read 64 MiB in %v", time.Since(start))
	if !bytes.Equal(viaMount, want.Sum(nil)) {
		t.Errorf("SHA-256 through the mount %x, written %x", viaMount, want.Sum(nil))
	}
	if onHost := sum(tm.host("big")); !bytes.Equal(onHost, want.Sum(nil)) {
		t.Errorf("SHA-256 on the host %x, written %x", onHost, want.Sum(nil))
	}
}

// TestUnmountLeavesNoMount stops the serving child and checks the mount is
// gone and the mountpoint usable.
func TestUnmountLeavesNoMount(t *testing.T) {
	tm := startMount(t, mountCfg{})
	opts, fstype, err := mountOptions(tm.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if fstype != "fuse.qtfs" {
		t.Errorf("mount type %q, want fuse.qtfs", fstype)
	}
	t.Logf("mount options %s", opts)
	if err := os.WriteFile(tm.path("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tm.stop()
	if t.Failed() {
		return
	}
	if mounted(tm.mnt) {
		t.Fatalf("%s still mounted", tm.mnt)
	}
	entries, err := os.ReadDir(tm.mnt)
	if err != nil {
		t.Fatalf("mountpoint after unmount: %v", err)
	}
	if len(entries) != 0 {
		t.Errorf("mountpoint holds %d entries after unmount, want 0", len(entries))
	}
	if _, err := os.Stat(tm.host("f")); err != nil {
		t.Errorf("file written through the mount: %v", err)
	}
}

// TestCacheNoneSeesHostChanges checks that with cache=none a change made on
// the host is seen at once: content, size, new and removed names.
func TestCacheNoneSeesHostChanges(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "none"})
	if err := os.WriteFile(tm.host("f"), []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(tm.path(name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read("f"); got != "one" {
		t.Fatalf("read %q, want one", got)
	}
	// Keep a descriptor open: the kernel must not keep pages for it.
	held, err := os.Open(tm.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := os.WriteFile(tm.host("f"), []byte("two, longer"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := read("f"); got != "two, longer" {
		t.Errorf("after a host change read %q, want %q", got, "two, longer")
	}
	if fi, err := os.Stat(tm.path("f")); err != nil || fi.Size() != int64(len("two, longer")) {
		t.Errorf("stat after a host change: %v, %v", fi, err)
	}
	b := make([]byte, 64)
	if n, err := held.ReadAt(b, 0); string(b[:n]) != "two, longer" {
		t.Errorf("read through a descriptor opened before the change: %q, %v", b[:n], err)
	}

	if _, err := os.Stat(tm.path("new")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stat of a missing name: %v", err)
	}
	if err := os.WriteFile(tm.host("new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tm.path("new")); err != nil {
		t.Errorf("a name created on the host is not seen at once: %v", err)
	}
	if err := os.Remove(tm.host("new")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tm.path("new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a name removed on the host is still seen: %v", err)
	}
}

// TestReadOnly checks that a read-only mount refuses changes and says so in
// the mount table.
func TestReadOnly(t *testing.T) {
	export := t.TempDir()
	if err := os.WriteFile(export+"/f", []byte("ro"), 0o644); err != nil {
		t.Fatal(err)
	}
	tm := startMount(t, mountCfg{export: export, readOnly: true})
	opts, _, err := mountOptions(tm.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(opts, "ro") {
		t.Errorf("mount options %q, want ro", opts)
	}
	if b, err := os.ReadFile(tm.path("f")); err != nil || string(b) != "ro" {
		t.Errorf("read: %q, %v", b, err)
	}
	for name, op := range map[string]func() error{
		"create": func() error { return os.WriteFile(tm.path("g"), nil, 0o644) },
		"write":  func() error { return os.WriteFile(tm.path("f"), []byte("x"), 0o644) },
		"mkdir":  func() error { return os.Mkdir(tm.path("d"), 0o755) },
		"remove": func() error { return os.Remove(tm.path("f")) },
		"chmod":  func() error { return os.Chmod(tm.path("f"), 0o600) },
	} {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
}

// TestSpecialFiles creates a fifo, a socket node, a device node and a
// symlink through the mount and checks what the host got.
func TestSpecialFiles(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	cases := []struct {
		name string
		make func(p string) error
		mode uint32
		rdev uint64
	}{
		{"fifo", func(p string) error { return unix.Mkfifo(p, 0o640) }, unix.S_IFIFO | 0o640, 0},
		{"socket", func(p string) error { return unix.Mknod(p, unix.S_IFSOCK|0o600, 0) }, unix.S_IFSOCK | 0o600, 0},
		{"chardev", func(p string) error { return unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))) }, unix.S_IFCHR | 0o600, unix.Mkdev(1, 3)},
		{"blockdev", func(p string) error { return unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(7, 1234))) }, unix.S_IFBLK | 0o600, unix.Mkdev(7, 1234)},
		{"symlink", func(p string) error { return os.Symlink("../some/where", p) }, unix.S_IFLNK | 0o777, 0},
	}
	old := unix.Umask(0)
	defer unix.Umask(old)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.make(tm.path(tc.name)); err != nil {
				t.Fatal(err)
			}
			for where, p := range map[string]string{"mount": tm.path(tc.name), "host": tm.host(tc.name)} {
				var st unix.Stat_t
				if err := unix.Lstat(p, &st); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				if st.Mode != tc.mode || st.Rdev != tc.rdev {
					t.Errorf("%s: mode %o rdev %#x, want %o %#x", where, st.Mode, st.Rdev, tc.mode, tc.rdev)
				}
			}
		})
	}
	if target, err := os.Readlink(tm.path("symlink")); err != nil || target != "../some/where" {
		t.Errorf("readlink: %q, %v", target, err)
	}
}

// TestCallerIdentity runs commands as other users through the mount: new
// files belong to the caller on the host, and a directory the caller may
// write only through a supplementary group is writable.
func TestCallerIdentity(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto", allowOther: true})
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Skipf("skipped: no touch(1) to run as another user: %v", err)
	}
	for _, d := range []struct {
		name string
		gid  int
		mode os.FileMode
	}{{"open", 0, 0o777}, {"group", 4242, 0o770}} {
		if err := os.Mkdir(tm.host(d.name), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tm.host(d.name), 0, d.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(tm.host(d.name), d.mode); err != nil {
			t.Fatal(err)
		}
	}
	// The mountpoint lies in a private test directory: let others in.
	if err := os.Chmod(filepath.Dir(tm.mnt), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		file    string
		uid     uint32
		gid     uint32
		groups  []uint32
		wantErr bool
	}{
		{"owner", "open/u", 12345, 23456, nil, false},
		{"supplementary group", "group/g", 12345, 23456, []uint32{4242}, false},
		{"no group", "group/n", 12345, 23456, nil, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(touch, tm.path(tc.file))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: tc.uid, Gid: tc.gid, Groups: tc.groups}}
			out, err := cmd.CombinedOutput()
			if tc.wantErr {
				if err == nil {
					t.Fatalf("touch succeeded, want permission denied")
				}
				return
			}
			if err != nil {
				t.Fatalf("touch: %v: %s", err, out)
			}
			var st unix.Stat_t
			if err := unix.Lstat(tm.host(tc.file), &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != tc.uid || st.Gid != tc.gid {
				t.Errorf("host file owned by %d:%d, want %d:%d", st.Uid, st.Gid, tc.uid, tc.gid)
			}
		})
	}
}

// TestFlockWait checks a blocking flock(2): it waits while another open
// file holds the lock and gets it once that one lets go.
func TestFlockWait(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	if err := os.WriteFile(tm.path("lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f1, err := os.Open(tm.path("lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	f2, err := os.Open(tm.path("lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := unix.Flock(int(f1.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("second non-blocking flock: %v, want EWOULDBLOCK", err)
	}
	got := make(chan error, 1)
	go func() { got <- unix.Flock(int(f2.Fd()), unix.LOCK_EX) }()
	select {
	case err := <-got:
		t.Fatalf("blocking flock returned while the lock was held: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	if err := unix.Flock(int(f1.Fd()), unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("blocking flock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking flock still waiting 10s after the lock was released")
	}
}

// TestProcExport mounts a directory of the host's /proc: the cache policy
// defaults to none, files of size 0 read their content, and a small file
// is read by the Open RPC itself.
func TestProcExport(t *testing.T) {
	tm := startMount(t, mountCfg{export: "/proc", sub: "sys/kernel"})
	want, err := os.ReadFile(tm.host("ostype"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(tm.path("ostype"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 0 {
		t.Logf("ostype reports size %d", fi.Size())
	}
	tm.resetStats()
	got, err := os.ReadFile(tm.path("ostype"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("read %q through the mount, %q on the host", got, want)
	}
	stats := tm.stats()
	if stats["Open"] != 1 || stats["Read"] != 0 {
		t.Errorf("RPCs for reading a small proc file: %v, want one Open and no Read", stats)
	}
	// Read again: fresh content from the server, not the open's bytes.
	f, err := os.Open(tm.path("ostype"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 64)
	for i := range 2 {
		n, err := f.ReadAt(b, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if !bytes.Equal(b[:n], want) {
			t.Errorf("pread %d: %q, want %q", i, b[:n], want)
		}
	}
}

// TestDirectIOWrites checks that with cache=none each write(2) reaches the
// server as one Write RPC, as cgroup files need.
func TestDirectIOWrites(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "none"})
	f, err := os.Create(tm.path("w"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tm.resetStats()
	sizes := []int{1, 4096, 300 << 10, 1 << 20}
	total := 0
	for _, n := range sizes {
		if _, err := f.Write(bytes.Repeat([]byte{'x'}, n)); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	stats := tm.stats()
	t.Logf("RPCs: %v", stats)
	if got := stats["Write"]; got != len(sizes) {
		t.Errorf("Write RPCs: %d for %d write(2) calls", got, len(sizes))
	}
	if fi, err := os.Stat(tm.host("w")); err != nil || fi.Size() != int64(total) {
		t.Errorf("host file: %v, %v; want size %d", fi, err, total)
	}
}

// TestWriteClearsSetuid checks that a write by a user who may write a
// set-user-ID file but is not privileged clears the bit on the host.
func TestWriteClearsSetuid(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto", allowOther: true})
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skipf("skipped: no sh(1) to run as another user: %v", err)
	}
	if err := os.Chmod(filepath.Dir(tm.mnt), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.host("suid"), []byte("#"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tm.host("suid"), 0o4777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sh, "-c", `printf x >> "$1"`, "sh", tm.path("suid"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 12345, Gid: 12345}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("write as another user: %v: %s", err, out)
	}
	var st unix.Stat_t
	if err := unix.Stat(tm.host("suid"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_ISUID != 0 {
		t.Errorf("host mode %o after an unprivileged write: set-user-ID kept", st.Mode)
	}
	if st.Size != 2 {
		t.Errorf("host size %d, want 2", st.Size)
	}
}

// TestReadaheadRaised checks that a cached mount lets the kernel read
// ahead as far as one read may go (1 MiB), not the default 128 KiB.
func TestReadaheadRaised(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	dev := ""
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == tm.mnt {
			dev = f[2]
		}
	}
	b, err := os.ReadFile("/sys/class/bdi/" + dev + "/read_ahead_kb")
	if err != nil {
		t.Skipf("skipped: no backing device info for %s in sysfs: %v", dev, err)
	}
	if got := strings.TrimSpace(string(b)); got != "1024" {
		t.Errorf("read_ahead_kb of the mount = %s, want 1024", got)
	}
}

// TestHostReplacesFile checks that a file the host replaces (a new file
// renamed over it) within the attribute timeout reads as the new file: the
// open of the old inode is refused as stale and the kernel looks the name
// up again.
func TestHostReplacesFile(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	if err := os.WriteFile(tm.host("a"), []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(tm.path("a")); err != nil || string(b) != "old" {
		t.Fatalf("first read: %q, %v", b, err)
	}
	// Cache the old file's attributes (the read invalidated its atime).
	var old unix.Stat_t
	if err := unix.Stat(tm.path("a"), &old); err != nil {
		t.Fatal(err)
	}
	const fresh = "new and longer content"
	if err := os.WriteFile(tm.host("b"), []byte(fresh), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tm.host("b"), tm.host("a")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := os.ReadFile(tm.path("a"))
	if time.Since(start) > 900*time.Millisecond {
		t.Skip("skipped: too slow to stay within the attribute timeout")
	}
	if err != nil || string(b) != fresh {
		t.Errorf("read after the host replaced the file: %q, %v; want %q", b, err, fresh)
	}
	var st, host unix.Stat_t
	if err := unix.Stat(tm.path("a"), &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(tm.host("a"), &host); err != nil {
		t.Fatal(err)
	}
	if st.Ino != host.Ino || st.Size != host.Size {
		t.Errorf("stat after the read: ino %d size %d, host ino %d size %d", st.Ino, st.Size, host.Ino, host.Size)
	}
}

// TestCachePolicies reads a file twice, the second time after the
// one-second timeouts of cache=auto ran out, and counts the RPCs of the
// second read: strict asks nothing but Open, auto looks the name up again
// but keeps the unchanged file's pages, none reads from the host again.
func TestCachePolicies(t *testing.T) {
	for _, tc := range []struct {
		cache       string
		wantLookups bool
		wantReads   bool
	}{
		{"strict", false, false},
		{"auto", true, false},
		{"none", true, true},
	} {
		t.Run(tc.cache, func(t *testing.T) {
			tm := startMount(t, mountCfg{cache: tc.cache})
			if err := os.WriteFile(tm.host("f"), bytes.Repeat([]byte("x"), 10000), 0o644); err != nil {
				t.Fatal(err)
			}
			read := func() {
				t.Helper()
				fd, err := unix.Open(tm.path("f"), unix.O_RDONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
				b := make([]byte, 20000)
				if n, err := unix.Read(fd, b); err != nil || n != 10000 {
					t.Fatalf("read: %d, %v", n, err)
				}
			}
			// Other programs on the machine may drop the page cache
			// (echo 3 > /proc/sys/vm/drop_caches) between the reads:
			// a run that saw more RPCs than the policy allows is tried
			// again, a policy that keeps nothing fails every time.
			var problems []string
			for attempt := 0; attempt < 3; attempt++ {
				read()
				time.Sleep(1200 * time.Millisecond)
				tm.resetStats()
				read()
				stats := tm.stats()
				t.Logf("RPCs of the second read: %v", stats)
				problems = problems[:0]
				if stats["Open"] != 1 {
					problems = append(problems, fmt.Sprintf("Open RPCs %d, want 1", stats["Open"]))
				}
				if got := stats["Lookup"] > 0; got != tc.wantLookups {
					problems = append(problems, fmt.Sprintf("name looked up again: %v, want %v", got, tc.wantLookups))
				}
				if got := stats["Read"] > 0; got != tc.wantReads {
					problems = append(problems, fmt.Sprintf("data read from the host again: %v, want %v", got, tc.wantReads))
				}
				if len(problems) == 0 {
					return
				}
			}
			t.Error(strings.Join(problems, "; "))
		})
	}
}

// TestOpTimeout checks that a server that never answers costs a caller
// the mount's operation timeout and an EIO, not a hang.
func TestOpTimeout(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "none", opTimeout: "1s", stall: "Read"})
	if err := os.WriteFile(tm.host("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := os.ReadFile(tm.path("f"))
	took := time.Since(start)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read from a stalled server: %v, want EIO", err)
	}
	if took < 900*time.Millisecond || took > 10*time.Second {
		t.Errorf("read from a stalled server took %v, want about the 1s timeout", took)
	}
	// The mount still works for everything else.
	if _, err := os.Stat(tm.path("f")); err != nil {
		t.Errorf("stat after the timeout: %v", err)
	}
}

// aclValue is a system.posix_acl_access value: user::rw-, user:12345:r--,
// group::r--, mask::r--, other::r--.
func aclValue() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2) // POSIX_ACL_XATTR_VERSION
	for _, e := range [][3]uint32{{0x01, 6, math.MaxUint32}, {0x02, 4, 12345}, {0x04, 4, math.MaxUint32}, {0x10, 4, math.MaxUint32}, {0x20, 4, math.MaxUint32}} {
		b = binary.LittleEndian.AppendUint16(b, uint16(e[0]))
		b = binary.LittleEndian.AppendUint16(b, uint16(e[1]))
		b = binary.LittleEndian.AppendUint32(b, e[2])
	}
	return b
}

// TestXattrPassThrough sets extended attributes, a POSIX ACL among them,
// through the mount and on the host, and reads them on the other side.
func TestXattrPassThrough(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	for _, tc := range []struct {
		name, attr string
		value      []byte
	}{
		{"user", "user.qtfs", []byte("value")},
		{"acl", "system.posix_acl_access", aclValue()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, dir := range []struct{ name, set, get string }{
				{"mount to host", tm.path(tc.name + "1"), tm.host(tc.name + "1")},
				{"host to mount", tm.host(tc.name + "2"), tm.path(tc.name + "2")},
			} {
				if err := os.WriteFile(dir.set, nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := unix.Setxattr(dir.set, tc.attr, tc.value, 0); err != nil {
					t.Fatalf("%s: setxattr: %v", dir.name, err)
				}
				buf := make([]byte, 256)
				n, err := unix.Getxattr(dir.get, tc.attr, buf)
				if err != nil || !bytes.Equal(buf[:n], tc.value) {
					t.Errorf("%s: getxattr: %x, %v; want %x", dir.name, buf[:n], err, tc.value)
				}
			}
		})
	}
}

// TestCopyFileRange copies between two files of the mount on the host: the
// data never crosses the connection.
func TestCopyFileRange(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if err := os.WriteFile(tm.host("src"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(tm.path("src"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(tm.path("dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	tm.resetStats()
	copied := 0
	for copied < len(data) {
		n, err := unix.CopyFileRange(int(src.Fd()), nil, int(dst.Fd()), nil, len(data)-copied, 0)
		if err != nil {
			t.Fatalf("copy_file_range: %v", err)
		}
		if n == 0 {
			break
		}
		copied += n
	}
	stats := tm.stats()
	if stats["CopyFileRange"] == 0 || stats["Read"] != 0 || stats["Write"] != 0 {
		t.Errorf("RPCs of copy_file_range: %v, want CopyFileRange and no Read or Write", stats)
	}
	if got, err := os.ReadFile(tm.host("dst")); err != nil || !bytes.Equal(got, data) {
		t.Errorf("copy on the host: %d bytes, %v; want %d equal bytes", len(got), err, len(data))
	}
}
