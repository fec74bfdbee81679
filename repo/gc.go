package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/google/uuid"
)

// GCOptions tune a garbage collection.
type GCOptions struct {
	// RepackThreshold: a pack whose unreachable bytes are at least this fraction of it is
	// rewritten with only its live blobs. 0 means 0.2.
	RepackThreshold float64
	// DryRun decides and reports without writing or deleting anything.
	DryRun bool
	// TempDir is where the mark set spills once it outgrows its memory buffer (a sorted run
	// of 32 bytes per reachable blob); "" means the system's temporary directory.
	TempDir string
	// MarkBuffer bounds the addresses the mark set holds in memory (32 bytes each); 0 means
	// 1 Mi (32 MiB).
	MarkBuffer int
	Log        func(format string, args ...any)
}

// GCStats says what a garbage collection did, or with DryRun what it would do (then
// BytesFreed counts a repack's dead bytes: the pack it would write is the live ones).
type GCStats struct {
	DryRun        bool `json:"dry_run"`
	Backups       int  `json:"backups"`    // manifests marked from
	LiveBlobs     int  `json:"live_blobs"` // blobs reachable from them
	PacksDeleted  int  `json:"packs_deleted"`
	PacksRepacked int  `json:"packs_repacked"`
	// PacksNotRepacked: mostly dead packs left for a later run, as there was no room for
	// the packs their live blobs would go to.
	PacksNotRepacked int `json:"packs_not_repacked,omitempty"`
	PacksKept        int `json:"packs_kept_young"` // unreachable, but may belong to a writer whose lock was broken
	// Object-locked repositories (see retention.go):
	PacksLocked     int `json:"packs_kept_locked"` // unreachable, kept until the dates of all their objects pass
	ObjectsExtended int `json:"objects_extended"`  // objects in use whose lock was extended
	VersionsRemoved int `json:"versions_removed"`  // hidden or superseded versions removed once their dates passed
	LocksBroken     int `json:"stale_locks_broken"`
	// TempFilesRemoved: temp files that interrupted writes left in a local repository, over
	// an hour old.
	TempFilesRemoved int `json:"temp_files_removed"`
	// LogObjectsRemoved: backup log objects over a day old (backuplog.go).
	LogObjectsRemoved int   `json:"log_objects_removed"`
	BlobsReclaimed    int64 `json:"blobs_reclaimed"`
	BytesFreed        int64 `json:"bytes_freed"`
	// CopyBytes: bytes of packs that are copies of blobs the index locates in other packs
	// (two writers stored the same block at once), counted as dead.
	CopyBytes int64 `json:"copy_bytes"`
	// VersionsKept: the bucket keeps versions (S3 versioning on, no object lock), so what gc
	// deletes stays stored, behind delete markers, until the bucket's lifecycle rules expire
	// noncurrent versions.
	VersionsKept bool `json:"versions_kept,omitempty"`
}

type packUsage struct {
	size      int64
	liveBytes int64
	deadBytes int64
	live      int
	dead      int
}

// ErrUnreadableBackup means gc cannot tell what a stored backup needs (its manifest or block
// map is damaged or incomplete), so it deletes nothing.
var ErrUnreadableBackup = errors.New("a stored backup cannot be read")

// GC reclaims the space of blobs that no manifest in the backend reaches. Under the exclusive
// lock (no backup, restore or delete runs anywhere), with the index brought fully up to date,
// it marks every blob reachable from every manifest the backend holds, whatever any index
// says of that backup's status, and then deletes packs with nothing reachable and repacks
// packs that are mostly unreachable. In an object-locked repository it removes a pack only
// once its dates have passed, extends the locks of what is in use and removes old versions
// (retention.go). The argument for its safety is in docs/design.md.
func (r *Repository) GC(ctx context.Context, o GCOptions) (st GCStats, err error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if o.RepackThreshold == 0 {
		o.RepackThreshold = 0.2
	}
	lk, err := r.Lock(ctx, LockExclusive, "gc")
	if err != nil {
		return st, err
	}
	defer lk.Unlock()
	maintained := false // the object lock's dates were extended (lockPass.maintain)
	defer func() {
		if err != nil && !maintained && r.retain != nil && !o.DryRun && ctx.Err() == nil && lk.Check() == nil {
			r.extendAfterFailedGC(ctx, lk, &st, logf)
		}
	}()
	// The whole backend, once: every pack learned (from its index object or its trailer),
	// every pack the backend lost forgotten; the listing serves the decisions below.
	// A dry run writes nothing, so it learns no pack that lacks an index object (see
	// learnUnindexedPacks) and does not count one.
	slk := lk
	if o.DryRun {
		slk = nil
	}
	_, lst, err := r.sync(ctx, syncAll, slk)
	if err != nil {
		return st, err
	}
	st.LocksBroken = len(lk.broken)
	// A bucket that keeps versions keeps what a Delete removes, unless the repository is
	// object-locked (then gc removes every version itself): said, so that bytes_freed is not
	// taken for space given back [TestGCSaysABucketKeepsWhatItDeletes].
	if vb, ok := r.be.(backend.Versioned); ok && r.retain == nil {
		if st.VersionsKept, err = vb.KeepsVersions(ctx); err != nil {
			logf("cannot tell whether the bucket keeps versions: %v", err)
		}
	}
	// A writer whose lock was broken because it stopped refreshing (on any host: this one's
	// clock may have stepped, or the process stalled) may still be alive: it will find its
	// lock lost and commit nothing, but keep what it wrote since its lock was taken until the
	// next gc all the same. Only a process of this host (and boot and pid namespace) seen
	// gone writes nothing more [TestGCKeepsWhatABrokenLocksWriterWrote].
	var keepAfter time.Time
	for _, b := range lk.broken {
		logf("broke a stale lock: %s (%s)", b, b.Why)
		// Its clock's offset at its last write is known (CreatedByStore), and may have
		// changed since: an hour more for that.
		if c := b.CreatedByStore().Add(-time.Hour); !b.gone && (keepAfter.IsZero() || c.Before(keepAfter)) {
			keepAfter = c
		}
	}

	live := newMarkSet(o.TempDir, o.MarkBuffer)
	defer live.close()
	marked, err := r.mark(ctx, &st, live)
	if err != nil {
		return st, err
	}
	st.LiveBlobs = int(live.len())
	logf("marked %d blobs reachable from %d backups", st.LiveBlobs, st.Backups)

	usage := map[PackID]*packUsage{}
	if err := r.idx.Packs(func(id PackID, size int64) error {
		usage[id] = &packUsage{size: size}
		return nil
	}); err != nil {
		return st, err
	}
	if err := r.idx.Blobs(func(e PackEntry) error {
		u := usage[e.Pack]
		if u == nil {
			return nil
		}
		ok, err := live.contains(e.Addr)
		if err != nil {
			return err
		}
		if ok {
			u.live++
			u.liveBytes += int64(e.Length)
		} else {
			u.dead++
			u.deadBytes += int64(e.Length)
		}
		return nil
	}); err != nil {
		return st, err
	}
	// What a pack's size leaves after its indexed blobs, their trailer entries, the sealed
	// trailer's overhead and the footer is blobs the index locates in another pack: copies
	// no read uses, dead (docs/design.md, "Copies no index entry uses").
	overhead := int64(len(r.keys.sealObject(trailerAD, nil))) + packFooterLen
	for _, u := range usage {
		if copies := u.size - overhead - u.liveBytes - u.deadBytes - int64(u.live+u.dead)*trailerEntry; copies > 0 {
			u.deadBytes += copies
			st.CopyBytes += copies
		}
	}
	if st.CopyBytes > 0 {
		logf("%d bytes of packs are copies of blobs the index locates in other packs", st.CopyBytes)
	}
	var drop, repack []PackID
	for id, u := range usage {
		switch {
		case u.live == 0:
			drop = append(drop, id)
		case u.deadBytes > 0 && float64(u.deadBytes) >= o.RepackThreshold*float64(u.size):
			repack = append(repack, id)
		}
	}
	sort.Slice(drop, func(i, j int) bool { return string(drop[i][:]) < string(drop[j][:]) })
	sort.Slice(repack, func(i, j int) bool { return string(repack[i][:]) < string(repack[j][:]) })

	indexKeys := lst.indexKeys
	// gc's reads above (hours at scale) may wait out a store's restart (a Patient ctx); its
	// removals below may not: a removal retried through an outage could land after its last
	// lock check by more than the lock's margin, when a writer that broke the stale lock may
	// already reuse what it removes (docs/design.md, "gc waits out an outage while it reads").
	rm := backend.Impatient(ctx)
	// Right before its first removal gc lists manifests/ once more (committedSince): a
	// backup committed since the mark stops it with nothing deleted.
	checked := false
	beforeDelete := func() error {
		if checked {
			return nil
		}
		checked = true
		return r.committedSince(ctx, marked)
	}
	// Index objects of packs the backend no longer holds (lost to damage, forgotten by the
	// sync above) would teach other indexes a pack that is not there.
	if !o.DryRun {
		for id, keys := range indexKeys {
			if _, ok := lst.packs[id]; ok {
				continue
			}
			for _, k := range keys {
				if err := beforeDelete(); err != nil {
					return st, err
				}
				if err := stillHeld(lk); err != nil {
					return st, err
				}
				if err := r.be.Delete(rm, k); err != nil {
					return st, fmt.Errorf("gc: delete %s: %w", k, err)
				}
			}
			delete(indexKeys, id)
		}
	}
	young := func(id PackID) bool {
		oi, ok := lst.packs[id]
		return !keepAfter.IsZero() && ok && oi.ModTime.After(keepAfter)
	}
	keep := func(ids []PackID) []PackID {
		out := ids[:0]
		for _, id := range ids {
			if young(id) {
				st.PacksKept++
				continue
			}
			out = append(out, id)
		}
		return out
	}
	drop, repack = keep(drop), keep(repack)

	// In an object-locked repository a pack goes only once the dates of all its objects have
	// passed. An unreachable one waits (no gc extends it); a mostly dead one is repacked now,
	// its live blobs moving to a new pack, and waits too (deferred): without live blobs it is
	// no longer extended, and a later run removes it like any unreachable pack.
	var lp *lockPass
	var deferred []PackID
	if r.retain != nil {
		if lp, err = r.newLockPass(ctx, lk); err != nil {
			return st, err
		}
		unlocked := func(ids []PackID, locked func(PackID)) ([]PackID, error) {
			out := ids[:0]
			for _, id := range ids {
				ok, err := lp.removable(ctx, o.DryRun, append([]string{id.Key()}, indexKeys[id]...)...)
				if err != nil {
					return nil, fmt.Errorf("gc: %w", err)
				}
				if ok {
					out = append(out, id)
				} else {
					locked(id)
				}
			}
			return out, nil
		}
		if drop, err = unlocked(drop, func(PackID) { st.PacksLocked++ }); err != nil {
			return st, err
		}
		if repack, err = unlocked(repack, func(id PackID) { deferred = append(deferred, id) }); err != nil {
			return st, err
		}
	}
	if o.DryRun {
		st.DryRun = true
		st.deleted(drop, usage)
		for _, id := range repack {
			st.PacksRepacked++
			st.BlobsReclaimed += int64(usage[id].dead)
			st.BytesFreed += usage[id].deadBytes
		}
		st.PacksRepacked += len(deferred) // repacked, their space back when a later run removes them
		if lp != nil {
			err = lp.maintain(ctx, &st, usage, append(repack, deferred...), nil, true)
		}
		return st, err
	}

	// 1. Repack: the live blobs of mostly-dead packs go into new packs (with index objects).
	written := map[PackID]bool{} // the packs the repacks stored: never deleted by this run
	todo := append(append([]PackID(nil), repack...), deferred...)
	for i, id := range todo {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		nid, newSize, err := r.repack(ctx, lk, id, usage[id].size, live)
		if errors.Is(err, syscall.ENOSPC) {
			// No room for a new pack (a local repository keeps local.Reserve free): this
			// pack and the rest stay as they are, live blobs and all, for a later run, and
			// the unreachable packs still go, which is what a full repository needs. Before,
			// gc stopped here and freed nothing [TestGCFreesSpaceWhenARepackDoesNotFit].
			left := todo[i:]
			logf("no room to repack: %v; %d packs left for a later run", err, len(left))
			st.PacksNotRepacked = len(left)
			skip := func(p PackID) bool { return slices.Contains(left, p) }
			repack, deferred = slices.DeleteFunc(repack, skip), slices.DeleteFunc(deferred, skip)
			break
		}
		if err != nil {
			return st, err
		}
		if newSize > 0 {
			written[nid] = true
		}
		st.PacksRepacked++
		if slices.Contains(deferred, id) {
			continue // its space comes back when a later run removes it
		}
		st.BlobsReclaimed += int64(usage[id].dead)
		st.BytesFreed += usage[id].size - newSize
	}
	// A repack's pack is named by its bytes, and in an unencrypted repository the same live
	// blobs make the same bytes: a pack an earlier, interrupted gc repacked into may be doomed
	// above (an index that learned the old pack again from its trailer points its blobs
	// there) and be the very pack a repack just stored again. It now holds the live blobs.
	drop = slices.DeleteFunc(drop, func(id PackID) bool { return written[id] })
	removed := map[string]bool{} // keys removed for good below
	if len(drop)+len(repack) > 0 {
		if err := beforeDelete(); err != nil {
			return st, err
		}
		if err := r.deletePacks(rm, lk, drop, repack, usage, indexKeys, live, written, removed); err != nil {
			return st, err
		}
		st.deleted(drop, usage)
	}
	if lp != nil {
		maintained = true
		if err := lp.maintain(rm, &st, usage, append(repack, deferred...), removed, false); err != nil {
			return st, err
		}
	}
	r.cleanTemp(rm, lk, &st, logf)
	r.pruneLog(rm, lk, &st, logf)
	r.pruneTombstones(rm, lk, logf)
	r.pruneManifestCopies(rm, lk, marked, logf)
	r.pruneDamagedMarks(rm, lk, logf)
	return st, nil
}

// staleTemp is how old, by the store's clock, a temp file of an interrupted write must be
// before gc removes it (docs/design.md, "Temp files of interrupted writes").
const staleTemp = time.Hour

// cleanTemp removes the temp files that interrupted writes left in a local repository. It
// runs under gc's exclusive lock, after everything else: a failure is logged, not gc's.
func (r *Repository) cleanTemp(ctx context.Context, lk *Lock, st *GCStats, logf func(string, ...any)) {
	sp, ok := r.be.(backend.Spooler)
	if !ok {
		return
	}
	now, err := r.storeClock(ctx, lk)
	if err == nil {
		st.TempFilesRemoved, err = sp.Clean(ctx, now().Add(-staleTemp))
	}
	if err != nil {
		logf("temp files of interrupted writes not removed: %v", err)
	}
}

// deletePacks removes the doomed packs (drop and repack) in the deletion protocol's order:
// their index objects, then the deletion record, then the packs. removed collects the keys.
// Each removal and the record come only while lk holds: a gc that stalled past --lock-stale
// (a paused VM) may meanwhile have had backups run beside it, which reuse blobs of the packs
// it doomed, and it stops with its lock lost before it deletes one more thing.
func (r *Repository) deletePacks(ctx context.Context, lk *Lock, drop, repack []PackID, usage map[PackID]*packUsage,
	indexKeys map[PackID][]string, live *markSet, written map[PackID]bool, removed map[string]bool) error {
	// The deletion record's contents: every address in each doomed pack, and
	// where the live ones among them are now, so other indexes forget exactly these packs.
	d := &deletion{packs: map[PackID][]Address{}, sizes: map[PackID]int64{}}
	for _, id := range append(append([]PackID(nil), drop...), repack...) {
		entries, err := r.packEntries(ctx, id, usage[id].size, indexKeys[id])
		if err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		addrs := make([]Address, len(entries))
		for i, e := range entries {
			addrs[i] = e.Addr
			if ok, err := live.has(e.Addr); err != nil {
				return err
			} else if !ok {
				continue
			}
			loc, ok, err := r.idx.Lookup(e.Addr)
			if err != nil {
				return err
			}
			if !ok {
				// A blob a backup needs that the index locates nowhere: its copy here may be
				// the only one. Unless it is damaged, nothing is deleted.
				if err := r.lastCopy(ctx, id, e); err != nil {
					return err
				}
				continue
			}
			if loc.Pack != id {
				// A copy: the index reads the blob elsewhere. A repack of this run copied
				// it there, verified; any other copy in use is verified here.
				if !written[loc.Pack] {
					if err := r.usedCopyReads(ctx, id, e, loc); err != nil {
						return err
					}
				}
				d.relocated = append(d.relocated, PackEntry{Addr: e.Addr, Location: loc})
				if _, have := d.sizes[loc.Pack]; !have {
					d.sizes[loc.Pack] = usage[loc.Pack].sizeOr(r, loc.Pack)
				}
			}
		}
		d.packs[id] = addrs
	}
	// The doomed packs' index objects go, before the record and the packs: an index object
	// that exists names a pack that exists, and a sync that applied the record (it lists
	// records before index objects) cannot learn the pack again from one.
	for id := range d.packs {
		for _, k := range indexKeys[id] {
			if err := stillHeld(lk); err != nil {
				return err
			}
			if err := r.destroy(ctx, k); err != nil {
				return fmt.Errorf("gc: delete %s: %w", k, err)
			}
			removed[k] = true
		}
	}
	if err := stillHeld(lk); err != nil {
		return err
	}
	key := timeKey(deletedPrefix, time.Now(), uuid.NewString()[:8])
	if err := r.storeDeletion(ctx, key, d); err != nil {
		return fmt.Errorf("gc: store the deletion record: %w", err)
	}
	// This index forgets the packs (a blob the index does not list is never reused); then
	// the packs go.
	if err := r.applyDeletion(ctx, d); err != nil {
		return err
	}
	if err := r.idx.SetMeta("applied/"+key, "1"); err != nil {
		return err
	}
	for id := range d.packs {
		if err := stillHeld(lk); err != nil {
			return err
		}
		if err := r.destroy(ctx, id.Key()); err != nil {
			return fmt.Errorf("gc: delete pack %s: %w", id, err)
		}
		removed[id.Key()] = true
	}
	return nil
}

// lastCopy decides for a reachable blob in a doomed pack that the index locates nowhere
// (an index that learned part of a pack, or one told to forget the blob as damaged): a copy
// that reads and verifies stops gc before it deletes anything, since deleting the pack could
// lose the only copy a backup has; a damaged one is no loss (repo check reports the backup).
func (r *Repository) lastCopy(ctx context.Context, pack PackID, e PackEntry) error {
	err := r.verifyCopy(ctx, e)
	if err != nil && isDamage(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("gc: read blob %s in pack %s: %w", e.Addr.Short(), pack, err)
	}
	return fmt.Errorf("gc: pack %s holds blob %s, which a backup needs and the index locates nowhere: nothing was deleted; run 'cairn repo rebuild-index', then gc again", pack, e.Addr.Short())
}

// usedCopyReads decides for a reachable blob in a doomed pack that the index reads from
// another pack (a copy: two writers stored it, or it was stored again after the index forgot
// it): the copy in use must read and verify. If it is damaged and the doomed copy verifies,
// the doomed one is the only good copy a backup has, and gc stops before it deletes anything;
// repair points the index at it [TestGCKeepsTheOnlyGoodCopyOfABlob]. It reads one blob per
// copy in a doomed pack, and copies are few.
func (r *Repository) usedCopyReads(ctx context.Context, pack PackID, e PackEntry, used Location) error {
	err := r.verifyCopy(ctx, PackEntry{Addr: e.Addr, Location: used})
	if err == nil {
		return nil
	}
	if !isDamage(err) {
		return fmt.Errorf("gc: read blob %s in pack %s: %w", e.Addr.Short(), used.Pack, err)
	}
	if err := r.verifyCopy(ctx, e); err != nil {
		if isDamage(err) {
			return nil // both damaged: deleting this one loses nothing readable
		}
		return fmt.Errorf("gc: read blob %s in pack %s: %w", e.Addr.Short(), pack, err)
	}
	return fmt.Errorf("gc: the copy of blob %s that the index reads (pack %s) is damaged, and pack %s, which gc would delete, holds a good one: nothing was deleted; run 'cairn repo repair' (the index then reads the good copy), then gc again", e.Addr.Short(), used.Pack, pack)
}

// deleted counts the dropped packs: every blob in them dead, all their bytes freed.
func (st *GCStats) deleted(drop []PackID, usage map[PackID]*packUsage) {
	for _, id := range drop {
		st.PacksDeleted++
		st.BlobsReclaimed += int64(usage[id].dead)
		st.BytesFreed += usage[id].size
	}
}

// stillHeld is the check of gc and repair before each thing they delete: one that stalled
// past --lock-stale stops with its lock lost (docs/design.md, "gc stalls").
func stillHeld(lk *Lock) error {
	if err := lk.Check(); err != nil {
		return fmt.Errorf("%s stopped before it deleted anything more: %w", lk.info.Operation, err)
	}
	return nil
}

// committedSince is gc's catch-all before it deletes: it lists manifests/ again, and a
// manifest there that the mark did not read (marked) is a backup committed while gc held the
// repository exclusively. Its writer took gc's lock for stale (gc's host was suspended, or its
// clock misjudged), and it may use blobs of the packs gc doomed, so gc stops. A manifest
// deleted since the mark is no concern. Its cost: one more listing of manifests/ per gc that
// deletes index objects or packs [TestGCStopsForABackupCommittedAfterItsMark].
func (r *Repository) committedSince(ctx context.Context, marked map[string]bool) error {
	var unseen []string
	if err := r.ListManifests(ctx, func(id string) error {
		if !marked[id] {
			unseen = append(unseen, id)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("gc: list the backups again before deleting: %w; nothing was deleted", err)
	}
	if len(unseen) == 0 {
		return nil
	}
	sort.Strings(unseen)
	return fmt.Errorf("gc: backup %s committed while gc held the repository exclusively: gc's lock was taken for stale (a suspended host?) (%w); nothing was deleted: run gc again", strings.Join(unseen, ", "), ErrLockLost)
}

func (u *packUsage) sizeOr(r *Repository, id PackID) int64 {
	if u != nil {
		return u.size
	}
	if oi, err := r.be.Stat(context.Background(), id.Key()); err == nil {
		return oi.Size
	}
	return 0
}

// mark adds to live every blob reachable from every manifest in the backend, and from the
// copy of every lost manifest (docs/design.md, "A manifest lost, its copy left"). A manifest
// or block map that cannot be read stops gc: what it needs is unknown, so nothing may be
// deleted.
//
// Memory: the tree nodes walked are remembered exactly (so that a subtree many backups share
// is walked once); there is one for every LeafFanout data blocks at most. Data blob addresses
// go only to live, which spills to disk past its buffer. It returns the backups it marked
// through: those whose manifests it read, and those whose lost manifests' copies it read.
func (r *Repository) mark(ctx context.Context, st *GCStats, live *markSet) (map[string]bool, error) {
	var ids []string
	if err := r.ListManifests(ctx, func(id string) error { ids = append(ids, id); return nil }); err != nil {
		return nil, err
	}
	sort.Strings(ids)
	trees := map[Address]struct{}{}
	read := make(map[string]bool, len(ids))
	// markFrom walks backup id's block map from m (read with err); a backup that cannot be
	// read stops gc.
	markFrom := func(id, what string, m *Manifest, err error) error {
		if err == nil {
			err = r.walkTrees(ctx, m.Root, m.RootLevel, trees, live.add)
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, errMarkSet) {
				return err
			}
			return fmt.Errorf("gc: backup %s%s: %w (%w); nothing was deleted: run 'cairn repo check' to see the damage", id, what, ErrUnreadableBackup, err)
		}
		read[id] = true
		st.Backups++
		return nil
	}
	for _, id := range ids {
		m, err := r.GetManifest(ctx, id)
		if errors.Is(err, backend.ErrNotFound) {
			// Deleted since the listing (a delete needs no exclusive lock), or lost: then
			// its copy is marked from below.
			continue
		}
		if err := markFrom(id, "", m, err); err != nil {
			return nil, err
		}
	}
	err := r.EachLostManifest(ctx, read, func(id string, m *Manifest, err error) error {
		if err == nil {
			r.logf("gc: backup %s: its manifest is lost; its blocks are kept through its second copy ('cairn repo repair' stores the manifest again)", id)
		}
		return markFrom(id, " (its manifest lost, read through its second copy)", m, err)
	})
	if err != nil {
		return nil, err
	}
	return read, live.finish()
}

// packEntries returns a pack's blob list from its index object, or its trailer.
func (r *Repository) packEntries(ctx context.Context, id PackID, size int64, indexKeys []string) ([]PackEntry, error) {
	for _, k := range indexKeys {
		if _, _, entries, err := r.readPackIndex(ctx, k); err == nil {
			return entries, nil
		}
	}
	return r.readTrailer(ctx, id, size)
}

// repack rewrites the live blobs of a pack into a new one (with its index object) and
// returns the new pack's id and size (0 when nothing was live there). The old pack is deleted
// by the caller, after the deletion record.
func (r *Repository) repack(ctx context.Context, lk *Lock, id PackID, size int64, live *markSet) (PackID, int64, error) {
	entries, err := r.readTrailer(ctx, id, size)
	if errors.Is(err, backend.ErrRange) {
		return PackID{}, 0, fmt.Errorf("%w: the pack is shorter than its index says (cut short): 'cairn repo repair' rewrites it from what survives", err)
	}
	if err != nil {
		return PackID{}, 0, err
	}
	data, err := r.be.GetRange(ctx, id.Key(), 0, size)
	if err != nil {
		return PackID{}, 0, fmt.Errorf("read pack %s: %w", id, err)
	}
	var p packer
	var scratch, plain []byte
	for _, e := range entries {
		if ok, err := live.has(e.Addr); err != nil {
			return PackID{}, 0, err
		} else if !ok {
			continue
		}
		loc, ok, err := r.idx.Lookup(e.Addr)
		if err != nil {
			return PackID{}, 0, err
		}
		if ok && loc.Pack != id {
			continue // stored again elsewhere
		}
		stored := data[e.Offset : e.Offset+e.Length]
		if plain, scratch, err = r.keys.decodeBlob(plain[:0], scratch, stored, e.Type, e.Addr); err != nil {
			if !ok && isDamage(err) {
				// A damaged copy the index was told to forget (repo repair): leaving it out
				// loses nothing readable, and its backup stays reported as damaged.
				continue
			}
			return PackID{}, 0, fmt.Errorf("repack pack %s: live %w; run 'cairn repo check --read-data'", id, err)
		}
		p.add(e.Type, e.Addr, stored, int(e.PlainLen))
	}
	if p.empty() {
		return PackID{}, 0, nil
	}
	nid, ndata, nentries := p.finish(r.keys)
	if err := r.storePack(ctx, lk, nid, ndata, nentries); err != nil {
		return PackID{}, 0, err
	}
	return nid, int64(len(ndata)), nil
}
