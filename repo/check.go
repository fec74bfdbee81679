package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/repo/backend"
)

// CheckReport lists what a check found. Problems make a repository unhealthy; Notes do not
// (a leftover pack that gc will remove, counts that are higher than needed).
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

// Check verifies that index and backend agree: every indexed pack exists with its size, every
// backup's block map is complete and every blob it references is indexed in an existing pack,
// and no reference count is lower than the backups need. With readData it also reads every
// pack and verifies every blob against its address.
func (r *Repository) Check(ctx context.Context, bi BlobIndex, roots []Root, readData bool) (*CheckReport, error) {
	r.sessions.RLock()
	defer r.sessions.RUnlock()
	rep := &CheckReport{Backups: len(roots), ReadData: readData}
	stored := map[PackID]int64{}
	if err := r.ListPacks(ctx, func(id PackID, size int64) error {
		stored[id] = size
		return nil
	}); err != nil {
		return nil, err
	}
	indexed := map[PackID]int64{}
	if err := bi.Packs(func(id PackID, size int64) error {
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
	for id := range stored {
		if _, ok := indexed[id]; !ok {
			rep.Notes = append(rep.Notes, fmt.Sprintf("pack %s: not in the index (left by an interrupted backup; 'cairn repo gc' removes it)", id))
		}
	}

	// Expected counts: one per backup root, and one from each live tree node per child.
	want := map[Address]uint32{}
	seen := map[Address]struct{}{}
	for _, root := range roots {
		if root.Root.IsZero() {
			continue
		}
		want[root.Root]++
		err := r.Walk(ctx, root.Root, root.Level, seen, func(a Address, t BlobType) error {
			loc, ok, err := r.idx.Lookup(a)
			if err != nil {
				return err
			}
			if !ok {
				rep.problem("backup %s: blob %s is not in the index", root.BackupID, a.Short())
				return nil
			}
			if _, ok := stored[loc.Pack]; !ok {
				rep.problem("backup %s: blob %s: pack %s is missing", root.BackupID, a.Short(), loc.Pack)
				return nil
			}
			if t == BlobTree {
				n, err := r.node(ctx, a)
				if err != nil {
					return err
				}
				for _, c := range n.addrs {
					if !c.IsZero() {
						want[c]++
					}
				}
			}
			return nil
		})
		if err != nil {
			if errors.Is(err, ErrCorrupt) || errors.Is(err, backend.ErrNotFound) {
				rep.problem("backup %s: block map: %v", root.BackupID, err)
				continue
			}
			return nil, err
		}
	}
	leaked := 0
	for a, w := range want {
		got, err := r.idx.Refs(a)
		if err != nil {
			return nil, err
		}
		if got < w {
			rep.problem("blob %s: %d references counted, %d needed (run 'cairn repo gc' to recount)", a.Short(), got, w)
		} else if got > w {
			leaked++
		}
	}
	if leaked > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d blobs have more references counted than needed (left by an interrupted backup; 'cairn repo gc' recounts)", leaked))
	}
	if readData {
		if err := r.checkData(ctx, bi, stored, rep); err != nil {
			return nil, err
		}
	} else if err := bi.Blobs(func(PackEntry, uint32) error { rep.Blobs++; return nil }); err != nil {
		return nil, err
	}
	return rep, nil
}

// checkData reads every indexed pack and verifies every blob in it.
func (r *Repository) checkData(ctx context.Context, bi BlobIndex, stored map[PackID]int64, rep *CheckReport) error {
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
