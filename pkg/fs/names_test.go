package fs

import (
	"strings"
	"syscall"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want syscall.Errno
	}{
		{"plain", "file.txt", 0},
		{"dots inside", "..a", 0},
		{"max length", strings.Repeat("x", 255), 0},
		{"empty", "", syscall.EINVAL},
		{"dot", ".", syscall.EINVAL},
		{"dotdot", "..", syscall.EINVAL},
		{"slash", "a/b", syscall.EINVAL},
		{"nul", "a\x00b", syscall.EINVAL},
		{"too long", strings.Repeat("x", 256), syscall.ENAMETOOLONG},
		{"non utf8", "\xff\xfe", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidName([]byte(tc.in)); got != tc.want {
				t.Fatalf("ValidName(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestValidPath(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want syscall.Errno
	}{
		{"root", "", 0},
		{"one", "a", 0},
		{"deep", "a/b/c", 0},
		{"leading slash", "/a", syscall.EINVAL},
		{"trailing slash", "a/", syscall.EINVAL},
		{"double slash", "a//b", syscall.EINVAL},
		{"dotdot inside", "a/../b", syscall.EINVAL},
		{"dot inside", "a/./b", syscall.EINVAL},
		{"dotdot alone", "..", syscall.EINVAL},
		{"nul", "a/\x00", syscall.EINVAL},
		{"long component", "a/" + strings.Repeat("x", 256), syscall.ENAMETOOLONG},
		{"too long", strings.Repeat("abcdefg/", 600) + "x", syscall.ENAMETOOLONG},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ValidPath([]byte(tc.in)); got != tc.want {
				t.Fatalf("ValidPath(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}

func TestJoinSplit(t *testing.T) {
	for _, tc := range []struct{ dir, name, joined string }{
		{"", "a", "a"},
		{"a", "b", "a/b"},
		{"a/b", "c", "a/b/c"},
	} {
		j := string(JoinPath([]byte(tc.dir), []byte(tc.name)))
		if j != tc.joined {
			t.Fatalf("JoinPath(%q,%q) = %q", tc.dir, tc.name, j)
		}
		d, n := SplitPath([]byte(j))
		if string(d) != tc.dir || string(n) != tc.name {
			t.Fatalf("SplitPath(%q) = %q,%q", j, d, n)
		}
	}
}

func FuzzValidPath(f *testing.F) {
	for _, s := range []string{"", "a", "a/b", "../x", "a//b", "/abs", "a/\x00", "x/./y"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		if ValidPath(p) != 0 {
			return
		}
		// A valid path never escapes: no component is "..", "." or empty.
		for _, c := range strings.Split(string(p), "/") {
			if len(p) > 0 && (c == "" || c == "." || c == ".." || strings.ContainsRune(c, 0)) {
				t.Fatalf("ValidPath accepted %q", p)
			}
		}
	})
}
