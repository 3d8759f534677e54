package transport

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		in   string
		want URI
		str  string // String(); empty means in
	}{
		{in: "tcp://127.0.0.1:9000", want: URI{Scheme: TCP, Host: "127.0.0.1", Port: 9000}},
		{in: "tcp://127.0.0.1", want: URI{Scheme: TCP, Host: "127.0.0.1", Port: DefaultPort}, str: "tcp://127.0.0.1:12121"},
		{in: "tcp://localhost:0", want: URI{Scheme: TCP, Host: "localhost", Port: 0}},
		{in: "tcp://[::1]:9000", want: URI{Scheme: TCP, Host: "::1", Port: 9000}},
		{in: "tcp://[::1]", want: URI{Scheme: TCP, Host: "::1", Port: DefaultPort}, str: "tcp://[::1]:12121"},
		{in: "tcp://[fe80::1%eth0]:7", want: URI{Scheme: TCP, Host: "fe80::1%eth0", Port: 7}},
		{in: "TCP://dpu-1.example.:65535", want: URI{Scheme: TCP, Host: "dpu-1.example.", Port: 65535}, str: "tcp://dpu-1.example.:65535"},
		{in: "host.example:80", want: URI{Scheme: TCP, Host: "host.example", Port: 80}, str: "tcp://host.example:80"},
		{in: "host_1", want: URI{Scheme: TCP, Host: "host_1", Port: DefaultPort}, str: "tcp://host_1:12121"},
		{in: "10.0.0.1", want: URI{Scheme: TCP, Host: "10.0.0.1", Port: DefaultPort}, str: "tcp://10.0.0.1:12121"},
		{in: "::1", want: URI{Scheme: TCP, Host: "::1", Port: DefaultPort}, str: "tcp://[::1]:12121"},
		{in: "[2001:db8::5]:99", want: URI{Scheme: TCP, Host: "2001:db8::5", Port: 99}, str: "tcp://[2001:db8::5]:99"},
		{in: "unix:///run/qtfs/qtfs.sock", want: URI{Scheme: Unix, Path: "/run/qtfs/qtfs.sock"}},
		{in: "unix:///s", want: URI{Scheme: Unix, Path: "/s"}},
		{in: "vsock://3:1024", want: URI{Scheme: Vsock, CID: 3, Port: 1024}},
		{in: "vsock://3", want: URI{Scheme: Vsock, CID: 3, Port: DefaultPort}, str: "vsock://3:12121"},
		{in: "vsock://host:5", want: URI{Scheme: Vsock, CID: CIDHost, Port: 5}, str: "vsock://2:5"},
		{in: "vsock://local:5", want: URI{Scheme: Vsock, CID: CIDLocal, Port: 5}, str: "vsock://1:5"},
		{in: "vsock://any", want: URI{Scheme: Vsock, CID: CIDAny, Port: DefaultPort}, str: "vsock://4294967295:12121"},
		{in: "vsock://4294967295:4294967295", want: URI{Scheme: Vsock, CID: CIDAny, Port: 0xFFFFFFFF}},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseURI(tc.in)
			if err != nil {
				t.Fatalf("ParseURI(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Fatalf("ParseURI(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			want := tc.str
			if want == "" {
				want = tc.in
			}
			if s := got.String(); s != want {
				t.Fatalf("String() = %q, want %q", s, want)
			}
			again, err := ParseURI(got.String())
			if err != nil || again != got {
				t.Fatalf("round trip of %q: %+v, %v", got.String(), again, err)
			}
		})
	}
}

func TestParseURIErrors(t *testing.T) {
	tests := []struct {
		in, why string // why: a part of the error
	}{
		{"", "empty address"},
		{"tcp://", "missing host"},
		{"tcp://:80", "missing host"},
		{"tcp://h:", "empty port"},
		{"tcp://h:99999", `invalid port "99999"`},
		{"tcp://h:x", `invalid port "x"`},
		{"tcp://h:-1", `invalid port "-1"`},
		{"tcp://[::1", "missing ']'"},
		{"tcp://[::1]x", `unexpected "x"`},
		{"tcp://[::1]:", "empty port"},
		{"tcp://[127.0.0.1]:1", "not an IPv6 address"},
		{"tcp://fe80::zz:1", "put an IPv6 address in brackets"},
		{"tcp://h/path", `unexpected "/path"`},
		{"tcp://user@h:1", `unexpected "@h:1"`},
		{"tcp://bad!host:1", "invalid host name"},
		{"tcp://[fe80::1%]0]:1", `unexpected "0]:1"`},
		{"fe80::1%a]b", `invalid IPv6 zone "a]b"`},
		{"tcp://[fe80::1%" + strings.Repeat("e", 16) + "]:1", "invalid IPv6 zone"},
		{"tcp://-bad:1", "invalid host name"},
		{"tcp://a..b:1", "invalid host name"},
		{"tcp://" + strings.Repeat("a", 64) + ":1", "invalid host name"},
		{"h o st", "white space"},
		{"unix://", "missing socket path"},
		{"unix://relative/x.sock", "must be absolute"},
		{"unix:///a/../b.sock", "not clean"},
		{"unix:///a/", "not clean"},
		{"unix:/abs.sock", "malformed unix URI"},
		{"unix:///" + strings.Repeat("x", 120), "longer than the kernel's 107"},
		{"vsock:3:1", "malformed vsock URI"},
		{"vsock://", "missing context id"},
		{"vsock://x:1", `invalid context id "x"`},
		{"vsock://3:x", `invalid port "x"`},
		{"vsock://3:", `invalid port ""`},
		{"vsock://4294967296", `invalid context id`},
		{"http://h:1", `unknown scheme "http"`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			u, err := ParseURI(tc.in)
			if err == nil {
				t.Fatalf("ParseURI(%q) = %+v, want an error", tc.in, u)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "transport: uri ") || !strings.Contains(msg, tc.why) {
				t.Fatalf("ParseURI(%q) error %q: want it to name the URI and say %q", tc.in, msg, tc.why)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		uri  string
		want bool
	}{
		{"tcp://127.0.0.1:1", true},
		{"tcp://127.9.8.7:1", true},
		{"tcp://[::1]:1", true},
		{"tcp://[::ffff:127.0.0.1]:1", true},
		{"tcp://localhost:1", true},
		{"tcp://LocalHost.:1", true},
		{"tcp://10.0.0.1:1", false},
		{"tcp://0.0.0.0:1", false},
		{"tcp://[::]:1", false},
		{"tcp://localhost.example:1", false},
		{"tcp://128.0.0.1:1", false},
		{"unix:///run/qtfs.sock", false},
		{"vsock://1:1", false},
	}
	for _, tc := range tests {
		t.Run(tc.uri, func(t *testing.T) {
			u, err := ParseURI(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			if got := u.IsLoopback(); got != tc.want {
				t.Fatalf("IsLoopback(%s) = %v, want %v", tc.uri, got, tc.want)
			}
		})
	}
}

// FuzzParseURI checks that whatever ParseURI accepts prints back to a
// string it parses to the same value, and that it never panics.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"tcp://127.0.0.1:9000", "tcp://[::1]", "h:1", "::1", "unix:///run/x.sock",
		"vsock://3:4", "vsock://any", "tcp://[fe80::1%eth0]:7", "unix://", "tcp://h:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURI(s)
		if err != nil {
			return
		}
		again, err := ParseURI(u.String())
		if err != nil {
			t.Fatalf("ParseURI(%q) = %+v, but its String %q does not parse: %v", s, u, u.String(), err)
		}
		if again != u {
			t.Fatalf("ParseURI(%q) = %+v, ParseURI(%q) = %+v", s, u, u.String(), again)
		}
	})
}
