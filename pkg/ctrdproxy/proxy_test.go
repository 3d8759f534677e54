package ctrdproxy

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/qtfs/qtfs/pkg/fifo"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
)

// fakeContainerd stands for the host's containerd and its shim: it
// records what it is sent and, for a task's create, opens the stdout FIFO
// it names as the shim does (a writer, on the host) and writes into it.
type fakeContainerd struct {
	stop  chan struct{} // ends the ticker container
	mu    sync.Mutex
	calls map[string][][]byte
	md    map[string]metadata.MD
}

func (f *fakeContainerd) handle(_ any, ss grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(ss)
	var req frame
	if err := ss.RecvMsg(&req); err != nil {
		return err
	}
	md, _ := metadata.FromIncomingContext(ss.Context())
	f.mu.Lock()
	f.calls[method] = append(f.calls[method], req.b)
	f.md[method] = md
	f.mu.Unlock()
	switch method {
	case methodCreateTask:
		out := getString(req.b, createTaskStdout)
		if getString(req.b, createTaskContainerID) == "ticker" {
			// A shim whose container writes a line every 10 ms, holding
			// a reader of its own as containerd's shim does.
			hold, err := os.OpenFile(out, os.O_RDONLY|unix.O_NONBLOCK, 0)
			if err != nil {
				return err
			}
			w, err := os.OpenFile(out, os.O_WRONLY, 0)
			if err != nil {
				hold.Close()
				return err
			}
			go func() {
				defer hold.Close()
				defer w.Close()
				for {
					select {
					case <-f.stop:
						return
					case <-time.After(10 * time.Millisecond):
						w.Write([]byte("tick\n"))
					}
				}
			}()
			break
		}
		if fi, err := os.Stat(out); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			return status.Errorf(codes.FailedPrecondition, "shim: %s is not a FIFO on the host: %v", out, err)
		}
		w, err := os.OpenFile(out, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		w.Write([]byte("hello from the shim\n"))
		w.Close()
	case "/test.Missing/Call":
		ss.SetTrailer(metadata.Pairs("why", "missing"))
		return status.Error(codes.NotFound, "no such thing")
	}
	ss.SendHeader(metadata.Pairs("served-by", "host"))
	return ss.SendMsg(&frame{[]byte("reply to " + method)})
}

type rig struct {
	export, root string
	host         *fakeContainerd
	bridger      *fifo.Bridger
	client       *grpc.ClientConn
}

func newRig(t *testing.T) *rig {
	t.Helper()
	base := t.TempDir()
	r := &rig{export: filepath.Join(base, "host"), root: filepath.Join(base, "dpu"),
		host: &fakeContainerd{calls: map[string][][]byte{}, md: map[string]metadata.MD{}, stop: make(chan struct{})}}
	t.Cleanup(func() { close(r.host.stop) })
	os.MkdirAll(r.export, 0o755)
	os.MkdirAll(r.root+r.export, 0o755)
	// containerd on the host.
	sock := filepath.Join(base, "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.UnknownServiceHandler(r.host.handle), grpc.ForceServerCodec(rawCodec{}))
	go g.Serve(l)
	t.Cleanup(g.Stop)
	// The Fifo service of the host, and the DPU's bridges.
	fsrv, err := fifo.NewServer(fifo.ServerOptions{Exports: []fifo.Export{{Path: r.export}}, Logger: zaptest.NewLogger(t).Named("host")})
	if err != nil {
		t.Fatal(err)
	}
	bl := buftest.Serve(t, nil, func(g *grpc.Server) { fsrv.Register(g) })
	r.bridger, err = fifo.NewBridger(bl.Dial(t), fifo.BridgerOptions{Root: r.root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.bridger.Close() })
	listen := filepath.Join(r.root, "run/containerd/containerd.sock")
	p, err := Listen(Options{Listen: listen, Root: r.root, Fifos: r.bridger, Logger: zaptest.NewLogger(t).Named("proxy"),
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	r.client, err = grpc.NewClient("unix://"+listen, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.client.Close() })
	return r
}

func (r *rig) call(t *testing.T, method string, req []byte) ([]byte, metadata.MD, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "containerd-namespace", "moby")
	var resp frame
	var hdr metadata.MD
	err := r.client.Invoke(ctx, method, &frame{req}, &resp, grpc.Header(&hdr))
	return resp.b, hdr, err
}

func str(num protowire.Number, s string) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, []byte(s))
}

// TestForwardsUntouched: a call the proxy does not act on reaches the
// host byte for byte, with its metadata; the answer, headers, trailers
// and error status come back.
func TestForwardsUntouched(t *testing.T) {
	r := newRig(t)
	req := append(str(1, "moby"), 0xff, 0x01) // not even a valid message
	resp, hdr, err := r.call(t, "/containerd.services.version.v1.Version/Version", req)
	if err != nil || string(resp) != "reply to /containerd.services.version.v1.Version/Version" {
		t.Fatalf("%q, %v", resp, err)
	}
	if got := r.host.calls["/containerd.services.version.v1.Version/Version"][0]; string(got) != string(req) {
		t.Fatalf("the host got %x, want %x", got, req)
	}
	if ns := r.host.md["/containerd.services.version.v1.Version/Version"].Get("containerd-namespace"); len(ns) != 1 || ns[0] != "moby" {
		t.Fatalf("namespace header at the host: %v", ns)
	}
	if hdr.Get("served-by")[0] != "host" {
		t.Fatalf("header: %v", hdr)
	}
	_, _, err = r.call(t, "/test.Missing/Call", nil)
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "no such thing") {
		t.Fatalf("error: %v", err)
	}
}

// TestTaskStdio: a task's create naming DPU FIFOs (through a symlink of
// the chroot, as /var/run is) reaches the host naming the resolved paths,
// where the shim finds FIFOs; its output reaches the DPU reader; delete
// removes the host FIFOs.
func TestTaskStdio(t *testing.T) {
	r := newRig(t)
	real := filepath.Join(r.export, "run")
	os.MkdirAll(r.root+real+"/c1", 0o755)
	os.Symlink(real, r.root+filepath.Join(r.export, "var-run")) // absolute, inside the chroot
	for _, n := range []string{"init-stdout", "init-stderr"} {
		if err := unix.Mkfifo(r.root+real+"/c1/"+n, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	named := filepath.Join(r.export, "var-run", "c1")
	got := make(chan string, 1)
	go func() { // dockerd's reader, opened before the create
		b, _ := os.ReadFile(r.root + real + "/c1/init-stdout")
		got <- string(b)
	}()
	go func() { os.ReadFile(r.root + real + "/c1/init-stderr") }()
	req := append(str(createTaskContainerID, "c1"), str(createTaskStdout, named+"/init-stdout")...)
	req = append(req, str(createTaskStderr, named+"/init-stderr")...)
	if _, _, err := r.call(t, methodCreateTask, req); err != nil {
		t.Fatal(err)
	}
	sent := r.host.calls[methodCreateTask][0]
	if p := getString(sent, createTaskStdout); p != real+"/c1/init-stdout" {
		t.Fatalf("the host was sent stdout %q, want the resolved %q", p, real+"/c1/init-stdout")
	}
	if id := getString(sent, createTaskContainerID); id != "c1" {
		t.Fatalf("container id %q", id)
	}
	select {
	case s := <-got:
		if s != "hello from the shim\n" {
			t.Fatalf("the DPU read %q", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no output on the DPU")
	}
	// The stderr writer never came: delete ends its bridge and removes
	// the FIFOs the host made.
	if _, _, err := r.call(t, methodDeleteTask, str(getContainerID, "c1")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(real + "/c1"); !os.IsNotExist(err) {
		t.Fatalf("the host's FIFO directory is left after delete: %v", err)
	}
	if n := r.bridger.Active(); n != 0 {
		t.Fatalf("%d bridges live after delete", n)
	}
}

// TestFailedCreateLeavesNothing: a create the host refuses ends the
// bridges and removes the host FIFOs.
func TestFailedCreateLeavesNothing(t *testing.T) {
	r := newRig(t)
	dir := filepath.Join(r.export, "c2")
	os.MkdirAll(r.root+dir, 0o755)
	unix.Mkfifo(r.root+dir+"/init-stdin", 0o700)
	unix.Mkfifo(r.root+dir+"/init-stdout", 0o700)
	// The stdout path the host is sent is not a FIFO there (a regular
	// file made on the host first): the fake shim refuses it.
	os.MkdirAll(dir, 0o755)
	os.WriteFile(dir+"/init-stdout", nil, 0o644)
	req := append(str(createTaskContainerID, "c2"), str(createTaskStdin, dir+"/init-stdin")...)
	req = append(req, str(createTaskStdout, dir+"/init-stdout")...)
	_, _, err := r.call(t, methodCreateTask, req)
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("create: %v, want the bridge's refusal", err)
	}
	if _, err := os.Lstat(dir + "/init-stdin"); !os.IsNotExist(err) {
		t.Fatalf("the host FIFO of a failed create is left: %v", err)
	}
	if n := r.bridger.Active(); n != 0 {
		t.Fatalf("%d bridges live after a failed create", n)
	}
}

// TestSpecCarried: the setkey hook is dropped; a network namespace path
// that is a bind of the DPU's own namespace becomes the host's network.
func TestSpecCarried(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to bind a network namespace (run the tests as root)")
	}
	r := newRig(t)
	nsPath := filepath.Join(r.export, "netns-default")
	os.WriteFile(r.root+nsPath, nil, 0o644)
	if err := unix.Mount("/proc/self/ns/net", r.root+nsPath, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind a network namespace: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(r.root+nsPath, unix.MNT_DETACH) })
	spec := map[string]any{
		"ociVersion": "1.0.2",
		"hooks": map[string]any{"prestart": []any{
			map[string]any{"path": "/proc/714/exe", "args": []any{"libnetwork-setkey", "-exec-root=/var/run/docker", "c3", "abc"}},
			map[string]any{"path": "/usr/bin/other-hook", "args": []any{"other-hook"}},
		}},
		"linux": map[string]any{"namespaces": []any{
			map[string]any{"type": "pid"},
			map[string]any{"type": "network", "path": nsPath},
		}},
	}
	value, _ := json.Marshal(spec)
	anyMsg := append(str(1, "types.containerd.io/opencontainers/runtime-spec/1/Spec"), str(anyValue, string(value))...)
	ctr := append(str(containerID, "c3"), str(containerSpec, string(anyMsg))...)
	if _, _, err := r.call(t, methodCreateContainer, str(containerReqMsg, string(ctr))); err != nil {
		t.Fatal(err)
	}
	sent := getBytes(getBytes(getBytes(r.host.calls[methodCreateContainer][0], containerReqMsg), containerSpec), anyValue)
	var got map[string]any
	if err := json.Unmarshal(sent, &got); err != nil {
		t.Fatal(err)
	}
	hooks := got["hooks"].(map[string]any)["prestart"].([]any)
	if len(hooks) != 1 || hooks[0].(map[string]any)["path"] != "/usr/bin/other-hook" {
		t.Fatalf("prestart hooks at the host: %v", hooks)
	}
	nss := got["linux"].(map[string]any)["namespaces"].([]any)
	if len(nss) != 1 || nss[0].(map[string]any)["type"] != "pid" {
		t.Fatalf("namespaces at the host: %v", nss)
	}
	if getString(getBytes(r.host.calls[methodCreateContainer][0], containerReqMsg), containerID) != "c3" {
		t.Fatal("the container id was lost")
	}
}

// TestCutBridgeMadeAgain: when the DPU's reader of a running container's
// output goes away (dockerd stopped, with live-restore), the bridge is
// made again by itself, and a new reader gets the output that follows.
func TestCutBridgeMadeAgain(t *testing.T) {
	r := newRig(t)
	dir := filepath.Join(r.export, "ticker")
	os.MkdirAll(r.root+dir, 0o755)
	out := dir + "/init-stdout"
	unix.Mkfifo(r.root+out, 0o700)
	first := make(chan *os.File, 1)
	go func() { f, _ := os.Open(r.root + out); first <- f }()
	if _, _, err := r.call(t, methodCreateTask, append(str(createTaskContainerID, "ticker"), str(createTaskStdout, out)...)); err != nil {
		t.Fatal(err)
	}
	f := <-first
	readLine := func(f *os.File) string {
		b := make([]byte, 5)
		f.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.ReadFull(f, b)
		return string(b[:n])
	}
	if l := readLine(f); l != "tick\n" {
		t.Fatalf("first reader: %q", l)
	}
	f.Close() // dockerd went away
	second := make(chan *os.File, 1)
	go func() { f, _ := os.Open(r.root + out); second <- f }()
	var g *os.File
	select {
	case g = <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("no bridge for a new reader")
	}
	defer g.Close()
	if l := readLine(g); l != "tick\n" {
		t.Fatalf("second reader: %q", l)
	}
	if _, _, err := r.call(t, methodDeleteTask, str(getContainerID, "ticker")); err != nil {
		t.Fatal(err)
	}
}
