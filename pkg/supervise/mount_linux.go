package supervise

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
)

// MountCall is a mount(2) of a supervised program, with every path it
// names opened (O_PATH) as the caller would have resolved it: in its
// root, from its working directory, following symlinks.
type MountCall struct {
	// Target is where the mount goes.
	Target *os.File
	// FsType is mount(2)'s filesystemtype ("" for a bind, a remount or a
	// change of propagation).
	FsType string
	// Flags are mount(2)'s mountflags, without the legacy MS_MGC_VAL.
	Flags uint64
	// Source is the source of a new mount that is no bind ("overlay",
	// "tmpfs"): a name, not a path.
	Source string
	// Bind is the source of an MS_BIND mount.
	Bind *os.File
	// Lower, Upper and Work are an overlay's layers, taken out of the
	// data (Upper and Work are nil for a read-only overlay).
	Lower       []*os.File
	Upper, Work *os.File
	// Options is the data without an overlay's layers ("size=64m",
	// "index=off").
	Options string
	// UID and GID are the caller's effective ids.
	UID, GID uint32
}

// UnmountCall is an umount2(2) of a supervised program.
type UnmountCall struct {
	Target   *os.File
	Flags    int
	UID, GID uint32
}

// Mounter carries out mounts of supervised programs elsewhere: pkg/client
// gives one that makes them on the host (fuseclient.HostMounter).
type Mounter interface {
	// Serves reports whether a mount on target is the Mounter's to make;
	// a call whose target it does not serve runs as it is.
	Serves(target *os.File) bool
	// Mount and Unmount carry out a call; a syscall.Errno is the
	// caller's answer, any other error answers EIO.
	Mount(c *MountCall) error
	Unmount(c *UnmountCall) error
	// MountRoot says whether f is the root of a mount where the
	// Mounter makes them (the host): the answer to a mount-point probe
	// (statx's STATX_ATTR_MOUNT_ROOT). ok false lets the kernel answer.
	MountRoot(f *os.File) (root, ok bool)
}

// Overlay's layer options in mount(2)'s data.
const (
	optLower = "lowerdir"
	optUpper = "upperdir"
	optWork  = "workdir"
)

// mount answers mount(2) and umount2(2); false lets the call run as it
// is: no Mounter, a caller in another mount namespace (dockerd's
// chrootarchive children unshare theirs and mount privately), a caller
// without CAP_SYS_ADMIN (the kernel refuses it), a target the caller
// cannot resolve (the kernel gives the error), or one the Mounter does
// not serve (a mount of the DPU's own).
func (s *Supervisor) mount(n *notif, resp *notifResp) bool {
	if s.opts.Mounter == nil {
		return false
	}
	tid := int(n.Pid)
	if !s.inOwnMountNS(tid) {
		return false
	}
	c := callerCreds(tid)
	if !c.has(unix.CAP_SYS_ADMIN) {
		return false
	}
	if r, ok := s.restarts.take(n); ok {
		resp.Error = r
		return true
	}
	targetArg := n.Data.Args[1]
	if n.Data.Nr == unix.SYS_UMOUNT2 {
		targetArg = n.Data.Args[0]
	}
	target, p, err := openArg(tid, targetArg)
	if err != nil {
		return false
	}
	defer target.Close()
	if !s.opts.Mounter.Serves(target) {
		return false
	}
	var files []*os.File // closed when the answer is sent
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	var do func() error
	var what []zap.Field
	if n.Data.Nr == unix.SYS_UMOUNT2 {
		u := &UnmountCall{Target: target, Flags: int(n.Data.Args[1]), UID: c.uid, GID: c.gid}
		do = func() error { return s.opts.Mounter.Unmount(u) }
		what = []zap.Field{zap.String("call", "umount2"), zap.String("target", p), zap.Int("flags", u.Flags)}
	} else {
		m, opened, e := decodeMount(tid, n, target)
		files = opened
		if e != 0 {
			resp.Error = -int32(e)
			return idValid(s.fd, n.ID)
		}
		m.UID, m.GID = c.uid, c.gid
		do = func() error { return s.opts.Mounter.Mount(m) }
		what = []zap.Field{zap.String("call", "mount"), zap.String("target", p), zap.String("type", m.FsType),
			zap.String("flags", "0x"+strconv.FormatUint(m.Flags, 16)), zap.String("options", m.Options)}
	}
	// What was read and opened is the caller's only if its call still
	// waits.
	if !idValid(s.fd, n.ID) {
		return false
	}
	err = do()
	s.mounts.Add(1)
	if err != nil {
		e, ok := err.(unix.Errno)
		if !ok {
			e = unix.EIO
		}
		resp.Error = -int32(e)
		s.log.Info("supervise: mount call carried out elsewhere, refused", append(what, zap.Error(err))...)
		return true
	}
	s.log.Info("supervise: mount call carried out elsewhere", what...)
	return true
}

// decodeMount reads the arguments of mount(2) and opens the paths they
// name. On an error it returns the errno the caller gets, and the files
// opened so far.
func decodeMount(tid int, n *notif, target *os.File) (*MountCall, []*os.File, unix.Errno) {
	c := &MountCall{Target: target, Flags: n.Data.Args[3]}
	if c.Flags&unix.MS_MGC_MSK == unix.MS_MGC_VAL {
		c.Flags &^= unix.MS_MGC_MSK
	}
	str := func(addr uint64) (string, unix.Errno) {
		if addr == 0 {
			return "", 0
		}
		v, err := readString(tid, addr)
		if err != nil {
			return "", unix.EFAULT
		}
		return v, 0
	}
	var opened []*os.File
	open := func(p string) (*os.File, unix.Errno) {
		f, err := openInCaller(tid, p)
		if err != nil {
			e, _ := qfs.ToErrno(err)
			return nil, e
		}
		opened = append(opened, f)
		return f, 0
	}
	source, e := str(n.Data.Args[0])
	if e != 0 {
		return nil, opened, e
	}
	if c.FsType, e = str(n.Data.Args[2]); e != 0 {
		return nil, opened, e
	}
	data, e := str(n.Data.Args[4])
	if e != 0 {
		return nil, opened, e
	}
	const propagation = unix.MS_SHARED | unix.MS_PRIVATE | unix.MS_SLAVE | unix.MS_UNBINDABLE
	switch {
	case c.Flags&(unix.MS_REMOUNT|propagation) != 0:
		// Neither a source nor a type: the target's own mount changes.
		c.FsType = ""
		c.Options = data
	case c.Flags&unix.MS_BIND != 0:
		c.FsType = ""
		if c.Bind, e = open(source); e != 0 {
			return nil, opened, e
		}
	case c.FsType == "overlay":
		c.Source = source
		opts, layers, err := overlayLayers(data)
		if err != nil {
			return nil, opened, unix.EINVAL
		}
		c.Options = opts
		for _, l := range layers[optLower] {
			f, e := open(l)
			if e != 0 {
				return nil, opened, e
			}
			c.Lower = append(c.Lower, f)
		}
		if len(layers[optUpper]) > 0 {
			if c.Upper, e = open(layers[optUpper][0]); e != 0 {
				return nil, opened, e
			}
		}
		if len(layers[optWork]) > 0 {
			if c.Work, e = open(layers[optWork][0]); e != 0 {
				return nil, opened, e
			}
		}
	default:
		c.Source = source
		c.Options = data
	}
	return c, opened, 0
}

// overlayLayers takes lowerdir, upperdir and workdir out of an overlay's
// mount data, as the kernel parses it: options are separated by commas, a
// lowerdir's layers by colons, and a backslash escapes either. It returns
// the other options, still escaped, and the layers' paths, unescaped.
func overlayLayers(data string) (string, map[string][]string, error) {
	layers := map[string][]string{}
	var rest []string
	for _, opt := range splitEscaped(data, ',') {
		key, val, _ := strings.Cut(opt, "=")
		switch key {
		case optLower:
			for _, l := range splitEscaped(val, ':') {
				if l == "" {
					return "", nil, errors.New("an empty lower layer")
				}
				layers[optLower] = append(layers[optLower], unescape(l))
			}
		case optUpper, optWork:
			if val == "" || len(layers[key]) > 0 {
				return "", nil, errors.New(key + " empty or given twice")
			}
			layers[key] = []string{unescape(val)}
		case "":
		default:
			rest = append(rest, opt)
		}
	}
	if len(layers[optLower]) == 0 {
		return "", nil, errors.New("no lowerdir")
	}
	return strings.Join(rest, ","), layers, nil
}

// splitEscaped splits s at each sep that no backslash escapes; the parts
// keep their escapes.
func splitEscaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescape drops the backslashes that escape the next byte.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// inOwnMountNS reports whether thread tid is in the supervisor's mount
// namespace.
func (s *Supervisor) inOwnMountNS(tid int) bool {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(tid)+"/ns/mnt", &st); err != nil {
		return false
	}
	return st.Dev == s.mountNS.Dev && st.Ino == s.mountNS.Ino
}

// restartWindow is how long the answer of a carried-out call whose
// caller did not take it waits for the call to come again.
const restartWindow = 30 * time.Second

// restarts keeps the answers of carried-out calls that did not reach
// their caller: a signal interrupted the call after the Mounter had made
// the mount, and the kernel restarts it. The restarted call (same thread,
// same arguments) gets the kept answer instead of a second mount.
type restarts struct {
	mu   sync.Mutex
	kept map[restartKey]keptAnswer
}

type restartKey struct {
	tid  uint32
	nr   int32
	args [6]uint64
}

type keptAnswer struct {
	errno int32
	at    time.Time
}

func keyOf(n *notif) restartKey {
	return restartKey{tid: n.Pid, nr: n.Data.Nr, args: n.Data.Args}
}

// keep records the answer of n, which its caller did not take.
func (r *restarts) keep(n *notif, errno int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	for k, a := range r.kept {
		if now.Sub(a.at) > restartWindow {
			delete(r.kept, k)
		}
	}
	if r.kept == nil {
		r.kept = map[restartKey]keptAnswer{}
	}
	r.kept[keyOf(n)] = keptAnswer{errno: errno, at: now}
}

// take returns and forgets the kept answer of a call like n.
func (r *restarts) take(n *notif) (int32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := keyOf(n)
	a, ok := r.kept[k]
	if !ok {
		return 0, false
	}
	delete(r.kept, k)
	return a.errno, time.Since(a.at) <= restartWindow
}

// statx answers the mount-point probe, statx(AT_FDCWD, path,
// AT_STATX_DONT_SYNC, 0, buf) (the filter notifies no other statx): the
// kernel's statx of the file, with STATX_ATTR_MOUNT_ROOT as the Mounter
// says for a file it serves (a tmpfs kubelet mounted on the host is a
// mount root there, not in the DPU's mount table). false lets the call
// run as it is.
func (s *Supervisor) statx(n *notif, resp *notifResp) bool {
	if s.opts.Mounter == nil {
		return false
	}
	tid := int(n.Pid)
	f, _, err := openArg(tid, n.Data.Args[1])
	if err != nil {
		return false
	}
	defer f.Close()
	root, ok := s.opts.Mounter.MountRoot(f)
	if !ok {
		return false
	}
	var stx unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, 0, &stx); err != nil {
		return false
	}
	stx.Attributes_mask |= unix.STATX_ATTR_MOUNT_ROOT
	if root {
		stx.Attributes |= unix.STATX_ATTR_MOUNT_ROOT
	} else {
		stx.Attributes &^= unix.STATX_ATTR_MOUNT_ROOT
	}
	if !idValid(s.fd, n.ID) {
		return false
	}
	if err := writeBytes(tid, n.Data.Args[4], unsafe.Slice((*byte)(unsafe.Pointer(&stx)), unsafe.Sizeof(stx))); err != nil {
		resp.Error = -int32(unix.EFAULT)
	}
	return true
}
