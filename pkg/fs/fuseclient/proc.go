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

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// A mount of the host's proc root answers a few names itself, because on
// the host they depend on who reads them and the reader runs on the DPU:
//
//	self          -> <LocalProc>/<tgid of the caller>
//	thread-self   -> <LocalProc>/<tgid>/task/<tid of the caller>
//	<pid>         -> <LocalProc>/<pid>, for a DPU process whose root is
//	                 OffloadRoot (the rule is off when OffloadRoot is "")
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

// localDev is the device number of the links the client makes itself;
// the inode table gives it a prefix of its own, so their numbers never
// meet the host's.
const localDev = math.MaxUint64

// selfEntryTimeout is how long the kernel may keep the entries of self
// and thread-self: they are links of this mount whoever asks, only their
// target depends on the caller (and the kernel asks for it on each use).
const selfEntryTimeout = time.Hour

// localCookieBase is the first directory cookie of the offloaded pids a
// proc root listing hands out after the host's entries; the host's proc
// root cookies stay far below it (pid_max + a few).
const localCookieBase = uint64(1) << 62

// statusHeadBytes is how much of a /proc/<tid>/status is read for its
// Tgid line (the fourth; the name before it is at most 64 bytes).
const statusHeadBytes = 512

// linkKind is what a link of the proc root stands for.
type linkKind int

const (
	linkNone linkKind = iota
	linkSelf
	linkThreadSelf
	linkLocalPid
)

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
	return &procRoot{m: m, localProc: localProc, offloadRoot: offloadRoot, procDir: "/proc", at: time.Now()}
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

// offloaded reports whether pid is a DPU process that runs in the offload
// chroot: it exists in the DPU's proc and its root is the chroot's.
func (p *procRoot) offloaded(pid uint32) bool {
	if p.offloadRoot == "" {
		return false
	}
	root, err := os.Readlink(p.procDir + "/" + strconv.FormatUint(uint64(pid), 10) + "/root")
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

// classify tells which of the client's own links name is, if any.
func (p *procRoot) classify(name string) (linkKind, uint32) {
	switch name {
	case "self":
		return linkSelf, 0
	case "thread-self":
		return linkThreadSelf, 0
	}
	if p.offloadRoot != "" {
		if pid, ok := parsePid(name); ok && p.offloaded(pid) {
			return linkLocalPid, pid
		}
	}
	return linkNone, 0
}

// linkIno is the inode number (before the inode table) of a link.
func linkIno(kind linkKind, pid uint32) uint64 {
	if kind == linkLocalPid {
		return 1<<32 | uint64(pid)
	}
	return uint64(kind)
}

// target returns the link's target for the caller of ctx.
func (p *procRoot) target(ctx context.Context, kind linkKind, pid uint32) (string, syscall.Errno) {
	if kind == linkLocalPid {
		return p.localProc + "/" + strconv.FormatUint(uint64(pid), 10), 0
	}
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
	t := p.localProc + "/" + strconv.FormatUint(uint64(tgid), 10)
	if kind == linkThreadSelf {
		t += "/task/" + strconv.FormatUint(uint64(c.Pid), 10)
	}
	return t, 0
}

// fillLink fills the attributes of a link for the caller of ctx.
func (p *procRoot) fillLink(ctx context.Context, kind linkKind, pid uint32, ino uint64, out *fuse.Attr) {
	t, _ := p.target(ctx, kind, pid)
	sec, nsec := uint64(p.at.Unix()), uint32(p.at.Nanosecond())
	*out = fuse.Attr{
		Ino:   ino,
		Size:  uint64(len(t)),
		Mode:  syscall.S_IFLNK | 0o777,
		Nlink: 1,
		Atime: sec, Atimensec: nsec,
		Mtime: sec, Mtimensec: nsec,
		Ctime: sec, Ctimensec: nsec,
	}
}

// newLink makes (or finds) the inode of a link in directory parent.
func (p *procRoot) newLink(ctx context.Context, parent *node, kind linkKind, pid uint32, out *fuse.EntryOut) *fs.Inode {
	ino := p.m.inos.ino(localDev, linkIno(kind, pid))
	p.fillLink(ctx, kind, pid, ino, &out.Attr)
	if kind != linkLocalPid {
		out.SetEntryTimeout(selfEntryTimeout)
	}
	return parent.NewInode(ctx, &procLink{p: p, kind: kind, pid: pid}, fs.StableAttr{Mode: syscall.S_IFLNK, Ino: ino})
}

// lookup answers name in the proc root when it is one of the client's
// own links; ok is false when the server must be asked.
func (p *procRoot) lookup(ctx context.Context, root *node, name string, out *fuse.EntryOut) (*fs.Inode, bool) {
	kind, pid := p.classify(name)
	if kind == linkNone {
		return nil, false
	}
	return p.newLink(ctx, root, kind, pid, out), true
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

// procLink is a symlink of the proc root that the client answers itself.
type procLink struct {
	fs.Inode
	p    *procRoot
	kind linkKind
	pid  uint32
}

var (
	_ fs.NodeReadlinker = (*procLink)(nil)
	_ fs.NodeGetattrer  = (*procLink)(nil)
)

// Readlink returns the target for the calling process.
func (l *procLink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, e := l.p.target(ctx, l.kind, l.pid)
	if e != 0 {
		return nil, e
	}
	return []byte(t), 0
}

// Getattr reports the link; the link of a pid whose process left the
// chroot (or ended) is stale, and the kernel looks the name up again.
func (l *procLink) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if l.kind == linkLocalPid && !l.p.offloaded(l.pid) {
		return syscall.ESTALE
	}
	l.p.fillLink(ctx, l.kind, l.pid, l.StableAttr().Ino, &out.Attr)
	return 0
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
