package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// packIndexState is what the backend holds of each pack's index object.
type packIndexState struct {
	keys    map[PackID][]string // index objects by pack
	damaged map[PackID][]string // those that do not authenticate or parse
}

// scanPackIndex lists every pack index object and, with verify, reads each.
func (r *Repository) scanPackIndex(ctx context.Context, verify bool) (*packIndexState, error) {
	st := &packIndexState{keys: map[PackID][]string{}, damaged: map[PackID][]string{}}
	var all []string
	if err := r.be.List(ctx, indexPrefix, func(oi backend.ObjectInfo) error {
		all = append(all, oi.Key)
		return nil
	}); err != nil {
		return nil, err
	}
	for _, key := range all {
		_, name, ok := keyTime(indexPrefix, key)
		id, err := ParsePackID(name)
		if !ok || err != nil {
			continue
		}
		st.keys[id] = append(st.keys[id], key)
		if !verify {
			continue
		}
		if _, _, _, err := r.readPackIndex(ctx, key); err != nil {
			if errors.Is(err, backend.ErrNotFound) {
				continue
			}
			if !errors.Is(err, ErrCorrupt) {
				return nil, err
			}
			st.damaged[id] = append(st.damaged[id], key)
		}
	}
	return st, nil
}

// checkPackIndex reports packs whose second copy of the blob list (the index object) is
// missing or damaged: no data is lost while the trailer is good, but one copy is.
func (r *Repository) checkPackIndex(ctx context.Context, stored map[PackID]int64, live map[PackID]struct{}, rep *CheckReport) error {
	st, err := r.scanPackIndex(ctx, true)
	if err != nil {
		return err
	}
	for id := range stored {
		if _, ok := live[id]; !ok {
			continue // garbage (an interrupted backup's, or a deleted one's): gc's business
		}
		for _, key := range st.damaged[id] {
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: %s: the pack's index object does not authenticate ('cairn repo repair' writes it again from the pack's trailer)", ProblemDamaged, key)
		}
		if len(st.keys[id]) == 0 {
			rep.Classes[ProblemMissing]++
			rep.problem("%s: pack %s has no index object ('cairn repo repair' writes it again from the pack's trailer)", ProblemMissing, id)
		}
	}
	return nil
}

// RepairPackIndex writes the index object again for every pack whose index objects are
// missing or damaged and whose trailer is good, and removes the damaged ones. It returns how
// many it wrote.
func (r *Repository) RepairPackIndex(ctx context.Context) (int, error) {
	lk, err := r.Lock(ctx, LockShared, "repair")
	if err != nil {
		return 0, err
	}
	defer lk.Unlock()
	st, err := r.scanPackIndex(ctx, true)
	if err != nil {
		return 0, err
	}
	n := 0
	err = r.ListPacks(ctx, func(id PackID, size int64) error {
		if len(st.keys[id]) > len(st.damaged[id]) {
			return nil // a good one exists
		}
		entries, err := r.readTrailer(ctx, id, size)
		if err != nil {
			r.logf("pack %s: its index object cannot be written again: %v", id, err)
			return nil
		}
		if err := lk.Check(); err != nil {
			return err
		}
		if err := r.putObject(ctx, timeKey(indexPrefix, time.Now(), id.String()), encodePackIndex(size, entries)); err != nil {
			return fmt.Errorf("write the index of pack %s: %w", id, err)
		}
		for _, key := range st.damaged[id] {
			if err := r.be.Delete(ctx, key); err != nil {
				return err
			}
		}
		n++
		return nil
	})
	return n, err
}

// RepairTrailers rewrites every pack whose trailer is damaged but whose index object is good:
// its blobs, each verified, go into a new pack (with a good trailer and index object), and the
// old pack goes through a deletion record, as gc's repack does. It holds the exclusive lock,
// like gc, since it deletes. It returns how many packs it rewrote.
func (r *Repository) RepairTrailers(ctx context.Context) (int, error) {
	lk, err := r.Lock(ctx, LockExclusive, "repair")
	if err != nil {
		return 0, err
	}
	defer lk.Unlock()
	st, err := r.scanPackIndex(ctx, true)
	if err != nil {
		return 0, err
	}
	type packInfo struct {
		id   PackID
		size int64
	}
	var broken []packInfo
	if err := r.ListPacks(ctx, func(id PackID, size int64) error {
		if _, err := r.readTrailer(ctx, id, size); err != nil && (errors.Is(err, ErrCorrupt) || errors.Is(err, backend.ErrRange)) {
			broken = append(broken, packInfo{id, size})
		}
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	for _, p := range broken {
		var entries []PackEntry
		for _, key := range st.keys[p.id] {
			if _, size, e, err := r.readPackIndex(ctx, key); err == nil && size == p.size {
				entries = e
				break
			}
		}
		if entries == nil {
			r.logf("pack %s: its trailer is damaged and no good index object describes it", p.id)
			continue
		}
		data, err := r.be.GetRange(ctx, p.id.Key(), 0, p.size)
		if err != nil {
			return n, err
		}
		var pk packer
		var scratch, plain []byte
		d := &deletion{packs: map[PackID][]Address{}, sizes: map[PackID]int64{}}
		for _, e := range entries {
			d.packs[p.id] = append(d.packs[p.id], e.Addr)
			if int64(e.Offset)+int64(e.Length) > int64(len(data)) {
				continue
			}
			stored := data[e.Offset : e.Offset+e.Length]
			if plain, scratch, err = r.keys.decodeBlob(plain[:0], scratch, stored, e.Type, e.Addr); err != nil {
				continue // lost either way; check reports it
			}
			pk.add(e.Type, e.Addr, stored, int(e.PlainLen))
		}
		if !pk.empty() {
			nid, ndata, nentries := pk.finish(r.keys)
			if err := r.storePack(ctx, nid, ndata, nentries); err != nil {
				return n, err
			}
			if nid == p.id {
				// Unencrypted and every blob intact: the rewrite is the original pack, byte for
				// byte, and its Put replaced the damaged object. Nothing to delete.
				n++
				continue
			}
			d.relocated = nentries
			d.sizes[nid] = int64(len(ndata))
		}
		key := timeKey(deletedPrefix, time.Now(), "repair"+p.id.String()[:8])
		if err := r.putObject(ctx, key, d.encode()); err != nil {
			return n, err
		}
		if err := d.apply(r.idx); err != nil {
			return n, err
		}
		if err := r.idx.SetMeta("applied/"+key, "1"); err != nil {
			return n, err
		}
		for _, k := range st.keys[p.id] {
			if err := r.be.Delete(ctx, k); err != nil {
				return n, err
			}
		}
		if err := r.be.Delete(ctx, p.id.Key()); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
