package session

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

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
