package ctrdproxy

import (
	"errors"

	"google.golang.org/protobuf/encoding/protowire"
)

// The containerd API fields the proxy reads or changes (containerd
// api/services/{tasks,containers}/v1, api/types/task; stable since 1.0).
const (
	createTaskContainerID = 1
	createTaskStdin       = 4
	createTaskStdout      = 5
	createTaskStderr      = 6

	execContainerID = 1
	execStdin       = 2
	execStdout      = 3
	execStderr      = 4
	execExecID      = 7

	getContainerID  = 1 // GetRequest, DeleteTaskRequest, DeleteProcessRequest
	getExecID       = 2
	getRespProcess  = 1
	processStatus   = 4
	processStdin    = 5
	processStdout   = 6
	processStderr   = 7
	statusStopped   = 3
	statusUnknown   = 0
	containerReqMsg = 1 // CreateContainerRequest, UpdateContainerRequest: container
	containerID     = 1
	containerSpec   = 5
	anyValue        = 2
)

var errMalformed = errors.New("malformed protobuf message")

// field is one field of a message, as it was on the wire.
type field struct {
	num protowire.Number
	typ protowire.Type
	raw []byte // tag and value
	val []byte // the value's bytes (the payload of a length-delimited one)
	v   uint64 // a varint's value
}

// fields splits a message into its fields, in wire order.
func fields(msg []byte) ([]field, error) {
	var out []field
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, errMalformed
		}
		m := protowire.ConsumeFieldValue(num, typ, msg[n:])
		if m < 0 {
			return nil, errMalformed
		}
		f := field{num: num, typ: typ, raw: msg[:n+m]}
		switch typ {
		case protowire.BytesType:
			f.val, _ = protowire.ConsumeBytes(msg[n:])
		case protowire.VarintType:
			f.v, _ = protowire.ConsumeVarint(msg[n:])
		}
		out = append(out, f)
		msg = msg[n+m:]
	}
	return out, nil
}

// getBytes returns the last value of the length-delimited field num (the
// one that counts, as for any singular field).
func getBytes(msg []byte, num protowire.Number) []byte {
	fs, err := fields(msg)
	if err != nil {
		return nil
	}
	var v []byte
	for _, f := range fs {
		if f.num == num && f.typ == protowire.BytesType {
			v = f.val
		}
	}
	return v
}

func getString(msg []byte, num protowire.Number) string { return string(getBytes(msg, num)) }

// getVarint returns the last value of the varint field num.
func getVarint(msg []byte, num protowire.Number) uint64 {
	fs, err := fields(msg)
	if err != nil {
		return 0
	}
	var v uint64
	for _, f := range fs {
		if f.num == num && f.typ == protowire.VarintType {
			v = f.v
		}
	}
	return v
}

// setBytes returns msg with the length-delimited field num set to v: the
// field takes the place of its first occurrence, the others are dropped,
// every other field stays as it was.
func setBytes(msg []byte, num protowire.Number, v []byte) ([]byte, error) {
	fs, err := fields(msg)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(msg)+len(v)+8)
	done := false
	for _, f := range fs {
		if f.num != num {
			out = append(out, f.raw...)
			continue
		}
		if !done {
			out = protowire.AppendTag(out, num, protowire.BytesType)
			out = protowire.AppendBytes(out, v)
			done = true
		}
	}
	if !done {
		out = protowire.AppendTag(out, num, protowire.BytesType)
		out = protowire.AppendBytes(out, v)
	}
	return out, nil
}
