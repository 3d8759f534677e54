package chroot

import (
	"os"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
)

// readMountinfo reads this process's mount table.
func readMountinfo() ([]mountinfo.Mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	return mountinfo.Parse(data), nil
}

// sharedGroup is the peer group of a shared mount, 0 when m is not
// shared.
func sharedGroup(m mountinfo.Mount) int {
	shared, _ := m.PeerGroups()
	return shared
}

// at returns the mounts whose mount point is p, bottom first.
func at(mounts []mountinfo.Mount, p string) []mountinfo.Mount {
	var out []mountinfo.Mount
	for _, m := range mounts {
		if m.MountPoint == p {
			out = append(out, m)
		}
	}
	return out
}

// beneath returns the mount points at or under dir, deepest first.
func beneath(mounts []mountinfo.Mount, dir string) []string {
	var out []string
	for i := len(mounts) - 1; i >= 0; i-- {
		if within(mounts[i].MountPoint, dir) {
			out = append(out, mounts[i].MountPoint)
		}
	}
	// Later mounts are listed later; deeper paths first among the rest.
	sortDeepestFirst(out)
	return out
}

func sortDeepestFirst(ps []string) {
	for i := 1; i < len(ps); i++ {
		for j := i; j > 0 && depth(ps[j]) > depth(ps[j-1]); j-- {
			ps[j], ps[j-1] = ps[j-1], ps[j]
		}
	}
}
