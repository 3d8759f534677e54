package hostfs

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// resolveBeneath confines a walk to its starting directory and refuses
// every symlink, magic links included.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openBeneath opens path (relative, "" for dirfd itself) beneath dirfd
// with openat2. O_CLOEXEC is always added. A symlink anywhere in path gives
// ELOOP, except that with O_PATH|O_NOFOLLOW a symlink in the last position
// is opened itself.
func openBeneath(dirfd int, path string, flags int, mode uint32) (int, error) {
	if path == "" {
		path = "."
	}
	how := unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC), Mode: uint64(mode), Resolve: resolveBeneath}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, path, &how)
		// EAGAIN: the kernel saw a concurrent rename and could not vouch
		// for the walk; it is safe to try again.
		if (err == unix.EAGAIN || err == unix.EINTR) && i < 16 {
			continue
		}
		return fd, err
	}
}

// openDirPath opens the directory path beneath root as an O_PATH fd.
func openDirPath(root int, path []byte) (int, error) {
	return openBeneath(root, string(path), unix.O_PATH|unix.O_DIRECTORY, 0)
}

// OpenDirBeneath opens the directory rel beneath the directory dirfd as
// an O_PATH fd, as every walk of the server does (a symlink on the way is
// ELOOP, ".." never leaves dirfd): for the Fifo service.
func OpenDirBeneath(dirfd int, rel string) (int, error) {
	return openDirPath(dirfd, []byte(rel))
}

// openDir opens the directory path beneath the mount's root as an O_PATH
// fd; for the root itself ("") it returns the mount's own fd, which
// closeDir leaves open. Most requests name a file at the top of a mount
// or not far below: this saves two system calls per request there.
func (m *mount) openDir(path []byte) (int, error) {
	if len(path) == 0 {
		return m.fd, nil
	}
	return openDirPath(m.fd, path)
}

// closeDir closes a directory fd from openDir.
func (m *mount) closeDir(fd int) {
	if fd != m.fd {
		closeFd(fd)
	}
}

// openNode opens path beneath root as an O_PATH fd without following a
// symlink in the last position.
func openNode(root int, path []byte) (int, error) {
	return openBeneath(root, string(path), unix.O_PATH|unix.O_NOFOLLOW, 0)
}

// procFdPath names fd through /proc/self/fd: following that magic link
// reaches exactly the fd's inode (a symlink stays itself).
func procFdPath(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

// probeOpenat2 fails when the kernel lacks openat2 (before Linux 5.6).
func probeOpenat2() error {
	// An absolute path beneath AT_FDCWD is refused with EXDEV by a kernel
	// that knows openat2, so nothing is opened.
	fd, err := openBeneath(unix.AT_FDCWD, "/", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err == nil {
		closeFd(fd)
		return nil
	}
	if err == unix.ENOSYS {
		return err
	}
	return nil
}

func closeFd(fd int) {
	if fd >= 0 {
		_ = unix.Close(fd)
	}
}

func openExport(path string, readOnly bool) (*export, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("hostfs: export %q: %w", path, err)
	}
	kind, err := fsKindOf(fd)
	if err != nil {
		closeFd(fd)
		return nil, fmt.Errorf("hostfs: export %q: statfs: %w", path, err)
	}
	mnt, _ := hostMountID(fd) // 0 when unknown
	return &export{path: path, readOnly: readOnly, kind: kind, fd: fd, mnt: mnt}, nil
}

// fsKindOf tells which kind of filesystem the directory fd lies on. A
// tmpfs that only holds cgroup hierarchies (the cgroup v1 and hybrid
// layouts of /sys/fs/cgroup) counts as cgroup: its own files are a few
// directories and symlinks, and the files beneath are cgroup files.
func fsKindOf(fd int) (qtfsv1.FsKind, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return qtfsv1.FsKind_FS_KIND_UNSPECIFIED, err
	}
	switch uint64(st.Type) {
	case unix.PROC_SUPER_MAGIC:
		return qtfsv1.FsKind_FS_KIND_PROC, nil
	case unix.SYSFS_MAGIC:
		return qtfsv1.FsKind_FS_KIND_SYSFS, nil
	case unix.CGROUP_SUPER_MAGIC:
		return qtfsv1.FsKind_FS_KIND_CGROUP, nil
	case unix.CGROUP2_SUPER_MAGIC:
		return qtfsv1.FsKind_FS_KIND_CGROUP2, nil
	case unix.TMPFS_MAGIC:
		if dir, err := os.Readlink(procFdPath(fd)); err == nil && holdsOnlyCgroups(dir) {
			return qtfsv1.FsKind_FS_KIND_CGROUP, nil
		}
	}
	return qtfsv1.FsKind_FS_KIND_REGULAR, nil
}

// holdsOnlyCgroups reports whether at least one filesystem is mounted
// beneath dir (an absolute path of this mount namespace) and every one is
// a cgroup or cgroup2 filesystem.
func holdsOnlyCgroups(dir string) bool {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	return onlyCgroupsBeneath(data, dir)
}

// onlyCgroupsBeneath is holdsOnlyCgroups on the text of a mountinfo file.
func onlyCgroupsBeneath(table []byte, dir string) bool {
	prefix := strings.TrimSuffix(dir, "/") + "/"
	found := false
	for _, m := range mountinfo.Parse(table) {
		if !strings.HasPrefix(m.MountPoint, prefix) {
			continue
		}
		if m.FSType != "cgroup" && m.FSType != "cgroup2" {
			return false
		}
		found = true
	}
	return found
}

func fstat(fd int) (*qtfsv1.Attr, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return qfs.AttrFromStat(&st), nil
}

// lstatAt stats name in dirfd without following a symlink; name "" stats
// dirfd itself.
func lstatAt(dirfd int, name string) (*qtfsv1.Attr, error) {
	var st unix.Stat_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	if err := unix.Fstatat(dirfd, name, &st, flags); err != nil {
		return nil, err
	}
	return qfs.AttrFromStat(&st), nil
}

// errnoName is the metric label for errno e.
func errnoName(e int32) string {
	if e < 0 || e > 4095 {
		return "EUNKNOWN"
	}
	if n := unix.ErrnoName(syscall.Errno(e)); n != "" {
		return n
	}
	return "E" + strconv.Itoa(int(e))
}

func attrOf(st *unix.Stat_t) *qtfsv1.Attr { return qfs.AttrFromStat(st) }
