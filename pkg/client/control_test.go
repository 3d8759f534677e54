package client

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/qtfs/qtfs/pkg/chroot"
)

// TestControlStatus: the control sockets of a mount daemon and of a run
// daemon answer GET /status with what their status function says when
// asked, PrintStatus lists both, and Close removes the socket.
func TestControlStatus(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"client", "run"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := zaptest.NewLogger(t)
	var asked atomic.Int32
	mountSock := controlSocket(filepath.Join(dir, "client"), 10)
	mount, err := startControl(mountSock, func(context.Context) any {
		asked.Add(1)
		return Status{PID: 10, Mountpoint: "/mnt/a", Remote: "qtfs:h:/srv", Server: "unix:///s", RTT: 3 * time.Millisecond}
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer mount.Close()
	run, err := startControl(controlSocket(filepath.Join(dir, "run"), 11), func(context.Context) any {
		return RunStatus{PID: 11, Root: "/var/lib/qtfs/root", Server: "tcp://h:12121", State: StateReady,
			Mounts:  []RunMount{{Path: "/proc", Mountpoint: "/var/lib/qtfs/root/proc", Kind: chroot.Remote.String(), Source: "h:/proc"}},
			Proxies: []RunProxy{{Listen: "/var/lib/qtfs/root/run/containerd.sock", Host: "/run/containerd/containerd.sock"}}}
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer run.Close()

	if fi, err := os.Stat(mountSock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v, %v; want mode 0600", fi, err)
	}
	ctx := t.Context()
	var st Status
	if err := getStatus(ctx, mountSock, &st); err != nil || st.Mountpoint != "/mnt/a" || st.RTT != 3*time.Millisecond {
		t.Fatalf("status: %+v, %v", st, err)
	}
	var out bytes.Buffer
	if err := PrintStatus(ctx, &out, dir); err != nil {
		t.Fatal(err)
	}
	if got := asked.Load(); got != 2 {
		t.Errorf("the mount daemon's status was made %d times, want once per GET (2)", got)
	}
	for _, want := range []string{
		"/mnt/a  qtfs:h:/srv  unix:///s  3ms",
		"/var/lib/qtfs/root/proc  h:/proc  tcp://h:12121",
		"/var/lib/qtfs/root/run/containerd.sock  /run/containerd/containerd.sock",
		"/var/lib/qtfs/root  tcp://h:12121",
	} {
		if !containsSpaced(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	if err := mount.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(mountSock); !os.IsNotExist(err) {
		t.Errorf("control socket after Close: %v, want it removed", err)
	}
}

// containsSpaced reports whether s has a line with the fields of want in
// a row, however the table spaced them.
func containsSpaced(s, want string) bool {
	w := strings.Join(strings.Fields(want), " ")
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(strings.Join(strings.Fields(line), " "), w) {
			return true
		}
	}
	return false
}
