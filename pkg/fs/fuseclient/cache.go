package fuseclient

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// CachePolicy says how much the kernel may cache of a mount.
type CachePolicy int

const (
	// CacheDefault is CacheNone when the mount lies on proc, sysfs or a
	// cgroup filesystem, CacheAuto otherwise.
	CacheDefault CachePolicy = iota
	// CacheAuto keeps attributes and directory entries for a second and
	// a file's page cache while its mtime and size do not change.
	CacheAuto
	// CacheNone caches nothing: zero timeouts, direct I/O on every open,
	// no negative entries.
	CacheNone
	// CacheStrict keeps everything for an hour: for trees the host never
	// changes behind the DPU's back.
	CacheStrict
)

// FsType is the filesystem type a qtfs mount shows in /proc/mounts.
const FsType = "fuse." + fsSubtype

// fsSubtype is the name after "fuse." in the mount's type.
const fsSubtype = "qtfs"

// ParseCachePolicy parses "auto", "none" or "strict" ("default" selects
// CacheDefault).
func ParseCachePolicy(s string) (CachePolicy, error) {
	switch s {
	case "auto":
		return CacheAuto, nil
	case "none":
		return CacheNone, nil
	case "strict":
		return CacheStrict, nil
	case "default":
		return CacheDefault, nil
	}
	return CacheDefault, fmt.Errorf("cache policy %q: want auto, none or strict", s)
}

// String returns the name ParseCachePolicy accepts.
func (c CachePolicy) String() string {
	switch c {
	case CacheDefault:
		return "default"
	case CacheAuto:
		return "auto"
	case CacheNone:
		return "none"
	case CacheStrict:
		return "strict"
	}
	return fmt.Sprintf("CachePolicy(%d)", int(c))
}

// resolve turns CacheDefault into the policy for a mount of kind k.
func (c CachePolicy) resolve(k qtfsv1.FsKind) CachePolicy {
	if c != CacheDefault {
		return c
	}
	if qfs.SpecialKind(k) {
		return CacheNone
	}
	return CacheAuto
}

// cacheParams are the kernel cache settings of a resolved policy.
type cacheParams struct {
	entry, attr, negative time.Duration
	// directIO opens every file with FOPEN_DIRECT_IO.
	directIO bool
	// keepAlways opens every file with FOPEN_KEEP_CACHE.
	keepAlways bool
	// keepIfUnchanged opens with FOPEN_KEEP_CACHE when the file's mtime
	// and size are those seen at its previous open.
	keepIfUnchanged bool
}

// strictTimeout is how long strict mounts keep attributes and entries.
const strictTimeout = time.Hour

// specialTimeout is how long the kernel keeps the attributes and names of
// proc, sysfs and cgroup mounts under the default policy (most names of
// directories excepted: see specialTimeouts). Their
// content is never cached (direct I/O, each read reaches the host) and the
// server resolves every call by path, so an open of a file that is gone
// fails at once. What is kept spares the permission checks and lookups a
// scan of /proc would otherwise repeat for every file; mode and owner
// changes show within this delay, and the host checks permissions again on
// each call.
const specialTimeout = time.Second

// cacheTiming is how long a mount keeps what it learnt of a special
// filesystem; tests change it (MountOptions.timing), as they do the
// reconnect pacing.
type cacheTiming struct {
	// special is specialTTL under the default policy.
	special time.Duration
	// hostMounts is how long the host's mount list is kept (mountview.go).
	hostMounts time.Duration
}

var defaultCacheTiming = cacheTiming{special: specialTimeout, hostMounts: hostMountsTTL}

func (c CachePolicy) params() cacheParams {
	switch c {
	case CacheNone:
		return cacheParams{directIO: true}
	case CacheStrict:
		return cacheParams{entry: strictTimeout, attr: strictTimeout, negative: strictTimeout, keepAlways: true}
	default:
		return cacheParams{entry: time.Second, attr: time.Second, keepIfUnchanged: true}
	}
}

// Directory listings.
//
// A directory node may hold a listing: every name the directory holds, as
// far as this client knows, with each entry's attributes when they are
// known. A listing answers LOOKUP without an RPC, positively (with the
// entry's attributes) or negatively, until it expires, one entry timeout
// after the server produced it: the same staleness the kernel's own entry
// cache has. Listings exist only under a policy with an entry timeout
// (auto, strict) and never on proc, sysfs or cgroup mounts.
//
// Where listings come from:
//   - a directory this client creates starts with an empty listing;
//   - a directory looked up by RPC often (listingMisses names within one
//     entry timeout: a scan, a build, a copy) is listed in the background
//     in one pass of batched Readdir with attributes.
//
// How they stay right: every change this client makes in a directory
// (create, remove, link) is applied to its listing when the server
// confirms it; a rename drops both directories' listings; a change of a
// file's attributes (write, setattr, xattr, link count) forgets the
// attributes of its entry (the name stays known), so the next LOOKUP of
// it asks the server. Changes confirmed while a listing is being fetched
// are replayed on it when it lands. An entry is answered positively only
// with known attributes and, for a non-directory, a link count of 1 (the
// attributes of a file with other names may change through those). A
// server reply that contradicts a listing (ESTALE on open) drops it.
// Changes made on the host show up when the listing expires.

const (
	// listingMisses is how many names of one directory are looked up by
	// RPC within one entry timeout before the directory is listed.
	listingMisses = 8
	// maxListing is the most entries a listing holds; a larger directory
	// is not listed (and a listing that grows past it is dropped).
	maxListing = 32 << 10
	// maxListedEntries bounds the entries of all the listings of a
	// mount; past it the oldest listings are dropped.
	maxListedEntries = 64 << 10
	// listingBatch is how many entries one Readdir of a fetch asks for.
	listingBatch = 4096
	// noListingFor is how long a directory whose fetch failed (no read
	// permission, too large, gone) is not listed again, in entry
	// timeouts.
	noListingFor = 10
)

// listing is the known content of a directory.
type listing struct {
	expires time.Time
	// entries maps each name to its attributes; nil when the name
	// exists but its attributes are not known.
	entries map[string]*qtfsv1.Attr
}

// dirState is a directory node's listing state, guarded by node.mu.
type dirState struct {
	list *listing
	// misses counts the Lookup RPCs of the window that ends at
	// windowEnd.
	misses    int
	windowEnd time.Time
	// fetching is set while a fetch runs; journal collects the changes
	// confirmed meanwhile, replayed on its result; abort says the result
	// must be thrown away (a rename happened meanwhile).
	fetching bool
	journal  []listingChange
	abort    bool
	// noFetchUntil keeps a directory that could not be listed from
	// being fetched again at once.
	noFetchUntil time.Time
}

// listingChange is one change this client made in a directory.
type listingChange struct {
	name    string
	attr    *qtfsv1.Attr // the entry's attributes, nil when not known
	removed bool
}

// apply makes c on l.
func (l *listing) apply(c listingChange) {
	if c.removed {
		delete(l.entries, c.name)
		return
	}
	l.entries[c.name] = c.attr
}

// listings tracks which nodes hold a listing, to bound their memory.
type listings struct {
	mu    sync.Mutex
	nodes map[*node]int // entries when listed
	total int
	// nextSweep is when add next drops the expired listings.
	nextSweep time.Time
}

// listingSweep is how often add drops every expired listing, so that
// they do not hold memory until the budget is reached.
const listingSweep = time.Second

// OnForget drops the listing of a directory the kernel forgot: no LOOKUP
// can reach this node any more.
func (n *node) OnForget() {
	n.m.listings.remove(n)
}

// remove forgets n's listing.
func (ls *listings) remove(n *node) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if sz, ok := ls.nodes[n]; ok {
		ls.total -= sz + 1
		delete(ls.nodes, n)
	}
	n.mu.Lock()
	if n.dir != nil {
		n.dir.list = nil
	}
	n.mu.Unlock()
}

// listingsEnabled reports whether the mount keeps listings.
func (m *mountFS) listingsEnabled() bool {
	return m.cache.entry > 0 && !m.special && !m.directIO
}

// dirStateLocked returns n's listing state, creating it; n.mu is held.
func (n *node) dirStateLocked() *dirState {
	if n.dir == nil {
		n.dir = &dirState{}
	}
	return n.dir
}

// listed answers a lookup of name in directory n from its listing: ok is
// false when there is no valid listing or it does not know enough, and
// the server must be asked.
func (n *node) listed(name string) (a *qtfsv1.Attr, remaining time.Duration, found, ok bool) {
	if !n.m.listingsEnabled() {
		return nil, 0, false, false
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dir == nil || n.dir.list == nil {
		return nil, 0, false, false
	}
	l := n.dir.list
	remaining = l.expires.Sub(now)
	if remaining <= 0 {
		n.dir.list = nil
		return nil, 0, false, false
	}
	a, found = l.entries[name]
	switch {
	case !found:
		return nil, remaining, false, true
	case a == nil:
		return nil, 0, true, false
	case a.GetMode()&syscall.S_IFMT != syscall.S_IFDIR && a.GetNlink() != 1:
		return nil, 0, true, false
	}
	return a, remaining, true, true
}

// lookupListed answers Lookup from n's listing when it can.
func (n *node) lookupListed(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno, bool) {
	a, remaining, found, ok := n.listed(name)
	if !ok {
		return nil, 0, false
	}
	if !found {
		return nil, syscall.ENOENT, true
	}
	ch, e := n.newChild(ctx, a, out)
	if e != 0 {
		return nil, e, true
	}
	// The kernel keeps the entry no longer than the listing is valid.
	out.SetEntryTimeout(min(n.m.cache.entry, remaining))
	out.SetAttrTimeout(min(n.m.cache.attr, remaining))
	return ch, 0, true
}

// noteChange records a change this client made in directory n: applied
// to its listing, and journaled when a fetch runs.
func (n *node) noteChange(c listingChange) {
	if !n.m.listingsEnabled() {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	d := n.dir
	if d == nil {
		return
	}
	if d.list != nil {
		d.list.apply(c)
		if len(d.list.entries) > maxListing {
			d.list = nil
		}
	}
	if d.fetching {
		d.journal = append(d.journal, c)
		if len(d.journal) > maxListing {
			d.abort = true
		}
	}
}

// dropListing forgets n's listing (and any fetch in flight): a rename in
// it, or a reply that contradicts it.
func (n *node) dropListing() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dir != nil {
		n.dir.list = nil
		if n.dir.fetching {
			n.dir.abort = true
		}
	}
}

// attrsChanged says that n's attributes changed through this client: its
// entry in its parent's listing forgets them.
func (n *node) attrsChanged() {
	if !n.m.listingsEnabled() {
		return
	}
	name, parent := n.Parent()
	if parent == nil {
		return
	}
	if p, ok := parent.Operations().(*node); ok {
		p.noteChange(listingChange{name: name})
	}
}

// entryChanged records that name in directory n now has attributes a
// (created, linked) or is gone (removed); n's own attributes (mtime, link
// count) changed with it.
func (n *node) entryChanged(name string, a *qtfsv1.Attr, removed bool) {
	n.noteChange(listingChange{name: name, attr: a, removed: removed})
	n.attrsChanged()
}

// newDirListing gives a directory this client just created its (empty)
// listing, valid from when the creating request was sent.
func (n *node) newDirListing(sent time.Time) {
	if !n.m.listingsEnabled() {
		return
	}
	n.mu.Lock()
	n.dirStateLocked().list = &listing{expires: sent.Add(n.m.cache.entry), entries: map[string]*qtfsv1.Attr{}}
	n.mu.Unlock()
	n.m.listings.add(n, 0)
}

// missed counts a Lookup of directory n that went to the server, and
// starts a fetch of its listing when the directory is looked up often.
func (n *node) missed(caller *qtfsv1.Caller) {
	m := n.m
	if !m.listingsEnabled() {
		return
	}
	now := time.Now()
	n.mu.Lock()
	d := n.dirStateLocked()
	if now.After(d.windowEnd) {
		d.misses, d.windowEnd = 0, now.Add(m.cache.entry)
	}
	d.misses++
	start := d.misses >= listingMisses && !d.fetching && now.After(d.noFetchUntil) &&
		(d.list == nil || !now.Before(d.list.expires))
	if start {
		d.fetching, d.journal, d.abort, d.misses = true, nil, false, 0
	}
	n.mu.Unlock()
	if start {
		go n.fetchListing(caller)
	}
}

// fetchListing lists directory n in the background and installs the
// result.
func (n *node) fetchListing(caller *qtfsv1.Caller) {
	m := n.m
	sent := time.Now()
	entries, e := n.readListing(caller)
	n.mu.Lock()
	d := n.dir
	d.fetching = false
	journal, abort := d.journal, d.abort
	d.journal, d.abort = nil, false
	if e != 0 || abort {
		if e != 0 {
			d.noFetchUntil = time.Now().Add(noListingFor * m.cache.entry)
		}
		n.mu.Unlock()
		m.log.Debug("qtfs directory not listed", zap.String("errno", qfs.ErrnoName(e)), zap.Bool("abort", abort))
		return
	}
	l := &listing{expires: sent.Add(m.cache.entry), entries: entries}
	for _, c := range journal {
		l.apply(c)
	}
	d.list = l
	size := len(l.entries)
	n.mu.Unlock()
	m.listings.add(n, size)
}

// readListing reads every entry of directory n, with attributes, in
// batched Readdir RPCs.
func (n *node) readListing(caller *qtfsv1.Caller) (map[string]*qtfsv1.Attr, syscall.Errno) {
	m := n.m
	p, e := n.path()
	if e != 0 {
		return nil, e
	}
	// The first batch comes with the open; a directory listed whole is
	// closed by the server at once (its Release costs nothing).
	open, e := session.Call(context.Background(), m.sess, "Open", qtfsv1.FileSystemClient.Open, &qtfsv1.OpenRequest{
		Mount: m.id, Caller: caller, Path: p, Flags: syscall.O_RDONLY | syscall.O_DIRECTORY,
		ReaddirInline: listingBatch, CloseAtEof: m.sess.ReopensHandles(),
	}, m.callOpts())
	if e != 0 {
		return nil, e
	}
	defer session.Call(context.Background(), m.sess, "Release", qtfsv1.FileSystemClient.Release, &qtfsv1.ReleaseRequest{Handle: open.GetHandle()}, m.callOpts())
	if a := open.GetAttr(); a == nil || (n != m.root && m.inos.ino(a.GetDev(), a.GetIno()) != n.StableAttr().Ino) {
		return nil, syscall.ESTALE // the path names another directory now
	}
	entries := map[string]*qtfsv1.Attr{}
	des, eof := open.GetEntries(), open.GetEntriesEof()
	inline := len(des) > 0 || eof
	var off uint64
	for {
		if !inline {
			resp, e := session.Call(context.Background(), m.sess, "Readdir", qtfsv1.FileSystemClient.Readdir, &qtfsv1.ReaddirRequest{
				Handle: open.GetHandle(), Offset: off, MaxEntries: listingBatch, Plus: true,
			}, m.callOpts())
			if e != 0 {
				return nil, e
			}
			des, eof = resp.GetEntries(), resp.GetEof()
		}
		inline = false
		if len(des) > listingBatch || len(entries)+len(des) > maxListing {
			return nil, syscall.EFBIG
		}
		for _, de := range des {
			name := de.GetName()
			if qfs.ValidName(name) != 0 {
				continue
			}
			entries[string(name)] = de.GetAttr()
		}
		if eof || len(des) == 0 {
			return entries, 0
		}
		off = des[len(des)-1].GetOffset()
	}
}

// add registers n's listing of size entries. Every listingSweep it drops
// the expired listings; while the mount's listings hold more than
// maxListedEntries (a listing counts one more than its entries), it drops
// expired listings first, then others.
func (ls *listings) add(n *node, size int) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.nodes == nil {
		ls.nodes = map[*node]int{}
	}
	if old, ok := ls.nodes[n]; ok {
		ls.total -= old + 1
	}
	ls.nodes[n] = size
	ls.total += size + 1
	now := time.Now()
	if now.After(ls.nextSweep) {
		ls.nextSweep = now.Add(listingSweep)
		for other, sz := range ls.nodes {
			if other == n {
				continue
			}
			other.mu.Lock()
			if other.dir == nil || other.dir.list == nil || !now.Before(other.dir.list.expires) {
				if other.dir != nil {
					other.dir.list = nil
				}
				ls.total -= sz + 1
				delete(ls.nodes, other)
			}
			other.mu.Unlock()
		}
	}
	for pass := 0; pass < 2 && ls.total > maxListedEntries; pass++ {
		for other, sz := range ls.nodes {
			if ls.total <= maxListedEntries/2 {
				break
			}
			if other == n {
				continue
			}
			other.mu.Lock()
			expired := other.dir == nil || other.dir.list == nil || !now.Before(other.dir.list.expires)
			if pass == 1 || expired {
				if other.dir != nil {
					other.dir.list = nil
				}
				ls.total -= sz + 1
				delete(ls.nodes, other)
			}
			other.mu.Unlock()
		}
	}
}

// failedCreate reacts to a failed create, mknod, mkdir, symlink or link
// in directory n: EEXIST or ENOENT means its listing was wrong.
func (n *node) failedCreate(e syscall.Errno) {
	if e == syscall.EEXIST || e == syscall.ENOENT {
		n.dropListing()
	}
}

// removed records the outcome of an unlink or rmdir of name in directory
// n: gone on success; ENOENT means the listing was wrong.
func (n *node) removed(name string, e syscall.Errno) {
	switch e {
	case 0:
		n.entryChanged(name, nil, true)
	case syscall.ENOENT:
		n.dropListing()
	}
}

// parentListingWrong drops the listing of n's parent: the server says
// n's name no longer leads to n.
func (n *node) parentListingWrong() {
	if _, parent := n.Parent(); parent != nil {
		if p, ok := parent.Operations().(*node); ok {
			p.dropListing()
		}
	}
}

// capabilityXattr is the attribute the kernel asks for before each write
// to a file (it removes a file's capabilities when it is written).
const capabilityXattr = "security.capability"

// capsAbsent records that n has no capability attribute: a file the
// server just created, or a Getxattr that said ENODATA. For one attribute
// timeout the kernel's question before each write is answered without an
// RPC. A capability the host sets meanwhile is seen late by readers of
// the attribute, as an attribute change is; writes still remove it, on
// the host, where the write happens.
func (n *node) capsAbsent() {
	if n.m.cache.attr <= 0 || n.m.special {
		return
	}
	n.mu.Lock()
	n.noCapsUntil = monoNow() + int64(n.m.cache.attr)
	n.mu.Unlock()
}

// capsKnownAbsent reports whether n is known to have no capability
// attribute.
func (n *node) capsKnownAbsent() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return monoNow() < n.noCapsUntil
}

// xattrsAbsent records that n has no extended attribute at all: a
// Listxattr said so. Programs that copy a file's attributes (cp -a, rsync
// -X, tar --xattrs) ask for the list twice (its size, then the list) and
// then for the ACL by name; for one attribute timeout the second list and
// every Getxattr are answered without an RPC, as capsAbsent does for the
// capability attribute, with the same staleness: an attribute the host
// adds meanwhile is seen when the timeout ends.
func (n *node) xattrsAbsent() {
	if !n.knowsXattrsAbsence() {
		return
	}
	n.mu.Lock()
	n.noXattrsUntil = monoNow() + int64(n.m.cache.attr)
	n.noCapsUntil = n.noXattrsUntil
	n.mu.Unlock()
}

// knowsXattrsAbsence reports whether n's mount keeps what xattrsAbsent
// records (an attribute timeout, and not proc, sysfs or cgroup); an Open
// there asks the server whether the file has extended attributes
// (OpenRequest.probe_xattrs), which spares the Listxattr cp -a sends
// for every file it copies.
func (n *node) knowsXattrsAbsence() bool { return n.m.cache.attr > 0 && !n.m.special }

// xattrsKnownAbsent reports whether n is known to have no extended
// attribute.
func (n *node) xattrsKnownAbsent() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return monoNow() < n.noXattrsUntil
}

// capsUnknown forgets what capsAbsent and xattrsAbsent recorded: an
// extended attribute of n is being changed through this client.
func (n *node) capsUnknown() {
	n.mu.Lock()
	n.noCapsUntil, n.noXattrsUntil = 0, 0
	n.mu.Unlock()
}

// dirChanged keeps the attributes of directory n the server sent with a
// change this client made in it. The kernel drops a directory's
// attributes after every change and, to check permissions
// (default_permissions), asks for them before the next one: that GETATTR
// is answered from these, without a call, while the attribute timeout
// runs. Of concurrent changes' replies the one with the latest ctime wins.
func (n *node) dirChanged(a *qtfsv1.Attr) {
	if a == nil || n.m.cache.attr <= 0 || n.m.special || a.GetIno() != n.StableAttr().Ino {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old := n.keptAttr; old != nil && (old.GetCtimeSec() > a.GetCtimeSec() ||
		old.GetCtimeSec() == a.GetCtimeSec() && old.GetCtimeNsec() > a.GetCtimeNsec()) {
		return
	}
	n.keptAttr, n.keptUntil = a, monoNow()+int64(n.m.cache.attr)
}

// keepOpenAttr keeps the attributes the Open of a /proc or /sys file
// returned: reading such a file makes the kernel drop its atime, and the
// fstat(2) that follows most opens (stdio, Python, Go's os.ReadFile) would
// cost a GETATTR call; it is answered from these while the mount's
// attribute timeout for such files runs.
func (n *node) keepOpenAttr(a *qtfsv1.Attr) {
	if a == nil || n.m.specialTTL <= 0 {
		return
	}
	n.mu.Lock()
	n.keptAttr, n.keptUntil = a, monoNow()+int64(n.m.specialTTL)
	n.mu.Unlock()
}

// takeKeptAttr returns, once, the attributes dirChanged or keepOpenAttr
// kept if they are still fresh.
func (n *node) takeKeptAttr() *qtfsv1.Attr {
	n.mu.Lock()
	defer n.mu.Unlock()
	a := n.keptAttr
	if a == nil {
		return nil
	}
	n.keptAttr = nil
	if monoNow() > n.keptUntil {
		return nil
	}
	return a
}
