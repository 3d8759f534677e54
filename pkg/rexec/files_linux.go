package rexec

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// InheritedFiles lists the regular files open at fd 3 and above that this
// process inherited: fds without close-on-exec (every fd Go opens has it,
// so rexec's own never qualify). Each comes with its path (from
// /proc/self/fd), its open flags and offset (from /proc/self/fdinfo).
// Other kinds of fd, and files whose path is gone (deleted, or not
// absolute), are left out. Call it before anything else opens files.
func InheritedFiles() ([]*qtfsv1.ExecFile, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return nil, fmt.Errorf("list open files: %w", err)
	}
	var out []*qtfsv1.ExecFile
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd < 3 {
			continue
		}
		f, ok := inherited(fd)
		if ok {
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fd < out[j].Fd })
	return out, nil
}

// inherited describes fd when it is an inherited regular file.
func inherited(fd int) (*qtfsv1.ExecFile, bool) {
	fdFlags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || fdFlags&unix.FD_CLOEXEC != 0 {
		return nil, false
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, false
	}
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil || !filepath.IsAbs(path) || strings.HasSuffix(path, " (deleted)") {
		return nil, false
	}
	flags, pos, err := fdInfo(fd)
	if err != nil {
		return nil, false
	}
	return &qtfsv1.ExecFile{Fd: uint32(fd), Path: []byte(path), Flags: flags, Offset: pos}, true
}

// fdInfo reads the flags (octal) and pos of fd from /proc/self/fdinfo.
func fdInfo(fd int) (flags uint32, pos int64, err error) {
	f, err := os.Open("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var haveFlags, havePos bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "pos":
			pos, err = strconv.ParseInt(val, 10, 64)
			havePos = err == nil
		case "flags":
			var v uint64
			v, err = strconv.ParseUint(val, 8, 32)
			flags, haveFlags = uint32(v), err == nil
		}
	}
	if !haveFlags || !havePos {
		return 0, 0, fmt.Errorf("fdinfo %d: no flags or pos", fd)
	}
	return flags, pos, nil
}
