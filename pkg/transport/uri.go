package transport

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultPort is the TCP and vsock port used when a URI gives none.
const DefaultPort = 12121

// Scheme names a transport.
type Scheme string

// The transports.
const (
	TCP   Scheme = "tcp"
	Unix  Scheme = "unix"
	Vsock Scheme = "vsock"
)

// Well-known vsock context ids (see vsock(7)).
const (
	CIDHypervisor uint32 = 0
	CIDLocal      uint32 = 1
	CIDHost       uint32 = 2
	CIDAny        uint32 = 0xFFFFFFFF
)

// unixPathMax is the longest socket path the kernel takes (sun_path holds
// 108 bytes including the terminating NUL).
const unixPathMax = 107

// URI is a parsed transport address. Which fields are set depends on
// Scheme: tcp uses Host and Port, unix uses Path, vsock uses CID and Port.
type URI struct {
	Scheme Scheme
	Host   string // tcp: host name or IP literal (no brackets)
	Port   uint32 // tcp (at most 65535) and vsock
	Path   string // unix: absolute, clean socket path
	CID    uint32 // vsock: context id
}

// ParseURI parses tcp://HOST[:PORT], unix:///ABS/PATH and
// vsock://CID[:PORT]; a bare "host" or "host:port" means tcp. IPv6 hosts
// with a port go in brackets ("[::1]:12121"). vsock CIDs may be numbers or
// one of "hypervisor", "local", "host", "any". The port defaults to
// DefaultPort. Errors name the URI and the reason.
func ParseURI(s string) (URI, error) {
	u, err := parseURI(s)
	if err != nil {
		return URI{}, fmt.Errorf("transport: uri %q: %w", s, err)
	}
	return u, nil
}

func parseURI(s string) (URI, error) {
	if s == "" {
		return URI{}, fmt.Errorf("empty address (want tcp://HOST:PORT, unix:///PATH or vsock://CID:PORT)")
	}
	if strings.ContainsAny(s, " \t\r\n\x00") {
		return URI{}, fmt.Errorf("contains white space or NUL")
	}
	scheme, rest, found := strings.Cut(s, "://")
	if !found {
		for _, p := range []Scheme{Unix, Vsock, TCP} {
			if strings.HasPrefix(strings.ToLower(s), string(p)+":") {
				return URI{}, fmt.Errorf("malformed %s URI (want %s)", p, example(p))
			}
		}
		return parseTCP(s)
	}
	switch Scheme(strings.ToLower(scheme)) {
	case TCP:
		return parseTCP(rest)
	case Unix:
		return parseUnix(rest)
	case Vsock:
		return parseVsock(rest)
	default:
		return URI{}, fmt.Errorf("unknown scheme %q (want tcp, unix or vsock)", scheme)
	}
}

func example(s Scheme) string {
	switch s {
	case Unix:
		return "unix:///absolute/path"
	case Vsock:
		return "vsock://CID:PORT"
	}
	return "tcp://HOST:PORT"
}

func parseTCP(a string) (URI, error) {
	u := URI{Scheme: TCP, Port: DefaultPort}
	if a == "" {
		return URI{}, fmt.Errorf("missing host (want tcp://HOST:PORT)")
	}
	if i := strings.IndexAny(a, "/?#@"); i >= 0 {
		return URI{}, fmt.Errorf("unexpected %q after the host (want tcp://HOST:PORT)", a[i:])
	}
	host, port := a, ""
	switch {
	case strings.HasPrefix(a, "["):
		end := strings.IndexByte(a, ']')
		if end < 0 {
			return URI{}, fmt.Errorf("missing ']' after IPv6 address")
		}
		host = a[1:end]
		after := a[end+1:]
		if after != "" {
			if after[0] != ':' {
				return URI{}, fmt.Errorf("unexpected %q after ']'", after)
			}
			port = after[1:]
			if port == "" {
				return URI{}, fmt.Errorf("empty port after ':'")
			}
		}
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is6() {
			return URI{}, fmt.Errorf("%q in brackets is not an IPv6 address", host)
		}
	case strings.Count(a, ":") > 1:
		addr, err := netip.ParseAddr(a)
		if err != nil || !addr.Is6() {
			return URI{}, fmt.Errorf("too many colons: put an IPv6 address in brackets, as in [::1]:%d", DefaultPort)
		}
	case strings.Contains(a, ":"):
		host, port, _ = strings.Cut(a, ":")
		if port == "" {
			return URI{}, fmt.Errorf("empty port after ':'")
		}
	}
	if host == "" {
		return URI{}, fmt.Errorf("missing host")
	}
	if a, err := netip.ParseAddr(host); err != nil {
		if !validHostname(host) {
			return URI{}, fmt.Errorf("invalid host name %q", host)
		}
	} else if z := a.Zone(); z != "" && !validZone(z) {
		return URI{}, fmt.Errorf("invalid IPv6 zone %q", z)
	}
	if port != "" {
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return URI{}, fmt.Errorf("invalid port %q (want 0-65535)", port)
		}
		u.Port = uint32(p)
	}
	u.Host = host
	return u, nil
}

// validHostname accepts DNS names: dot-separated labels of letters, digits,
// '-' and '_', each 1-63 bytes, not starting or ending with '-', 253 bytes
// at most; one trailing dot is allowed.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			default:
				return false
			}
		}
	}
	return true
}

// validZone accepts IPv6 zones that are interface names or indexes:
// letters, digits, '.', '_', '-', at most 15 bytes (IFNAMSIZ-1).
func validZone(z string) bool {
	if len(z) > 15 {
		return false
	}
	for i := 0; i < len(z); i++ {
		c := z[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

func parseUnix(p string) (URI, error) {
	if p == "" {
		return URI{}, fmt.Errorf("missing socket path (want unix:///absolute/path)")
	}
	if !strings.HasPrefix(p, "/") {
		return URI{}, fmt.Errorf("socket path must be absolute (want unix:///absolute/path)")
	}
	if c := filepath.Clean(p); c != p {
		return URI{}, fmt.Errorf("socket path is not clean (did you mean unix://%s?)", c)
	}
	if len(p) > unixPathMax {
		return URI{}, fmt.Errorf("socket path is %d bytes, longer than the kernel's %d", len(p), unixPathMax)
	}
	return URI{Scheme: Unix, Path: p}, nil
}

func parseVsock(a string) (URI, error) {
	u := URI{Scheme: Vsock, Port: DefaultPort}
	if a == "" {
		return URI{}, fmt.Errorf("missing context id (want vsock://CID:PORT)")
	}
	cid, port, hasPort := strings.Cut(a, ":")
	switch strings.ToLower(cid) {
	case "hypervisor":
		u.CID = CIDHypervisor
	case "local":
		u.CID = CIDLocal
	case "host":
		u.CID = CIDHost
	case "any":
		u.CID = CIDAny
	default:
		n, err := strconv.ParseUint(cid, 10, 32)
		if err != nil {
			return URI{}, fmt.Errorf("invalid context id %q (want a number, host, local or any)", cid)
		}
		u.CID = uint32(n)
	}
	if hasPort {
		n, err := strconv.ParseUint(port, 10, 32)
		if err != nil {
			return URI{}, fmt.Errorf("invalid port %q (want 0-4294967295)", port)
		}
		u.Port = uint32(n)
	}
	return u, nil
}

// String returns the URI in the form ParseURI reads back to the same value.
func (u URI) String() string {
	switch u.Scheme {
	case TCP:
		return "tcp://" + net.JoinHostPort(u.Host, strconv.FormatUint(uint64(u.Port), 10))
	case Unix:
		return "unix://" + u.Path
	case Vsock:
		return fmt.Sprintf("vsock://%d:%d", u.CID, u.Port)
	}
	return fmt.Sprintf("%s://?", u.Scheme)
}

// IsLoopback reports whether u is tcp to 127.0.0.0/8, ::1 (or an
// IPv4-mapped loopback) or "localhost". unix and vsock are not network
// transports and report false.
func (u URI) IsLoopback() bool {
	if u.Scheme != TCP {
		return false
	}
	if strings.EqualFold(strings.TrimSuffix(u.Host, "."), "localhost") {
		return true
	}
	a, err := netip.ParseAddr(u.Host)
	return err == nil && a.IsLoopback()
}

// hostPort is the tcp address to listen on or dial.
func (u URI) hostPort() string {
	return net.JoinHostPort(u.Host, strconv.FormatUint(uint64(u.Port), 10))
}
