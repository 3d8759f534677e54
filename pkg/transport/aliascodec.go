package transport

import (
	"runtime"
	"sync"
	"weak"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// AliasCodec is gRPC's proto codec, with large messages encoded into
// buffers of MessageBuffers, and except for messages of type T (a
// generated message struct) of at least min bytes: those are decoded by
// decode with their bulk bytes left in the buffer the message came in (one
// copy and one allocation less per message, and less for the collector to
// do). The buffer is held for the message until Take hands it over; one
// never taken is left to the collector with its message.
//
// decode must set every field of the message or report false, in which
// case proto.Unmarshal decodes it as usual.
type AliasCodec[T any] struct {
	min    int
	decode func(b []byte, m *T) bool
	proto  encoding.CodecV2

	held   BufferTable[T]
	encode func(v any) (mem.BufferSlice, bool)
}

// NewAliasCodec returns an AliasCodec for messages of type T.
func NewAliasCodec[T any](min int, decode func(b []byte, m *T) bool) *AliasCodec[T] {
	return &AliasCodec[T]{min: min, decode: decode, proto: encoding.GetCodecV2(grpcproto.Name)}
}

// WithEncoder makes encode the first say on how a message is encoded:
// when it reports false, Marshal encodes the message itself.
func (c *AliasCodec[T]) WithEncoder(encode func(v any) (mem.BufferSlice, bool)) *AliasCodec[T] {
	c.encode = encode
	return c
}

// Name is that of the proto codec: the wire format is the same.
func (c *AliasCodec[T]) Name() string { return grpcproto.Name }

// Marshal encodes a large message into a buffer of MessageBuffers (gRPC's
// codec zeroes a buffer of its own pool first, of up to four times the
// size); small ones as the proto codec does.
func (c *AliasCodec[T]) Marshal(v any) (mem.BufferSlice, error) {
	if c.encode != nil {
		if data, ok := c.encode(v); ok {
			return data, nil
		}
	}
	m, ok := v.(proto.Message)
	if !ok {
		return c.proto.Marshal(v)
	}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		return c.proto.Marshal(v)
	}
	buf := messageBuffers.Get(size)
	// The size was just computed, and the message does not change meanwhile.
	b, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend((*buf)[:0], m)
	if err != nil {
		messageBuffers.Put(buf)
		return nil, err
	}
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, messageBuffers)}, nil
}

func (c *AliasCodec[T]) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*T)
	if !ok || data.Len() < c.min {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(messageBuffers)
	if !c.decode(buf.ReadOnlyData(), m) {
		buf.Free()
		return c.proto.Unmarshal(data, v)
	}
	c.held.Put(m, buf)
	return nil
}

// Take hands over the buffer m's bytes alias, if they do: the caller
// frees it once neither m nor any slice of its bytes is used any more.
func (c *AliasCodec[T]) Take(m *T) (mem.Buffer, bool) { return c.held.Take(m) }

// Held is how many buffers messages hold that were not taken.
func (c *AliasCodec[T]) Held() int { return c.held.Len() }

// BufferTable ties buffers to messages of type T without keeping the
// messages alive: the entry of a message that became garbage goes with
// it, and its buffer to the collector (not back to its pool: slices of it
// may still be in use).
type BufferTable[T any] struct {
	mu sync.Mutex
	m  map[weak.Pointer[T]]mem.Buffer
}

// Put ties b to m.
func (t *BufferTable[T]) Put(m *T, b mem.Buffer) {
	w := weak.Make(m)
	t.mu.Lock()
	if t.m == nil {
		t.m = map[weak.Pointer[T]]mem.Buffer{}
	}
	t.m[w] = b
	t.mu.Unlock()
	runtime.AddCleanup(m, t.drop, w)
}

// drop forgets the buffer of a message that is gone.
func (t *BufferTable[T]) drop(w weak.Pointer[T]) {
	t.mu.Lock()
	delete(t.m, w)
	t.mu.Unlock()
}

// Take unties m's buffer and hands it over.
func (t *BufferTable[T]) Take(m *T) (mem.Buffer, bool) {
	w := weak.Make(m)
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.m[w]
	delete(t.m, w)
	return b, ok
}

// Len is how many messages have a buffer.
func (t *BufferTable[T]) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// ScanFields walks the fields of an encoded message whose fields are all
// varints or bytes, in order, handing each to field (v for a varint, b for
// bytes, aliasing the input). It reports false when the input is malformed,
// holds another wire type, or field returned false.
func ScanFields(in []byte, field func(num protowire.Number, typ protowire.Type, v uint64, b []byte) bool) bool {
	for len(in) > 0 {
		num, typ, n := protowire.ConsumeTag(in)
		if n < 0 {
			return false
		}
		in = in[n:]
		var v uint64
		var b []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(in)
		case protowire.BytesType:
			b, n = protowire.ConsumeBytes(in)
			b = b[:len(b):len(b)]
		default:
			return false
		}
		if n < 0 || !field(num, typ, v, b) {
			return false
		}
		in = in[n:]
	}
	return true
}
