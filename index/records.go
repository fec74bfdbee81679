package index

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/dgraph-io/badger/v4"
)

// Volume statuses (Cinder's words).
const (
	VolumeAvailable       VolumeStatus = "available"
	VolumeBackingUp       VolumeStatus = "backing-up"
	VolumeRestoringBackup VolumeStatus = "restoring-backup"
	VolumeCreating        VolumeStatus = "creating"
	VolumeError           VolumeStatus = "error"
)

// Backup statuses (Cinder's words).
const (
	BackupCreating  BackupStatus = "creating"
	BackupAvailable BackupStatus = "available"
	BackupDeleting  BackupStatus = "deleting"
	BackupRestoring BackupStatus = "restoring"
	BackupError     BackupStatus = "error"
)

// Volume is a block device or image file cairn backs up or restores to.
type Volume struct {
	ID         string       `json:"id"`
	Name       string       `json:"name"`
	Path       string       `json:"path"`
	Project    string       `json:"project"`
	Kind       string       `json:"kind"` // "file", "device" or "nbd" (Path is an NBD URI)
	Size       int64        `json:"size"`
	Status     VolumeStatus `json:"status"`
	FailReason string       `json:"fail_reason,omitempty"`
	Managed    bool         `json:"managed"` // created by cairn in its volume directory
	// TrackChanges: an image file whose backups leave a reflink clone as the next
	// incremental's base (changed-block tracking; see blockio.BaseStore).
	TrackChanges bool   `json:"track_changes,omitempty"`
	Description  string `json:"description,omitempty"`
	// Identity is what the volume at Path is beyond its name (blockio.Identify): with the
	// path, it finds the volume's backups again after it was forgotten and managed anew.
	Identity  string    `json:"identity,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// DescribedAt is the time of the update (volume update, cinder rename) whose name,
	// description and tracking the volume has (zero for none): its repository object,
	// meta/volume-settings/<id>@<t>, is their truth (docs/design.md, "Volume updates").
	DescribedAt time.Time `json:"described_at,omitzero"`
}

// Backup is a backup's record: its manifest's facts plus its state.
type Backup struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Metadata are Cinder's key/value pairs (3.43); UserID is who created the backup.
	Metadata   map[string]string `json:"metadata,omitempty"`
	UserID     string            `json:"user_id,omitempty"`
	VolumeID   string            `json:"volume_id"`
	Project    string            `json:"project"`
	SnapshotID string            `json:"snapshot_id,omitempty"`
	// VolumeName, VolumePath and VolumeIdentity are what the volume was called, where it was
	// and what it was when it was backed up (as its manifest says): they outlive the volume's
	// record.
	VolumeName     string       `json:"volume_name,omitempty"`
	VolumePath     string       `json:"volume_path,omitempty"`
	VolumeIdentity string       `json:"volume_identity,omitempty"`
	Status         BackupStatus `json:"status"`
	FailReason     string       `json:"fail_reason,omitempty"`
	FailKind       string       `json:"fail_kind,omitempty"` // the failure's class, as a restore outcome's Kind
	Size           int64        `json:"size"`
	IsIncremental  bool         `json:"is_incremental"`
	ParentID       string       `json:"parent_id,omitempty"`
	Root           repo.Address `json:"root"`
	RootLevel      int          `json:"root_level"`
	Stats          repo.Stats   `json:"stats"`
	// ReadMode and ReadFallback say how the volume was read (see repo.Manifest).
	ReadMode     string    `json:"read_mode,omitempty"`
	ReadFallback string    `json:"read_fallback,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// RestoreTarget is the volume a running restore writes to.
	RestoreTarget string `json:"restore_volume_id,omitempty"`
	// LastRestore says how the newest restore of this backup ended (or that it runs), as its
	// manifest does once it ended.
	LastRestore *RestoreOutcome `json:"last_restore,omitempty"`
	// LastVerify says how the newest verification of this backup ended ('backup verify'),
	// as its manifest does.
	LastVerify *VerifyOutcome `json:"last_verify,omitempty"`
	// Copies are the other repositories the backup was copied to, as its manifest says.
	Copies repo.CopyRecords `json:"copies,omitempty"`
	// Protected backups are refused by delete, force delete and prune.
	Protected bool `json:"protected,omitempty"`
	// ManifestInDoubt marks a failed backup whose commit failed at or after its manifest's
	// Put and whose manifest could not be deleted: it may be stored. The next full catch-up
	// settles it by the manifest (stored: the backup is available; gone: the mark goes).
	ManifestInDoubt bool `json:"manifest_in_doubt,omitempty"`
	// FailureStored says a failed backup's record is stored in the repository
	// (meta/failed/<id>: by this gateway, or learned from it), so that its object's absence
	// means a delete (docs/design.md, "Failed backups in the repository").
	FailureStored bool `json:"failure_stored,omitempty"`
	// RunBy, on a record a gateway shows of a backup another gateway is creating, is that
	// gateway's host (docs/design.md, "Backups being created, on every gateway"). Such a
	// record is never in an index.
	RunBy string `json:"run_by,omitempty"`
}

// VerifyOutcome is how a verification ended: Result is ok or damaged, LostBytes what a
// restore would lose.
type VerifyOutcome = repo.Verification

// RestoreOutcome is how a restore ended: Result is running, succeeded, salvaged or failed;
// Kind classifies a failure (corrupt, unavailable, cancelled, failed) so a command that waited
// for it exits as the restore itself would have.
type RestoreOutcome = repo.Restoration

// ObjectCount is Cinder's object_count: the data blocks the backup references, whether it
// stored them or found them stored already (holes are none). Stats.NewBlobs and NewBytes say
// what it added.
func (b *Backup) ObjectCount() int64 { return b.Stats.DataBlocks }

func volumeKey(id string) string                { return "v/" + id }
func volumeNameKey(project, name string) string { return "vn/" + project + "\x00" + name }
func volumePathKey(path string) string          { return "vp/" + path }
func backupKey(id string) string                { return "b/" + id }
func backupVolKey(b *Backup) string {
	return fmt.Sprintf("bv/%s/%016x/%s", b.VolumeID, b.CreatedAt.UnixNano(), b.ID)
}

// ErrExists: a record with that name or path exists.
var ErrExists = errors.New("already exists")

// ErrAmbiguous: more than one volume has the name (in its project) or the path.
var ErrAmbiguous = errors.New("more than one volume has that name or path")

// CreateVolume adds a new volume; its name (within the project) and path must be free.
func (ix *Index) CreateVolume(v *Volume) error { return ix.addVolume(v, false) }

// LearnVolume adds a volume the repository records (managed through another gateway, or
// before this index was made): its id must be free, but its name and path need not be.
// Gateways that each took one name or path for a volume before either learned the other's
// both hold both; an index that left one out lost it, though the repository has it
// (docs/design.md, "Volumes of one name or path").
func (ix *Index) LearnVolume(v *Volume) error { return ix.addVolume(v, true) }

func (ix *Index) addVolume(v *Volume, share bool) error {
	return ix.update(func(txn *badger.Txn) error {
		if _, err := txn.Get([]byte(volumeKey(v.ID))); err == nil {
			return fmt.Errorf("volume %s: %w", v.ID, ErrExists)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if !share {
			if err := keyFree(txn, volumeNameKey(v.Project, v.Name), "name "+v.Name); err != nil {
				return err
			}
			if err := keyFree(txn, volumePathKey(v.Path), "path "+v.Path); err != nil {
				return err
			}
		}
		return putVolume(txn, v)
	})
}

func putVolume(txn *badger.Txn, v *Volume) error {
	if err := setJSON(txn, volumeKey(v.ID), v); err != nil {
		return err
	}
	if err := addVolumeID(txn, volumeNameKey(v.Project, v.Name), v.ID); err != nil {
		return err
	}
	return addVolumeID(txn, volumePathKey(v.Path), v.ID)
}

// A name or path key holds the ids of the volumes of that name (in the project) or at that
// path, separated by commas (ids have none): one, or more where volumes were learned under a
// name or path another had (LearnVolume). A key of an earlier cairn holds one id, which reads
// the same.
func volumeIDs(txn *badger.Txn, key string) ([]string, error) {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	b, err := item.ValueCopy(nil)
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return strings.Split(string(b), ","), nil
}

func setVolumeIDs(txn *badger.Txn, key string, ids []string) error {
	if len(ids) == 0 {
		return txn.Delete([]byte(key))
	}
	return txn.Set([]byte(key), []byte(strings.Join(ids, ",")))
}

// keyFree is ErrExists when a volume has the name or path of key (what says which).
func keyFree(txn *badger.Txn, key, what string) error {
	ids, err := volumeIDs(txn, key)
	if err == nil && len(ids) > 0 {
		err = fmt.Errorf("volume %s: %w", what, ErrExists)
	}
	return err
}

// addVolumeID adds id to a name or path key.
func addVolumeID(txn *badger.Txn, key, id string) error {
	ids, err := volumeIDs(txn, key)
	if err != nil || slices.Contains(ids, id) {
		return err
	}
	return setVolumeIDs(txn, key, append(ids, id))
}

// removeVolumeID removes id from a name or path key.
func removeVolumeID(txn *badger.Txn, key, id string) error {
	ids, err := volumeIDs(txn, key)
	if err != nil || !slices.Contains(ids, id) {
		return err
	}
	return setVolumeIDs(txn, key, slices.DeleteFunc(ids, func(x string) bool { return x == id }))
}

// Volume returns a volume by id.
func (ix *Index) Volume(id string) (*Volume, error) {
	var v Volume
	err := ix.db.View(func(txn *badger.Txn) error { return getJSON(txn, volumeKey(id), &v) })
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// volumesAt returns the volumes of a name or path key.
func (ix *Index) volumesAt(key string) ([]*Volume, error) {
	var out []*Volume
	err := ix.db.View(func(txn *badger.Txn) error {
		ids, err := volumeIDs(txn, key)
		if err != nil {
			return err
		}
		for _, id := range ids {
			var v Volume
			if err := getJSON(txn, volumeKey(id), &v); err != nil {
				return err
			}
			out = append(out, &v)
		}
		return nil
	})
	return out, err
}

// oneVolume is the one volume of vs: ErrNotFound for none, ErrAmbiguous for more.
func oneVolume(vs []*Volume, err error, what string) (*Volume, error) {
	switch {
	case err != nil:
		return nil, err
	case len(vs) == 0:
		return nil, ErrNotFound
	case len(vs) > 1:
		return nil, fmt.Errorf("%d volumes %s: %w", len(vs), what, ErrAmbiguous)
	}
	return vs[0], nil
}

// VolumeByName returns a project's volume by name: ErrNotFound when none has it,
// ErrAmbiguous when more than one has (VolumesByName lists them).
func (ix *Index) VolumeByName(project, name string) (*Volume, error) {
	vs, err := ix.VolumesByName(project, name)
	return oneVolume(vs, err, fmt.Sprintf("of project %s are named %q", project, name))
}

// VolumesByName returns the project's volumes of a name: none, one, or more where volumes were
// learned under a name another had (LearnVolume).
func (ix *Index) VolumesByName(project, name string) ([]*Volume, error) {
	return ix.volumesAt(volumeNameKey(project, name))
}

// VolumeByPath returns the volume registered for a path: ErrNotFound when none is,
// ErrAmbiguous when more than one is (VolumesByPath lists them).
func (ix *Index) VolumeByPath(path string) (*Volume, error) {
	vs, err := ix.VolumesByPath(path)
	return oneVolume(vs, err, "are registered at "+path)
}

// VolumesByPath returns the volumes registered for a path: none, one, or more where volumes
// were learned at a path another had (LearnVolume).
func (ix *Index) VolumesByPath(path string) ([]*Volume, error) {
	return ix.volumesAt(volumePathKey(path))
}

// UpdateVolume changes a volume atomically; a new name must be free in its project.
func (ix *Index) UpdateVolume(id string, fn func(v *Volume) error) (*Volume, error) {
	return ix.updateVolume(id, fn, false)
}

// UpdateVolumeAsRecorded is UpdateVolume for a change the repository records (a rename through
// another gateway): the new name need not be free, as LearnVolume's need not.
func (ix *Index) UpdateVolumeAsRecorded(id string, fn func(v *Volume) error) (*Volume, error) {
	return ix.updateVolume(id, fn, true)
}

func (ix *Index) updateVolume(id string, fn func(v *Volume) error, shareName bool) (*Volume, error) {
	var out Volume
	err := ix.update(func(txn *badger.Txn) error {
		var v Volume
		if err := getJSON(txn, volumeKey(id), &v); err != nil {
			return err
		}
		oldName, oldProject, oldStatus, was := v.Name, v.Project, v.Status, v.UpdatedAt
		if err := fn(&v); err != nil {
			return err
		}
		if !oldStatus.CanBecome(v.Status) {
			return transitionError("volume", id, oldStatus, v.Status)
		}
		if v.Name != oldName || v.Project != oldProject {
			if !shareName {
				if err := keyFree(txn, volumeNameKey(v.Project, v.Name), "name "+v.Name); err != nil {
					return err
				}
			}
			if err := removeVolumeID(txn, volumeNameKey(oldProject, oldName), id); err != nil {
				return err
			}
		}
		if v.UpdatedAt.Equal(was) { // fn may set it (to the time the repository's record says)
			v.UpdatedAt = time.Now().UTC()
		}
		out = v
		return putVolume(txn, &v)
	})
	return &out, err
}

// DeleteVolume removes a volume's record.
func (ix *Index) DeleteVolume(id string) error {
	return ix.DeleteVolumeIf(id, func(*Volume) error { return nil })
}

// DeleteVolumeIf removes a volume's record if may, run inside the transaction on the record as
// it is then, returns nil, and returns may's error otherwise (ErrNotFound without a record),
// as DeleteSnapshotIf does for snapshots: a check of the volume's status and the delete are
// one step, so no claim of the volume lands between them. may must not call the index.
func (ix *Index) DeleteVolumeIf(id string, may func(*Volume) error) error {
	return ix.update(func(txn *badger.Txn) error {
		var v Volume
		if err := getJSON(txn, volumeKey(id), &v); err != nil {
			return err
		}
		if err := may(&v); err != nil {
			return err
		}
		if err := removeVolumeID(txn, volumeNameKey(v.Project, v.Name), id); err != nil {
			return err
		}
		if err := removeVolumeID(txn, volumePathKey(v.Path), id); err != nil {
			return err
		}
		return txn.Delete([]byte(volumeKey(id)))
	})
}

// Volumes returns every volume, by name.
func (ix *Index) Volumes() ([]*Volume, error) {
	var out []*Volume
	err := ix.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix = []byte("v/")
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var v Volume
			if err := getJSON(txn, string(it.Item().Key()), &v); err != nil {
				return err
			}
			out = append(out, &v)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

// PutBackup creates or replaces a backup record.
func (ix *Index) PutBackup(b *Backup) error {
	return ix.writeBackup(b.ID, func(txn *badger.Txn) (*Backup, error) { return b, putBackup(txn, b) })
}

func putBackup(txn *badger.Txn, b *Backup) error {
	if err := setJSON(txn, backupKey(b.ID), b); err != nil {
		return err
	}
	return txn.Set([]byte(backupVolKey(b)), nil)
}

// CreateBackup adds a new backup record; the id must be new.
func (ix *Index) CreateBackup(b *Backup) error {
	return ix.writeBackup(b.ID, func(txn *badger.Txn) (*Backup, error) {
		if _, err := txn.Get([]byte(backupKey(b.ID))); err == nil {
			return nil, fmt.Errorf("backup %s: %w", b.ID, ErrExists)
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return nil, err
		}
		return b, putBackup(txn, b)
	})
}

// Backup returns a backup by id.
func (ix *Index) Backup(id string) (*Backup, error) {
	var b Backup
	err := ix.db.View(func(txn *badger.Txn) error { return getJSON(txn, backupKey(id), &b) })
	if err != nil {
		return nil, err
	}
	return &b, nil
}

// UpdateBackup changes a backup atomically. fn must not call the index.
func (ix *Index) UpdateBackup(id string, fn func(b *Backup) error) (*Backup, error) {
	return ix.updateBackup(id, fn, BackupStatus.CanBecome)
}

// UndoDelete makes a deleting backup available again, with fn's changes: the one way out of
// deleting to available, for a delete that never began in the repository (its tombstone not
// stored), which the caller has made sure of. A record that is no longer deleting is left
// alone (ErrTransition).
func (ix *Index) UndoDelete(id string, fn func(b *Backup)) (*Backup, error) {
	return ix.updateBackup(id, func(b *Backup) error {
		fn(b)
		b.Status = BackupAvailable
		return nil
	}, func(from, to BackupStatus) bool { return from == BackupDeleting && to == BackupAvailable })
}

// updateBackup changes a backup atomically, by fn, when allowed takes its change of status.
func (ix *Index) updateBackup(id string, fn func(b *Backup) error, allowed func(from, to BackupStatus) bool) (*Backup, error) {
	var out Backup
	err := ix.writeBackup(id, func(txn *badger.Txn) (*Backup, error) {
		var b Backup
		if err := getJSON(txn, backupKey(id), &b); err != nil {
			return nil, err
		}
		was, oldStatus := b.UpdatedAt, b.Status
		if err := fn(&b); err != nil {
			return nil, err
		}
		if !allowed(oldStatus, b.Status) {
			return nil, transitionError("backup", id, oldStatus, b.Status)
		}
		if b.UpdatedAt.Equal(was) { // fn may set it (to the time its manifest records)
			b.UpdatedAt = time.Now().UTC()
		}
		out = b
		return &b, putBackup(txn, &b)
	})
	return &out, err
}

// DeleteBackup removes a backup record.
func (ix *Index) DeleteBackup(id string) error { return ix.DeleteBackupIf(id, nil) }

// DeleteBackupIf removes a backup record if may, run inside the transaction on the record as
// it is then, returns nil, and returns may's error otherwise: a delete decided on a status read
// earlier cannot remove a record that changed since. may must not call the index; nil allows.
func (ix *Index) DeleteBackupIf(id string, may func(*Backup) error) error {
	return ix.writeBackup(id, func(txn *badger.Txn) (*Backup, error) {
		var b Backup
		if err := getJSON(txn, backupKey(id), &b); err != nil {
			return nil, err
		}
		if may != nil {
			if err := may(&b); err != nil {
				return nil, err
			}
		}
		if err := txn.Delete([]byte(backupVolKey(&b))); err != nil {
			return nil, err
		}
		return nil, txn.Delete([]byte(backupKey(id)))
	})
}

// VolumeBackups returns a volume's backups, oldest first.
func (ix *Index) VolumeBackups(volumeID string) ([]*Backup, error) {
	var ids []string
	if err := ix.scan("bv/"+volumeID+"/", false, func(k, _ []byte) error {
		if len(k) > 17 {
			ids = append(ids, string(k[17:]))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	out := make([]*Backup, 0, len(ids))
	for _, id := range ids {
		b, err := ix.Backup(id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// GoneVolume is a volume that has backups but no record any more (deleted or unmanaged): its
// backups stay, and are reached by the volume's id.
type GoneVolume struct {
	ID      string
	Backups []*Backup // oldest first
}

// GoneVolumes returns the volumes without a record that have a backup keep accepts (nil:
// any), by id, each with the backups keep accepts. The FUSE tree, NBD and prune reach a
// deleted volume's backups through it.
func (ix *Index) GoneVolumes(keep func(*Backup) bool) ([]GoneVolume, error) {
	vols, err := ix.Volumes()
	if err != nil {
		return nil, err
	}
	known := make(map[string]bool, len(vols))
	for _, v := range vols {
		known[v.ID] = true
	}
	all, err := ix.Backups()
	if err != nil {
		return nil, err
	}
	byID := map[string][]*Backup{}
	for _, b := range all {
		if b.VolumeID != "" && !known[b.VolumeID] && (keep == nil || keep(b)) {
			byID[b.VolumeID] = append(byID[b.VolumeID], b)
		}
	}
	out := make([]GoneVolume, 0, len(byID))
	for id, bs := range byID {
		sort.SliceStable(bs, func(i, j int) bool { return bs[i].CreatedAt.Before(bs[j].CreatedAt) })
		out = append(out, GoneVolume{ID: id, Backups: bs})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
