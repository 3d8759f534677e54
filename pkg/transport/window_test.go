package transport

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// http2Windows reads the frames a peer sends first and returns the stream
// window its SETTINGS announce and the increment of its first connection
// WINDOW_UPDATE.
func http2Windows(t *testing.T, c net.Conn) (stream, conn uint32) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(io.Discard, c)
	for stream == 0 || conn == 0 {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("read HTTP/2 frame: %v (stream window %d, connection increment %d so far)", err, stream, conn)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
				stream = v
			}
		case *http2.WindowUpdateFrame:
			if f.StreamID == 0 {
				conn = f.Increment
			}
		}
	}
	return stream, conn
}

// TestFlowControlWindows checks on the wire that both sides announce the
// large windows (a 1 MiB chunk must not wait for window updates).
func TestFlowControlWindows(t *testing.T) {
	const initialConnWindow = 65535 // HTTP/2's, which the update raises
	wantConn := uint32(ConnWindowBytes - initialConnWindow)

	t.Run("server", func(t *testing.T) {
		ts := startServer(t, Security{Insecure: true}, "tcp://127.0.0.1:0")
		c, err := net.Dial("tcp", ts.uris[0].hostPort())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
			t.Fatal(err)
		}
		if err := http2.NewFramer(c, nil).WriteSettings(); err != nil {
			t.Fatal(err)
		}
		stream, conn := http2Windows(t, c)
		if stream != StreamWindowBytes || conn != wantConn {
			t.Fatalf("server announces stream window %d, connection increment %d; want %d, %d", stream, conn, StreamWindowBytes, wantConn)
		}
	})

	t.Run("client", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		accepted := make(chan net.Conn, 1)
		go func() {
			c, err := l.Accept()
			if err == nil {
				accepted <- c
			}
			close(accepted)
		}()
		u := URI{Scheme: TCP, Host: "127.0.0.1", Port: uint32(l.Addr().(*net.TCPAddr).Port)}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		// The listener never answers: Dial gives up, but the client has
		// sent its preface and settings by then.
		go func() {
			if cc, err := Dial(ctx, u, Security{Insecure: true}); err == nil {
				cc.Close()
			}
		}()
		c, ok := <-accepted
		if !ok {
			t.Fatal("no connection from Dial")
		}
		defer c.Close()
		preface := make([]byte, len(http2.ClientPreface))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(c, preface); err != nil || string(preface) != http2.ClientPreface {
			t.Fatalf("client preface %q: %v", preface, err)
		}
		stream, conn := http2Windows(t, c)
		if stream != StreamWindowBytes || conn != wantConn {
			t.Fatalf("client announces stream window %d, connection increment %d; want %d, %d", stream, conn, StreamWindowBytes, wantConn)
		}
	})
}
