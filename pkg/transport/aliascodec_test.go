package transport

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// TestBufferPool: Get gives the length asked for, from the smallest tier
// that holds it; buffers come back for reuse as they were left; sizes
// beyond the tiers are not pooled.
func TestBufferPool(t *testing.T) {
	p := newBufferPool(1<<10, 4<<10)
	for _, tc := range []struct{ n, cap int }{{0, 1 << 10}, {1 << 10, 1 << 10}, {1<<10 + 1, 4 << 10}, {5 << 10, 5 << 10}} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", tc.n, len(*b), cap(*b), tc.cap)
		}
		p.Put(b)
	}
	// sync.Pool may drop what it is given (the race detector makes it drop
	// some on purpose): try until the buffer comes back.
	for range 100 {
		b := p.Get(3000)
		copy(*b, "left over")
		p.Put(b)
		c := p.Get(2000) // the same tier
		if &(*c)[:1][0] != &(*b)[:1][0] {
			continue
		}
		if string((*c)[:9]) != "left over" {
			t.Errorf("reused buffer: %q..., want it as it was left (not zeroed)", (*c)[:9])
		}
		return
	}
	t.Error("a buffer given back never came back in 100 tries")
}

// decodeTestRead is a decoder for AliasCodec tests: ReadResponse with data
// only.
func decodeTestRead(b []byte, m *qtfsv1.ReadResponse) bool {
	return ScanFields(b, func(num protowire.Number, typ protowire.Type, _ uint64, v []byte) bool {
		if num != 2 || typ != protowire.BytesType {
			return false
		}
		m.Data = v
		return true
	})
}

// TestAliasCodec: a large message of the codec's type is decoded with its
// bytes in the received buffer, held until taken or until the message is
// garbage; others are decoded by proto; Marshal encodes as proto does.
func TestAliasCodec(t *testing.T) {
	c := NewAliasCodec(1024, decodeTestRead)
	data := bytes.Repeat([]byte("x"), 4096)
	for _, msg := range []proto.Message{
		&qtfsv1.ReadResponse{Data: data},
		&qtfsv1.ReadResponse{Errno: 5, Data: []byte("small")},
		&qtfsv1.WriteRequest{Handle: 3, Data: data},
	} {
		enc, err := c.Marshal(msg)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := proto.Marshal(msg)
		if !bytes.Equal(enc.Materialize(), want) {
			t.Errorf("Marshal(%T) differs from proto.Marshal", msg)
		}
		enc.Free()
	}

	wire, _ := proto.Marshal(&qtfsv1.ReadResponse{Data: data})
	in := func() mem.BufferSlice { return mem.BufferSlice{mem.SliceBuffer(append([]byte(nil), wire...))} }

	var taken qtfsv1.ReadResponse
	if err := c.Unmarshal(in(), &taken); err != nil || !bytes.Equal(taken.GetData(), data) {
		t.Fatalf("Unmarshal: %v, %d bytes", err, len(taken.GetData()))
	}
	if c.Held() != 1 {
		t.Fatalf("Held = %d after a large message, want 1", c.Held())
	}
	buf, ok := c.Take(&taken)
	if !ok || &buf.ReadOnlyData()[len(wire)-len(data)] != &taken.GetData()[0] {
		t.Fatal("Take: the data does not alias the buffer handed over")
	}
	buf.Free()
	if _, ok := c.Take(&taken); ok || c.Held() != 0 {
		t.Fatal("a buffer taken twice")
	}

	// A message never taken: its buffer is forgotten with it.
	func() {
		m := new(qtfsv1.ReadResponse)
		if err := c.Unmarshal(in(), m); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for c.Held() != 0 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	if c.Held() != 0 {
		t.Error("the buffer of a message gone is still held")
	}

	// Another type, or one the decoder refuses: proto decodes it, nothing
	// is held.
	var w qtfsv1.WriteRequest
	wb, _ := proto.Marshal(&qtfsv1.WriteRequest{Handle: 3, Data: data})
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wb)}, &w); err != nil || w.GetHandle() != 3 {
		t.Fatalf("WriteRequest: %v, %v", err, &w)
	}
	var r qtfsv1.ReadResponse
	rb, _ := proto.Marshal(&qtfsv1.ReadResponse{Errno: 2, Data: data})
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(rb)}, &r); err != nil || r.GetErrno() != 2 || !bytes.Equal(r.GetData(), data) {
		t.Fatalf("refused by the decoder: %v, %v", err, &r)
	}
	if c.Held() != 0 {
		t.Errorf("Held = %d after messages proto decoded", c.Held())
	}
}
