package fs

import "strings"

// InRoot returns p, an absolute clean path, as a process whose root
// directory is root (absolute, clean) names it: "/" for root itself, p
// with root cut off for a path beneath it. ok is false for a path that is
// neither (the process cannot name it).
func InRoot(p, root string) (string, bool) {
	if root == "/" {
		return p, strings.HasPrefix(p, "/")
	}
	rel, ok := strings.CutPrefix(p, root)
	switch {
	case !ok:
		return "", false
	case rel == "":
		return "/", true
	case rel[0] == '/':
		return rel, true
	}
	return "", false
}
