package hostfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// TestMountCreate mounts paths that are missing beneath an export with
// MountRequest.create: the server makes them as mkdir -p would, beneath
// the export and never through a symlink, as the caller, and says what it
// made.
func TestMountCreate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the directories are made with the caller's uid (fsuid); run the tests as root")
	}
	base := t.TempDir()
	rw, ro, ops, outside := filepath.Join(base, "rw"), filepath.Join(base, "ro"), filepath.Join(base, "ops"), filepath.Join(base, "outside")
	for _, d := range []string{rw, ro, ops, outside, rw + "/have/this", ro + "/have"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The caller below is not root: let it make directories in the rw
	// export and in have/this.
	for _, d := range []string{rw, rw + "/have/this"} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(rw+"/file", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, rw+"/escape"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("have", rw+"/inside"); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	reg := prometheus.NewRegistry()
	s, err := hostfs.New(hostfs.Options{
		Exports: []hostfs.Export{{Path: rw}, {Path: ro, ReadOnly: true}, {Path: ops, Ops: []string{"read"}}},
		Logger:  zap.New(core), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := s.DirectClient()
	t.Cleanup(func() { c.Close() })
	if _, err := c.Handshake(t.Context(), &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatal(err)
	}
	// Umask takes nothing from what Mount makes.
	old := syscall.Umask(0o077)
	t.Cleanup(func() { syscall.Umask(old) })
	const uid, gid = 4321, 4322
	caller := &qtfsv1.Caller{Uid: uid, Gid: gid}

	for _, tc := range []struct {
		name    string
		path    string
		create  bool
		errno   syscall.Errno
		created []string
	}{
		{"missing, without create", rw + "/a/b/c", false, syscall.ENOENT, nil},
		{"missing", rw + "/a/b/c", true, 0, []string{rw + "/a", rw + "/a/b", rw + "/a/b/c"}},
		{"there now", rw + "/a/b/c", true, 0, nil},
		{"partly there", rw + "/have/this/x/y", true, 0, []string{rw + "/have/this/x", rw + "/have/this/x/y"}},
		{"the export itself", rw, true, 0, nil},
		{"through a symlink out of the export", rw + "/escape/x", true, syscall.ELOOP, nil},
		{"through a symlink inside the export", rw + "/inside/x", true, syscall.ELOOP, nil},
		{"through a file", rw + "/file/x", true, syscall.ENOTDIR, nil},
		{"where the caller may not write", rw + "/have/y", true, syscall.EACCES, nil},
		{"read-only export, missing", ro + "/x/y", true, syscall.EROFS, nil},
		{"read-only export, there", ro + "/have", true, 0, nil},
		{"export without Mkdir, missing", ops + "/x", true, syscall.EPERM, nil},
		{"export without Mkdir, there", ops, true, 0, nil},
		{"outside every export", outside + "/x", true, syscall.EACCES, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := c.Mount(t.Context(), &qtfsv1.MountRequest{Path: []byte(tc.path), Caller: caller, Create: tc.create})
			if err != nil {
				t.Fatal(err)
			}
			if e := syscall.Errno(r.GetErrno()); e != tc.errno {
				t.Fatalf("errno %v, want %v", e, tc.errno)
			}
			var got []string
			for _, p := range r.GetCreated() {
				got = append(got, string(p))
			}
			if strings.Join(got, " ") != strings.Join(tc.created, " ") {
				t.Errorf("created %q, want %q", got, tc.created)
			}
			for _, p := range tc.created {
				fi, err := os.Stat(p)
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if !fi.IsDir() || fi.Mode().Perm() != 0o755 || st.Uid != uid || st.Gid != gid {
					t.Errorf("%s: %v, owner %d:%d; want a directory 0755 of %d:%d", p, fi.Mode(), st.Uid, st.Gid, uid, gid)
				}
			}
			if tc.errno == 0 && r.GetRoot().GetMode()&syscall.S_IFMT != syscall.S_IFDIR {
				t.Errorf("the mount's root: %+v", r.GetRoot())
			}
		})
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("made outside the export: %v", ents)
	}
	if _, err := os.Stat(ro + "/x"); err == nil {
		t.Error("made in the read-only export")
	}
	if n := gather(t, reg, "qtfs_server_mount_created_dirs_total", nil); n != 5 {
		t.Errorf("qtfs_server_mount_created_dirs_total = %v, want 5", n)
	}
	if n := gather(t, reg, "qtfs_server_refusals_total", map[string]string{"reason": "read_only"}); n < 1 {
		t.Errorf("the read-only refusal was not counted (%v)", n)
	}
	if n := gather(t, reg, "qtfs_server_refusals_total", map[string]string{"reason": "op_not_allowed"}); n < 1 {
		t.Errorf("the Mkdir refusal was not counted (%v)", n)
	}
	made := logs.FilterMessage("created host directories for a mount").All()
	if len(made) != 2 {
		t.Fatalf("%d log lines of made directories, want 2: %v", len(made), logs.All())
	}
	if f := made[0].ContextMap(); !strings.Contains(fmt.Sprint(f["created"]), rw+"/a/b/c") {
		t.Errorf("the log line does not name what was made: %v", f)
	}
}
