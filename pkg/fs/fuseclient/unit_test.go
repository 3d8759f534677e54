package fuseclient

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func testSession(t *testing.T, c qtfsv1.FileSystemClient) *session.Session {
	return session.NewDirect(c, zaptest.NewLogger(t))
}

func TestParseCachePolicy(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    CachePolicy
		wantErr bool
	}{
		{"auto", CacheAuto, false},
		{"none", CacheNone, false},
		{"strict", CacheStrict, false},
		{"default", CacheDefault, false},
		{"", CacheDefault, true},
		{"Auto", CacheDefault, true},
		{"always", CacheDefault, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseCachePolicy(tc.in)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("ParseCachePolicy(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
			if err == nil && got.String() != tc.in {
				t.Errorf("String() = %q, want %q", got.String(), tc.in)
			}
		})
	}
}

func TestCachePolicyResolve(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy CachePolicy
		kind   qtfsv1.FsKind
		want   CachePolicy
	}{
		{"default regular", CacheDefault, qtfsv1.FsKind_FS_KIND_REGULAR, CacheAuto},
		{"default unspecified", CacheDefault, qtfsv1.FsKind_FS_KIND_UNSPECIFIED, CacheAuto},
		{"default proc", CacheDefault, qtfsv1.FsKind_FS_KIND_PROC, CacheNone},
		{"default sysfs", CacheDefault, qtfsv1.FsKind_FS_KIND_SYSFS, CacheNone},
		{"default cgroup", CacheDefault, qtfsv1.FsKind_FS_KIND_CGROUP, CacheNone},
		{"default cgroup2", CacheDefault, qtfsv1.FsKind_FS_KIND_CGROUP2, CacheNone},
		{"explicit strict on proc", CacheStrict, qtfsv1.FsKind_FS_KIND_PROC, CacheStrict},
		{"explicit none on regular", CacheNone, qtfsv1.FsKind_FS_KIND_REGULAR, CacheNone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.resolve(tc.kind); got != tc.want {
				t.Errorf("resolve = %v, want %v", got, tc.want)
			}
		})
	}
	if p := CacheNone.params(); !p.directIO || p.entry != 0 || p.attr != 0 || p.negative != 0 {
		t.Errorf("none: %+v", p)
	}
	if p := CacheAuto.params(); p.directIO || p.entry != time.Second || p.attr != time.Second || !p.keepIfUnchanged {
		t.Errorf("auto: %+v", p)
	}
	if p := CacheStrict.params(); p.directIO || p.entry < time.Hour || !p.keepAlways {
		t.Errorf("strict: %+v", p)
	}
}

func TestInoMap(t *testing.T) {
	const rootDev, otherDev, thirdDev = 0x801, 0x2a, 0x33
	m := newInoMap(rootDev)
	seen := map[uint64]devIno{}
	check := func(dev, ino, want uint64) {
		t.Helper()
		got := m.ino(dev, ino)
		if want != 0 && got != want {
			t.Errorf("ino(%#x, %d) = %#x, want %#x", dev, ino, got, want)
		}
		if got <= 1 || got == math.MaxUint64 {
			t.Errorf("ino(%#x, %d) = %d: reserved", dev, ino, got)
		}
		if prev, ok := seen[got]; ok && prev != (devIno{dev, ino}) {
			t.Errorf("ino(%#x, %d) = %#x, already given to %v", dev, ino, got, prev)
		}
		seen[got] = devIno{dev, ino}
		if again := m.ino(dev, ino); again != got {
			t.Errorf("ino(%#x, %d) not stable: %#x then %#x", dev, ino, got, again)
		}
	}
	check(rootDev, 2, 2)
	check(rootDev, 12345, 12345)
	check(otherDev, 2, 1<<48|2)
	check(otherDev, 12345, 1<<48|12345)
	check(thirdDev, 2, 2<<48|2)
	check(rootDev, 1, tableInoBase|1)
	check(rootDev, 0, tableInoBase|2)
	check(rootDev, 1<<48, tableInoBase|3)
	check(otherDev, 1<<62|5, tableInoBase|4)
	check(otherDev, 1, 1<<48|1)
	for dev := uint64(100); dev < 100+maxDevIndex+10; dev++ {
		m.ino(dev, 7)
	}
	// Devices past the prefix space go to the table, still unique.
	check(1<<40, 7, 0)
	check(1<<40, 8, 0)
}

func TestParseGroups(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []uint32
	}{
		{"none", "Name:\tx\nGroups:\t\nNStgid:\t1\n", nil},
		{"some", "Name:\tx\nGroups:\t4 24 27 4242 \nNStgid:\t1\n", []uint32{4, 24, 27, 4242}},
		{"last line", "Name:\tx\nGroups:\t7", []uint32{7}},
		{"missing", "Name:\tx\n", nil},
		{"garbage", "Name:\tx\nGroups:\t4 x\n", nil},
		{"too large", "Name:\tx\nGroups:\t4294967296\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseGroups([]byte(tc.in)); !slices.Equal(got, tc.want) {
				t.Errorf("parseGroups = %v, want %v", got, tc.want)
			}
		})
	}
}

func FuzzParseGroups(f *testing.F) {
	f.Add([]byte("Name:\tx\nGroups:\t4 24 27\n"))
	f.Add([]byte("\nGroups:"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if g := parseGroups(data); len(g) > maxGroups {
			t.Fatalf("%d groups", len(g))
		}
	})
}

func TestGroupsCache(t *testing.T) {
	proc := t.TempDir()
	write := func(groups string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(proc, "42"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, "42", "status"), []byte("Name:\tx\nGroups:\t"+groups+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("10 20")
	c := newGroupsCache(proc)
	if got := c.get(42, 1000, 1000); !slices.Equal(got, []uint32{10, 20}) {
		t.Errorf("first get = %v", got)
	}
	write("30")
	if got := c.get(42, 1000, 1000); !slices.Equal(got, []uint32{10, 20}) {
		t.Errorf("cached get = %v, want the cached groups", got)
	}
	if got := c.get(42, 1001, 1000); !slices.Equal(got, []uint32{30}) {
		t.Errorf("get for another uid = %v, want a fresh read", got)
	}
	if got := c.get(42, 0, 0); got != nil {
		t.Errorf("root's groups = %v, want none", got)
	}
	if got := c.get(0, 1000, 1000); got != nil {
		t.Errorf("pid 0's groups = %v, want none", got)
	}
	if got := c.get(43, 1000, 1000); got != nil {
		t.Errorf("unknown pid's groups = %v, want none", got)
	}
}

func TestLockConversion(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   fuse.FileLock
		wire *qtfsv1.Lock
	}{
		{"whole file", fuse.FileLock{Start: 0, End: math.MaxInt64, Typ: syscall.F_WRLCK},
			&qtfsv1.Lock{Start: 0, End: math.MaxUint64, Type: syscall.F_WRLCK}},
		{"range", fuse.FileLock{Start: 10, End: 19, Typ: syscall.F_RDLCK},
			&qtfsv1.Lock{Start: 10, End: 19, Type: syscall.F_RDLCK}},
		{"unlock", fuse.FileLock{Start: 0, End: math.MaxInt64, Typ: syscall.F_UNLCK},
			&qtfsv1.Lock{Start: 0, End: math.MaxUint64, Type: syscall.F_UNLCK}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := lockToWire(&tc.in)
			if w.Start != tc.wire.Start || w.End != tc.wire.End || w.Type != tc.wire.Type {
				t.Errorf("to wire = %v, want %v", w, tc.wire)
			}
			var back fuse.FileLock
			if e := lockFromWire(w, &back); e != 0 {
				t.Fatalf("from wire: %v", e)
			}
			want := tc.in
			if want.Typ == syscall.F_UNLCK {
				want = fuse.FileLock{Typ: syscall.F_UNLCK}
			}
			if back != want {
				t.Errorf("round trip = %+v, want %+v", back, want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		l    *qtfsv1.Lock
	}{
		{"nil", nil},
		{"bad type", &qtfsv1.Lock{Type: 7}},
		{"end before start", &qtfsv1.Lock{Start: 10, End: 5, Type: syscall.F_RDLCK}},
	} {
		t.Run("reject "+tc.name, func(t *testing.T) {
			var out fuse.FileLock
			if e := lockFromWire(tc.l, &out); e != syscall.EIO {
				t.Errorf("lockFromWire(%v) = %v, want EIO", tc.l, e)
			}
		})
	}
}

func TestOpenFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   uint32
		want uint32
	}{
		{"read", syscall.O_RDONLY, syscall.O_RDONLY},
		{"append", syscall.O_WRONLY | syscall.O_APPEND, syscall.O_WRONLY | syscall.O_APPEND},
		{"sync", syscall.O_RDWR | syscall.O_SYNC, syscall.O_RDWR | syscall.O_SYNC},
		{"no create", syscall.O_RDWR | syscall.O_CREAT | syscall.O_EXCL, syscall.O_RDWR},
		{"no direct", syscall.O_RDONLY | syscall.O_DIRECT, syscall.O_RDONLY},
		{"no exec mode", syscall.O_RDONLY | fuse.FMODE_EXEC, syscall.O_RDONLY},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := openFlags(tc.in); got != tc.want {
				t.Errorf("openFlags(%#o) = %#o, want %#o", tc.in, got, tc.want)
			}
		})
	}
}

func TestXattrReply(t *testing.T) {
	for _, tc := range []struct {
		name     string
		data     []byte
		size     uint32
		dest     int
		wantN    uint32
		wantE    syscall.Errno
		wantData string
	}{
		{"size query", nil, 5, 0, 5, 0, ""},
		{"fits", []byte("value"), 5, 8, 5, 0, "value"},
		{"exact", []byte("value"), 5, 5, 5, 0, "value"},
		{"too small", []byte("value"), 5, 3, 5, syscall.ERANGE, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := make([]byte, tc.dest)
			n, e := xattrReply(tc.data, tc.size, dest)
			if n != tc.wantN || e != tc.wantE {
				t.Fatalf("xattrReply = %d, %v; want %d, %v", n, e, tc.wantN, tc.wantE)
			}
			if e == 0 && tc.dest > 0 && string(dest[:n]) != tc.wantData {
				t.Errorf("copied %q, want %q", dest[:n], tc.wantData)
			}
		})
	}
}

func TestInlineRead(t *testing.T) {
	f := &fileHandle{}
	f.setInline([]byte("0123456789"), true)
	steps := []struct {
		off    int64
		size   int
		want   string
		served bool
	}{
		{0, 4, "0123", true},
		{4, 4, "4567", true},
		{8, 4, "89", true},
		{10, 4, "", true}, // end of file, from the open
		{0, 4, "", false}, // read again: from the server
	}
	for i, s := range steps {
		got, ok := f.takeInline(s.off, s.size)
		if ok != s.served || string(got) != s.want {
			t.Errorf("step %d: takeInline(%d, %d) = %q, %v; want %q, %v", i, s.off, s.size, got, ok, s.want, s.served)
		}
	}

	f.setInline([]byte("0123456789"), true)
	if _, ok := f.takeInline(5, 4); ok {
		t.Error("a read that does not continue the previous one was served from the open's bytes")
	}
	if _, ok := f.takeInline(0, 4); ok {
		t.Error("the open's bytes were not dropped after a seek")
	}

	f.setInline([]byte("0123"), false)
	if got, ok := f.takeInline(0, 8); !ok || string(got) != "0123" {
		t.Errorf("partial: %q, %v", got, ok)
	}
	if _, ok := f.takeInline(4, 8); ok {
		t.Error("a read past the open's bytes of a longer file was not sent to the server")
	}
}

// fakeDirClient serves Readdir from a list, in batches of 3, and counts
// every RPC. Readdirs may come from the client's read-ahead goroutine.
type fakeDirClient struct {
	qtfsv1.FileSystemClient
	entries []*qtfsv1.DirEntry
	// gate, when set, holds every Readdir after the first batch until it
	// is closed.
	gate chan struct{}

	mu      sync.Mutex
	calls   map[string]int
	offsets []uint64 // of every Readdir, in order
}

func (c *fakeDirClient) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

func (c *fakeDirClient) record(op string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[op]++
}

func (c *fakeDirClient) Readdir(ctx context.Context, req *qtfsv1.ReaddirRequest, _ ...grpc.CallOption) (*qtfsv1.ReaddirResponse, error) {
	c.mu.Lock()
	c.calls["Readdir"]++
	c.offsets = append(c.offsets, req.GetOffset())
	c.mu.Unlock()
	if !req.GetPlus() {
		return nil, status.Error(codes.InvalidArgument, "want plus")
	}
	if c.gate != nil && req.GetOffset() != 0 {
		<-c.gate
	}
	start := 0
	if req.GetOffset() != 0 {
		start = slices.IndexFunc(c.entries, func(e *qtfsv1.DirEntry) bool { return e.GetOffset() == req.GetOffset() }) + 1
	}
	end := min(len(c.entries), start+int(req.GetMaxEntries()), start+3) // small batches
	return &qtfsv1.ReaddirResponse{Entries: c.entries[start:end], Eof: end == len(c.entries)}, nil
}

func (c *fakeDirClient) Lookup(ctx context.Context, req *qtfsv1.LookupRequest, _ ...grpc.CallOption) (*qtfsv1.EntryResponse, error) {
	c.record("Lookup")
	return &qtfsv1.EntryResponse{Errno: int32(syscall.EIO)}, nil
}

func (c *fakeDirClient) Release(ctx context.Context, req *qtfsv1.ReleaseRequest, _ ...grpc.CallOption) (*qtfsv1.ErrnoResponse, error) {
	c.record("Release")
	return &qtfsv1.ErrnoResponse{}, nil
}

// readAll reads d's entries to the end.
func readAll(t *testing.T, d *dirHandle) []fuse.DirEntry {
	t.Helper()
	var out []fuse.DirEntry
	for {
		de, e := d.Readdirent(context.Background())
		if e != 0 {
			t.Fatalf("Readdirent: %v", e)
		}
		if de == nil {
			return out
		}
		out = append(out, *de)
	}
}

// TestDirStream checks the directory stream: batches, resumption after
// the last cookie, invalid names dropped, seeking, and attributes from the
// batch with no RPC.
func TestDirStream(t *testing.T) {
	attr := func(ino uint64, mode uint32) *qtfsv1.Attr {
		return &qtfsv1.Attr{Ino: ino, Dev: 9, Mode: mode, Nlink: 1}
	}
	c := &fakeDirClient{calls: map[string]int{}, entries: []*qtfsv1.DirEntry{
		{Name: []byte("."), Ino: 1, Type: syscall.S_IFDIR, Offset: 11},
		{Name: []byte("a"), Ino: 2, Type: syscall.S_IFREG, Offset: 12, Attr: attr(2, syscall.S_IFREG|0o644)},
		{Name: []byte("bad/name"), Ino: 3, Type: syscall.S_IFREG, Offset: 13},
		{Name: []byte("d"), Ino: 4, Type: syscall.S_IFDIR, Offset: 14, Attr: attr(4, syscall.S_IFDIR|0o755)},
		{Name: []byte(""), Ino: 5, Type: syscall.S_IFREG, Offset: 15},
		{Name: []byte("noattr"), Ino: 6, Type: syscall.S_IFLNK, Offset: 16},
	}}
	m := &mountFS{sess: testSession(t, c), log: zaptest.NewLogger(t), timeout: time.Second, rootDev: 9, inos: newInoMap(9)}
	d := m.newDirHandle(7, &node{m: m})
	read := func() []fuse.DirEntry { return readAll(t, d) }
	// "." and ".." come first from the client itself (the server's "." is
	// dropped); the server's cookies follow, shifted past them.
	want := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Off: 1},
		{Name: "..", Mode: syscall.S_IFDIR, Off: 2},
		{Name: "a", Ino: 2, Mode: syscall.S_IFREG, Off: 14},
		{Name: "d", Ino: 4, Mode: syscall.S_IFDIR, Off: 16},
		{Name: "noattr", Ino: 6, Mode: syscall.S_IFLNK, Off: 18},
	}
	if got := read(); !slices.Equal(got, want) {
		t.Errorf("entries:\n got %v\nwant %v", got, want)
	}
	if n := c.count("Readdir"); n != 2 {
		t.Errorf("Readdir RPCs: %d, want 2 (batches of 3)", n)
	}
	if got := read(); len(got) != 0 {
		t.Errorf("after the end: %v", got)
	}
	for _, tc := range []struct {
		off  uint64
		from int
	}{{14, 3}, {2, 2}, {1, 1}, {0, 0}} {
		if e := d.Seekdir(context.Background(), tc.off); e != 0 {
			t.Fatal(e)
		}
		if got := read(); !slices.Equal(got, want[tc.from:]) {
			t.Errorf("after seeking to %d:\n got %v\nwant %v", tc.off, got, want[tc.from:])
		}
	}
	var out fuse.EntryOut
	if _, e := d.Lookup(context.Background(), "noattr", &out); e == 0 {
		t.Error("Lookup of an entry without attributes succeeded")
	}
	if _, e := d.Lookup(context.Background(), "gone", &out); e == 0 {
		t.Error("Lookup of a name not in the batch succeeded")
	}
	if n := c.count("Lookup"); n != 0 {
		t.Errorf("Lookup RPCs: %d, want 0", n)
	}
}

// TestDirStreamReadsAhead checks the Readdir sent ahead: a straight
// listing asks for every batch once, the next one while the current one is
// handed out; a seek makes the one sent ahead useless but the listing
// stays right; and the handle is released only once that Readdir is
// over.
func TestDirStreamReadsAhead(t *testing.T) {
	var entries []*qtfsv1.DirEntry
	var want []string
	for i := range 10 {
		name := fmt.Sprintf("e%d", i)
		ino := uint64(100 + i)
		entries = append(entries, &qtfsv1.DirEntry{Name: []byte(name), Ino: ino, Type: syscall.S_IFREG, Offset: uint64(20 + i),
			Attr: &qtfsv1.Attr{Ino: ino, Dev: 9, Mode: syscall.S_IFREG | 0o644, Nlink: 1}})
		want = append(want, name)
	}
	newHandle := func(c *fakeDirClient) *dirHandle {
		m := &mountFS{sess: testSession(t, c), log: zaptest.NewLogger(t), timeout: 5 * time.Second, rootDev: 9, inos: newInoMap(9)}
		return m.newDirHandle(7, &node{m: m})
	}
	names := func(des []fuse.DirEntry) []string {
		var out []string
		for _, de := range des {
			if de.Name != "." && de.Name != ".." {
				out = append(out, de.Name)
			}
		}
		return out
	}

	t.Run("straight", func(t *testing.T) {
		c := &fakeDirClient{calls: map[string]int{}, entries: entries}
		d := newHandle(c)
		for range 3 { // ".", "..", and the first of batch 1
			if _, e := d.Readdirent(context.Background()); e != 0 {
				t.Fatal(e)
			}
		}
		// Batch 1 is being handed out: batch 2 is asked for already.
		deadline := time.Now().Add(5 * time.Second)
		for c.count("Readdir") < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if n := c.count("Readdir"); n != 2 {
			t.Fatalf("Readdir RPCs while batch 1 is handed out: %d, want 2", n)
		}
		rest := names(readAll(t, d))
		if got := append([]string{"e0"}, rest...); !slices.Equal(got, want) {
			t.Errorf("entries: got %v, want %v", got, want)
		}
		d.Releasedir(context.Background(), 0)
		c.mu.Lock()
		defer c.mu.Unlock()
		if wantOffs := []uint64{0, 22, 25, 28}; !slices.Equal(c.offsets, wantOffs) {
			t.Errorf("Readdir offsets: %v, want %v (each batch once)", c.offsets, wantOffs)
		}
	})

	t.Run("seek", func(t *testing.T) {
		c := &fakeDirClient{calls: map[string]int{}, entries: entries}
		d := newHandle(c)
		for range 3 {
			if _, e := d.Readdirent(context.Background()); e != 0 {
				t.Fatal(e)
			}
		}
		// Back to after e0 (its kernel offset is its cookie + 2): batch 2,
		// sent ahead after e2, is not what comes next.
		if e := d.Seekdir(context.Background(), 20+dotsOffset); e != 0 {
			t.Fatal(e)
		}
		if got := names(readAll(t, d)); !slices.Equal(got, want[1:]) {
			t.Errorf("after the seek: got %v, want %v", got, want[1:])
		}
		if e := d.Seekdir(context.Background(), 0); e != 0 {
			t.Fatal(e)
		}
		if got := names(readAll(t, d)); !slices.Equal(got, want) {
			t.Errorf("after the rewind: got %v, want %v", got, want)
		}
		d.Releasedir(context.Background(), 0)
	})

	t.Run("release waits", func(t *testing.T) {
		c := &fakeDirClient{calls: map[string]int{}, entries: entries, gate: make(chan struct{})}
		d := newHandle(c)
		for range 3 {
			if _, e := d.Readdirent(context.Background()); e != 0 {
				t.Fatal(e)
			}
		}
		released := make(chan struct{})
		go func() {
			d.Releasedir(context.Background(), 0)
			close(released)
		}()
		select {
		case <-released:
			t.Fatal("released while a Readdir of the handle was still on its way")
		case <-time.After(100 * time.Millisecond):
		}
		if n := c.count("Release"); n != 0 {
			t.Fatalf("Release RPCs before the Readdir ended: %d", n)
		}
		close(c.gate)
		<-released
		if n := c.count("Release"); n != 1 {
			t.Errorf("Release RPCs: %d, want 1", n)
		}
	})
}

// TestFuseOpenFlags checks the FOPEN_ flags each policy gives an open:
// auto keeps the page cache only while mtime and size hold.
func TestFuseOpenFlags(t *testing.T) {
	attr := func(mtime, size int64) *qtfsv1.Attr {
		return &qtfsv1.Attr{MtimeSec: mtime, MtimeNsec: 5, Size: size, Mode: syscall.S_IFREG | 0o644}
	}
	type open struct {
		flags uint32
		attr  *qtfsv1.Attr
		want  uint32
	}
	for _, tc := range []struct {
		name     string
		policy   CachePolicy
		directIO bool
		opens    []open
	}{
		{"auto", CacheAuto, false, []open{
			{syscall.O_RDONLY, attr(100, 10), 0},
			{syscall.O_RDONLY, attr(100, 10), fuse.FOPEN_KEEP_CACHE},
			{syscall.O_RDWR, attr(100, 10), fuse.FOPEN_KEEP_CACHE},
			{syscall.O_RDONLY, attr(101, 10), 0},
			{syscall.O_RDONLY, attr(101, 11), 0},
			{syscall.O_RDONLY, attr(101, 11), fuse.FOPEN_KEEP_CACHE},
			{syscall.O_RDONLY | syscall.O_DIRECT, attr(101, 11), fuse.FOPEN_DIRECT_IO},
		}},
		{"strict", CacheStrict, false, []open{
			{syscall.O_RDONLY, attr(100, 10), fuse.FOPEN_KEEP_CACHE},
			{syscall.O_RDONLY, attr(200, 20), fuse.FOPEN_KEEP_CACHE},
		}},
		{"none", CacheNone, true, []open{
			{syscall.O_RDONLY, attr(100, 10), fuse.FOPEN_DIRECT_IO},
			{syscall.O_RDONLY, attr(100, 10), fuse.FOPEN_DIRECT_IO},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &mountFS{cache: tc.policy.params(), directIO: tc.directIO}
			n := &node{m: m}
			for i, o := range tc.opens {
				if got := n.fuseOpenFlags(o.flags, o.attr); got != o.want {
					t.Errorf("open %d: flags %#x, want %#x", i, got, o.want)
				}
			}
		})
	}
}
