package hostfs_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/qtfs/qtfs/pkg/fs/hostfs"
	"github.com/qtfs/qtfs/pkg/internal/buftest"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// rawCodec sends and receives messages as the bytes they are, so the
// fuzzer's bytes reach the server's own decoder unchanged.
type rawCodec struct{}

type rawMsg struct{ b []byte }

func (rawCodec) Marshal(v any) ([]byte, error) { return v.(*rawMsg).b, nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	v.(*rawMsg).b = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// fsMethod is one FileSystem rpc, found by reflection so that every rpc
// the contract gains is fuzzed too.
type fsMethod struct {
	name     string
	fullName string
	in, out  protoreflect.MessageType
}

func fileSystemMethods(tb testing.TB) []fsMethod {
	tb.Helper()
	sd := qtfsv1.File_qtfs_v1_qtfs_proto.Services().ByName("FileSystem")
	if sd == nil {
		tb.Fatal("no FileSystem service in the descriptor")
	}
	var out []fsMethod
	ms := sd.Methods()
	for i := 0; i < ms.Len(); i++ {
		m := ms.Get(i)
		in, err := protoregistry.GlobalTypes.FindMessageByName(m.Input().FullName())
		if err != nil {
			tb.Fatal(err)
		}
		o, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, fsMethod{name: string(m.Name()), fullName: "/" + string(sd.FullName()) + "/" + string(m.Name()), in: in, out: o})
	}
	return out
}

// fuzzSeeds are well-formed requests for each rpc, naming mount 1, the
// fixture file handle 1 and directory handle 2 that every run opens.
func fuzzSeeds() map[string]proto.Message {
	c := &qtfsv1.Caller{Uid: 0, Gid: 0, Pid: 1, Groups: []uint32{0, 4}}
	return map[string]proto.Message{
		"Handshake":     &qtfsv1.HandshakeRequest{ProtocolVersion: 1, Client: "fuzz", Features: []qtfsv1.Feature{1, 2, 3}},
		"Mount":         &qtfsv1.MountRequest{Path: []byte("/"), Caller: c},
		"Lookup":        &qtfsv1.LookupRequest{Mount: 1, Caller: c, Path: []byte("d"), Name: []byte("e")},
		"Getattr":       &qtfsv1.GetattrRequest{Mount: 1, Caller: c, Path: []byte("d/back"), Handle: 0},
		"Setattr":       &qtfsv1.SetattrRequest{Mount: 1, Caller: c, Path: []byte("f"), Valid: 0xff, Mode: 0o4777, Uid: 1, Gid: 1, Size: 3, AtimeSec: -1, AtimeNsec: 2e9},
		"Readlink":      &qtfsv1.ReadlinkRequest{Mount: 1, Caller: c, Path: []byte("esc")},
		"Symlink":       &qtfsv1.SymlinkRequest{Mount: 1, Caller: c, Path: []byte("d"), Name: []byte("s"), Target: []byte("../../outside/secret")},
		"Mknod":         &qtfsv1.MknodRequest{Mount: 1, Caller: c, Path: []byte(""), Name: []byte("dev"), Mode: unix.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3)},
		"Mkdir":         &qtfsv1.MkdirRequest{Mount: 1, Caller: c, Path: []byte("d"), Name: []byte("n"), Mode: 0o7777, Umask: 0o22},
		"Unlink":        &qtfsv1.UnlinkRequest{Mount: 1, Caller: c, Path: []byte("up"), Name: []byte("outside")},
		"Rmdir":         &qtfsv1.RmdirRequest{Mount: 1, Caller: c, Path: []byte("d"), Name: []byte("e")},
		"Rename":        &qtfsv1.RenameRequest{Mount: 1, Caller: c, OldPath: []byte("out"), OldName: []byte("secret"), NewPath: []byte(""), NewName: []byte("x"), Flags: 7},
		"Link":          &qtfsv1.LinkRequest{Mount: 1, Caller: c, Path: []byte("out/secret"), NewPath: []byte("d"), NewName: []byte("l")},
		"Open":          &qtfsv1.OpenRequest{Mount: 1, Caller: c, Path: []byte("f"), Flags: unix.O_RDWR | unix.O_APPEND, ReadInline: 1 << 30},
		"Create":        &qtfsv1.CreateRequest{Mount: 1, Caller: c, Path: []byte("d"), Name: []byte("c"), Flags: unix.O_RDWR | unix.O_EXCL, Mode: 0o644},
		"Read":          &qtfsv1.ReadRequest{Handle: 1, Offset: 0, Size: 1 << 31},
		"Write":         &qtfsv1.WriteRequest{Handle: 1, Offset: 1 << 62, Data: []byte("w")},
		"Flush":         &qtfsv1.FlushRequest{Handle: 1},
		"Fsync":         &qtfsv1.FsyncRequest{Handle: 2, Datasync: true},
		"Release":       &qtfsv1.ReleaseRequest{Handle: 2},
		"Readdir":       &qtfsv1.ReaddirRequest{Handle: 2, Offset: 1 << 63, MaxEntries: 1 << 31, Plus: true},
		"Statfs":        &qtfsv1.StatfsRequest{Mount: 1, Caller: c, Path: []byte("d/e")},
		"Mounts":        &qtfsv1.MountsRequest{Mount: 1},
		"MountOnHost":   &qtfsv1.MountOnHostRequest{Mount: 1, Caller: c, Target: []byte("d"), FsType: "overlay", Flags: unix.MS_NOSUID, Lower: [][]byte{[]byte("d/e"), []byte("up")}, Upper: []byte("out"), Work: []byte("d"), Options: "index=off,context=x"},
		"UnmountOnHost": &qtfsv1.UnmountOnHostRequest{Mount: 1, Caller: c, Target: []byte("d"), Flags: unix.MNT_DETACH},
		"Getxattr":      &qtfsv1.GetxattrRequest{Mount: 1, Caller: c, Path: []byte("f"), Name: []byte("user.x"), Size: 1 << 31},
		"Setxattr":      &qtfsv1.SetxattrRequest{Mount: 1, Caller: c, Path: []byte("f"), Name: []byte("trusted.overlay.opaque"), Value: []byte("y"), Flags: 3},
		"Listxattr":     &qtfsv1.ListxattrRequest{Mount: 1, Caller: c, Path: []byte("d"), Size: 1},
		"Removexattr":   &qtfsv1.RemovexattrRequest{Mount: 1, Caller: c, Path: []byte("f"), Name: []byte("")},
		"Fallocate":     &qtfsv1.FallocateRequest{Handle: 1, Mode: unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, Offset: -1, Length: 1 << 40},
		"Lseek":         &qtfsv1.LseekRequest{Handle: 1, Offset: -5, Whence: unix.SEEK_HOLE},
		"CopyFileRange": &qtfsv1.CopyFileRangeRequest{HandleIn: 1, OffsetIn: 0, HandleOut: 1, OffsetOut: 1, Length: 1 << 62, Flags: 1},
		"Getlk":         &qtfsv1.GetlkRequest{Handle: 1, Owner: 9, Lock: &qtfsv1.Lock{Start: 10, End: 1, Type: 7}},
		"Setlk":         &qtfsv1.SetlkRequest{Handle: 1, Owner: 9, Lock: &qtfsv1.Lock{Start: 0, End: ^uint64(0), Type: unix.F_WRLCK}, Wait: true, Flock: true},
	}
}

// clampHostCost bounds what one fuzzed request may cost the test machine
// (disk space, not correctness): fallocate and copy_file_range lengths.
func clampHostCost(method string, data []byte) []byte {
	var m proto.Message
	switch method {
	case "Fallocate":
		r := &qtfsv1.FallocateRequest{}
		if proto.Unmarshal(data, r) != nil {
			return data
		}
		r.Length = min(max(r.Length, -1), 1<<20)
		r.Offset = min(r.Offset, 1<<20)
		m = r
	case "CopyFileRange":
		r := &qtfsv1.CopyFileRangeRequest{}
		if proto.Unmarshal(data, r) != nil {
			return data
		}
		r.Length = min(r.Length, 1<<20)
		m = r
	default:
		return data
	}
	out, err := proto.Marshal(m)
	if err != nil {
		return data
	}
	return out
}

// checkReply walks every field of a reply: errnos must be errnos, no
// attribute may describe an object outside the export and no bytes may
// come from outside (they would carry the marker).
func checkReply(t *testing.T, what string, m protoreflect.Message, outside map[[2]uint64]string) {
	t.Helper()
	if m.Descriptor().FullName() == "qtfs.v1.Attr" {
		dev := m.Get(m.Descriptor().Fields().ByName("dev")).Uint()
		ino := m.Get(m.Descriptor().Fields().ByName("ino")).Uint()
		if p, ok := outside[[2]uint64{dev, ino}]; ok {
			t.Fatalf("%s: reply describes %s, outside the export", what, p)
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Name() == "errno" && fd.Kind() == protoreflect.Int32Kind:
			if e := v.Int(); e < 0 || e > 4095 {
				t.Fatalf("%s: errno %d is no errno", what, e)
			}
		case fd.IsList() && fd.Kind() == protoreflect.MessageKind:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				checkReply(t, what, l.Get(i).Message(), outside)
			}
		case fd.Kind() == protoreflect.MessageKind:
			checkReply(t, what, v.Message(), outside)
		case fd.Kind() == protoreflect.BytesKind && !fd.IsList():
			if bytes.Contains(v.Bytes(), []byte(escapeMarker)) {
				t.Fatalf("%s: reply field %s carries data from outside: %q", what, fd.Name(), v.Bytes())
			}
		}
		return true
	})
}

// FuzzRequests sends arbitrary bytes as the request of any FileSystem rpc,
// through a real gRPC connection, so the server's own decoding, checks
// and handlers see them. Each run starts a fresh session with mount 1 on
// the export, file handle 1 and directory handle 2. The server must never
// panic (INTERNAL), every reply must be well formed, and nothing outside
// the export may be read or changed.
func FuzzRequests(f *testing.F) {
	methods := fileSystemMethods(f)
	seeds := fuzzSeeds()
	for i, m := range methods {
		if s, ok := seeds[m.name]; ok {
			b, err := proto.Marshal(s)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), b)
		}
		f.Add(uint8(i), []byte{})
	}
	ft := newFuzzTree(f)
	if err := os.WriteFile(filepath.Join(ft.outside, escapeMarker), []byte(escapeMarker+"\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	s, err := hostfs.New(hostfs.Options{
		Exports: []hostfs.Export{{Path: ft.exp}},
		Logger:  zaptest.NewLogger(f, zaptest.Level(zap.DPanicLevel)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	cc := buftest.Serve(f, s.ServerOptions(), s.Register).Dial(f,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20), grpc.MaxCallSendMsgSize(64<<20)))
	client := qtfsv1.NewFileSystemClient(cc)
	outside := map[[2]uint64]string{}
	filepath.Walk(ft.root, func(p string, _ os.FileInfo, err error) error {
		if err == nil && p != ft.exp && !bytes.HasPrefix([]byte(p), []byte(ft.exp+"/")) {
			var st unix.Stat_t
			if unix.Lstat(p, &st) == nil {
				outside[[2]uint64{st.Dev, st.Ino}] = p
			}
		}
		return nil
	})
	before := ft.outsideState(f)

	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		ft.restore(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// A fresh session: mount 1, file handle 1, directory handle 2.
		if _, err := client.Handshake(ctx, &qtfsv1.HandshakeRequest{ProtocolVersion: 1, Client: "fuzz"}); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		mr, err := client.Mount(ctx, &qtfsv1.MountRequest{Path: []byte(ft.exp), Caller: root})
		if err != nil || mr.GetErrno() != 0 || mr.GetMount() != 1 {
			t.Fatalf("mount: %v %v", mr, err)
		}
		fr, err := client.Open(ctx, &qtfsv1.OpenRequest{Mount: 1, Caller: root, Path: []byte("f"), Flags: unix.O_RDWR})
		if err != nil || fr.GetErrno() != 0 || fr.GetHandle() != 1 {
			t.Fatalf("open f: %v %v", fr, err)
		}
		dr, err := client.Open(ctx, &qtfsv1.OpenRequest{Mount: 1, Caller: root, Path: []byte("d"), Flags: unix.O_RDONLY | unix.O_DIRECTORY})
		if err != nil || dr.GetErrno() != 0 || dr.GetHandle() != 2 {
			t.Fatalf("open d: %v %v", dr, err)
		}

		m := methods[int(which)%len(methods)]
		data = clampHostCost(m.name, data)
		var resp rawMsg
		// A lock wait may block for good; it ends with the call.
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		err = cc.Invoke(cctx, m.fullName, &rawMsg{b: data}, &resp, grpc.ForceCodec(rawCodec{}))
		ccancel()
		if err != nil {
			st, _ := status.FromError(err)
			switch st.Code() {
			case codes.Internal:
				// gRPC itself refuses bytes that are no message of the
				// rpc's type; a handler panic would say "internal error".
				if !strings.Contains(st.Message(), "failed to unmarshal") {
					t.Fatalf("%s(%x): %v", m.name, data, err)
				}
			case codes.InvalidArgument, codes.FailedPrecondition, codes.ResourceExhausted, codes.DeadlineExceeded, codes.Canceled:
				// A refused request (bad bytes, a handshake the server
				// rejects), or a lock wait that outlived the call.
			default:
				t.Fatalf("%s(%x): %v", m.name, data, err)
			}
		} else {
			out := m.out.New().Interface()
			if err := proto.Unmarshal(resp.b, out); err != nil {
				t.Fatalf("%s: the server's reply does not decode: %v", m.name, err)
			}
			checkReply(t, m.name, out.ProtoReflect(), outside)
		}
		if after := ft.outsideState(t); after != before {
			t.Fatalf("%s(%x) changed the host outside the export:\nbefore:\n%s\nafter:\n%s", m.name, data, before, after)
		}
		// The server still answers.
		if _, err := client.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: 1, Caller: root}); err != nil && status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("after %s: server unhealthy: %v", m.name, err)
		}
	})
}
