package hostfs

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// aliasMin is the size from which a Write's data is left in the buffer
// gRPC received it in, and a Read's data is sent from the buffer it was
// read into. Below it a copy costs less than the bookkeeping.
const aliasMin = 64 << 10

// dataCodec is the gRPC codec of the server. The data of a large
// WriteRequest is not copied out of the received message (it cost an
// allocation and a copy per megabyte written, and the allocations drove
// the collector): it aliases the received buffer until the call's handler
// returned (releaseData, from interceptAll). The data of a large
// ReadResponse is not copied into the encoded message: the pooled buffer
// it was read into is sent as it is (encodeRead).
type dataCodec = transport.AliasCodec[qtfsv1.WriteRequest]

func (s *Server) newDataCodec() *dataCodec {
	return transport.NewAliasCodec(aliasMin, decodeWrite).WithEncoder(s.encodeRead)
}

// readBuffer returns a buffer for a read of size bytes: from the message
// pool when it is large, to be lent to the reply (lendRead).
func readBuffer(size int) *[]byte {
	if size < aliasMin {
		b := make([]byte, size)
		return &b
	}
	return transport.MessageBuffers().Get(size)
}

// lendRead makes the first n bytes of buf, from readBuffer, resp's data;
// a large one is sent from buf itself, which goes back to the pool once
// sent.
func (s *Server) lendRead(resp *qtfsv1.ReadResponse, buf *[]byte, n int) {
	*buf = (*buf)[:n]
	resp.Data = *buf
	if cap(*buf) >= aliasMin && n > 0 {
		s.lentReads.Put(resp, mem.NewBuffer(buf, transport.MessageBuffers()))
	}
}

// encodeRead encodes a ReadResponse whose data is a lent buffer: its
// fields, then the buffer itself, as proto.Marshal lays them out.
func (s *Server) encodeRead(v any) (mem.BufferSlice, bool) {
	r, ok := v.(*qtfsv1.ReadResponse)
	if !ok {
		return nil, false
	}
	buf, ok := s.lentReads.Take(r)
	if !ok {
		return nil, false
	}
	var head []byte
	if r.GetErrno() != 0 {
		head = protowire.AppendVarint(protowire.AppendTag(head, 1, protowire.VarintType), uint64(int64(r.GetErrno())))
	}
	head = protowire.AppendVarint(protowire.AppendTag(head, 2, protowire.BytesType), uint64(buf.Len()))
	return mem.BufferSlice{mem.SliceBuffer(head), buf}, true
}

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
