package hostfs

import (
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Host mounts: MountOnHost and UnmountOnHost carry out on the host the
// mount(2) and umount2(2) calls a supervised program of the DPU made on a
// path of a qtfs mount, so that what runs on the host (runc) sees them, and
// the DPU sees them through the export (walks cross host mounts).
//
// Policy (every refusal is logged, rate-limited, and counted with reason
// host_mount; every change made is logged at info):
//   - Off unless Options.MountAllow names the kind: overlay and tmpfs for
//     new mounts, bind for binds. The caller must be root (uid 0).
//   - Every path (target, bind source, layers) is beneath the request's
//     mount, checked as every wire path is and opened with the confined
//     walk (no symlink, no "..", host mounts crossed); the system calls
//     name the opened fds as /proc/self/fd/N, never a host path, so no
//     component can be swapped between the check and the call.
//   - The target is never the root of the request's mount, an export's
//     root, or a directory holding an export's root, and lies in a
//     read-write export (EROFS otherwise): that covers the bind source and
//     the overlay layers too, which lie in the same export.
//   - New mounts: overlay or tmpfs, with the per-mount flags of
//     mountAttrFlags, the options of hostMountOptions (never a layer: those
//     come as paths) and a plain source name.
//   - Binds: MS_BIND, with MS_REC and MS_SILENT at most (per-mount flags,
//     which the kernel ignores on a new bind, are dropped), a directory onto
//     a directory or a non-directory onto a non-directory. The server
//     records each mount it made, by mount id (STATX_MNT_ID_UNIQUE where
//     the kernel has it: never reused) and mount point, so that it may
//     change its binds later.
//   - Remounts, changes of propagation and unmounts act only on a mount
//     root that is not the mount of an export's root, and is either of
//     type overlay or tmpfs (that type allowed) or a bind this server
//     recorded: the host's other mounts beneath an export (cgroup under
//     /sys, a disk) are never changed. A remount of the superblock (MS_REMOUNT without
//     MS_BIND) changes every mount of that filesystem, so it is allowed
//     only on an overlay or tmpfs this server made and recorded.
//   - MS_MOVE and MNT_EXPIRE are always refused.
//
// The records live in memory: after a restart of the server its binds are
// the host's own mounts to it (refused), while its overlays and tmpfs
// mounts may still be unmounted by their type.

// The kinds of host mount Options.MountAllow names.
const (
	mountKindOverlay = "overlay"
	mountKindTmpfs   = "tmpfs"
	mountKindBind    = "bind"
)

// MountKinds returns the values Options.MountAllow accepts.
func MountKinds() []string { return []string{mountKindOverlay, mountKindTmpfs, mountKindBind} }

// parseMountAllow turns Options.MountAllow into a set.
func parseMountAllow(names []string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, n := range names {
		if !slices.Contains(MountKinds(), n) {
			return nil, fmt.Errorf("hostfs: mount allow %q: unknown kind (want %s)", n, strings.Join(MountKinds(), ", "))
		}
		set[n] = true
	}
	return set, nil
}

func sortedKeys(set map[string]bool) []string {
	var out []string
	for k := range set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Bounds of what a MountOnHost request may ask for.
const (
	maxOverlayLowers    = 500  // OVL_MAX_STACK
	maxMountData        = 4095 // mount(2) reads its data from one page
	maxMountOptions     = 1024 // bytes of MountOnHostRequest.options
	maxMountOptionValue = 64
	maxMountSource      = 64
	// maxHostMountRecords bounds the mounts the server remembers having
	// made; past it the records whose mount is gone are dropped, and a
	// bind that could not be recorded is refused.
	maxHostMountRecords = 65536
)

// Flags of mount(2) and umount2(2).
const (
	// msMgcMask and msMgcVal: the legacy magic number in the top 16 bits
	// of mount(2)'s flags, which the kernel strips.
	msMgcMask = 0xffff0000
	msMgcVal  = 0xc0ed0000
	// mountAttrFlags are the per-mount flags a new mount or a remount may
	// set.
	mountAttrFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_SYNCHRONOUS |
		unix.MS_DIRSYNC | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME | unix.MS_STRICTATIME |
		unix.MS_LAZYTIME | unix.MS_SILENT
	propagationFlags = unix.MS_SHARED | unix.MS_PRIVATE | unix.MS_SLAVE | unix.MS_UNBINDABLE
	unmountFlags     = unix.MNT_FORCE | unix.MNT_DETACH | unix.UMOUNT_NOFOLLOW
)

// hostMountOptions are the options a new mount (or a remount of the
// superblock) may carry, by type: true for those that take a value.
var hostMountOptions = map[string]map[string]bool{
	mountKindTmpfs: {"size": true, "nr_blocks": true, "nr_inodes": true, "mode": true, "uid": true, "gid": true,
		"huge": true, "inode32": false, "inode64": false, "noswap": false},
	mountKindOverlay: {"index": true, "userxattr": false, "redirect_dir": true, "metacopy": true, "xino": true,
		"volatile": false, "nfs_export": true, "uuid": true},
}

// hostMountOp is what a MountOnHost or UnmountOnHost request does, in the
// order the kernel's path_mount tells them apart.
type hostMountOp int

const (
	opNewMount    hostMountOp = iota // a new overlay or tmpfs
	opBind                           // MS_BIND
	opRemount                        // MS_REMOUNT: the superblock and the mount's flags
	opRemountBind                    // MS_REMOUNT|MS_BIND: the mount's flags only
	opPropagation                    // MS_SHARED, MS_PRIVATE, MS_SLAVE or MS_UNBINDABLE
	opMove                           // MS_MOVE: refused
	opUnmount                        // UnmountOnHost
)

// String is the op label of qtfs_server_host_mounts_total.
func (o hostMountOp) String() string {
	switch o {
	case opNewMount:
		return "mount"
	case opBind:
		return "bind"
	case opRemount, opRemountBind:
		return "remount"
	case opPropagation:
		return "propagation"
	case opMove:
		return "move"
	default:
		return "unmount"
	}
}

// classifyMount tells what mount(2) does with flags and returns the flags
// without the legacy magic number, and those not allowed for that
// operation (MS_MOVE for a move: never allowed).
func classifyMount(flags uint64) (op hostMountOp, clean, bad uint64) {
	if flags&msMgcMask == msMgcVal {
		flags &^= msMgcMask
	}
	var allowed uint64
	switch {
	case flags&unix.MS_MOVE != 0:
		return opMove, flags, unix.MS_MOVE
	case flags&unix.MS_REMOUNT != 0 && flags&unix.MS_BIND != 0:
		op, allowed = opRemountBind, unix.MS_REMOUNT|unix.MS_BIND|mountAttrFlags
	case flags&unix.MS_REMOUNT != 0:
		op, allowed = opRemount, unix.MS_REMOUNT|mountAttrFlags
	case flags&unix.MS_BIND != 0:
		// The per-mount flags of a new bind are ignored by the kernel
		// (mount(8) passes MS_RDONLY with it, then remounts): dropped.
		flags &^= mountAttrFlags
		op, allowed = opBind, unix.MS_BIND|unix.MS_REC|unix.MS_SILENT
	case flags&propagationFlags != 0:
		if p := flags & propagationFlags; p&(p-1) != 0 { // more than one type
			return opPropagation, flags, p
		}
		op, allowed = opPropagation, propagationFlags|unix.MS_REC|unix.MS_SILENT
	default:
		op, allowed = opNewMount, mountAttrFlags
	}
	return op, flags, flags &^ allowed
}

// flagName names one flag of a flag set.
type flagName struct {
	f uint64
	n string
}

// mountFlagSet and unmountFlagSet name the flags of mount(2) and umount2(2).
var (
	mountFlagSet = []flagName{
		{unix.MS_RDONLY, "MS_RDONLY"}, {unix.MS_NOSUID, "MS_NOSUID"}, {unix.MS_NODEV, "MS_NODEV"},
		{unix.MS_NOEXEC, "MS_NOEXEC"}, {unix.MS_SYNCHRONOUS, "MS_SYNCHRONOUS"}, {unix.MS_REMOUNT, "MS_REMOUNT"},
		{unix.MS_MANDLOCK, "MS_MANDLOCK"}, {unix.MS_DIRSYNC, "MS_DIRSYNC"}, {unix.MS_NOSYMFOLLOW, "MS_NOSYMFOLLOW"},
		{unix.MS_NOATIME, "MS_NOATIME"}, {unix.MS_NODIRATIME, "MS_NODIRATIME"}, {unix.MS_BIND, "MS_BIND"},
		{unix.MS_MOVE, "MS_MOVE"}, {unix.MS_REC, "MS_REC"}, {unix.MS_SILENT, "MS_SILENT"},
		{unix.MS_POSIXACL, "MS_POSIXACL"}, {unix.MS_UNBINDABLE, "MS_UNBINDABLE"}, {unix.MS_PRIVATE, "MS_PRIVATE"},
		{unix.MS_SLAVE, "MS_SLAVE"}, {unix.MS_SHARED, "MS_SHARED"}, {unix.MS_RELATIME, "MS_RELATIME"},
		{unix.MS_KERNMOUNT, "MS_KERNMOUNT"}, {unix.MS_I_VERSION, "MS_I_VERSION"}, {unix.MS_STRICTATIME, "MS_STRICTATIME"},
		{unix.MS_LAZYTIME, "MS_LAZYTIME"},
	}
	unmountFlagSet = []flagName{
		{unix.MNT_FORCE, "MNT_FORCE"}, {unix.MNT_DETACH, "MNT_DETACH"}, {unix.MNT_EXPIRE, "MNT_EXPIRE"},
		{unix.UMOUNT_NOFOLLOW, "UMOUNT_NOFOLLOW"},
	}
)

// mountFlagNames names mount(2)'s flags for a log line.
func mountFlagNames(flags uint64) string { return flagNames(flags, mountFlagSet) }

// unmountFlagNames names umount2(2)'s flags for a log line.
func unmountFlagNames(flags uint32) string { return flagNames(uint64(flags), unmountFlagSet) }

// flagNames names the flags of set in flags, "A|B|0x..." with the bits
// it has no name for; "0" for none.
func flagNames(flags uint64, set []flagName) string {
	var out []string
	for _, n := range set {
		if flags&n.f != 0 {
			out = append(out, n.n)
			flags &^= n.f
		}
	}
	if flags != 0 {
		out = append(out, fmt.Sprintf("%#x", flags))
	}
	if len(out) == 0 {
		return "0"
	}
	return strings.Join(out, "|")
}

// checkMountOptions checks the comma-separated options of a mount of
// fsType against hostMountOptions and returns them joined again without
// empty items, or the first option refused.
func checkMountOptions(fsType, opts string) (data, bad string, ok bool) {
	if len(opts) > maxMountOptions {
		return "", opts[:maxMountOptionValue], false
	}
	allowed := hostMountOptions[fsType]
	var out []string
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		name, value, hasValue := strings.Cut(o, "=")
		valued, known := allowed[name]
		if !known || valued != hasValue || (hasValue && !validMountWord(value, maxMountOptionValue)) {
			return "", shorten(o), false
		}
		out = append(out, o)
	}
	return strings.Join(out, ","), "", true
}

// validMountWord reports whether w is 1 to max bytes of [A-Za-z0-9._%+-]:
// an option's value ("64m", "50%", "1777", "on") or a source name.
func validMountWord(w string, max int) bool {
	if w == "" || len(w) > max {
		return false
	}
	for _, c := range []byte(w) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-', c == '%', c == '+':
		default:
			return false
		}
	}
	return true
}

// validMountSource reports whether a new mount's source is a plain name:
// 1 to maxMountSource bytes of [A-Za-z0-9._-] ("overlay", "tmpfs", "shm").
func validMountSource(s string) bool {
	return validMountWord(s, maxMountSource) && !strings.ContainsAny(s, "%+")
}

// shorten bounds a string from the wire for a log line.
func shorten(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// hostMountRecord is a host mount this server made. Where the kernel has
// no unique mount ids, a record of a mount that is gone matches a new one
// only if it got the same id and lies at the same mount point.
type hostMountRecord struct {
	kind string // mountKindOverlay, mountKindTmpfs or mountKindBind
	host string // its mount point, a host path
}

// hostMountID returns the id of the mount fd lies on: the 64-bit id that
// is never reused (STATX_MNT_ID_UNIQUE, Linux 6.8) where the kernel has
// it, else the one mountinfo shows.
func hostMountID(fd int) (uint64, error) {
	var stx unix.Statx_t
	err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID_UNIQUE|unix.STATX_MNT_ID, &stx)
	if err == nil && stx.Mask&(unix.STATX_MNT_ID_UNIQUE|unix.STATX_MNT_ID) != 0 {
		return stx.Mnt_id, nil
	}
	id, err := mountID(fd)
	return uint64(id), err
}

// hostMountIDAt returns the id of the mount name in dirfd lies on (the
// topmost mount on name, when it is a mount point), never following a
// symlink.
func hostMountIDAt(dirfd int, name string) (uint64, error) {
	var stx unix.Statx_t
	err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID_UNIQUE|unix.STATX_MNT_ID, &stx)
	if err == nil && stx.Mask&(unix.STATX_MNT_ID_UNIQUE|unix.STATX_MNT_ID) != 0 {
		return stx.Mnt_id, nil
	}
	fd, err := openBeneath(dirfd, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return 0, err
	}
	defer closeFd(fd)
	return hostMountID(fd)
}

// hostMountCall is one MountOnHost or UnmountOnHost being served.
type hostMountCall struct {
	s      *Server
	rpc    string
	ss     *session
	m      *mount
	op     hostMountOp
	typ    string // the type label of qtfs_server_host_mounts_total
	target string // the target's host path, once known
}

// onHostMount runs fn for a MountOnHost or UnmountOnHost request on mount
// id, once the server allows host mounts at all and the caller is root,
// with the caller's identity and hostMountMu held, and counts the result.
func (s *Server) onHostMount(ctx context.Context, rpc string, id uint64, caller *qtfsv1.Caller, op hostMountOp, typ string,
	errno *int32, fn func(c *hostMountCall) syscall.Errno) error {
	ss, err := s.session(ctx)
	if err != nil {
		return err
	}
	c := &hostMountCall{s: s, rpc: rpc, ss: ss, op: op, typ: typ}
	var e syscall.Errno
	switch {
	case len(s.mountAllow) == 0:
		e = c.refuse("off", syscall.EPERM, zap.String("fix", "the server's mount_allow names no kind of mount"))
	case caller.GetUid() != 0:
		e = c.refuse("caller_not_root", syscall.EPERM, zap.Uint32("uid", caller.GetUid()))
	default:
		e = s.runHostMount(c, id, caller, fn)
	}
	*errno = int32(e)
	result := "OK"
	if e != 0 {
		result = errnoName(int32(e))
	}
	s.met.hostMount(op.String(), c.typ, result)
	return nil
}

// runHostMount runs fn for c on mount id, as onHostMount says. The
// deferred calls see a panic of fn through (the interceptor recovers it).
func (s *Server) runHostMount(c *hostMountCall, id uint64, caller *qtfsv1.Caller, fn func(c *hostMountCall) syscall.Errno) syscall.Errno {
	m, e := c.ss.mount(id)
	if e != 0 {
		return e
	}
	defer m.put()
	c.m = m
	s.hostMountMu.Lock()
	defer s.hostMountMu.Unlock()
	return s.creds.run(caller, func() syscall.Errno { return fn(c) })
}

// refuse logs (rate-limited per why) and counts a refusal of c.
func (c *hostMountCall) refuse(why string, e syscall.Errno, fields ...zap.Field) syscall.Errno {
	s := c.s
	s.met.refusal("host_mount")
	fields = append(fields, zap.String("op", c.rpc), zap.Stringer("kind", c.op), zap.Uint64("session", c.ss.id),
		zap.String("client", c.ss.client), zap.String("errno", errnoName(int32(e))))
	if c.target != "" {
		fields = append(fields, zap.String("target", c.target))
	}
	s.limitLog.log(s.log, "host_mount: "+why, fields...)
	return e
}

// nameTarget sets c.target for the log lines of refusals that come
// before the target is checked.
func (c *hostMountCall) nameTarget(target []byte) {
	if qfs.ValidPath(target) == 0 {
		c.target = c.hostPath(target)
	}
}

// hostPath is the host path of rel, a checked path beneath c's mount.
func (c *hostMountCall) hostPath(rel []byte) string {
	return path.Join(c.m.ex.path, c.m.rel, string(rel))
}

// exportAtOrBeneath returns an export whose root is the host path p or
// lies beneath it, or "".
func (s *Server) exportAtOrBeneath(p string) string {
	for _, ex := range s.exports {
		if ex.path == p || strings.HasPrefix(ex.path, strings.TrimSuffix(p, "/")+"/") {
			return ex.path
		}
	}
	return ""
}

// openTarget checks a request's target and opens its parent directory
// beneath c's mount. The root of the mount is refused (a mount made on it
// is out of the mount's sight), so is a target that is an export's root
// or holds one (it would hide that export from the host), and any target
// in a read-only export.
func (c *hostMountCall) openTarget(target []byte) (parent, syscall.Errno) {
	s := c.s
	if e := s.checkPath(c.rpc, target); e != 0 {
		return parent{}, e
	}
	c.target = c.hostPath(target)
	if len(target) == 0 {
		return parent{}, c.refuse("mount_root", syscall.EPERM)
	}
	if ex := s.exportAtOrBeneath(c.target); ex != "" {
		return parent{}, c.refuse("export_root", syscall.EPERM, zap.String("export", ex))
	}
	if c.m.readOnly {
		return parent{}, c.refuse("read_only", syscall.EROFS)
	}
	return s.openParent(c.rpc, c.m, target)
}

// openIn opens p's name, rel beneath c's mount, as an O_PATH fd, crossing
// a mount on it: a directory when dir is set (ENOTDIR otherwise). A
// symlink is refused with ELOOP, at the end of the path as on the way.
func (c *hostMountCall) openIn(p parent, rel []byte, dir bool) (int, syscall.Errno) {
	return c.openNode(p.fd, p.name, rel, dir)
}

// openPath opens rel beneath c's mount as openIn does.
func (c *hostMountCall) openPath(rel []byte, dir bool) (int, syscall.Errno) {
	if e := c.s.checkPath(c.rpc, rel); e != 0 {
		return -1, e
	}
	return c.openNode(c.m.fd, string(rel), rel, dir)
}

func (c *hostMountCall) openNode(dirfd int, name string, rel []byte, dir bool) (int, syscall.Errno) {
	// O_PATH|O_DIRECTORY meets a symlink at the end with ELOOP
	// (RESOLVE_NO_SYMLINKS); O_PATH|O_NOFOLLOW opens it, then refused.
	flags := unix.O_PATH | unix.O_NOFOLLOW
	if dir {
		flags = unix.O_PATH | unix.O_DIRECTORY
	}
	fd, err := openBeneath(dirfd, name, flags, 0)
	if err == nil && !dir {
		var st unix.Stat_t
		if err = unix.Fstat(fd, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
			err = unix.ELOOP
		}
		if err != nil {
			closeFd(fd)
		}
	}
	if err != nil {
		return -1, c.s.walkErrno(c.rpc, rel, err)
	}
	return fd, 0
}

// record notes the mount just made on p's name as this server's. A bind
// that cannot be recorded was refused before it was made (roomToRecord).
func (c *hostMountCall) record(p parent, kind string) {
	s := c.s
	id, err := hostMountIDAt(p.fd, p.name)
	if err != nil || !c.roomToRecord() {
		s.log.Warn("hostfs: a host mount made is not recorded: it may not be remounted", zap.String("target", c.target), zap.Error(err))
		return
	}
	s.hostMounts[id] = hostMountRecord{kind: kind, host: c.target}
}

// roomToRecord reports whether one more host mount may be recorded,
// dropping first, when full, the records whose mount is gone.
// hostMountMu is held.
func (c *hostMountCall) roomToRecord() bool {
	s := c.s
	if len(s.hostMounts) < maxHostMountRecords {
		return true
	}
	for id, r := range s.hostMounts {
		// Only looked at, to forget a record: nothing is done there.
		fd, err := unix.Open(r.host, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == nil {
			var now uint64
			now, err = hostMountID(fd)
			closeFd(fd)
			if err == nil && now == id {
				continue
			}
		}
		delete(s.hostMounts, id)
	}
	return len(s.hostMounts) < maxHostMountRecords
}

// MountOnHost carries out a DPU program's mount(2) on the host: a new
// overlay or tmpfs, a bind, a remount or a change of propagation (see the
// policy at the top of this file).
func (s *Server) MountOnHost(ctx context.Context, req *qtfsv1.MountOnHostRequest) (*qtfsv1.ErrnoResponse, error) {
	const rpc = "MountOnHost"
	op, flags, bad := classifyMount(req.GetFlags())
	typ := "other"
	switch {
	case op == opBind:
		typ = mountKindBind
	case op == opNewMount && (req.GetFsType() == mountKindOverlay || req.GetFsType() == mountKindTmpfs):
		typ = req.GetFsType()
	}
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onHostMount(ctx, rpc, req.GetMount(), req.GetCaller(), op, typ, &resp.Errno, func(c *hostMountCall) syscall.Errno {
		c.nameTarget(req.GetTarget())
		if bad != 0 {
			return c.refuse("flags", syscall.EPERM, zap.String("flags", mountFlagNames(flags)), zap.String("not_allowed", mountFlagNames(bad)))
		}
		switch op {
		case opNewMount:
			return c.newMount(req, flags)
		case opBind:
			return c.bind(req, flags)
		default:
			return c.change(req, flags)
		}
	})
	return reply(resp, err)
}

// newMount mounts a new overlay or tmpfs on the target.
func (c *hostMountCall) newMount(req *qtfsv1.MountOnHostRequest, flags uint64) syscall.Errno {
	s := c.s
	fsType := req.GetFsType()
	switch {
	case fsType == "":
		return c.refuse("fs_type", syscall.EINVAL, zap.String("fs_type", ""))
	case fsType != mountKindOverlay && fsType != mountKindTmpfs:
		return c.refuse("fs_type", syscall.EPERM, zap.String("fs_type", shorten(fsType)))
	case !s.mountAllow[fsType]:
		return c.refuse("mount_allow", syscall.EPERM, zap.String("fs_type", fsType))
	}
	opts, bad, ok := checkMountOptions(fsType, req.GetOptions())
	if !ok {
		return c.refuse("option", syscall.EPERM, zap.String("fs_type", fsType), zap.String("option", bad))
	}
	source := req.GetSource()
	if source == "" {
		source = fsType
	}
	if !validMountSource(source) {
		return c.refuse("source", syscall.EPERM, zap.String("source", shorten(source)))
	}
	lowers, upper, work := req.GetLower(), req.GetUpper(), req.GetWork()
	if len(req.GetBind()) > 0 {
		return c.refuse("layers", syscall.EINVAL, zap.String("why", "a bind source in a new mount"))
	}
	if fsType == mountKindTmpfs && (len(lowers) > 0 || len(upper) > 0 || len(work) > 0) {
		return c.refuse("layers", syscall.EINVAL, zap.String("why", "overlay layers in a tmpfs mount"))
	}
	if fsType == mountKindOverlay {
		switch {
		case len(lowers) == 0:
			return c.refuse("layers", syscall.EINVAL, zap.String("why", "an overlay without a lower layer"))
		case len(lowers) > maxOverlayLowers:
			return c.refuse("layers", syscall.EINVAL, zap.Int("lowers", len(lowers)), zap.Int("max", maxOverlayLowers))
		case (len(upper) == 0) != (len(work) == 0):
			return c.refuse("layers", syscall.EINVAL, zap.String("why", "an overlay needs both upper and work, or neither"))
		}
	}
	p, e := c.openTarget(req.GetTarget())
	if e != 0 {
		return e
	}
	defer p.close()
	tfd, e := c.openIn(p, req.GetTarget(), true)
	if e != 0 {
		return e
	}
	defer closeFd(tfd)

	data := opts
	var layerHosts []string
	if fsType == mountKindOverlay {
		// The layers are named by the fds opened here: the kernel follows
		// /proc/self/fd/N to the very directory. mountinfo then shows the
		// layers as given, "lowerdir=/proc/self/fd/12:/proc/self/fd/13,
		// upperdir=/proc/self/fd/14,workdir=/proc/self/fd/15": the names
		// of fds that are closed once mount(2) returned, not host paths.
		var fds []int
		defer func() {
			for _, fd := range fds {
				closeFd(fd)
			}
		}()
		open := func(rel []byte) (string, syscall.Errno) {
			fd, e := c.openPath(rel, true)
			if e != 0 {
				return "", e
			}
			fds = append(fds, fd)
			layerHosts = append(layerHosts, c.hostPath(rel))
			return procFdPath(fd), 0
		}
		var lower []string
		for _, l := range lowers {
			name, e := open(l)
			if e != 0 {
				return e
			}
			lower = append(lower, name)
		}
		layers := "lowerdir=" + strings.Join(lower, ":")
		if len(upper) > 0 {
			u, e := open(upper)
			if e != 0 {
				return e
			}
			w, e := open(work)
			if e != 0 {
				return e
			}
			layers += ",upperdir=" + u + ",workdir=" + w
		}
		data = strings.TrimSuffix(layers+","+opts, ",")
	}
	if len(data) > maxMountData {
		return c.refuse("options", syscall.EINVAL, zap.Int("data_bytes", len(data)), zap.Int("max", maxMountData))
	}
	if err := unix.Mount(source, procFdPath(tfd), fsType, uintptr(flags), data); err != nil {
		return c.failed(err, zap.String("fs_type", fsType), zap.String("flags", mountFlagNames(flags)), zap.String("options", opts),
			zap.Strings("layers", layerHosts))
	}
	c.record(p, fsType)
	s.log.Info("host mount made", zap.Uint64("session", c.ss.id), zap.String("client", c.ss.client),
		zap.String("type", fsType), zap.String("target", c.target), zap.String("flags", mountFlagNames(flags)),
		zap.String("source", source), zap.String("options", opts), zap.Strings("layers", layerHosts))
	return 0
}

// bind binds the request's bind path onto its target.
func (c *hostMountCall) bind(req *qtfsv1.MountOnHostRequest, flags uint64) syscall.Errno {
	s := c.s
	if !s.mountAllow[mountKindBind] {
		return c.refuse("mount_allow", syscall.EPERM, zap.String("fs_type", mountKindBind))
	}
	src := req.GetBind()
	p, e := c.openTarget(req.GetTarget())
	if e != 0 {
		return e
	}
	defer p.close()
	sfd, e := c.openPath(src, false)
	if e != 0 {
		return e
	}
	defer closeFd(sfd)
	tfd, e := c.openIn(p, req.GetTarget(), false)
	if e != 0 {
		return e
	}
	defer closeFd(tfd)
	var sst, tst unix.Stat_t
	if err := unix.Fstat(sfd, &sst); err != nil {
		return s.errnoOf(c.rpc, err)
	}
	if err := unix.Fstat(tfd, &tst); err != nil {
		return s.errnoOf(c.rpc, err)
	}
	if (sst.Mode&unix.S_IFMT == unix.S_IFDIR) != (tst.Mode&unix.S_IFMT == unix.S_IFDIR) {
		// A directory onto a non-directory or the other way round: the
		// kernel says ENOTDIR for both.
		return syscall.ENOTDIR
	}
	if !c.roomToRecord() {
		return c.refuse("records", syscall.ENOSPC, zap.Int("max", maxHostMountRecords))
	}
	if err := unix.Mount(procFdPath(sfd), procFdPath(tfd), "", uintptr(flags), ""); err != nil {
		return c.failed(err, zap.String("bind", c.hostPath(src)), zap.String("flags", mountFlagNames(flags)))
	}
	c.record(p, mountKindBind)
	s.log.Info("host mount made", zap.Uint64("session", c.ss.id), zap.String("client", c.ss.client),
		zap.String("type", mountKindBind), zap.String("target", c.target), zap.String("flags", mountFlagNames(flags)),
		zap.String("bind", c.hostPath(src)))
	return 0
}

// failed converts the error of a mount(2) or umount2(2) the policy
// allowed, with a warning: the DPU's program gets the kernel's errno.
func (c *hostMountCall) failed(err error, fields ...zap.Field) syscall.Errno {
	e := c.s.errnoOf(c.rpc, err)
	c.s.log.Warn("host mount failed", append(fields, zap.Stringer("kind", c.op), zap.Uint64("session", c.ss.id),
		zap.String("client", c.ss.client), zap.String("target", c.target), zap.String("errno", errnoName(int32(e))))...)
	return e
}

// dpuMount is an existing host mount a request changes.
type dpuMount struct {
	p    parent // the mount point's directory
	fd   int    // O_PATH, the mount's root
	id   uint64 // hostMountID
	kind string // mountKindOverlay, mountKindTmpfs or mountKindBind
	// recorded: this server made it (hostMounts).
	recorded bool
}

func (d *dpuMount) close() {
	closeFd(d.fd)
	d.p.close()
}

// openDPUMount opens the mount on target for a remount, a change of
// propagation or an unmount. Target must be the root of a host mount
// (EINVAL otherwise, as umount2 says), not the mount of an export's root,
// and either an overlay or a tmpfs of an allowed type, or a mount this
// server recorded. superblock asks for a mount this server made as a new
// overlay or tmpfs.
func (c *hostMountCall) openDPUMount(target []byte, superblock bool) (*dpuMount, syscall.Errno) {
	s := c.s
	p, e := c.openTarget(target)
	if e != 0 {
		return nil, e
	}
	d := &dpuMount{p: p, fd: -1}
	fail := func(e syscall.Errno) (*dpuMount, syscall.Errno) {
		d.close()
		return nil, e
	}
	if d.fd, e = c.openIn(p, target, false); e != 0 {
		return fail(e)
	}
	id, err := hostMountID(d.fd)
	if err != nil {
		return fail(s.errnoOf(c.rpc, err))
	}
	parentID, err := hostMountID(p.fd)
	if err != nil {
		return fail(s.errnoOf(c.rpc, err))
	}
	if id == parentID {
		// Walks cross mounts: the target lies on its directory's mount
		// unless it is the root of a mount of its own.
		s.log.Debug("not a mount point", zap.String("op", c.rpc), zap.String("target", c.target))
		return fail(syscall.EINVAL)
	}
	d.id = id
	for _, ex := range s.exports {
		if ex.mnt == id {
			return fail(c.refuse("export_mount", syscall.EPERM, zap.String("export", ex.path)))
		}
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(d.fd, &st); err != nil {
		return fail(s.errnoOf(c.rpc, err))
	}
	var fsType string
	switch uint64(st.Type) {
	case unix.OVERLAYFS_SUPER_MAGIC:
		fsType = mountKindOverlay
	case unix.TMPFS_MAGIC:
		fsType = mountKindTmpfs
	}
	rec, ok := s.hostMounts[id]
	d.recorded = ok && rec.host == c.target
	switch {
	case d.recorded && s.mountAllow[rec.kind]:
		d.kind = rec.kind
	case fsType != "" && s.mountAllow[fsType]:
		d.kind = fsType
	default:
		return fail(c.refuse("not_dpu_mount", syscall.EPERM, zap.String("fs_magic", fmt.Sprintf("%#x", uint64(st.Type))),
			zap.String("fix", "only overlay and tmpfs mounts, and binds this server made, are changed")))
	}
	c.typ = d.kind
	if superblock && (!d.recorded || d.kind == mountKindBind) {
		return fail(c.refuse("superblock", syscall.EPERM, zap.String("type", d.kind), zap.Bool("made_here", d.recorded),
			zap.String("fix", "a remount without MS_BIND changes the filesystem of every mount of it: only one this server made")))
	}
	return d, 0
}

// change remounts the target or changes its propagation.
func (c *hostMountCall) change(req *qtfsv1.MountOnHostRequest, flags uint64) syscall.Errno {
	s := c.s
	d, e := c.openDPUMount(req.GetTarget(), c.op == opRemount)
	if e != 0 {
		return e
	}
	defer d.close()
	var data string
	if c.op == opRemount {
		var bad string
		var ok bool
		if data, bad, ok = checkMountOptions(d.kind, req.GetOptions()); !ok {
			return c.refuse("option", syscall.EPERM, zap.String("fs_type", d.kind), zap.String("option", bad))
		}
	}
	// The data of a bind remount or a change of propagation is not read
	// by the kernel: none is passed.
	if err := unix.Mount("", procFdPath(d.fd), "", uintptr(flags), data); err != nil {
		return c.failed(err, zap.String("flags", mountFlagNames(flags)), zap.String("options", data))
	}
	s.log.Info("host mount changed", zap.Uint64("session", c.ss.id), zap.String("client", c.ss.client),
		zap.Stringer("kind", c.op), zap.String("type", d.kind), zap.String("target", c.target),
		zap.String("flags", mountFlagNames(flags)), zap.String("options", data))
	return 0
}

// UnmountOnHost carries out a DPU program's umount2(2) on the host, of a
// mount MountOnHost may change (see openDPUMount). UMOUNT_NOFOLLOW is
// what the server does anyway: it never follows a symlink.
func (s *Server) UnmountOnHost(ctx context.Context, req *qtfsv1.UnmountOnHostRequest) (*qtfsv1.ErrnoResponse, error) {
	const rpc = "UnmountOnHost"
	flags := req.GetFlags()
	resp := &qtfsv1.ErrnoResponse{}
	err := s.onHostMount(ctx, rpc, req.GetMount(), req.GetCaller(), opUnmount, "other", &resp.Errno, func(c *hostMountCall) syscall.Errno {
		c.nameTarget(req.GetTarget())
		if flags&^unmountFlags != 0 {
			return c.refuse("flags", syscall.EPERM, zap.String("flags", unmountFlagNames(flags)),
				zap.String("not_allowed", unmountFlagNames(flags&^unmountFlags)))
		}
		d, e := c.openDPUMount(req.GetTarget(), false)
		if e != 0 {
			return e
		}
		defer d.p.close()
		// An fd on the mount's root holds the mount: umount2 without
		// MNT_DETACH would say EBUSY. umount2 names the mount point by the
		// fd of its directory and its name instead (the kernel follows the
		// magic link in the middle of the path, and UMOUNT_NOFOLLOW keeps
		// it from following a symlink put at the end), which reach the
		// topmost mount there: the one checked, as the second look says
		// (the server's own changes wait for hostMountMu).
		closeFd(d.fd)
		d.fd = -1
		if id, err := hostMountIDAt(d.p.fd, d.p.name); err != nil || id != d.id {
			c.s.log.Warn("hostfs: the host changed a mount while it was being unmounted", zap.String("target", c.target), zap.Error(err))
			return syscall.EBUSY
		}
		if err := unix.Unmount(procFdPath(d.p.fd)+"/"+d.p.name, int(flags)|unix.UMOUNT_NOFOLLOW); err != nil {
			return c.failed(err, zap.String("flags", unmountFlagNames(flags)))
		}
		delete(s.hostMounts, d.id)
		s.log.Info("host mount unmounted", zap.Uint64("session", c.ss.id), zap.String("client", c.ss.client),
			zap.String("type", d.kind), zap.String("target", c.target), zap.String("flags", unmountFlagNames(flags)))
		return 0
	})
	return reply(resp, err)
}
