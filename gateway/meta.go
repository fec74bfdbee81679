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

// saveVolume writes a volume's record through to the backend, whatever the repository holds:
// for the writes that make the record (a manage, a create, a restore's new volume). It holds
// volumeRecMu, as every write of the record does, so a forget here never runs between its
// read of the index and its store (docs/design.md, "A write of a volume's record never
// brings one back either").
func (s *Service) saveVolume(ctx context.Context, id string) error {
	s.volumeRecMu.Lock()
	defer s.volumeRecMu.Unlock()
	return s.storeVolumeRecord(ctx, id, false)
}

// saveVolumeLogged is the write of a volume's record at a job's end (and a restore's start):
// stored only while the repository holds the record or its copy, since a volume whose both
// are gone was forgotten through another gateway while the job ran here
// [TestJobOnOneGatewayDoesNotBringBackAVolumeUnmanagedOnAnother]. A failure must not undo what
// already happened: it is logged, and the next change, or rebuild-index from the manifests,
// covers it.
func (s *Service) saveVolumeLogged(ctx context.Context, id string) {
	s.volumeRecMu.Lock()
	defer s.volumeRecMu.Unlock()
	s.saveVolumeHeld(ctx, id, true)
}

// saveVolumeHeld is saveVolumeLogged for a caller that holds volumeRecMu; kept false stores
// the record whatever the repository holds (a volume kept because its removal failed).
func (s *Service) saveVolumeHeld(ctx context.Context, id string, kept bool) {
	if err := s.storeVolumeRecord(context.WithoutCancel(ctx), id, kept); err != nil {
		s.log.Warn("cannot write the volume's record to the repository", "volume_id", id, "error", err)
	}
}

// storeVolumeRecord stores the index's record of volume id in the repository, or removes the
// repository's when the index has none; the caller holds volumeRecMu. Transient statuses are
// stored as what recovery would make of them. With kept, a record the repository no longer
// holds, nor its copy, is not stored again.
func (s *Service) storeVolumeRecord(ctx context.Context, id string, kept bool) error {
	v, err := s.idx.Volume(id)
	if errors.Is(err, index.ErrNotFound) {
		return s.repo.DeleteMeta(ctx, metaVolumes, id)
	}
	if err != nil {
		return err
	}
	if kept && !s.metaKept(ctx, metaVolumes, id) {
		s.log.Info("volume's record not stored again: it was forgotten through another gateway; the next catch-up forgets it here", "volume_id", id, "volume", v.Name)
		return nil
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

// metaKept reports whether the repository holds the metadata object name of kind, or its copy
// (an object lost outside cairn): the object first, then the copy, as every removal takes the
// copy first. One it cannot ask about counts as kept.
func (s *Service) metaKept(ctx context.Context, kind, name string) bool {
	if has, err := s.repo.HasMeta(ctx, kind, name); err != nil || has {
		return true
	}
	left, err := s.repo.MetaCopyLeft(ctx, kind, name)
	return err != nil || left
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
		// Read again under volumeRecMu (learnVolume): a serving gateway's rebuild may list
		// the record of a volume it is forgetting.
		learned, err := s.learnVolume(ctx, id)
		if learned {
			vols++
		}
		return err
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
