package transport

import (
	"errors"
	"fmt"
	"os"
)

// Security is the one authentication setting of a qtfs process. A server
// uses the same value for every listener; fields that do not apply to a
// transport are ignored by it (TLS files on unix://, AllowedUIDs on tcp://).
type Security struct {
	CertFile, KeyFile string // our certificate and key (PEM)
	// CAFile is, on a server, the CA client certificates must chain to
	// (TLS is always mutual); on a client, the CA the server's certificate
	// must chain to.
	CAFile string
	// ServerName is, on a client, the name the server's certificate must
	// carry; empty means the host of the URI.
	ServerName string
	// Insecure allows plain TCP without TLS. Both sides must set it.
	Insecure bool
	// InsecureNonLoopback, with Insecure, also allows plain TCP on
	// addresses other than loopback.
	InsecureNonLoopback bool
	// AllowedUIDs are the uids a unix peer may have (SO_PEERCRED). Empty
	// means our own effective uid and root. A client applies it to the
	// server it dials as well.
	AllowedUIDs []uint32
	// AllowedCIDs are the context ids a vsock client may have; empty
	// means any. Only a server checks it.
	AllowedCIDs []uint32
	// UnixSocketMode is the mode of a socket Listen creates. Zero means
	// 0600 when AllowedUIDs is empty and 0666 when it is not: the uid check
	// in the handshake is the gate, the mode only keeps out who the gate
	// would refuse anyway.
	UnixSocketMode os.FileMode
}

// Validate checks s for use with u, as a server (listening) or a client
// (dialing). The rules:
//   - --tls-cert and --tls-key go together, and none of the TLS files go
//     with Insecure; InsecureNonLoopback needs Insecure;
//   - tcp needs TLS (server: cert, key and client CA; client: CA, and a
//     cert and key when the server asks for one) or Insecure;
//   - Insecure tcp is refused on a non-loopback address unless
//     InsecureNonLoopback is set;
//   - unix and vsock need no TLS;
//   - a client cannot dial port 0, nor vsock CID "any".
func (s Security) Validate(u URI, server bool) error {
	if err := s.validate(u, server); err != nil {
		return fmt.Errorf("transport: %s: %w", u, err)
	}
	return nil
}

func (s Security) validate(u URI, server bool) error {
	if err := s.checkFiles(server); err != nil {
		return err
	}
	switch u.Scheme {
	case TCP:
		if u.Host == "" {
			return errors.New("missing host")
		}
		if u.Port > 65535 {
			return fmt.Errorf("port %d out of range", u.Port)
		}
		if !server && u.Port == 0 {
			return errors.New("cannot dial port 0")
		}
		if s.Insecure {
			if !u.IsLoopback() && !s.InsecureNonLoopback {
				return fmt.Errorf("plain TCP without TLS is refused on the non-loopback address %s: "+
					"use TLS (%s) or add --insecure-non-loopback to --insecure", u.Host, tlsFlags(server))
			}
			return nil
		}
		if !s.hasTLS() {
			return fmt.Errorf("TCP needs TLS: pass %s or --insecure", tlsFlags(server))
		}
		if server && s.CertFile == "" {
			return fmt.Errorf("a TLS server needs its certificate: pass --tls-cert and --tls-key")
		}
		if s.CAFile == "" {
			if server {
				return errors.New("a TLS server needs the CA that client certificates chain to: pass --tls-client-ca")
			}
			return errors.New("a TLS client needs the CA that the server certificate chains to: pass --tls-ca")
		}
		return nil
	case Unix:
		if u.Path == "" || u.Path[0] != '/' {
			return fmt.Errorf("socket path %q is not absolute", u.Path)
		}
		if len(u.Path) > unixPathMax {
			return fmt.Errorf("socket path is longer than %d bytes", unixPathMax)
		}
		return nil
	case Vsock:
		if !server && u.CID == CIDAny {
			return errors.New("cannot dial context id any")
		}
		if !server && u.Port == 0xFFFFFFFF {
			return errors.New("cannot dial port any")
		}
		return nil
	default:
		return fmt.Errorf("unknown scheme %q (want tcp, unix or vsock)", u.Scheme)
	}
}

// checkFiles holds the rules that do not depend on the URI; ServerCredentials
// applies them too.
func (s Security) checkFiles(server bool) error {
	if (s.CertFile == "") != (s.KeyFile == "") {
		return errors.New("--tls-cert and --tls-key go together: pass both or neither")
	}
	if s.Insecure && s.hasTLS() {
		return fmt.Errorf("--insecure and TLS files (%s) exclude each other: pass one or the other", tlsFlags(server))
	}
	if s.InsecureNonLoopback && !s.Insecure {
		return errors.New("--insecure-non-loopback only makes sense with --insecure")
	}
	if server && s.CertFile != "" && s.CAFile == "" {
		return errors.New("a TLS server needs the CA that client certificates chain to: pass --tls-client-ca")
	}
	return nil
}

func (s Security) hasTLS() bool {
	return s.CertFile != "" || s.KeyFile != "" || s.CAFile != ""
}

func tlsFlags(server bool) string {
	if server {
		return "--tls-cert/--tls-key/--tls-client-ca"
	}
	return "--tls-cert/--tls-key/--tls-ca"
}

// allowedUID reports whether uid may talk to us over a unix socket.
func (s Security) allowedUID(uid uint32) bool {
	if len(s.AllowedUIDs) == 0 {
		return uid == 0 || uid == uint32(os.Geteuid())
	}
	for _, a := range s.AllowedUIDs {
		if a == uid {
			return true
		}
	}
	return false
}

// allowedCID reports whether a vsock peer with context id cid may talk to us.
func (s Security) allowedCID(cid uint32) bool {
	if len(s.AllowedCIDs) == 0 {
		return true
	}
	for _, a := range s.AllowedCIDs {
		if a == cid {
			return true
		}
	}
	return false
}

func (s Security) socketMode() os.FileMode {
	switch {
	case s.UnixSocketMode != 0:
		return s.UnixSocketMode.Perm()
	case len(s.AllowedUIDs) > 0:
		return 0o666
	}
	return 0o600
}
