// Package sdnotify tells systemd (Type=notify units) that a daemon is
// ready or stopping, through $NOTIFY_SOCKET. Outside systemd it does
// nothing.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Ready reports READY=1 with a status line.
func Ready(status string) error { return send("READY=1\nSTATUS=" + status) }

// Stopping reports STOPPING=1.
func Stopping() error { return send("STOPPING=1") }

// Status reports a free-form status line.
func Status(status string) error { return send("STATUS=" + status) }

func send(msg string) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	if addr[0] == '@' { // abstract socket
		addr = "\x00" + addr[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}
