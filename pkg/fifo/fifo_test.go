package fifo

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/qtfs/qtfs/pkg/internal/buftest"
	"github.com/qtfs/qtfs/pkg/internal/testutil"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// rig is a host (an export) and a DPU (a root in which the host's path
// exists too, as in the offload chroot), joined by a Fifo service.
type rig struct {
	t      *testing.T
	export string // the host directory, exported
	root   string // the DPU's root; root+export is the DPU's copy
	srv    *Server
	b      *Bridger
	cc     *grpc.ClientConn
}

func newRig(t *testing.T) *rig {
	t.Helper()
	base := t.TempDir()
	r := &rig{t: t, export: filepath.Join(base, "host"), root: filepath.Join(base, "dpu")}
	if err := os.MkdirAll(r.export, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(r.root+r.export, 0o755); err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerOptions{Exports: []Export{{Path: r.export}}, Logger: zaptest.NewLogger(t).Named("host")})
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	l := buftest.Serve(t, nil, func(g *grpc.Server) { srv.Register(g) })
	r.cc = l.Dial(t)
	b, err := NewBridger(r.cc, BridgerOptions{Root: r.root, Logger: zaptest.NewLogger(t).Named("dpu")})
	if err != nil {
		t.Fatal(err)
	}
	r.b = b
	t.Cleanup(func() {
		b.Close()
		testutil.WaitFor(t, "the server's bridges to end", 10*time.Second, func() bool { return srv.active.Load() == 0 })
	})
	return r
}

// dpuFifo makes a FIFO on the DPU at the host path rel beneath the export
// and returns that path.
func (r *rig) dpuFifo(rel string) string {
	r.t.Helper()
	p := filepath.Join(r.export, rel)
	if err := os.MkdirAll(filepath.Dir(r.root+p), 0o755); err != nil {
		r.t.Fatal(err)
	}
	if err := unix.Mkfifo(r.root+p, 0o600); err != nil {
		r.t.Fatal(err)
	}
	return p
}

// async runs f in a goroutine and returns its result channel.
func async[T any](f func() (T, error)) <-chan struct {
	v   T
	err error
} {
	ch := make(chan struct {
		v   T
		err error
	}, 1)
	go func() {
		v, err := f()
		ch <- struct {
			v   T
			err error
		}{v, err}
	}()
	return ch
}

func readAll(p string) func() ([]byte, error) {
	return func() ([]byte, error) { return os.ReadFile(p) }
}

// TestToDPU: a host process writes (a shell, as the shim would), a DPU
// reader that opened first (as dockerd does) reads it all, then EOF.
func TestToDPU(t *testing.T) {
	r := newRig(t)
	p := r.dpuFifo("c1/init-stdout")
	got := async(readAll(r.root + p)) // waits for a writer, as dockerd's open does
	br, err := r.b.Start(p, ToDPU)
	if err != nil {
		t.Fatal(err)
	}
	if !br.Created {
		t.Error("the host FIFO was there before the bridge")
	}
	if fi, err := os.Lstat(p); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Fatalf("host FIFO: %v, %v", fi, err)
	}
	out, err := exec.Command("sh", "-c", "for i in 1 2 3; do echo line $i; done > "+p).CombinedOutput()
	if err != nil {
		t.Fatalf("host writer: %v %s", err, out)
	}
	select {
	case res := <-got:
		if res.err != nil || string(res.v) != "line 1\nline 2\nline 3\n" {
			t.Fatalf("the DPU read %q, %v", res.v, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the DPU reader saw no EOF")
	}
	<-br.Done()
	if !br.EOF() {
		t.Error("the bridge did not end with EOF")
	}
}

// TestFromDPU: a DPU writer sends 4 MiB and closes; the host reader gets
// every byte in order, then EOF.
func TestFromDPU(t *testing.T) {
	r := newRig(t)
	p := r.dpuFifo("c1/init-stdin")
	data := make([]byte, 4<<20)
	rand.Read(data)
	br, err := r.b.Start(p, FromDPU)
	if err != nil {
		t.Fatal(err)
	}
	got := async(readAll(p)) // the shim's reader on the host
	w, err := os.OpenFile(r.root+p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	w.Close()
	select {
	case res := <-got:
		if res.err != nil || !bytes.Equal(res.v, data) {
			t.Fatalf("the host read %d bytes (want %d), equal %v, %v", len(res.v), len(data), bytes.Equal(res.v, data), res.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the host reader saw no EOF")
	}
	select {
	case <-br.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the bridge did not end after EOF")
	}
	if !br.EOF() {
		t.Error("the bridge did not end with EOF")
	}
}

// TestOpensWaitForThePeerAcross: a FIFO's open waits for the other end;
// across the bridge the DPU reader's data waits until the host writer
// came, and a non-blocking open of the DPU's writer succeeds once the
// bridge reads (a reader exists, as on one machine).
func TestOpensWaitForThePeerAcross(t *testing.T) {
	r := newRig(t)
	out := r.dpuFifo("c/stdout")
	got := async(readAll(r.root + out))
	if _, err := r.b.Start(out, ToDPU); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-got:
		t.Fatalf("the DPU reader ended (%q, %v) before any host writer", res.v, res.err)
	case <-time.After(300 * time.Millisecond):
	}
	os.WriteFile(out, []byte("late\n"), 0)
	if res := <-got; string(res.v) != "late\n" {
		t.Fatalf("read %q, %v", res.v, res.err)
	}

	in := r.dpuFifo("c/stdin")
	if _, err := r.b.Start(in, FromDPU); err != nil {
		t.Fatal(err)
	}
	var fd int
	testutil.WaitFor(t, "a non-blocking writer open on the DPU to succeed", 10*time.Second, func() bool {
		var err error
		fd, err = unix.Open(r.root+in, unix.O_WRONLY|unix.O_NONBLOCK, 0)
		return err == nil
	})
	unix.Write(fd, []byte("x"))
	host := async(readAll(in))
	unix.Close(fd)
	if res := <-host; string(res.v) != "x" {
		t.Fatalf("host read %q, %v", res.v, res.err)
	}
}

// TestNothingLeftBehind: bridges whose peers never come, or go away,
// end without a goroutine or a waiting open left on either side.
func TestNothingLeftBehind(t *testing.T) {
	r := newRig(t)
	t.Run("container that never opens its FIFOs", func(t *testing.T) {
		p := r.dpuFifo("gone/init-stdout")
		dpu := async(readAll(r.root + p)) // dockerd's reader
		br, err := r.b.Start(p, ToDPU)
		if err != nil {
			t.Fatal(err)
		}
		in := r.dpuFifo("gone/init-stdin")
		bin, err := r.b.Start(in, FromDPU)
		if err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, "both host ends to wait", 10*time.Second, func() bool { return r.srv.active.Load() == 2 })
		br.Close()
		bin.Close()
		testutil.WaitFor(t, "the host ends to be released", 10*time.Second, func() bool { return r.srv.active.Load() == 0 })
		if r.b.Active() != 0 {
			t.Fatalf("%d bridges live", r.b.Active())
		}
		// dockerd's own reader is its business: release it as dockerd
		// does on a failed start.
		unix.Open(r.root+p, unix.O_WRONLY|unix.O_NONBLOCK, 0)
		<-dpu
	})
	t.Run("DPU reader dies", func(t *testing.T) {
		p := r.dpuFifo("die/init-stdout")
		rd := async(func() (*os.File, error) { return os.Open(r.root + p) })
		br, err := r.b.Start(p, ToDPU)
		if err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(p, os.O_WRONLY, 0) // the shim
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		f := (<-rd).v
		f.Close() // dockerd died
		// The shim keeps writing; the bridge ends on its next write.
		for i := 0; i < 20; i++ {
			w.Write([]byte("more output\n"))
			select {
			case <-br.Done():
				i = 20
			case <-time.After(50 * time.Millisecond):
			}
		}
		select {
		case <-br.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the bridge outlived its DPU reader")
		}
		testutil.WaitFor(t, "the host end to close", 10*time.Second, func() bool { return r.srv.active.Load() == 0 })
	})
	t.Run("host writer dies mid-stream", func(t *testing.T) {
		p := r.dpuFifo("crash/init-stdout")
		got := async(readAll(r.root + p))
		if _, err := r.b.Start(p, ToDPU); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", "echo started > "+p+"; exec sleep 30 > "+p)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		cmd.Process.Kill()
		cmd.Wait()
		select {
		case res := <-got:
			if string(res.v) != "started\n" {
				t.Fatalf("read %q, %v", res.v, res.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no EOF on the DPU after the host writer was killed")
		}
	})
}

// TestManyAtOnce: 64 FIFOs, both directions, at the same time.
func TestManyAtOnce(t *testing.T) {
	r := newRig(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 32; i++ {
		out := r.dpuFifo(fmt.Sprintf("m%d/stdout", i))
		in := r.dpuFifo(fmt.Sprintf("m%d/stdin", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := strings.Repeat(fmt.Sprintf("%d ", i), 10000)
			got := async(readAll(r.root + out))
			if _, err := r.b.Start(out, ToDPU); err != nil {
				errs <- err
				return
			}
			if _, err := r.b.Start(in, FromDPU); err != nil {
				errs <- err
				return
			}
			hostIn := async(readAll(in))
			if err := os.WriteFile(r.root+in, []byte(want), 0); err != nil {
				errs <- err
				return
			}
			if err := os.WriteFile(out, []byte(want), 0); err != nil {
				errs <- err
				return
			}
			if res := <-got; string(res.v) != want {
				errs <- fmt.Errorf("%s: DPU read %d bytes, want %d", out, len(res.v), len(want))
			}
			if res := <-hostIn; string(res.v) != want {
				errs <- fmt.Errorf("%s: host read %d bytes, want %d", in, len(res.v), len(want))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	testutil.WaitFor(t, "every bridge to end", 10*time.Second, func() bool { return r.b.Active() == 0 })
}

// TestExitsAtOnce: the host process opens and closes its end without a
// byte (a container that exits at once): the DPU reads EOF.
func TestExitsAtOnce(t *testing.T) {
	r := newRig(t)
	p := r.dpuFifo("quick/init-stdout")
	got := async(readAll(r.root + p))
	if _, err := r.b.Start(p, ToDPU); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-c", "true > "+p).CombinedOutput(); err != nil {
		t.Fatal(err, string(out))
	}
	select {
	case res := <-got:
		if len(res.v) != 0 || res.err != nil {
			t.Fatalf("read %q, %v", res.v, res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no EOF")
	}
}

// hostOpen sends an open for path straight to the server and returns the
// errno of its answer (0 for ready).
func (r *rig) hostOpen(path string) syscall.Errno {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := qtfsv1.NewFifoClient(r.cc).Bridge(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	stream.Send(&qtfsv1.FifoRequest{Msg: &qtfsv1.FifoRequest_Open{Open: &qtfsv1.FifoOpen{Path: []byte(path), Direction: qtfsv1.FifoDirection_FIFO_DIRECTION_TO_DPU}}})
	resp, err := stream.Recv()
	if err != nil {
		r.t.Fatal(err)
	}
	if resp.GetReady() != nil {
		return 0
	}
	return syscall.Errno(resp.GetError().GetErrno())
}

// TestConfined: the host side makes, opens and removes only FIFOs
// beneath its exports, never through a symlink.
func TestConfined(t *testing.T) {
	r := newRig(t)
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(r.export, "link"))
	os.WriteFile(filepath.Join(r.export, "regular"), []byte("x"), 0o644)
	for _, tc := range []struct {
		name, path string
		want       syscall.Errno
	}{
		{"not exported", filepath.Join(outside, "f"), syscall.EACCES},
		{"through a symlink", filepath.Join(r.export, "link", "f"), syscall.ELOOP}, // as every walk of the server
		{"a symlink itself", filepath.Join(r.export, "link"), syscall.EINVAL},
		{"dot-dot", r.export + "/a/../../f", syscall.EINVAL},
		{"relative", "host/f", syscall.EINVAL},
		{"the export itself", r.export, syscall.EACCES},
		{"not a FIFO", filepath.Join(r.export, "regular"), syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e := r.hostOpen(tc.path); e != tc.want {
				t.Fatalf("open %s: %v, want %v", tc.path, e, tc.want)
			}
		})
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("something was made outside the export: %v", ents)
	}
	if err := r.b.Remove(context.Background(), []string{filepath.Join(r.export, "regular")}); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("Remove of a regular file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.export, "regular")); err != nil {
		t.Fatal("Remove removed a regular file")
	}
	// The DPU side resolves its paths inside its root: an absolute
	// symlink there leads into the root, not to the DPU's own tree.
	os.Symlink("/elsewhere", r.root+filepath.Join(r.export, "abs"))
	os.MkdirAll(r.root+"/elsewhere", 0o755)
	unix.Mkfifo(r.root+"/elsewhere/f", 0o600)
	if got, err := r.b.Resolve(filepath.Join(r.export, "abs", "f")); err != nil || got != "/elsewhere/f" {
		t.Fatalf("Resolve through an absolute symlink of the root: %q, %v", got, err)
	}
}

// TestRemove removes the FIFOs a bridge made and their emptied directory.
func TestRemove(t *testing.T) {
	r := newRig(t)
	out, errp := r.dpuFifo("rm/init-stdout"), r.dpuFifo("rm/init-stderr")
	for _, p := range []string{out, errp} {
		dpu := async(readAll(r.root + p))
		br, err := r.b.Start(p, ToDPU)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(p, nil, 0)
		<-dpu
		<-br.Done()
	}
	if err := r.b.Remove(context.Background(), []string{out, errp, filepath.Join(r.export, "rm/absent")}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(r.export, "rm")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the FIFOs' directory is left: %v", err)
	}
}

var _ io.Reader = (*os.File)(nil)
