package hostexec

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func TestFilterEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		deny []string
		want []string
	}{
		{"default deny drops the loader variables", []string{"A=1", "LD_PRELOAD=/x.so", "LD_LIBRARY_PATH=/l", "LD_AUDIT=/a", "B=2"}, DefaultEnvDeny, []string{"A=1", "B=2"}},
		{"prefix entries", []string{"QTFS_SERVER=x", "QTFS=y", "QT=z"}, []string{"QTFS_*"}, []string{"QTFS=y", "QT=z"}},
		{"empty deny keeps all", []string{"LD_PRELOAD=/x.so"}, []string{}, []string{"LD_PRELOAD=/x.so"}},
		{"malformed entries dropped", []string{"noequals", "=v", "OK=", "N\x00UL=1"}, nil, []string{"OK="}},
		{"later duplicate wins in place", []string{"A=1", "B=2", "A=3"}, nil, []string{"A=3", "B=2"}},
		{"value may hold =", []string{"A=b=c"}, nil, []string{"A=b=c"}},
		{"nothing gives empty, not nil", nil, nil, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var in [][]byte
			for _, e := range tc.env {
				in = append(in, []byte(e))
			}
			got := filterEnv(in, tc.deny)
			if got == nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("filterEnv = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestCheckAllowEntry(t *testing.T) {
	for _, tc := range []struct {
		entry string
		ok    bool
	}{
		{"/usr/bin/runc", true},
		{"runc", true},
		{"", false},
		{"bin/runc", false},
		{"./runc", false},
		{"/usr/bin/ru\x00nc", false},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			if err := checkAllowEntry(tc.entry); (err == nil) != tc.ok {
				t.Fatalf("checkAllowEntry(%q) = %v, want ok=%v", tc.entry, err, tc.ok)
			}
		})
	}
}

func TestResolveAndAllow(t *testing.T) {
	trueReal, err := filepath.EvalSymlinks(mustLookPath(t, "true"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	link := filepath.Join(dir, "link-to-true")
	if err := os.Symlink(mustLookPath(t, "true"), link); err != nil {
		t.Fatal(err)
	}
	chain := filepath.Join(dir, "chain")
	if err := os.Symlink(link, chain); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, bin string
		want      string
		code      int32
	}{
		{"name in PATH", "true", trueReal, 0},
		{"absolute", trueReal, trueReal, 0},
		{"symlink chain", chain, trueReal, 0},
		{"missing name", "no-such-binary-qtfs", "", CodeNotFound},
		{"missing path", "/no/such/binary", "", CodeNotFound},
		{"relative path", "./true", "", CodeCannotRun},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolve(tc.bin)
			if tc.code != 0 {
				re, ok := err.(*runError)
				if !ok || re.code != tc.code {
					t.Fatalf("resolve(%q) = %q, %v; want code %d", tc.bin, got, err, tc.code)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("resolve(%q) = %q, %v; want %q", tc.bin, got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		allow []string
		ok    bool
	}{
		{"by name", []string{"true"}, true},
		{"through a symlink entry", []string{link}, true},
		{"other binary", []string{"false"}, false},
		{"empty list", nil, false},
		{"entry that does not exist", []string{"/no/such/true"}, false},
	} {
		t.Run("allowed/"+tc.name, func(t *testing.T) {
			if got := allowed(tc.allow, trueReal); got != tc.ok {
				t.Fatalf("allowed(%v, %s) = %v", tc.allow, trueReal, got)
			}
		})
	}
}

func mustLookPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s in PATH: %v", name, err)
	}
	return p
}

func TestOpenFiles(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(data, []byte("0123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	file := func(fd uint32, path string, flags int, off int64) *qtfsv1.ExecFile {
		return &qtfsv1.ExecFile{Fd: fd, Path: []byte(path), Flags: uint32(flags), Offset: off}
	}
	t.Run("placed at their numbers, gaps are /dev/null", func(t *testing.T) {
		extra, err := openFiles([]*qtfsv1.ExecFile{
			file(6, data, unix.O_WRONLY|unix.O_APPEND|unix.O_TRUNC|unix.O_CREAT, 0),
			file(4, data, unix.O_RDONLY, 3),
		})
		if err != nil {
			t.Fatal(err)
		}
		defer closeFiles(extra)
		if len(extra) != 4 {
			t.Fatalf("%d extra files, want 4 (fds 3..6)", len(extra))
		}
		for i, want := range []string{os.DevNull, data, os.DevNull, data} {
			if got := extra[i].Name(); got != want {
				t.Errorf("fd %d is %s, want %s", i+3, got, want)
			}
		}
		b := make([]byte, 3)
		if n, _ := extra[1].Read(b); string(b[:n]) != "345" {
			t.Errorf("fd 4 read %q at its offset, want 345", b[:n])
		}
		fl, _ := unix.FcntlInt(extra[3].Fd(), unix.F_GETFL, 0)
		if fl&unix.O_ACCMODE != unix.O_WRONLY || fl&unix.O_APPEND == 0 {
			t.Errorf("fd 6 flags %#o, want O_WRONLY|O_APPEND", fl)
		}
		if fi, _ := os.Stat(data); fi.Size() != 10 {
			t.Errorf("O_TRUNC was not dropped: size %d", fi.Size())
		}
	})
	for _, tc := range []struct {
		name  string
		files []*qtfsv1.ExecFile
		want  string
	}{
		{"fd below 3", []*qtfsv1.ExecFile{file(2, data, 0, 0)}, "between 3"},
		{"fd too high", []*qtfsv1.ExecFile{file(maxPassedFD, data, 0, 0)}, "between 3"},
		{"duplicate", []*qtfsv1.ExecFile{file(5, data, 0, 0), file(5, data, 0, 0)}, "twice"},
		{"missing", []*qtfsv1.ExecFile{file(3, filepath.Join(dir, "nope"), 0, 0)}, "no such file"},
		{"relative", []*qtfsv1.ExecFile{file(3, "data", 0, 0)}, "absolute"},
		{"not clean", []*qtfsv1.ExecFile{file(3, dir+"/../x", 0, 0)}, "absolute"},
		{"device", []*qtfsv1.ExecFile{file(3, os.DevNull, 0, 0)}, "not a regular file"},
		{"fifo does not block", []*qtfsv1.ExecFile{file(3, fifo, unix.O_WRONLY, 0)}, "no such device or address"},
		{"directory", []*qtfsv1.ExecFile{file(3, dir, 0, 0)}, "not a regular file"},
		{"negative offset", []*qtfsv1.ExecFile{file(3, data, 0, -1)}, "negative offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			extra, err := openFiles(tc.files)
			if err == nil {
				closeFiles(extra)
				t.Fatalf("openFiles succeeded, want an error with %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestPTY(t *testing.T) {
	m, s, err := openPTY()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer m.Close()
	defer s.Close()
	if err := setWindow(m, &qtfsv1.WindowSize{Rows: 33, Cols: 101}); err != nil {
		t.Fatal(err)
	}
	ws, err := unix.IoctlGetWinsize(int(s.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		t.Fatal(err)
	}
	if ws.Row != 33 || ws.Col != 101 {
		t.Fatalf("slave window %dx%d, want 33x101", ws.Row, ws.Col)
	}
	if c := eofChar(m); c != 4 {
		t.Errorf("VEOF = %d, want 4", c)
	}
	if _, err := s.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, err := m.Read(b)
	if err != nil || !strings.HasPrefix(string(b[:n]), "ping\r\n") {
		t.Fatalf("master read %q, %v; want ping\\r\\n (ONLCR)", b[:n], err)
	}
	// The slave closed, the master reads EIO: the end of output.
	s.Close()
	if _, err := m.Read(b); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read after slave close: %v, want EIO", err)
	}
}
