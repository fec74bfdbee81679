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

// RepairPacks restores both copies of every pack's blob list, each from the other, in one
// pass under the exclusive lock (like gc, since it deletes): a pack whose index objects are
// all missing or damaged gets a new one from its good trailer; a pack whose trailer is damaged
// is rewritten from a good index object: its blobs, each verified, go into a new pack, and the
// old one goes through a deletion record, as gc's repack does. A damaged index object goes
// once a good description of its pack is stored (a good index object, or a new one from the
// trailer). Like gc, it checks its lock before each thing it deletes. It returns how many
// index objects it wrote and how many packs it rewrote.
func (r *Repository) RepairPacks(ctx context.Context) (indexes, packs int, err error) {
	// Its reads may wait out a store's restart (a Patient ctx); its removals, under the
	// exclusive lock as gc's, may not (docs/design.md, "gc waits out an outage while it reads").
	rm := backend.Impatient(ctx)
	lk, err := r.Lock(ctx, LockExclusive, "repair")
	if err != nil {
		return 0, 0, err
	}
	defer lk.Unlock()
	st, err := r.scanPackIndex(ctx, true)
	if err != nil {
		return 0, 0, err
	}
	type packInfo struct {
		id   PackID
		size int64
	}
	var all []packInfo
	if err := r.ListPacks(ctx, func(id PackID, size int64) error {
		all = append(all, packInfo{id, size})
		return nil
	}); err != nil {
		return 0, 0, err
	}
	for _, p := range all {
		entries, terr := r.readTrailer(ctx, p.id, p.size)
		if terr != nil && !errors.Is(terr, ErrCorrupt) && !errors.Is(terr, backend.ErrRange) {
			return indexes, packs, terr
		}
		hasGood := len(st.keys[p.id]) > len(st.damaged[p.id])
		switch {
		case terr == nil && !hasGood:
			// Under the lock, and not waiting out an outage: an index object that lands after
			// a gc elsewhere broke this lock and deleted the pack would name a pack that is gone.
			if err := stillHeld(lk); err != nil {
				return indexes, packs, err
			}
			if err := r.putIndexObject(rm, lk, p.id, timeKey(indexPrefix, time.Now(), p.id.String()), encodePackIndex(p.size, entries)); err != nil {
				return indexes, packs, fmt.Errorf("write the index of pack %s: %w", p.id, err)
			}
			indexes++
			if err := r.deleteIndexObjects(rm, lk, st.damaged[p.id]); err != nil {
				return indexes, packs, err
			}
		case terr == nil:
			// A good index object and a good trailer: only the damaged copies go.
			if err := r.deleteIndexObjects(rm, lk, st.damaged[p.id]); err != nil {
				return indexes, packs, err
			}
		case hasGood:
			done, err := r.rewritePack(rm, lk, p.id, p.size, st.keys[p.id], st.damaged[p.id])
			if err != nil {
				return indexes, packs, err
			}
			if done {
				packs++
			}
		default:
			r.logf("pack %s: its trailer is damaged and no good index object describes it", p.id)
		}
	}
	return indexes, packs, nil
}

// deleteIndexObjects deletes index objects of a pack that a good one or its trailer describes,
// checking the lock before each.
func (r *Repository) deleteIndexObjects(ctx context.Context, lk *Lock, keys []string) error {
	for _, key := range keys {
		if err := stillHeld(lk); err != nil {
			return err
		}
		if err := r.be.Delete(ctx, key); err != nil {
			return fmt.Errorf("delete the damaged index object %s: %w", key, err)
		}
	}
	return nil
}

// rewritten reports whether every blob of a pack is indexed in another pack.
func (r *Repository) rewritten(id PackID, entries []PackEntry) bool {
	for _, e := range entries {
		if loc, ok, err := r.idx.Lookup(e.Addr); err != nil || !ok || loc.Pack == id {
			return false
		}
	}
	return true
}

// rewritePack rewrites a pack whose trailer is damaged from one of its index objects (the
// damaged ones are among indexKeys too), and says whether it did. An index object of a larger
// size describes a pack that was cut short (its trailer went with its end): the blobs past the
// end are left out like those that do not verify, and the heal that follows stores them again
// from volumes that hold them. Until 2026-12-07 such a pack stayed, and once repair had healed
// the backup that used it, every gc failed reading its footer.
func (r *Repository) rewritePack(ctx context.Context, lk *Lock, id PackID, size int64, indexKeys, damaged []string) (bool, error) {
	var entries []PackEntry
	for _, key := range indexKeys {
		if _, n, e, err := r.readPackIndex(ctx, key); err == nil && n >= size {
			entries = e
			break
		}
	}
	if entries == nil {
		r.logf("pack %s: its trailer is damaged and no index object of its size describes it", id)
		return false, nil // never delete a pack whose contents are not known
	}
	if r.retain != nil && r.rewritten(id, entries) {
		return false, nil // an earlier repair wrote its blobs again; gc removes it once its date passes
	}
	data, err := r.be.GetRange(ctx, id.Key(), 0, size)
	if err != nil {
		return false, err
	}
	var pk packer
	var scratch, plain []byte
	// add puts e's blob, as data holds it, into the new pack if it verifies.
	add := func(e PackEntry, data []byte) bool {
		if int64(e.Offset)+int64(e.Length) > int64(len(data)) {
			return false
		}
		stored := data[e.Offset : e.Offset+e.Length]
		var derr error
		if plain, scratch, derr = r.keys.decodeBlob(plain[:0], scratch, stored, e.Type, e.Addr); derr != nil {
			return false
		}
		pk.add(e.Type, e.Addr, stored, int(e.PlainLen))
		return true
	}
	d := &deletion{packs: map[PackID][]Address{}, sizes: map[PackID]int64{}}
	var failed []PackEntry
	for _, e := range entries {
		d.packs[id] = append(d.packs[id], e.Addr)
		if !add(e, data) {
			failed = append(failed, e)
		}
	}
	if len(failed) > 0 {
		// The old pack goes once this rewrite is stored, so a blob left out now is lost for
		// good: a bad read (a flipped bit on the way, not on the disk) must not decide that.
		// The pack is read once more; what fails twice is damaged (check reports it, and a
		// volume that still holds the block can store it again: 'repo repair').
		again, err := r.be.GetRange(ctx, id.Key(), 0, size)
		if err != nil {
			return false, err
		}
		for _, e := range failed {
			if !add(e, again) {
				r.logf("pack %s: blob %s does not verify in two reads: left out of the rewrite", id, e.Addr)
			}
		}
	}
	if !pk.empty() {
		nid, ndata, nentries := pk.finish(r.keys)
		if err := r.storePack(ctx, lk, nid, ndata, nentries); err != nil {
			return false, err
		}
		if nid == id {
			// Unencrypted and every blob intact: the rewrite is the original pack, byte for
			// byte, and its Put replaced the damaged object. Only damaged index objects go.
			return true, r.deleteIndexObjects(ctx, lk, damaged)
		}
		d.relocated = nentries
		d.sizes[nid] = int64(len(ndata))
	}
	if r.retain != nil {
		// Object-locked: the old pack stays until its date. Its blobs now live in the new
		// one, so no gc extends it, and a later one removes it, index objects and all.
		return true, nil
	}
	// The same order as gc, each after a check of the lock: index objects, the deletion
	// record, this index, the pack.
	for _, k := range indexKeys {
		if err := stillHeld(lk); err != nil {
			return false, err
		}
		if err := r.be.Delete(ctx, k); err != nil {
			return false, err
		}
	}
	if err := stillHeld(lk); err != nil {
		return false, err
	}
	key := timeKey(deletedPrefix, time.Now(), "repair"+id.String()[:8])
	if err := r.storeDeletion(ctx, key, d); err != nil {
		return false, err
	}
	if err := r.applyDeletion(ctx, d); err != nil {
		return false, err
	}
	if err := r.idx.SetMeta("applied/"+key, "1"); err != nil {
		return false, err
	}
	if err := stillHeld(lk); err != nil {
		return false, err
	}
	return true, r.be.Delete(ctx, id.Key())
}
