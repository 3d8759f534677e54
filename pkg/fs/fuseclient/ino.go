package fuseclient

import "sync"

// Inode numbers the mount reports are built from the host's (dev, ino):
//
//	direct:  devIndex<<48 | ino   devIndex < 2^15, ino < 2^48, result > 1
//	table:   1<<63 | n            everything else, numbered in order seen
//
// devIndex is 0 for the device of the mount root, so the files of the
// mounted filesystem keep their host inode numbers. Both forms are stable
// for the life of the mount and never collide with each other.
const (
	inoBits      = 48
	maxDevIndex  = 1<<(63-inoBits) - 1
	tableInoBase = uint64(1) << 63
)

type devIno struct{ dev, ino uint64 }

// inoMap hands out the mount's inode numbers. It only grows: with one
// entry per device, plus one per host inode number too large for the
// direct form (rare: overlayfs with xino, some network filesystems).
type inoMap struct {
	mu    sync.Mutex
	devs  map[uint64]uint64
	table map[devIno]uint64
}

func newInoMap(rootDev uint64) *inoMap {
	return &inoMap{
		devs:  map[uint64]uint64{rootDev: 0},
		table: map[devIno]uint64{},
	}
}

// ino returns the mount's inode number for host (dev, ino).
func (m *inoMap) ino(dev, ino uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	idx, ok := m.devs[dev]
	if !ok && len(m.devs) <= maxDevIndex {
		idx = uint64(len(m.devs))
		m.devs[dev] = idx
		ok = true
	}
	if ok && ino < 1<<inoBits {
		if n := idx<<inoBits | ino; n > 1 {
			return n
		}
	}
	k := devIno{dev, ino}
	if n, ok := m.table[k]; ok {
		return n
	}
	n := tableInoBase | uint64(len(m.table)+1)
	m.table[k] = n
	return n
}
