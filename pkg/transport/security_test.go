package transport

import (
	"os"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	var (
		tlsServer = Security{CertFile: "s.pem", KeyFile: "s-key.pem", CAFile: "ca.pem"}
		tlsClient = Security{CertFile: "c.pem", KeyFile: "c-key.pem", CAFile: "ca.pem"}
		insecure  = Security{Insecure: true}
		loud      = Security{Insecure: true, InsecureNonLoopback: true}
	)
	tests := []struct {
		name   string
		uri    string
		uriVal *URI // used instead of uri when set (a URI ParseURI would refuse)
		sec    Security
		server bool
		want   string // "" = valid; else a part of the error
	}{
		{name: "tls server", uri: "tcp://0.0.0.0:1", sec: tlsServer, server: true},
		{name: "tls client", uri: "tcp://192.0.2.1:1", sec: tlsClient},
		{name: "tls client without own cert", uri: "tcp://192.0.2.1:1", sec: Security{CAFile: "ca.pem"}},
		{name: "tls client without CA", uri: "tcp://192.0.2.1:1", sec: Security{CertFile: "c", KeyFile: "k"}, want: "pass --tls-ca"},
		{name: "tls server without client CA", uri: "tcp://0.0.0.0:1", sec: Security{CertFile: "c", KeyFile: "k"}, server: true, want: "pass --tls-client-ca"},
		{name: "tls server without cert", uri: "tcp://0.0.0.0:1", sec: Security{CAFile: "ca"}, server: true, want: "pass --tls-cert and --tls-key"},
		{name: "tcp server without anything", uri: "tcp://127.0.0.1:1", server: true, want: "TCP needs TLS: pass --tls-cert/--tls-key/--tls-client-ca or --insecure"},
		{name: "tcp client without anything", uri: "tcp://127.0.0.1:1", want: "TCP needs TLS: pass --tls-cert/--tls-key/--tls-ca or --insecure"},
		{name: "cert without key", uri: "tcp://127.0.0.1:1", sec: Security{CertFile: "c", CAFile: "ca"}, want: "--tls-cert and --tls-key go together"},
		{name: "key without cert", uri: "unix:///x", sec: Security{KeyFile: "k"}, server: true, want: "--tls-cert and --tls-key go together"},
		{name: "insecure and TLS", uri: "tcp://127.0.0.1:1", sec: Security{Insecure: true, CAFile: "ca"}, want: "exclude each other"},
		{name: "loud flag alone", uri: "tcp://127.0.0.1:1", sec: Security{InsecureNonLoopback: true}, want: "only makes sense with --insecure"},
		{name: "insecure loopback v4 server", uri: "tcp://127.0.0.1:0", sec: insecure, server: true},
		{name: "insecure loopback v4 client", uri: "tcp://127.0.0.1:1", sec: insecure},
		{name: "insecure loopback v6", uri: "tcp://[::1]:1", sec: insecure},
		{name: "insecure localhost", uri: "tcp://localhost:1", sec: insecure, server: true},
		{name: "insecure non-loopback server", uri: "tcp://0.0.0.0:1", sec: insecure, server: true, want: "refused on the non-loopback address 0.0.0.0"},
		{name: "insecure non-loopback client", uri: "tcp://dpu.example:1", sec: insecure, want: "add --insecure-non-loopback"},
		{name: "insecure non-loopback with loud flag", uri: "tcp://0.0.0.0:1", sec: loud, server: true},
		{name: "insecure non-loopback client with loud flag", uri: "tcp://192.0.2.1:1", sec: loud},
		{name: "client dials port 0", uri: "tcp://127.0.0.1:0", sec: insecure, want: "cannot dial port 0"},
		{name: "tcp port out of range", uriVal: &URI{Scheme: TCP, Host: "127.0.0.1", Port: 70000}, sec: insecure, want: "out of range"},
		{name: "unix server without TLS", uri: "unix:///run/q.sock", server: true},
		{name: "unix client without TLS", uri: "unix:///run/q.sock"},
		{name: "unix ignores TLS files", uri: "unix:///run/q.sock", sec: tlsServer, server: true},
		{name: "unix relative path", uriVal: &URI{Scheme: Unix, Path: "q.sock"}, server: true, want: "not absolute"},
		{name: "vsock server without TLS", uri: "vsock://any:1", server: true},
		{name: "vsock client", uri: "vsock://2:1"},
		{name: "vsock client to any", uri: "vsock://any:1", want: "cannot dial context id any"},
		{name: "vsock client to port any", uri: "vsock://2:4294967295", want: "cannot dial port any"},
		{name: "unknown scheme", uriVal: &URI{Scheme: "sctp"}, server: true, want: `unknown scheme "sctp"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var u URI
			if tc.uriVal != nil {
				u = *tc.uriVal
			} else {
				var err error
				if u, err = ParseURI(tc.uri); err != nil {
					t.Fatal(err)
				}
			}
			err := tc.sec.Validate(u, tc.server)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate passed, want an error with %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate error %q, want it to contain %q", err, tc.want)
			case err != nil && !strings.HasPrefix(err.Error(), "transport: "+u.String()+": "):
				t.Fatalf("Validate error %q does not name the URI", err)
			}
		})
	}
}

func TestSecurityPeerRules(t *testing.T) {
	me := uint32(os.Geteuid())
	tests := []struct {
		name string
		sec  Security
		uid  uint32
		want bool
	}{
		{"root by default", Security{}, 0, true},
		{"own uid by default", Security{}, me, true},
		{"stranger by default", Security{}, 65534, me == 65534},
		{"listed uid", Security{AllowedUIDs: []uint32{1000, 65534}}, 65534, true},
		{"root not listed", Security{AllowedUIDs: []uint32{1000}}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.sec.allowedUID(tc.uid); got != tc.want {
				t.Fatalf("allowedUID(%d) = %v, want %v", tc.uid, got, tc.want)
			}
		})
	}
	if !(Security{}).allowedCID(7) {
		t.Error("empty AllowedCIDs must allow any CID")
	}
	if (Security{AllowedCIDs: []uint32{3}}).allowedCID(7) || !(Security{AllowedCIDs: []uint32{3}}).allowedCID(3) {
		t.Error("AllowedCIDs not applied")
	}
	modes := []struct {
		sec  Security
		want os.FileMode
	}{
		{Security{}, 0o600},
		{Security{AllowedUIDs: []uint32{5}}, 0o666},
		{Security{UnixSocketMode: 0o660}, 0o660},
	}
	for _, m := range modes {
		if got := m.sec.socketMode(); got != m.want {
			t.Errorf("socketMode(%+v) = %o, want %o", m.sec, got, m.want)
		}
	}
}
