package repo

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Manifest describes one backup completely: with it and the packs, the backup restores without
// any index. It is stored sealed as manifests/<backup id>, written last, so a manifest that
// exists names a backup whose blobs are all stored.
type Manifest struct {
	Version     int    `json:"version"`
	ID          string `json:"id"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	// Name, Description and Metadata (Cinder's backup metadata) may be rewritten after the
	// backup, by replacing the whole manifest; nothing else of it ever changes.
	Metadata   map[string]string `json:"metadata,omitempty"`
	UserID     string            `json:"user_id,omitempty"` // who created the backup
	VolumeID   string            `json:"volume_id"`
	VolumeName string            `json:"volume_name,omitempty"`
	VolumePath string            `json:"volume_path,omitempty"`
	// VolumeIdentity is what the volume at VolumePath was (a file's device and inode, a
	// disk's WWN...): managing the same path and identity again finds this backup's volume.
	VolumeIdentity string    `json:"volume_identity,omitempty"`
	Project        string    `json:"project,omitempty"`
	SnapshotID     string    `json:"snapshot_id,omitempty"`
	Size           int64     `json:"size"`
	BlockSize      int       `json:"block_size"`
	Root           Address   `json:"root"`
	RootLevel      int       `json:"root_level"`
	Incremental    bool      `json:"is_incremental"`
	ParentID       string    `json:"parent_id,omitempty"`
	CreatedAt      time.Time `json:"created_at"`
	// CommittedAt is when the backup became available (its record's updated_at then).
	CommittedAt time.Time `json:"committed_at,omitempty"`
	// UpdatedAt is when a rewrite last changed the manifest (a rename, protection, a reset,
	// a prune's re-parenting, an outcome): its record's updated_at then, on every gateway and
	// after a rebuilt index. Zero until the first rewrite (or in manifests older than it).
	UpdatedAt time.Time `json:"updated_at,omitempty"`
	Stats     Stats     `json:"stats"`
	// ReadMode says how the volume was read: "full" (every data extent), or only what
	// changed-block tracking reported ("reflink-diff", "nbd-bitmap"). ReadFallback says why a
	// backup that asked for tracking read in full instead, or why an incremental that was
	// asked for is a full backup (its parent was found damaged).
	ReadMode     string `json:"read_mode,omitempty"`
	ReadFallback string `json:"read_fallback,omitempty"`
	// Protected backups are refused by delete and prune. A manifest is rewritten (atomically,
	// whole) only to change this flag or, after a prune, its parent: never its block map.
	Protected bool `json:"protected,omitempty"`
	// Error is an admin's reset of the backup to error (reset-state), with why: every gateway,
	// and an index rebuilt, shows the backup as error until it is reset to available. A
	// descriptive field, rewritten like Protected.
	Error string `json:"error,omitempty"`
	// Verified is how the newest verification of the backup ended (backup verify, a policy's
	// sampled verification), so every gateway, and an index rebuilt, shows it. A descriptive
	// field, rewritten like Protected.
	Verified *Verification `json:"verified,omitempty"`
	// Restored is how the newest restore of the backup that ended did (succeeded, salvaged or
	// failed), so every gateway, and an index rebuilt, shows it. A descriptive field,
	// rewritten like Protected.
	Restored *Restoration `json:"restored,omitempty"`
	// Copies are the other repositories the backup was copied to (backup copy, a policy's
	// copy target), so that a copy one of them deleted since is not made again by a copy of
	// every backup there (docs/design.md, "Copies to another repository"). A descriptive
	// field, rewritten like Protected.
	Copies CopyRecords `json:"copies,omitempty"`
	// fromCopy: GetManifest read the second copy, the manifest failing its check. A copy
	// may be older than its manifest (a rewrite whose copy was not stored), so what guards a
	// deletion (Protected) is not taken from it (ReadFromCopy).
	fromCopy bool
}

// CopyRecord is one copy of a backup into another repository: that repository's id, where it
// was (a directory or s3://BUCKET/PREFIX, for people: the id is what counts), and when the
// copy's commit there landed.
type CopyRecord struct {
	Repository string    `json:"repository"`
	Location   string    `json:"location,omitempty"`
	At         time.Time `json:"at"`
}

// CopyRecords are a backup's copies, one per repository.
type CopyRecords []CopyRecord

// To returns the record of the copy into the repository with that id, or nil.
func (cs CopyRecords) To(repository string) *CopyRecord {
	if i := slices.IndexFunc(cs, func(c CopyRecord) bool { return c.Repository == repository }); i >= 0 {
		return &cs[i]
	}
	return nil
}

// With returns the records with c in place of the one of c's repository, or added; cs is
// left as it was.
func (cs CopyRecords) With(c CopyRecord) CopyRecords {
	out := slices.Clone(cs)
	if old := out.To(c.Repository); old != nil {
		*old = c
		return out
	}
	return append(out, c)
}

// Equal reports whether two lists say the same, times compared as instants.
func (cs CopyRecords) Equal(o CopyRecords) bool {
	return slices.EqualFunc(cs, o, func(x, y CopyRecord) bool {
		return x.Repository == y.Repository && x.Location == y.Location && x.At.Equal(y.At)
	})
}

// Restoration is how a restore of a backup went: Result is succeeded, salvaged or failed (or,
// in an index only, running); Kind classifies a failure (corrupt, unavailable, cancelled,
// failed); Target is what it wrote.
type Restoration struct {
	Target string    `json:"target"`
	Result string    `json:"result"`
	Kind   string    `json:"kind,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// Results of a verification and of a restore (Verification.Result, Restoration.Result).
const (
	VerifyOK         = "ok"
	VerifyDamaged    = "damaged"
	RestoreRunning   = "running" // in an index only, never in a manifest
	RestoreSucceeded = "succeeded"
	RestoreSalvaged  = "salvaged"
	RestoreFailed    = "failed"
)

// Damaged reports whether v, a verification's outcome or nil, found the backup damaged.
func (v *Verification) Damaged() bool { return v != nil && v.Result == VerifyDamaged }

// Running reports whether r, a restore's outcome or nil, is of a restore that runs.
func (r *Restoration) Running() bool { return r != nil && r.Result == RestoreRunning }

// Verification is how a verification of a backup ended: "ok" or "damaged", the bytes it found
// that a restore cannot write, and when it ended.
type Verification struct {
	Result    string    `json:"result"`
	LostBytes int64     `json:"lost_bytes,omitempty"`
	At        time.Time `json:"at"`
	// LostBlocks are the addresses of the data blocks a damaged verification lost, when it
	// knows them all (at most MaxLostBlocks, no lost block map node), so that a later look can
	// tell when they were stored again (Repository.Mended).
	LostBlocks []Address `json:"lost_blocks,omitempty"`
	// Mended says the outcome is ok because every lost block of the damaged verification
	// before it was stored again and now reads and verifies.
	Mended bool `json:"mended,omitempty"`
}

// Updated is when the manifest last changed: its last rewrite, else its commit (the record's
// updated_at).
func (m *Manifest) Updated() time.Time {
	if m.UpdatedAt.After(m.CommittedAt) {
		return m.UpdatedAt
	}
	return m.CommittedAt
}

// MaxLostBlocks bounds the lost blocks a verification records.
const MaxLostBlocks = 256

// LostBlockError is what a salvage reports (RestoreOptions.Lost) for a data block it could
// not read: Addr says which block, so that a caller can tell later whether it was stored again.
type LostBlockError struct {
	Addr Address
	Err  error
}

func (e *LostBlockError) Error() string { return e.Err.Error() }
func (e *LostBlockError) Unwrap() error { return e.Err }

// MarshalJSON writes addresses as hex.
func (a Address) MarshalJSON() ([]byte, error) { return json.Marshal(a.String()) }

// UnmarshalJSON reads a hex address.
func (a *Address) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	p, err := ParseAddress(s)
	*a = p
	return err
}

// Parent returns the manifest as the parent of an incremental.
func (m *Manifest) Parent() *Parent {
	return &Parent{Root: m.Root, RootLevel: m.RootLevel, Size: m.Size, DataBlocks: m.Stats.DataBlocks}
}

func manifestKey(id string) string { return "manifests/" + id }

// manifestCopyPrefix holds each manifest's second copy: the same JSON sealed under its own key
// (docs/design.md, "A manifest's second copy").
const manifestCopyPrefix = "manifest-copies/"

func manifestCopyKey(id string) string { return manifestCopyPrefix + id }

func validID(id string) bool {
	return id != "" && len(id) <= 64 && !strings.ContainsAny(id, "/\\.\x00 ")
}

// PutManifest stores a backup's manifest durably, then its log object (backuplog.go).
func (r *Repository) PutManifest(ctx context.Context, m *Manifest) error {
	return r.putManifest(ctx, m, false)
}

// putManifest is PutManifest; with copyRequired (a rewrite), a second copy that fails to
// store fails it too.
func (r *Repository) putManifest(ctx context.Context, m *Manifest, copyRequired bool) error {
	if !validID(m.ID) {
		return fmt.Errorf("manifest: invalid backup id %q", m.ID)
	}
	m.Version = FormatVersion
	m.BlockSize = r.cfg.BlockSize
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	key := manifestKey(m.ID)
	if err := r.putObject(ctx, key, b); err != nil {
		return fmt.Errorf("store manifest of backup %s: %w", m.ID, err)
	}
	// A backup's manifest is its commit point; its copy only guards it against damage, so a
	// copy that fails to store is check's to note and repair's to write. A rewrite's is not:
	// its copy would stay older than the manifest, and read in its place once the manifest
	// is damaged it would undo the change (a protection) without a word. The rewrite fails
	// and is made again; the manifest already says what the copy will.
	if err := r.putManifestCopy(ctx, m.ID, b); err != nil {
		if copyRequired {
			r.logChange(ctx, m.ID) // the manifest changed: other gateways learn it all the same
			return fmt.Errorf("update backup %s: its manifest was stored but not its second copy: %w: %w; make the change again", m.ID, errCopyNotStored, err)
		}
		r.logf("manifest of backup %s: its second copy was not stored ('cairn repo repair' stores it): %v", m.ID, err)
	}
	r.logChange(ctx, m.ID)
	return nil
}

// GetManifest reads and authenticates a backup's manifest. When the manifest fails its
// check, its second copy stands in if that one passes its own; a missing manifest is a
// deleted backup, whatever copy is left.
func (r *Repository) GetManifest(ctx context.Context, id string) (*Manifest, error) {
	if !validID(id) {
		return nil, fmt.Errorf("invalid backup id %q", id)
	}
	key := manifestKey(id)
	b, err := getAll(ctx, r.be, key)
	if err != nil {
		return nil, fmt.Errorf("manifest of backup %s: %w", id, err)
	}
	m, _, err := r.decodeManifest(key, id, b)
	if err == nil || !errors.Is(err, ErrCorrupt) {
		return m, err
	}
	c, _, cerr := r.getManifestCopy(ctx, id)
	if cerr != nil {
		return nil, err
	}
	r.logf("backup %s: %v; read its second copy instead ('cairn repo repair' writes the manifest again)", id, err)
	c.fromCopy = true
	return c, nil
}

// ReadFromCopy says GetManifest read m from the manifest's second copy, the manifest failing
// its check: the copy may be older than the manifest was.
func (m *Manifest) ReadFromCopy() bool { return m.fromCopy }

// putManifestCopy stores b, backup id's manifest JSON, as the manifest's second copy.
func (r *Repository) putManifestCopy(ctx context.Context, id string, b []byte) error {
	return r.putObject(ctx, manifestCopyKey(id), b)
}

// getManifestCopy reads and authenticates a backup's second copy of its manifest, and
// returns it with its JSON.
func (r *Repository) getManifestCopy(ctx context.Context, id string) (*Manifest, []byte, error) {
	key := manifestCopyKey(id)
	sealed, err := getAll(ctx, r.be, key)
	if err != nil {
		return nil, nil, fmt.Errorf("second copy of the manifest of backup %s: %w", id, err)
	}
	return r.decodeManifest(key, id, sealed)
}

// manifestCheck is what a check found of a backup's manifest and its second copy.
type manifestCheck struct {
	m     *Manifest // the manifest, or its copy where the manifest is damaged
	plain []byte    // the manifest's JSON, when it is intact
	// damaged is the manifest's damage, when its copy stands in.
	damaged error
	// copyDamaged is the copy's damage; noCopy says it is missing, oldCopy that it is older
	// than the manifest.
	copyDamaged     error
	noCopy, oldCopy bool
}

// checkManifest reads a backup's manifest and then its second copy. It fails (ErrCorrupt)
// only when neither is intact, and with backend.ErrNotFound when the manifest is missing. The
// copy is read second, so a rewrite between the two reads leaves it newer, never older: a
// live rewrite is not reported as a stale copy (docs/design.md, "A manifest's second copy").
func (r *Repository) checkManifest(ctx context.Context, id string) (*manifestCheck, error) {
	key := manifestKey(id)
	sealed, err := getAll(ctx, r.be, key)
	if err != nil {
		return nil, fmt.Errorf("manifest of backup %s: %w", id, err)
	}
	m, plain, merr := r.decodeManifest(key, id, sealed)
	c, cplain, cerr := r.getManifestCopy(ctx, id)
	if cerr != nil && !errors.Is(cerr, ErrCorrupt) && !errors.Is(cerr, backend.ErrNotFound) {
		return nil, cerr
	}
	mc := &manifestCheck{m: m, plain: plain}
	switch {
	case merr != nil && cerr != nil:
		return nil, fmt.Errorf("%w; %v", merr, cerr)
	case merr != nil:
		mc.m, mc.damaged = c, merr
	case errors.Is(cerr, backend.ErrNotFound):
		mc.noCopy = true
	case cerr != nil:
		mc.copyDamaged = cerr
	case !bytes.Equal(plain, cplain) && !c.Updated().After(m.Updated()):
		mc.oldCopy = true
	}
	return mc, nil
}

// ManifestsMended counts what MendManifests wrote: damaged manifests written again from
// their copies, lost manifests stored again from their copies, and copies written again from
// their manifests.
type ManifestsMended struct {
	Damaged, Lost, Copies int
}

// MendManifests writes again, from the other, each manifest or second copy the check found
// damaged, missing or stale: a damaged manifest from its intact copy as a rewrite (a delete
// that came meanwhile wins), a copy from its manifest. A lost manifest (its copy stored, no
// delete begun) is stored again from its copy as a rewrite too, once it is still missing and
// still not deleted.
func (r *Repository) MendManifests(ctx context.Context, rep *CheckReport) (ManifestsMended, error) {
	var n ManifestsMended
	if len(rep.mendManifests)+len(rep.lostManifests) == 0 {
		return n, nil
	}
	lk, err := r.Lock(ctx, LockShared, "repair manifests")
	if err != nil {
		return n, err
	}
	defer lk.Unlock()
	for _, id := range rep.mendManifests {
		mc, err := r.checkManifest(ctx, id)
		if errors.Is(err, backend.ErrNotFound) {
			continue // deleted since the check
		}
		if err != nil {
			return n, err
		}
		switch {
		case mc.damaged != nil:
			err = r.RewriteManifest(ctx, lk, mc.m)
			if errors.Is(err, ErrManifestDeleted) {
				continue
			}
			if err == nil {
				n.Damaged++
				r.logf("backup %s: its manifest was written again from its second copy, which may be older than the manifest was: check its protection and name ('cairn backup show %s')", id, id)
			}
		case mc.copyDamaged != nil || mc.noCopy || mc.oldCopy:
			if err = lk.Check(); err == nil {
				err = r.putManifestCopy(ctx, id, mc.plain)
			}
			if err == nil {
				n.Copies++
			}
		}
		if err != nil {
			return n, fmt.Errorf("repair the manifest of backup %s: %w", id, err)
		}
	}
	for _, id := range rep.lostManifests {
		stored, err := r.restoreLostManifest(ctx, lk, id)
		if err != nil {
			return n, fmt.Errorf("store the lost manifest of backup %s again: %w", id, err)
		}
		if stored {
			n.Lost++
		}
	}
	return n, nil
}

// restoreLostManifest stores a lost manifest again from its copy, as a rewrite: first it looks
// again for the manifest (stored since the check: nothing to do), then for the tombstone (a
// delete began: nothing to do); RewriteManifest looks for the tombstone after its store, so a
// delete that comes meanwhile wins (docs/design.md, "A manifest lost, its copy left").
func (r *Repository) restoreLostManifest(ctx context.Context, lk *Lock, id string) (bool, error) {
	if lost, err := r.manifestLost(ctx, id); err != nil || !lost {
		return false, err
	}
	m, _, err := r.getManifestCopy(ctx, id)
	if errors.Is(err, backend.ErrNotFound) || errors.Is(err, ErrCorrupt) {
		return false, nil // its delete finished since, or the copy was damaged since: repair's check after says so
	}
	if err != nil {
		return false, err
	}
	err = r.RewriteManifest(ctx, lk, m)
	if errors.Is(err, ErrManifestDeleted) {
		return false, nil
	}
	if err == nil {
		r.logf("backup %s: its lost manifest stored again from its second copy", id)
	}
	return err == nil, err
}

// decodeManifest opens sealed, stored under key (the manifest's or its copy's), and parses it
// as backup id's manifest; it returns the manifest and its JSON.
func (r *Repository) decodeManifest(key, id string, sealed []byte) (*Manifest, []byte, error) {
	b, err := r.keys.openObject(key, sealed)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w: %v", key, ErrCorrupt, err)
	}
	m, err := r.parseManifest(manifestKey(id), b)
	if err != nil && key != manifestKey(id) {
		err = fmt.Errorf("second copy: %w", err)
	}
	return m, b, err
}

// parseManifest parses an authenticated manifest stored as key's, and checks that it is one.
func (r *Repository) parseManifest(key string, b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", key, ErrCorrupt, err)
	}
	if m.Version != FormatVersion || m.BlockSize != r.cfg.BlockSize || m.Size < 0 || manifestKey(m.ID) != key {
		return nil, fmt.Errorf("%s: %w: inconsistent manifest", key, ErrCorrupt)
	}
	if g := newGeometry(m.Size, m.BlockSize); g.rootLevel != m.RootLevel {
		return nil, fmt.Errorf("%s: %w: root level %d for size %d", key, ErrCorrupt, m.RootLevel, m.Size)
	}
	return &m, nil
}

// DeleteManifest removes a backup's manifest; a missing one is not an error.
func (r *Repository) DeleteManifest(ctx context.Context, id string) error {
	if !validID(id) {
		return fmt.Errorf("invalid backup id %q", id)
	}
	if err := r.PutMeta(ctx, metaTombstones, id, tombstone{Deleted: time.Now().UTC()}); err != nil {
		return fmt.Errorf("delete backup %s: %w", id, err)
	}
	if err := r.be.Delete(ctx, manifestKey(id)); err != nil {
		return err
	}
	r.deleteManifestCopy(ctx, id)
	r.logChange(ctx, id)
	return nil
}

// deleteManifestCopy removes a deleted backup's second copy of its manifest. Nothing reads a
// copy whose manifest is gone, so one left by a failure is only garbage, which gc removes.
func (r *Repository) deleteManifestCopy(ctx context.Context, id string) {
	if err := r.be.Delete(ctx, manifestCopyKey(id)); err != nil && !errors.Is(err, backend.ErrNotFound) {
		r.logf("backup %s: its manifest's second copy was not removed (gc removes it): %v", id, err)
	}
}

// Tombstones. A manifest rewrite (protection, name, metadata, a re-linked parent) reads the
// manifest and stores it whole again; a delete by another process between the two would be
// undone by the store. So every delete first stores meta/tombstones/<id>, and a rewrite looks
// for it after its store: if the rewrite's store came after the delete, the delete's
// tombstone came before both and the rewrite sees it and deletes the manifest again; if it
// does not see it, the tombstone, and so the delete, came after the store. Either way the
// delete wins (docs/design.md, "Manifest rewrites and deletes") [TestRewriteLosesToADelete].
const metaTombstones = "tombstones"

// tombstoneKeep is how long, by the store's clock, gc keeps a tombstone: far longer than a
// delete takes from its tombstone to its manifest.
const tombstoneKeep = 24 * time.Hour

type tombstone struct {
	Deleted time.Time `json:"deleted"`
}

// errCopyNotStored is RewriteManifest's error for a manifest stored without its second copy.
var errCopyNotStored = errors.New("the second copy was not stored")

// ErrManifestDeleted is RewriteManifest's error for a backup deleted while it was rewritten.
var ErrManifestDeleted = errors.New("the backup was deleted meanwhile")

// RewriteManifest stores m over its backup's manifest, which the caller read under lk: a
// rewrite of descriptive fields, never of the block map. It stores nothing once lk is lost,
// and when a delete came between the caller's read and this store it deletes the manifest
// again and returns ErrManifestDeleted.
func (r *Repository) RewriteManifest(ctx context.Context, lk *Lock, m *Manifest) error {
	if err := lk.Check(); err != nil {
		return fmt.Errorf("update backup %s: %w", m.ID, err)
	}
	// A rewrite whose copy failed still looks for a delete that came meanwhile: its manifest
	// is stored, and would bring the deleted backup back.
	perr := r.putManifest(ctx, m, true)
	if perr != nil && !errors.Is(perr, errCopyNotStored) {
		return perr
	}
	_, err := r.be.Stat(ctx, metaKey(metaTombstones, m.ID))
	if errors.Is(err, backend.ErrNotFound) {
		return perr
	}
	if err == nil {
		err = r.DeleteManifest(ctx, m.ID)
	}
	if err != nil {
		return fmt.Errorf("update backup %s: look for its deletion: %w", m.ID, err)
	}
	return fmt.Errorf("update backup %s: %w", m.ID, ErrManifestDeleted)
}

// Deleted reports whether a delete of the backup began: its tombstone is stored. A manifest
// stored with one is a delete that did not finish (a crash, a failing store), not a backup to
// adopt or to record available.
func (r *Repository) Deleted(ctx context.Context, id string) (bool, error) {
	return r.exists(ctx, metaKey(metaTombstones, id))
}

// ListDeleted calls fn with the id of every backup whose delete began (its tombstone is
// stored), its manifest gone or not yet.
func (r *Repository) ListDeleted(ctx context.Context, fn func(id string) error) error {
	return r.be.ListKeys(ctx, tombstonePrefix, func(key string) error {
		if id, ok := tombstoneID(key); ok {
			return fn(id)
		}
		return nil
	})
}

const tombstonePrefix = metaPrefix + metaTombstones + "/"

// tombstoneID is the backup id a tombstone's key names.
func tombstoneID(key string) (string, bool) {
	id, err := hex.DecodeString(strings.TrimPrefix(key, tombstonePrefix))
	return string(id), err == nil && validID(string(id))
}

// Undelete removes a backup's tombstone, for an import that stores its manifest again on
// purpose.
func (r *Repository) Undelete(ctx context.Context, id string) error {
	if err := r.DeleteMeta(ctx, metaTombstones, id); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return err
	}
	return nil
}

// pruneTombstones removes the tombstones older than tombstoneKeep by the store's clock whose
// manifests are gone. It runs under gc's exclusive lock, after everything else: a failure is
// logged, not gc's.
func (r *Repository) pruneTombstones(ctx context.Context, lk *Lock, logf func(string, ...any)) {
	now, err := r.storeClock(ctx, lk)
	if err != nil {
		logf("old tombstones not removed: %v", err)
		return
	}
	cutoff := now().Add(-tombstoneKeep)
	var old []string
	err = r.be.List(ctx, tombstonePrefix, func(oi backend.ObjectInfo) error {
		if oi.ModTime.Before(cutoff) {
			old = append(old, oi.Key)
		}
		return nil
	})
	for _, key := range old {
		if err != nil {
			break
		}
		id, ok := tombstoneID(key)
		if !ok {
			continue
		}
		var has bool
		if has, err = r.HasManifest(ctx, id); err != nil {
			continue
		}
		if err = stillHeld(lk); err != nil {
			break
		}
		if has {
			// A tombstone a day old whose manifest is still stored marks a delete that did
			// not finish (its deleter died and never came back, or a withdrawn manifest's
			// slow store landed after the withdrawal): gc finishes it. The tombstone stays,
			// so adoption keeps refusing the backup until the manifest is gone; the next gc
			// removes it. This run marked the backup's data, which the next reclaims
			// [TestGCFinishesADeleteThatDidNotFinish, TestGCKeepsTheTombstoneOfAnUnfinishedDelete].
			if err = r.be.Delete(ctx, manifestKey(id)); err == nil {
				r.deleteManifestCopy(ctx, id)
				logf("finished the delete of backup %s, begun over a day ago", id)
				r.logChange(ctx, id)
			}
			continue
		}
		// The copy goes first: a copy without its manifest and without a tombstone is a lost
		// manifest's, which gc keeps and repair stores again (invariant T, docs/design.md, "A
		// manifest lost, its copy left") [TestAnOldTombstoneGoesOnlyAfterItsCopy].
		if err = r.be.Delete(ctx, manifestCopyKey(id)); err != nil {
			break
		}
		err = r.deleteMetaKey(ctx, key)
	}
	if err != nil {
		logf("old tombstones not removed: %v", err)
	}
}

// pruneManifestCopies removes the second copies of deleted backups: left by a delete that
// stopped between the manifest and the copy, or by a gateway of an earlier cairn. have are the
// backups gc's mark marked through (their manifests, or their lost manifests' copies).
// Nothing reads a copy without its manifest; each manifest is looked for again just before
// its copy goes, and so is the backup's tombstone: a copy without one is a lost manifest's,
// which stays (docs/design.md, "A manifest's second copy" and "A manifest lost, its copy
// left"). It runs under gc's exclusive lock; a failure is logged, not gc's.
func (r *Repository) pruneManifestCopies(ctx context.Context, lk *Lock, have map[string]bool, logf func(string, ...any)) {
	var orphans []string
	err := r.be.ListKeys(ctx, manifestCopyPrefix, func(key string) error {
		if !have[strings.TrimPrefix(key, manifestCopyPrefix)] {
			orphans = append(orphans, key)
		}
		return nil
	})
	removed := 0
	for _, key := range orphans {
		if err != nil {
			break
		}
		var has, deleted bool
		if id := strings.TrimPrefix(key, manifestCopyPrefix); validID(id) {
			if has, err = r.HasManifest(ctx, id); err != nil || has {
				continue
			}
			if deleted, err = r.Deleted(ctx, id); err != nil || !deleted {
				continue
			}
		}
		if err = stillHeld(lk); err != nil {
			break
		}
		if err = r.be.Delete(ctx, key); err == nil {
			removed++
		}
	}
	if removed > 0 {
		logf("removed %d second copies of deleted backups' manifests", removed)
	}
	if err != nil {
		logf("second copies of deleted backups' manifests not removed: %v", err)
	}
}

// EachLostManifest calls fn with each backup whose manifest is lost, and its copy as read (the
// manifest, or the copy's damage). A manifest is lost when its second copy is stored, it is
// not, and no delete of the backup began (its tombstone is not stored). listed are the backups
// whose manifests the caller listed (and read) before; the copies are listed after, and each
// other copy's manifest is looked for before its tombstone, so neither a commit nor a delete
// that lands meanwhile is taken for a loss (docs/design.md, "A manifest lost, its copy left").
// A copy gone by its read is skipped (its delete finished).
func (r *Repository) EachLostManifest(ctx context.Context, listed map[string]bool, fn func(id string, m *Manifest, err error) error) error {
	var unlisted []string
	if err := r.be.ListKeys(ctx, manifestCopyPrefix, func(key string) error {
		if id := strings.TrimPrefix(key, manifestCopyPrefix); validID(id) && !listed[id] {
			unlisted = append(unlisted, id)
		}
		return nil
	}); err != nil {
		return err
	}
	slices.Sort(unlisted)
	for _, id := range unlisted {
		if lost, err := r.manifestLost(ctx, id); err != nil || !lost {
			if err != nil {
				return err
			}
			continue
		}
		m, _, err := r.getManifestCopy(ctx, id)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err := fn(id, m, err); err != nil {
			return err
		}
	}
	return nil
}

// manifestLost reports whether a backup whose manifest's copy was seen stored has a lost
// manifest: it looks for the manifest, then for the tombstone (the order EachLostManifest
// needs).
func (r *Repository) manifestLost(ctx context.Context, id string) (bool, error) {
	if has, err := r.HasManifest(ctx, id); err != nil || has {
		return false, err
	}
	deleted, err := r.Deleted(ctx, id)
	return err == nil && !deleted, err
}

// ErrLostManifest marks a backup whose manifest is lost: missing, though no delete of it
// began, its second copy still stored (docs/design.md, "A manifest lost, its copy left"). It
// is damage to the repository: errors.Is(err, ErrCorrupt) holds for it too.
var ErrLostManifest error = Damage("its manifest is missing though no delete of it began")

// LostManifest tells a lost manifest from a deleted one, for a lookup that found no backup
// id. When the manifest is lost it returns an error wrapping ErrLostManifest, with the copy's
// manifest (verified) when the copy is intact, or with the copy's damage and no manifest when
// the backup is lost whole. It returns backend.ErrNotFound when the backup is not lost
// (stored, deleted, or never there), and any other error as it is. Reads do not fall back to
// the copy: the caller says what is wrong and that repair stores it again.
func (r *Repository) LostManifest(ctx context.Context, id string) (*Manifest, error) {
	if !validID(id) {
		return nil, backend.ErrNotFound
	}
	if _, err := r.be.Stat(ctx, manifestCopyKey(id)); err != nil {
		return nil, err
	}
	if lost, err := r.manifestLost(ctx, id); err != nil || !lost {
		return nil, cmp.Or(err, backend.ErrNotFound)
	}
	m, _, err := r.getManifestCopy(ctx, id)
	if errors.Is(err, ErrCorrupt) {
		return nil, fmt.Errorf("backup %s: %w, and %w", id, ErrLostManifest, err)
	}
	if err != nil {
		return nil, err
	}
	return m, fmt.Errorf("backup %s: %w; its second copy is intact", id, ErrLostManifest)
}

// ListManifests calls fn with every backup id that has a manifest.
func (r *Repository) ListManifests(ctx context.Context, fn func(id string) error) error {
	return r.be.ListKeys(ctx, "manifests/", func(key string) error {
		id := strings.TrimPrefix(key, "manifests/")
		if !validID(id) {
			return nil
		}
		return fn(id)
	})
}

// HasManifest reports whether a backup's manifest exists.
func (r *Repository) HasManifest(ctx context.Context, id string) (bool, error) {
	return r.exists(ctx, manifestKey(id))
}
