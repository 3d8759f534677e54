package fs

import (
	"bytes"
	"syscall"
)

// NameMax is the longest name a path component may have (NAME_MAX).
const NameMax = 255

// PathMax is the longest relative path accepted from the wire (PATH_MAX).
const PathMax = 4096

// ValidName reports whether name is a single path component that may be
// used under a directory: not empty, not "." or "..", no "/" or NUL, at most
// NameMax bytes. It returns 0, EINVAL or ENAMETOOLONG.
func ValidName(name []byte) syscall.Errno {
	switch {
	case len(name) == 0:
		return syscall.EINVAL
	case len(name) > NameMax:
		return syscall.ENAMETOOLONG
	case len(name) == 1 && name[0] == '.':
		return syscall.EINVAL
	case len(name) == 2 && name[0] == '.' && name[1] == '.':
		return syscall.EINVAL
	case bytes.IndexByte(name, '/') >= 0 || bytes.IndexByte(name, 0) >= 0:
		return syscall.EINVAL
	}
	return 0
}

// ValidPath reports whether p is a relative path as the wire carries it:
// "" for the root, else components joined by single "/" with no leading or
// trailing "/", each a ValidName, at most PathMax bytes in all.
func ValidPath(p []byte) syscall.Errno {
	if len(p) == 0 {
		return 0
	}
	if len(p) > PathMax {
		return syscall.ENAMETOOLONG
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '/')
		comp := p
		if i >= 0 {
			comp, p = p[:i], p[i+1:]
			if len(p) == 0 { // trailing slash
				return syscall.EINVAL
			}
		} else {
			p = nil
		}
		if e := ValidName(comp); e != 0 {
			return e
		}
	}
	return 0
}

// JoinPath appends name to the relative directory path dir.
func JoinPath(dir []byte, name []byte) []byte {
	if len(dir) == 0 {
		return append([]byte(nil), name...)
	}
	out := make([]byte, 0, len(dir)+1+len(name))
	out = append(out, dir...)
	out = append(out, '/')
	return append(out, name...)
}

// SplitPath splits a valid non-root relative path into its directory and
// last name; SplitPath("a/b/c") is ("a/b", "c").
func SplitPath(p []byte) (dir, name []byte) {
	i := bytes.LastIndexByte(p, '/')
	if i < 0 {
		return nil, p
	}
	return p[:i], p[i+1:]
}
