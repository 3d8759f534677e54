package supervise

import (
	"fmt"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Exec loads the filter on the calling thread, hands its listener to
// give (which passes it to the supervisor: over a unix socket with
// SendListener, say), and executes path with argv and env in this
// process's place, under the filter. It returns only when it fails.
func Exec(path string, argv, env []string, give func(listener int) error) error {
	// The filter belongs to this thread, and the program executed
	// inherits it from the thread that executes it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := install()
	if err != nil {
		return err
	}
	err = give(fd)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("supervise: hand the listener over: %w", err)
	}
	// The filter stays; an exec that fails leaves this process under it,
	// with no supervisor once the listener's receiver is gone.
	return fmt.Errorf("supervise: exec %s: %w", path, syscall.Exec(path, argv, env))
}

// SendListener sends the listener fd over the unix socket sock
// (SCM_RIGHTS).
func SendListener(sock, listener int) error {
	return unix.Sendmsg(sock, []byte{'L'}, unix.UnixRights(listener), nil, 0)
}

// ReceiveListener receives a listener sent with SendListener.
func ReceiveListener(sock int) (int, error) {
	buf, oob := make([]byte, 1), make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return -1, err
	}
	if n != 1 || buf[0] != 'L' {
		return -1, fmt.Errorf("supervise: no listener on the socket")
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return -1, fmt.Errorf("supervise: no listener on the socket: %v", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, fmt.Errorf("supervise: want one descriptor: %v", err)
	}
	return fds[0], nil
}
