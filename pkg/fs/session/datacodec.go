package fuseclient

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// aliasMin is the size from which a read reply's data is left in the
// buffer gRPC received it in: the parts of large reads (ioPart).
const aliasMin = 64 << 10

// dataCodec is the codec of the parts of large reads and writes. A
// ReadResponse's data stays in the received buffer: it goes from there to
// the kernel, with no copy and no allocation of its own in between, and
// the buffer goes back to gRPC's pool once go-fuse wrote the reply
// (partsResult.Done). A WriteRequest is encoded into a pooled buffer that
// is not zeroed first.
type dataCodec = transport.AliasCodec[qtfsv1.ReadResponse]

func newDataCodec() *dataCodec { return transport.NewAliasCodec(aliasMin, decodeRead) }

// readPart is the Read RPC of a part of a large read, through the
// session's dataCodec. The caller takes the reply's buffer
// (takeReadBuffer).
func (s *Session) readPart(ctx context.Context, req *qtfsv1.ReadRequest, opts ...grpc.CallOption) (*qtfsv1.ReadResponse, error) {
	return s.client.Read(ctx, req, append(opts, grpc.ForceCodecV2(s.dataCodec))...)
}

// writePart is the Write RPC of a part of a large write, through the
// session's dataCodec.
func (s *Session) writePart(ctx context.Context, req *qtfsv1.WriteRequest, opts ...grpc.CallOption) (*qtfsv1.WriteResponse, error) {
	return s.client.Write(ctx, req, append(opts, grpc.ForceCodecV2(s.dataCodec))...)
}

// takeReadBuffer hands over the buffer resp's data aliases; nil when it
// does not (a small reply, or one the codec did not decode).
func (s *Session) takeReadBuffer(resp *qtfsv1.ReadResponse) mem.Buffer {
	buf, _ := s.dataCodec.Take(resp)
	return buf
}

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
