package index

import (
	"encoding/binary"
	"errors"

	"github.com/cairn-backup/cairn/repo"
	"github.com/dgraph-io/badger/v4"
)

var (
	_ repo.Index     = (*Index)(nil)
	_ repo.BlobIndex = (*Index)(nil)
)

const locLen = 16 + 4 + 4 + 4 + 1

func blobKey(a repo.Address) []byte { return append([]byte("c/"), a[:]...) }
func refKey(a repo.Address) []byte  { return append([]byte("r/"), a[:]...) }
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

// Refs returns a blob's reference count.
func (ix *Index) Refs(a repo.Address) (uint32, error) {
	var n uint32
	err := ix.db.View(func(txn *badger.Txn) error {
		var err error
		n, err = getRefs(txn, a)
		return err
	})
	return n, err
}

func getRefs(txn *badger.Txn, a repo.Address) (uint32, error) {
	item, err := txn.Get(refKey(a))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var n uint32
	err = item.Value(func(v []byte) error {
		if len(v) == 4 {
			n = binary.LittleEndian.Uint32(v)
		}
		return nil
	})
	return n, err
}

// AddRefs adds delta to each address's count and returns the addresses that crossed zero:
// were zero before (delta > 0) or are zero after (delta < 0). Counts never go below zero.
func (ix *Index) AddRefs(addrs []repo.Address, delta int) ([]repo.Address, error) {
	ix.refsMu.Lock()
	defer ix.refsMu.Unlock()
	var crossed []repo.Address
	const batch = 4096
	for len(addrs) > 0 {
		part := addrs[:min(batch, len(addrs))]
		addrs = addrs[len(part):]
		var got []repo.Address
		err := ix.update(func(txn *badger.Txn) error {
			got = got[:0]
			pending := map[repo.Address]uint32{}
			for _, a := range part {
				if a == (repo.Address{}) {
					continue
				}
				n, ok := pending[a]
				if !ok {
					var err error
					if n, err = getRefs(txn, a); err != nil {
						return err
					}
				}
				switch {
				case delta > 0:
					if n == 0 {
						got = append(got, a)
					}
					n += uint32(delta)
				case n > 0:
					n = uint32(max(int64(n)+int64(delta), 0))
					if n == 0 {
						got = append(got, a)
					}
				}
				pending[a] = n
			}
			for a, n := range pending {
				var err error
				if n == 0 {
					err = txn.Delete(refKey(a))
				} else {
					err = txn.Set(refKey(a), binary.LittleEndian.AppendUint32(nil, n))
				}
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		crossed = append(crossed, got...)
	}
	return crossed, nil
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

// Blobs calls fn for every indexed blob with its reference count.
func (ix *Index) Blobs(fn func(e repo.PackEntry, refs uint32) error) error {
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
			n, err := getRefs(txn, e.Addr)
			if err != nil {
				return err
			}
			if err := fn(e, n); err != nil {
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
				if err := txn.Delete(refKey(a)); err != nil {
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

// ResetRefs deletes every reference count.
func (ix *Index) ResetRefs() error {
	ix.refsMu.Lock()
	defer ix.refsMu.Unlock()
	return ix.db.DropPrefix([]byte("r/"))
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
