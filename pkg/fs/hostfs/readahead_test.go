package hostfs

import (
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestReadaheadDecisions drives the sequential-read detector with reads in
// order, slightly out of order (several Reads in flight), small, and
// random, and checks the host readahead it asks for.
func TestReadaheadDecisions(t *testing.T) {
	const mib = 1 << 20
	type step struct {
		off        int64
		n          int
		from, size int64 // the readahead asked for; size 0: none
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"in order", []step{
			{0, mib, mib, raWindow},          // the first large read looks ahead
			{mib, mib, 0, 0},                 // still well covered
			{4 * mib, mib, 0, 0},             // half the window still ahead
			{5 * mib, mib, 9 * mib, 5 * mib}, // less than half: extend it
		}},
		{"out of order parts", []step{
			{mib, mib / 4, 5 * mib / 4, raWindow},
			{0, mib / 4, 0, 0}, // behind the furthest read, within the window
			{mib / 4, mib / 4, 0, 0},
		}},
		{"small reads start nothing", []step{{0, 4096, 0, 0}, {4096, 4096, 0, 0}}},
		{"a jump starts afresh", []step{
			{0, mib, mib, raWindow},
			{100 * mib, mib, 0, 0},                // random: no readahead
			{101 * mib, mib, 102 * mib, raWindow}, // in sequence again
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r readahead
			for i, s := range tc.steps {
				from, size := r.read(-1, s.off, s.n)
				if from != s.from || size != s.size {
					t.Fatalf("step %d (%d bytes at %d): readahead [%d, +%d), want [%d, +%d)", i, s.n, s.off, from, size, s.from, s.size)
				}
			}
		})
	}
}

// TestReadaheadLoadsPages checks on a real file that the readahead a
// sequential read starts brings the pages ahead into the host's page
// cache.
func TestReadaheadLoadsPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		t.Fatal(err)
	}
	// Clean pages can be dropped: start from a cold file.
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, 16<<20, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	resident := func(from, to int) int {
		vec := make([]byte, (to-from)/4096)
		if err := mincore(mem[from:to], vec); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, v := range vec {
			n += int(v & 1)
		}
		return n
	}
	if n := resident(4<<20, 8<<20); n > 16 {
		t.Skipf("skipped: the file's pages stay cached after FADV_DONTNEED (%d of 1024 resident)", n)
	}
	var r readahead
	buf := make([]byte, 1<<20)
	if _, err := unix.Pread(fd, buf, 0); err != nil {
		t.Fatal(err)
	}
	if _, size := r.read(fd, 0, len(buf)); size == 0 {
		t.Fatal("no readahead after a 1 MiB read at 0")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := resident(4<<20, 8<<20)
		if n == 1024 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the 1024 pages ahead are in the page cache 5s after the readahead", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
