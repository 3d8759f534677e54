package fuseclient

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
)

// TestMountRefuses checks the errors Mount returns before it mounts
// anything.
func TestMountRefuses(t *testing.T) {
	export := t.TempDir()
	if err := os.WriteFile(filepath.Join(export, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: export}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cc := buftest.Serve(t, srv.ServerOptions(), srv.Register).Dial(t)
	s, err := session.New(context.Background(), cc, "fuseclient-test", zaptest.NewLogger(t), session.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, remote, want string
	}{
		{"relative", "srv/data", "must be absolute"},
		{"not exported", "/", "mount /: "},
		{"missing", export + "/missing", "no such file"},
		{"not a directory", export + "/file", "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Mount(context.Background(), s, t.TempDir(), MountOptions{RemotePath: tc.remote})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Mount(%q) error %v, want one with %q", tc.remote, err, tc.want)
			}
		})
	}
	if _, err := Mount(context.Background(), nil, t.TempDir(), MountOptions{RemotePath: export}); err == nil {
		t.Error("Mount without a session succeeded")
	}
}
