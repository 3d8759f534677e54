package hostfs

import (
	"sync"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// aliasMin is the size from which a WriteRequest's data is left in the
// buffer gRPC received it in. Below it the copy costs less than the
// bookkeeping.
const aliasMin = 64 << 10

// wireCodec is the gRPC codec of the server: the proto codec, except that
// the data of a large WriteRequest is not copied out of the received
// message. Copying it cost an allocation (zeroed, then garbage) and a copy
// per megabyte written, and the allocations drove the collector. The data
// aliases the received buffer, which is held until the call's handler
// returned (releaseData, from interceptAll).
type wireCodec struct {
	proto encoding.CodecV2

	mu   sync.Mutex
	held map[*qtfsv1.WriteRequest]mem.Buffer
}

func newWireCodec() *wireCodec {
	return &wireCodec{proto: encoding.GetCodecV2(grpcproto.Name), held: map[*qtfsv1.WriteRequest]mem.Buffer{}}
}

// Name is that of the proto codec: the wire format is the same.
func (c *wireCodec) Name() string { return grpcproto.Name }

func (c *wireCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c *wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	w, ok := v.(*qtfsv1.WriteRequest)
	if !ok || data.Len() < aliasMin {
		return c.proto.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	if !decodeWrite(buf.ReadOnlyData(), w) {
		buf.Free()
		return c.proto.Unmarshal(data, v)
	}
	c.mu.Lock()
	c.held[w] = buf
	c.mu.Unlock()
	return nil
}

// releaseData gives back the buffer req's data aliases, if any: req must
// not be used after.
func (c *wireCodec) releaseData(req *qtfsv1.WriteRequest) {
	c.mu.Lock()
	buf, ok := c.held[req]
	delete(c.held, req)
	c.mu.Unlock()
	if ok {
		req.Data = nil
		buf.Free()
	}
}

// heldBuffers is how many received buffers requests still alias.
func (c *wireCodec) heldBuffers() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.held)
}

// decodeWrite decodes b into m, its data aliasing b. It reports false, and
// leaves the decoding to proto.Unmarshal, for anything but well-formed
// handle, offset and data fields, whose last occurrence counts as in
// proto.Unmarshal.
func decodeWrite(b []byte, m *qtfsv1.WriteRequest) bool {
	var out qtfsv1.WriteRequest
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			out.Handle, b = v, b[n:]
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return false
			}
			out.Offset, b = int64(v), b[n:]
		case num == 3 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return false
			}
			out.Data, b = v[:len(v):len(v)], b[n:]
		default:
			return false
		}
	}
	m.Handle, m.Offset, m.Data = out.Handle, out.Offset, out.Data
	return true
}
