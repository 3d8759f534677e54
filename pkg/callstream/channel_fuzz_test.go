package callstream_test

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/qtfs/qtfs/pkg/callstream"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// frame is m as a channel frame.
func frame(m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		panic(err)
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

// FuzzServeChannel feeds what a hostile client could send on a call
// channel to the server: it must neither panic nor hang, and must run no
// call before a good hello.
func FuzzServeChannel(f *testing.F) {
	hello := frame(&qtfsv1.ChannelHello{Token: []byte("good")})
	body, _ := proto.Marshal(&qtfsv1.GetattrRequest{Path: []byte("ok"), Handle: 3})
	call := frame(&qtfsv1.CallFrame{Id: 1, Method: qtfsv1.FileSystem_Getattr_FullMethodName, Body: body})
	f.Add(append(append([]byte{}, hello...), call...))
	f.Add(append(frame(&qtfsv1.ChannelHello{Token: []byte("bad")}), call...))
	f.Add(append(append([]byte{}, hello...), frame(&qtfsv1.CallFrame{Id: 1, Cancel: true})...))
	f.Add(append(append([]byte{}, hello...), frame(&qtfsv1.CallFrame{Id: 2, Method: "/no.Such/Method"})...))
	f.Add(append(append([]byte{}, hello...), 0xff, 0xff, 0xff, 0xff))
	f.Add(append(append([]byte{}, hello...), call[:7]...))
	f.Add([]byte{0, 0, 0, 3, 0xff, 0xff, 0xff})
	fs := &fakeFS{canceled: make(chan string, 1), release: make(chan struct{})}
	close(fs.release)
	srv := callstream.NewServer(&qtfsv1.FileSystem_ServiceDesc, fs, callstream.ServerOptions{MaxFrameBytes: 1 << 16})
	fs.calls = srv
	f.Fuzz(func(t *testing.T, in []byte) {
		client, server := net.Pipe()
		defer client.Close()
		go io.Copy(io.Discard, client) // the server's welcome and replies
		bound := false
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.ServeChannel(server, func(token []byte) (context.Context, func(), error) {
				if string(token) != "good" {
					return nil, nil, status.Error(codes.PermissionDenied, "bad token")
				}
				bound = true
				return context.Background(), func() {}, nil
			})
		}()
		before := fs.running.Load()
		_ = client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = client.Write(in)
		// The input is all the client says: its end closes, and the
		// server must finish.
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeChannel still running 10 s after its client left")
		}
		if !bound && fs.running.Load() != before {
			t.Fatal("a call ran on a channel that was not bound")
		}
	})
}
