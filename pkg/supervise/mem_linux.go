package supervise

import (
	"bytes"
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

var errNameTooLong = errors.New("path longer than PATH_MAX")

// readString reads the NUL-terminated string at addr of thread tid, at
// most unix.PathMax bytes. It reads no further than each page's end at a
// time, so a string that ends just before an unmapped page is read.
func readString(tid int, addr uint64) (string, error) {
	page := uint64(os.Getpagesize())
	var out []byte
	buf := make([]byte, page)
	for uint64(len(out)) < unix.PathMax {
		n := page - addr%page
		local := []unix.Iovec{{Base: &buf[0], Len: n}}
		remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: int(n)}}
		got, err := unix.ProcessVMReadv(tid, local, remote, 0)
		if err != nil {
			return "", err
		}
		if got == 0 {
			return "", unix.EFAULT
		}
		if i := bytes.IndexByte(buf[:got], 0); i >= 0 {
			return string(append(out, buf[:i]...)), nil
		}
		out = append(out, buf[:got]...)
		addr += uint64(got)
	}
	return "", errNameTooLong
}

// writeBytes writes b at addr of thread tid, all of it or an error.
func writeBytes(tid int, addr uint64, b []byte) error {
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	n, err := unix.ProcessVMWritev(tid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return unix.EFAULT
	}
	return nil
}
