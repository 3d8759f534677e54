package session

import (
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// TestMethodTable holds fileSystemMethods to the service descriptor:
// every unary method has an entry (a method without one would be sent
// once and carry no translated ids), every entry names a unary method,
// and the ids an entry names are exactly the request's fields that hold
// a mount or handles (a uint64 field named mount, handle or handle_*): a
// request the table forgets would carry the session's own ids to the
// server.
func TestMethodTable(t *testing.T) {
	sd := fileSystemService
	declared := map[string]bool{}
	for _, m := range fileSystemMethods {
		declared[m.name] = true
	}
	ms := sd.Methods()
	for i := 0; i < ms.Len(); i++ {
		md := ms.Get(i)
		name := string(md.Name())
		if md.IsStreamingClient() || md.IsStreamingServer() {
			// The Calls stream carries calls; it is none itself.
			if declared[name] {
				t.Errorf("streaming method %s has an entry", name)
			}
			continue
		}
		t.Run(name, func(t *testing.T) {
			if !declared[name] {
				t.Fatalf("method %s has no entry in fileSystemMethods", name)
			}
			mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				t.Fatal(err)
			}
			msg := mt.New()
			c := callOf(msg.Interface())
			if c.name != name {
				t.Fatalf("callOf(%s) = entry %q", md.Input().FullName(), c.name)
			}
			want := map[uint64]string{}
			fields := msg.Descriptor().Fields()
			for j := 0; j < fields.Len(); j++ {
				f := fields.Get(j)
				n := string(f.Name())
				if f.Kind() == protoreflect.Uint64Kind && !f.IsList() &&
					(n == "mount" || n == "handle" || strings.HasPrefix(n, "handle_")) {
					v := uint64(100 + j)
					msg.Set(f, protoreflect.ValueOfUint64(v))
					want[v] = n
				}
			}
			req := msg.Interface()
			got := map[uint64]string{}
			if c.mountF.ok() {
				if c.mountF.name != "mount" {
					t.Errorf("the mount field is %s", c.mountF.name)
				}
				got[*c.mountF.ptr(req)] = string(c.mountF.name)
			}
			for _, f := range c.handlesF {
				got[*f.ptr(req)] = string(f.name)
			}
			for v, n := range want {
				if got[v] != n {
					t.Errorf("the entry misses id field %s", n)
				}
			}
			for v, n := range got {
				if want[v] != n {
					t.Errorf("the entry names %s, which holds no mount or handle", n)
				}
			}
		})
	}
	// The generated service description agrees.
	for _, m := range qtfsv1.FileSystem_ServiceDesc.Methods {
		if !declared[m.MethodName] {
			t.Errorf("FileSystem_ServiceDesc method %s has no entry", m.MethodName)
		}
	}
	if n := len(qtfsv1.FileSystem_ServiceDesc.Methods); n != len(fileSystemMethods) {
		t.Errorf("%d entries for %d unary methods", len(fileSystemMethods), n)
	}
}

// TestMethodTableRejects: an entry that names no method, a streaming
// method, or a field its request lacks does not make a table.
func TestMethodTableRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    method
	}{
		{"no such method", method{name: "Chmod"}},
		{"streaming method", method{name: "Calls"}},
		{"no such id field", method{name: "Getattr", mount: "mnt"}},
		{"id field of another kind", method{name: "Read", handles: []string{"size"}}},
		{"appending without a handle", method{name: "Write", handles: []string{"handle"}, retry: replayUnlessAppending}},
		{"flagged without flags", method{name: "Getattr", retry: replayUnlessFlagged}},
		{"bulk without a size", method{name: "Read", route: onConnWhenBulk, size: "length"}},
		{"releases without a handle", method{name: "Release", releases: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := indexMethods(fileSystemService, []method{tc.m}); err == nil {
				t.Fatal("indexMethods accepts the entry")
			}
		})
	}
	if _, err := indexMethods(fileSystemService, []method{{name: "Getattr"}, {name: "Getattr"}}); err == nil {
		t.Error("indexMethods accepts a method twice")
	}
}

// TestMethodFacts holds the decisions read from the table: replay after
// a reconnect, the route of a call, and the defaults of a request the
// table does not know (never replayed, no ids, on the call stream).
func TestMethodFacts(t *testing.T) {
	r := &reconn{handles: map[uint64]*handleRec{
		1: {flags: syscall.O_WRONLY},
		2: {flags: syscall.O_WRONLY | syscall.O_APPEND},
	}}
	big := make([]byte, bulkCallBytes+1)
	for _, tc := range []struct {
		name   string
		req    proto.Message
		replay bool
		direct bool
	}{
		{"getattr", &qtfsv1.GetattrRequest{}, true, false},
		{"read small", &qtfsv1.ReadRequest{Size: bulkCallBytes}, true, false},
		{"read bulk", &qtfsv1.ReadRequest{Size: bulkCallBytes + 1}, true, true},
		{"write", &qtfsv1.WriteRequest{Handle: 1}, true, false},
		{"write bulk", &qtfsv1.WriteRequest{Handle: 1, Data: big}, true, true},
		{"write appending", &qtfsv1.WriteRequest{Handle: 2}, false, false},
		{"copy to appending", &qtfsv1.CopyFileRangeRequest{HandleIn: 1, HandleOut: 2}, false, false},
		{"copy from appending", &qtfsv1.CopyFileRangeRequest{HandleIn: 2, HandleOut: 1}, true, false},
		{"setxattr", &qtfsv1.SetxattrRequest{}, true, false},
		{"setxattr create", &qtfsv1.SetxattrRequest{Flags: 1}, false, false},
		{"mkdir", &qtfsv1.MkdirRequest{}, false, false},
		{"create", &qtfsv1.CreateRequest{}, false, false},
		{"removexattr", &qtfsv1.RemovexattrRequest{}, false, false},
		{"setlk", &qtfsv1.SetlkRequest{}, true, false},
		{"release", &qtfsv1.ReleaseRequest{}, true, false},
		{"handshake", &qtfsv1.HandshakeRequest{}, true, true},
		{"unknown", &qtfsv1.FifoRemoveRequest{}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.retryable(tc.req); got != tc.replay {
				t.Errorf("retryable = %v, want %v", got, tc.replay)
			}
			if got := bulkCall("", tc.req); got != tc.direct {
				t.Errorf("bulkCall = %v, want %v", got, tc.direct)
			}
		})
	}
	u := callOf(&qtfsv1.FifoRemoveRequest{})
	if u != unknownCall || u.mountF.ok() || len(u.handlesF) != 0 || u.record != nil || u.noReply || u.releases {
		t.Errorf("an unknown request has facts: %+v", u)
	}
	s := &Session{rc: &reconn{}}
	if !s.releaseNoReply("", &qtfsv1.ReleaseRequest{}) || s.releaseNoReply("", &qtfsv1.FlushRequest{}) {
		t.Error("only a Release goes without its reply")
	}
	s.rc.lockHolders.Store(1)
	if s.releaseNoReply("", &qtfsv1.ReleaseRequest{}) {
		t.Error("a Release goes without its reply while a handle holds locks")
	}
}
