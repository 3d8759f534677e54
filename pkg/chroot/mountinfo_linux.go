package chroot

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
)

// MountInfo is one line of /proc/self/mountinfo.
type MountInfo struct {
	ID, Parent int
	// Dev is "major:minor".
	Dev string
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
	var out []MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(f) {
			continue
		}
		id, err1 := strconv.Atoi(f[0])
		parent, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			continue
		}
		m := MountInfo{
			ID: id, Parent: parent, Dev: f[2],
			Root:       unescape(f[3]),
			Mountpoint: unescape(f[4]),
			Options:    f[5],
			FSType:     f[sep+1],
			Source:     unescape(f[sep+2]),
		}
		for _, opt := range f[6:sep] {
			tag, n, _ := strings.Cut(opt, ":")
			v, _ := strconv.Atoi(n)
			switch tag {
			case "shared":
				m.Shared = v
			case "master":
				m.Master = v
			}
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// unescape undoes the octal escapes (\040 for a space) of mountinfo.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
