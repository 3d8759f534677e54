package callstream

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// checkDecode fails when decodeFrame and proto.Unmarshal disagree on b:
// both must accept it and give the same frame, or both refuse it.
func checkDecode(t *testing.T, b []byte) {
	t.Helper()
	var want qtfsv1.CallFrame
	werr := proto.Unmarshal(b, &want)
	got, err := decodeFrame(b)
	if (err != nil) != (werr != nil) {
		t.Fatalf("decodeFrame error %v, proto.Unmarshal error %v", err, werr)
	}
	if err != nil {
		return
	}
	want.ProtoReflect().SetUnknown(nil) // decodeFrame skips unknown fields
	if !proto.Equal(got, &want) {
		t.Fatalf("decodeFrame = %v, want %v", got, &want)
	}
}

func TestDecodeFrame(t *testing.T) {
	full := &qtfsv1.CallFrame{Id: 7, Method: "/qtfs.v1.FileSystem/Getattr", Body: []byte{1, 2, 3},
		TimeoutNs: 1e9, Cancel: true, Code: 14, Message: "gone"}
	b, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	checkDecode(t, b)
	got, _ := decodeFrame(b)
	b[len(b)-1] = 'X' // the body aliases the buffer; the strings do not
	if got.GetMessage() != "gone" {
		t.Fatalf("message changed with the buffer: %q", got.GetMessage())
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown fields", protowire.AppendString(protowire.AppendTag(
			protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 5), 100, protowire.BytesType), "x")},
		{"truncated", b[:len(b)-2]},
		{"bad tag", []byte{0}},
		{"id as bytes", protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "x")},
	} {
		t.Run(tc.name, func(t *testing.T) { checkDecode(t, tc.b) })
	}
}

// FuzzDecodeFrame: decodeFrame reads what the client or server sends on
// a channel exactly as proto.Unmarshal would.
func FuzzDecodeFrame(f *testing.F) {
	b, _ := proto.Marshal(&qtfsv1.CallFrame{Id: 1, Method: "/m", Body: []byte("body"), TimeoutNs: 5, Code: 2, Message: "x"})
	f.Add(b)
	f.Add([]byte{0x08, 0x01, 0x28, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) { checkDecode(t, b) })
}
