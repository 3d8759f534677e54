package fuseclient

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// overflowID stands for the caller when a request carries none (the
// kernel's overflow uid/gid, "nobody").
const overflowID = 65534

// groupsTTL is how long a process's supplementary groups are reused.
const groupsTTL = 2 * time.Second

// maxGroupsCache bounds the groups cache; it is emptied when full.
const maxGroupsCache = 4096

// maxGroups bounds the groups read for one process (NGROUPS_MAX).
const maxGroups = 65536

// groupsCache remembers the supplementary groups of recent callers, read
// from /proc/<pid>/status. The kernel checked permissions on the DPU with
// them (default_permissions); the host needs them too, or a file a user
// may reach only through a supplementary group would be refused there.
type groupsCache struct {
	procDir string
	mu      sync.Mutex
	m       map[uint32]groupsEntry
}

type groupsEntry struct {
	uid, gid uint32
	groups   []uint32
	at       time.Time
}

func newGroupsCache(procDir string) *groupsCache {
	return &groupsCache{procDir: procDir, m: map[uint32]groupsEntry{}}
}

// get returns the supplementary groups of pid, which must be running as
// uid/gid; nil when unknown.
func (c *groupsCache) get(pid, uid, gid uint32) []uint32 {
	if pid == 0 || uid == 0 {
		// The kernel itself, or root, whose access does not hang on groups.
		return nil
	}
	now := time.Now()
	c.mu.Lock()
	e, ok := c.m[pid]
	c.mu.Unlock()
	if ok && e.uid == uid && e.gid == gid && now.Sub(e.at) < groupsTTL {
		return e.groups
	}
	groups := readGroups(c.procDir, pid)
	c.mu.Lock()
	if len(c.m) >= maxGroupsCache {
		clear(c.m)
	}
	c.m[pid] = groupsEntry{uid: uid, gid: gid, groups: groups, at: now}
	c.mu.Unlock()
	return groups
}

// readGroups reads the supplementary groups of pid from /proc/<pid>/status.
func readGroups(procDir string, pid uint32) []uint32 {
	data, err := os.ReadFile(procDir + "/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return nil
	}
	return parseGroups(data)
}

// parseGroups parses the "Groups:" line of a /proc/<pid>/status file; nil
// when there is none or it does not parse.
func parseGroups(status []byte) []uint32 {
	const key = "\nGroups:"
	i := bytes.Index(status, []byte(key))
	if i < 0 {
		return nil
	}
	line := status[i+len(key):]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	var out []uint32
	for _, f := range bytes.Fields(line) {
		g, err := strconv.ParseUint(string(f), 10, 32)
		if err != nil {
			return nil
		}
		if len(out) == maxGroups {
			break
		}
		out = append(out, uint32(g))
	}
	return out
}

// caller builds the Caller of a request from the FUSE context.
func (m *mountFS) caller(ctx context.Context) *qtfsv1.Caller {
	c, ok := fuse.FromContext(ctx)
	if !ok {
		return &qtfsv1.Caller{Uid: overflowID, Gid: overflowID}
	}
	return &qtfsv1.Caller{
		Uid:    c.Uid,
		Gid:    c.Gid,
		Pid:    c.Pid,
		Groups: m.groups.get(c.Pid, c.Uid, c.Gid),
	}
}

// requestCaller is the caller of FUSE request ctx as a call made for it
// names it (session.CallOptions.For): the call is cancelled once the
// request was interrupted and its caller is being killed. None when ctx
// is no FUSE request.
func requestCaller(ctx context.Context) session.Caller {
	fc, ok := ctx.(*fuse.Context)
	if !ok {
		return session.Caller{}
	}
	return session.Caller{Interrupted: fc.Done(), Pid: fc.Pid}
}

// callOpts are the options of a call of the mount: its operation timeout.
func (m *mountFS) callOpts() session.CallOptions { return session.CallOptions{Timeout: m.timeout} }

// callOptsFor are callOpts for a call made for FUSE request ctx, which
// the death of the request's caller cancels (requestCaller).
func (m *mountFS) callOptsFor(ctx context.Context) session.CallOptions {
	return session.CallOptions{Timeout: m.timeout, For: requestCaller(ctx)}
}
