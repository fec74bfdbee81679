package index

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cairn-backup/cairn/repo"
	"github.com/dgraph-io/badger/v4"
)

var _ repo.Index = (*Index)(nil)

func blobKey(a repo.Address) []byte { return append([]byte("c/"), a[:]...) }
func packKey(p repo.PackID) []byte  { return append([]byte("p/"), p[:]...) }

// maxBlobValue is the longest blob entry value: five bytes for each of four uvarints of at
// most 32 bits, and the type.
const maxBlobValue = 4*binary.MaxVarintLen32 + 1

// encodeBlob is a blob entry's value: its pack's serial, offset, stored length and plain
// length (uvarints) and type (one byte): 10-14 bytes for a block in a 16 MiB pack.
func encodeBlob(serial uint32, l repo.Location) []byte {
	b := make([]byte, 0, maxBlobValue)
	b = binary.AppendUvarint(b, uint64(serial))
	b = binary.AppendUvarint(b, uint64(l.Offset))
	b = binary.AppendUvarint(b, uint64(l.Length))
	b = binary.AppendUvarint(b, uint64(l.PlainLen))
	return append(b, byte(l.Type))
}

// decodeBlob reads a blob entry's value: the serial and the location but for the pack id.
func decodeBlob(b []byte) (serial uint32, l repo.Location, ok bool) {
	var v [4]uint32
	for i := range v {
		n, w := binary.Uvarint(b)
		if w <= 0 || n > math.MaxUint32 {
			return 0, repo.Location{}, false
		}
		v[i], b = uint32(n), b[w:]
	}
	if len(b) != 1 || v[0] == 0 {
		return 0, repo.Location{}, false
	}
	return v[0], repo.Location{Offset: v[1], Length: v[2], PlainLen: v[3], Type: repo.BlobType(b[0])}, true
}

// Lookup returns where a blob is stored. A blob whose entry names a dropped pack is absent.
func (ix *Index) Lookup(a repo.Address) (repo.Location, bool, error) {
	var loc repo.Location
	found := false
	err := ix.db.View(func(txn *badger.Txn) error {
		var err error
		loc, found, err = ix.lookupIn(txn, a)
		return err
	})
	return loc, found, err
}

// LookupBatch is Lookup for many blobs in one read transaction: a transaction costs the
// caller two hand-offs to Badger's watermark goroutine, more than a lookup itself.
func (ix *Index) LookupBatch(addrs []repo.Address, locs []repo.Location, found []bool) error {
	if len(locs) < len(addrs) || len(found) < len(addrs) {
		return fmt.Errorf("index lookup: %d addresses, room for %d answers", len(addrs), min(len(locs), len(found)))
	}
	return ix.db.View(func(txn *badger.Txn) error {
		for i, a := range addrs {
			var err error
			if locs[i], found[i], err = ix.lookupIn(txn, a); err != nil {
				return err
			}
		}
		return nil
	})
}

// lookupIn is one blob's lookup in txn. A blob whose entry names a dropped pack is absent.
func (ix *Index) lookupIn(txn *badger.Txn, a repo.Address) (repo.Location, bool, error) {
	item, err := txn.Get(blobKey(a))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return repo.Location{}, false, nil
	}
	if err != nil {
		return repo.Location{}, false, err
	}
	var serial uint32
	var loc repo.Location
	found := false
	if err := item.Value(func(v []byte) error {
		serial, loc, found = decodeBlob(v)
		return nil
	}); err != nil || !found {
		return repo.Location{}, false, err
	}
	loc.Pack, found, err = ix.packOf(txn, serial)
	if !found || err != nil {
		return repo.Location{}, false, err
	}
	return loc, true, nil
}

// AddPack records a stored pack and its blobs, which are all in it (entries name pack id).
// The pack's serial is assigned and stored first, in its own transaction, so a blob entry
// that a reader sees always names a serial it can resolve.
func (ix *Index) AddPack(id repo.PackID, size int64, entries []repo.PackEntry) error {
	for _, e := range entries {
		if e.Pack != id {
			return fmt.Errorf("index pack %s: blob %x is in pack %s", id, e.Addr[:8], e.Pack)
		}
	}
	serial, err := ix.registerPack(id, size)
	if err != nil {
		return err
	}
	wb := ix.db.NewWriteBatch()
	defer wb.Cancel()
	for _, e := range entries {
		if err := wb.Set(blobKey(e.Addr), encodeBlob(serial, e.Location)); err != nil {
			return err
		}
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	return ix.clearDamaged(entries)
}

// Packs calls fn for every pack the index knows.
func (ix *Index) Packs(fn func(id repo.PackID, size int64) error) error {
	return ix.scan("p/", true, func(k, v []byte) error {
		var id repo.PackID
		size, _, ok := decodePackValue(v)
		if len(k) != len(id) || !ok {
			return nil
		}
		copy(id[:], k)
		return fn(id, size)
	})
}

// Blobs calls fn for every indexed blob. An entry that cannot be read, or names a dropped
// pack, comes with what it says and a zero pack id, which names no pack the index knows.
func (ix *Index) Blobs(fn func(e repo.PackEntry) error) error {
	return ix.db.View(func(txn *badger.Txn) error {
		packs, err := loadPackTable(txn)
		if err != nil {
			return err
		}
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte("c/")
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var e repo.PackEntry
			copy(e.Addr[:], it.Item().Key()[2:])
			if err := it.Item().Value(func(v []byte) error {
				serial, loc, ok := decodeBlob(v)
				if ok {
					e.Location = loc
					e.Pack, _ = packs.find(serial)
				}
				return nil
			}); err != nil {
				return err
			}
			if err := fn(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// DropPack forgets a pack, its serial, and those of addrs whose entries still point into it
// (a blob that gc moved to another pack keeps its new entry).
func (ix *Index) DropPack(id repo.PackID, addrs []repo.Address) error {
	serial, known, err := ix.serialOf(id)
	if err != nil {
		return err
	}
	for known && len(addrs) > 0 {
		part := addrs[:min(2048, len(addrs))]
		addrs = addrs[len(part):]
		if err := ix.update(func(txn *badger.Txn) error {
			for _, a := range part {
				item, err := txn.Get(blobKey(a))
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				var s uint32
				_ = item.Value(func(v []byte) error { s, _, _ = decodeBlob(v); return nil })
				if s != serial {
					continue
				}
				if err := txn.Delete(blobKey(a)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	if err := ix.update(func(txn *badger.Txn) error {
		if known {
			if err := txn.Delete(serialKey(serial)); err != nil {
				return err
			}
		}
		return txn.Delete(packKey(id))
	}); err != nil {
		return err
	}
	if known {
		ix.packs.forget(serial)
	}
	return nil
}

// serialOf returns the serial of a pack the index knows. Without one (an unknown pack), no
// blob entry names the pack: AddPack stores the serial before the blobs, DropPack removes it
// after them.
func (ix *Index) serialOf(id repo.PackID) (serial uint32, known bool, err error) {
	err = ix.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(packKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { _, serial, known = decodePackValue(v); return nil })
	})
	return serial, known, err
}

// HasPack reports whether the index knows a pack.
func (ix *Index) HasPack(id repo.PackID) (bool, error) {
	found := false
	err := ix.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(packKey(id))
		if err == nil {
			found = true
			return nil
		}
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		return err
	})
	return found, err
}

// ForgetBlobs deletes the location entries of addrs (damaged copies: the next backup that
// meets the same data stores it again).
func (ix *Index) ForgetBlobs(addrs []repo.Address) error { return ix.deleteKeysOf(addrs, blobKey) }

// deleteKeysOf deletes key(a) for each a of addrs, 2048 to a transaction.
func (ix *Index) deleteKeysOf(addrs []repo.Address, key func(repo.Address) []byte) error {
	for len(addrs) > 0 {
		part := addrs[:min(2048, len(addrs))]
		addrs = addrs[len(part):]
		if err := ix.update(func(txn *badger.Txn) error {
			for _, a := range part {
				if err := txn.Delete(key(a)); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}
