package hostfs

import (
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// aliasMin is the size from which a WriteRequest's data is left in the
// buffer gRPC received it in. Below it the copy costs less than the
// bookkeeping.
const aliasMin = 64 << 10

// writeCodec is the gRPC codec of the server: the data of a large
// WriteRequest is not copied out of the received message (it cost an
// allocation and a copy per megabyte written, and the allocations drove
// the collector). The data aliases the received buffer until the call's
// handler returned (releaseData, from interceptAll).
type writeCodec = transport.AliasCodec[qtfsv1.WriteRequest]

func newWriteCodec() *writeCodec { return transport.NewAliasCodec(aliasMin, decodeWrite) }

// releaseData gives back the buffer req's data aliases, if any: req's data
// must not be used after.
func (s *Server) releaseData(req *qtfsv1.WriteRequest) {
	if buf, ok := s.codec.Take(req); ok {
		req.Data = nil
		buf.Free()
	}
}

// decodeWrite decodes b into m, its data aliasing b. It reports false, and
// leaves the decoding to proto.Unmarshal, for anything but well-formed
// handle, offset and data fields, whose last occurrence counts as in
// proto.Unmarshal.
func decodeWrite(b []byte, m *qtfsv1.WriteRequest) bool {
	var handle uint64
	var offset int64
	var data []byte
	ok := transport.ScanFields(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) bool {
		switch {
		case num == 1 && typ == protowire.VarintType:
			handle = v
		case num == 2 && typ == protowire.VarintType:
			offset = int64(v)
		case num == 3 && typ == protowire.BytesType:
			data = b
		default:
			return false
		}
		return true
	})
	if ok {
		m.Handle, m.Offset, m.Data = handle, offset, data
	}
	return ok
}
