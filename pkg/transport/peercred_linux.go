package transport

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred reads SO_PEERCRED off a unix socket connection: the peer's uid,
// gid and pid as of connect(2).
func peerCred(c net.Conn) (UnixPeer, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return UnixPeer{}, fmt.Errorf("connection %T gives no access to its socket", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return UnixPeer{}, fmt.Errorf("peer credentials: %w", err)
	}
	var (
		cred *unix.Ucred
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return UnixPeer{}, fmt.Errorf("peer credentials: %w", err)
	}
	if gerr != nil {
		return UnixPeer{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", gerr)
	}
	if cred == nil {
		return UnixPeer{}, errors.New("peer credentials: none")
	}
	return UnixPeer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
