package index

import (
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// backupRecords holds every backup record decoded, once Backups has loaded them, so that
// listing, quota checks and the gateway's catch-up do not decode every record's JSON on each
// call (15–40 µs a record). The argument that the copy always equals the index's b/ keys is
// in docs/design.md ("Backup records in memory"); in short:
//
//   - write is held by every writer of b/ keys from before its transaction until the copy has
//     its change, and by a load from before its scan until it installs the copy;
//   - mu guards all, sorted and cost, and is held only briefly, so readers of a loaded copy
//     never wait for a write;
//   - an error from a commit drops the copy (it may have committed); an error from the
//     transaction's own function leaves it (nothing was written).
type backupRecords struct {
	write sync.Mutex

	mu     sync.Mutex
	all    map[string]*Backup // nil: not loaded
	sorted []*Backup          // all in Backups' order; nil when a change made it stale
	cost   int64              // estimated bytes the copy holds

	tooMany atomic.Bool // the records outgrew maxRecordBytes: none are kept
}

// maxRecordBytes bounds the records kept in memory (about 100,000 backups). Past it, Backups
// decodes them from the index on every call, as it did before the copy existed, until the
// index is opened again.
var maxRecordBytes int64 = 128 << 20 // a variable for tests

// recordCost estimates what a decoded record holds in memory: the struct, its fixed-size
// strings (ids, times, path) and the map entry that holds it, plus what a user wrote.
func recordCost(b *Backup) int64 {
	n := 1024 + len(b.Name) + len(b.Description) + len(b.FailReason) + len(b.VolumePath)
	for k, v := range b.Metadata {
		n += 64 + len(k) + len(v)
	}
	return int64(n)
}

// writeBackup runs fn, a transaction that leaves the record id as after (nil: deleted), and
// keeps the copy in memory in step with it.
func (ix *Index) writeBackup(id string, fn func(txn *badger.Txn) (after *Backup, err error)) error {
	rs := &ix.records
	rs.write.Lock()
	defer rs.write.Unlock()
	var after *Backup
	committing := false // fn succeeded: the error, if any, is the commit's
	err := ix.update(func(txn *badger.Txn) error {
		var err error
		after, err = fn(txn)
		committing = err == nil
		return err
	})
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.all == nil || (err != nil && !committing) {
		return err // fn refused: nothing was written
	}
	if err != nil {
		rs.all, rs.sorted, rs.cost = nil, nil, 0 // the commit failed, or may have half-succeeded: load again
		return err
	}
	rs.sorted = nil
	if old := rs.all[id]; old != nil {
		rs.cost -= recordCost(old)
	}
	if after == nil {
		delete(rs.all, id)
		return nil
	}
	// What a load would decode, not the caller's struct: times as JSON gives them back
	// (no monotonic reading, the zone JSON wrote), empty maps as none.
	c, derr := roundTrip(after)
	if derr != nil {
		rs.all, rs.sorted, rs.cost = nil, nil, 0
		return nil
	}
	rs.all[id] = c
	if rs.cost += recordCost(c); rs.cost > maxRecordBytes {
		rs.all, rs.sorted, rs.cost = nil, nil, 0
		rs.tooMany.Store(true)
	}
	return nil
}

// Backups returns every backup, oldest first (by creation time, then id). The records are the
// caller's own.
func (ix *Index) Backups() ([]*Backup, error) {
	rs := &ix.records
	if out, ok := rs.loaded(); ok {
		return out, nil
	}
	if rs.tooMany.Load() {
		return ix.decodeBackups(nil)
	}
	// Held from here to the install: no record changes between the scan and the install.
	rs.write.Lock()
	defer rs.write.Unlock()
	if out, ok := rs.loaded(); ok { // another caller loaded them meanwhile
		return out, nil
	}
	all := map[string]*Backup{}
	var cost int64
	out, err := ix.decodeBackups(func(b *Backup) {
		all[b.ID] = b.clone()
		cost += recordCost(b)
	})
	if err != nil {
		return nil, err
	}
	if cost > maxRecordBytes {
		rs.tooMany.Store(true)
		return out, nil
	}
	rs.mu.Lock()
	rs.all, rs.sorted, rs.cost = all, nil, cost
	rs.mu.Unlock()
	return out, nil
}

// decodeBackups reads every backup record from the index, oldest first, passing each to keep
// (if not nil) as it is decoded.
func (ix *Index) decodeBackups(keep func(*Backup)) ([]*Backup, error) {
	var out []*Backup
	err := ix.scan("b/", true, func(_, v []byte) error {
		var b Backup
		if err := jsonUnmarshal(v, &b); err != nil {
			return err
		}
		if keep != nil {
			keep(&b)
		}
		out = append(out, &b)
		return nil
	})
	sortBackups(out)
	return out, err
}

func sortBackups(bs []*Backup) {
	sort.Slice(bs, func(i, j int) bool {
		if !bs[i].CreatedAt.Equal(bs[j].CreatedAt) {
			return bs[i].CreatedAt.Before(bs[j].CreatedAt)
		}
		return bs[i].ID < bs[j].ID
	})
}

// loaded returns copies of the records if they are in memory.
func (rs *backupRecords) loaded() ([]*Backup, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.all == nil {
		return nil, false
	}
	return rs.copyOut(), true
}

// copyOut returns copies of every record in order. Called with mu held and all loaded.
func (rs *backupRecords) copyOut() []*Backup {
	if rs.sorted == nil {
		rs.sorted = make([]*Backup, 0, len(rs.all))
		for _, b := range rs.all {
			rs.sorted = append(rs.sorted, b)
		}
		sortBackups(rs.sorted)
	}
	recs := make([]Backup, len(rs.sorted)) // one allocation for all the copies
	out := make([]*Backup, len(rs.sorted))
	for i, b := range rs.sorted {
		b.copyTo(&recs[i])
		out[i] = &recs[i]
	}
	return out
}

// roundTrip returns b as the index gives it back: encoded as putBackup does, then decoded.
func roundTrip(b *Backup) (*Backup, error) {
	v, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	var c Backup
	return &c, jsonUnmarshal(v, &c)
}

// clone returns a copy of b that shares nothing mutable with it.
func (b *Backup) clone() *Backup {
	c := new(Backup)
	b.copyTo(c)
	return c
}

// copyTo makes *dst a copy of b that shares nothing mutable with it.
func (b *Backup) copyTo(dst *Backup) {
	*dst = *b
	dst.Metadata = maps.Clone(b.Metadata)
	if b.LastRestore != nil {
		lr := *b.LastRestore
		dst.LastRestore = &lr
	}
	if b.LastVerify != nil {
		lv := *b.LastVerify
		lv.LostBlocks = slices.Clone(lv.LostBlocks)
		dst.LastVerify = &lv
	}
	dst.Copies = slices.Clone(b.Copies)
}
