package hostfs

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// checkDecodeWrite: whatever decodeWrite accepts, proto.Unmarshal reads
// the same way.
func checkDecodeWrite(t *testing.T, b []byte) bool {
	t.Helper()
	var got qtfsv1.WriteRequest
	if !decodeWrite(b, &got) {
		return false
	}
	var want qtfsv1.WriteRequest
	if err := proto.Unmarshal(b, &want); err != nil {
		t.Fatalf("decodeWrite accepted %x, proto.Unmarshal refuses it: %v", b, err)
	}
	if got.GetHandle() != want.GetHandle() || got.GetOffset() != want.GetOffset() || !bytes.Equal(got.GetData(), want.GetData()) {
		t.Fatalf("decodeWrite(%x) = %v, proto.Unmarshal: %v", b, &got, &want)
	}
	return true
}

func TestDecodeWrite(t *testing.T) {
	b, err := proto.Marshal(&qtfsv1.WriteRequest{Handle: 7, Offset: -3, Data: []byte("data")})
	if err != nil {
		t.Fatal(err)
	}
	if !checkDecodeWrite(t, b) {
		t.Fatal("a plain WriteRequest left to proto.Unmarshal")
	}
	var w qtfsv1.WriteRequest
	decodeWrite(b, &w)
	b[len(b)-1] = 'X'
	if string(w.GetData()) != "datX" {
		t.Fatalf("data %q: does not alias the buffer", w.GetData())
	}
	twice := protowire.AppendBytes(protowire.AppendTag(b, 3, protowire.BytesType), []byte("later"))
	for _, tc := range []struct {
		name   string
		b      []byte
		accept bool
	}{
		{"empty", nil, true},
		{"a field twice: the last counts", twice, true},
		{"unknown field", protowire.AppendVarint(protowire.AppendTag(nil, 9, protowire.VarintType), 1), false},
		{"data as a varint", protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1), false},
		{"truncated", b[:len(b)-1], false},
		{"bad tag", []byte{0}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkDecodeWrite(t, tc.b); got != tc.accept {
				t.Fatalf("accepted: %v, want %v", got, tc.accept)
			}
		})
	}
}

// FuzzDecodeWrite: decodeWrite never reads a request otherwise than
// proto.Unmarshal.
func FuzzDecodeWrite(f *testing.F) {
	b, _ := proto.Marshal(&qtfsv1.WriteRequest{Handle: 1, Offset: 1 << 40, Data: []byte("abc")})
	f.Add(b)
	f.Add([]byte{0x1a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) { checkDecodeWrite(t, b) })
}

// TestWriteDataAliased writes over gRPC: large writes reach the handler
// with their data in the received buffer (not copied), which is given
// back once the call is over, whether the write succeeded or failed; small
// ones are decoded as before. The file holds what was written.
func TestWriteDataAliased(t *testing.T) {
	dir := t.TempDir()
	var held []int // heldBuffers during each Write, seen from the handler's side
	var s *Server
	s, err := New(Options{
		Exports: []Export{{Path: dir}},
		Logger:  zaptest.NewLogger(t),
		Interceptor: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if _, ok := req.(*qtfsv1.WriteRequest); ok {
				held = append(held, s.codec.Held())
			}
			return handler(ctx, req)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	lis := bufconn.Listen(4 << 20)
	g := grpc.NewServer(s.ServerOptions()...)
	s.Register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	cc, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := qtfsv1.NewFileSystemClient(cc)
	ctx := t.Context()
	if _, err := c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatal(err)
	}
	caller := &qtfsv1.Caller{Pid: 1}
	mr, err := c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(dir), Caller: caller})
	if err != nil || mr.GetErrno() != 0 {
		t.Fatalf("mount: %v, errno %d", err, mr.GetErrno())
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	or, err := c.Open(ctx, &qtfsv1.OpenRequest{Mount: mr.GetMount(), Caller: caller, Path: []byte("f"), Flags: unix.O_RDWR})
	if err != nil || or.GetErrno() != 0 {
		t.Fatalf("open: %v, errno %d", err, or.GetErrno())
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	small := []byte("small")
	for _, tc := range []struct {
		name     string
		handle   uint64
		off      int64
		data     []byte
		errno    syscall.Errno
		wantHeld int
	}{
		{"1 MiB", or.GetHandle(), 0, big, 0, 1},
		{"1 MiB more", or.GetHandle(), 1 << 20, big[:aliasMin], 0, 1},
		{"small", or.GetHandle(), 1<<20 + aliasMin, small, 0, 0},
		{"a handle that is not open", or.GetHandle() + 100, 0, big, syscall.EBADF, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			held = nil
			r, err := c.Write(ctx, &qtfsv1.WriteRequest{Handle: tc.handle, Offset: tc.off, Data: tc.data})
			if err != nil || syscall.Errno(r.GetErrno()) != tc.errno {
				t.Fatalf("write: %v, errno %d; want errno %d", err, r.GetErrno(), tc.errno)
			}
			if tc.errno == 0 && int(r.GetWritten()) != len(tc.data) {
				t.Fatalf("wrote %d of %d", r.GetWritten(), len(tc.data))
			}
			if len(held) != 1 || held[0] != tc.wantHeld {
				t.Errorf("buffers held during the write: %v, want [%d]", held, tc.wantHeld)
			}
			if n := s.codec.Held(); n != 0 {
				t.Errorf("%d buffers held after the write", n)
			}
		})
	}
	got, err := os.ReadFile(filepath.Join(dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, big...), big[:aliasMin]...), small...)
	if !bytes.Equal(got, want) {
		t.Errorf("file: %d bytes, want %d (or different content)", len(got), len(want))
	}
}
