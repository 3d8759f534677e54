package hostfs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/qtfs/qtfs/pkg/internal/buftest"
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

// dataServer is a hostfs server over gRPC (an in-memory listener) with a
// session, and a file "f" of its export open read-write.
type dataServer struct {
	s      *Server
	c      qtfsv1.FileSystemClient
	dir    string
	handle uint64
	// held is the codec's held buffers during each Write, seen from the
	// handler's side.
	held []int
}

func startDataServer(t *testing.T) *dataServer {
	t.Helper()
	ds := &dataServer{dir: t.TempDir()}
	s, err := New(Options{
		Exports: []Export{{Path: ds.dir}},
		Logger:  zaptest.NewLogger(t),
		Interceptor: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if _, ok := req.(*qtfsv1.WriteRequest); ok {
				ds.held = append(ds.held, ds.s.codec.Held())
			}
			return handler(ctx, req)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ds.s = s
	t.Cleanup(func() { s.Close() })
	cc := buftest.Serve(t, s.ServerOptions(), s.Register).Dial(t,
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(8<<20), grpc.MaxCallRecvMsgSize(8<<20)))
	ds.c = qtfsv1.NewFileSystemClient(cc)
	ctx := t.Context()
	if _, err := ds.c.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1}); err != nil {
		t.Fatal(err)
	}
	caller := &qtfsv1.Caller{Pid: 1}
	mr, err := ds.c.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(ds.dir), Caller: caller})
	if err != nil || mr.GetErrno() != 0 {
		t.Fatalf("mount: %v, errno %d", err, mr.GetErrno())
	}
	if err := os.WriteFile(filepath.Join(ds.dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	or, err := ds.c.Open(ctx, &qtfsv1.OpenRequest{Mount: mr.GetMount(), Caller: caller, Path: []byte("f"), Flags: unix.O_RDWR})
	if err != nil || or.GetErrno() != 0 {
		t.Fatalf("open: %v, errno %d", err, or.GetErrno())
	}
	ds.handle = or.GetHandle()
	return ds
}

// TestWriteDataAliased writes over gRPC: large writes reach the handler
// with their data in the received buffer (not copied), which is given
// back once the call is over, whether the write succeeded or failed; small
// ones are decoded as before. The file holds what was written.
func TestWriteDataAliased(t *testing.T) {
	ds := startDataServer(t)
	s, c, ctx := ds.s, ds.c, t.Context()
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
		{"1 MiB", ds.handle, 0, big, 0, 1},
		{"1 MiB more", ds.handle, 1 << 20, big[:aliasMin], 0, 1},
		{"small", ds.handle, 1<<20 + aliasMin, small, 0, 0},
		{"a handle that is not open", ds.handle + 100, 0, big, syscall.EBADF, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds.held = nil
			r, err := c.Write(ctx, &qtfsv1.WriteRequest{Handle: tc.handle, Offset: tc.off, Data: tc.data})
			if err != nil || syscall.Errno(r.GetErrno()) != tc.errno {
				t.Fatalf("write: %v, errno %d; want errno %d", err, r.GetErrno(), tc.errno)
			}
			if tc.errno == 0 && int(r.GetWritten()) != len(tc.data) {
				t.Fatalf("wrote %d of %d", r.GetWritten(), len(tc.data))
			}
			if len(ds.held) != 1 || ds.held[0] != tc.wantHeld {
				t.Errorf("buffers held during the write: %v, want [%d]", ds.held, tc.wantHeld)
			}
			if n := s.codec.Held(); n != 0 {
				t.Errorf("%d buffers held after the write", n)
			}
		})
	}
	got, err := os.ReadFile(filepath.Join(ds.dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	want := append(append(append([]byte{}, big...), big[:aliasMin]...), small...)
	if !bytes.Equal(got, want) {
		t.Errorf("file: %d bytes, want %d (or different content)", len(got), len(want))
	}
}

// TestReadDataLent reads over gRPC: a large read's data goes out from the
// buffer it was read into, encoded as proto.Marshal would, and nothing is
// left lent; small reads and reads at the end of the file are as before.
func TestReadDataLent(t *testing.T) {
	ds := startDataServer(t)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(ds.dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		off, size int
	}{
		{"256 KiB", 0, 256 << 10},
		{"256 KiB again", 256 << 10, 256 << 10},
		{"small", 100, 4096},
		{"short at the end", 1<<20 - 1000, 256 << 10},
		{"past the end", 2 << 20, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ds.c.Read(t.Context(), &qtfsv1.ReadRequest{Handle: ds.handle, Offset: int64(tc.off), Size: uint32(tc.size)})
			if err != nil || r.GetErrno() != 0 {
				t.Fatalf("read: %v, errno %d", err, r.GetErrno())
			}
			want := data[min(tc.off, len(data)):min(tc.off+tc.size, len(data))]
			if !bytes.Equal(r.GetData(), want) {
				t.Fatalf("read %d bytes, want %d (or different content)", len(r.GetData()), len(want))
			}
			if n := ds.s.lentReads.Len(); n != 0 {
				t.Errorf("%d read buffers still lent after the reply", n)
			}
		})
	}
}

// TestEncodeRead: a reply with lent data is encoded as proto.Marshal
// encodes it.
func TestEncodeRead(t *testing.T) {
	s := &Server{}
	for _, errno := range []int32{0, 5, -1} {
		for _, n := range []int{1, aliasMin} {
			buf := readBuffer(aliasMin)
			for i := range *buf {
				(*buf)[i] = byte(i)
			}
			resp := &qtfsv1.ReadResponse{Errno: errno}
			s.lendRead(resp, buf, n)
			want, err := proto.Marshal(resp)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := s.encodeRead(resp)
			if !ok {
				t.Fatalf("errno %d, %d bytes: not encoded from the lent buffer", errno, n)
			}
			if !bytes.Equal(got.Materialize(), want) {
				t.Errorf("errno %d, %d bytes: encoding differs from proto.Marshal", errno, n)
			}
			got.Free()
		}
	}
	if _, ok := s.encodeRead(&qtfsv1.ReadResponse{Data: []byte("x")}); ok {
		t.Error("a reply with no lent buffer was encoded by encodeRead")
	}
}
