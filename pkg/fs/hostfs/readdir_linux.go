package hostfs

import (
	"context"
	"encoding/binary"
	"syscall"

	"golang.org/x/sys/unix"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// direntBufSize is the getdents64 buffer of one directory handle.
const direntBufSize = 32 << 10

// Wire size estimates for bounding a Readdir reply.
const (
	direntOverhead = 40  // name length prefix, ino, type, offset, tags
	attrOverhead   = 140 // an Attr message
)

// Readdir returns entries of a directory handle after the entry whose
// cookie is offset ("." and ".." are left out).
func (s *Server) Readdir(ctx context.Context, req *qtfsv1.ReaddirRequest) (*qtfsv1.ReaddirResponse, error) {
	const op = "Readdir"
	resp := &qtfsv1.ReaddirResponse{}
	err := s.onHandle(ctx, req.GetHandle(), &resp.Errno, func(_ *session, h *handle) syscall.Errno {
		if !h.dir {
			return syscall.ENOTDIR
		}
		max := int(req.GetMaxEntries())
		if max <= 0 || max > maxReaddirEntries {
			max = maxReaddirEntries
		}
		h.dirMu.Lock()
		defer h.dirMu.Unlock()
		var e syscall.Errno
		if req.GetPlus() {
			// Entries are stat'ed as the caller who opened the directory,
			// so search permission holds as it would locally.
			e = s.creds.run(h.caller, func() syscall.Errno { return s.readdir(op, h, req.GetOffset(), max, true, resp) })
		} else {
			e = s.readdir(op, h, req.GetOffset(), max, false, resp)
		}
		if e != 0 {
			resp.Entries, resp.Eof = nil, false
		}
		return e
	})
	return reply(resp, err)
}

// listInline lists the first entries of directory fd, with attributes,
// into an Open's reply (readdir_inline), and leaves fd at its start for
// the handle's own Readdir calls. The caller's identity is in force (Open
// runs as the caller), as for Readdir.
func (s *Server) listInline(op string, fd int, max uint32, resp *qtfsv1.OpenResponse) syscall.Errno {
	h := &handle{fd: fd, dir: true}
	var rd qtfsv1.ReaddirResponse
	if e := s.readdir(op, h, 0, min(int(max), maxReaddirEntries), true, &rd); e != 0 {
		return e
	}
	if _, err := unix.Seek(fd, 0, unix.SEEK_SET); err != nil {
		return s.errnoOf(op, err)
	}
	resp.Entries, resp.EntriesEof = rd.Entries, rd.Eof
	return 0
}

// readdir fills resp from h; h.dirMu is held.
func (s *Server) readdir(op string, h *handle, offset uint64, max int, plus bool, resp *qtfsv1.ReaddirResponse) syscall.Errno {
	if offset != h.dirPos {
		if _, err := unix.Seek(h.fd, int64(offset), unix.SEEK_SET); err != nil {
			return s.errnoOf(op, err)
		}
		h.dirPos = offset
	}
	if h.dirBuf == nil {
		h.dirBuf = make([]byte, direntBufSize)
	}
	budget := s.maxData
	for {
		n, err := unix.Getdents(h.fd, h.dirBuf)
		if err != nil {
			return s.errnoOf(op, err)
		}
		if n == 0 {
			resp.Eof = true
			return 0
		}
		buf := h.dirBuf[:n]
		for len(buf) > 0 {
			// struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name.
			if len(buf) < 19 {
				return s.errnoOf(op, syscall.EIO)
			}
			ino := binary.NativeEndian.Uint64(buf[0:])
			off := binary.NativeEndian.Uint64(buf[8:])
			reclen := int(binary.NativeEndian.Uint16(buf[16:]))
			typ := buf[18]
			if reclen < 19 || reclen > len(buf) {
				return s.errnoOf(op, syscall.EIO)
			}
			name := buf[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			rest := buf[reclen:]
			if string(name) == "." || string(name) == ".." {
				buf = rest
				h.dirPos = off
				continue
			}
			cost := direntOverhead + len(name)
			if plus {
				cost += attrOverhead
			}
			if len(resp.Entries) >= max || cost > budget {
				// Stop before this entry; put the directory position
				// right after the last entry returned.
				if _, err := unix.Seek(h.fd, int64(h.dirPos), unix.SEEK_SET); err != nil {
					return s.errnoOf(op, err)
				}
				return 0
			}
			budget -= cost
			ent := &qtfsv1.DirEntry{Name: append([]byte(nil), name...), Ino: ino, Type: uint32(typ) << 12, Offset: off}
			if plus {
				var st unix.Stat_t
				// An entry that vanished meanwhile is returned without
				// attributes.
				if unix.Fstatat(h.fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW) == nil {
					ent.Attr = attrOf(&st)
					if ent.Type == 0 {
						ent.Type = st.Mode & unix.S_IFMT
					}
				}
			}
			resp.Entries = append(resp.Entries, ent)
			h.dirPos = off
			buf = rest
		}
	}
}
