package fuseclient

// The mount of this test is served by the test process itself, so every
// access to it is made by a child process (dd), never by the test.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/fs/session/sessiontest"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
)

// fastTiming paces the session's watchdog quickly enough for tests.
var fastTiming = session.Timing{
	Watch:        50 * time.Millisecond,
	ProbeAfter:   300 * time.Millisecond,
	ProbeTimeout: 300 * time.Millisecond,
	RetryProbe:   200 * time.Millisecond,
	BackoffMin:   10 * time.Millisecond,
	BackoffMax:   100 * time.Millisecond,
	KillCheck:    0,
}

// dialFlaky opens a session with fs through its proxy, with a reconnect
// timeout of timeout, and registers its metrics on reg.
func dialFlaky(t *testing.T, fs *sessiontest.Server, timeout time.Duration, reg *prometheus.Registry) *session.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tm := fastTiming
	s, err := session.New(ctx, fs.Dial(t), "parts-cancel-test", zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)),
		session.Options{ReconnectTimeout: timeout, Timing: &tm, DialChannel: fs.DialChannel})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.RegisterMetrics(reg); err != nil {
		t.Fatal(err)
	}
	return s
}

// counter is the value of counter name with labels in reg; 0 when reg
// has none.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if labels[lp.GetName()] != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// mountFlaky mounts fs's export, served by this process through session
// s, with an operation timeout of opTimeout.
func mountFlaky(t *testing.T, fs *sessiontest.Server, s *session.Session, opTimeout time.Duration) string {
	t.Helper()
	mnt := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server, err := Mount(ctx, s, mnt, MountOptions{
		RemotePath: fs.Export,
		OpTimeout:  opTimeout,
		Logger:     zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named("mount"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		var err error
		for range 50 {
			if err = server.Unmount(); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("unmount %s: %v; detaching it", mnt, err)
		_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
	})
	return mnt
}

// TestKilledCallerCancelsParts: a process blocked in a 4 MiB write or
// direct read, which the client sends as several parts at once, is killed
// with SIGKILL while the server answers none of them. Every part is
// cancelled (the server sees each call cancelled, the client counts each
// as CallerKilled) long before the operation timeout, the process is
// gone, and the mount still works.
func TestKilledCallerCancelsParts(t *testing.T) {
	testutil.RequireFUSE(t, "dd")
	const size = 4 << 20
	const opTimeout = time.Minute
	// The kernel sends at most max_write (1 MiB) per request; the client
	// splits it into parts of ioPart.
	const parts = session.MaxChunk / ioPart
	for _, tc := range []struct {
		name, op string
		dd       func(mnt string) []string
	}{
		{"write", "Write", func(mnt string) []string {
			return []string{"if=/dev/zero", "of=" + filepath.Join(mnt, "f"), "bs=4M", "count=1", "conv=notrunc"}
		}},
		{"direct read", "Read", func(mnt string) []string {
			return []string{"if=" + filepath.Join(mnt, "f"), "of=/dev/null", "bs=4M", "count=1", "iflag=direct"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := sessiontest.NewServer(t)
			if err := os.WriteFile(filepath.Join(fs.Export, "f"), bytes.Repeat([]byte("q"), size), 0o644); err != nil {
				t.Fatal(err)
			}
			reg := prometheus.NewRegistry()
			s := dialFlaky(t, fs, 10*time.Second, reg)
			mnt := mountFlaky(t, fs, s, opTimeout)
			fs.Stall.Store(tc.op)

			dd := exec.Command("dd", tc.dd(mnt)...)
			var out bytes.Buffer
			dd.Stdout, dd.Stderr = &out, &out
			if err := dd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { dd.Wait(); close(exited) }()
			t.Cleanup(func() {
				dd.Process.Kill()
				select {
				case <-exited:
				case <-time.After(opTimeout + 10*time.Second):
					t.Errorf("dd %d never exited", dd.Process.Pid)
				}
			})
			testutil.WaitFor(t, "the parts waiting on the server", 20*time.Second, func() bool {
				select {
				case <-exited:
					t.Fatalf("dd ended with the server answering nothing: %s", out.String())
				default:
				}
				return fs.Stalled.Load() == parts
			})

			killed := time.Now()
			if err := dd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			// Far below the operation timeout: only cancelling the parts
			// ends them this soon.
			const bound = 5 * time.Second
			select {
			case <-exited:
			case <-time.After(bound):
				t.Fatalf("the killed dd still waits for the server %v after SIGKILL", bound)
			}
			callerKilled := func() float64 {
				return counter(t, reg, "qtfs_client_rpc_errors_total", map[string]string{"op": tc.op, "code": "CallerKilled"})
			}
			testutil.WaitFor(t, "every part cancelled", bound-time.Since(killed), func() bool {
				return fs.Stalled.Load() == 0 && fs.Cancelled.Load() == parts && callerKilled() == parts
			})
			t.Logf("dd killed: %d parts cancelled within %v", parts, time.Since(killed).Round(time.Millisecond))

			// The mount answers: a large write and a direct read go through.
			fs.Stall.Store("")
			for _, args := range [][]string{
				{"if=/dev/zero", "of=" + filepath.Join(mnt, "g"), "bs=1M", "count=5"},
				{"if=" + filepath.Join(mnt, "g"), "of=/dev/null", "bs=4M", "iflag=direct"},
			} {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				b, err := exec.CommandContext(ctx, "dd", args...).CombinedOutput()
				cancel()
				if err != nil {
					t.Fatalf("dd %v after the kill: %v: %s", args, err, b)
				}
			}
			if st, err := os.Stat(filepath.Join(fs.Export, "g")); err != nil || st.Size() != 5<<20 {
				t.Fatalf("host file written after the kill: %v, %v", st, err)
			}
			if n := fs.Cancelled.Load(); n != parts {
				t.Fatalf("%d calls cancelled, want %d", n, parts)
			}
		})
	}
}
