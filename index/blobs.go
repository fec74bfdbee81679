package index

import (
	"encoding/binary"
	"errors"

	"github.com/cairn-backup/cairn/repo"
	"github.com/dgraph-io/badger/v4"
)

var _ repo.Index = (*Index)(nil)

const locLen = 16 + 4 + 4 + 4 + 1

func blobKey(a repo.Address) []byte { return append([]byte("c/"), a[:]...) }
func packKey(p repo.PackID) []byte  { return append([]byte("p/"), p[:]...) }

func encodeLoc(l repo.Location) []byte {
	b := make([]byte, 0, locLen)
	b = append(b, l.Pack[:]...)
	b = binary.LittleEndian.AppendUint32(b, l.Offset)
	b = binary.LittleEndian.AppendUint32(b, l.Length)
	b = binary.LittleEndian.AppendUint32(b, l.PlainLen)
	return append(b, byte(l.Type))
}

func decodeLoc(b []byte) (repo.Location, bool) {
	var l repo.Location
	if len(b) != locLen {
		return l, false
	}
	copy(l.Pack[:], b)
	l.Offset = binary.LittleEndian.Uint32(b[16:])
	l.Length = binary.LittleEndian.Uint32(b[20:])
	l.PlainLen = binary.LittleEndian.Uint32(b[24:])
	l.Type = repo.BlobType(b[28])
	return l, true
}

// Lookup returns where a blob is stored.
func (ix *Index) Lookup(a repo.Address) (repo.Location, bool, error) {
	var loc repo.Location
	found := false
	err := ix.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(blobKey(a))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			loc, found = decodeLoc(v)
			return nil
		})
	})
	return loc, found, err
}

// AddPack records a stored pack and its blobs.
func (ix *Index) AddPack(id repo.PackID, size int64, entries []repo.PackEntry) error {
	wb := ix.db.NewWriteBatch()
	defer wb.Cancel()
	if err := wb.Set(packKey(id), binary.LittleEndian.AppendUint64(nil, uint64(size))); err != nil {
		return err
	}
	for _, e := range entries {
		if err := wb.Set(blobKey(e.Addr), encodeLoc(e.Location)); err != nil {
			return err
		}
	}
	return wb.Flush()
}

// Packs calls fn for every pack the index knows.
func (ix *Index) Packs(fn func(id repo.PackID, size int64) error) error {
	return ix.scan("p/", true, func(k, v []byte) error {
		var id repo.PackID
		if len(k) != len(id) || len(v) != 8 {
			return nil
		}
		copy(id[:], k)
		return fn(id, int64(binary.LittleEndian.Uint64(v)))
	})
}

// Blobs calls fn for every indexed blob.
func (ix *Index) Blobs(fn func(e repo.PackEntry) error) error {
	return ix.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte("c/")
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var e repo.PackEntry
			copy(e.Addr[:], it.Item().Key()[2:])
			if err := it.Item().Value(func(v []byte) error {
				e.Location, _ = decodeLoc(v)
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

// DropPack forgets a pack and those of addrs whose entries still point into it (a blob that
// gc moved to another pack keeps its new entry).
func (ix *Index) DropPack(id repo.PackID, addrs []repo.Address) error {
	for len(addrs) > 0 {
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
				var loc repo.Location
				_ = item.Value(func(v []byte) error { loc, _ = decodeLoc(v); return nil })
				if loc.Pack != id {
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
	return ix.db.Update(func(txn *badger.Txn) error { return txn.Delete(packKey(id)) })
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
func (ix *Index) ForgetBlobs(addrs []repo.Address) error {
	for len(addrs) > 0 {
		part := addrs[:min(2048, len(addrs))]
		addrs = addrs[len(part):]
		if err := ix.update(func(txn *badger.Txn) error {
			for _, a := range part {
				if err := txn.Delete(blobKey(a)); err != nil {
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
