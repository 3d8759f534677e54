package chroot

import (
	"io"
	"os"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
)

// MountInfo is one line of a mountinfo file as the chroot reads it: the
// fields of a mountinfo.Mount it looks at, and the peer groups of the
// mount's propagation.
type MountInfo struct {
	ID, Parent uint32
	// Major and Minor are the device of the mount's filesystem.
	Major, Minor uint32
	// Root is the path of the mount's root within its filesystem.
	Root       string
	Mountpoint string
	Options    string
	// Shared is the peer group of a shared mount ("shared:N"), 0 when the
	// mount is not shared; Master is the peer group a slave mount
	// receives from ("master:N"), 0 when it is no slave.
	Shared, Master int
	FSType         string
	Source         string
}

// ReadMountinfo reads /proc/self/mountinfo.
func ReadMountinfo() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountinfo(f)
}

// ParseMountinfo parses mountinfo(5) text; malformed lines are skipped.
func ParseMountinfo(r io.Reader) ([]MountInfo, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return fromMounts(mountinfo.Parse(data)), nil
}

func fromMounts(ms []mountinfo.Mount) []MountInfo {
	out := make([]MountInfo, len(ms))
	for i := range ms {
		m := &ms[i]
		out[i] = MountInfo{
			ID: m.ID, Parent: m.Parent, Major: m.Major, Minor: m.Minor,
			Root: m.Root, Mountpoint: m.MountPoint, Options: m.Options,
			FSType: m.FSType, Source: m.Source,
		}
		out[i].Shared, out[i].Master = m.PeerGroups()
	}
	return out
}

// at returns the mounts whose mount point is p, bottom first.
func at(mounts []MountInfo, p string) []MountInfo {
	var out []MountInfo
	for _, m := range mounts {
		if m.Mountpoint == p {
			out = append(out, m)
		}
	}
	return out
}

// Beneath returns the mount points at or under dir, deepest first.
func Beneath(mounts []MountInfo, dir string) []string {
	var out []string
	for i := len(mounts) - 1; i >= 0; i-- {
		if within(mounts[i].Mountpoint, dir) {
			out = append(out, mounts[i].Mountpoint)
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
