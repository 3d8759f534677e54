package fs

import (
	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// AttrFromStat converts a host stat(2) result into the wire's Attr.
func AttrFromStat(st *unix.Stat_t) *qtfsv1.Attr {
	return &qtfsv1.Attr{
		Ino:       st.Ino,
		Dev:       st.Dev,
		Mode:      st.Mode,
		Nlink:     uint32(st.Nlink),
		Uid:       st.Uid,
		Gid:       st.Gid,
		Rdev:      st.Rdev,
		Size:      st.Size,
		Blocks:    st.Blocks,
		Blksize:   uint32(st.Blksize),
		AtimeSec:  st.Atim.Sec,
		AtimeNsec: uint32(st.Atim.Nsec),
		MtimeSec:  st.Mtim.Sec,
		MtimeNsec: uint32(st.Mtim.Nsec),
		CtimeSec:  st.Ctim.Sec,
		CtimeNsec: uint32(st.Ctim.Nsec),
	}
}
