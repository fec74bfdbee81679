package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Settings are repository-wide rules every gateway on the repository follows. They live in
// the metadata object meta/settings/repository, so they survive the index and reach every
// gateway at its next read.
type Settings struct {
	// MinAge: no backup younger than this is deleted or pruned, unless an admin forces it
	// (Benji's disallowRemoveWhenYounger).
	MinAge Duration `json:"min_age,omitempty"`
}

// Duration is a time.Duration that reads and writes as "36h0m0s" in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as Go writes it.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return fmt.Errorf("duration %s: want a string like \"24h\"", b)
	}
	v, err := time.ParseDuration(string(b[1 : len(b)-1]))
	*d = Duration(v)
	return err
}

const (
	metaSettings    = "settings"
	settingsObjName = "repository"
)

// errSettingsMissing says the settings object is missing while its second copy is left: damage
// to the repository (errors.Is(err, repo.ErrCorrupt) holds, so the CLI exits 8).
var errSettingsMissing error = repo.Damage("the settings object is missing while its second copy is left (removed outside cairn?), so its minimum age cannot be told: an admin's 'cairn repo repair --restore-meta' stores it again, '--forget-damaged' removes the copy, or 'cairn repo settings' sets it anew")

// Settings returns the repository's settings (the zero Settings when none were set). A
// settings object missing while its second copy is left was lost (every removal of this cairn
// takes the copy first), or removed by a cairn from before the copies: its guard (the minimum
// age) is not dropped on that guess, so it fails as a damaged one does, until an admin decides
// (docs/design.md, "A metadata object lost, its copy left").
func (s *Service) Settings(ctx context.Context) (Settings, error) {
	var st Settings
	err := s.repo.GetMeta(ctx, metaSettings, settingsObjName, &st)
	if errors.Is(err, backend.ErrNotFound) {
		if left, lerr := s.repo.MetaCopyLeft(ctx, metaSettings, settingsObjName); lerr != nil {
			return Settings{}, fmt.Errorf("repository settings: %w", lerr)
		} else if left {
			return Settings{}, fmt.Errorf("repository settings: %w", errSettingsMissing)
		}
		return Settings{}, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("repository settings: %w", err)
	}
	return st, nil
}

// UpdateSettings changes the repository's settings (admins only).
func (s *Service) UpdateSettings(ctx context.Context, fn func(*Settings) error) (Settings, error) {
	if _, err := adminOf(ctx, "change the repository's settings"); err != nil {
		return Settings{}, err
	}
	st, err := s.Settings(ctx)
	if errors.Is(err, errSettingsMissing) {
		st, err = Settings{}, nil // an admin sets them anew: the copy is overwritten
	}
	if err != nil {
		return Settings{}, err
	}
	if err := fn(&st); err != nil {
		return Settings{}, err
	}
	if st.MinAge < 0 {
		return Settings{}, invalidf("--min-age %s is negative: give a duration like 7d or 0 to turn it off", time.Duration(st.MinAge))
	}
	if err := s.repo.PutMeta(ctx, metaSettings, settingsObjName, st); err != nil {
		return Settings{}, err
	}
	s.log.Info("repository settings changed", "min_age", time.Duration(st.MinAge).String())
	return st, nil
}

// ProtectBackup sets or clears a backup's protection. The manifest says it first (it is what
// every gateway and a rebuilt index read), then the index. Whether there is anything to do is
// the manifest's word, not the record's: another gateway may have changed the protection
// since this index learned it, and a protect this record already agreed with would otherwise
// return success and write nothing.
func (s *Service) ProtectBackup(ctx context.Context, ref string, protect bool) (*index.Backup, error) {
	b, err := s.backupHere(ctx, ref)
	if err != nil {
		return nil, err
	}
	if b.Status != index.BackupAvailable {
		return nil, wrapf(ErrConflict, "backup %s is %s: only an available backup can be protected or unprotected", b.ID, b.Status)
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	// A delete or prune may have marked it deleting since: it takes manifestMu for that.
	if b, err = s.idx.Backup(b.ID); err != nil {
		return nil, err
	} else if b.Status != index.BackupAvailable {
		return nil, wrapf(ErrConflict, "backup %s is %s: only an available backup can be protected or unprotected", b.ID, b.Status)
	}
	if err := s.refreshProtection(ctx, b, false); err != nil {
		return nil, err
	}
	if b.Protected == protect {
		return b, nil
	}
	at, err := s.rewriteManifest(ctx, b.ID, func(m *repo.Manifest) { m.Protected = protect })
	if err != nil {
		return nil, err
	}
	b, err = s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
		rec.Protected = protect
		stampUpdated(rec, at)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.syncIndex()
	s.notifyChange()
	s.log.Info("backup protection changed", "backup_id", b.ID, "protected", protect)
	return b, nil
}

// claimManifest takes the claim of backup id's manifest, which a rewrite of it holds from
// its read to its store, and a copy's or an import's commit from its look for the manifest to
// its store (or withdrawal): the same manifest's rewrites and commits on other gateways queue
// behind it, for up to rewriteWait.
func (s *Service) claimManifest(ctx context.Context, id string) (*repo.Lock, error) {
	cl, err := s.repo.ClaimWithin(ctx, "update backup "+id, rewriteWait)
	if errors.Is(err, repo.ErrLocked) {
		return nil, wrapf(ErrConflict, "backup %s is being updated on another gateway (%v): try again", id, err)
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", id, err)
	}
	return cl, nil
}

// rewriteWait bounds how long a manifest's rewrite waits for another gateway's rewrite of it.
const rewriteWait = 30 * time.Second

// rewriteManifest replaces a committed backup's manifest with what fn makes of it. The caller
// holds manifestMu, so no commit, delete or other rewrite of it runs meanwhile (a delete
// between the read and the write would bring the manifest back); the shared repository lock
// keeps gc away, so the blobs the manifest names are still stored when the new one lands.
// Only descriptive fields change (name, description, metadata, protection, the parent after
// a prune), never the block map: a reader that sees either version restores the same bytes.
// Rewrites on other gateways queue behind the claim it holds from read to store. It stamps
// the manifest's UpdatedAt and returns it: the caller's index update sets the record's
// updated_at to it, so every gateway and a rebuilt index show the same time.
func (s *Service) rewriteManifest(ctx context.Context, id string, fn func(*repo.Manifest)) (time.Time, error) {
	var none time.Time
	lk, err := s.repo.Lock(ctx, repo.LockShared, "update")
	if err != nil {
		return none, err
	}
	defer lk.Unlock()
	// One rewrite of a manifest at a time across processes, read to store: two gateways each
	// storing what they read lost the earlier one's change (docs/design.md, "Manifest rewrites
	// and deletes") [TestTwoRewritesOnTwoGatewaysKeepBothChanges].
	cl, err := s.claimManifest(ctx, id)
	if err != nil {
		return none, err
	}
	defer cl.Unlock()
	m, err := s.repo.GetManifest(ctx, id)
	if errors.Is(err, backend.ErrNotFound) {
		return none, wrapf(ErrConflict, "backup %s was deleted meanwhile", id)
	}
	if err != nil {
		return none, fmt.Errorf("backup %s: %w", id, err)
	}
	// A copy may be older than the damaged manifest, and a manifest put back older than the
	// record (protectionOf): a protection this gateway knows of is kept, or the rewrite would
	// store their "unprotected" as a new sound manifest, which every gateway and the next
	// delete would take (fn, a protect or unprotect, says what the caller asks all the same)
	// [TestAnOlderManifestPutBackDoesNotUnprotect].
	if rec, err := s.idx.Backup(id); err == nil && rec.Protected && (m.ReadFromCopy() || s.protectionOf(rec, m)) {
		m.Protected = true
	}
	root, level := m.Root, m.RootLevel
	fn(m)
	m.UpdatedAt = now()
	if m.Root != root || m.RootLevel != level || m.ID != id {
		return none, fmt.Errorf("backup %s: internal error: a manifest rewrite may not change its block map", id)
	}
	if err := cl.Check(); err != nil {
		return none, fmt.Errorf("backup %s: its update claim: %w: nothing was changed; try again", id, err)
	}
	if err := s.repo.RewriteManifest(ctx, lk, m); errors.Is(err, repo.ErrManifestDeleted) {
		return none, wrapf(ErrConflict, "backup %s was deleted meanwhile", id)
	} else if err != nil {
		return none, err
	}
	return m.UpdatedAt, nil
}

// mayRemove says why a committed backup may not be deleted or pruned now, or nil: protection
// always refuses; the repository's minimum age refuses unless an admin forces it.
func mayRemove(c Caller, b *index.Backup, st Settings, force bool, at time.Time) error {
	if b.Protected {
		return wrapf(ErrConflict, "backup %s is protected: run 'cairn backup unprotect %s' first", b.ID, b.ID)
	}
	if b.Status != index.BackupAvailable || st.MinAge <= 0 {
		return nil
	}
	age := at.Sub(b.CreatedAt)
	if age >= time.Duration(st.MinAge) || (force && c.Admin) {
		return nil
	}
	return wrapf(ErrConflict, "backup %s is %s old, younger than the repository's minimum age %s: wait, or as an admin add --force",
		b.ID, age.Round(time.Second), time.Duration(st.MinAge))
}

// refreshProtection reads a committed backup's protection from its manifest, which another
// gateway may have changed since this index learned it, and brings the record up to date:
// one available, being restored, or reset to error (until 2026-12-08 only an available one,
// so a backup protected elsewhere and reset to error here was deleted here
// [TestAResetBackupProtectedElsewhereIsNotDeleted]). A backup without a manifest (one that
// failed) keeps its record's word. For a deletion
// (deleting), a manifest read from its second copy is no answer: the copy may be older than
// the manifest was (a protection whose copy was not stored), so the delete is refused until
// a repair has written the manifest again.
func (s *Service) refreshProtection(ctx context.Context, b *index.Backup, deleting bool) error {
	if !b.Status.Committed() && !resetToError(b) {
		return nil
	}
	m, err := s.repo.GetManifest(ctx, b.ID)
	if errors.Is(err, backend.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if deleting && m.ReadFromCopy() {
		return wrapf(ErrConflict, "backup %s: its manifest is damaged and only its second copy could be read, which may be older (its protection with it): run 'cairn repo repair', then delete it", b.ID)
	}
	protected := s.protectionOf(b, m)
	if protected == b.Protected || (m.ReadFromCopy() && b.Protected) {
		return nil // a copy, which may be older, never lowers a protection
	}
	b.Protected = protected
	_, err = s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
		rec.Protected = protected
		return nil
	})
	return err
}

// protectionOf is backup b's protection as its manifest m says it, but never lowered by a
// manifest older than the record's last change (the rewrite that stamped it): an older
// manifest's bytes put back under its name authenticate (the object lock every immutable
// repository needs keeps old versions), and before 2026-12-08 (found by review) one from
// before a protect made delete and prune here remove the protected backup
// [TestAnOlderManifestPutBackDoesNotUnprotect]. A later unprotect through a gateway whose
// clock is behind is not taken either: the backup stays protected here until unprotected
// here, the safe side.
func (s *Service) protectionOf(b *index.Backup, m *repo.Manifest) bool {
	if b.Protected && !m.Protected && m.Updated().Before(b.UpdatedAt) {
		s.log.Warn("backup's manifest is older than its record and says unprotected: kept protected (an older manifest put back?)",
			"backup_id", b.ID, "manifest_updated", m.Updated(), "record_updated", b.UpdatedAt)
		return true
	}
	return m.Protected
}
