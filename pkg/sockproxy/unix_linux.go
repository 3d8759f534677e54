package sockproxy

import (
	"errors"
	"net"

	"golang.org/x/sys/unix"
)

// ErrFDPassing is returned when the peer of a proxied connection sent file
// descriptors, which cannot cross to the other machine.
var ErrFDPassing = errors.New("sockproxy: the peer passed file descriptors (SCM_RIGHTS), which a proxied socket cannot carry; closing the connection")

// oobSize holds the largest SCM_RIGHTS message Linux sends (SCM_MAX_FD).
var oobSize = unix.CmsgSpace(253 * 4)

// readChunk reads from c into b with recvmsg(2). Descriptors passed along
// are closed at once and reported as ErrFDPassing (with the data read).
func readChunk(c *net.UnixConn, b, oob []byte) (int, error) {
	n, oobn, flags, _, err := c.ReadMsgUnix(b, oob)
	if oobn > 0 || flags&unix.MSG_CTRUNC != 0 {
		passed := flags&unix.MSG_CTRUNC != 0
		if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
			for i := range msgs {
				fds, ferr := unix.ParseUnixRights(&msgs[i])
				if ferr != nil {
					continue // SCM_CREDENTIALS and the like carry no descriptor
				}
				passed = true
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
		if passed {
			return n, ErrFDPassing
		}
	}
	return n, err
}
