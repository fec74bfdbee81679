package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/cairn-backup/cairn/repo/backend"
)

// CheckReport lists what a check found. Problems make a repository unhealthy; Notes do not
// (a leftover pack that gc will remove).
type CheckReport struct {
	Backups   int      `json:"backups"`
	Packs     int      `json:"packs"`
	Blobs     int64    `json:"blobs"`
	ReadData  bool     `json:"read_data"`
	BytesRead int64    `json:"bytes_read"`
	Problems  []string `json:"problems"`
	Notes     []string `json:"notes"`
}

// OK reports whether the check found no problems.
func (c *CheckReport) OK() bool { return len(c.Problems) == 0 }

func (c *CheckReport) problem(format string, args ...any) {
	if len(c.Problems) < 1000 {
		c.Problems = append(c.Problems, fmt.Sprintf(format, args...))
	}
}

// Check verifies the repository from its manifests: every backup the backend holds has a
// readable manifest and a complete block map, and every blob it reaches is indexed in a pack
// that exists; every indexed pack exists with its size. With readData it also reads every pack
// and verifies every blob against its address. It holds a shared lock.
func (r *Repository) Check(ctx context.Context, readData bool) (*CheckReport, error) {
	lk, err := r.Lock(ctx, LockShared, "check")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	rep := &CheckReport{ReadData: readData}
	stored := map[PackID]int64{}
	if err := r.ListPacks(ctx, func(id PackID, size int64) error {
		stored[id] = size
		return nil
	}); err != nil {
		return nil, err
	}
	indexed := map[PackID]int64{}
	if err := r.idx.Packs(func(id PackID, size int64) error {
		indexed[id] = size
		rep.Packs++
		if got, ok := stored[id]; !ok {
			rep.problem("pack %s: in the index but missing from the backend", id)
		} else if got != size {
			rep.problem("pack %s: %d bytes in the backend, %d in the index", id, got, size)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	unindexed := 0
	for id := range stored {
		if _, ok := indexed[id]; !ok {
			unindexed++
		}
	}
	if unindexed > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d packs are not in the index (left by an interrupted backup; 'cairn repo gc' removes them)", unindexed))
	}

	var ids []string
	if err := r.ListManifests(ctx, func(id string) error { ids = append(ids, id); return nil }); err != nil {
		return nil, err
	}
	sort.Strings(ids)
	seen := map[Address]struct{}{}
	livePacks := map[PackID]struct{}{}
	for _, id := range ids {
		m, err := r.GetManifest(ctx, id)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err != nil {
			rep.problem("backup %s: %v", id, err)
			continue
		}
		rep.Backups++
		err = r.Walk(ctx, m.Root, m.RootLevel, seen, func(a Address, t BlobType) error {
			loc, ok, err := r.idx.Lookup(a)
			if err != nil {
				return err
			}
			if !ok {
				rep.problem("backup %s: blob %s is not in the index", id, a.Short())
				return nil
			}
			livePacks[loc.Pack] = struct{}{}
			if _, ok := stored[loc.Pack]; !ok {
				rep.problem("backup %s: blob %s: pack %s is missing", id, a.Short(), loc.Pack)
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, ErrCorrupt) || errors.Is(err, backend.ErrNotFound) {
				rep.problem("backup %s: block map: %v", id, err)
				continue
			}
			return nil, err
		}
	}
	if dead := len(indexed) - len(livePacks); dead > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d packs hold nothing a stored backup needs ('cairn repo gc' reclaims their space)", dead))
	}
	if readData {
		if err := r.checkData(ctx, stored, rep); err != nil {
			return nil, err
		}
	} else if err := r.idx.Blobs(func(PackEntry) error { rep.Blobs++; return nil }); err != nil {
		return nil, err
	}
	return rep, nil
}

// checkData reads every indexed pack and verifies every blob in it.
func (r *Repository) checkData(ctx context.Context, stored map[PackID]int64, rep *CheckReport) error {
	var scratch, plain []byte
	for id, size := range stored {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := r.readTrailer(ctx, id, size)
		if err != nil {
			rep.problem("%v", err)
			continue
		}
		data, err := r.be.GetRange(ctx, id.Key(), 0, size)
		if err != nil {
			rep.problem("pack %s: read: %v", id, err)
			continue
		}
		rep.BytesRead += size
		for _, e := range entries {
			rep.Blobs++
			plain, scratch, err = r.keys.decodeBlob(plain[:0], scratch, data[e.Offset:e.Offset+e.Length], e.Type, e.Addr)
			if err != nil {
				rep.problem("pack %s offset %d: %v", id, e.Offset, err)
			}
		}
	}
	return nil
}
