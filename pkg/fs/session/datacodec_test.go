package fuseclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// checkDecodeRead: whatever decodeRead accepts, proto.Unmarshal reads the
// same way.
func checkDecodeRead(t *testing.T, b []byte) bool {
	t.Helper()
	var got qtfsv1.ReadResponse
	if !decodeRead(b, &got) {
		return false
	}
	var want qtfsv1.ReadResponse
	if err := proto.Unmarshal(b, &want); err != nil {
		t.Fatalf("decodeRead accepted %x, proto.Unmarshal refuses it: %v", b, err)
	}
	if got.GetErrno() != want.GetErrno() || !bytes.Equal(got.GetData(), want.GetData()) {
		t.Fatalf("decodeRead(%x) = %v, proto.Unmarshal: %v", b, &got, &want)
	}
	return true
}

func TestDecodeRead(t *testing.T) {
	b, err := proto.Marshal(&qtfsv1.ReadResponse{Errno: -5, Data: []byte("data")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		b      []byte
		accept bool
	}{
		{"plain", b, true},
		{"empty", nil, true},
		{"data twice: the last counts", protowire.AppendBytes(protowire.AppendTag(b, 2, protowire.BytesType), []byte("x")), true},
		{"unknown field", protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 1), false},
		{"errno as bytes", protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), nil), false},
		{"truncated", b[:len(b)-1], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := checkDecodeRead(t, tc.b); got != tc.accept {
				t.Fatalf("accepted: %v, want %v", got, tc.accept)
			}
		})
	}
}

// FuzzDecodeRead: decodeRead never reads a reply otherwise than
// proto.Unmarshal.
func FuzzDecodeRead(f *testing.F) {
	b, _ := proto.Marshal(&qtfsv1.ReadResponse{Errno: 2, Data: []byte("abc")})
	f.Add(b)
	f.Add([]byte{0x12, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) { checkDecodeRead(t, b) })
}

// TestDataPartsWithHostfs writes and reads a file in parts over gRPC to a
// hostfs server: the data arrives intact, a read's parts alias the
// buffers their replies came in, and those are handed back once the
// result is done.
func TestDataPartsWithHostfs(t *testing.T) {
	export := t.TempDir()
	srv, err := hostfs.New(hostfs.Options{Exports: []hostfs.Export{{Path: export}}, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cc := buftest.Serve(t, srv.ServerOptions(), srv.Register).Dial(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := NewSession(ctx, cc, "fuseclient-test", zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	caller := &qtfsv1.Caller{Pid: 1}
	mr, e := call(s, 10*time.Second, "Mount", s.client.Mount, &qtfsv1.MountRequest{Path: []byte(export), Caller: caller})
	if e != 0 {
		t.Fatalf("mount: %v", e)
	}
	if err := os.WriteFile(filepath.Join(export, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	or, e := call(s, 10*time.Second, "Open", s.client.Open,
		&qtfsv1.OpenRequest{Mount: mr.GetMount(), Caller: caller, Path: []byte("f"), Flags: syscall.O_RDWR})
	if e != 0 {
		t.Fatalf("open: %v", e)
	}
	m := &mountFS{sess: s, log: zaptest.NewLogger(t), timeout: 10 * time.Second}
	f := &fileHandle{m: m, h: or.GetHandle(), flags: syscall.O_RDWR}

	data := make([]byte, 4*ioPart)
	rand.Read(data)
	if n, e := f.writeParts(ctx, data, 0, ioPart); e != 0 || int(n) != len(data) {
		t.Fatalf("writeParts: %d, %v", n, e)
	}
	if got, err := os.ReadFile(filepath.Join(export, "f")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("file after writeParts: %d bytes, %v (or different content)", len(got), err)
	}

	for _, tc := range []struct {
		name string
		off  int64
		want []byte
	}{
		{"whole", 0, data},
		{"short at the end", int64(len(data) - ioPart - 100), data[len(data)-ioPart-100:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, e := f.readParts(ctx, make([]byte, len(data)), tc.off, ioPart)
			if e != 0 {
				t.Fatal(e)
			}
			r := res.(*partsResult)
			if got, _ := r.Bytes(nil); !bytes.Equal(got, tc.want) || r.Size() != len(tc.want) {
				t.Fatalf("read %d bytes (size %d), want %d (or different content)", len(got), r.Size(), len(tc.want))
			}
			slices, _ := r.Slices()
			for i, p := range slices {
				if len(p) >= aliasMin && r.bufs[i] == nil {
					t.Errorf("part %d (%d bytes) was copied out of its reply", i, len(p))
				}
			}
			if n := s.dataCodec.Held(); n != 0 {
				t.Errorf("%d reply buffers left untaken", n)
			}
			r.Done()
			for i, b := range r.bufs {
				if b != nil {
					t.Errorf("buffer of part %d not handed back by Done", i)
				}
			}
		})
	}
}
