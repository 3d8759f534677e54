package session

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// AliasMin is the size from which the data of a Read reply made with
// CallOptions.Data is left in the buffer gRPC received it in.
const AliasMin = 64 << 10

// dataCodec is the codec of the parts of large reads and writes. A
// ReadResponse's data stays in the received buffer: it goes from there to
// the kernel, with no copy and no allocation of its own in between, and
// the buffer goes back to gRPC's pool once its taker (TakeReadBuffer)
// frees it. A WriteRequest is encoded into a pooled buffer that is not
// zeroed first.
type dataCodec = transport.AliasCodec[qtfsv1.ReadResponse]

// setDataCodec gives s its dataCodec, and the call option of the calls
// that go through it (CallOptions.Data).
func (s *Session) setDataCodec() {
	s.dataCodec = transport.NewAliasCodec(AliasMin, decodeRead)
	s.dataOpts = []grpc.CallOption{grpc.ForceCodecV2(s.dataCodec)}
}

// TakeReadBuffer hands over the buffer the data of resp, the reply of a
// Read call made with CallOptions.Data, aliases; nil when it does not (a
// small reply, or one the codec did not decode). The taker frees it.
func (s *Session) TakeReadBuffer(resp *qtfsv1.ReadResponse) mem.Buffer {
	buf, _ := s.dataCodec.Take(resp)
	return buf
}

// ReadBuffersHeld counts the buffers of Read replies nobody took yet.
func (s *Session) ReadBuffersHeld() int { return s.dataCodec.Held() }

// decodeRead decodes b into m, its data aliasing b. It reports false, and
// leaves the decoding to proto.Unmarshal, for anything but well-formed
// errno and data fields, whose last occurrence counts as in
// proto.Unmarshal.
func decodeRead(b []byte, m *qtfsv1.ReadResponse) bool {
	var errno int32
	var data []byte
	ok := transport.ScanFields(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) bool {
		switch {
		case num == 1 && typ == protowire.VarintType:
			errno = int32(v)
		case num == 2 && typ == protowire.BytesType:
			data = b
		default:
			return false
		}
		return true
	})
	if ok {
		m.Errno, m.Data = errno, data
	}
	return ok
}
