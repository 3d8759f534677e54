package fuseclient

import (
	"context"
	"os"

	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/session"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// HostStatfs answers statfs(2) of f, a file this process opened, when it
// lies on a mount this process serves: the host's statfs of that path,
// with the host's filesystem type and flags, which the kernel's FUSE
// client cannot report (it always says FUSE_SUPER_MAGIC). The walk on the
// host runs as uid/gid. ok is false for a file of any other filesystem,
// or one reached through a bind of a mount elsewhere.
func HostStatfs(f *os.File, uid, gid uint32) (st unix.Statfs_t, ok bool, err error) {
	m, rel, ok := servedPath(f)
	if !ok {
		return st, false, nil
	}
	resp, e := session.Call(context.Background(), m.sess, "Statfs", qtfsv1.FileSystemClient.Statfs,
		&qtfsv1.StatfsRequest{Mount: m.id, Caller: &qtfsv1.Caller{Uid: uid, Gid: gid}, Path: []byte(rel)}, m.callOpts())
	if e != 0 {
		return st, true, e
	}
	st = unix.Statfs_t{
		Type:    resp.GetType(),
		Bsize:   int64(resp.GetBsize()),
		Blocks:  resp.GetBlocks(),
		Bfree:   resp.GetBfree(),
		Bavail:  resp.GetBavail(),
		Files:   resp.GetFiles(),
		Ffree:   resp.GetFfree(),
		Namelen: int64(resp.GetNamelen()),
		Frsize:  int64(resp.GetFrsize()),
		Flags:   int64(resp.GetFlags()),
	}
	return st, true, nil
}
