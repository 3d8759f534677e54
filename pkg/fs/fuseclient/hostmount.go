package fuseclient

import (
	"context"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/session"
	"github.com/qtfs/qtfs/pkg/supervise"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// HostMounter carries out, on the host, the mount(2) and umount2(2) calls
// of supervised programs (pkg/supervise) whose target lies beneath the
// root of a mount this process serves: the server makes the mount at the
// host path (MountOnHost), where the host's programs (runc) see it, and
// the DPU sees it through the mount. Every path of a call must lie on the
// target's mount (EXDEV otherwise: a layer or bind source of the DPU
// cannot be mounted on the host). A mount's own root is not served: a
// mount over it, or a change of its propagation, is the DPU's own.
type HostMounter struct {
	Log *zap.Logger
}

var _ supervise.Mounter = HostMounter{}

// Serves reports whether target lies beneath the root of a served mount.
func (HostMounter) Serves(target *os.File) bool {
	_, rel, ok := servedPath(target)
	return ok && rel != ""
}

// Mount carries out c on the host.
func (h HostMounter) Mount(c *supervise.MountCall) error {
	m, target, ok := servedPath(c.Target)
	if !ok || target == "" {
		return unix.EINVAL
	}
	req := &qtfsv1.MountOnHostRequest{
		Mount:   m.id,
		Caller:  &qtfsv1.Caller{Uid: c.UID, Gid: c.GID},
		Target:  []byte(target),
		FsType:  c.FsType,
		Flags:   c.Flags,
		Source:  c.Source,
		Options: c.Options,
	}
	var bad []string // paths not on the target's mount
	on := func(f *os.File) []byte {
		fm, rel, ok := servedPath(f)
		if !ok || fm != m {
			p, _ := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
			bad = append(bad, p)
		}
		return []byte(rel)
	}
	if c.Bind != nil {
		req.Bind = on(c.Bind)
	}
	for _, l := range c.Lower {
		req.Lower = append(req.Lower, on(l))
	}
	if c.Upper != nil {
		req.Upper = on(c.Upper)
	}
	if c.Work != nil {
		req.Work = on(c.Work)
	}
	if len(bad) > 0 {
		h.log().Warn("a mount on the host names paths that are not on its target's qtfs mount: refused",
			zap.String("target", m.mountpoint+"/"+target), zap.Strings("paths", bad))
		return unix.EXDEV
	}
	_, e := session.Call(context.Background(), m.sess, "MountOnHost", qtfsv1.FileSystemClient.MountOnHost, req, m.callOpts())
	if e == 0 {
		m.hostMountChanged(target)
		// The host's overlay writes in its upper and work directories
		// (work/work, index/, copied-up files): what this client knows
		// of them is no longer all there is.
		m.hostChangedDir(string(req.Upper))
		m.hostChangedDir(string(req.Work))
	}
	return errnoOrNil(e)
}

// Unmount carries out c on the host.
func (h HostMounter) Unmount(c *supervise.UnmountCall) error {
	m, target, ok := servedPath(c.Target)
	if !ok || target == "" {
		return unix.EINVAL
	}
	_, e := session.Call(context.Background(), m.sess, "UnmountOnHost", qtfsv1.FileSystemClient.UnmountOnHost, &qtfsv1.UnmountOnHostRequest{
		Mount: m.id, Caller: &qtfsv1.Caller{Uid: c.UID, Gid: c.GID}, Target: []byte(target), Flags: uint32(c.Flags)}, m.callOpts())
	if e == 0 {
		m.hostMountChanged(target)
	}
	return errnoOrNil(e)
}

// MountRoot says whether f, on a served mount, is the root of a host
// mount beneath that mount's root, by the mount list the mountinfo view
// keeps (mountview.go). The root of a served mount itself is the DPU's
// own mount root, which the kernel reports: ok false, as for a file of no
// served mount or when the server does not list its mounts.
func (HostMounter) MountRoot(f *os.File) (root, ok bool) {
	m, rel, ok := servedPath(f)
	if !ok || rel == "" {
		return false, false
	}
	list := m.hostMountsOf(context.Background())
	if list == nil {
		return false, false
	}
	for _, hm := range list {
		if strings.Trim(string(hm.GetPath()), "/") == rel {
			return true, true
		}
	}
	return false, true
}

func (h HostMounter) log() *zap.Logger {
	if h.Log == nil {
		return zap.NewNop()
	}
	return h.Log
}

func errnoOrNil(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// servedPath returns the served mount f lies on and f's path beneath its
// root (no leading slash; "" for the root). ok is false for a file of any
// other filesystem, or one reached through a bind of a mount elsewhere.
func servedPath(f *os.File) (m *mountFS, rel string, ok bool) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, "", false
	}
	if m = served.lookup(st.Dev); m == nil {
		return nil, "", false
	}
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
	if err != nil {
		return nil, "", false
	}
	rel, in := qfs.InRoot(p, m.mountpoint)
	if !in {
		return nil, "", false
	}
	return m, strings.Trim(rel, "/"), true
}

// hostMountChanged forgets what the kernel and this mount keep of the
// directory at rel, where a host mount was made or removed: the entry in
// its parent (the next lookup crosses into the new mount, or finds the
// directory beneath it again) and the mount list of the mountinfo view.
func (m *mountFS) hostMountChanged(rel string) {
	m.hostMounts.forget()
	parent := m.cachedInode(path.Dir(rel))
	if parent == nil {
		return // the kernel holds nothing of the path
	}
	if e := parent.NotifyEntry(path.Base(rel)); e != 0 && e != syscall.ENOENT {
		m.log.Debug("forget the entry of a host mount's target", zap.String("path", rel), zap.Error(e))
	}
}

// hostChangedDir forgets the listing of the directory at rel (nothing
// when rel is empty or the kernel holds nothing of it): the host changed
// its content.
func (m *mountFS) hostChangedDir(rel string) {
	if rel == "" {
		return
	}
	n := m.cachedInode(rel)
	if n == nil {
		return
	}
	if d, ok := n.Operations().(*node); ok {
		d.dropListing()
	}
	n.NotifyContent(0, 0)
}

// cachedInode returns the inode of the path rel beneath the mount's root
// ("" or "." for the root) as the kernel holds it, walking the inodes it
// knows by name; nil when it holds none there.
func (m *mountFS) cachedInode(rel string) *fs.Inode {
	n := &m.root.Inode
	if rel == "" || rel == "." {
		return n
	}
	for _, name := range strings.Split(rel, "/") {
		if n = n.GetChild(name); n == nil {
			return nil
		}
	}
	return n
}

// forget drops the kept list: the next get fetches it.
func (c *hostMountsCache) forget() {
	c.mu.Lock()
	c.valid = false
	c.mu.Unlock()
}
