package index

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Snapshot statuses (Cinder's words).
const (
	SnapshotAvailable SnapshotStatus = "available"
	SnapshotBackingUp SnapshotStatus = "backing-up"
	SnapshotDeleting  SnapshotStatus = "deleting"
)

// Snapshot is a point-in-time copy of a volume (seed 3.1.5): a reflinked file or an LVM
// snapshot that a backup can read while the volume keeps changing.
//
//	s/<snapshot id> → Snapshot (JSON)
type Snapshot struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	VolumeID    string         `json:"volume_id"`
	Project     string         `json:"project"`
	Status      SnapshotStatus `json:"status"`
	Size        int64          `json:"size"`
	Kind        string         `json:"kind"` // reflink or lvm
	Path        string         `json:"path"`
	CreatedAt   time.Time      `json:"created_at"`
	UpdatedAt   time.Time      `json:"updated_at"`
}

func snapshotKey(id string) string { return "s/" + id }

// CreateSnapshot adds a new snapshot record.
func (ix *Index) CreateSnapshot(s *Snapshot) error {
	return ix.update(func(txn *badger.Txn) error {
		if _, err := txn.Get([]byte(snapshotKey(s.ID))); err == nil {
			return fmt.Errorf("snapshot %s: %w", s.ID, ErrExists)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return setJSON(txn, snapshotKey(s.ID), s)
	})
}

// Snapshot returns a snapshot by id.
func (ix *Index) Snapshot(id string) (*Snapshot, error) {
	var s Snapshot
	err := ix.db.View(func(txn *badger.Txn) error { return getJSON(txn, snapshotKey(id), &s) })
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// UpdateSnapshot changes a snapshot atomically.
func (ix *Index) UpdateSnapshot(id string, fn func(s *Snapshot) error) (*Snapshot, error) {
	var out Snapshot
	err := ix.update(func(txn *badger.Txn) error {
		var s Snapshot
		if err := getJSON(txn, snapshotKey(id), &s); err != nil {
			return err
		}
		old := s.Status
		if err := fn(&s); err != nil {
			return err
		}
		if !old.CanBecome(s.Status) {
			return transitionError("snapshot", id, old, s.Status)
		}
		s.UpdatedAt = time.Now().UTC()
		out = s
		return setJSON(txn, snapshotKey(id), &s)
	})
	return &out, err
}

// DeleteSnapshot removes a snapshot record.
func (ix *Index) DeleteSnapshot(id string) error {
	return ix.update(func(txn *badger.Txn) error { return txn.Delete([]byte(snapshotKey(id))) })
}

// DeleteSnapshotIf removes a snapshot record if may, run inside the transaction on the record
// as it is then, returns nil, and returns may's error otherwise (ErrNotFound without a record),
// as DeleteBackupIf does for backups. may must not call the index.
func (ix *Index) DeleteSnapshotIf(id string, may func(*Snapshot) error) error {
	return ix.update(func(txn *badger.Txn) error {
		var s Snapshot
		if err := getJSON(txn, snapshotKey(id), &s); err != nil {
			return err
		}
		if err := may(&s); err != nil {
			return err
		}
		return txn.Delete([]byte(snapshotKey(id)))
	})
}

// Snapshots returns every snapshot, oldest first.
func (ix *Index) Snapshots() ([]*Snapshot, error) {
	var out []*Snapshot
	err := ix.scan("s/", true, func(_, v []byte) error {
		var s Snapshot
		if err := jsonUnmarshal(v, &s); err != nil {
			return err
		}
		out = append(out, &s)
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}
