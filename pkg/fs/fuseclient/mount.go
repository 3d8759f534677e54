package fuseclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// DefaultOpTimeout is the deadline of each RPC when MountOptions.OpTimeout
// is zero.
const DefaultOpTimeout = 60 * time.Second

// readInlineSize is how much of a file a direct-I/O open asks to be read
// in the Open RPC itself (most /proc and /sys files fit).
const readInlineSize = 64 << 10

// maxBackground is how many asynchronous requests (readahead, direct I/O)
// the kernel keeps in flight.
const maxBackground = 64

// MountOptions configure one mount.
type MountOptions struct {
	// RemotePath is the absolute host path to mount: an export or a
	// directory beneath one.
	RemotePath string
	// Cache is the cache policy; CacheDefault picks one from the kind of
	// filesystem RemotePath lies on.
	Cache CachePolicy
	// ReadOnly mounts read-only (MS_RDONLY). A read-only export is
	// mounted read-only whatever this says.
	ReadOnly bool
	// AllowOther lets users other than the mounting one use the mount.
	AllowOther bool
	// Debug logs every FUSE request and reply (go-fuse debug output).
	Debug bool
	// FsName is the source shown in /proc/mounts ("qtfs:host:/srv");
	// "qtfs:"+RemotePath when empty.
	FsName string
	// Logger receives the mount's logs; the session's when nil.
	Logger *zap.Logger
	// OpTimeout is the deadline of each RPC; DefaultOpTimeout when zero.
	OpTimeout time.Duration
	// LocalProc is where the DPU's own proc is mounted, as the processes
	// using the mount see it; DefaultLocalProc when empty. On a mount of
	// the host's proc root, /proc/self and /proc/thread-self of a caller
	// outside the offload chroot are links into it, and so are the
	// entries of the directories of processes inside.
	LocalProc string
	// OffloadRoot is the root directory of the offload chroot on the DPU;
	// empty turns the rule off. On a mount of the host's proc root,
	// /proc/<pid> of a DPU process whose root is OffloadRoot is the
	// client's directory of that process (its entries lead into
	// LocalProc/<pid>, its mountinfo shows the host's mounts) instead of
	// the host's process of that number, and /proc/self of such a process
	// is "<pid>".
	OffloadRoot string
	// Create has the server make the directories of RemotePath that are
	// missing beneath its export (MountRequest.create) before it mounts
	// it; what the server made is logged.
	Create bool

	// timing is how long the mount keeps what it learnt of a special
	// filesystem; tests change it. nil means defaultCacheTiming.
	timing *cacheTiming
}

// DefaultLocalProc is MountOptions.LocalProc when it is empty: where the
// offload chroot mounts the DPU's own proc.
const DefaultLocalProc = "/local_proc"

// mountFS is the state one mount's nodes share.
type mountFS struct {
	sess    *session.Session
	log     *zap.Logger
	id      uint64
	remote  string
	kind    qtfsv1.FsKind
	policy  CachePolicy
	cache   cacheParams
	timeout time.Duration
	rootDev uint64
	inos    *inoMap
	groups  *groupsCache
	root    *node
	// directIO opens every file with FOPEN_DIRECT_IO (policy none, or a
	// proc, sysfs or cgroup filesystem whatever the policy).
	directIO bool
	// readInline is how many bytes a read-only open asks the Open RPC to
	// read (proc, sysfs and cgroup files only).
	readInline uint32
	// special is true on proc, sysfs and cgroup mounts.
	special bool
	// specialTTL is how long the kernel keeps the entries and attributes
	// of a special mount under the default policy (content is never kept:
	// direct I/O); 0 under an explicit policy.
	specialTTL time.Duration
	// listings bounds the memory of the directory listings (cache.go).
	listings listings
	// proc holds what a mount of the host's proc root answers itself
	// (nil on every other mount).
	proc *procRoot
	// mountpoint is where the mount was made, in this process's view.
	mountpoint string
	// dev is the device of the mount's FUSE connection (0 when unknown),
	// under which the process's mount table (served) finds it.
	dev uint64
	// hostMounts keeps the host's mounts at and beneath the root, for
	// the mountinfo view (mountview.go).
	hostMounts hostMountsCache
}

// Mount mounts opts.RemotePath of sess's server on mountpoint and serves
// it until it is unmounted (fuse.Server.Unmount, or umount(8)). It
// returns once the mount answers. As root it mounts directly; otherwise
// through fusermount3.
func Mount(ctx context.Context, sess *session.Session, mountpoint string, opts MountOptions) (*fuse.Server, error) {
	if sess == nil {
		return nil, errors.New("mount: no session")
	}
	if !path.IsAbs(opts.RemotePath) {
		return nil, fmt.Errorf("mount %q: remote path must be absolute", opts.RemotePath)
	}
	remote := path.Clean(opts.RemotePath)
	localProc, offloadRoot, err := procOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", remote, err)
	}
	log := opts.Logger
	if log == nil {
		log = sess.Logger()
	}
	log = log.With(zap.String("remote", remote), zap.String("mountpoint", mountpoint))
	timeout := opts.OpTimeout
	if timeout <= 0 {
		timeout = DefaultOpTimeout
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}

	resp, e := session.Call(ctx, sess, "Mount", qtfsv1.FileSystemClient.Mount, &qtfsv1.MountRequest{
		Path:   []byte(remote),
		Caller: &qtfsv1.Caller{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid()), Pid: uint32(os.Getpid())},
		Create: opts.Create,
	}, session.CallOptions{})
	if created := resp.GetCreated(); len(created) > 0 {
		names := make([]string, len(created))
		for i, c := range created {
			names[i] = string(c)
		}
		log.Info("the server created the mount's host directories", zap.Strings("created", names))
	}
	if e != 0 {
		return nil, fmt.Errorf("mount %s: %w", remote, e)
	}
	rootAttr := resp.GetRoot()
	if rootAttr == nil || rootAttr.GetMode()&syscall.S_IFMT != syscall.S_IFDIR {
		return nil, fmt.Errorf("mount %s: %w", remote, syscall.ENOTDIR)
	}

	policy := opts.Cache.resolve(resp.GetFsKind())
	m := &mountFS{
		mountpoint: filepath.Clean(mountpoint),
		sess:       sess,
		log:        log,
		id:         resp.GetMount(),
		remote:     remote,
		kind:       resp.GetFsKind(),
		policy:     policy,
		cache:      policy.params(),
		timeout:    timeout,
		rootDev:    rootAttr.GetDev(),
		inos:       newInoMap(rootAttr.GetDev()),
		groups:     newGroupsCache("/proc"),
		directIO:   policy == CacheNone || qfs.SpecialKind(resp.GetFsKind()),
		special:    qfs.SpecialKind(resp.GetFsKind()),
	}
	ct := defaultCacheTiming
	if opts.timing != nil {
		ct = *opts.timing
	}
	m.hostMounts.ttl = ct.hostMounts
	if m.special && opts.Cache == CacheDefault {
		m.specialTTL = ct.special
	}
	if isProcRoot(m.kind, rootAttr) {
		m.proc = newProcRoot(m, localProc, offloadRoot)
	}
	// Reading in the open call changes atime: only where that means nothing.
	if qfs.SpecialKind(m.kind) && sess.HasFeature(qtfsv1.Feature_FEATURE_OPEN_READ_INLINE) {
		m.readInline = uint32(min(readInlineSize, sess.Chunk()))
	}
	m.root = &node{m: m}
	readOnly := opts.ReadOnly || resp.GetReadOnly()

	fsName := opts.FsName
	if fsName == "" {
		fsName = "qtfs:" + remote
	}
	// fusermount splits its options at commas.
	fsName = strings.ReplaceAll(fsName, ",", "_")

	mountOpts := []string{"default_permissions"}
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	if readOnly {
		mountOpts = append(mountOpts, "ro")
		flags |= syscall.MS_RDONLY
	}
	// go-fuse's own output: the request trace when Debug is asked for
	// (shown at info, since it was asked for), otherwise details.
	fuseLevel := zap.DebugLevel
	if opts.Debug {
		fuseLevel = zap.InfoLevel
	}
	stdLog, err := zap.NewStdLogAt(log.Named("fuse"), fuseLevel)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", remote, err)
	}
	diagLog, err := zap.NewStdLogAt(log.Named("fuse"), zap.WarnLevel)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", remote, err)
	}
	rootIno := m.inos.ino(rootAttr.GetDev(), rootAttr.GetIno())
	// With direct I/O each write(2) reaches the client as one FUSE WRITE
	// of at most max_write bytes; a max_write the session can carry in one
	// RPC makes it one host write(2).
	maxWrite := session.MaxChunk
	if m.directIO {
		maxWrite = min(session.MaxChunk, sess.Chunk())
	}
	fsOpts := &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:    opts.AllowOther,
			Options:       mountOpts,
			MaxBackground: maxBackground,
			MaxWrite:      maxWrite,
			MaxReadAhead:  session.MaxChunk,
			FsName:        fsName,
			Name:          fsSubtype,
			Debug:         opts.Debug,
			Logger:        stdLog,
			EnableLocks:   sess.HasFeature(qtfsv1.Feature_FEATURE_LOCKS),
			// A symlink's target never changes (a new target is a new
			// inode): the kernel may keep it, where it keeps pages.
			EnableSymlinkCaching: !m.directIO,
			// Reads answer with bytes, never with a file descriptor to
			// splice from: go-fuse would try a pipe first on every READ.
			DisableSplice:    true,
			DirectMount:      os.Geteuid() == 0,
			DirectMountFlags: flags,
			PanicHandler: func(r any) fuse.Status {
				log.Error("qtfs-client: FUSE handler panic", zap.Any("panic", r), zap.StackSkip("stack", 1))
				return fuse.EIO
			},
			// No FUSE_HANDLE_KILLPRIV(_V2): the server writes through
			// handles with its own identity, so the host would not
			// clear set-id bits on a write; the kernel here does.
		},
		EntryTimeout:    &m.cache.entry,
		AttrTimeout:     &m.cache.attr,
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: rootIno},
		Logger:          diagLog,
	}
	if m.cache.negative > 0 {
		fsOpts.NegativeTimeout = &m.cache.negative
	}
	server, err := fs.Mount(mountpoint, m.root, fsOpts)
	if err != nil {
		return nil, fmt.Errorf("mount %s on %s: %w", remote, mountpoint, err)
	}
	sess.Mounted(m.id)
	if m.dev, err = mountDev(mountpoint); err == nil {
		served.add(m.dev, m)
	} else {
		log.Warn("qtfs mount: its device is unknown: mountinfo views show it as a FUSE mount", zap.Error(err))
	}
	go func() {
		server.Wait()
		if m.dev != 0 {
			served.remove(m.dev, m)
		}
		sess.Unmounted(m.id)
		log.Info("qtfs unmounted")
	}()
	if !m.directIO {
		m.raiseReadahead(mountpoint)
	}
	log.Info("qtfs mounted", zap.Uint64("mount", m.id), zap.Stringer("cache", policy),
		zap.Stringer("fs_kind", m.kind), zap.Bool("read_only", readOnly), zap.Bool("proc_root", m.proc != nil))
	return server, nil
}

// raiseReadahead lets the kernel read ahead up to max_write on this
// mount (its default is 128 KiB), through the mount's backing device. The
// device number comes from /proc/self/mountinfo: this process serves the
// mount and does not touch it. It is an optimisation: a failure is logged
// at debug and ignored.
func (m *mountFS) raiseReadahead(mountpoint string) {
	dev, err := mountDevice(mountpoint)
	if err != nil {
		m.log.Debug("readahead: find the mount's device", zap.Error(err))
		return
	}
	p := "/sys/class/bdi/" + dev + "/read_ahead_kb"
	if err := os.WriteFile(p, []byte(strconv.Itoa(session.MaxChunk>>10)), 0); err != nil {
		m.log.Debug("readahead: raise", zap.String("file", p), zap.Error(err))
	}
}

// mountDevice returns the "major:minor" of the last mount on mountpoint.
func mountDevice(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	dev := ""
	for _, mi := range mountinfo.Parse(data) {
		if mi.MountPoint == abs {
			dev = strconv.FormatUint(uint64(mi.Major), 10) + ":" + strconv.FormatUint(uint64(mi.Minor), 10)
		}
	}
	if dev == "" {
		return "", fmt.Errorf("no mount on %s", abs)
	}
	return dev, nil
}
