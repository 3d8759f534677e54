package session

import (
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// replay says whether a request that may have reached the server is sent
// again after a reconnect. The zero value, and the class of a request the
// table does not know, is replayNever.
type replay uint8

const (
	// replayNever: the request may or may not have been done; its caller
	// gets EIO rather than the change twice.
	replayNever replay = iota
	// replayAlways: the request lands the same way twice (a read, a
	// positional write, a setattr).
	replayAlways
	// replayUnlessAppending: a write, replayed unless the handle it
	// writes through (method.writes) was opened O_APPEND, where the data
	// would land twice.
	replayUnlessAppending
	// replayUnlessFlagged: replayed unless its flags field is set (an
	// XATTR_CREATE or XATTR_REPLACE change fails the second time).
	replayUnlessFlagged
)

// route is how a call travels when the session has a call stream
// (callstream.ClientOptions.Direct).
type route uint8

const (
	// onCalls: on the call stream or a call channel (the zero value).
	onCalls route = iota
	// onConn: as a plain unary call on the gRPC connection.
	onConn
	// onConnWhenBulk: as a plain unary call when the data it carries or
	// asks for (method.size) exceeds bulkCallBytes, on the call stream
	// otherwise.
	onConnWhenBulk
)

// method declares what the session does with one method of the
// FileSystem service; fields are named as in the proto. The zero value of
// every fact is the cautious one: no ids, never replayed, on the call
// stream, waiting for its reply.
type method struct {
	name string // the method's name in the service

	// mount and handles name the request's fields that hold the
	// session's mount id and handle ids, translated to the server
	// session's ids on every attempt (reconn.translate).
	mount   string
	handles []string

	retry replay
	// writes names the handle field a replayUnlessAppending request
	// writes through.
	writes string

	route route
	// size names the field that sizes an onConnWhenBulk call: a number
	// (the bytes asked for) or bytes (the bytes carried).
	size string

	// releases: the call ends the life of its one handle (reconn.release):
	// it is sent only when the server session that opened the handle is
	// the current one, and the handle is forgotten afterwards.
	releases bool
	// noReply: the call may go without waiting for its reply while no
	// handle of the session holds locks (Session.releaseNoReply).
	noReply bool

	// record keeps what a successful call made or changed (a mount, a
	// handle, a lock) and puts the session's id into the reply.
	record func(r *reconn, gen uint64, req, resp any)
}

// fileSystemMethods are the unary methods of the FileSystem service, in
// the proto's order. TestMethodTable holds it to the service descriptor.
var fileSystemMethods = []method{
	{name: "Handshake", retry: replayAlways, route: onConn},
	{name: "Mount", retry: replayAlways, record: (*reconn).recordMount},
	{name: "Lookup", mount: "mount", retry: replayAlways},
	{name: "Getattr", mount: "mount", handles: []string{"handle"}, retry: replayAlways},
	{name: "Setattr", mount: "mount", handles: []string{"handle"}, retry: replayAlways},
	{name: "Readlink", mount: "mount", retry: replayAlways},
	{name: "Symlink", mount: "mount", retry: replayNever},
	{name: "Mknod", mount: "mount", retry: replayNever},
	{name: "Mkdir", mount: "mount", retry: replayNever},
	{name: "Unlink", mount: "mount", retry: replayNever},
	{name: "Rmdir", mount: "mount", retry: replayNever},
	{name: "Rename", mount: "mount", retry: replayNever},
	{name: "Link", mount: "mount", retry: replayNever},
	{name: "Open", mount: "mount", retry: replayAlways, record: (*reconn).recordOpen},
	{name: "Create", mount: "mount", retry: replayNever, record: (*reconn).recordCreate},
	{name: "Read", handles: []string{"handle"}, retry: replayAlways, route: onConnWhenBulk, size: "size"},
	{name: "Write", handles: []string{"handle"}, retry: replayUnlessAppending, writes: "handle",
		route: onConnWhenBulk, size: "data"},
	{name: "Flush", handles: []string{"handle"}, retry: replayAlways},
	{name: "Fsync", handles: []string{"handle"}, retry: replayAlways},
	{name: "Release", handles: []string{"handle"}, retry: replayAlways, releases: true, noReply: true},
	{name: "Readdir", handles: []string{"handle"}, retry: replayAlways},
	{name: "Statfs", mount: "mount", retry: replayAlways},
	{name: "Mounts", mount: "mount", retry: replayAlways},
	// A mount made twice stacks: never replayed.
	{name: "MountOnHost", mount: "mount", retry: replayNever},
	{name: "UnmountOnHost", mount: "mount", retry: replayNever},
	{name: "Getxattr", mount: "mount", retry: replayAlways},
	{name: "Setxattr", mount: "mount", retry: replayUnlessFlagged},
	{name: "Listxattr", mount: "mount", retry: replayAlways},
	{name: "Removexattr", mount: "mount", retry: replayNever},
	{name: "Fallocate", handles: []string{"handle"}, retry: replayAlways},
	{name: "Lseek", handles: []string{"handle"}, retry: replayAlways},
	{name: "CopyFileRange", handles: []string{"handle_in", "handle_out"}, retry: replayUnlessAppending, writes: "handle_out"},
	{name: "Getlk", handles: []string{"handle"}, retry: replayAlways},
	{name: "Setlk", handles: []string{"handle"}, retry: replayAlways, record: (*reconn).recordSetlk},
}

// callInfo is a method of the table bound to its request: the fields it
// names are indices of the request's Go struct, checked against the
// proto's descriptor.
type callInfo struct {
	method
	mountF   field
	handlesF []field
	writesF  field
	sizeF    field
	flagsF   field
}

// field is a field of a request: its proto name and its index in the Go
// struct; index -1 when the method names none.
type field struct {
	name  protoreflect.Name
	index int
	kind  protoreflect.Kind
}

var noField = field{index: -1}

func (f field) ok() bool { return f.index >= 0 }

// ptr returns the address of the uint64 field f of req.
func (f field) ptr(req any) *uint64 {
	return reflect.ValueOf(req).Elem().Field(f.index).Addr().Interface().(*uint64)
}

// uint returns the value of the number field f of req.
func (f field) uint(req any) uint64 { return reflect.ValueOf(req).Elem().Field(f.index).Uint() }

// len returns the length of the bytes field f of req.
func (f field) len(req any) int { return reflect.ValueOf(req).Elem().Field(f.index).Len() }

// unknownCall is the callInfo of a request the table does not know.
var unknownCall = &callInfo{mountF: noField, writesF: noField, sizeF: noField, flagsF: noField}

// calls indexes fileSystemMethods by their request's index among the
// messages of qtfs.proto, as lisafs indexes its handlers by message id.
var calls = mustIndexMethods(fileSystemService, fileSystemMethods)

// fileSystemService is the FileSystem service's descriptor.
var fileSystemService = qtfsv1.File_qtfs_v1_qtfs_proto.Services().ByName("FileSystem")

// callOf returns what the table declares for req's method; unknownCall
// when it declares nothing.
func callOf(req any) *callInfo {
	m, ok := req.(protoreflect.ProtoMessage)
	if !ok {
		return unknownCall
	}
	d := m.ProtoReflect().Descriptor()
	if d.Parent() != protoreflect.Descriptor(fileSystemService.ParentFile()) {
		return unknownCall
	}
	if i := d.Index(); i < len(calls) && calls[i] != nil {
		return calls[i]
	}
	return unknownCall
}

func mustIndexMethods(sd protoreflect.ServiceDescriptor, table []method) []*callInfo {
	m, err := indexMethods(sd, table)
	if err != nil {
		panic(err)
	}
	return m
}

// indexMethods binds each method of table to its request's descriptor
// and Go type, at the request's index among the messages of sd's file.
// An entry that names no unary method of sd, or a field its request
// lacks, is an error, as is a request that is no top-level message of
// that file or that two methods share.
func indexMethods(sd protoreflect.ServiceDescriptor, table []method) ([]*callInfo, error) {
	out := make([]*callInfo, sd.ParentFile().Messages().Len())
	for _, m := range table {
		md := sd.Methods().ByName(protoreflect.Name(m.name))
		if md == nil || md.IsStreamingClient() || md.IsStreamingServer() {
			return nil, fmt.Errorf("session: method table: %q is no unary method of %s", m.name, sd.FullName())
		}
		mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
		if err != nil {
			return nil, fmt.Errorf("session: method table: %s: %w", m.name, err)
		}
		t := reflect.TypeOf(mt.New().Interface())
		c := &callInfo{method: m, mountF: noField, writesF: noField, sizeF: noField, flagsF: noField}
		fieldOf := func(name string, kinds ...protoreflect.Kind) (field, error) {
			f := md.Input().Fields().ByName(protoreflect.Name(name))
			if f == nil || f.IsList() || !kindIn(f.Kind(), kinds) {
				return noField, fmt.Errorf("session: method table: %s: %s has no field %q of kind %v",
					m.name, md.Input().FullName(), name, kinds)
			}
			i, ok := goField(t.Elem(), f.Name())
			if !ok {
				return noField, fmt.Errorf("session: method table: %s: no Go field for %s", m.name, f.FullName())
			}
			return field{name: f.Name(), index: i, kind: f.Kind()}, nil
		}
		if m.mount != "" {
			if c.mountF, err = fieldOf(m.mount, protoreflect.Uint64Kind); err != nil {
				return nil, err
			}
		}
		for _, h := range m.handles {
			f, err := fieldOf(h, protoreflect.Uint64Kind)
			if err != nil {
				return nil, err
			}
			c.handlesF = append(c.handlesF, f)
		}
		if m.releases && len(m.handles) != 1 {
			return nil, fmt.Errorf("session: method table: %s releases a handle but names %d", m.name, len(m.handles))
		}
		switch m.retry {
		case replayUnlessAppending:
			if c.writesF, err = fieldOf(m.writes, protoreflect.Uint64Kind); err != nil {
				return nil, err
			}
		case replayUnlessFlagged:
			if c.flagsF, err = fieldOf("flags", protoreflect.Uint32Kind); err != nil {
				return nil, err
			}
		}
		if m.route == onConnWhenBulk {
			if c.sizeF, err = fieldOf(m.size, protoreflect.Uint32Kind, protoreflect.Uint64Kind, protoreflect.BytesKind); err != nil {
				return nil, err
			}
		}
		in := md.Input()
		if in.Parent() != protoreflect.Descriptor(sd.ParentFile()) {
			return nil, fmt.Errorf("session: method table: %s: request %s is not declared at the top of %s",
				m.name, in.FullName(), sd.ParentFile().Path())
		}
		if prev := out[in.Index()]; prev != nil {
			return nil, fmt.Errorf("session: method table: %s and %s share request %s", prev.name, m.name, in.FullName())
		}
		out[in.Index()] = c
	}
	return out, nil
}

func kindIn(k protoreflect.Kind, kinds []protoreflect.Kind) bool {
	for _, x := range kinds {
		if k == x {
			return true
		}
	}
	return false
}

// goField returns the index of the field of the generated struct st that
// holds proto field name (its protobuf tag names it).
func goField(st reflect.Type, name protoreflect.Name) (int, bool) {
	for i := 0; i < st.NumField(); i++ {
		for _, part := range strings.Split(st.Field(i).Tag.Get("protobuf"), ",") {
			if part == "name="+string(name) {
				return i, true
			}
		}
	}
	return 0, false
}

// bulk reports whether req, of an onConnWhenBulk method, carries or asks
// for more than bulkCallBytes.
func (c *callInfo) bulk(req any) bool {
	if c.sizeF.kind == protoreflect.BytesKind {
		return c.sizeF.len(req) > bulkCallBytes
	}
	return c.sizeF.uint(req) > bulkCallBytes
}
