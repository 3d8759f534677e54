package transport

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// vsockPipeConn is one end of an in-memory pipe that says it is a vsock
// connection: vsock loopback is missing on most test machines, and the
// peer check only looks at the addresses.
type vsockPipeConn struct {
	net.Conn
	local, remote *vsock.Addr
}

func (c vsockPipeConn) LocalAddr() net.Addr  { return c.local }
func (c vsockPipeConn) RemoteAddr() net.Addr { return c.remote }

// TestVsockCIDRefusedBothSides runs the server's and the client's vsock
// handshakes against each other over a pipe: a peer whose context id is
// not on the allow-list is refused, the refusal is logged with the
// allowed list and counted on the server, and the client learns that the
// server closed the connection before answering.
func TestVsockCIDRefusedBothSides(t *testing.T) {
	const hostCID, serverPort = 2, 12121
	tests := []struct {
		name      string
		allowed   []uint32
		clientCID uint32
		refused   bool
	}{
		{"no list allows any CID", nil, 7, false},
		{"listed CID", []uint32{3, 7}, 7, false},
		{"wrong CID", []uint32{3}, 7, true},
		{"wrong CID, host CID listed", []uint32{hostCID}, 42, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			core, logs := observer.New(zap.DebugLevel)
			creds, err := ServerCredentials(Security{AllowedCIDs: tc.allowed}, WithLogger(zap.New(core)), withRegisterer(t, reg))
			if err != nil {
				t.Fatal(err)
			}
			cEnd, sEnd := net.Pipe()
			t.Cleanup(func() { cEnd.Close(); sEnd.Close() })
			clientAddr := &vsock.Addr{ContextID: tc.clientCID, Port: 50000}
			serverAddr := &vsock.Addr{ContextID: hostCID, Port: serverPort}
			server := vsockPipeConn{Conn: sEnd, local: serverAddr, remote: clientAddr}
			client := vsockPipeConn{Conn: cEnd, local: clientAddr, remote: serverAddr}

			u := URI{Scheme: Vsock, CID: hostCID, Port: serverPort}
			ds := &dialState{}
			cc, err := newClientCreds(u, Security{}, ds)
			if err != nil {
				t.Fatal(err)
			}
			conn, _, err := cc.ClientHandshake(context.Background(), "", client)
			if err != nil {
				t.Fatalf("client handshake: %v", err)
			}

			sconn, info, serr := creds.ServerHandshake(server)
			if !tc.refused {
				if serr != nil {
					t.Fatalf("server refused an allowed CID: %v", serr)
				}
				if vp, ok := info.(VsockPeer); !ok || vp.CID != tc.clientCID {
					t.Fatalf("AuthInfo %#v, want VsockPeer with CID %d", info, tc.clientCID)
				}
				if n := counter(t, reg, "vsock", "ok"); n != 1 {
					t.Fatalf("ok handshakes counted %v", n)
				}
				// The connection carries bytes both ways.
				go sconn.Write([]byte("ok"))
				buf := make([]byte, 2)
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Read(buf); err != nil || string(buf) != "ok" {
					t.Fatalf("read through the accepted connection: %q, %v", buf, err)
				}
				return
			}
			if serr == nil {
				t.Fatal("server accepted a CID that is not on the list")
			}
			want := fmt.Sprintf("context id %d is not allowed (allowed: %v", tc.clientCID, tc.allowed)
			e := logs.FilterMessage("transport: handshake refused").All()
			if len(e) != 1 || !strings.Contains(fmt.Sprint(e[0].ContextMap()["error"]), want) {
				t.Fatalf("server log %v, want one refusal containing %q", e, want)
			}
			if got := e[0].ContextMap()["transport"]; got != "vsock" {
				t.Fatalf("refusal logged for transport %v", got)
			}
			if n := counter(t, reg, "vsock", "refused"); n != 1 {
				t.Fatalf("refusals counted %v, want 1", n)
			}
			// The client's first read finds the connection closed and says
			// so, pointing at the server's log.
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Fatal("client read through a refused connection")
			}
			cerr := ds.get()
			if cerr == nil || !strings.Contains(cerr.Error(), "transport: dial vsock://2:12121: the server closed the connection before answering (it may have refused us: see its log)") {
				t.Fatalf("client error %v, want the refusal explained", cerr)
			}
		})
	}
}
