package fuseclient_test

// Tests of the client's own caches (cache.go): directory listings that
// answer LOOKUP, the capability attribute of new files, and of the RPCs
// the client no longer sends (Flush of read-only files). Each counts the
// server-side RPCs and checks that what the mount shows stays right.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// retryFast runs f up to three times while it reports that it ran too
// slowly to be judged (past a cache timeout: another test or program hogs
// the machine); a run that ran in time and failed fails the test.
func retryFast(t *testing.T, f func() (problems []string, slow bool)) {
	t.Helper()
	var problems []string
	for attempt := 0; attempt < 3; attempt++ {
		var slow bool
		problems, slow = f()
		if !slow {
			if len(problems) > 0 {
				t.Error(strings.Join(problems, "; "))
			}
			return
		}
		t.Logf("attempt %d too slow to judge: %v", attempt+1, problems)
	}
	t.Skipf("skipped: the machine is too slow to stay within the one-second cache timeouts: %v", problems)
}

// TestListingAnswersLookups stats every file of a directory the kernel has
// no entries of (as `stat` after drop_caches, or a build, does): after a
// few Lookup RPCs the client lists the directory once and answers the
// rest itself, with the host's attributes, and answers a missing name
// with ENOENT.
func TestListingAnswersLookups(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	const n = 400
	if err := os.Mkdir(tm.host("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(tm.host("d", fmt.Sprintf("f%03d", i)), bytes.Repeat([]byte("x"), i), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	retryFast(t, func() ([]string, bool) {
		// Entries the kernel keeps from an earlier attempt would hide
		// the lookups: wait until they expired.
		time.Sleep(1100 * time.Millisecond)
		tm.resetStats()
		start := time.Now()
		for i := range n {
			name := fmt.Sprintf("f%03d", i)
			var st, host unix.Stat_t
			if err := unix.Lstat(tm.path("d", name), &st); err != nil {
				t.Fatalf("lstat %s: %v", name, err)
			}
			if err := unix.Lstat(tm.host("d", name), &host); err != nil {
				t.Fatal(err)
			}
			if st.Ino != host.Ino || st.Size != host.Size || st.Mode != host.Mode || st.Nlink != host.Nlink ||
				st.Mtim != host.Mtim || st.Uid != host.Uid {
				t.Fatalf("%s through the mount: ino %d size %d mode %o mtime %v; host: %d %d %o %v",
					name, st.Ino, st.Size, st.Mode, st.Mtim, host.Ino, host.Size, host.Mode, host.Mtim)
			}
		}
		if _, err := os.Lstat(tm.path("d", "missing")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("lstat of a missing name: %v", err)
		}
		took := time.Since(start)
		stats := tm.stats()
		t.Logf("%d lstats in %v: RPCs %v", n, took, stats)
		if took > 900*time.Millisecond {
			return []string{fmt.Sprintf("took %v", took)}, true
		}
		var problems []string
		if stats["Open"] < 1 {
			problems = append(problems, "the directory was never listed")
		}
		if got := stats["Lookup"]; got > n/4 {
			problems = append(problems, fmt.Sprintf("Lookup RPCs %d for %d names, want far fewer", got, n))
		}
		return problems, false
	})
}

// TestListingFollowsOwnChanges checks that a listing stays right through
// the client's own changes: names created in a new directory need no
// lookup, a write shows its new size, a removed or renamed name is gone,
// and a new name is there.
func TestListingFollowsOwnChanges(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	retryFast(t, func() ([]string, bool) {
		dir := fmt.Sprintf("new-%d", time.Now().UnixNano())
		start := time.Now()
		if err := os.Mkdir(tm.path(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		tm.resetStats()
		for i := range 20 {
			f, err := os.OpenFile(tm.path(dir, fmt.Sprintf("c%02d", i)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		created := tm.stats()
		// Changes through the mount, each checked on the mount and on the
		// host.
		if err := os.WriteFile(tm.path(dir, "c00"), []byte("grown"), 0o644); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(tm.path(dir, "c00")); err != nil || fi.Size() != 5 {
			t.Fatalf("lstat after a write: %v, %v", fi, err)
		}
		if err := os.Remove(tm.path(dir, "c01")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(tm.path(dir, "c01")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("lstat of a removed name: %v", err)
		}
		if err := os.Rename(tm.path(dir, "c02"), tm.path(dir, "renamed")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(tm.path(dir, "c02")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("lstat of a renamed name: %v", err)
		}
		if _, err := os.Lstat(tm.path(dir, "renamed")); err != nil {
			t.Fatalf("lstat of the new name: %v", err)
		}
		if err := os.Chmod(tm.path(dir, "c03"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(tm.path(dir, "c04"), tm.path(dir, "link")); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		// Past the kernel's entries and attributes, through the client's
		// listing (if it still is valid) or the server.
		time.Sleep(1100 * time.Millisecond)
		for name, want := range map[string]struct {
			size  int64
			mode  os.FileMode
			nlink uint64
		}{
			"c00": {5, 0o644, 1}, "c03": {0, 0o600, 1}, "c04": {0, 0o644, 2}, "link": {0, 0o644, 2}, "renamed": {0, 0o644, 1},
		} {
			var st unix.Stat_t
			if err := unix.Lstat(tm.path(dir, name), &st); err != nil {
				t.Fatalf("lstat %s: %v", name, err)
			}
			if st.Size != want.size || os.FileMode(st.Mode&0o777) != want.mode || st.Nlink != want.nlink {
				t.Errorf("%s: size %d mode %o nlink %d, want %d %o %d", name, st.Size, st.Mode&0o777, st.Nlink, want.size, want.mode, want.nlink)
			}
		}
		ents, err := os.ReadDir(tm.path(dir))
		if err != nil || len(ents) != 20 {
			t.Errorf("listing after the changes: %d entries, %v; want 20", len(ents), err)
		}
		t.Logf("RPCs of 20 creates in a new directory: %v (all in %v)", created, took)
		if took > 900*time.Millisecond {
			return []string{fmt.Sprintf("took %v", took)}, true
		}
		if created["Lookup"] != 0 {
			return []string{fmt.Sprintf("%d Lookup RPCs for names created in a new directory, want 0", created["Lookup"])}, false
		}
		return nil, false
	})
}

// TestListingSeesHostChanges checks that changes made on the host in a
// listed directory show through the mount once the one-second entry
// timeout has passed, and at once where the client learns of them (a
// file replaced behind a listed name opens as the new file).
func TestListingSeesHostChanges(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	if err := os.Mkdir(tm.host("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := os.WriteFile(tm.host("d", fmt.Sprintf("f%02d", i)), []byte("old"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	scan := func() {
		for i := range 50 {
			if _, err := os.Lstat(tm.path("d", fmt.Sprintf("f%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	tm.resetStats()
	scan()
	// Let the background listing land, then look it up again so that it
	// is used.
	time.Sleep(100 * time.Millisecond)
	if st := tm.stats(); st["Open"] < 1 {
		t.Logf("the directory was not listed (RPCs %v): the checks below test the server path", st)
	}

	const fresh = "replaced by the host"
	if err := os.WriteFile(tm.host("d", "tmp"), []byte(fresh), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tm.host("d", "tmp"), tm.host("d", "f07")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tm.host("d", "f08")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.host("d", "new"), []byte("n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A replaced file opens as the new one, whatever the caches say.
	if b, err := os.ReadFile(tm.path("d", "f07")); err != nil || string(b) != fresh {
		t.Errorf("read of a file the host replaced: %q, %v; want %q", b, err, fresh)
	}
	time.Sleep(1100 * time.Millisecond)
	if _, err := os.Lstat(tm.path("d", "f08")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a name removed on the host is still there after the timeout: %v", err)
	}
	if b, err := os.ReadFile(tm.path("d", "new")); err != nil || string(b) != "n" {
		t.Errorf("a name created on the host is not there after the timeout: %q, %v", b, err)
	}
	var st, host unix.Stat_t
	if err := unix.Lstat(tm.path("d", "f07"), &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(tm.host("d", "f07"), &host); err != nil {
		t.Fatal(err)
	}
	if st.Ino != host.Ino || st.Size != host.Size {
		t.Errorf("replaced file: ino %d size %d, host %d %d", st.Ino, st.Size, host.Ino, host.Size)
	}
}

// TestNoListingWithCacheNone checks that cache=none asks the server for
// every name, however many are looked up.
func TestNoListingWithCacheNone(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "none"})
	for i := range 40 {
		if err := os.WriteFile(tm.host(fmt.Sprintf("f%02d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tm.resetStats()
	for i := range 40 {
		if _, err := os.Lstat(tm.path(fmt.Sprintf("f%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Lstat(tm.path("f99")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	st := tm.stats()
	if st["Open"]+st["Readdir"] != 0 || st["Lookup"] < 41 {
		t.Errorf("cache=none: RPCs %v, want a Lookup per name and no listing", st)
	}
}

// TestFlushOnlyForWriters checks that closing a read-only file costs no
// Flush RPC, nor does closing a written one on a local disk filesystem
// (close(2) there reports nothing), and that closing a written file on a
// filesystem whose close may fail (overlayfs here) does.
func TestFlushOnlyForWriters(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	if err := os.WriteFile(tm.host("f"), []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	tm.resetStats()
	for range 3 {
		if b, err := os.ReadFile(tm.path("f")); err != nil || string(b) != "data" {
			t.Fatalf("read: %q, %v", b, err)
		}
	}
	if st := tm.stats(); st["Flush"] != 0 {
		t.Errorf("closing read-only files: %d Flush RPCs, want 0", st["Flush"])
	}
	tm.resetStats()
	if err := os.WriteFile(tm.path("f"), []byte("new data"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st := tm.stats(); st["Flush"] != 0 {
		t.Errorf("closing a written file on a local filesystem: %d Flush RPCs, want 0", st["Flush"])
	}
	if b, err := os.ReadFile(tm.host("f")); err != nil || string(b) != "new data" {
		t.Errorf("host content: %q, %v", b, err)
	}

	// An overlayfs mounted inside the export on the host.
	work := t.TempDir()
	for _, d := range []string{"lower", "upper", "work"} {
		if err := os.Mkdir(filepath.Join(work, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ov := tm.host("ov")
	if err := os.Mkdir(ov, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := "lowerdir=" + filepath.Join(work, "lower") + ",upperdir=" + filepath.Join(work, "upper") + ",workdir=" + filepath.Join(work, "work")
	if err := unix.Mount("overlay", ov, "overlay", 0, opts); err != nil {
		t.Skipf("skipped the overlayfs half: mount overlay: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ov, unix.MNT_DETACH) })
	tm.resetStats()
	if err := os.WriteFile(tm.path("ov", "g"), []byte("over"), 0o644); err != nil {
		t.Fatal(err)
	}
	if st := tm.stats(); st["Flush"] != 1 {
		t.Errorf("closing a written file on overlayfs: %d Flush RPCs, want 1", st["Flush"])
	}
	if b, err := os.ReadFile(filepath.Join(work, "upper", "g")); err != nil || string(b) != "over" {
		t.Errorf("host content: %q, %v", b, err)
	}
}

// capability is a security.capability value (VFS_CAP_REVISION_2) that
// grants CAP_NET_RAW (13), effective.
func capability() []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x02000000|1) // revision 2, effective
	b = binary.LittleEndian.AppendUint32(b, 1<<13)           // permitted, low word
	b = binary.LittleEndian.AppendUint32(b, 0)               // inheritable, low word
	b = binary.LittleEndian.AppendUint32(b, 0)               // permitted, high word
	return binary.LittleEndian.AppendUint32(b, 0)            // inheritable, high word
}

// TestCapabilityOfNewFiles checks that writing files this client just
// created costs no Getxattr RPC (the kernel asks for security.capability
// before every write), that a capability set through the mount reads
// back, and that a write still removes it, as on the host.
func TestCapabilityOfNewFiles(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	tm.resetStats()
	f, err := os.OpenFile(tm.path("new"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := f.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if st := tm.stats(); st["Getxattr"] != 0 || st["Write"] != 3 {
		t.Errorf("three writes to a new file: RPCs %v, want 3 Write and no Getxattr", st)
	}

	caps := capability()
	if err := unix.Setxattr(tm.path("new"), "security.capability", caps, 0); err != nil {
		t.Fatalf("set a capability through the mount: %v", err)
	}
	got := make([]byte, 64)
	n, err := unix.Getxattr(tm.path("new"), "security.capability", got)
	if err != nil || !bytes.Equal(got[:n], caps) {
		t.Fatalf("capability read back through the mount: %x, %v; want %x", got[:n], err, caps)
	}
	if n, err := unix.Getxattr(tm.host("new"), "security.capability", got); err != nil || !bytes.Equal(got[:n], caps) {
		t.Fatalf("capability on the host: %x, %v", got[:n], err)
	}
	f, err = os.OpenFile(tm.path("new"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := unix.Getxattr(tm.host("new"), "security.capability", got); !errors.Is(err, unix.ENODATA) {
		t.Errorf("capability on the host after a write: %v, want ENODATA (a write removes it)", err)
	}
	if _, err := unix.Getxattr(tm.path("new"), "security.capability", got); !errors.Is(err, unix.ENODATA) {
		t.Errorf("capability through the mount after a write: %v, want ENODATA", err)
	}
}

// TestSplitTransfers writes and reads a file in transfers large enough to
// go out as several RPCs at once, at offsets that do not fall on the
// parts' edges and across the end of the file, and compares with the host.
func TestSplitTransfers(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	const size = 3<<20 + 12345
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + i>>11)
	}
	fd, err := unix.Open(tm.path("big"), unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	tm.resetStats()
	// One 1 MiB write at an odd offset, then the rest around it.
	for _, w := range [][2]int{{777, 1<<20 + 777}, {0, 777}, {1<<20 + 777, size}} {
		if n, err := unix.Pwrite(fd, want[w[0]:w[1]], int64(w[0])); err != nil || n != w[1]-w[0] {
			t.Fatalf("pwrite [%d,%d): %d, %v", w[0], w[1], n, err)
		}
	}
	unix.Close(fd)
	if st := tm.stats(); st["Write"] < 5 {
		t.Errorf("writes of 1 MiB went out as %d Write RPCs, want several per write", st["Write"])
	}
	host, err := os.ReadFile(tm.host("big"))
	if err != nil || !bytes.Equal(host, want) {
		t.Fatalf("host content differs (%d bytes, %v)", len(host), err)
	}
	// Direct reads through the mount (O_DIRECT skips the page cache, so
	// each read is one FUSE READ of the size asked).
	fd, err = unix.Open(tm.path("big"), unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Skipf("skipped: O_DIRECT open: %v", err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 1<<20+4096)
	for _, off := range []int64{0, 1 << 20, 3 << 20, 3<<20 + 8192, size - 4096, size} {
		n, err := unix.Pread(fd, buf[:1<<20], off)
		if err != nil {
			t.Fatalf("pread at %d: %v", off, err)
		}
		end := min(off+1<<20, size)
		if int64(n) != end-off || !bytes.Equal(buf[:n], want[off:end]) {
			t.Fatalf("pread of 1 MiB at %d: %d bytes, want %d, same content %v", off, n, end-off, bytes.Equal(buf[:n], want[off:off+int64(n)]))
		}
	}
}

// TestDirChangesNeedNoGetattr checks that creating and removing files
// costs one call each: the kernel's permission check of the changed
// directory (default_permissions) is answered from the directory's
// attributes the server sent with the change, and stat of the directory
// afterwards shows the host's mtime and link count.
func TestDirChangesNeedNoGetattr(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	const n = 40
	retryFast(t, func() ([]string, bool) {
		dir := fmt.Sprintf("dc-%d", time.Now().UnixNano())
		if err := os.Mkdir(tm.path(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		tm.resetStats()
		start := time.Now()
		for i := range n {
			if err := unix.Mkdir(tm.path(dir, fmt.Sprintf("d%02d", i)), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			if err := unix.Rmdir(tm.path(dir, fmt.Sprintf("d%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
		for i := range n {
			fd, err := unix.Open(tm.path(dir, fmt.Sprintf("f%02d", i)), unix.O_CREAT|unix.O_EXCL|unix.O_RDONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			unix.Close(fd)
		}
		if err := unix.Mkdir(tm.path(dir, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := unix.Unlink(tm.path(dir, fmt.Sprintf("f%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(start)
		stats := tm.stats()
		var st, host unix.Stat_t
		if err := unix.Stat(tm.path(dir), &st); err != nil {
			t.Fatal(err)
		}
		if err := unix.Stat(tm.host(dir), &host); err != nil {
			t.Fatal(err)
		}
		t.Logf("%d mkdir, rmdir, create, unlink in %v: RPCs %v", n, took, stats)
		if took > 900*time.Millisecond {
			return []string{fmt.Sprintf("took %v", took)}, true
		}
		var problems []string
		if got := stats["Getattr"]; got > 4 {
			problems = append(problems, fmt.Sprintf("Getattr RPCs %d for %d changes of one directory, want almost none", got, 4*n+1))
		}
		if st.Mtim != host.Mtim || st.Nlink != host.Nlink || st.Ino != host.Ino {
			problems = append(problems, fmt.Sprintf("directory through the mount: mtime %v nlink %d; host: %v %d",
				st.Mtim, st.Nlink, host.Mtim, host.Nlink))
		}
		return problems, false
	})
}

// TestListingInOpen: a directory listed whole comes with its open, which
// the server closes at once: opendir, readdir and closedir cost one Open.
// A larger one goes on with Readdir on the open handle, and a rewind of a
// directory closed at open opens it again.
func TestListingInOpen(t *testing.T) {
	tm := startMount(t, mountCfg{})
	for dir, n := range map[string]int{"small": 10, "large": 1500} {
		if err := os.Mkdir(tm.host(dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := os.WriteFile(tm.host(dir, fmt.Sprintf("f%04d", i)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The kernel sends a Release after closedir(3) returns.
	waitRelease := func() map[string]int {
		t.Helper()
		st := tm.stats()
		for deadline := time.Now().Add(5 * time.Second); st["Release"] == 0 && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
			st = tm.stats()
		}
		return st
	}
	if _, err := os.Stat(tm.path("small")); err != nil {
		t.Fatal(err)
	}
	tm.resetStats()
	ents, err := os.ReadDir(tm.path("small"))
	if err != nil || len(ents) != 10 {
		t.Fatalf("list small: %d entries, %v", len(ents), err)
	}
	time.Sleep(100 * time.Millisecond) // room for a Release that should not come
	if st := tm.stats(); st["Open"] != 1 || st["Readdir"] != 0 || st["Release"] != 0 {
		t.Fatalf("listing 10 entries: %v; want one Open and nothing else", st)
	}

	if _, err := os.Stat(tm.path("large")); err != nil {
		t.Fatal(err)
	}
	tm.resetStats()
	ents, err = os.ReadDir(tm.path("large"))
	if err != nil || len(ents) != 1500 {
		t.Fatalf("list large: %d entries, %v", len(ents), err)
	}
	if st := waitRelease(); st["Open"] != 1 || st["Readdir"] < 1 || st["Release"] != 1 {
		t.Fatalf("listing 1500 entries: %v; want one Open, Readdir and one Release", st)
	}

	// Read, rewind, read again through one open directory.
	f, err := os.Open(tm.path("small"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first, err := f.Readdirnames(-1)
	if err != nil || len(first) != 10 {
		t.Fatalf("first pass: %d names, %v", len(first), err)
	}
	if err := os.WriteFile(tm.host("small", "new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	again, err := f.Readdirnames(-1)
	if err != nil || len(again) != 11 {
		t.Fatalf("after a rewind: %d names (%v), %v; want the 11 the directory holds now", len(again), again, err)
	}
}

// TestOpenTellsNoXattrs: the Open of a file without extended attributes
// says so, and the list and the ACL by name that cp -a asks of each file
// it opens are answered without an RPC; a file with an attribute lists it.
func TestOpenTellsNoXattrs(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	if err := os.WriteFile(tm.host("plain"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.host("tagged"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tm.host("tagged"), "user.tag", []byte("v"), 0); err != nil {
		t.Skipf("skipped: the test directory's filesystem has no user xattrs: %v", err)
	}
	buf := make([]byte, 256)
	retryFast(t, func() ([]string, bool) {
		time.Sleep(1100 * time.Millisecond) // what an earlier attempt learnt has expired
		tm.resetStats()
		start := time.Now()
		f, err := os.Open(tm.path("plain"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fd := int(f.Fd())
		if n, err := unix.Flistxattr(fd, nil); err != nil || n != 0 {
			t.Fatalf("flistxattr size: %d, %v", n, err)
		}
		if _, err := unix.Fgetxattr(fd, "system.posix_acl_access", buf); !errors.Is(err, unix.ENODATA) {
			t.Fatalf("fgetxattr of an ACL the file has not: %v", err)
		}
		if took := time.Since(start); took > 900*time.Millisecond {
			return []string{fmt.Sprintf("took %v", took)}, true
		}
		if st := tm.stats(); st["Listxattr"] != 0 || st["Getxattr"] != 0 || st["Open"] != 1 {
			t.Fatalf("open, list, get: RPCs %v; want the Open only", st)
		}
		return nil, false
	})
	f, err := os.Open(tm.path("tagged"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := unix.Flistxattr(int(f.Fd()), buf); err != nil || !strings.Contains(string(buf[:n]), "user.tag") {
		t.Fatalf("list of a file with an attribute: %q, %v", buf[:max(n, 0)], err)
	}
}

// TestNoXattrsKnown: a file whose attribute list came back empty answers
// the list and any attribute by name without an RPC for an attribute
// timeout, as cp -a asks for them; an attribute set through the mount is
// seen at once, and one set on the host once the timeout has passed.
func TestNoXattrsKnown(t *testing.T) {
	tm := startMount(t, mountCfg{cache: "auto"})
	if err := os.WriteFile(tm.host("f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	retryFast(t, func() ([]string, bool) {
		time.Sleep(1100 * time.Millisecond) // what an earlier attempt learnt has expired
		tm.resetStats()
		start := time.Now()
		for range 5 {
			if n, err := unix.Listxattr(tm.path("f"), nil); err != nil || n != 0 {
				t.Fatalf("listxattr size: %d, %v", n, err)
			}
			if n, err := unix.Listxattr(tm.path("f"), buf); err != nil || n != 0 {
				t.Fatalf("listxattr: %d, %v", n, err)
			}
			if _, err := unix.Getxattr(tm.path("f"), "system.posix_acl_access", buf); !errors.Is(err, unix.ENODATA) {
				t.Fatalf("getxattr of an ACL the file has not: %v", err)
			}
		}
		took := time.Since(start)
		st := tm.stats()
		if took > 900*time.Millisecond {
			return []string{fmt.Sprintf("took %v", took)}, true
		}
		if st["Listxattr"] != 1 || st["Getxattr"] != 0 {
			t.Fatalf("5 rounds of list, list, get: RPCs %v; want one Listxattr", st)
		}
		return nil, false
	})
	if err := unix.Setxattr(tm.path("f"), "user.through", []byte("mount"), 0); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Getxattr(tm.path("f"), "user.through", buf); err != nil || string(buf[:n]) != "mount" {
		t.Fatalf("attribute set through the mount: %q, %v", buf[:n], err)
	}
	if err := unix.Removexattr(tm.path("f"), "user.through"); err != nil {
		t.Fatal(err)
	}
	if n, _ := unix.Listxattr(tm.path("f"), buf); n != 0 {
		t.Fatalf("list after the removal: %q", buf[:n])
	}
	if err := unix.Setxattr(tm.host("f"), "user.host", []byte("late"), 0); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := unix.Getxattr(tm.path("f"), "user.host", buf)
		if err == nil && string(buf[:n]) == "late" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("attribute set on the host not seen 5 s later: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
