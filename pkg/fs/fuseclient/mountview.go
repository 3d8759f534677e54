package fuseclient

import (
	"bytes"
	"context"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// The mountinfo view. A process in the offload chroot that reads its
// /proc/<pid>/mountinfo (or mounts) through a proc root mount reads the
// DPU kernel's table for that process, rewritten: each line of a FUSE
// mount this process serves shows the host's filesystem type, source,
// super options and root (the host mount that holds the mount's root),
// and the host's mounts beneath that root follow it as lines of their
// own, beneath its mount point. Everything else is the DPU's: the other
// lines, and on the rewritten ones the mount id, parent, mount point,
// per-mount options and optional fields (propagation, which dockerd
// checks, is the DPU mount's).
//
// Which line is which mount: a line's major:minor is the device of its
// FUSE connection, the st_dev of every file beneath it; each mount
// records that device when it is mounted (served). A device identifies
// a mount across mount namespaces and bind mounts, where mount ids and
// mount points do not.
//
// The host's submounts carry the FUSE mount's major:minor too: that is
// what stat(2) reports for their files on the DPU (the kernel gives FUSE
// no say in st_dev), and the host's own numbers would collide with the
// DPU's devices. Their mount ids are numbers of the view (from
// viewIDBase on, per DPU line and host mount id), stable while the
// client runs, apart from every DPU id.

// hostMountsTTL is how long a mount keeps the host's mount list: a
// program that reads mountinfo again and again costs at most one Mounts
// RPC per mount and TTL.
const hostMountsTTL = time.Second

// viewIDBase is the first mount id the view gives the host's submounts;
// the kernel hands out small mount ids (they are reused), far below it.
const viewIDBase = 1 << 30

// maxViewIDs bounds the view's id table; past it the table starts anew
// (ids of the host's submounts change once).
const maxViewIDs = 1 << 20

// served is the table of the mounts this process serves, by device.
var served = &mountTable{byDev: map[uint64]*mountFS{}}

// mountTable maps the device numbers of FUSE connections to the mounts
// they serve.
type mountTable struct {
	mu    sync.Mutex
	byDev map[uint64]*mountFS
}

func (t *mountTable) add(dev uint64, m *mountFS) {
	t.mu.Lock()
	t.byDev[dev] = m
	t.mu.Unlock()
}

// remove forgets dev, if it still names m.
func (t *mountTable) remove(dev uint64, m *mountFS) {
	t.mu.Lock()
	if t.byDev[dev] == m {
		delete(t.byDev, dev)
	}
	t.mu.Unlock()
}

func (t *mountTable) lookup(dev uint64) *mountFS {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.byDev[dev]
}

// mountDev returns the device of the filesystem mounted on mountpoint:
// statx(2) without a sync, so the kernel sends the mount no request.
func mountDev(mountpoint string) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, mountpoint, unix.AT_STATX_DONT_SYNC, 0, &stx); err != nil {
		return 0, err
	}
	return unix.Mkdev(stx.Dev_major, stx.Dev_minor), nil
}

// hostMountsCache keeps a mount's Mounts reply for ttl. Calls that come
// while one is in flight wait for it rather than send their own.
type hostMountsCache struct {
	ttl time.Duration
	// now is the clock (monoNow when nil).
	now func() int64
	// warned is set once the mount logged that the server does not list
	// its mounts.
	warned atomic.Bool

	mu    sync.Mutex
	valid bool
	at    int64
	list  []*qtfsv1.HostMount
	e     syscall.Errno
	// wait is closed when the call in flight ends (nil when none is).
	wait chan struct{}
}

// get returns the mount list, from fetch when the kept one is older than
// ttl (a failure is kept as long).
func (c *hostMountsCache) get(fetch func() ([]*qtfsv1.HostMount, syscall.Errno)) ([]*qtfsv1.HostMount, syscall.Errno) {
	clock := c.now
	if clock == nil {
		clock = monoNow
	}
	c.mu.Lock()
	for {
		if c.valid && clock()-c.at < int64(c.ttl) {
			list, e := c.list, c.e
			c.mu.Unlock()
			return list, e
		}
		if c.wait == nil {
			break
		}
		w := c.wait
		c.mu.Unlock()
		<-w
		c.mu.Lock()
		if c.valid {
			// What the call in flight got, however old the clock says
			// it is now: a reader waited for it.
			list, e := c.list, c.e
			c.mu.Unlock()
			return list, e
		}
	}
	w := make(chan struct{})
	c.wait = w
	c.mu.Unlock()
	list, e := fetch()
	c.mu.Lock()
	// A call cut short because its caller was killed says nothing of
	// the mount: the readers that waited for it make their own.
	c.valid = e != syscall.EINTR
	c.at, c.list, c.e, c.wait = clock(), list, e, nil
	c.mu.Unlock()
	close(w)
	return list, e
}

// hostMountsOf returns the host's mounts at and beneath m's root, at most
// hostMountsTTL old, for the FUSE request ctx; nil when the server does
// not say.
func (m *mountFS) hostMountsOf(ctx context.Context) []*qtfsv1.HostMount {
	list, e := m.hostMounts.get(func() ([]*qtfsv1.HostMount, syscall.Errno) {
		resp, e := session.Call(context.Background(), m.sess, "Mounts", qtfsv1.FileSystemClient.Mounts, &qtfsv1.MountsRequest{Mount: m.id}, m.callOptsFor(ctx))
		return resp.GetMounts(), e
	})
	if e != 0 {
		if e == syscall.EOPNOTSUPP && !m.hostMounts.warned.Swap(true) {
			m.log.Warn("qtfs server does not list its mounts: mountinfo shows this mount as a FUSE mount")
		} else {
			m.log.Debug("qtfs Mounts failed: mountinfo shows this mount as a FUSE mount", zap.String("errno", qfs.ErrnoName(e)))
		}
		return nil
	}
	return list
}

// viewIDs hands out the mount ids of the host's submounts in the view,
// per DPU mount (a FUSE mount seen twice, bound elsewhere or in another
// mount namespace, is two DPU mounts) and host mount id.
type viewIDs struct {
	mu  sync.Mutex
	ids map[[2]uint32]uint32
}

func (v *viewIDs) id(dpu, host uint32) uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	k := [2]uint32{dpu, host}
	if id, ok := v.ids[k]; ok {
		return id
	}
	if v.ids == nil || len(v.ids) >= maxViewIDs {
		v.ids = map[[2]uint32]uint32{}
	}
	id := viewIDBase + uint32(len(v.ids))
	v.ids[k] = id
	return id
}

// hostView returns the view of a DPU mount table: the lines for which
// hosts returns the host's mounts (the reply of the mount the line is)
// rewritten, each followed by the host's mounts beneath it.
func (v *viewIDs) hostView(dpu []mountinfo.Mount, hosts func(*mountinfo.Mount) []*qtfsv1.HostMount) []mountinfo.Mount {
	out := make([]mountinfo.Mount, 0, len(dpu))
	for i := range dpu {
		e := &dpu[i]
		hms := hosts(e)
		if len(hms) == 0 || !validHostMount(hms[0], true) {
			out = append(out, *e)
			continue
		}
		out = v.expand(out, e, hms)
	}
	return out
}

// validHostMount checks a HostMount from the wire before it is written
// into a mount table: a valid relative path ("" only for the first), an
// absolute root, a type, and options the kernel could have written (they
// are written as they are: whitespace would break the line). Paths, type
// and source are escaped when written.
func validHostMount(h *qtfsv1.HostMount, first bool) bool {
	p, r := h.GetPath(), h.GetRoot()
	switch {
	case first != (len(p) == 0), !first && qfs.ValidPath(p) != 0:
		return false
	case len(r) == 0 || r[0] != '/' || bytes.IndexByte(r, 0) >= 0:
		return false
	case h.GetFsType() == "" || strings.IndexByte(h.GetFsType(), 0) >= 0 || bytes.IndexByte(h.GetSource(), 0) >= 0:
		return false
	case strings.ContainsAny(h.GetOptions(), noOptionBytes) || strings.ContainsAny(h.GetSuperOptions(), noOptionBytes):
		return false
	}
	return true
}

// noOptionBytes never appear in the options of a mount table.
const noOptionBytes = " \t\n\r\v\f\x00"

// within returns p relative to dir ("" for dir itself) when p is dir or
// lies beneath it; both are relative paths ("" is the root).
func within(p, dir string) (string, bool) {
	switch {
	case p == dir:
		return "", true
	case dir == "":
		return p, true
	case len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir:
		return p[len(dir)+1:], true
	}
	return "", false
}

// expand appends the view of DPU line e of a qtfs mount whose host mounts
// are hms: e with the host's filesystem of the directory it shows, then
// the host's mounts beneath that directory.
func (v *viewIDs) expand(out []mountinfo.Mount, e *mountinfo.Mount, hms []*qtfsv1.HostMount) []mountinfo.Mount {
	// The directory of the mount's filesystem the line shows: its root,
	// or a directory beneath it for a bind mount of one.
	rel := strings.Trim(path.Clean("/"+e.Root), "/")
	valid := make([]bool, len(hms))
	valid[0] = true
	for i := 1; i < len(hms); i++ {
		valid[i] = validHostMount(hms[i], false)
	}
	// The host mount that holds rel: from the one holding the root,
	// down through the mounts on rel and on the directories above it,
	// the shallowest first, the last of those on one point (on top).
	cur := 0
	for step := 0; step < len(hms); step++ {
		best := -1
		for i := 1; i < len(hms); i++ {
			if !valid[i] || hms[i].GetParentId() != hms[cur].GetId() || i == cur {
				continue
			}
			if _, ok := within(rel, string(hms[i].GetPath())); !ok {
				continue
			}
			if best < 0 || len(hms[i].GetPath()) <= len(hms[best].GetPath()) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		cur = best
	}
	hold := hms[cur]
	inHold, _ := within(rel, string(hold.GetPath()))
	line := *e
	line.Root = path.Join(string(hold.GetRoot()), inHold)
	line.FSType, line.Source, line.SuperOptions = hold.GetFsType(), string(hold.GetSource()), hold.GetSuperOptions()
	out = append(out, line)

	// The mounts strictly beneath rel that descend from the holder
	// through such mounts only (the list has parents first).
	shown := map[uint32]bool{}
	readOnly := strings.HasPrefix(e.Options, "ro,") || e.Options == "ro"
	for i := 1; i < len(hms); i++ {
		h := hms[i]
		if !valid[i] || i == cur {
			continue
		}
		sub, ok := within(string(h.GetPath()), rel)
		if !ok || sub == "" || h.GetParentId() != hold.GetId() && !shown[h.GetParentId()] {
			continue
		}
		if shown[h.GetId()] || h.GetId() == hold.GetId() {
			continue // the same id twice: not a list the host made
		}
		shown[h.GetId()] = true
		parent := e.ID
		if h.GetParentId() != hold.GetId() {
			parent = v.id(e.ID, h.GetParentId())
		}
		opts := h.GetOptions()
		if readOnly {
			// The DPU's read-only mount makes everything beneath it so.
			_, rest, _ := strings.Cut(opts, ",")
			opts = strings.TrimSuffix("ro,"+rest, ",")
		}
		out = append(out, mountinfo.Mount{
			ID: v.id(e.ID, h.GetId()), Parent: parent,
			Major: e.Major, Minor: e.Minor,
			Root:         string(h.GetRoot()),
			MountPoint:   joinMountPoint(e.MountPoint, sub),
			Options:      opts,
			Optional:     e.Optional,
			FSType:       h.GetFsType(),
			Source:       string(h.GetSource()),
			SuperOptions: h.GetSuperOptions(),
		})
	}
	return out
}

// joinMountPoint returns the mount point of rel beneath mount point mp.
func joinMountPoint(mp, rel string) string {
	if mp == "/" {
		return "/" + rel
	}
	return mp + "/" + rel
}

// renderView writes a view as a mountinfo file, or as a mounts file.
func renderView(view []mountinfo.Mount, asMounts bool) []byte {
	var b []byte
	for i := range view {
		if asMounts {
			b = view[i].AppendMounts(b)
		} else {
			b = view[i].AppendMountinfo(b)
		}
	}
	return b
}
