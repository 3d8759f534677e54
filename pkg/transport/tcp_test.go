package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

// testPKIs are two independent CAs with their certificates, plus extra
// certificates from the first CA.
type testPKIs struct {
	a, b                      PKIFiles
	expiredClient, expiredKey string
	expiredServer, expSrvKey  string
	otherServer, otherSrvKey  string
}

func newTestPKIs(t *testing.T) testPKIs {
	t.Helper()
	var p testPKIs
	var err error
	names := []string{"localhost", "127.0.0.1", "::1"}
	if p.a, err = WritePKI(t.TempDir(), PKIOptions{CAName: "CA A", ServerNames: names, ClientNames: []string{"dpu1"}}); err != nil {
		t.Fatal(err)
	}
	if p.b, err = WritePKI(t.TempDir(), PKIOptions{CAName: "CA B", ServerNames: names, ClientNames: []string{"intruder"}}); err != nil {
		t.Fatal(err)
	}
	if p.expiredClient, p.expiredKey, err = IssueCert(p.a.Dir, "expired-client", CertOptions{CommonName: "dpu-old", Client: true, Expired: true}); err != nil {
		t.Fatal(err)
	}
	if p.expiredServer, p.expSrvKey, err = IssueCert(p.a.Dir, "expired-server", CertOptions{Hosts: names, Server: true, Expired: true}); err != nil {
		t.Fatal(err)
	}
	if p.otherServer, p.otherSrvKey, err = IssueCert(p.a.Dir, "other-server", CertOptions{CommonName: "elsewhere", Hosts: []string{"elsewhere.example"}, Server: true}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTLS(t *testing.T) {
	p := newTestPKIs(t)
	serverA := p.a.ServerSecurity()
	clientA := p.a.ClientSecurity()
	tests := []struct {
		name      string
		server    Security
		client    Security
		clientErr string // "" = the call succeeds
		serverErr string // the server's logged refusal, when it sees one
	}{
		{name: "mutual TLS", server: serverA, client: clientA},
		{
			name:      "client certificate from another CA",
			server:    serverA,
			client:    Security{CertFile: p.b.ClientCert, KeyFile: p.b.ClientKey, CAFile: p.a.CA},
			clientErr: "remote error: tls: unknown certificate authority",
			serverErr: "certificate signed by unknown authority",
		},
		{
			name:      "no client certificate",
			server:    serverA,
			client:    Security{CAFile: p.a.CA},
			clientErr: "remote error: tls: certificate required",
			serverErr: "didn't provide a certificate",
		},
		{
			name:      "expired client certificate",
			server:    serverA,
			client:    Security{CertFile: p.expiredClient, KeyFile: p.expiredKey, CAFile: p.a.CA},
			clientErr: "remote error: tls: expired certificate",
			serverErr: "certificate has expired",
		},
		{
			name:      "server certificate from another CA",
			server:    Security{CertFile: p.b.ServerCert, KeyFile: p.b.ServerKey, CAFile: p.a.CA},
			client:    clientA,
			clientErr: "certificate signed by unknown authority",
			serverErr: "remote error: tls: bad certificate",
		},
		{
			name:      "expired server certificate",
			server:    Security{CertFile: p.expiredServer, KeyFile: p.expSrvKey, CAFile: p.a.CA},
			client:    clientA,
			clientErr: "certificate has expired",
			serverErr: "remote error: tls: bad certificate",
		},
		{
			name:      "server certificate for another name",
			server:    Security{CertFile: p.otherServer, KeyFile: p.otherSrvKey, CAFile: p.a.CA},
			client:    clientA,
			clientErr: "cannot validate certificate for 127.0.0.1 because it doesn't contain any IP SANs",
			serverErr: "remote error: tls: bad certificate",
		},
		{
			name:   "expected server name given",
			server: Security{CertFile: p.otherServer, KeyFile: p.otherSrvKey, CAFile: p.a.CA},
			client: Security{CertFile: p.a.ClientCert, KeyFile: p.a.ClientKey, CAFile: p.a.CA, ServerName: "elsewhere.example"},
		},
		{
			name:      "plain client against a TLS server",
			server:    serverA,
			client:    Security{Insecure: true},
			clientErr: "closed the connection before answering",
			serverErr: "does not look like a TLS handshake",
		},
		{
			name:      "TLS client against a plain server",
			server:    Security{Insecure: true},
			client:    clientA,
			clientErr: "tls handshake",
		},
		{name: "plain TCP on loopback", server: Security{Insecure: true}, client: Security{Insecure: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, tc.server, "tcp://127.0.0.1:0")
			u := ts.uris[0]
			err := call(t, u, tc.client)
			if tc.clientErr == "" {
				if err != nil {
					t.Fatalf("call: %v", err)
				}
				id := ts.lastID(t)
				want := "tls:CN=dpu1 addr=127.0.0.1:"
				if tc.server.Insecure {
					want = "insecure:addr=127.0.0.1:"
				}
				if !strings.HasPrefix(id, want) {
					t.Fatalf("PeerIdentity %q, want %q...", id, want)
				}
				if n := counter(t, ts.reg, "tcp", "ok"); n < 1 {
					t.Fatalf("handshakes ok = %v", n)
				}
				return
			}
			if err == nil {
				t.Fatal("call succeeded, want a refusal")
			}
			if !strings.Contains(err.Error(), tc.clientErr) {
				t.Fatalf("client error %q, want it to contain %q", err, tc.clientErr)
			}
			if !strings.Contains(err.Error(), "transport: dial "+u.String()+": ") {
				t.Fatalf("client error %q does not name %s", err, u)
			}
			if tc.serverErr != "" {
				ts.waitRefusal(t, "tcp", tc.serverErr)
			}
		})
	}
}

func TestTLSOverIPv6(t *testing.T) {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback here (%v): enable IPv6 on lo to run this test", err)
	}
	l.Close()
	p := newTestPKIs(t)
	ts := startServer(t, p.a.ServerSecurity(), "tcp://[::1]:0")
	if err := call(t, ts.uris[0], p.a.ClientSecurity()); err != nil {
		t.Fatal(err)
	}
	if id := ts.lastID(t); !strings.HasPrefix(id, "tls:CN=dpu1 addr=[::1]:") {
		t.Fatalf("PeerIdentity %q", id)
	}
}

// TestPlainTCPNeedsInsecure: without TLS files or Insecure, neither side
// gets as far as a socket, and the error says what to pass.
func TestPlainTCPNeedsInsecure(t *testing.T) {
	u, err := ParseURI("tcp://127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(context.Background(), u, Security{})
	if err == nil {
		l.Close()
		t.Fatal("Listen without TLS or Insecure succeeded")
	}
	if want := "pass --tls-cert/--tls-key/--tls-client-ca or --insecure"; !strings.Contains(err.Error(), want) {
		t.Fatalf("Listen error %q, want %q", err, want)
	}
	ts := startServer(t, Security{Insecure: true}, "tcp://127.0.0.1:0")
	cc, err := Dial(context.Background(), ts.uris[0], Security{})
	if err == nil {
		cc.Close()
		t.Fatal("Dial without TLS or Insecure succeeded")
	}
	if want := "pass --tls-cert/--tls-key/--tls-ca or --insecure"; !strings.Contains(err.Error(), want) {
		t.Fatalf("Dial error %q, want %q", err, want)
	}
}

func TestTCPListenErrors(t *testing.T) {
	sec := Security{Insecure: true}
	first, err := Listen(context.Background(), URI{Scheme: TCP, Host: "127.0.0.1"}, sec)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	port := uint32(first.Addr().(*net.TCPAddr).Port)
	u := URI{Scheme: TCP, Host: "127.0.0.1", Port: port}
	_, err = Listen(context.Background(), u, sec)
	want := fmt.Sprintf("transport: listen tcp://127.0.0.1:%d: address already in use", port)
	if err == nil || err.Error() != want {
		t.Fatalf("second Listen: %v, want %q", err, want)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("error %v does not wrap EADDRINUSE", err)
	}
	// An address this host does not have (TEST-NET-1): bind fails locally.
	_, err = Listen(context.Background(), URI{Scheme: TCP, Host: "192.0.2.1"}, Security{CertFile: "x", KeyFile: "y", CAFile: "z"})
	if want := "transport: listen tcp://192.0.2.1:0: cannot assign requested address"; err == nil || err.Error() != want {
		t.Fatalf("Listen on a foreign address: %v, want %q", err, want)
	}
}

func TestDialErrors(t *testing.T) {
	// A port nobody listens on: take one, then free it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	p := newTestPKIs(t)
	missing := t.TempDir() + "/none.sock"
	tests := []struct {
		name string
		uri  string
		sec  Security
		want string
	}{
		{"connection refused", fmt.Sprintf("tcp://127.0.0.1:%d", port), Security{Insecure: true},
			fmt.Sprintf("transport: dial tcp://127.0.0.1:%d: connection refused", port)},
		{"no socket", "unix://" + missing, Security{}, "transport: dial unix://" + missing + ": no such file or directory"},
		{"missing CA file", "tcp://127.0.0.1:1", Security{CAFile: p.a.Dir + "/nope.pem"}, "transport: read CA"},
		{"CA file without PEM", "tcp://127.0.0.1:1", Security{CAFile: p.a.ServerKey}, "no PEM certificate"},
		{"bad key pair", "tcp://127.0.0.1:1", Security{CertFile: p.a.ClientCert, KeyFile: p.b.ClientKey, CAFile: p.a.CA}, "load certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := ParseURI(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			err = call(t, u, tc.sec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("call: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestServerCredentialsErrors(t *testing.T) {
	p := newTestPKIs(t)
	tests := []struct {
		name string
		sec  Security
		want string
	}{
		{"TLS without client CA", Security{CertFile: p.a.ServerCert, KeyFile: p.a.ServerKey}, "--tls-client-ca"},
		{"missing certificate", Security{CertFile: p.a.Dir + "/nope.pem", KeyFile: p.a.ServerKey, CAFile: p.a.CA}, "load certificate"},
		{"key of another certificate", Security{CertFile: p.a.ServerCert, KeyFile: p.a.ClientKey, CAFile: p.a.CA}, "private key does not match"},
		{"insecure and TLS", Security{Insecure: true, CAFile: p.a.CA}, "exclude each other"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ServerCredentials(tc.sec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ServerCredentials: %v, want an error with %q", err, tc.want)
			}
		})
	}
}
