package hostfs_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/proctest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// procServer serves the host's /proc, read-only.
func procServer(t *testing.T) (*hostfs.DirectClient, uint64) {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/proc", &st); err != nil || uint64(st.Type) != unix.PROC_SUPER_MAGIC {
		t.Skip("skipped: /proc is not a proc filesystem here")
	}
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: "/proc", ReadOnly: true}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return session(t, s, "/proc")
}

// TestMagicLinksNotFollowed checks that the magic links of a process read
// back the host's text and are never followed by the server.
func TestMagicLinksNotFollowed(t *testing.T) {
	c, m := procServer(t)
	ctx := t.Context()
	pid := strconv.Itoa(proctest.Sleeper(t).Process.Pid)
	for _, name := range []string{"exe", "cwd", "root", "fd/0", "ns/net", "ns/pid"} {
		t.Run(name, func(t *testing.T) {
			want, err := os.Readlink("/proc/" + pid + "/" + name)
			if err != nil {
				t.Skipf("skipped: %v", err)
			}
			p := []byte(pid + "/" + name)
			r, err := c.Readlink(ctx, &qtfsv1.ReadlinkRequest{Mount: m, Caller: root, Path: p})
			if err != nil || r.GetErrno() != 0 || string(r.GetTarget()) != want {
				t.Errorf("readlink: %q errno %d %v; want %q", r.GetTarget(), r.GetErrno(), err, want)
			}
			a, err := c.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: m, Caller: root, Path: p})
			if err != nil || a.GetAttr().GetMode()&unix.S_IFMT != unix.S_IFLNK {
				t.Errorf("getattr: %v %v; want a symlink", a, err)
			}
			o, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: p})
			if err != nil || o.GetErrno() != int32(syscall.ELOOP) {
				t.Errorf("open through the link: %v %v; want ELOOP", o, err)
			}
			o, err = c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: append(p, "/x"...)})
			if err != nil || (o.GetErrno() != int32(syscall.ELOOP) && o.GetErrno() != int32(syscall.ENOTDIR)) {
				t.Errorf("walk through the link: %v %v; want ELOOP", o, err)
			}
		})
	}
}

// TestVanishedProcess checks the errors of a process that ended: ESRCH
// for a file opened before, ENOENT for a lookup after, as on the host.
func TestVanishedProcess(t *testing.T) {
	c, m := procServer(t)
	ctx := t.Context()
	cmd := proctest.Sleeper(t)
	pid := strconv.Itoa(cmd.Process.Pid)
	o, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte(pid + "/status")})
	if err != nil || o.GetErrno() != 0 {
		t.Fatalf("open: %v %v", o, err)
	}
	defer c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: o.GetHandle()})
	host, err := os.Open("/proc/" + pid + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	_, hostErr := host.ReadAt(make([]byte, 4096), 0)
	var want syscall.Errno
	if e, ok := hostErr.(*os.PathError); ok {
		want, _ = e.Err.(syscall.Errno)
	}
	if want == 0 {
		t.Fatalf("host read of an ended process: %v", hostErr)
	}
	r, err := c.Read(ctx, &qtfsv1.ReadRequest{Handle: o.GetHandle(), Size: 4096})
	if err != nil || syscall.Errno(r.GetErrno()) != want {
		t.Errorf("read of an ended process's file: errno %v %v; host %v", syscall.Errno(r.GetErrno()), err, want)
	}
	l, err := c.Lookup(ctx, &qtfsv1.LookupRequest{Mount: m, Caller: root, Name: []byte(pid)})
	if err != nil || l.GetErrno() != int32(syscall.ENOENT) {
		t.Errorf("lookup of an ended process: %v %v; want ENOENT", l, err)
	}
}

// TestNonSeekableFiles checks that a file refusing positions (a fifo
// here, as some proc and sysfs files) is written and read with write(2)
// and read(2): one host call per request.
func TestNonSeekableFiles(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: dir}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, m := session(t, s, dir)
	ctx := t.Context()
	o, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte("fifo"), Flags: unix.O_RDWR})
	if err != nil || o.GetErrno() != 0 {
		t.Fatalf("open fifo: %v %v", o, err)
	}
	defer c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: o.GetHandle()})
	for i, data := range []string{"first write", "second"} {
		w, err := c.Write(ctx, &qtfsv1.WriteRequest{Handle: o.GetHandle(), Offset: int64(100 * i), Data: []byte(data)})
		if err != nil || w.GetErrno() != 0 || int(w.GetWritten()) != len(data) {
			t.Fatalf("write %d: %v %v", i, w, err)
		}
	}
	r, err := c.Read(ctx, &qtfsv1.ReadRequest{Handle: o.GetHandle(), Offset: 42, Size: 64})
	if err != nil || r.GetErrno() != 0 || !bytes.Equal(r.GetData(), []byte("first writesecond")) {
		t.Errorf("read: %q errno %d %v", r.GetData(), r.GetErrno(), err)
	}
}

// TestOpenReadsAlso checks OpenRequest.read_also: the files named beside
// a small proc file read whole come back whole, with their attributes;
// names that are missing, too large or not regular files are left out;
// a bad name or too many refuse the call; nothing is read for a file the
// inline read did not take whole.
func TestOpenReadsAlso(t *testing.T) {
	c, m := procServer(t)
	ctx := t.Context()
	pid := strconv.Itoa(proctest.Sleeper(t).Process.Pid)
	proctest.WaitAsleep(t, pid)
	open := func(name string, also ...string) *qtfsv1.OpenResponse {
		t.Helper()
		req := &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte(pid + "/" + name),
			ReadInline: 64 << 10, CloseAtEof: true}
		for _, a := range also {
			req.ReadAlso = append(req.ReadAlso, []byte(a))
		}
		o, err := c.Open(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	// smaps is larger than a read ahead takes (16 KiB) for a process
	// with a few mappings; task is a directory; nosuch is missing.
	o := open("stat", "status", "nosuch", "task", "cmdline")
	if o.GetErrno() != 0 || !o.GetClosed() {
		t.Fatalf("open: %v", o)
	}
	got := map[string]*qtfsv1.ReadAlso{}
	for _, f := range o.GetAlsoRead() {
		got[string(f.GetName())] = f
	}
	if len(got) != 2 || got["status"] == nil || got["cmdline"] == nil {
		t.Fatalf("read along: %v; want status and cmdline", got)
	}
	for name, f := range got {
		host, err := os.ReadFile("/proc/" + pid + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(proctest.WithoutSigQ(f.GetData()), proctest.WithoutSigQ(host)) {
			t.Errorf("%s read along: %q; host %q", name, f.GetData(), host)
		}
		var st unix.Stat_t
		if err := unix.Stat("/proc/"+pid+"/"+name, &st); err != nil || f.GetAttr().GetIno() != st.Ino {
			t.Errorf("%s read along: attributes %v; host ino %d (%v)", name, f.GetAttr(), st.Ino, err)
		}
	}
	for _, tc := range []struct {
		name string
		also []string
	}{
		{"bad name", []string{"../stat"}},
		{"too many", []string{"status", "cmdline", "statm", "comm", "io"}},
	} {
		if o := open("stat", tc.also...); o.GetErrno() != int32(syscall.EINVAL) {
			t.Errorf("%s: errno %d, want EINVAL", tc.name, o.GetErrno())
		}
	}
	// Not read whole by the inline read: nothing read along.
	req := &qtfsv1.OpenRequest{Mount: m, Caller: root, Path: []byte(pid + "/status"), ReadInline: 16,
		CloseAtEof: true, ReadAlso: [][]byte{[]byte("stat")}}
	if o, err := c.Open(ctx, req); err != nil || o.GetErrno() != 0 || len(o.GetAlsoRead()) != 0 {
		t.Errorf("open not read whole: %v %v; want nothing read along", o, err)
	} else {
		c.Release(ctx, &qtfsv1.ReleaseRequest{Handle: o.GetHandle()})
	}
}
