package fuseclient

import (
	"testing"
	"time"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// testMountFS is a mount's shared state with policy auto, for the
// listing bookkeeping (no server: nothing here makes an RPC).
func testMountFS() *mountFS {
	return &mountFS{cache: CacheAuto.params()}
}

// TestListingBookkeeping checks how listings are answered, changed,
// expired, dropped on FORGET and bounded.
func TestListingBookkeeping(t *testing.T) {
	attr := func(nlink uint32, mode uint32) *qtfsv1.Attr {
		return &qtfsv1.Attr{Ino: 7, Mode: mode, Nlink: nlink, Size: 3}
	}
	t.Run("answers", func(t *testing.T) {
		m := testMountFS()
		d := &node{m: m}
		d.newDirListing(time.Now())
		d.noteChange(listingChange{name: "file", attr: attr(1, 0o100644)})
		d.noteChange(listingChange{name: "linked", attr: attr(2, 0o100644)})
		d.noteChange(listingChange{name: "dir", attr: attr(3, 0o40755)})
		d.noteChange(listingChange{name: "unknown"})
		for _, tc := range []struct {
			name      string
			found, ok bool
		}{
			{"file", true, true},
			{"dir", true, true},     // directories have several links
			{"linked", true, false}, // a file with other names: ask
			{"unknown", true, false},
			{"missing", false, true}, // a complete listing: ENOENT
		} {
			_, remaining, found, ok := d.listed(tc.name)
			if found != tc.found || ok != tc.ok {
				t.Errorf("%s: found %v ok %v, want %v %v", tc.name, found, ok, tc.found, tc.ok)
			}
			if ok && (remaining <= 0 || remaining > m.cache.entry) {
				t.Errorf("%s: remaining validity %v", tc.name, remaining)
			}
		}
		d.noteChange(listingChange{name: "file", removed: true})
		if _, _, found, ok := d.listed("file"); found || !ok {
			t.Errorf("removed name: found %v ok %v", found, ok)
		}
		d.dropListing()
		if _, _, _, ok := d.listed("dir"); ok {
			t.Error("a dropped listing still answers")
		}
	})
	t.Run("expires", func(t *testing.T) {
		m := testMountFS()
		d := &node{m: m}
		d.newDirListing(time.Now().Add(-2 * m.cache.entry))
		if _, _, _, ok := d.listed("x"); ok {
			t.Error("an expired listing answers")
		}
	})
	t.Run("cache none keeps none", func(t *testing.T) {
		m := &mountFS{cache: CacheNone.params(), directIO: true}
		d := &node{m: m}
		d.newDirListing(time.Now())
		if _, _, _, ok := d.listed("x"); ok || len(m.listings.nodes) != 0 {
			t.Error("cache=none keeps a listing")
		}
	})
	t.Run("sweep drops expired listings", func(t *testing.T) {
		m := testMountFS()
		old, fresh := &node{m: m}, &node{m: m}
		old.newDirListing(time.Now().Add(-2 * m.cache.entry))
		m.listings.nextSweep = time.Time{}
		fresh.newDirListing(time.Now())
		if _, ok := m.listings.nodes[old]; ok || old.dir.list != nil {
			t.Error("an expired listing was kept by the sweep")
		}
		if _, ok := m.listings.nodes[fresh]; !ok || fresh.dir.list == nil {
			t.Error("a valid listing was dropped by the sweep")
		}
		if m.listings.total != 1 {
			t.Errorf("total %d, want 1", m.listings.total)
		}
	})
	t.Run("forget drops the listing", func(t *testing.T) {
		m := testMountFS()
		d := &node{m: m}
		d.newDirListing(time.Now())
		d.OnForget()
		if len(m.listings.nodes) != 0 || m.listings.total != 0 || d.dir.list != nil {
			t.Errorf("after OnForget: %d listings, total %d", len(m.listings.nodes), m.listings.total)
		}
	})
	t.Run("budget", func(t *testing.T) {
		m := testMountFS()
		var nodes []*node
		for range 3 {
			n := &node{m: m}
			n.newDirListing(time.Now())
			nodes = append(nodes, n)
		}
		// One listing as large as the whole budget pushes the others out.
		big := &node{m: m}
		big.newDirListing(time.Now())
		m.listings.add(big, maxListedEntries)
		for i, n := range nodes {
			if n.dir.list != nil {
				t.Errorf("listing %d kept past the budget", i)
			}
		}
		if big.dir.list == nil || m.listings.total != maxListedEntries+1 {
			t.Errorf("the new listing: kept %v, total %d", big.dir.list != nil, m.listings.total)
		}
	})
	t.Run("journal replays changes made during a fetch", func(t *testing.T) {
		m := testMountFS()
		d := &node{m: m}
		d.mu.Lock()
		d.dirStateLocked().fetching = true
		d.mu.Unlock()
		d.noteChange(listingChange{name: "made", attr: attr(1, 0o100644)})
		d.noteChange(listingChange{name: "gone", removed: true})
		d.mu.Lock()
		journal := d.dir.journal
		d.mu.Unlock()
		l := &listing{entries: map[string]*qtfsv1.Attr{"gone": attr(1, 0o100644)}}
		for _, c := range journal {
			l.apply(c)
		}
		if _, ok := l.entries["gone"]; ok || l.entries["made"] == nil {
			t.Errorf("after the journal: %v", l.entries)
		}
	})
}
