package transport

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/vsock"
)

// staleProbeTimeout bounds the dial Listen makes to tell a live unix socket
// from a stale one.
const staleProbeTimeout = time.Second

// Listen validates sec for u (as a server) and listens on u. TLS is not
// done here: the credentials from ServerCredentials do it per connection.
//
// For unix://, a socket file left by a dead server is removed first; a file
// that is not a socket, or a socket a server still answers on, is an error
// (the latter wraps syscall.EADDRINUSE). The new socket gets sec's socket
// mode (0600 by default) and is removed when the listener is closed.
//
// Errors name the URI and the reason, as in
// "transport: listen tcp://127.0.0.1:12121: address already in use".
func Listen(ctx context.Context, u URI, sec Security) (net.Listener, error) {
	if err := sec.Validate(u, true); err != nil {
		return nil, err
	}
	var (
		l   net.Listener
		err error
	)
	switch u.Scheme {
	case TCP:
		l, err = listenTCP(ctx, u, sec)
	case Unix:
		l, err = listenUnix(ctx, u, sec)
	case Vsock:
		l, err = vsock.ListenContextID(u.CID, u.Port, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("transport: listen %s: %w", u, reason(err))
	}
	return l, nil
}

func listenTCP(ctx context.Context, u URI, sec Security) (net.Listener, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", u.hostPort())
	if err != nil {
		return nil, err
	}
	// "localhost" could resolve elsewhere: check what we really bound.
	if sec.Insecure && !sec.InsecureNonLoopback && !isLoopbackAddr(l.Addr()) {
		l.Close()
		return nil, fmt.Errorf("plain TCP without TLS: %s is not a loopback address", l.Addr())
	}
	return l, nil
}

func listenUnix(ctx context.Context, u URI, sec Security) (net.Listener, error) {
	if err := removeStaleSocket(ctx, u.Path); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "unix", u.Path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(u.Path, sec.socketMode()); err != nil {
		l.Close()
		return nil, fmt.Errorf("set socket mode: %w", err)
	}
	return l, nil
}

// removeStaleSocket removes path when it is a socket nobody answers on.
func removeStaleSocket(ctx context.Context, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
	}
	ctx, cancel := context.WithTimeout(ctx, staleProbeTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err == nil {
		c.Close()
		return fmt.Errorf("a server answers on %s: %w", path, syscall.EADDRINUSE)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe existing socket %s: %w", path, reason(err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

// reason strips the outer net and os wrappers off err, keeping what a
// person needs: "address already in use", not "listen tcp 127.0.0.1:1:
// bind: address already in use" after our own "listen tcp://...". Only the
// outermost layers go (type assertions, not errors.As, on purpose): our own
// wrapped messages further in carry detail worth keeping.
func reason(err error) error {
	for {
		switch e := err.(type) {
		case *net.OpError:
			if e.Err == nil {
				return err
			}
			err = e.Err
		case *os.SyscallError:
			err = e.Err
		default:
			return err
		}
	}
}

// isLoopbackAddr reports whether a is a TCP address on a loopback IP.
func isLoopbackAddr(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip, ok := netip.AddrFromSlice(ta.IP)
	return ok && ip.Unmap().IsLoopback()
}
