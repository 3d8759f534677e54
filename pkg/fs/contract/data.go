package contract

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"sort"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func testOpen(e *env) {
	e.write("f", "hello")
	e.mkdir("d")
	e.symlink("f", "l")
	for _, tc := range []struct {
		name   string
		path   []byte
		flags  int
		inline uint32
		want   []syscall.Errno
		check  func(t *testing.T, r *qtfsv1.OpenResponse)
	}{
		{name: "read only", path: e.p("f"), flags: unix.O_RDONLY, check: func(t *testing.T, r *qtfsv1.OpenResponse) {
			if r.GetAttr().GetSize() != 5 || r.GetAttr().GetIno() != e.lstat("f").Ino {
				t.Errorf("attr %v", r.GetAttr())
			}
			if len(r.GetInlineData()) != 0 {
				t.Errorf("inline data without asking")
			}
		}},
		{name: "inline whole file", path: e.p("f"), flags: unix.O_RDONLY, inline: 100, check: func(t *testing.T, r *qtfsv1.OpenResponse) {
			if string(r.GetInlineData()) != "hello" || !r.GetInlineEof() {
				t.Errorf("inline %q eof %v, want hello, true", r.GetInlineData(), r.GetInlineEof())
			}
		}},
		{name: "inline prefix", path: e.p("f"), flags: unix.O_RDWR, inline: 2, check: func(t *testing.T, r *qtfsv1.OpenResponse) {
			if string(r.GetInlineData()) != "he" || r.GetInlineEof() {
				t.Errorf("inline %q eof %v, want he, false", r.GetInlineData(), r.GetInlineEof())
			}
		}},
		{name: "inline on a write-only handle", path: e.p("f"), flags: unix.O_WRONLY, inline: 100, check: func(t *testing.T, r *qtfsv1.OpenResponse) {
			if len(r.GetInlineData()) != 0 || r.GetInlineEof() {
				t.Errorf("inline data from a write-only handle")
			}
		}},
		{name: "directory", path: e.p("d"), flags: unix.O_RDONLY | unix.O_DIRECTORY, check: func(t *testing.T, r *qtfsv1.OpenResponse) {
			if r.GetAttr().GetMode()&unix.S_IFMT != unix.S_IFDIR {
				t.Errorf("attr %v", r.GetAttr())
			}
		}},
		{name: "mount root", path: nil, flags: unix.O_RDONLY},
		{name: "truncate", path: e.p("f"), flags: unix.O_WRONLY | unix.O_TRUNC, check: func(t *testing.T, r *qtfsv1.OpenResponse) {
			if e.readHost("f") != "" {
				t.Errorf("O_TRUNC left %q", e.readHost("f"))
			}
		}},
		{name: "O_CREAT refused", path: e.p("new"), flags: unix.O_RDWR | unix.O_CREAT, want: []syscall.Errno{syscall.EINVAL}},
		{name: "O_PATH refused", path: e.p("f"), flags: unix.O_PATH, want: []syscall.Errno{syscall.EINVAL}},
		{name: "O_TMPFILE refused", path: e.p("d"), flags: unix.O_RDWR | unix.O_TMPFILE, want: []syscall.Errno{syscall.EINVAL}},
		{name: "O_DIRECTORY on a file", path: e.p("f"), flags: unix.O_RDONLY | unix.O_DIRECTORY, want: []syscall.Errno{syscall.ENOTDIR}},
		{name: "write a directory", path: e.p("d"), flags: unix.O_WRONLY, want: []syscall.Errno{syscall.EISDIR}},
		{name: "symlink", path: e.p("l"), flags: unix.O_RDONLY, want: []syscall.Errno{syscall.ELOOP}},
		{name: "missing", path: e.p("nope"), flags: unix.O_RDONLY, want: []syscall.Errno{syscall.ENOENT}},
	} {
		e.t.Run(tc.name, func(t *testing.T) {
			x := call(e.c.Open(e.ctx(), &qtfsv1.OpenRequest{Mount: e.mrw, Caller: rootCaller, Path: tc.path,
				Flags: uint32(tc.flags), ReadInline: tc.inline}))
			if tc.want != nil {
				x.fails(t, "open", tc.want...)
				return
			}
			r := x.ok(t, "open")
			e.releaseLater(r.GetHandle())
			if r.GetHandle() == 0 {
				t.Fatalf("handle 0")
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
	e.t.Run("handles are distinct", func(t *testing.T) {
		a, b := e.open(e.mrw, e.p("f"), unix.O_RDONLY), e.open(e.mrw, e.p("f"), unix.O_RDONLY)
		if a.GetHandle() == b.GetHandle() {
			t.Errorf("two opens share handle %d", a.GetHandle())
		}
	})
}

func testCreate(e *env) {
	e.write("exists", "content")
	mustHost(e.t, os.Chmod(e.hp("exists"), 0o600))
	e.symlink(e.hp("target-of-dangling"), "dangling")
	e.mkdir("d")
	create := func(dir []byte, name string, flags int, mode, umask uint32) result[*qtfsv1.CreateResponse] {
		x := call(e.c.Create(e.ctx(), &qtfsv1.CreateRequest{Mount: e.mrw, Caller: rootCaller, Path: dir,
			Name: []byte(name), Flags: uint32(flags), Mode: mode, Umask: umask}))
		if x.err == nil && x.r.GetErrno() == 0 {
			e.releaseLater(x.r.GetHandle())
		}
		return x
	}
	t := e.t
	t.Run("new file", func(t *testing.T) {
		r := create(e.p(), "n", unix.O_RDWR, 0o666, 0o022).ok(t, "create")
		st := e.lstat("n")
		if st.Mode != unix.S_IFREG|0o644 || st.Uid != uint32(os.Geteuid()) || r.GetAttr().GetIno() != st.Ino || r.GetHandle() == 0 {
			t.Errorf("host mode %o uid %d, attr %v", st.Mode, st.Uid, r.GetAttr())
		}
		call(e.c.Write(e.ctx(), &qtfsv1.WriteRequest{Handle: r.GetHandle(), Data: []byte("abc")})).ok(t, "write")
		if e.readHost("n") != "abc" {
			t.Errorf("content %q", e.readHost("n"))
		}
	})
	t.Run("mode not cut by the server's umask", func(t *testing.T) {
		create(e.p(), "open", unix.O_WRONLY, 0o666, 0).ok(t, "create")
		wantMode(t, e, "open", 0o666, nil)
	})
	t.Run("exclusive on an existing file", func(t *testing.T) {
		create(e.p(), "exists", unix.O_RDWR|unix.O_EXCL, 0o644, 0).fails(t, "create", syscall.EEXIST)
	})
	t.Run("existing file is opened as is", func(t *testing.T) {
		r := create(e.p(), "exists", unix.O_RDWR, 0o666, 0).ok(t, "create")
		if e.readHost("exists") != "content" || r.GetAttr().GetSize() != 7 {
			t.Errorf("content %q", e.readHost("exists"))
		}
		wantMode(t, e, "exists", 0o600, nil)
	})
	t.Run("existing file truncated", func(t *testing.T) {
		create(e.p(), "exists", unix.O_RDWR|unix.O_TRUNC, 0o666, 0).ok(t, "create")
		if e.readHost("exists") != "" {
			t.Errorf("content %q after O_TRUNC", e.readHost("exists"))
		}
	})
	t.Run("dangling symlink is not followed", func(t *testing.T) {
		create(e.p(), "dangling", unix.O_RDWR, 0o644, 0).fails(t, "create", syscall.ELOOP, syscall.EEXIST)
		create(e.p(), "dangling", unix.O_RDWR|unix.O_EXCL, 0o644, 0).fails(t, "create", syscall.EEXIST)
		if e.exists("target-of-dangling") {
			t.Errorf("create followed a symlink")
		}
	})
	t.Run("directory exists", func(t *testing.T) {
		create(e.p(), "d", unix.O_RDWR, 0o644, 0).fails(t, "create", syscall.EISDIR)
	})
	t.Run("O_DIRECTORY refused", func(t *testing.T) {
		create(e.p(), "x", unix.O_RDWR|unix.O_DIRECTORY, 0o644, 0).fails(t, "create", syscall.EINVAL)
	})
	t.Run("parent missing", func(t *testing.T) {
		create(e.p("nope"), "x", unix.O_RDWR, 0o644, 0).fails(t, "create", syscall.ENOENT)
	})
}

func testReadWrite(e *env) {
	t := e.t
	e.mkdir("d")
	r := call(e.c.Create(e.ctx(), &qtfsv1.CreateRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: []byte("f"),
		Flags: unix.O_RDWR, Mode: 0o644})).ok(t, "create")
	h := r.GetHandle()
	e.releaseLater(h)
	write := func(h uint64, off int64, data string) result[*qtfsv1.WriteResponse] {
		return call(e.c.Write(e.ctx(), &qtfsv1.WriteRequest{Handle: h, Offset: off, Data: []byte(data)}))
	}
	read := func(h uint64, off int64, size uint32) result[*qtfsv1.ReadResponse] {
		return call(e.c.Read(e.ctx(), &qtfsv1.ReadRequest{Handle: h, Offset: off, Size: size}))
	}
	if n := write(h, 0, "hello world").ok(t, "write").GetWritten(); n != 11 {
		t.Fatalf("written %d", n)
	}
	write(h, 0, "HELLO").ok(t, "overwrite")
	write(h, 20, "end").ok(t, "write past the end")
	if got := e.readHost("f"); got != "HELLO world\x00\x00\x00\x00\x00\x00\x00\x00\x00end" {
		t.Errorf("host content %q", got)
	}
	for _, tc := range []struct {
		name string
		off  int64
		size uint32
		want string
	}{
		{"middle", 6, 5, "world"},
		{"short at end", 20, 100, "end"},
		{"at end", 23, 10, ""},
		{"past end", 1000, 10, ""},
		{"zero size", 0, 0, ""},
	} {
		t.Run("read "+tc.name, func(t *testing.T) {
			if got := string(read(h, tc.off, tc.size).ok(t, "read").GetData()); got != tc.want {
				t.Errorf("read %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("append ignores the offset", func(t *testing.T) {
		a := e.open(e.mrw, e.p("f"), unix.O_WRONLY|unix.O_APPEND).GetHandle()
		write(a, 0, "+tail").ok(t, "append")
		if got := e.readHost("f"); got[len(got)-5:] != "+tail" || len(got) != 28 {
			t.Errorf("after append %q", got)
		}
	})
	t.Run("large", func(t *testing.T) {
		data := make([]byte, 1<<20)
		_, _ = rand.Read(data)
		n := write(h, 0, string(data)).ok(t, "write 1 MiB").GetWritten()
		if n != 1<<20 {
			t.Fatalf("written %d", n)
		}
		got := read(h, 0, 1<<20).ok(t, "read 1 MiB").GetData()
		if !bytes.Equal(got, data) {
			t.Errorf("1 MiB read back differs")
		}
	})
	t.Run("read on a write-only handle", func(t *testing.T) {
		w := e.open(e.mrw, e.p("f"), unix.O_WRONLY).GetHandle()
		read(w, 0, 1).fails(t, "read", syscall.EBADF)
	})
	t.Run("write on a read-only handle", func(t *testing.T) {
		ro := e.open(e.mrw, e.p("f"), unix.O_RDONLY).GetHandle()
		write(ro, 0, "x").fails(t, "write", syscall.EBADF)
	})
	t.Run("read on a directory handle", func(t *testing.T) {
		d := e.open(e.mrw, e.p("d"), unix.O_RDONLY|unix.O_DIRECTORY).GetHandle()
		read(d, 0, 10).fails(t, "read", syscall.EISDIR)
	})
	t.Run("read larger than a message", func(t *testing.T) {
		read(h, 0, e.hs.GetMaxMessageBytes()+1).fails(t, "read", syscall.EINVAL)
	})
	t.Run("write larger than a message", func(t *testing.T) {
		big := make([]byte, e.hs.GetMaxMessageBytes()+1)
		call(e.c.Write(e.ctx(), &qtfsv1.WriteRequest{Handle: h, Data: big})).fails(t, "write", syscall.EINVAL)
	})
	t.Run("negative offsets", func(t *testing.T) {
		read(h, -1, 1).fails(t, "read", syscall.EINVAL)
		write(h, -1, "x").fails(t, "write", syscall.EINVAL)
	})
	t.Run("unknown handle", func(t *testing.T) {
		read(1<<50, 0, 1).fails(t, "read", syscall.EBADF)
		write(1<<50, 0, "x").fails(t, "write", syscall.EBADF)
	})
}

func testFlushFsync(e *env) {
	t := e.t
	e.write("f", "data")
	h := e.open(e.mrw, e.p("f"), unix.O_RDWR).GetHandle()
	call(e.c.Write(e.ctx(), &qtfsv1.WriteRequest{Handle: h, Data: []byte("DATA")})).ok(t, "write")
	call(e.c.Flush(e.ctx(), &qtfsv1.FlushRequest{Handle: h})).ok(t, "flush")
	call(e.c.Flush(e.ctx(), &qtfsv1.FlushRequest{Handle: h})).ok(t, "flush twice")
	// Flush does not close the handle.
	if got := call(e.c.Read(e.ctx(), &qtfsv1.ReadRequest{Handle: h, Size: 4})).ok(t, "read after flush").GetData(); string(got) != "DATA" {
		t.Errorf("read %q after flush", got)
	}
	call(e.c.Fsync(e.ctx(), &qtfsv1.FsyncRequest{Handle: h})).ok(t, "fsync")
	call(e.c.Fsync(e.ctx(), &qtfsv1.FsyncRequest{Handle: h, Datasync: true})).ok(t, "fdatasync")
	d := e.open(e.mrw, e.p(), unix.O_RDONLY|unix.O_DIRECTORY).GetHandle()
	call(e.c.Fsync(e.ctx(), &qtfsv1.FsyncRequest{Handle: d})).ok(t, "fsync a directory")
	call(e.c.Flush(e.ctx(), &qtfsv1.FlushRequest{Handle: 1 << 50})).fails(t, "flush unknown", syscall.EBADF)
	call(e.c.Fsync(e.ctx(), &qtfsv1.FsyncRequest{Handle: 1 << 50})).fails(t, "fsync unknown", syscall.EBADF)
}

func testRelease(e *env) {
	t := e.t
	e.write("f", "data")
	h := call(e.c.Open(e.ctx(), &qtfsv1.OpenRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("f")})).ok(t, "open").GetHandle()
	e.release(h)
	call(e.c.Release(e.ctx(), &qtfsv1.ReleaseRequest{Handle: h})).fails(t, "second release", syscall.EBADF)
	call(e.c.Read(e.ctx(), &qtfsv1.ReadRequest{Handle: h, Size: 1})).fails(t, "read after release", syscall.EBADF)
	call(e.c.Release(e.ctx(), &qtfsv1.ReleaseRequest{Handle: 0})).fails(t, "release 0", syscall.EBADF)
	h2 := e.open(e.mrw, e.p("f"), unix.O_RDONLY).GetHandle()
	if h2 == h {
		t.Errorf("handle id %d reused within the session", h)
	}
}

func testUnlinked(e *env) {
	t := e.t
	r := call(e.c.Create(e.ctx(), &qtfsv1.CreateRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: []byte("f"),
		Flags: unix.O_RDWR, Mode: 0o644})).ok(t, "create")
	h := r.GetHandle()
	e.releaseLater(h)
	call(e.c.Write(e.ctx(), &qtfsv1.WriteRequest{Handle: h, Data: []byte("data")})).ok(t, "write")
	call(e.c.Unlink(e.ctx(), &qtfsv1.UnlinkRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p(), Name: []byte("f")})).ok(t, "unlink")
	a := call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Handle: h})).ok(t, "getattr by handle").GetAttr()
	if a.GetNlink() != 0 || a.GetSize() != 4 || a.GetIno() != r.GetAttr().GetIno() {
		t.Errorf("unlinked file attr %v, want nlink 0 size 4", a)
	}
	call(e.c.Write(e.ctx(), &qtfsv1.WriteRequest{Handle: h, Offset: 4, Data: []byte("more")})).ok(t, "write unlinked")
	if got := call(e.c.Read(e.ctx(), &qtfsv1.ReadRequest{Handle: h, Size: 100})).ok(t, "read unlinked").GetData(); string(got) != "datamore" {
		t.Errorf("read %q", got)
	}
	call(e.c.Getattr(e.ctx(), &qtfsv1.GetattrRequest{Mount: e.mrw, Caller: rootCaller, Path: e.p("f")})).
		fails(t, "getattr by path", syscall.ENOENT)
}

func testReaddir(e *env) {
	t := e.t
	want := map[string]uint32{}
	for i := range 50 {
		n := fmt.Sprintf("f%02d", i)
		e.write(n, "")
		want[n] = unix.S_IFREG
	}
	e.mkdir("sub")
	want["sub"] = unix.S_IFDIR
	e.symlink("/", "ln")
	want["ln"] = unix.S_IFLNK
	e.mkdir("empty")
	want["empty"] = unix.S_IFDIR
	h := e.open(e.mrw, e.p(), unix.O_RDONLY|unix.O_DIRECTORY).GetHandle()

	readAll := func(t *testing.T, plus bool, max uint32) []*qtfsv1.DirEntry {
		var all []*qtfsv1.DirEntry
		var off uint64
		for range 1000 {
			r := call(e.c.Readdir(e.ctx(), &qtfsv1.ReaddirRequest{Handle: h, Offset: off, MaxEntries: max, Plus: plus})).ok(t, "readdir")
			if len(r.GetEntries()) > int(max) {
				t.Fatalf("%d entries, max_entries %d", len(r.GetEntries()), max)
			}
			all = append(all, r.GetEntries()...)
			if r.GetEof() {
				return all
			}
			if len(r.GetEntries()) == 0 {
				t.Fatalf("no entries and no eof")
			}
			off = r.GetEntries()[len(r.GetEntries())-1].GetOffset()
		}
		t.Fatalf("readdir never reached eof")
		return nil
	}
	check := func(t *testing.T, ents []*qtfsv1.DirEntry, plus bool) {
		seen := map[string]bool{}
		for _, d := range ents {
			n := string(d.GetName())
			if seen[n] {
				t.Errorf("entry %q twice", n)
			}
			seen[n] = true
			typ, ok := want[n]
			if !ok {
				t.Errorf("unexpected entry %q", n)
				continue
			}
			if d.GetType() != typ {
				t.Errorf("%s: type %o, want %o", n, d.GetType(), typ)
			}
			st := e.lstat(n)
			if d.GetIno() != st.Ino {
				t.Errorf("%s: ino %d, want %d", n, d.GetIno(), st.Ino)
			}
			switch {
			case plus && (d.GetAttr() == nil || d.GetAttr().GetIno() != st.Ino || d.GetAttr().GetMode() != st.Mode):
				t.Errorf("%s: attr %v, want the entry's own (not followed)", n, d.GetAttr())
			case !plus && d.GetAttr() != nil:
				t.Errorf("%s: attr without plus", n)
			}
		}
		if len(seen) != len(want) {
			t.Errorf("%d entries, want %d", len(seen), len(want))
		}
	}
	var first []*qtfsv1.DirEntry
	t.Run("paginated plus", func(t *testing.T) {
		first = readAll(t, true, 7)
		check(t, first, true)
	})
	t.Run("one batch", func(t *testing.T) { check(t, readAll(t, false, 4096), false) })
	t.Run("resume from an offset", func(t *testing.T) {
		if len(first) < 20 {
			t.Skip("first listing failed")
		}
		r := call(e.c.Readdir(e.ctx(), &qtfsv1.ReaddirRequest{Handle: h, Offset: first[9].GetOffset(), MaxEntries: 5})).ok(t, "readdir")
		for i, d := range r.GetEntries() {
			if !bytes.Equal(d.GetName(), first[10+i].GetName()) {
				t.Errorf("entry %d after resume: %q, want %q", i, d.GetName(), first[10+i].GetName())
			}
		}
	})
	t.Run("rewind", func(t *testing.T) {
		if len(first) < 3 {
			t.Skip("first listing failed")
		}
		r := call(e.c.Readdir(e.ctx(), &qtfsv1.ReaddirRequest{Handle: h, MaxEntries: 3})).ok(t, "readdir")
		var got, exp []string
		for i, d := range r.GetEntries() {
			got = append(got, string(d.GetName()))
			exp = append(exp, string(first[i].GetName()))
		}
		sort.Strings(got)
		sort.Strings(exp)
		if fmt.Sprint(got) != fmt.Sprint(exp) {
			t.Errorf("after rewind %v, want %v", got, exp)
		}
	})
	t.Run("empty directory", func(t *testing.T) {
		d := e.open(e.mrw, e.p("empty"), unix.O_RDONLY|unix.O_DIRECTORY).GetHandle()
		r := call(e.c.Readdir(e.ctx(), &qtfsv1.ReaddirRequest{Handle: d, MaxEntries: 10, Plus: true})).ok(t, "readdir")
		if len(r.GetEntries()) != 0 || !r.GetEof() {
			t.Errorf("empty directory: %d entries eof %v", len(r.GetEntries()), r.GetEof())
		}
	})
	t.Run("file handle", func(t *testing.T) {
		f := e.open(e.mrw, e.p("f00"), unix.O_RDONLY).GetHandle()
		call(e.c.Readdir(e.ctx(), &qtfsv1.ReaddirRequest{Handle: f, MaxEntries: 10})).fails(t, "readdir", syscall.ENOTDIR)
	})
	t.Run("unknown handle", func(t *testing.T) {
		call(e.c.Readdir(e.ctx(), &qtfsv1.ReaddirRequest{Handle: 1 << 50, MaxEntries: 10})).fails(t, "readdir", syscall.EBADF)
	})
}

func testFallocate(e *env) {
	t := e.t
	e.write("f", "")
	h := e.open(e.mrw, e.p("f"), unix.O_RDWR).GetHandle()
	call(e.c.Fallocate(e.ctx(), &qtfsv1.FallocateRequest{Handle: h, Length: 1 << 20})).ok(t, "fallocate")
	if st := e.lstat("f"); st.Size != 1<<20 || st.Blocks*512 < 1<<20 {
		t.Errorf("after fallocate size %d blocks %d", st.Size, st.Blocks)
	}
	call(e.c.Fallocate(e.ctx(), &qtfsv1.FallocateRequest{Handle: h, Mode: unix.FALLOC_FL_KEEP_SIZE, Offset: 1 << 20, Length: 1 << 20})).
		ok(t, "fallocate keep size")
	if st := e.lstat("f"); st.Size != 1<<20 || st.Blocks*512 < 2<<20 {
		t.Errorf("after keep-size fallocate size %d blocks %d", st.Size, st.Blocks)
	}
	r := e.open(e.mrw, e.p("f"), unix.O_RDONLY).GetHandle()
	call(e.c.Fallocate(e.ctx(), &qtfsv1.FallocateRequest{Handle: r, Length: 4096})).fails(t, "fallocate read-only handle", syscall.EBADF)
	call(e.c.Fallocate(e.ctx(), &qtfsv1.FallocateRequest{Handle: 1 << 50, Length: 1})).fails(t, "fallocate unknown", syscall.EBADF)
}

func testLseek(e *env) {
	t := e.t
	f, err := os.Create(e.hp("sparse"))
	mustHost(t, err)
	block := bytes.Repeat([]byte{1}, 4096)
	_, err = f.WriteAt(block, 0)
	mustHost(t, err)
	_, err = f.WriteAt(block, 1<<20)
	mustHost(t, err)
	mustHost(t, f.Close())
	size := int64(1<<20 + 4096)
	h := e.open(e.mrw, e.p("sparse"), unix.O_RDONLY).GetHandle()
	seek := func(off int64, whence uint32) result[*qtfsv1.LseekResponse] {
		return call(e.c.Lseek(e.ctx(), &qtfsv1.LseekRequest{Handle: h, Offset: off, Whence: whence}))
	}
	if got := seek(0, unix.SEEK_DATA).ok(t, "seek data").GetOffset(); got != 0 {
		t.Errorf("SEEK_DATA 0 = %d", got)
	}
	hole := seek(0, unix.SEEK_HOLE).ok(t, "seek hole").GetOffset()
	if hole < 4096 || hole >= 1<<20 {
		t.Errorf("SEEK_HOLE 0 = %d, want the hole after the first block", hole)
	}
	if got := seek(hole, unix.SEEK_DATA).ok(t, "seek data after hole").GetOffset(); got <= hole || got > 1<<20 {
		t.Errorf("SEEK_DATA %d = %d, want the second block", hole, got)
	}
	if got := seek(1<<20, unix.SEEK_HOLE).ok(t, "seek hole at end").GetOffset(); got != size {
		t.Errorf("SEEK_HOLE at the last block = %d, want %d", got, size)
	}
	seek(size, unix.SEEK_DATA).fails(t, "seek data past end", syscall.ENXIO)
	seek(0, unix.SEEK_SET).fails(t, "SEEK_SET", syscall.EINVAL)
	call(e.c.Lseek(e.ctx(), &qtfsv1.LseekRequest{Handle: 1 << 50, Whence: unix.SEEK_DATA})).fails(t, "unknown handle", syscall.EBADF)
}

func testCopyFileRange(e *env) {
	t := e.t
	src := make([]byte, 100<<10)
	_, _ = rand.Read(src)
	mustHost(t, os.WriteFile(e.hp("src"), src, 0o644))
	e.write("dst", "0123456789")
	in := e.open(e.mrw, e.p("src"), unix.O_RDONLY).GetHandle()
	out := e.open(e.mrw, e.p("dst"), unix.O_RDWR).GetHandle()
	var done uint64
	for done < uint64(len(src)) {
		r := call(e.c.CopyFileRange(e.ctx(), &qtfsv1.CopyFileRangeRequest{HandleIn: in, OffsetIn: int64(done),
			HandleOut: out, OffsetOut: 10 + int64(done), Length: uint64(len(src)) - done})).ok(t, "copy_file_range")
		if r.GetCopied() == 0 {
			t.Fatalf("copy_file_range copied 0 at %d", done)
		}
		done += r.GetCopied()
	}
	got, err := os.ReadFile(e.hp("dst"))
	mustHost(t, err)
	if string(got[:10]) != "0123456789" || !bytes.Equal(got[10:], src) {
		t.Errorf("destination differs after copy_file_range")
	}
	call(e.c.CopyFileRange(e.ctx(), &qtfsv1.CopyFileRangeRequest{HandleIn: in, HandleOut: out, Length: 10, Flags: 1})).
		fails(t, "flags", syscall.EINVAL)
	call(e.c.CopyFileRange(e.ctx(), &qtfsv1.CopyFileRangeRequest{HandleIn: in, HandleOut: 1 << 50, Length: 10})).
		fails(t, "unknown out", syscall.EBADF)
	call(e.c.CopyFileRange(e.ctx(), &qtfsv1.CopyFileRangeRequest{HandleIn: 1 << 50, HandleOut: out, Length: 10})).
		fails(t, "unknown in", syscall.EBADF)
	call(e.c.CopyFileRange(e.ctx(), &qtfsv1.CopyFileRangeRequest{HandleIn: out, HandleOut: in, Length: 10})).
		fails(t, "into a read-only handle", syscall.EBADF)
}
