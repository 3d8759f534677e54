package hostexec

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// openPTY opens a new pseudo-terminal pair. The master is non-blocking (so
// reads honour deadlines); the slave is opened without becoming anyone's
// controlling terminal. Both are close-on-exec.
func openPTY() (master, slave *os.File, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, nil, fmt.Errorf("unlock pty: %w", err)
	}
	// TIOCGPTPEER opens the slave through the master, which works whatever
	// devpts instance is mounted at /dev/pts; older kernels lack it.
	s, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), unix.TIOCGPTPEER, uintptr(unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC))
	name := "pty"
	if errno != 0 {
		n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
		if err != nil {
			unix.Close(m)
			return nil, nil, fmt.Errorf("pty number: %w", err)
		}
		name = "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
		fd, err := unix.Open(name, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Close(m)
			return nil, nil, fmt.Errorf("open %s: %w", name, err)
		}
		s = uintptr(fd)
	}
	return os.NewFile(uintptr(m), "/dev/ptmx"), os.NewFile(s, name), nil
}

// setWindow sets the pty's window size; the kernel sends SIGWINCH to the
// pty's foreground process group when it changes.
func setWindow(master *os.File, w *qtfsv1.WindowSize) error {
	ws := &unix.Winsize{Row: 24, Col: 80}
	if w != nil && w.GetRows() > 0 && w.GetCols() > 0 {
		ws = &unix.Winsize{
			Row:    uint16(min(w.GetRows(), 0xffff)),
			Col:    uint16(min(w.GetCols(), 0xffff)),
			Xpixel: uint16(min(w.GetXPixels(), 0xffff)),
			Ypixel: uint16(min(w.GetYPixels(), 0xffff)),
		}
	}
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, ws) }); err != nil {
		return err
	}
	return serr
}

// foregroundGroup is the pty's foreground process group, 0 if unknown.
func foregroundGroup(master *os.File) int {
	rc, err := master.SyscallConn()
	if err != nil {
		return 0
	}
	pgrp := 0
	rc.Control(func(fd uintptr) {
		if p, err := unix.IoctlGetInt(int(fd), unix.TIOCGPGRP); err == nil {
			pgrp = p
		}
	})
	return pgrp
}

// eofChar is the pty's VEOF character (^D unless the program changed it).
func eofChar(master *os.File) byte {
	rc, err := master.SyscallConn()
	if err != nil {
		return 4
	}
	c := byte(4)
	rc.Control(func(fd uintptr) {
		if t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS); err == nil && t.Cc[unix.VEOF] != 0 {
			c = t.Cc[unix.VEOF]
		}
	})
	return c
}
