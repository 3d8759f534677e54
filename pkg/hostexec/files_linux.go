package hostexec

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Limits on passed files.
const (
	maxPassedFD    = 1024 // fd numbers must be below this
	maxPassedFiles = 256  // at most this many files per run
)

// passFlags are the open(2) flags kept from the caller's; the rest
// (O_CREAT, O_EXCL, O_TRUNC, O_DIRECTORY, O_ASYNC, ...) are dropped.
const passFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_DSYNC | unix.O_SYNC |
	unix.O_DIRECT | unix.O_NOATIME | unix.O_PATH | unix.O_LARGEFILE

// openFiles opens the caller's files for the process: extra[i] becomes
// fd 3+i. Numbers in between are /dev/null. The caller closes every file
// in extra (closeFiles) once the process started.
func openFiles(files []*qtfsv1.ExecFile) (extra []*os.File, err error) {
	if len(files) == 0 {
		return nil, nil
	}
	if len(files) > maxPassedFiles {
		return nil, fmt.Errorf("%d files passed, at most %d", len(files), maxPassedFiles)
	}
	sorted := append([]*qtfsv1.ExecFile(nil), files...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].GetFd() < sorted[j].GetFd() })
	for i, f := range sorted {
		if f.GetFd() < 3 || f.GetFd() >= maxPassedFD {
			return nil, fmt.Errorf("fd %d: passed fds must be between 3 and %d", f.GetFd(), maxPassedFD-1)
		}
		if i > 0 && sorted[i-1].GetFd() == f.GetFd() {
			return nil, fmt.Errorf("fd %d passed twice", f.GetFd())
		}
	}
	top := sorted[len(sorted)-1].GetFd()
	extra = make([]*os.File, top-2)
	defer func() {
		if err != nil {
			closeFiles(extra)
			extra = nil
		}
	}()
	for _, f := range sorted {
		file, err := openPassed(f)
		if err != nil {
			return extra, fmt.Errorf("fd %d (%s): %w", f.GetFd(), f.GetPath(), err)
		}
		extra[f.GetFd()-3] = file
	}
	var null *os.File
	for i := range extra {
		if extra[i] != nil {
			continue
		}
		if null == nil {
			if null, err = os.OpenFile(os.DevNull, os.O_RDWR, 0); err != nil {
				return extra, err
			}
		}
		extra[i] = null
	}
	return extra, nil
}

// openPassed opens one file as the caller has it.
func openPassed(f *qtfsv1.ExecFile) (*os.File, error) {
	p := string(f.GetPath())
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || len(p) > unix.PathMax || strings.IndexByte(p, 0) >= 0 {
		return nil, fmt.Errorf("not an absolute, clean path")
	}
	flags := int(f.GetFlags()) & passFlags
	// O_NONBLOCK keeps a FIFO swapped in under the path from blocking the
	// open; the caller's own O_NONBLOCK is restored below.
	fd, err := unix.Open(p, flags|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open on the host: %w", err)
	}
	fail := func(format string, a ...any) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf(format, a...)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fail("stat on the host: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fail("not a regular file on the host")
	}
	if flags&unix.O_PATH == 0 {
		if flags&unix.O_NONBLOCK == 0 {
			if err := unix.SetNonblock(fd, false); err != nil {
				return fail("fcntl: %w", err)
			}
		}
		if off := f.GetOffset(); off != 0 {
			if off < 0 {
				return fail("negative offset %d", off)
			}
			if _, err := unix.Seek(fd, off, 0); err != nil {
				return fail("seek to %d: %w", off, err)
			}
		}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// closeFiles closes every file of extra once (the /dev/null file may
// stand at several numbers).
func closeFiles(extra []*os.File) {
	seen := map[*os.File]bool{}
	for _, f := range extra {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
}
