package gateway

import (
	"context"
	"errors"
	"maps"
	"time"
	"unicode/utf8"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// BackupUpdate changes what describes a backup (Cinder's backup-update): a nil field stays
// as it is; Metadata, when not nil, replaces the backup's metadata whole.
type BackupUpdate struct {
	Name        *string
	Description *string
	Metadata    map[string]string
}

// maxField is Cinder's bound on names, descriptions and metadata keys and values.
const maxField = 255

// UpdateBackup renames, redescribes or re-tags a backup. The repository is the truth: a
// committed backup's manifest is rewritten whole (one atomic Put) before its record, so a
// rebuilt index keeps the change; a backup still creating takes it into its manifest when it
// commits. Other gateways take it from the manifest at their next catch-up.
func (s *Service) UpdateBackup(ctx context.Context, ref string, u BackupUpdate) (*index.Backup, error) {
	b, err := s.backupHere(ctx, ref)
	if err != nil {
		return nil, err
	}
	if u.Name != nil && *u.Name != "" {
		if err := validName(*u.Name); err != nil {
			return nil, err
		}
	}
	if u.Description != nil && utf8.RuneCountInString(*u.Description) > maxField {
		return nil, invalidf("a description must be at most %d characters", maxField)
	}
	if err := validMetadata(u.Metadata); err != nil {
		return nil, err
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	id := b.ID
	if b, err = s.idx.Backup(id); errors.Is(err, index.ErrNotFound) {
		return nil, wrapf(ErrNotFound, "backup %s not found: see 'cairn backup list'", id)
	} else if err != nil {
		return nil, err
	}
	var at time.Time // the manifest's rewrite, if any
	switch b.Status {
	case index.BackupDeleting:
		return nil, wrapf(ErrConflict, "backup %s is being deleted", b.ID)
	case index.BackupAvailable, index.BackupRestoring:
		if at, err = s.rewriteManifest(ctx, b.ID, func(m *repo.Manifest) { u.apply(&m.Name, &m.Description, &m.Metadata) }); err != nil {
			return nil, err
		}
	}
	// creating: the commit reads the record; error: no manifest to keep it in.
	out, err := s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
		u.apply(&rec.Name, &rec.Description, &rec.Metadata)
		stampUpdated(rec, at)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.notifyChange()
	s.syncIndex()
	s.log.Info("backup updated", "backup_id", b.ID)
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	return backupShownTo(out, c, s.wordsFor(c)), nil // what is an admin's to know kept from a member
}

func (u BackupUpdate) apply(name, description *string, metadata *map[string]string) {
	if u.Name != nil {
		*name = *u.Name
	}
	if u.Description != nil {
		*description = *u.Description
	}
	if u.Metadata != nil {
		*metadata = maps.Clone(u.Metadata)
		if len(*metadata) == 0 {
			*metadata = nil
		}
	}
}

// validMetadata applies Cinder's bounds: keys of 1 to 255 characters, values of at most 255.
func validMetadata(md map[string]string) error {
	for k, v := range md {
		if k == "" || utf8.RuneCountInString(k) > maxField {
			return invalidf("metadata key %q: a key must be 1 to %d characters", k, maxField)
		}
		if utf8.RuneCountInString(v) > maxField {
			return invalidf("metadata value of %q: a value must be at most %d characters", k, maxField)
		}
	}
	return nil
}
