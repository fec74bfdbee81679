package index

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"

	"github.com/cairn-backup/cairn/repo"
	"github.com/dgraph-io/badger/v4"
)

// Pack serials. A blob's entry names its pack by a 4-byte serial local to this index instead
// of the 16-byte pack id, which keeps an index entry under 64 bytes. A serial is assigned when
// the index first learns a pack, from a counter (m/pack-serial, the last serial assigned, in
// decimal) written in the same transaction as the pack's p/ and pn/ keys. Serials are never
// reused, not even after DropPack: a blob entry left behind by a dropped pack then names a
// serial that resolves to nothing (it reads as absent), never to another pack.

// serialMeta is the counter's meta name (key m/pack-serial).
const serialMeta = "pack-serial"

func serialKey(s uint32) []byte { return binary.BigEndian.AppendUint32([]byte("pn/"), s) }

// packValue is a p/ value: the pack's size (u64 LE) and serial (u32 LE).
func packValue(size int64, serial uint32) []byte {
	return binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint64(make([]byte, 0, 12), uint64(size)), serial)
}

// decodePackValue reads a p/ value; ok is false for one that is not 12 bytes or has serial 0,
// which is never assigned.
func decodePackValue(b []byte) (size int64, serial uint32, ok bool) {
	if len(b) != 12 {
		return 0, 0, false
	}
	serial = binary.LittleEndian.Uint32(b[8:])
	return int64(binary.LittleEndian.Uint64(b)), serial, serial != 0
}

// loadSerial reads the last serial assigned, at Open.
func (ix *Index) loadSerial() error {
	v, err := ix.Meta(serialMeta)
	if err != nil || v == "" {
		return err
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return fmt.Errorf("index %s: corrupt pack serial counter %q", ix.dir, v)
	}
	ix.lastSerial = uint32(n)
	ix.packs.fit(ix.lastSerial)
	return nil
}

// registerPack records a pack's size and returns its serial: the one it has if the index
// knows it already (a gc's repack adds blobs to a known pack, and two syncs may learn the same
// pack at once), else the next one.
//
// Several goroutines call AddPack at once (parallel pack uploads, a sync). packMu makes the
// read of p/<id>, the choice of the serial and the commit one step: no two packs get one
// serial, and a pack learned twice at once keeps the serial its first registration gave it.
// The counter lives in memory under packMu too, and moves on only once the transaction that
// stores it has committed; one process holds the index (Badger's directory lock), so no other
// writer exists. The transaction still runs through update: a DropPack of the same pack can
// conflict with it, and the retry then reads p/<id> again.
func (ix *Index) registerPack(id repo.PackID, size int64) (uint32, error) {
	ix.packMu.Lock()
	defer ix.packMu.Unlock()
	var serial uint32
	fresh := false
	err := ix.update(func(txn *badger.Txn) error {
		fresh = false
		item, err := txn.Get(packKey(id))
		switch {
		case err == nil:
			var ok bool
			if err := item.Value(func(v []byte) error { _, serial, ok = decodePackValue(v); return nil }); err != nil {
				return err
			}
			if ok {
				return txn.Set(packKey(id), packValue(size, serial))
			}
			// An unreadable p/ value: the pack is registered again under a new serial.
		case !errors.Is(err, badger.ErrKeyNotFound):
			return err
		}
		if ix.lastSerial == math.MaxUint32 {
			return fmt.Errorf("index %s: out of pack serials (%d packs indexed since it was made): move it away and cairn builds a new one", ix.dir, uint64(math.MaxUint32))
		}
		serial, fresh = ix.lastSerial+1, true
		if err := txn.Set(packKey(id), packValue(size, serial)); err != nil {
			return err
		}
		if err := txn.Set(serialKey(serial), id[:]); err != nil {
			return err
		}
		return txn.Set([]byte("m/"+serialMeta), strconv.AppendUint(nil, uint64(serial), 10))
	})
	if err != nil {
		return 0, err
	}
	if fresh {
		ix.lastSerial = serial
		ix.packs.fit(serial)
	}
	ix.packs.put(serial, id)
	return serial, nil
}

// packOf resolves a serial to its pack id within txn, so that it sees the same snapshot as
// the blob entry that named the serial. ok is false for a serial of a dropped pack.
func (ix *Index) packOf(txn *badger.Txn, serial uint32) (id repo.PackID, ok bool, err error) {
	if id, ok = ix.packs.get(serial); ok {
		return id, true, nil
	}
	item, err := txn.Get(serialKey(serial))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return id, false, nil
	}
	if err != nil {
		return id, false, err
	}
	if err := item.Value(func(v []byte) error {
		ok = len(v) == len(id)
		copy(id[:], v)
		return nil
	}); err != nil || !ok {
		return repo.PackID{}, false, err
	}
	ix.packs.put(serial, id)
	return id, true, nil
}

// The serial → pack id cache has a slot for every serial assigned (at least 4,096), up to
// 2^20 slots of 20 bytes: 20 MiB at most, reached at a million packs (16 TiB of 16 MiB packs,
// 10^9 blobs).
const (
	minPackCacheSlots = 1 << 12
	maxPackCacheSlots = 1 << 20
)

// packCache puts the serial → pack id step of a dedup check or a restore in memory. It is
// direct-mapped (slot = serial mod its size) and grows with the counter, so up to 2^20 serials
// every pack has a slot of its own: 20 B a pack, as much as the pack ids themselves, and 40 ns
// instead of a Badger read (which doubled a lookup's time in synthindex with 125,000 packs
// and a fixed 65,536 slots). Past 2^20 serials, packs whose serials are 2^20 apart share a
// slot, and serials are handed out in the order packs are written, so the packs a backup
// writes and the recent ones it meets again keep distinct slots; a miss costs one Badger read
// in the pn/ table, a row per pack. An LRU would cost a pointer pair and an allocation per
// entry on the lookup path, and the dropped entries a map needs an eviction policy for.
//
// Entries are never wrong: serials are never reused. DropPack clears its pack's slot; a
// lookup that read pn/ in a snapshot from before the drop may put it back, so a blob entry
// the drop left behind can still resolve to the dropped pack, as it did when entries held
// the pack id itself. The load runs in the caller's transaction and is not deduplicated
// across goroutines: two readers missing one slot both read one small key, which is cheaper
// than coordinating them.
type packCache struct {
	mu    sync.Mutex
	slots []packSlot // a power of two long
}

type packSlot struct {
	serial uint32 // 0: empty (serials start at 1)
	id     repo.PackID
}

func newPackCache() *packCache {
	c := new(packCache)
	c.fit(0)
	return c
}

// fit grows the cache to a slot for each serial up to last, within maxPackCacheSlots.
func (c *packCache) fit(last uint32) {
	n := minPackCacheSlots
	for n < maxPackCacheSlots && uint64(n) <= uint64(last) {
		n <<= 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= len(c.slots) {
		return
	}
	old := c.slots
	c.slots = make([]packSlot, n)
	for _, s := range old {
		if s.serial != 0 {
			c.slots[s.serial&uint32(n-1)] = s
		}
	}
}

func (c *packCache) get(serial uint32) (repo.PackID, bool) {
	c.mu.Lock()
	s := c.slots[serial&uint32(len(c.slots)-1)]
	c.mu.Unlock()
	return s.id, s.serial == serial && serial != 0
}

func (c *packCache) put(serial uint32, id repo.PackID) {
	c.mu.Lock()
	c.slots[serial&uint32(len(c.slots)-1)] = packSlot{serial, id}
	c.mu.Unlock()
}

func (c *packCache) forget(serial uint32) {
	c.mu.Lock()
	if s := &c.slots[serial&uint32(len(c.slots)-1)]; s.serial == serial {
		*s = packSlot{}
	}
	c.mu.Unlock()
}

// packTable is every serial → pack id of one snapshot, in serial order, for a scan of all
// blobs (Blobs), whose entries come in address order, not pack order: 20 B per pack for the
// length of the scan (20 MB at 10^6 packs) instead of a Badger read for most blobs.
type packTable []packSlot

func loadPackTable(txn *badger.Txn) (packTable, error) {
	var t packTable
	o := badger.DefaultIteratorOptions
	o.Prefix = []byte("pn/")
	it := txn.NewIterator(o)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		k := it.Item().Key()[len("pn/"):]
		if len(k) != 4 {
			continue
		}
		s := packSlot{serial: binary.BigEndian.Uint32(k)}
		if err := it.Item().Value(func(v []byte) error {
			if len(v) == len(s.id) {
				copy(s.id[:], v)
				t = append(t, s) // keys are big-endian: t stays sorted
			}
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func (t packTable) find(serial uint32) (repo.PackID, bool) {
	i, ok := slices.BinarySearchFunc(t, serial, func(s packSlot, serial uint32) int { return cmp.Compare(s.serial, serial) })
	if !ok {
		return repo.PackID{}, false
	}
	return t[i].id, true
}
