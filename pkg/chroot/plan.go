package chroot

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// Kind says what an Action does.
type Kind int

// The kinds of Action.
const (
	// RootBind binds the chroot's root directory onto itself, making it a
	// mount point of its own, shared in a peer group of its own. It is the
	// first action of every plan (Path "/", Key "root").
	RootBind Kind = iota + 1
	// Bind binds the DPU directory Source at Target (recursively when
	// Recursive), a slave of its source, read-only when ReadOnly. When
	// Source is a symlink, the same symlink is made at Target instead.
	Bind
	// Proc mounts a new proc filesystem of the DPU's own processes.
	Proc
	// Tmpfs mounts an empty tmpfs with permission Mode.
	Tmpfs
	// Remote is a host export, mounted by Options.Remote.
	Remote
	// BindFile binds the DPU file Source at Target (a file it creates),
	// read-only.
	BindFile
	// Link makes Target a symlink to Source.
	Link
)

func (k Kind) String() string {
	switch k {
	case RootBind:
		return "root"
	case Bind:
		return "bind"
	case Proc:
		return "proc"
	case Tmpfs:
		return "tmpfs"
	case Remote:
		return "remote"
	case BindFile:
		return "bind-file"
	case Link:
		return "link"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Action is one step of a plan.
type Action struct {
	Kind Kind
	// Path is the path inside the chroot ("/usr"); Target is where that
	// is on the DPU (Root+Path).
	Path   string
	Target string
	// Source is the DPU path (Bind, BindFile), the host path (Remote) or
	// the link text (Link).
	Source    string
	ReadOnly  bool
	Recursive bool
	// Optional skips a Bind whose source does not exist.
	Optional bool
	// Mode is a tmpfs's permission bits.
	Mode os.FileMode
	// CreateTarget is true when the mount point lies in a directory the
	// chroot owns (the root's own tree or a tmpfs of the plan), where
	// Apply may create it; elsewhere it must exist.
	CreateTarget bool
	// ParentKind, ParentPath and ParentKey describe the nearest action
	// whose mount holds this one's mount point; ParentKind is 0 in the
	// root's own tree. A mount point in a Bind must exist on the DPU
	// (Check looks); one of a Remote in a Remote is made by the host when
	// the Remote is mounted (Options.Remote).
	ParentKind Kind
	ParentPath string
	ParentKey  string
	// Key names the config entry the action comes from ("mounts[2]").
	Key string
	// Data is the caller's, passed through (Remote options).
	Data any
}

func (a Action) String() string {
	s := fmt.Sprintf("%s %s", a.Kind, a.Path)
	if a.Source != "" {
		s += " from " + a.Source
	}
	if a.ReadOnly {
		s += " (ro)"
	}
	return s
}

// Config is what the chroot holds. Paths are absolute paths inside the
// chroot; binds and remotes appear at the same path as their source.
type Config struct {
	// Root is the chroot's directory on the DPU, absolute, not "/".
	Root string
	// Binds are DPU directories bound at the same path.
	Binds []BindSpec
	// Tmpfs are empty tmpfs mounts (/run, /tmp).
	Tmpfs []TmpfsSpec
	// LocalProc is where the DPU's own proc goes ("/local_proc"); none
	// when empty.
	LocalProc string
	// LocalProcKey names LocalProc's config entry.
	LocalProcKey string
	// Dev binds the DPU's /dev (recursively) at /dev.
	Dev bool
	// DevKey names Dev's config entry.
	DevKey string
	// Remotes are host exports mounted at their host path.
	Remotes []RemoteSpec
	// Links are symlinks made inside the chroot (/var/run -> /run).
	Links []LinkSpec
	// ShimDir is the directory inside the chroot that holds the shims: a
	// tmpfs with the rexec binary (bound from Rexec) and one symlink to it
	// per name in Shims.
	ShimDir string
	// Shims are binary names (runc, kill) that run on the host.
	Shims []string
	// Rexec is the DPU path of the rexec binary.
	Rexec string
	// ShimKey names the shims' config entry.
	ShimKey string
}

// BindSpec is one bind of a DPU directory.
type BindSpec struct {
	Path     string
	ReadOnly bool
	// Optional skips the bind when the source does not exist.
	Optional bool
	Key      string
}

// TmpfsSpec is one tmpfs.
type TmpfsSpec struct {
	Path string
	Mode os.FileMode
	Key  string
}

// RemoteSpec is one host export.
type RemoteSpec struct {
	Path     string
	ReadOnly bool
	Key      string
	Data     any
}

// LinkSpec is one symlink: Path inside the chroot, pointing to Target
// (the link's text, as resolved inside the chroot).
type LinkSpec struct {
	Path   string
	Target string
	Key    string
}

// RexecName is the name of the rexec binary inside the shim directory.
const RexecName = "rexec"

// KeyError is a configuration error, with the key of the entry at fault.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

func keyErr(key, format string, a ...any) error {
	return &KeyError{Key: key, Err: fmt.Errorf(format, a...)}
}

// cleanAbs checks that p is an absolute, clean path other than "/".
func cleanAbs(key, what, p string) error {
	switch {
	case p == "":
		return keyErr(key, "%s is empty", what)
	case !path.IsAbs(p):
		return keyErr(key, "%s %q is not an absolute path", what, p)
	case strings.ContainsRune(p, 0):
		return keyErr(key, "%s contains NUL", what)
	case path.Clean(p) != p:
		return keyErr(key, "%s %q is not clean (want %q)", what, p, path.Clean(p))
	case p == "/":
		return keyErr(key, "%s is the chroot's root itself; mount points must lie beneath it", what)
	}
	return nil
}

// depth is the number of components of a clean absolute path.
func depth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}

// within reports whether p is dir or lies beneath it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// RootKey is the key of the RootBind action.
const RootKey = "root"

// Plan checks c and returns the actions that build the chroot, parents
// before children, the RootBind first. Every error is a *KeyError
// (joined when several).
func Plan(c Config) ([]Action, error) {
	var errs []error
	if c.Root == "" || !path.IsAbs(c.Root) || path.Clean(c.Root) != c.Root || c.Root == "/" {
		return nil, keyErr(RootKey, "%q: want an absolute, clean path other than /", c.Root)
	}
	acts := []Action{{Kind: RootBind, Path: "/", Target: c.Root, Key: RootKey}}
	add := func(a Action, what string) {
		if err := cleanAbs(a.Key, what, a.Path); err != nil {
			errs = append(errs, err)
			return
		}
		a.Target = path.Join(c.Root, a.Path)
		acts = append(acts, a)
	}
	for _, b := range c.Binds {
		add(Action{Kind: Bind, Path: b.Path, Source: b.Path, ReadOnly: b.ReadOnly, Optional: b.Optional, Key: b.Key}, "bind")
	}
	for _, t := range c.Tmpfs {
		mode := t.Mode
		if mode == 0 {
			mode = 0o755
		}
		add(Action{Kind: Tmpfs, Path: t.Path, Mode: mode, Key: t.Key}, "tmpfs")
	}
	if c.LocalProc != "" {
		add(Action{Kind: Proc, Path: c.LocalProc, Key: c.LocalProcKey}, "local proc")
	}
	if c.Dev {
		add(Action{Kind: Bind, Path: "/dev", Source: "/dev", Recursive: true, Key: c.DevKey}, "dev")
	}
	for _, r := range c.Remotes {
		add(Action{Kind: Remote, Path: r.Path, Source: r.Path, ReadOnly: r.ReadOnly, Key: r.Key, Data: r.Data}, "host path")
	}
	for _, l := range c.Links {
		if l.Target == "" || strings.ContainsRune(l.Target, 0) {
			errs = append(errs, keyErr(l.Key, "the link's target is empty or contains NUL"))
			continue
		}
		add(Action{Kind: Link, Path: l.Path, Source: l.Target, Key: l.Key}, "link")
	}
	if len(c.Shims) > 0 {
		n := len(errs)
		if err := cleanAbs(c.ShimKey, "shim directory", c.ShimDir); err != nil {
			errs = append(errs, err)
		}
		if c.Rexec == "" || !path.IsAbs(c.Rexec) {
			errs = append(errs, keyErr(c.ShimKey, "the rexec binary %q is not an absolute path", c.Rexec))
		}
		seen := map[string]bool{}
		for _, s := range c.Shims {
			switch {
			case s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\x00"):
				errs = append(errs, keyErr(c.ShimKey, "%q is not a binary name", s))
			case s == RexecName:
				errs = append(errs, keyErr(c.ShimKey, "%q is rexec itself", s))
			case seen[s]:
				errs = append(errs, keyErr(c.ShimKey, "%q is listed twice", s))
			}
			seen[s] = true
		}
		if len(errs) == n {
			add(Action{Kind: Tmpfs, Path: c.ShimDir, Mode: 0o755, Key: c.ShimKey}, "shim directory")
			add(Action{Kind: BindFile, Path: path.Join(c.ShimDir, RexecName), Source: c.Rexec, ReadOnly: true, Key: c.ShimKey}, "rexec")
			for _, s := range c.Shims {
				add(Action{Kind: Link, Path: path.Join(c.ShimDir, s), Source: RexecName, Key: c.ShimKey}, "shim")
			}
		}
	}
	// One action per mount point.
	byPath := map[string]Action{}
	for _, a := range acts[1:] {
		if prev, dup := byPath[a.Path]; dup {
			errs = append(errs, keyErr(a.Key, "duplicate mount point %s (also %s)", a.Path, prev.Key))
			continue
		}
		byPath[a.Path] = a
	}
	// Nothing beneath what cannot hold mounts made by the plan.
	for _, a := range acts[1:] {
		for _, b := range acts[1:] {
			if a.Path == b.Path || !within(b.Path, a.Path) {
				continue
			}
			switch a.Kind {
			case Proc:
				errs = append(errs, keyErr(b.Key, "%s lies inside the DPU's proc at %s", b.Path, a.Path))
			case Link, BindFile:
				errs = append(errs, keyErr(b.Key, "%s lies beneath %s, which is not a directory", b.Path, a.Path))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Parents before children; otherwise the order of the groups above.
	sort.SliceStable(acts, func(i, j int) bool { return depth(acts[i].Path) < depth(acts[j].Path) })
	for i := range acts {
		acts[i].CreateTarget = true
		for j := i - 1; j > 0; j-- { // acts[0] is the RootBind
			if within(acts[i].Path, acts[j].Path) { // the nearest enclosing action
				p := acts[j]
				acts[i].CreateTarget = p.Kind == Tmpfs
				acts[i].ParentKind, acts[i].ParentPath, acts[i].ParentKey = p.Kind, p.Path, p.Key
				break
			}
		}
	}
	return acts, nil
}
