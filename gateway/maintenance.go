package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// roots returns the block maps of every backup whose blobs must be kept.
func (s *Service) roots() ([]repo.Root, error) {
	all, err := s.idx.Backups()
	if err != nil {
		return nil, err
	}
	var out []repo.Root
	for _, b := range all {
		if b.Status == index.BackupAvailable || b.Status == index.BackupRestoring {
			out = append(out, repo.Root{BackupID: b.ID, Root: b.Root, Level: b.RootLevel})
		}
	}
	return out, nil
}

// unknownManifests lists backups stored in the backend that the index does not know.
func (s *Service) unknownManifests(ctx context.Context) ([]string, error) {
	var out []string
	err := s.repo.ListManifests(ctx, func(id string) error {
		if _, err := s.idx.Backup(id); errors.Is(err, index.ErrNotFound) {
			out = append(out, id)
		} else if err != nil {
			return err
		}
		return nil
	})
	return out, err
}

// Check verifies the repository (index against backend; with readData every blob).
func (s *Service) Check(ctx context.Context, readData bool) (*repo.CheckReport, error) {
	if _, err := adminOf(ctx, "check the repository"); err != nil {
		return nil, err
	}
	roots, err := s.roots()
	if err != nil {
		return nil, err
	}
	rep, err := s.repo.Check(ctx, s.idx, roots, readData)
	if err != nil {
		return nil, err
	}
	for _, r := range roots {
		if has, err := s.repo.HasManifest(ctx, r.BackupID); err != nil {
			return nil, err
		} else if !has {
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s: its manifest is missing from the backend", r.BackupID))
		} else if m, err := s.repo.GetManifest(ctx, r.BackupID); errors.Is(err, repo.ErrCorrupt) {
			// Restore, export and rebuild-index all start from the manifest.
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s: its manifest is damaged: %v", r.BackupID, err))
		} else if err != nil {
			return nil, err
		} else if m.Root != r.Root || m.RootLevel != r.Level {
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s: its manifest and the index name different block maps", r.BackupID))
		}
	}
	unknown, err := s.unknownManifests(ctx)
	if err != nil {
		return nil, err
	}
	if len(unknown) > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d backups are stored but not in the index (e.g. %s): 'cairn backup import' or 'cairn repo rebuild-index' adds them", len(unknown), unknown[0]))
	}
	if d, _ := s.idx.Meta("refs-dirty"); d != "" {
		rep.Notes = append(rep.Notes, "reference counts may be high after an interrupted operation: 'cairn repo gc' recounts them")
	}
	return rep, nil
}

// GC reclaims the space of deleted and failed backups. It refuses while the backend holds
// backups the index does not know, since their blobs would look unreferenced.
func (s *Service) GC(ctx context.Context, logf func(string, ...any)) (repo.GCStats, error) {
	if _, err := adminOf(ctx, "run gc"); err != nil {
		return repo.GCStats{}, err
	}
	unknown, err := s.unknownManifests(ctx)
	if err != nil {
		return repo.GCStats{}, err
	}
	if len(unknown) > 0 {
		return repo.GCStats{}, wrapf(ErrConflict, "the backend holds %d backups the index does not know (e.g. %s): run 'cairn repo rebuild-index' or import them before gc, or their data would be reclaimed", len(unknown), unknown[0])
	}
	dirty, err := s.idx.Meta("refs-dirty")
	if err != nil {
		return repo.GCStats{}, err
	}
	roots, err := s.roots()
	if err != nil {
		return repo.GCStats{}, err
	}
	st, err := s.repo.GC(ctx, s.idx, repo.GCOptions{Recount: dirty != "", Roots: roots, Log: logf})
	if err != nil {
		return st, err
	}
	if dirty != "" {
		if err := s.idx.SetMeta("refs-dirty", ""); err != nil {
			return st, err
		}
	}
	s.log.Info("gc finished", "packs_deleted", st.PacksDeleted, "packs_repacked", st.PacksRepacked, "bytes_freed", st.BytesFreed)
	return st, nil
}

// RebuildResult says what rebuild-index found.
type RebuildResult struct {
	Packs   int `json:"packs"`
	Backups int `json:"backups"`
	Volumes int `json:"volumes"`
	Skipped int `json:"skipped"`
}

// RebuildIndex forgets the index and rebuilds volumes, backups, chains, blob locations and
// reference counts from the backend alone.
func (s *Service) RebuildIndex(ctx context.Context, logf func(string, ...any)) (*RebuildResult, error) {
	if _, err := adminOf(ctx, "rebuild the index"); err != nil {
		return nil, err
	}
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s.mu.Lock()
	running := len(s.cancels)
	s.mu.Unlock()
	if running > 0 {
		return nil, wrapf(ErrConflict, "%d backups or restores are running: wait for them before rebuilding the index", running)
	}
	repoID, _ := s.idx.Meta("repository")
	if err := s.idx.Wipe(); err != nil {
		return nil, err
	}
	if err := s.idx.SetMeta("repository", repoID); err != nil {
		return nil, err
	}
	if err := s.syncPacks(ctx); err != nil {
		return nil, err
	}
	res := &RebuildResult{}
	_ = s.idx.Packs(func(repo.PackID, int64) error { res.Packs++; return nil })
	logf("indexed %d packs", res.Packs)
	var ids []string
	if err := s.repo.ListManifests(ctx, func(id string) error { ids = append(ids, id); return nil }); err != nil {
		return nil, err
	}
	for _, id := range ids {
		m, err := s.repo.GetManifest(ctx, id)
		if err != nil {
			logf("backup %s skipped: %v", id, err)
			res.Skipped++
			continue
		}
		if _, err := s.adoptManifest(ctx, m); err != nil {
			logf("backup %s skipped: %v", id, err)
			res.Skipped++
			continue
		}
		res.Backups++
	}
	vols, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	res.Volumes = len(vols)
	if err := s.idx.SetMeta("refs-dirty", ""); err != nil {
		return nil, err
	}
	s.notifyChange()
	s.log.Info("index rebuilt", "packs", res.Packs, "backups", res.Backups, "volumes", res.Volumes)
	return res, nil
}

// Stats describes the repository's size and savings.
type Stats struct {
	Location         string  `json:"location"`
	Driver           string  `json:"backup_service"`
	BlockSize        int     `json:"block_size"`
	Compression      string  `json:"compression"`
	Encryption       string  `json:"encryption"`
	Volumes          int     `json:"volumes"`
	Backups          int     `json:"backups"`
	LogicalBytes     int64   `json:"logical_bytes"`      // sum of backup sizes
	DataBytes        int64   `json:"data_bytes"`         // sum of non-hole blocks over backups
	UniquePlainBytes int64   `json:"unique_plain_bytes"` // distinct blobs, uncompressed
	StoredBytes      int64   `json:"stored_bytes"`       // distinct blobs, as stored
	PackBytes        int64   `json:"pack_bytes"`         // pack objects in the backend
	Packs            int     `json:"packs"`
	Blobs            int64   `json:"blobs"`
	DedupRatio       float64 `json:"dedup_ratio"`       // data bytes / unique plain bytes
	CompressionRatio float64 `json:"compression_ratio"` // unique plain / stored
	IndexBytes       int64   `json:"index_bytes"`
}

// RepoStats computes the repository's statistics from the index.
func (s *Service) RepoStats(ctx context.Context) (*Stats, error) {
	if _, err := adminOf(ctx, "see the repository's statistics"); err != nil {
		return nil, err
	}
	cfg := s.repo.Config()
	st := &Stats{Location: s.Location(), Driver: s.driver, BlockSize: cfg.BlockSize, Compression: string(cfg.Compression),
		Encryption: cfg.Encryption, IndexBytes: s.idx.Size()}
	vols, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	st.Volumes = len(vols)
	backups, err := s.idx.Backups()
	if err != nil {
		return nil, err
	}
	for _, b := range backups {
		if b.Status != index.BackupAvailable && b.Status != index.BackupRestoring {
			continue
		}
		st.Backups++
		st.LogicalBytes += b.Size
		st.DataBytes += min(b.Stats.DataBlocks*int64(cfg.BlockSize), b.Size)
	}
	if err := s.idx.Packs(func(_ repo.PackID, size int64) error {
		st.Packs++
		st.PackBytes += size
		return nil
	}); err != nil {
		return nil, err
	}
	if err := s.idx.Blobs(func(e repo.PackEntry, refs uint32) error {
		if refs == 0 {
			return nil
		}
		st.Blobs++
		st.UniquePlainBytes += int64(e.PlainLen)
		st.StoredBytes += int64(e.Length)
		return nil
	}); err != nil {
		return nil, err
	}
	if st.UniquePlainBytes > 0 {
		st.DedupRatio = float64(st.DataBytes) / float64(st.UniquePlainBytes)
	}
	if st.StoredBytes > 0 {
		st.CompressionRatio = float64(st.UniquePlainBytes) / float64(st.StoredBytes)
	}
	return st, nil
}
