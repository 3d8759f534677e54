//go:build !linux

package transport

import (
	"errors"
	"net"
)

// peerCred is Linux-only (SO_PEERCRED); elsewhere unix peers are refused.
func peerCred(net.Conn) (UnixPeer, error) {
	return UnixPeer{}, errors.New("peer credentials: not supported on this system")
}
