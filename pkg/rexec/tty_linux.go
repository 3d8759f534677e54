package rexec

import (
	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// windowOf returns the window size of the first of fds that is a terminal,
// nil if none is.
func windowOf(fds ...int) *qtfsv1.WindowSize {
	for _, fd := range fds {
		ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
		if err == nil && ws.Row > 0 && ws.Col > 0 {
			return &qtfsv1.WindowSize{Rows: uint32(ws.Row), Cols: uint32(ws.Col), XPixels: uint32(ws.Xpixel), YPixels: uint32(ws.Ypixel)}
		}
	}
	return nil
}
