package fs

import qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"

// SpecialKind reports whether files of this filesystem kind are made by
// the kernel when read (proc, sysfs, cgroup): their size does not describe
// their content, each write is a command, and scanners read the same few
// small names in directory after directory.
func SpecialKind(k qtfsv1.FsKind) bool {
	switch k {
	case qtfsv1.FsKind_FS_KIND_PROC, qtfsv1.FsKind_FS_KIND_SYSFS,
		qtfsv1.FsKind_FS_KIND_CGROUP, qtfsv1.FsKind_FS_KIND_CGROUP2:
		return true
	}
	return false
}

// MaxReadAlso bounds OpenRequest.read_also: how many files of a special
// filesystem one Open may read along for the opens the client expects.
const MaxReadAlso = 4
