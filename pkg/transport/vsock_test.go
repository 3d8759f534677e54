package transport

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mdlayher/vsock"
)

// vsockLoopback returns a free vsock port on which a local (CID 1) dial
// works, or skips the test: vsock loopback needs the vsock_loopback module.
func vsockLoopback(t *testing.T) uint32 {
	t.Helper()
	l, err := vsock.ListenContextID(CIDLocal, 0xFFFFFFFF, nil)
	if err != nil {
		t.Skipf("vsock loopback unavailable: listen: %v (load the vsock_loopback kernel module to run this test)", err)
	}
	defer l.Close()
	port := l.Addr().(*vsock.Addr).Port
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	c, err := vsock.Dial(CIDLocal, port, nil)
	if err != nil {
		t.Skipf("vsock loopback unavailable: dial CID 1: %v (load the vsock_loopback kernel module to run this test)", err)
	}
	c.Close()
	if err := <-done; err != nil {
		t.Skipf("vsock loopback unavailable: accept: %v", err)
	}
	return port
}

func TestVsock(t *testing.T) {
	port := vsockLoopback(t)
	tests := []struct {
		name    string
		sec     Security
		allowed bool
	}{
		{"any CID allowed", Security{}, true},
		{"local CID listed", Security{AllowedCIDs: []uint32{CIDLocal}}, true},
		{"local CID not listed", Security{AllowedCIDs: []uint32{42}}, false},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := port + uint32(i) + 1
			ts := startServer(t, tc.sec, fmt.Sprintf("vsock://local:%d", p))
			err := call(t, URI{Scheme: Vsock, CID: CIDLocal, Port: p}, Security{})
			if tc.allowed {
				if err != nil {
					t.Fatal(err)
				}
				if id := ts.lastID(t); id != "vsock:cid=1" {
					t.Fatalf("PeerIdentity %q, want vsock:cid=1", id)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "closed the connection before answering") {
				t.Fatalf("call: %v, want a refusal", err)
			}
			ts.waitRefusal(t, "vsock", "context id 1 is not allowed")
		})
	}
}
