package transport

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// channelEcho opens a call channel to u and checks that it carries bytes
// both ways.
func channelEcho(t *testing.T, u URI, sec Security) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := DialChannel(ctx, u, sec)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("frames go here")
	if _, err := conn.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		return err
	}
	if string(got) != string(msg) {
		t.Fatalf("echo %q, want %q", got, msg)
	}
	return nil
}

func (ts *testServer) lastChannel(t *testing.T) string {
	t.Helper()
	select {
	case p := <-ts.channels:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("the server saw no call channel")
		return ""
	}
}

// A call channel shares the listener with gRPC, passes the same security
// handshake, and its peer is the same principal as the gRPC connection's.
func TestCallChannel(t *testing.T) {
	p := newTestPKIs(t)
	uid := uint32(os.Geteuid())
	for _, tc := range []struct {
		name           string
		server, client Security
		uri            string
		principal      string // prefix
	}{
		{"mutual TLS", p.a.ServerSecurity(), p.a.ClientSecurity(), "tcp://127.0.0.1:0", "tls:"},
		{"plain TCP", Security{Insecure: true}, Security{Insecure: true}, "tcp://127.0.0.1:0", "insecure:127.0.0.1"},
		{"unix", Security{AllowedUIDs: []uint32{uid}}, Security{AllowedUIDs: []uint32{uid}}, "unix://" + t.TempDir() + "/s.sock", fmt.Sprintf("unix:uid=%d", uid)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.server, tc.uri)
			u := ts.uris[0]
			if err := call(t, u, tc.client); err != nil {
				t.Fatalf("gRPC call through the split listener: %v", err)
			}
			if err := channelEcho(t, u, tc.client); err != nil {
				t.Fatalf("call channel: %v", err)
			}
			got := ts.lastChannel(t)
			if !strings.HasPrefix(got, tc.principal) {
				t.Fatalf("channel principal %q, want %q...", got, tc.principal)
			}
			// The same client on both connections is the same principal.
			if err := channelEcho(t, u, tc.client); err != nil {
				t.Fatal(err)
			}
			if again := ts.lastChannel(t); again != got {
				t.Fatalf("second channel's principal %q, first %q", again, got)
			}
		})
	}
}

// A call channel gets the same refusals as a gRPC connection.
func TestCallChannelRefused(t *testing.T) {
	p := newTestPKIs(t)
	ts := startServer(t, p.a.ServerSecurity(), "tcp://127.0.0.1:0")
	u := ts.uris[0]
	other := Security{CertFile: p.b.ClientCert, KeyFile: p.b.ClientKey, CAFile: p.a.CA}
	err := channelEcho(t, u, other)
	if err == nil {
		t.Fatal("a client certificate from another CA opened a call channel")
	}
	ts.waitRefusal(t, "tcp", "certificate signed by unknown authority")
	select {
	case who := <-ts.channels:
		t.Fatalf("the refused channel reached the handler (%s)", who)
	default:
	}
	// A client that speaks TLS without the channel's ALPN, after the magic.
	raw, err := net.Dial("tcp", u.hostPort())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := io.WriteString(raw, ChannelMagic+"not TLS at all"); err != nil {
		t.Fatal(err)
	}
	ts.waitRefusal(t, "tcp", "does not look like a TLS handshake")
	// The listener goes on serving both kinds.
	if err := call(t, u, p.a.ClientSecurity()); err != nil {
		t.Fatal(err)
	}
	if err := channelEcho(t, u, p.a.ClientSecurity()); err != nil {
		t.Fatal(err)
	}
}

// A peer that says nothing, or leaves at once, holds up no one else.
func TestSplitListenerSilentPeer(t *testing.T) {
	ts := startServer(t, Security{Insecure: true}, "tcp://127.0.0.1:0")
	u := ts.uris[0]
	silent, err := net.Dial("tcp", u.hostPort())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	probe, err := net.Dial("tcp", u.hostPort())
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	if err := call(t, u, Security{Insecure: true}); err != nil {
		t.Fatalf("a call while a peer stays silent: %v", err)
	}
}
