package chroot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
)

// Unmounter undoes one Remote mount.
type Unmounter interface {
	// Unmount unmounts it, detaching it when busy.
	Unmount() error
}

// Options configure Apply.
type Options struct {
	// Logger receives a line per action; nil logs nothing.
	Logger *zap.Logger
	// Remote mounts a Remote action at a.Target. Required when the plan
	// has Remote actions. a.Target exists when it is called, except for
	// a Remote inside another (a.ParentKind == Remote): Apply does not
	// look there first, and Remote has the host make the directory
	// (MountRequest.create) before it mounts, so that it shows through
	// the parent mount.
	Remote func(ctx context.Context, a Action) (Unmounter, error)
	// StaleFSType is the filesystem type of mounts to treat as stale when
	// found at a Remote target ("fuse.qtfs"); any mount there is replaced
	// in any case, this only chooses the log line.
	StaleFSType string
}

// Result says what Apply did for one action.
type Result int

// Results of an action.
const (
	Made     Result = iota + 1 // mounted or created now
	Kept                       // already in place, kept
	Repaired                   // something stale or wrong was detached first
	Skipped                    // an optional bind whose source is missing
)

func (r Result) String() string {
	return map[Result]string{Made: "made", Kept: "kept", Repaired: "repaired", Skipped: "skipped"}[r]
}

// Applied is an action Apply carried out.
type Applied struct {
	Action
	Result Result
	// AsLink is true for a Bind whose source was a symlink.
	AsLink bool
	um     Unmounter
}

// Tree is a built chroot.
type Tree struct {
	root string
	log  *zap.Logger
	// skipped holds the paths of the optional binds skipped, whose mount
	// points lie in the root's own tree after all. Apply's alone.
	skipped map[string]bool
	mu      sync.Mutex
	done    []Applied
}

// Applied returns what Apply did, in order.
func (t *Tree) Applied() []Applied {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Applied(nil), t.done...)
}

// Root returns the chroot's directory.
func (t *Tree) Root() string { return t.root }

// Apply carries out plan (from Plan) and returns the Tree; see the package
// comment for how it treats what it finds. On an error it tears down what
// it did and returns the error, naming the action's key.
func Apply(ctx context.Context, root string, plan []Action, o Options) (*Tree, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	t := &Tree{root: root, log: log, skipped: map[string]bool{}}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, &KeyError{Key: RootKey, Err: err}
	}
	// Mount points are compared with mountinfo's, which are resolved.
	if real, err := filepath.EvalSymlinks(root); err != nil {
		return nil, &KeyError{Key: RootKey, Err: err}
	} else if real != root {
		return nil, keyErr(RootKey, "%s is reached through a symlink (it is %s): give that path", root, real)
	}
	if err := Check(plan); err != nil {
		return nil, err
	}
	for _, a := range plan {
		if err := ctx.Err(); err != nil {
			t.Teardown()
			return nil, fmt.Errorf("chroot: %w", err)
		}
		ap, err := t.apply(ctx, a, o)
		if err != nil {
			t.Teardown()
			return nil, &KeyError{Key: a.Key, Err: fmt.Errorf("%s: %w", a, err)}
		}
		log.Info("chroot: "+ap.Result.String(), zap.Stringer("kind", a.Kind), zap.String("path", a.Path), zap.String("source", a.Source))
		t.mu.Lock()
		t.done = append(t.done, ap)
		t.mu.Unlock()
	}
	return t, nil
}

// detachAll detaches every mount at target; it reports whether there was
// any.
func detachAll(target string) (bool, error) {
	any := false
	for i := 0; i < 64; i++ {
		mounts, err := readMountinfo()
		if err != nil {
			return any, err
		}
		if len(at(mounts, target)) == 0 {
			return any, nil
		}
		any = true
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return any, fmt.Errorf("detach %s: %w", target, err)
		}
	}
	return any, fmt.Errorf("detach %s: still mounted after 64 detaches", target)
}

func (t *Tree) apply(ctx context.Context, a Action, o Options) (Applied, error) {
	ap := Applied{Action: a, Result: Made}
	if a.Kind == RootBind {
		return t.applyRoot(a)
	}
	if a.Kind == Link {
		kept, err := makeLink(a.Target, a.Source)
		if kept {
			ap.Result = Kept
		}
		return ap, err
	}
	if a.Kind == Bind {
		fi, err := os.Lstat(a.Source)
		switch {
		case errors.Is(err, os.ErrNotExist) && a.Optional:
			ap.Result = Skipped
			t.skipped[a.Path] = true
			return ap, nil
		case err != nil:
			return ap, fmt.Errorf("source: %w", err)
		case fi.Mode()&os.ModeSymlink != 0:
			text, err := os.Readlink(a.Source)
			if err != nil {
				return ap, err
			}
			ap.AsLink = true
			kept, err := makeLink(a.Target, text)
			if kept {
				ap.Result = Kept
			}
			return ap, err
		case !fi.IsDir():
			return ap, errors.New("source is not a directory")
		}
	}
	mounts, err := readMountinfo()
	if err != nil {
		return ap, err
	}
	here := at(mounts, a.Target)
	if len(here) == 1 && a.Kind != Remote && t.inPlace(a, here[0]) {
		ap.Result = Kept
		return ap, nil
	}
	if len(here) > 0 {
		what := make([]string, len(here))
		for i, m := range here {
			what[i] = m.FSType + " " + m.Source
		}
		msg := "chroot: detaching what is mounted in the way"
		if a.Kind == Remote && len(here) == 1 && here[0].FSType == o.StaleFSType {
			msg = "chroot: detaching a stale mount whose daemon is gone"
		}
		t.log.Warn(msg, zap.String("path", a.Path), zap.Strings("found", what))
		if _, err := detachAll(a.Target); err != nil {
			return ap, err
		}
		ap.Result = Repaired
	}
	if err := t.mountpoint(a); err != nil {
		return ap, err
	}
	switch a.Kind {
	case Bind:
		err = bind(a.Source, a.Target, a.Recursive, a.ReadOnly)
	case BindFile:
		err = bind(a.Source, a.Target, false, true)
	case Proc:
		err = unix.Mount("proc", a.Target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	case Tmpfs:
		err = unix.Mount("tmpfs", a.Target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=%04o", uint32(a.Mode.Perm())|stickyBit(a.Mode)))
	case Remote:
		if o.Remote == nil {
			return ap, errors.New("no remote mounter")
		}
		ap.um, err = o.Remote(ctx, a)
	default:
		err = fmt.Errorf("unknown action kind %d", a.Kind)
	}
	if err != nil {
		return ap, err
	}
	return ap, nil
}

// stickyBit is the octal sticky bit of a mode (0 or 01000).
func stickyBit(m os.FileMode) uint32 {
	if m&os.ModeSticky != 0 {
		return 0o1000
	}
	return 0
}

// inPlace reports whether the one mount m at a.Target is what a would
// make. Every mount of the chroot is shared (beneath the shared root).
func (t *Tree) inPlace(a Action, m mountinfo.Mount) bool {
	ro := strings.HasPrefix(m.Options, "ro,") || m.Options == "ro"
	if sharedGroup(m) == 0 {
		return false
	}
	switch a.Kind {
	case Proc:
		return m.FSType == "proc"
	case Tmpfs:
		return m.FSType == "tmpfs"
	case Bind, BindFile:
		if ro != a.ReadOnly {
			return false
		}
		var src, dst unix.Stat_t
		if unix.Stat(a.Source, &src) != nil || unix.Stat(a.Target, &dst) != nil {
			return false
		}
		return src.Dev == dst.Dev && src.Ino == dst.Ino
	}
	return false
}

// mountpoint makes sure a's mount point exists, creating it only where
// the chroot owns the directory. A Remote inside a Remote is left to
// Options.Remote: looking it up before the host made it could leave a
// negative entry in the parent mount's cache.
func (t *Tree) mountpoint(a Action) error {
	if a.Kind == Remote && a.ParentKind == Remote {
		return nil
	}
	fi, err := os.Stat(a.Target)
	if err == nil {
		if a.Kind == BindFile {
			if fi.IsDir() {
				return fmt.Errorf("mount point %s is a directory", a.Target)
			}
			return nil
		}
		if !fi.IsDir() {
			return fmt.Errorf("mount point %s is not a directory", a.Target)
		}
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("mount point: %w", err)
	}
	switch {
	case a.CreateTarget || t.skipped[a.ParentPath]:
	case a.ParentKind == Remote:
		return fmt.Errorf("mount point %s does not exist on the host, and it lies inside the host mount %s (%s), which the chroot never writes into: create it on the host", a.Path, a.ParentPath, a.ParentKey)
	default:
		return fmt.Errorf("mount point %s does not exist on the DPU, and it lies inside the bind of the DPU's %s (%s), which the chroot never writes into: create it on the DPU, or do not bind %[2]s", a.Path, a.ParentPath, a.ParentKey)
	}
	if a.Kind == BindFile {
		if err := os.MkdirAll(filepath.Dir(a.Target), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(a.Target, os.O_CREATE|os.O_WRONLY, 0o755)
		if err != nil {
			return err
		}
		return f.Close()
	}
	return os.MkdirAll(a.Target, 0o755)
}

// makeLink makes target a symlink with text, replacing another symlink,
// a file or an empty directory there; kept is true when it was in place.
func makeLink(target, text string) (kept bool, err error) {
	if cur, err := os.Readlink(target); err == nil {
		if cur == text {
			return true, nil
		}
		if err := os.Remove(target); err != nil {
			return false, err
		}
	} else if fi, err := os.Lstat(target); err == nil {
		if fi.IsDir() {
			if err := os.Remove(target); err != nil {
				return false, fmt.Errorf("%s is a directory in the way of a symlink: %w", target, err)
			}
		} else if err := os.Remove(target); err != nil {
			return false, err
		}
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return false, err
	}
	return false, os.Symlink(text, target)
}

// Flags a read-only remount keeps from the source mount.
const keptFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME

func bind(source, target string, recursive, readOnly bool) error {
	flags := uintptr(unix.MS_BIND)
	if recursive {
		flags |= unix.MS_REC
	}
	if err := unix.Mount(source, target, "", flags, ""); err != nil {
		return fmt.Errorf("bind %s: %w", source, err)
	}
	rec := uintptr(0)
	if recursive {
		rec = unix.MS_REC
	}
	// A slave receives the source's mounts and sends none back; shared
	// again (a peer group of its own), it passes what is mounted beneath
	// it on like the rest of the chroot.
	if err := unix.Mount("", target, "", unix.MS_SLAVE|rec, ""); err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("make %s a slave: %w", target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_SHARED|rec, ""); err != nil {
		unix.Unmount(target, unix.MNT_DETACH)
		return fmt.Errorf("make %s shared: %w", target, err)
	}
	if readOnly {
		var st unix.Statfs_t
		if err := unix.Statfs(target, &st); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return err
		}
		rf := uintptr(unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY) | uintptr(st.Flags)&keptFlags
		if err := unix.Mount("", target, "", rf, ""); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

// Teardown undoes the tree in reverse order, detaching busy mounts, and
// then detaches anything still mounted under the root. It returns the
// errors it met (everything is attempted).
func (t *Tree) Teardown() error {
	t.mu.Lock()
	done := t.done
	t.done = nil
	t.mu.Unlock()
	var errs []error
	for i := len(done) - 1; i >= 0; i-- {
		ap := done[i]
		if err := t.undo(ap); err != nil {
			errs = append(errs, fmt.Errorf("chroot: undo %s: %w", ap.Action, err))
		}
	}
	if left, err := Cleanup(t.root); err != nil {
		errs = append(errs, err)
	} else if len(left) > 0 {
		t.log.Warn("chroot: detached mounts left under the root", zap.Strings("mounts", left))
	}
	return errors.Join(errs...)
}

func (t *Tree) undo(ap Applied) error {
	switch {
	case ap.Result == Skipped || ap.Kind == Link || ap.AsLink:
		return nil
	case ap.um != nil:
		err := ap.um.Unmount()
		t.log.Info("chroot: unmounted", zap.String("path", ap.Path), zap.Error(err))
		return err
	}
	flags := 0
	if ap.Recursive {
		flags = unix.MNT_DETACH // its submounts would make it busy
	}
	err := unix.Unmount(ap.Target, flags)
	if errors.Is(err, unix.EBUSY) {
		t.log.Warn("chroot: busy, detaching", zap.String("path", ap.Path))
		err = unix.Unmount(ap.Target, unix.MNT_DETACH)
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		err = nil // gone already (with a detached parent)
	}
	t.log.Info("chroot: unmounted", zap.String("path", ap.Path), zap.Error(err))
	return err
}

// Cleanup detaches every mount at or beneath root, deepest first, and
// returns the mount points it detached.
func Cleanup(root string) ([]string, error) {
	mounts, err := readMountinfo()
	if err != nil {
		return nil, fmt.Errorf("chroot: %w", err)
	}
	var left []string
	for _, mp := range beneath(mounts, root) {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return left, fmt.Errorf("chroot: detach %s: %w", mp, err)
		}
		left = append(left, mp)
	}
	return left, nil
}

// applyRoot makes the root a mount point bound onto itself, private (out
// of the peer group of the DPU's mount it lies on) and then shared (a
// peer group of its own), so that every mount made beneath it is shared
// and none propagates into the DPU's own tree. A root already bound onto
// itself is kept, its propagation put right when it is wrong. Beneath a
// root that is not, nothing of this plan is mounted yet: what is there is
// stale, and is detached first, since the bind would hide it.
func (t *Tree) applyRoot(a Action) (Applied, error) {
	ap := Applied{Action: a, Result: Made}
	mounts, err := readMountinfo()
	if err != nil {
		return ap, err
	}
	if here := at(mounts, a.Target); len(here) > 0 && boundOntoItself(mounts, here[len(here)-1]) {
		group := sharedGroup(here[len(here)-1])
		if group != 0 && !sharedOutside(mounts, group, a.Target) {
			ap.Result = Kept
			return ap, nil
		}
		t.log.Warn("chroot: the root is bound onto itself but not shared in a peer group of its own; making it so",
			zap.String("root", a.Target), zap.Int("peer_group", group))
		ap.Result = Repaired
		return ap, share(a.Target)
	}
	var stale []string
	for _, mp := range beneath(mounts, a.Target) {
		if mp != a.Target {
			stale = append(stale, mp)
		}
	}
	if len(stale) > 0 {
		t.log.Warn("chroot: detaching stale mounts beneath a root not bound onto itself", zap.Strings("found", stale))
		for _, mp := range stale {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				return ap, fmt.Errorf("detach %s: %w", mp, err)
			}
		}
		ap.Result = Repaired
	}
	if err := unix.Mount(a.Target, a.Target, "", unix.MS_BIND, ""); err != nil {
		return ap, fmt.Errorf("bind the root onto itself: %w", err)
	}
	if err := share(a.Target); err != nil {
		unix.Unmount(a.Target, unix.MNT_DETACH)
		return ap, err
	}
	return ap, nil
}

// share makes the mount at target private, then shared: a peer group of
// its own.
func share(target string) error {
	if err := unix.Mount("", target, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make %s private: %w", target, err)
	}
	if err := unix.Mount("", target, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", target, err)
	}
	return nil
}

// boundOntoItself reports whether m shows the very directory it is
// mounted on: the filesystem and path of the mount beneath it there.
func boundOntoItself(mounts []mountinfo.Mount, m mountinfo.Mount) bool {
	for _, p := range mounts {
		if p.ID != m.Parent {
			continue
		}
		if p.Major != m.Major || p.Minor != m.Minor || (p.MountPoint != "/" && !within(m.MountPoint, p.MountPoint)) {
			return false
		}
		rel := strings.TrimPrefix(m.MountPoint, p.MountPoint)
		return m.Root == path.Join(p.Root, rel)
	}
	return false
}

// sharedOutside reports whether a mount outside root is in peer group
// group.
func sharedOutside(mounts []mountinfo.Mount, group int, root string) bool {
	for _, m := range mounts {
		if sharedGroup(m) == group && !within(m.MountPoint, root) {
			return true
		}
	}
	return false
}
