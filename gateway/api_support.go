package gateway

import (
	"context"
	"errors"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
)

// VolumeByID returns a volume by its exact id, if the caller may see it. Unlike Volume it
// never resolves names or paths and never registers anything: the HTTP API takes ids only,
// so a remote caller cannot make the gateway open a path of its choosing.
func (s *Service) VolumeByID(ctx context.Context, id string) (*index.Volume, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	v, err := s.idx.Volume(id)
	if errors.Is(err, index.ErrNotFound) {
		// Made through another gateway since the last full catch-up (a restore's new
		// volume, behind a load balancer): its record is read once.
		if learned, lerr := s.learnVolume(ctx, id); lerr == nil && learned {
			v, err = s.idx.Volume(id)
			s.lookRestoring(ctx)
		}
	}
	if errors.Is(err, index.ErrNotFound) || (err == nil && !c.sees(v.Project)) {
		return nil, wrapf(ErrNotFound, "volume %s could not be found", id)
	}
	if err != nil {
		return nil, err
	}
	return s.volumeFor(c, v), nil
}

// BackupByID returns a backup by its exact id, if the caller may see it (another project's
// backup is not found). Unlike Backup it does not match names or id prefixes.
func (s *Service) BackupByID(ctx context.Context, id string) (*index.Backup, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	b, err := s.backupByID(id)
	if errors.Is(err, index.ErrNotFound) && s.lookElsewhere(ctx, id) {
		b, err = s.backupByID(id)
	}
	if errors.Is(err, index.ErrNotFound) || (err == nil && !c.sees(b.Project)) {
		return nil, wrapf(ErrNotFound, "backup %s could not be found", id)
	}
	if err != nil {
		return nil, err
	}
	return s.backupFor(c, b), nil
}

// backupByID is the index's record of backup id, or else the one another gateway is
// creating ("Backups being created, on every gateway").
func (s *Service) backupByID(id string) (*index.Backup, error) {
	b, err := s.idx.Backup(id)
	if errors.Is(err, index.ErrNotFound) {
		if e := s.elsewhereBackupOf(id); e != nil {
			return e, nil
		}
	}
	return b, err
}

// Parents returns the ids of backups that have a dependent incremental backup (Cinder's
// has_dependent_backups).
func (s *Service) Parents() (map[string]bool, error) {
	all, err := s.idx.Backups()
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, b := range all {
		if dependsOnParent(b) {
			out[b.ParentID] = true
		}
	}
	return out, nil
}

// VolumeInUse says why a volume the caller sees is in use (mounted, attached to a loop
// device, held by device-mapper, locked by a process), or "" when it is not; the web console
// shows it beside each volume.
func (s *Service) VolumeInUse(ctx context.Context, v *index.Volume) (string, error) {
	if _, err := s.VolumeByID(ctx, v.ID); err != nil {
		return "", err
	}
	return blockio.InUse(v.Path)
}
