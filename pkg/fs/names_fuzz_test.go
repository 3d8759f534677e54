package fs

import (
	"bytes"
	"syscall"
	"testing"
)

// FuzzValidName holds ValidName to its definition: a name is accepted
// exactly when it is one non-empty component, not "." or "..", without
// "/" or NUL, at most NameMax bytes; a refusal is EINVAL or ENAMETOOLONG.
func FuzzValidName(f *testing.F) {
	for _, s := range []string{"", ".", "..", "...", "a", "a/b", "/", "a\x00", "\xff\xfe", string(make([]byte, 256))} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, name []byte) {
		e := ValidName(name)
		ok := len(name) > 0 && len(name) <= NameMax && string(name) != "." && string(name) != ".." &&
			bytes.IndexByte(name, '/') < 0 && bytes.IndexByte(name, 0) < 0
		switch {
		case ok && e != 0:
			t.Fatalf("ValidName(%q) = %v, want accepted", name, e)
		case !ok && e == 0:
			t.Fatalf("ValidName(%q) accepted an invalid name", name)
		case e != 0 && e != syscall.EINVAL && e != syscall.ENAMETOOLONG:
			t.Fatalf("ValidName(%q) = %v, want EINVAL or ENAMETOOLONG", name, e)
		}
		// A valid name is a valid one-component path.
		if e == 0 && ValidPath(name) != 0 {
			t.Fatalf("ValidName(%q) accepts what ValidPath refuses (%v)", name, ValidPath(name))
		}
	})
}

// FuzzPathSplitJoin holds ValidPath, SplitPath and JoinPath together: an
// accepted path is at most PathMax bytes of valid names joined by single
// slashes, splits into a valid directory and a valid name that join back
// into it, and nothing else is accepted.
func FuzzPathSplitJoin(f *testing.F) {
	for _, s := range []string{"", "a", "a/b", "a/b/c", "/a", "a/", "a//b", "a/./b", "a/../b", "..", "a/\x00", "\xff/\xfe",
		string(bytes.Repeat([]byte("a/"), 2047)) + "a", string(bytes.Repeat([]byte("a/"), 2048)) + "a"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		e := ValidPath(p)
		if e != 0 && e != syscall.EINVAL && e != syscall.ENAMETOOLONG {
			t.Fatalf("ValidPath(%q) = %v, want EINVAL or ENAMETOOLONG", p, e)
		}
		ok := len(p) <= PathMax
		if len(p) > 0 {
			for _, comp := range bytes.Split(p, []byte("/")) {
				if ValidName(comp) != 0 {
					ok = false
				}
			}
		}
		if ok != (e == 0) {
			t.Fatalf("ValidPath(%q) = %v, but the components say valid=%v", p, e, ok)
		}
		if e != 0 || len(p) == 0 {
			return
		}
		dir, name := SplitPath(p)
		if ValidPath(dir) != 0 || ValidName(name) != 0 {
			t.Fatalf("SplitPath(%q) = %q, %q: not a valid directory and name", p, dir, name)
		}
		if j := JoinPath(dir, name); !bytes.Equal(j, p) {
			t.Fatalf("JoinPath(SplitPath(%q)) = %q", p, j)
		}
		// JoinPath never aliases its inputs.
		j := JoinPath(dir, name)
		if len(j) > 0 {
			j[0] ^= 0xff
			if !bytes.Equal(JoinPath(dir, name), p) {
				t.Fatalf("JoinPath(%q, %q) shares memory with its arguments", dir, name)
			}
		}
	})
}
