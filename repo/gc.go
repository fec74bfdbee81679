package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/repo/backend"
)

// BlobIndex is the part of the index that gc and check walk: every pack and blob it knows.
type BlobIndex interface {
	Index
	// Packs calls fn for every pack the index knows.
	Packs(fn func(id PackID, size int64) error) error
	// Blobs calls fn for every blob the index knows, with its reference count.
	Blobs(fn func(e PackEntry, refs uint32) error) error
	// DropPack forgets a pack and those of addrs whose entries still point into it.
	DropPack(id PackID, addrs []Address) error
	// ResetRefs sets every reference count to zero (before a recount).
	ResetRefs() error
}

// Root is a live backup's tree, as gc and check need it.
type Root struct {
	BackupID string
	Root     Address
	Level    int
}

// GCOptions tune a garbage collection.
type GCOptions struct {
	// Recount rebuilds every reference count from Roots first (after a crash left counts
	// too high).
	Recount bool
	Roots   []Root
	// RepackThreshold: a pack whose unreferenced bytes are at least this fraction of it is
	// rewritten with only its live blobs. 0 means 0.2.
	RepackThreshold float64
	Log             func(format string, args ...any)
}

// GCStats says what a garbage collection did.
type GCStats struct {
	PacksDeleted   int   `json:"packs_deleted"`
	PacksRepacked  int   `json:"packs_repacked"`
	PacksOrphaned  int   `json:"orphan_packs_deleted"`
	BlobsReclaimed int64 `json:"blobs_reclaimed"`
	BytesFreed     int64 `json:"bytes_freed"`
}

type packUsage struct {
	size      int64
	liveBytes int64
	deadBytes int64
	live      int
	dead      []Address // unreferenced blobs, to forget with the pack
}

// GC reclaims the space of blobs no backup references. It waits for running backups and
// restores to finish and holds new ones back while it sweeps.
func (r *Repository) GC(ctx context.Context, bi BlobIndex, o GCOptions) (GCStats, error) {
	r.sessions.Lock()
	defer r.sessions.Unlock()
	var st GCStats
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if o.RepackThreshold == 0 {
		o.RepackThreshold = 0.2
	}
	if o.Recount {
		logf("recounting references of %d backups", len(o.Roots))
		if err := bi.ResetRefs(); err != nil {
			return st, err
		}
		for _, root := range o.Roots {
			if !root.Root.IsZero() {
				if err := r.retain(ctx, []Address{root.Root}, root.Level); err != nil {
					return st, fmt.Errorf("recount backup %s: %w", root.BackupID, err)
				}
			}
		}
	}
	usage := map[PackID]*packUsage{}
	if err := bi.Packs(func(id PackID, size int64) error {
		usage[id] = &packUsage{size: size}
		return nil
	}); err != nil {
		return st, err
	}
	if err := bi.Blobs(func(e PackEntry, refs uint32) error {
		u := usage[e.Pack]
		if u == nil {
			return nil
		}
		if refs > 0 {
			u.live++
			u.liveBytes += int64(e.Length)
		} else {
			u.dead = append(u.dead, e.Addr)
			u.deadBytes += int64(e.Length)
		}
		return nil
	}); err != nil {
		return st, err
	}
	for id, u := range usage {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		switch {
		case u.live == 0:
			// Forget the pack first: a blob the index no longer lists is never reused.
			if err := bi.DropPack(id, u.dead); err != nil {
				return st, err
			}
			if err := r.be.Delete(ctx, id.Key()); err != nil {
				return st, fmt.Errorf("delete pack %s: %w", id, err)
			}
			st.PacksDeleted++
			st.BlobsReclaimed += int64(len(u.dead))
			st.BytesFreed += u.size
		case len(u.dead) > 0 && float64(u.deadBytes) >= o.RepackThreshold*float64(u.size):
			freed, err := r.repack(ctx, bi, id, u.size)
			if err != nil {
				return st, err
			}
			st.PacksRepacked++
			st.BlobsReclaimed += int64(len(u.dead))
			st.BytesFreed += freed
		}
	}
	// Packs in the backend the index never learned: leftovers of backups that died between
	// storing a pack and indexing it.
	known := map[PackID]struct{}{} // read again: repacking added packs
	if err := bi.Packs(func(id PackID, _ int64) error {
		known[id] = struct{}{}
		return nil
	}); err != nil {
		return st, err
	}
	var orphans []PackID
	if err := r.ListPacks(ctx, func(id PackID, size int64) error {
		if _, ok := known[id]; !ok {
			orphans = append(orphans, id)
			st.BytesFreed += size
		}
		return nil
	}); err != nil {
		return st, err
	}
	for _, id := range orphans {
		if err := r.be.Delete(ctx, id.Key()); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return st, fmt.Errorf("delete orphan pack %s: %w", id, err)
		}
		st.PacksOrphaned++
	}
	return st, nil
}

// repack rewrites the live blobs of a pack into a new one and removes the old pack.
func (r *Repository) repack(ctx context.Context, bi BlobIndex, id PackID, size int64) (int64, error) {
	entries, err := r.readTrailer(ctx, id, size)
	if err != nil {
		return 0, err
	}
	data, err := r.be.GetRange(ctx, id.Key(), 0, size)
	if err != nil {
		return 0, fmt.Errorf("read pack %s: %w", id, err)
	}
	var p packer
	var scratch, plain []byte
	for _, e := range entries {
		loc, ok, err := r.idx.Lookup(e.Addr)
		if err != nil {
			return 0, err
		}
		if !ok || loc.Pack != id {
			continue // dead, or stored again elsewhere
		}
		refs, err := r.idx.Refs(e.Addr)
		if err != nil {
			return 0, err
		}
		if refs == 0 {
			continue
		}
		stored := data[e.Offset : e.Offset+e.Length]
		if plain, scratch, err = r.keys.decodeBlob(plain[:0], scratch, stored, e.Type, e.Addr); err != nil {
			return 0, fmt.Errorf("repack pack %s: live %w; run 'cairn repo check --read-data'", id, err)
		}
		p.add(e.Type, e.Addr, stored, int(e.PlainLen))
	}
	var newSize int64
	if !p.empty() {
		nid, ndata, nentries := p.finish(r.keys)
		if err := r.storePack(ctx, nid, ndata, nentries); err != nil {
			return 0, err
		}
		newSize = int64(len(ndata))
	}
	dead := make([]Address, 0, len(entries))
	for _, e := range entries {
		dead = append(dead, e.Addr) // DropPack skips those now indexed in the new pack
	}
	if err := bi.DropPack(id, dead); err != nil {
		return 0, err
	}
	if err := r.be.Delete(ctx, id.Key()); err != nil {
		return 0, fmt.Errorf("delete pack %s: %w", id, err)
	}
	return size - newSize, nil
}
