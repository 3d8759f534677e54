package fuseclient

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// A mount of the host's proc root answers a few names itself, because on
// the host they depend on who reads them and the reader runs on the DPU:
//
//	self          -> <tgid of the caller>, or <LocalProc>/<tgid>
//	thread-self   -> <tgid>/task/<tid of the caller>, or <LocalProc>/<tgid>/task/<tid>
//	<pid>         a directory of the mount, for a DPU process whose root
//	              is OffloadRoot (the rule is off when OffloadRoot is "")
//
// self and thread-self are relative links, as the kernel's are, when the
// caller is such a process (readlink then gives its pid, which programs
// parse), and lead into the DPU's own proc otherwise. The directory of
// such a process holds:
//
//	mountinfo, mounts   the process's mount table as the client shows it
//	                    (mountview.go), made when opened, read directly
//	exe, cwd            the process's own view: the DPU's link read here,
//	                    OffloadRoot taken off (os.Executable, a re-exec of
//	                    /proc/self/exe and readlink(1) keep working); the
//	                    DPU's link itself when it leads out of the chroot
//	root                "/"
//	every other name    -> <LocalProc>/<pid>/<name>: the DPU kernel's own
//	                    file, directory or magic link (fd/N, ns/net,
//	                    oom_score_adj, which is written through it)
//
// Links rather than copies: the DPU kernel then resolves fd/N, ns/*,
// task/* and every file of the process itself, with its own permission
// checks and semantics (the dev and ino of a reopened /proc/self/fd/N are
// the file's, as containerd's fifo package checks), and the client stays
// out of their reads and writes. Only what must differ is the client's.
// The directory's entries never change for the life of its process; the
// kernel keeps them long. Whether the directory itself is still the
// process's is asked on each walk (no entry timeout) and on each stat
// (ESTALE once the process left the chroot or ended).
//
// FUSE names the caller by its thread id in the pid namespace of the
// mount's FUSE connection, which is this process's: its thread group is
// read from this process's /proc. The host's symlinks of the proc root
// that point into "self" (mounts, net) are rewritten to point into "1":
// the host's init process stands for the reader the host would have seen.
// Every other name is the host's, asked for afresh each time (the mount
// caches nothing), so processes appear and vanish with the host's.

// procRootIno is the inode number of every proc filesystem's root
// (PROC_ROOT_INO).
const procRootIno = 1

// localDev is the device number of the entries the client makes itself;
// the inode table gives it a prefix of its own, so their numbers never
// meet the host's.
const localDev = math.MaxUint64

// selfEntryTimeout is how long the kernel may keep the entries of self
// and thread-self, and those of the directory of an offloaded process:
// they are entries of this mount whoever asks, only the target of a link
// depends on the caller (and the kernel asks for it on each use).
const selfEntryTimeout = time.Hour

// localCookieBase is the first directory cookie of the offloaded pids a
// proc root listing hands out after the host's entries; the host's proc
// root cookies stay far below it (pid_max + a few).
const localCookieBase = uint64(1) << 62

// statusHeadBytes is how much of a /proc/<tid>/status is read for its
// Tgid line (the fourth; the name before it is at most 64 bytes).
const statusHeadBytes = 512

// maxPidNames bounds the names of process directories numbered for their
// inode numbers (the kernel's process directories have a few dozen).
const maxPidNames = 4096

// entryKind is what an entry the client answers itself stands for.
type entryKind int

const (
	entryNone entryKind = iota
	// In the root.
	entrySelf
	entryThreadSelf
	entryLocalPid
	// In the directory of an offloaded process.
	entryPidLink  // -> <LocalProc>/<pid>/<name>
	entryPidMagic // exe, cwd, root
	entryPidTable // mountinfo, mounts
	entryPidTasks // task: the threads' directories
)

// pidEntryKind tells which kind of entry of an offloaded process's
// directory name is.
func pidEntryKind(name string) entryKind {
	switch name {
	case "exe", "cwd", "root":
		return entryPidMagic
	case "mountinfo", "mounts":
		return entryPidTable
	case "task":
		return entryPidTasks
	}
	return entryPidLink
}

// procRoot is the state of a mount of the host's proc root.
type procRoot struct {
	m *mountFS
	// localProc is the DPU's own proc as the mount's users see it.
	localProc string
	// offloadRoot is the offload chroot's root; "" turns the rule off.
	offloadRoot string
	// procDir is this process's view of the DPU's proc, where callers'
	// thread groups and processes' roots are read.
	procDir string
	// at is the time the links report as theirs.
	at time.Time
	// mounts finds the mounts of the lines of a mount table (served).
	mounts *mountTable
	// ids numbers the host's submounts in mount tables.
	ids viewIDs

	// namesMu guards names, which numbers the names of process
	// directories for their entries' inode numbers.
	namesMu sync.Mutex
	names   map[string]uint32

	// dropMu guards dropping and dropRunning: the names of processes
	// whose kernel entries are to be dropped, and whether a goroutine
	// is at it.
	dropMu      sync.Mutex
	dropping    map[string]struct{}
	dropRunning bool

	scan scanState
}

// procOptions validates the proc options of a mount and fills in the
// default.
func procOptions(opts MountOptions) (localProc, offloadRoot string, err error) {
	localProc = opts.LocalProc
	if localProc == "" {
		localProc = DefaultLocalProc
	}
	if !path.IsAbs(localProc) || strings.IndexByte(localProc, 0) >= 0 {
		return "", "", errors.New("local proc directory must be an absolute path")
	}
	if opts.OffloadRoot != "" {
		if !path.IsAbs(opts.OffloadRoot) || strings.IndexByte(opts.OffloadRoot, 0) >= 0 {
			return "", "", errors.New("offload root must be an absolute path")
		}
		offloadRoot = path.Clean(opts.OffloadRoot)
	}
	return path.Clean(localProc), offloadRoot, nil
}

// isProcRoot reports whether a mount root with these attributes is the
// root directory of a proc filesystem.
func isProcRoot(kind qtfsv1.FsKind, a *qtfsv1.Attr) bool {
	return kind == qtfsv1.FsKind_FS_KIND_PROC && a.GetIno() == procRootIno &&
		a.GetMode()&syscall.S_IFMT == syscall.S_IFDIR
}

func newProcRoot(m *mountFS, localProc, offloadRoot string) *procRoot {
	// The kernel names a process's root by its real path.
	if offloadRoot != "" {
		if real, err := filepath.EvalSymlinks(offloadRoot); err == nil {
			offloadRoot = real
		}
	}
	return &procRoot{m: m, localProc: localProc, offloadRoot: offloadRoot, procDir: "/proc", at: time.Now(), mounts: served}
}

// parsePid parses a directory name of proc that names a process: decimal,
// no sign, no leading zero, not 0.
func parsePid(name string) (uint32, bool) {
	if name == "" || name[0] < '1' || name[0] > '9' || len(name) > 10 {
		return 0, false
	}
	v, err := strconv.ParseUint(name, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(v), true
}

// parseTgid returns the Tgid line of a /proc/<tid>/status.
func parseTgid(status []byte) (uint32, bool) {
	const key = "\nTgid:"
	i := bytes.Index(status, []byte(key))
	if i < 0 {
		return 0, false
	}
	line := status[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 10, 32)
	if err != nil || v == 0 {
		return 0, false
	}
	return uint32(v), true
}

// readTgid returns the thread group of thread tid of this process's pid
// namespace. The Tgid line is among the first of the status file: one
// read of its head finds it.
func (p *procRoot) readTgid(tid uint32) (uint32, bool) {
	f, err := os.Open(p.procDir + "/" + strconv.FormatUint(uint64(tid), 10) + "/status")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	buf := make([]byte, statusHeadBytes)
	n, _ := f.Read(buf)
	return parseTgid(buf[:n])
}

// pidPath is name in the DPU's proc directory of pid, as this process
// sees it.
func (p *procRoot) pidPath(pid uint32, name string) string {
	d := p.procDir + "/" + strconv.FormatUint(uint64(pid), 10)
	if name == "" {
		return d
	}
	return d + "/" + name
}

// offloaded reports whether pid is a DPU process that runs in the offload
// chroot: it exists in the DPU's proc and its root is the chroot's.
func (p *procRoot) offloaded(pid uint32) bool {
	if p.offloadRoot == "" {
		return false
	}
	root, err := os.Readlink(p.pidPath(pid, "root"))
	return err == nil && root == p.offloadRoot
}

// localPids lists the DPU processes that run in the offload chroot, in
// ascending order; nil when the rule is off.
func (p *procRoot) localPids() []uint32 {
	if p.offloadRoot == "" {
		return nil
	}
	f, err := os.Open(p.procDir)
	if err != nil {
		return nil
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil && len(names) == 0 {
		return nil
	}
	var out []uint32
	for _, name := range names {
		if pid, ok := parsePid(name); ok && p.offloaded(pid) {
			out = append(out, pid)
		}
	}
	slices.Sort(out)
	return out
}

// classify tells which of the client's own entries of the root name is,
// if any.
func (p *procRoot) classify(name string) (entryKind, uint32) {
	switch name {
	case "self":
		return entrySelf, 0
	case "thread-self":
		return entryThreadSelf, 0
	}
	if p.offloadRoot != "" {
		if pid, ok := parsePid(name); ok && p.offloaded(pid) {
			return entryLocalPid, pid
		}
	}
	return entryNone, 0
}

// entryIno is the inode number (before the inode table) of an entry of
// the root.
func entryIno(kind entryKind, pid uint32) uint64 {
	if kind == entryLocalPid {
		return 1<<32 | uint64(pid)
	}
	return uint64(kind)
}

// pidEntryIno is the inode number (before the inode table) of entry name
// of the directory of offloaded process pid; false when the names to
// number ran out.
func (p *procRoot) pidEntryIno(pid uint32, name string) (uint64, bool) {
	p.namesMu.Lock()
	defer p.namesMu.Unlock()
	idx, ok := p.names[name]
	if !ok {
		if len(p.names) >= maxPidNames {
			return 0, false
		}
		if p.names == nil {
			p.names = map[string]uint32{}
		}
		idx = uint32(len(p.names))
		p.names[name] = idx
	}
	return uint64(2+idx)<<32 | uint64(pid), true
}

// selfTarget returns the target of self (or thread-self) for the caller
// of ctx.
func (p *procRoot) selfTarget(ctx context.Context, thread bool) (string, syscall.Errno) {
	c, ok := fuse.FromContext(ctx)
	if !ok || c.Pid == 0 {
		// The kernel itself, or a process this pid namespace cannot
		// name: the host has no self for it either.
		return "", syscall.ENOENT
	}
	tgid, ok := p.readTgid(c.Pid)
	if !ok {
		return "", syscall.ENOENT
	}
	t := strconv.FormatUint(uint64(tgid), 10)
	if thread {
		t += "/task/" + strconv.FormatUint(uint64(c.Pid), 10)
	}
	if p.offloaded(tgid) {
		// Its directory in this mount.
		return t, 0
	}
	return p.localProc + "/" + t, 0
}

// magicTarget returns the target of exe or cwd of offloaded process pid
// as the process itself would read it: the DPU's link with the offload
// root taken off. A link that leads out of the chroot, or to a file that
// is gone, is the DPU's magic link itself, which the DPU kernel resolves.
func (p *procRoot) magicTarget(pid uint32, name string) string {
	if path.Base(name) == "root" {
		return "/"
	}
	local := p.localProc + "/" + strconv.FormatUint(uint64(pid), 10) + "/" + name
	t, err := os.Readlink(p.pidPath(pid, name))
	if err != nil || strings.HasSuffix(t, " (deleted)") {
		return local
	}
	switch root := p.offloadRoot; {
	case root == "/":
		return t
	case t == root:
		return "/"
	case strings.HasPrefix(t, root) && len(t) > len(root) && t[len(root)] == '/':
		return t[len(root):]
	}
	return local
}

// fillLink fills the attributes of a link of target t.
func (p *procRoot) fillLink(t string, ino uint64, uid, gid uint32, out *fuse.Attr) {
	sec, nsec := uint64(p.at.Unix()), uint32(p.at.Nanosecond())
	*out = fuse.Attr{
		Ino:   ino,
		Size:  uint64(len(t)),
		Mode:  syscall.S_IFLNK | 0o777,
		Nlink: 1,
		Owner: fuse.Owner{Uid: uid, Gid: gid},
		Atime: sec, Atimensec: nsec,
		Mtime: sec, Mtimensec: nsec,
		Ctime: sec, Ctimensec: nsec,
	}
}

// newRootLink makes (or finds) the inode of self or thread-self.
func (p *procRoot) newRootLink(ctx context.Context, parent *fs.Inode, kind entryKind, out *fuse.EntryOut) *fs.Inode {
	l := &procLink{p: p, kind: kind}
	ino := p.m.inos.ino(localDev, entryIno(kind, 0))
	t, _ := l.target(ctx)
	p.fillLink(t, ino, 0, 0, &out.Attr)
	out.SetEntryTimeout(selfEntryTimeout)
	return parent.NewInode(ctx, l, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: ino})
}

// newEntry makes (or finds) the inode of one of the client's own entries
// of the root.
func (p *procRoot) newEntry(ctx context.Context, parent *fs.Inode, kind entryKind, pid uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if kind == entryLocalPid {
		return p.newPidDir(ctx, parent, pid, out)
	}
	return p.newRootLink(ctx, parent, kind, out), 0
}

// lookup answers name in the proc root when it is one of the client's
// own entries; ok is false when the server must be asked.
func (p *procRoot) lookup(ctx context.Context, root *node, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno, bool) {
	kind, pid := p.classify(name)
	if kind == entryNone {
		return nil, 0, false
	}
	ch, e := p.newEntry(ctx, root.EmbeddedInode(), kind, pid, out)
	return ch, e, true
}

// hostSelfLink rewrites the target of a symlink of the proc root that
// points into "self" (mounts -> self/mounts, net -> self/net) to point
// into the host's init process.
func hostSelfLink(t []byte) []byte {
	if rest, ok := bytes.CutPrefix(t, []byte("self/")); ok {
		return append([]byte("1/"), rest...)
	}
	if string(t) == "self" {
		return []byte("1")
	}
	return t
}

// procLink is a symlink the client answers itself: self or thread-self
// in the root, or an entry of an offloaded process's directory.
type procLink struct {
	fs.Inode
	p    *procRoot
	kind entryKind
	// pid and name are the process and entry of a link of a process's
	// directory.
	pid  uint32
	name string
}

var (
	_ fs.NodeReadlinker = (*procLink)(nil)
	_ fs.NodeGetattrer  = (*procLink)(nil)
)

// target returns the link's target for the caller of ctx.
func (l *procLink) target(ctx context.Context) (string, syscall.Errno) {
	switch l.kind {
	case entrySelf:
		return l.p.selfTarget(ctx, false)
	case entryThreadSelf:
		return l.p.selfTarget(ctx, true)
	case entryPidMagic:
		return l.p.magicTarget(l.pid, l.name), 0
	}
	return l.p.localProc + "/" + strconv.FormatUint(uint64(l.pid), 10) + "/" + l.name, 0
}

// Readlink returns the target for the calling process.
func (l *procLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, e := l.target(ctx)
	if e != 0 {
		return nil, e
	}
	return []byte(t), 0
}

// Getattr reports the link.
func (l *procLink) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	t, _ := l.target(ctx)
	var uid, gid uint32
	if l.kind != entrySelf && l.kind != entryThreadSelf {
		var st unix.Stat_t
		if unix.Lstat(l.p.pidPath(l.pid, l.name), &st) == nil {
			uid, gid = st.Uid, st.Gid
		}
	}
	l.p.fillLink(t, l.StableAttr().Ino, uid, gid, &out.Attr)
	return 0
}

// pidDir is the directory of a DPU process that runs in the offload
// chroot, or of one of its threads (task/<tid>): the same entries, the
// thread's own (its mountinfo is the thread's mount table, which
// /proc/thread-self/mountinfo names).
type pidDir struct {
	fs.Inode
	p   *procRoot
	pid uint32
	// sub is "" for the process's directory, "task/<tid>" for a
	// thread's; the DPU's directory is pidPath(pid, sub).
	sub string
	// inoPid and inoPrefix number the entries: the pid and "" for the
	// process's, the tid and "t/" for a thread's (tids are unique too).
	inoPid    uint32
	inoPrefix string
}

// rel is entry name of d as a path beneath its process's directory.
func (d *pidDir) rel(name string) string {
	if d.sub == "" {
		return name
	}
	if name == "" {
		return d.sub
	}
	return d.sub + "/" + name
}

var (
	_ fs.NodeLookuper  = (*pidDir)(nil)
	_ fs.NodeReaddirer = (*pidDir)(nil)
	_ fs.NodeGetattrer = (*pidDir)(nil)
)

// statAttr fills out from a stat of the DPU's file, with mode mode.
func statAttr(st *unix.Stat_t, ino uint64, mode uint32, out *fuse.Attr) {
	*out = fuse.Attr{
		Ino:   ino,
		Mode:  mode,
		Nlink: uint32(st.Nlink),
		Owner: fuse.Owner{Uid: st.Uid, Gid: st.Gid},
		Atime: uint64(st.Atim.Sec), Atimensec: uint32(st.Atim.Nsec),
		Mtime: uint64(st.Mtim.Sec), Mtimensec: uint32(st.Mtim.Nsec),
		Ctime: uint64(st.Ctim.Sec), Ctimensec: uint32(st.Ctim.Nsec),
	}
}

// fillPidDir fills the attributes of the directory of offloaded process
// pid: the DPU's directory's, as a directory of this mount.
func (p *procRoot) fillPidDir(pid uint32, ino uint64, out *fuse.Attr) syscall.Errno {
	var st unix.Stat_t
	if err := unix.Lstat(p.pidPath(pid, ""), &st); err != nil {
		return syscall.ENOENT
	}
	statAttr(&st, ino, syscall.S_IFDIR|0o555, out)
	return 0
}

// newPidDir makes (or finds) the directory of offloaded process pid in
// parent (the root).
func (p *procRoot) newPidDir(ctx context.Context, parent *fs.Inode, pid uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ino := p.m.inos.ino(localDev, entryIno(entryLocalPid, pid))
	if e := p.fillPidDir(pid, ino, &out.Attr); e != 0 {
		return nil, e
	}
	return parent.NewInode(ctx, &pidDir{p: p, pid: pid, inoPid: pid}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino}), 0
}

// Getattr reports the directory; the directory of a pid whose process
// left the chroot (or ended) is stale, and the kernel looks the name up
// again.
func (d *pidDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !d.p.offloaded(d.pid) {
		return syscall.ESTALE
	}
	if d.sub != "" {
		var st unix.Stat_t
		if err := unix.Lstat(d.p.pidPath(d.pid, d.sub), &st); err != nil {
			return syscall.ESTALE
		}
		statAttr(&st, d.StableAttr().Ino, syscall.S_IFDIR|0o555, &out.Attr)
		return 0
	}
	return d.p.fillPidDir(d.pid, d.StableAttr().Ino, &out.Attr)
}

// Lookup answers a name of the directory: every name the DPU's directory
// of the process has.
func (d *pidDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	var st unix.Stat_t
	if err := unix.Lstat(d.p.pidPath(d.pid, d.rel(name)), &st); err != nil {
		return nil, syscall.ENOENT
	}
	x, ok := d.p.pidEntryIno(d.inoPid, d.inoPrefix+name)
	if !ok {
		return nil, syscall.ENOENT
	}
	ino := d.p.m.inos.ino(localDev, x)
	out.SetEntryTimeout(selfEntryTimeout)
	kind := pidEntryKind(name)
	switch {
	case kind == entryPidTable:
		statAttr(&st, ino, syscall.S_IFREG|0o444, &out.Attr)
		t := &pidTable{p: d.p, pid: d.pid, name: d.rel(name), mounts: name == "mounts"}
		return d.NewInode(ctx, t, fs.StableAttr{Mode: syscall.S_IFREG, Ino: ino}), 0
	case kind == entryPidTasks && d.sub == "":
		statAttr(&st, ino, syscall.S_IFDIR|0o555, &out.Attr)
		return d.NewInode(ctx, &taskDir{p: d.p, pid: d.pid}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino}), 0
	case kind == entryPidTasks:
		kind = entryPidLink
	}
	l := &procLink{p: d.p, kind: kind, pid: d.pid, name: d.rel(name)}
	t, _ := l.target(ctx)
	d.p.fillLink(t, ino, st.Uid, st.Gid, &out.Attr)
	return d.NewInode(ctx, l, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: ino}), 0
}

// Readdir lists the names of the DPU's directory of the process.
func (d *pidDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	names, e := localNames(d.p.pidPath(d.pid, d.sub))
	if e != 0 {
		return nil, e
	}
	entries := make([]fuse.DirEntry, 0, len(names))
	for _, name := range names {
		x, ok := d.p.pidEntryIno(d.inoPid, d.inoPrefix+name)
		if !ok {
			continue
		}
		mode := uint32(syscall.S_IFLNK)
		switch pidEntryKind(name) {
		case entryPidTable:
			mode = syscall.S_IFREG
		case entryPidTasks:
			if d.sub == "" {
				mode = syscall.S_IFDIR
			}
		}
		entries = append(entries, fuse.DirEntry{Name: name, Mode: mode, Ino: d.p.m.inos.ino(localDev, x)})
	}
	return fs.NewListDirStream(entries), 0
}

// localNames lists the DPU's directory dir (of a process, or of its
// threads), sorted; ENOENT once it is gone.
func localNames(dir string) ([]string, syscall.Errno) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, syscall.ENOENT
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil && len(names) == 0 {
		return nil, syscall.ENOENT
	}
	slices.Sort(names)
	return names, 0
}

// taskDir is the task directory of an offloaded process: a directory of
// each of its threads, as pidDir makes them.
type taskDir struct {
	fs.Inode
	p   *procRoot
	pid uint32
}

var (
	_ fs.NodeLookuper  = (*taskDir)(nil)
	_ fs.NodeReaddirer = (*taskDir)(nil)
	_ fs.NodeGetattrer = (*taskDir)(nil)
)

func (d *taskDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Stat_t
	if !d.p.offloaded(d.pid) || unix.Lstat(d.p.pidPath(d.pid, "task"), &st) != nil {
		return syscall.ESTALE
	}
	statAttr(&st, d.StableAttr().Ino, syscall.S_IFDIR|0o555, &out.Attr)
	return 0
}

// Lookup answers a thread of the process.
func (d *taskDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	tid, ok := parsePid(name)
	if !ok {
		return nil, syscall.ENOENT
	}
	var st unix.Stat_t
	sub := "task/" + name
	if err := unix.Lstat(d.p.pidPath(d.pid, sub), &st); err != nil {
		return nil, syscall.ENOENT
	}
	x, ok := d.p.pidEntryIno(tid, "t/")
	if !ok {
		return nil, syscall.ENOENT
	}
	ino := d.p.m.inos.ino(localDev, x)
	statAttr(&st, ino, syscall.S_IFDIR|0o555, &out.Attr)
	t := &pidDir{p: d.p, pid: d.pid, sub: sub, inoPid: tid, inoPrefix: "t/"}
	return d.NewInode(ctx, t, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino}), 0
}

// Readdir lists the process's threads.
func (d *taskDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	names, e := localNames(d.p.pidPath(d.pid, "task"))
	if e != 0 {
		return nil, e
	}
	entries := make([]fuse.DirEntry, 0, len(names))
	for _, name := range names {
		tid, ok := parsePid(name)
		if !ok {
			continue
		}
		if x, ok := d.p.pidEntryIno(tid, "t/"); ok {
			entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: d.p.m.inos.ino(localDev, x)})
		}
	}
	return fs.NewListDirStream(entries), 0
}

// pidTable is the mountinfo or mounts file of an offloaded process or
// of one of its threads.
type pidTable struct {
	fs.Inode
	p   *procRoot
	pid uint32
	// name is the file beneath the process's directory ("mountinfo",
	// "task/<tid>/mounts").
	name   string
	mounts bool
}

var (
	_ fs.NodeOpener    = (*pidTable)(nil)
	_ fs.NodeGetattrer = (*pidTable)(nil)
)

// Getattr reports the file as the DPU's: size 0, as proc's files are.
func (t *pidTable) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	var st unix.Stat_t
	if err := unix.Lstat(t.p.pidPath(t.pid, t.name), &st); err != nil {
		return syscall.ENOENT
	}
	statAttr(&st, t.StableAttr().Ino, syscall.S_IFREG|0o444, &out.Attr)
	return 0
}

// Open makes the file's content, the view of the process's mount table
// at this moment; it is read directly (no page cache).
func (t *pidTable) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EACCES
	}
	data, e := t.p.tableView(ctx, t.pid, path.Join(path.Dir(t.name), "mountinfo"), t.mounts)
	if e != 0 {
		return nil, 0, e
	}
	return &bytesHandle{data: data}, fuse.FOPEN_DIRECT_IO, 0
}

// tableView returns the view of the mount table in the mountinfo file
// (beneath the directory of offloaded process pid) as mountview.go makes
// it: as a mountinfo file, or as a mounts file.
func (p *procRoot) tableView(ctx context.Context, pid uint32, mountinfoFile string, asMounts bool) ([]byte, syscall.Errno) {
	data, err := os.ReadFile(p.pidPath(pid, mountinfoFile))
	if err != nil {
		if e, ok := qfs.ToErrno(err); ok {
			return nil, e
		}
		return nil, syscall.EIO
	}
	view := p.ids.hostView(mountinfo.Parse(data), func(mi *mountinfo.Mount) []*qtfsv1.HostMount {
		if mi.FSType != FsType {
			return nil
		}
		m := p.mounts.lookup(unix.Mkdev(mi.Major, mi.Minor))
		if m == nil {
			return nil
		}
		return m.hostMountsOf(ctx)
	})
	return renderView(view, asMounts), 0
}

// bytesHandle is an open file whose content the client made at open.
type bytesHandle struct {
	data []byte
}

var _ fs.FileReader = (*bytesHandle)(nil)

func (h *bytesHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off < 0 {
		return nil, syscall.EINVAL
	}
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}

// A proc mount keeps the kernel's entries of the process directories a
// listing names for specialTTL (see specialTimeouts). The client drops
// such an entry as soon as it learns the process ended, so that stat(2)
// and walks ask the host again: when a call on a file of the process finds
// it gone, and when a listing of the root, read whole, no longer has it.

// sawGone is told that a call on (or in) n failed with e: when e says the
// file or process is gone and n lies in a process's directory, the
// kernel's entry of that process is dropped.
func (p *procRoot) sawGone(n *node, e syscall.Errno) {
	if e != syscall.ENOENT && e != syscall.ESRCH {
		return
	}
	if name, ok := p.pidDir(n); ok {
		p.drop([]string{name})
	}
}

// pidDir returns the name of the process directory of the root that n is,
// or lies in.
func (p *procRoot) pidDir(n *node) (string, bool) {
	root := p.m.root.EmbeddedInode()
	in := n.EmbeddedInode()
	for {
		name, parent := in.Parent()
		switch {
		case parent == nil:
			return "", false
		case parent == root:
			_, ok := parsePid(name)
			return name, ok
		}
		in = parent
	}
}

// pruneUnlisted is given the names of a listing of the root read from its
// start to its end: the processes the kernel still has an entry of that
// the listing lacks have ended, and their entries are dropped.
func (p *procRoot) pruneUnlisted(listed map[string]struct{}) {
	var gone []string
	for name, ch := range p.m.root.Children() {
		if _, ok := ch.Operations().(*node); !ok {
			continue // the client's own links
		}
		if _, ok := parsePid(name); !ok {
			continue
		}
		if _, ok := listed[name]; !ok {
			gone = append(gone, name)
		}
	}
	p.drop(gone)
}

// drop drops the kernel's entries of names in the root, on a goroutine:
// the kernel takes the root's lock to drop an entry, and the call that
// found a process gone may be one the kernel sent holding that lock (a
// READDIR of the root, or a rename, whose caller holds both directories).
func (p *procRoot) drop(names []string) {
	if len(names) == 0 {
		return
	}
	p.dropMu.Lock()
	defer p.dropMu.Unlock()
	if p.dropping == nil {
		p.dropping = make(map[string]struct{}, len(names))
	}
	for _, name := range names {
		p.dropping[name] = struct{}{}
	}
	if !p.dropRunning {
		p.dropRunning = true
		go p.dropPending()
	}
}

// dropPending drops the entries drop collected until none is left.
func (p *procRoot) dropPending() {
	for {
		p.dropMu.Lock()
		names := p.dropping
		p.dropping = nil
		if len(names) == 0 {
			p.dropRunning = false
			p.dropMu.Unlock()
			return
		}
		p.dropMu.Unlock()
		for name := range names {
			p.m.root.NotifyEntry(name)
		}
	}
}

// Reading ahead for scans of /proc. A scanner (ps, top, a metrics agent)
// reads the same few files of every process, in the same order: stat then
// status, say. The client learns that order from the opens of one caller
// in one process directory, and when the first of those files is opened
// in the next process's directory, the Open asks the host to read the
// others too (OpenRequest.read_also). Their opens that follow within
// scanWindow, by the same caller, are answered from what came back,
// without a round trip. The content is then at most scanWindow older than
// the open, as if the open had been that much earlier. Only the files of
// process directories, only under the default policy (cache=none keeps
// nothing), and each result is used once.

// scanWindow is how close two opens must follow each other for the client
// to learn their order, and how long a file read ahead waits for its open.
const scanWindow = 20 * time.Millisecond

// maxScanNames bounds the learned order (a process directory has a few
// dozen names), maxReadAhead the files kept read ahead; qfs.MaxReadAlso
// how many one Open may read along.
const (
	maxScanNames = 256
	maxReadAhead = 64
)

// scanState is a proc mount's reading ahead.
type scanState struct {
	mu sync.Mutex
	// next maps a file's name to the one the last scanner opened after it.
	next map[string]string
	// last is the previous open of a file of a process directory.
	last scanOpen
	// ahead holds the files read ahead, until their open.
	ahead map[readAheadKey]readAheadFile
}

type scanOpen struct {
	dir  *fs.Inode
	name string
	pid  uint32
	at   int64
}

type readAheadKey struct {
	dir  *fs.Inode
	name string
}

// readAheadFile is a file read ahead for the open of one caller.
type readAheadFile struct {
	pid, uid, gid uint32
	attr          *qtfsv1.Attr
	data          []byte
	until         int64
}

// pidFile returns n's directory when n is a file of a process directory
// of the root.
func (p *procRoot) pidFile(n *node) (*fs.Inode, string, bool) {
	name, dir := n.Parent()
	if dir == nil {
		return nil, "", false
	}
	dirName, root := dir.Parent()
	if root != p.m.root.EmbeddedInode() {
		return nil, "", false
	}
	if _, ok := parsePid(dirName); !ok {
		return nil, "", false
	}
	return dir, name, true
}

// planOpen is told of a read-only open of n by c. It learns the scanner's
// order, and returns the files to read along with n and, when n itself
// was read ahead for c, its attributes and content.
func (p *procRoot) planOpen(c *fuse.Caller, n *node) (also [][]byte, ahead *readAheadFile) {
	if p.m.specialTTL <= 0 || c == nil || c.Pid == 0 {
		return nil, nil
	}
	dir, name, ok := p.pidFile(n)
	if !ok {
		return nil, nil
	}
	now := monoNow()
	s := &p.scan
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.ahead[readAheadKey{dir, name}]; ok {
		delete(s.ahead, readAheadKey{dir, name})
		if f.pid == c.Pid && f.uid == c.Uid && f.gid == c.Gid && now < f.until {
			ahead = &f
		}
	}
	if l := s.last; l.dir == dir && l.pid == c.Pid && l.name != name && now-l.at < int64(scanWindow) {
		if s.next == nil || len(s.next) >= maxScanNames {
			s.next = make(map[string]string)
		}
		s.next[l.name] = name
	}
	s.last = scanOpen{dir: dir, name: name, pid: c.Pid, at: now}
	if ahead != nil {
		return nil, ahead
	}
	for x := name; len(also) < qfs.MaxReadAlso; {
		y, ok := s.next[x]
		if !ok || y == name || slices.ContainsFunc(also, func(b []byte) bool { return string(b) == y }) {
			break
		}
		also = append(also, []byte(y))
		x = y
	}
	return also, nil
}

// keepReadAhead keeps the files read along with an open of n by c, for
// the opens planOpen expects.
func (p *procRoot) keepReadAhead(c *fuse.Caller, n *node, files []*qtfsv1.ReadAlso) {
	if len(files) == 0 || c == nil {
		return
	}
	dir, _, ok := p.pidFile(n)
	if !ok {
		return
	}
	until := monoNow() + int64(scanWindow)
	s := &p.scan
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range files {
		if qfs.ValidName(f.GetName()) != 0 || f.GetAttr() == nil {
			continue
		}
		if s.ahead == nil || len(s.ahead) >= maxReadAhead {
			// What was not opened in time never will be.
			s.ahead = make(map[readAheadKey]readAheadFile)
		}
		s.ahead[readAheadKey{dir, string(f.GetName())}] = readAheadFile{
			pid: c.Pid, uid: c.Uid, gid: c.Gid, attr: f.GetAttr(), data: f.GetData(), until: until,
		}
	}
}
