package chroot

import (
	"errors"
	"os"
)

// Check looks on the DPU for what plan (from Plan) needs to find there,
// and reports what Apply would stop at, before anything is mounted:
//   - the source of a bind that is not optional is missing, or is no
//     directory (no file for the rexec binary);
//   - a mount point lies inside a bind of a DPU directory and does not
//     exist there (Apply never writes into the DPU's own directories), or
//     is of the wrong type.
//
// Mount points inside a host mount are the host's: a Remote there is
// made by the host when it is mounted; other kinds must find theirs when
// Apply comes to them. Every error is a *KeyError (joined when several).
func Check(plan []Action) error {
	var errs []error
	byPath := map[string]Action{}
	for _, a := range plan {
		byPath[a.Path] = a
	}
	// missing reports whether the optional bind at p is skipped.
	missing := func(p string) bool {
		b, ok := byPath[p]
		if !ok || b.Kind != Bind || !b.Optional {
			return false
		}
		_, err := os.Lstat(b.Source)
		return errors.Is(err, os.ErrNotExist)
	}
	for _, a := range plan {
		switch a.Kind {
		case Bind:
			fi, err := os.Lstat(a.Source)
			switch {
			case errors.Is(err, os.ErrNotExist) && a.Optional:
			case err != nil:
				errs = append(errs, keyErr(a.Key, "the DPU's %s: %v", a.Source, err))
			case fi.Mode()&os.ModeSymlink == 0 && !fi.IsDir():
				errs = append(errs, keyErr(a.Key, "the DPU's %s is not a directory", a.Source))
			}
		case BindFile:
			if fi, err := os.Stat(a.Source); err != nil {
				errs = append(errs, keyErr(a.Key, "the DPU's %s: %v", a.Source, err))
			} else if fi.IsDir() {
				errs = append(errs, keyErr(a.Key, "the DPU's %s is a directory", a.Source))
			}
		}
		if a.ParentKind != Bind || a.Kind == Link || missing(a.ParentPath) {
			continue
		}
		// Binds are at their source's path: the mount point is a.Path on
		// the DPU.
		fi, err := os.Stat(a.Path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			errs = append(errs, keyErr(a.Key, "mount point %s does not exist on the DPU, and it lies inside the bind of the DPU's %s (%s), which the chroot never writes into: create it on the DPU (mkdir -p %[1]s), or do not bind %[2]s",
				a.Path, a.ParentPath, a.ParentKey))
		case err != nil:
			errs = append(errs, keyErr(a.Key, "mount point %s on the DPU: %v", a.Path, err))
		case a.Kind == BindFile && fi.IsDir():
			errs = append(errs, keyErr(a.Key, "mount point %s on the DPU is a directory, not a file", a.Path))
		case a.Kind != BindFile && !fi.IsDir():
			errs = append(errs, keyErr(a.Key, "mount point %s on the DPU is not a directory", a.Path))
		}
	}
	return errors.Join(errs...)
}
