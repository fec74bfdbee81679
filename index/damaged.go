package index

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/cairn-backup/cairn/repo"
	"github.com/dgraph-io/badger/v4"
)

// Copies a reader found damaged (docs/design.md, "A stored block that does not open is read
// once more"). The index keeps naming them for reads: a copy judged damaged by reads that went
// wrong on the way (a faulty link for a while) reads again once they go right, where an index
// that forgot it would fail every restore that needs it until a rebuild. Backups do not
// deduplicate against them: the next backup that meets the same data stores it again, and its
// new location replaces the damaged one for every reader.
//
// Key `cd/<address>`: the damaged copy's pack id (16 bytes) and offset (4 bytes, big-endian).
// The marks are few (each is a damaged block), so all of them are held in memory too, and a
// lookup costs nothing while there are none.

const damagedPrefix = "cd/"

func damagedKey(a repo.Address) []byte { return append([]byte(damagedPrefix), a[:]...) }

// damagedCopy is where a damaged copy is: its pack and offset.
type damagedCopy struct {
	pack   repo.PackID
	offset uint32
}

func (d damagedCopy) encode() []byte {
	b := make([]byte, len(d.pack)+4)
	copy(b, d.pack[:])
	binary.BigEndian.PutUint32(b[len(d.pack):], d.offset)
	return b
}

func decodeDamaged(v []byte) (damagedCopy, bool) {
	var d damagedCopy
	if len(v) != len(d.pack)+4 {
		return d, false
	}
	copy(d.pack[:], v)
	d.offset = binary.BigEndian.Uint32(v[len(d.pack):])
	return d, true
}

// damagedMarks is the index's marks in memory.
type damagedMarks struct {
	n  atomic.Int32 // len(at): lookups skip the map while it is 0
	mu sync.RWMutex
	at map[repo.Address]damagedCopy
}

// loadDamaged reads the marks at open.
func (ix *Index) loadDamaged() error {
	ix.damaged.at = map[repo.Address]damagedCopy{}
	err := ix.scan(damagedPrefix, true, func(k, v []byte) error {
		var a repo.Address
		if len(k) != len(a) {
			return nil
		}
		copy(a[:], k)
		if d, ok := decodeDamaged(v); ok {
			ix.damaged.at[a] = d
		}
		return nil
	})
	ix.damaged.n.Store(int32(len(ix.damaged.at)))
	return err
}

// MarkDamaged records that the copy of a at loc is damaged: Damaged reports it from now on,
// also after a restart, until the index names another copy of a.
func (ix *Index) MarkDamaged(a repo.Address, loc repo.Location) error {
	d := damagedCopy{pack: loc.Pack, offset: loc.Offset}
	if err := ix.update(func(txn *badger.Txn) error { return txn.Set(damagedKey(a), d.encode()) }); err != nil {
		return err
	}
	ix.damaged.mu.Lock()
	defer ix.damaged.mu.Unlock()
	ix.damaged.at[a] = d
	ix.damaged.n.Store(int32(len(ix.damaged.at)))
	return nil
}

// Damaged reports whether the copy of a at loc (where a lookup of a found it) was marked
// damaged: a backup then stores a again instead of deduplicating against it.
func (ix *Index) Damaged(a repo.Address, loc repo.Location) bool {
	if ix.damaged.n.Load() == 0 {
		return false
	}
	ix.damaged.mu.RLock()
	defer ix.damaged.mu.RUnlock()
	d, ok := ix.damaged.at[a]
	return ok && d.pack == loc.Pack && d.offset == loc.Offset
}

// clearDamaged drops the marks of entries that now name another copy (AddPack: the block was
// stored again). Nothing to do, and no lock taken, while there are no marks.
func (ix *Index) clearDamaged(entries []repo.PackEntry) error {
	if ix.damaged.n.Load() == 0 {
		return nil
	}
	ix.damaged.mu.Lock()
	defer ix.damaged.mu.Unlock()
	var gone []repo.Address
	for _, e := range entries {
		if d, ok := ix.damaged.at[e.Addr]; ok && (d.pack != e.Pack || d.offset != e.Offset) {
			gone = append(gone, e.Addr)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := ix.deleteKeysOf(gone, damagedKey); err != nil {
		return err
	}
	for _, a := range gone {
		delete(ix.damaged.at, a)
	}
	ix.damaged.n.Store(int32(len(ix.damaged.at)))
	return nil
}
