package mountinfo

import (
	"bytes"
	"strconv"
	"strings"
)

// Mount is one line of a mountinfo file:
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//	ID P  M:m  Root  MountPoint  Options    Optional   FSType Source SuperOptions
type Mount struct {
	// ID is the mount's id, Parent its parent's (its own for the root
	// of a mount namespace or of a tree outside the reader's root).
	ID, Parent uint32
	// Major and Minor are the device of the filesystem: st_dev of its
	// files.
	Major, Minor uint32
	// Root is the directory of the filesystem the mount shows.
	Root string
	// MountPoint is where the mount is, relative to the root of the
	// process whose table it is.
	MountPoint string
	// Options are the per-mount options ("rw,nosuid,relatime").
	Options string
	// Optional are the tagged fields ("shared:1", "master:2", "unbindable").
	Optional []string
	// FSType is the filesystem type ("ext4", "cgroup", "fuse.qtfs").
	FSType string
	// Source is what was mounted ("/dev/sda1", "cgroup", "none").
	Source string
	// SuperOptions are the options of the filesystem ("rw,memory").
	SuperOptions string
}

// Parse parses the lines of a mountinfo file; malformed lines are skipped.
func Parse(data []byte) []Mount {
	var out []Mount
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if m, ok := ParseLine(string(line)); ok {
			out = append(out, m)
		}
	}
	return out
}

// ParseLine parses one line of a mountinfo file, without its newline.
func ParseLine(line string) (Mount, bool) {
	f := strings.Split(line, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) != sep+4 {
		return Mount{}, false
	}
	id, err1 := strconv.ParseUint(f[0], 10, 32)
	parent, err2 := strconv.ParseUint(f[1], 10, 32)
	maj, min, ok := strings.Cut(f[2], ":")
	if err1 != nil || err2 != nil || !ok {
		return Mount{}, false
	}
	major, err1 := strconv.ParseUint(maj, 10, 32)
	minor, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return Mount{}, false
	}
	m := Mount{
		ID: uint32(id), Parent: uint32(parent), Major: uint32(major), Minor: uint32(minor),
		Root:         Unescape(f[3]),
		MountPoint:   Unescape(f[4]),
		Options:      f[5],
		FSType:       Unescape(f[sep+1]),
		Source:       Unescape(f[sep+2]),
		SuperOptions: f[sep+3],
	}
	if sep > 6 {
		m.Optional = append([]string(nil), f[6:sep]...)
	}
	return m, true
}

// PeerGroups returns the peer groups of m's propagation, read from its
// optional fields: shared is the group of a shared mount ("shared:N"),
// master the group a slave mount receives from ("master:N"); each is 0
// when the mount has no such field.
func (m *Mount) PeerGroups() (shared, master int) {
	for _, o := range m.Optional {
		tag, n, _ := strings.Cut(o, ":")
		v, err := strconv.Atoi(n)
		if err != nil || v < 0 {
			continue
		}
		switch tag {
		case "shared":
			shared = v
		case "master":
			master = v
		}
	}
	return shared, master
}

// AppendMountinfo appends m as a line of a mountinfo file, with its
// newline.
func (m *Mount) AppendMountinfo(b []byte) []byte {
	b = strconv.AppendUint(b, uint64(m.ID), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(m.Parent), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(m.Major), 10)
	b = append(b, ':')
	b = strconv.AppendUint(b, uint64(m.Minor), 10)
	b = append(b, ' ')
	b = AppendEscaped(b, m.Root)
	b = append(b, ' ')
	b = AppendEscaped(b, m.MountPoint)
	b = append(b, ' ')
	b = append(b, m.Options...)
	for _, o := range m.Optional {
		b = append(b, ' ')
		b = append(b, o...)
	}
	b = append(b, " - "...)
	b = AppendEscaped(b, m.FSType)
	b = append(b, ' ')
	b = AppendEscaped(b, m.Source)
	b = append(b, ' ')
	b = append(b, m.SuperOptions...)
	return append(b, '\n')
}

// sbFlagOptions are the options the kernel writes from a superblock's
// flags, right after its "rw" or "ro" (show_sb_opts).
var sbFlagOptions = map[string]bool{"sync": true, "dirsync": true, "mand": true, "lazytime": true}

// AppendMounts appends m as a line of a mounts file (/proc/<pid>/mounts),
// with its newline. The kernel writes the options of such a line as
// "ro" when the mount or its filesystem is read-only ("rw" otherwise),
// the options of the filesystem's flags, the per-mount options, then the
// filesystem's own: the same tokens as mountinfo's, merged.
func (m *Mount) AppendMounts(b []byte) []byte {
	b = AppendEscaped(b, m.Source)
	b = append(b, ' ')
	b = AppendEscaped(b, m.MountPoint)
	b = append(b, ' ')
	b = AppendEscaped(b, m.FSType)
	b = append(b, ' ')
	mnt := strings.Split(m.Options, ",")
	sb := strings.Split(m.SuperOptions, ",")
	if mnt[0] == "ro" || sb[0] == "ro" {
		b = append(b, "ro"...)
	} else {
		b = append(b, "rw"...)
	}
	sb = sb[1:]
	for len(sb) > 0 && sbFlagOptions[sb[0]] {
		b = append(b, ',')
		b = append(b, sb[0]...)
		sb = sb[1:]
	}
	for _, opts := range [][]string{mnt[1:], sb} {
		for _, o := range opts {
			b = append(b, ',')
			b = append(b, o...)
		}
	}
	return append(b, " 0 0\n"...)
}

// escaped are the bytes the kernel writes as octal escapes in the paths,
// types and sources of its mount tables.
func escaped(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\\' }

// AppendEscaped appends s with space, tab, newline and backslash written
// as octal escapes (\040, \011, \012, \134), as the kernel writes the
// paths of its mount tables.
func AppendEscaped(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if escaped(c) {
			b = append(b, '\\', '0'+c>>6, '0'+c>>3&7, '0'+c&7)
			continue
		}
		b = append(b, c)
	}
	return b
}

// Unescape undoes the octal escapes of a field of a mount table; a
// backslash not followed by three octal digits stays as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && octal(s[i+1]) && octal(s[i+2]) && octal(s[i+3]) && s[i+1] <= '3' {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal(c byte) bool { return c >= '0' && c <= '7' }
