package gateway

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
)

// The index is a cache of the repository. What it holds that no manifest says (volumes'
// names, kinds, paths and descriptions; snapshots; quota limits) is written through to
// metadata objects in the backend, so rebuild-index and other gateways restore it.
const (
	metaVolumes   = "volumes"
	metaSnapshots = "snapshots"
	metaQuotas    = "quotas"
)

// saveVolume writes a volume's record through to the backend. Transient statuses are stored
// as what recovery would make of them.
func (s *Service) saveVolume(ctx context.Context, id string) error {
	v, err := s.idx.Volume(id)
	if errors.Is(err, index.ErrNotFound) {
		return s.repo.DeleteMeta(ctx, metaVolumes, id)
	}
	if err != nil {
		return err
	}
	switch v.Status {
	case index.VolumeBackingUp:
		v.Status = index.VolumeAvailable
		if v.FailReason != "" { // left error by an unfinished restore (recover)
			v.Status = index.VolumeError
		}
	case index.VolumeRestoringBackup, index.VolumeCreating:
		v.Status, v.FailReason = index.VolumeError, "restore interrupted: the contents are incomplete"
	}
	return s.repo.PutMeta(ctx, metaVolumes, id, v)
}

// saveVolumeLogged is saveVolume where a failure must not undo what already happened: the
// next change, or rebuild-index from the manifests, covers it.
func (s *Service) saveVolumeLogged(ctx context.Context, id string) {
	if err := s.saveVolume(context.WithoutCancel(ctx), id); err != nil {
		s.log.Warn("cannot write the volume's record to the repository", "volume_id", id, "error", err)
	}
}

func (s *Service) saveSnapshot(ctx context.Context, sn *index.Snapshot) error {
	rec := *sn
	rec.Status = index.SnapshotAvailable
	return s.repo.PutMeta(ctx, metaSnapshots, sn.ID, &rec)
}

func (s *Service) saveQuota(ctx context.Context, project string) error {
	limits, err := s.idx.QuotaLimits(project)
	if err != nil {
		return err
	}
	if len(limits) == 0 {
		return s.repo.DeleteMeta(ctx, metaQuotas, project)
	}
	return s.repo.PutMeta(ctx, metaQuotas, project, limits)
}

// storedVolume returns a volume's record as the backend keeps it, or nil.
func (s *Service) storedVolume(ctx context.Context, id string) *index.Volume {
	var v index.Volume
	if err := s.repo.GetMeta(ctx, metaVolumes, id, &v); err != nil {
		if !errors.Is(err, backend.ErrNotFound) {
			s.log.Warn("volume record in the repository unreadable", "volume_id", id, "error", err)
		}
		return nil
	}
	if v.ID != id {
		return nil
	}
	return &v
}

// restoreMeta brings back every stored volume, snapshot and quota the index lacks.
func (s *Service) restoreMeta(ctx context.Context, logf func(string, ...any)) (vols, snaps, quotas int, err error) {
	bad := func(key string, err error) { logf("skipped %s: %v", key, err) }
	err = s.repo.ListMeta(ctx, metaQuotas, func(project string, b []byte) error {
		var limits map[string]int64
		if json.Unmarshal(b, &limits) != nil {
			return nil
		}
		quotas++
		return s.idx.SetQuotaLimits(project, limits)
	}, bad)
	if err != nil {
		return
	}
	err = s.repo.ListMeta(ctx, metaVolumes, func(id string, b []byte) error {
		var v index.Volume
		if json.Unmarshal(b, &v) != nil || v.ID != id {
			return nil
		}
		if _, err := s.idx.Volume(id); err == nil {
			return nil
		}
		if err := s.idx.LearnVolume(&v); err != nil && !errors.Is(err, index.ErrExists) {
			return err
		}
		vols++
		return nil
	}, bad)
	if err != nil {
		return
	}
	err = s.repo.ListMeta(ctx, metaSnapshots, func(id string, b []byte) error {
		var sn index.Snapshot
		if json.Unmarshal(b, &sn) != nil || sn.ID != id {
			return nil
		}
		if _, err := s.idx.Snapshot(id); err == nil {
			return nil
		}
		if err := s.idx.CreateSnapshot(&sn); err != nil && !errors.Is(err, index.ErrExists) {
			return err
		}
		snaps++
		return nil
	}, bad)
	return
}

// syncIndex makes the index's writes durable before a command reports what they recorded.
func (s *Service) syncIndex() {
	if err := s.idx.Sync(); err != nil {
		s.log.Error("cannot sync the index", "error", err)
	}
}
