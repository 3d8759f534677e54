package hostfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// maxHostMounts bounds the mounts one Mounts reply lists (besides the
// reply's size, which the server's message limit bounds).
const maxHostMounts = 16384

// hostMountOverhead is what a HostMount costs in a reply beyond its
// strings: its numbers and the fields' tags.
const hostMountOverhead = 48

// mountinfoPath is the server's own mount table.
const mountinfoPath = "/proc/self/mountinfo"

// Mounts lists the host's mounts at and beneath a mount's root, from the
// server's /proc/self/mountinfo: first the mount that holds the root (the
// one the mount's root fd lies on, by its mount id), then the mounts whose
// mount point lies beneath the root and which the server's walks from the
// root cross (descendants of the holding mount not hidden by a mount on
// the root itself), parents first, their paths relative to the root.
// Nothing outside the mount's root is listed.
func (s *Server) Mounts(ctx context.Context, req *qtfsv1.MountsRequest) (*qtfsv1.MountsResponse, error) {
	const op = "Mounts"
	resp := &qtfsv1.MountsResponse{}
	err := s.onMount(ctx, req.GetMount(), nil, &resp.Errno, func(_ *session, m *mount) syscall.Errno {
		id, err := mountID(m.fd)
		if err != nil {
			return s.errnoOf(op, err)
		}
		root, err := os.Readlink(procFdPath(m.fd))
		if err != nil {
			return s.errnoOf(op, err)
		}
		if !path.IsAbs(root) || strings.HasSuffix(root, " (deleted)") {
			// Removed, or out of the server's reach: no path in its
			// table names it.
			return syscall.ENOENT
		}
		data, err := os.ReadFile(mountinfoPath)
		if err != nil {
			return s.errnoOf(op, err)
		}
		list, truncated, e := mountsBeneath(mountinfo.Parse(data), id, root, s.maxData)
		if truncated {
			s.log.Warn("hostfs: the mounts beneath a mount exceed one reply; the rest are not listed",
				zap.String("root", root), zap.Int("listed", len(list)))
		}
		resp.Mounts = list
		return e
	})
	return reply(resp, err)
}

// mountID returns the id of the mount fd lies on.
func mountID(fd int) (uint32, error) {
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &stx)
	if err == nil && stx.Mask&unix.STATX_MNT_ID != 0 {
		return uint32(stx.Mnt_id), nil
	}
	// Before Linux 5.8: the fd's fdinfo says it.
	f, err := os.Open("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := bytes.CutPrefix(sc.Bytes(), []byte("mnt_id:")); ok {
			id, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 32)
			if err != nil {
				return 0, err
			}
			return uint32(id), nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no mnt_id in fdinfo")
}

// relBeneath returns p relative to dir ("" for dir itself) when p is dir
// or lies beneath it; both are clean absolute paths.
func relBeneath(p, dir string) (string, bool) {
	switch {
	case p == "" || p[0] != '/':
		return "", false
	case p == dir:
		return "", true
	case dir == "/":
		return p[1:], true
	case strings.HasPrefix(p, dir) && p[len(dir)] == '/':
		return p[len(dir)+1:], true
	}
	return "", false
}

// mountsBeneath answers Mounts from the server's mount table: holder is
// the id of the mount that holds root, root the root's path in the table.
// budget bounds the bytes of the list; truncated says mounts were left
// out for it (or for maxHostMounts).
func mountsBeneath(table []mountinfo.Mount, holder uint32, root string, budget int) (list []*qtfsv1.HostMount, truncated bool, e syscall.Errno) {
	h := -1
	children := map[uint32][]int{}
	for i := range table {
		if table[i].ID == holder {
			h = i
		}
		if table[i].Parent != table[i].ID {
			children[table[i].Parent] = append(children[table[i].Parent], i)
		}
	}
	if h < 0 {
		return nil, false, syscall.ENOENT
	}
	rel, ok := relBeneath(root, table[h].MountPoint)
	if !ok {
		return nil, false, syscall.ENOENT
	}
	size := 0
	add := func(m *mountinfo.Mount, fsRoot, p string) bool {
		n := hostMountOverhead + len(fsRoot) + len(p) + len(m.Options) + len(m.FSType) + len(m.Source) + len(m.SuperOptions)
		if len(list) >= maxHostMounts || size+n > budget {
			truncated = true
			return false
		}
		size += n
		list = append(list, &qtfsv1.HostMount{
			Id: m.ID, ParentId: m.Parent, Major: m.Major, Minor: m.Minor,
			Root: []byte(fsRoot), Path: []byte(p),
			Options: m.Options, FsType: m.FSType, Source: []byte(m.Source), SuperOptions: m.SuperOptions,
		})
		return true
	}
	if !add(&table[h], path.Join(table[h].Root, rel), "") {
		return nil, true, syscall.EIO
	}
	// Depth first from the holder: a mount is listed after its parent,
	// siblings in the table's order. A child whose mount point is not
	// strictly beneath the root (one on the root itself, mounted after the
	// root was opened, or one elsewhere in the holder's tree) is not
	// crossed by walks from the root, nor is anything mounted on it.
	seen := map[uint32]bool{holder: true}
	stack := []int{h}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i != h {
			p, _ := relBeneath(table[i].MountPoint, root)
			if !add(&table[i], table[i].Root, p) {
				break
			}
		}
		kids := children[table[i].ID]
		for j := len(kids) - 1; j >= 0; j-- {
			c := &table[kids[j]]
			if seen[c.ID] {
				continue
			}
			p, ok := relBeneath(c.MountPoint, root)
			if !ok || p == "" || qfs.ValidPath([]byte(p)) != 0 {
				continue
			}
			seen[c.ID] = true
			stack = append(stack, kids[j])
		}
	}
	return list, truncated, 0
}
