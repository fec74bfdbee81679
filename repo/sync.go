package repo

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Several processes (gateways on several hosts, each with its own index) share a repository.
// Two kinds of small objects let each index follow what the others did without re-reading
// the whole backend:
//
//	packindex/<t>-<pack id>  a copy of a pack's blob list, written right after the pack
//	deleted/<t>-<random>   the packs one gc run deletes (with every blob address in them) and
//	                       where the live blobs among those now are, written after their
//	                       index objects go and before the packs go
//	deleted-copies/<t>-<random>  the same record again, sealed under its own key, written
//	                       right after the record and before the packs go
//
// <t> is the writer's clock in nanoseconds (16 hex digits), so a reader lists only the index
// objects that sort after its last look, less syncMargin for clocks that disagree and writes
// that took a while. Deletion records, one per gc run, are listed in full every time: a
// missed one could make a backup reuse a blob that is gone. A missed index object costs
// deduplication, and a backup in its pack cannot be adopted by another gateway until a
// Rescan reads every index object.
const (
	indexPrefix       = "packindex/"
	deletedPrefix     = "deleted/"
	deletedCopyPrefix = "deleted-copies/"
	syncMargin        = 15 * time.Minute
)

// deletionCopyKey is the key of the second copy of the deletion record stored as key.
func deletionCopyKey(key string) string {
	return deletedCopyPrefix + strings.TrimPrefix(key, deletedPrefix)
}

// deletionOfCopy is the key of the deletion record whose second copy is stored as ckey.
func deletionOfCopy(ckey string) string {
	return deletedPrefix + strings.TrimPrefix(ckey, deletedCopyPrefix)
}

// storeDeletion stores d as the deletion record key, then its second copy, both before any
// pack d dooms is deleted: a record removed outside cairn leaves its copy, which every sync
// applies in its stead (docs/design.md, "A deletion record removed outside cairn").
func (r *Repository) storeDeletion(ctx context.Context, key string, d *deletion) error {
	b := d.encode()
	if err := r.putObject(ctx, key, b); err != nil {
		return err
	}
	if err := r.putObject(ctx, deletionCopyKey(key), b); err != nil {
		return fmt.Errorf("its second copy: %w", err)
	}
	return nil
}

func timeKey(prefix string, t time.Time, name string) string {
	return prefix + timeStamp(t) + "-" + name
}

// timeStamp is the <t> of timeKey. A listing after prefix+timeStamp(t) returns the keys of t
// and later: each is the stamp followed by "-" and a name, so sorts after the stamp alone.
func timeStamp(t time.Time) string { return fmt.Sprintf("%016x", uint64(t.UnixNano())) }

// keyTime returns the time a key of timeKey carries.
func keyTime(prefix, key string) (time.Time, string, bool) {
	rest := strings.TrimPrefix(key, prefix)
	ts, name, ok := strings.Cut(rest, "-")
	if !ok || len(ts) != 16 {
		return time.Time{}, "", false
	}
	n, err := strconv.ParseUint(ts, 16, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(0, int64(n)), name, true
}

// indexKey names the index object of a pack written now.
func indexKey(id PackID) string { return timeKey(indexPrefix, time.Now(), id.String()) }

// encodePackIndex is a pack index object's plaintext: pack size (u64) then the trailer's entries.
func encodePackIndex(size int64, entries []PackEntry) []byte {
	b := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(entries)*trailerEntry), uint64(size))
	return appendTrailer(b, entries)
}

func decodePackIndex(id PackID, b []byte) (int64, []PackEntry, error) {
	if len(b) < 8 {
		return 0, nil, fmt.Errorf("pack index %s: too short: %w", id, ErrCorrupt)
	}
	size := int64(binary.LittleEndian.Uint64(b))
	if size < packFooterLen {
		return 0, nil, fmt.Errorf("pack index %s: size %d: %w", id, size, ErrCorrupt)
	}
	entries, err := parseTrailer(id, b[8:], size-packFooterLen)
	return size, entries, err
}

// readPackIndex reads and verifies one pack index object.
func (r *Repository) readPackIndex(ctx context.Context, key string) (PackID, int64, []PackEntry, error) {
	_, name, ok := keyTime(indexPrefix, key)
	id, err := ParsePackID(name)
	if !ok || err != nil {
		return PackID{}, 0, nil, fmt.Errorf("%s: not a pack index object: %w", key, ErrCorrupt)
	}
	b, err := r.getObject(ctx, key)
	if err != nil {
		return id, 0, nil, err
	}
	size, entries, err := decodePackIndex(id, b)
	return id, size, entries, err
}

// deletion is what one gc run removes: every blob address of each deleted pack, and the
// current location of those blobs that are still live (stored again elsewhere, or repacked).
type deletion struct {
	packs     map[PackID][]Address
	relocated []PackEntry
	sizes     map[PackID]int64 // sizes of the packs the relocated entries point into
}

func (d *deletion) encode() []byte {
	ids := make([]PackID, 0, len(d.packs))
	for id := range d.packs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return string(ids[i][:]) < string(ids[j][:]) })
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(ids)))
	for _, id := range ids {
		b = append(b, id[:]...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(d.packs[id])))
		for _, a := range d.packs[id] {
			b = append(b, a[:]...)
		}
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(d.relocated)))
	for _, e := range d.relocated {
		b = append(b, e.Addr[:]...)
		b = append(b, e.Pack[:]...)
		b = binary.LittleEndian.AppendUint32(b, e.Offset)
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.PlainLen)
		b = append(b, byte(e.Type))
		b = binary.LittleEndian.AppendUint64(b, uint64(d.sizes[e.Pack]))
	}
	return b
}

func decodeDeletion(b []byte) (*deletion, error) {
	bad := fmt.Errorf("deletion record: %w", ErrCorrupt)
	d := &deletion{packs: map[PackID][]Address{}, sizes: map[PackID]int64{}}
	u32 := func() (uint32, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v := binary.LittleEndian.Uint32(b)
		b = b[4:]
		return v, true
	}
	n, ok := u32()
	if !ok || int(n) > len(b)/20 {
		return nil, bad
	}
	for range n {
		if len(b) < 16 {
			return nil, bad
		}
		var id PackID
		copy(id[:], b)
		b = b[16:]
		c, ok := u32()
		if !ok || int(c) > len(b)/32 {
			return nil, bad
		}
		addrs := make([]Address, c)
		for i := range addrs {
			copy(addrs[i][:], b)
			b = b[32:]
		}
		d.packs[id] = addrs
	}
	n, ok = u32()
	const relocLen = 32 + 16 + 4 + 4 + 4 + 1 + 8
	if !ok || int(n)*relocLen != len(b) {
		return nil, bad
	}
	for range n {
		var e PackEntry
		copy(e.Addr[:], b)
		copy(e.Pack[:], b[32:])
		e.Offset = binary.LittleEndian.Uint32(b[48:])
		e.Length = binary.LittleEndian.Uint32(b[52:])
		e.PlainLen = binary.LittleEndian.Uint32(b[56:])
		e.Type = BlobType(b[60])
		d.sizes[e.Pack] = int64(binary.LittleEndian.Uint64(b[61:]))
		d.relocated = append(d.relocated, e)
		b = b[relocLen:]
	}
	return d, nil
}

// applyDeletion makes the index forget the deleted packs and learn where relocated blobs
// are. A relocation names a pack that holds the blob; when the index does not know that pack
// yet (a fresh index replaying the records, or one that missed the pack), the pack is learned
// whole, from its trailer: learned from the relocations alone, the index would count it known,
// skip its index object, and never locate its other blobs (docs/design.md, "Sync"). A pack
// whose trailer cannot be read is left to its index object, which the sync reads next.
func (r *Repository) applyDeletion(ctx context.Context, d *deletion) error {
	for id, addrs := range d.packs {
		if err := r.idx.DropPack(id, addrs); err != nil {
			return err
		}
	}
	byPack := map[PackID][]PackEntry{}
	for _, e := range d.relocated {
		if _, gone := d.packs[e.Pack]; !gone {
			byPack[e.Pack] = append(byPack[e.Pack], e)
		}
	}
	for id, entries := range byPack {
		known, err := r.idx.HasPack(id)
		if err != nil {
			return err
		}
		if !known {
			all, err := r.readTrailer(ctx, id, d.sizes[id])
			if err != nil {
				if !errors.Is(err, backend.ErrNotFound) {
					r.logf("sync: pack %s, where a deletion record moved blobs: %v; left to its index object", id, err)
				}
				continue // gone (a later record drops it) or to be learned from its index object
			}
			// The blobs the record moves there, and the rest of the pack where the index does
			// not locate them already (as for any pack learned from its trailer).
			rest, err := r.notIndexed(all)
			if err != nil {
				return err
			}
			moved := map[Address]bool{}
			for _, e := range entries {
				moved[e.Addr] = true
			}
			for _, e := range rest {
				if !moved[e.Addr] {
					entries = append(entries, e)
				}
			}
		}
		if err := r.idx.AddPack(id, d.sizes[id], entries); err != nil {
			return err
		}
	}
	return nil
}

// SyncStats says what a sync learned.
type SyncStats struct {
	Packs     int // packs learned
	Deletions int // deletion records applied
	Relearned int // blobs Reindex located again in packs the index knew
}

// listing is what a full sync saw of the backend: every pack object (size and store time)
// and the index objects of each pack. gc decides from it without listing again.
type listing struct {
	packs     map[PackID]backend.ObjectInfo
	indexKeys map[PackID][]string
	learned   map[PackID]bool // packs this sync learned whole (Reindex skips them)
}

func newListing() *listing {
	return &listing{packs: map[PackID]backend.ObjectInfo{}, indexKeys: map[PackID][]string{}, learned: map[PackID]bool{}}
}

// syncScope says how much of the backend a sync reads.
type syncScope int

const (
	syncSince syncScope = iota // the index objects after the cursor, less syncMargin
	syncIndex                  // every index object (Rescan)
	syncAll                    // every index object and every pack (gc, rebuild-index)
)

// Sync brings the index up to date with what other processes did to the backend: it applies
// the deletion records it has not applied (forgetting packs gc removed) and then learns the
// packs written since its last look. full re-lists everything (gc and rebuild-index do).
// Callers hold a lock (Lock does it), so no gc deletes anything while it runs.
func (r *Repository) Sync(ctx context.Context, full bool) (SyncStats, error) {
	scope := syncSince
	if full {
		scope = syncAll
	}
	st, _, err := r.sync(ctx, scope, nil)
	return st, err
}

// Rescan is Sync reading every pack index object, not only those after its cursor: for a
// caller that found a committed backup whose blocks the index does not locate (its writer's
// clock was more than syncMargin behind, so its index objects sorted before the cursor). It
// reads no pack, so it costs a listing of packindex/ and the index objects not known yet.
func (r *Repository) Rescan(ctx context.Context) (SyncStats, error) {
	st, _, err := r.sync(ctx, syncIndex, nil)
	return st, err
}

// Reindex is the full Sync of 'cairn repo rebuild-index', which also learns again what the
// index forgot inside packs it knows. A full sync skips a known pack, so a blob the index
// locates nowhere (forgotten as damaged by repair, or in a pack learned only in part) stayed
// unlocated for good, and gc, which refuses to drop a pack holding the only readable copy of
// a blob a backup needs, stayed blocked [TestRebuildIndexLearnsAgainABlobTheIndexForgot].
// Reindex reads the blob list of every pack the sync did not learn whole (its index object,
// else its trailer) and points each blob the index locates nowhere at its copy there, once
// that copy reads and verifies: a damaged copy stays forgotten, so no backup deduplicates
// against it, and a blob with a good copy in some other pack is located there. It moves no
// blob the index locates, so it cannot point one away from a pack with an index object (see
// notIndexed). It reads one index object per known pack and, for each blob it relearns, that
// blob.
func (r *Repository) Reindex(ctx context.Context, lk *Lock) (SyncStats, error) {
	st, lst, err := r.sync(ctx, syncAll, lk)
	if err != nil {
		return st, err
	}
	ids := make([]PackID, 0, len(lst.packs))
	for id := range lst.packs {
		if !lst.learned[id] {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b PackID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range ids {
		size := lst.packs[id].Size
		entries, err := r.blobListOf(ctx, id, size, lst.indexKeys[id])
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, backend.ErrUnavailable) {
				return st, err
			}
			r.logf("rebuild-index: pack %s: %v", id, err)
			continue
		}
		if entries, err = r.notIndexed(entries); err != nil {
			return st, err
		}
		good := entries[:0]
		for _, e := range entries {
			switch err := r.verifyCopy(ctx, e); {
			case err == nil:
				good = append(good, e)
			case isDamage(err):
				r.logf("rebuild-index: blob %s in pack %s: %v; left unindexed", e.Addr.Short(), id, err)
			default:
				return st, err
			}
		}
		if len(good) == 0 {
			continue
		}
		if err := r.idx.AddPack(id, size, good); err != nil {
			return st, err
		}
		st.Relearned += len(good)
	}
	return st, nil
}

// blobListOf returns a pack's blob list from the first of its index objects that reads and
// matches its size, else from its trailer.
func (r *Repository) blobListOf(ctx context.Context, id PackID, size int64, indexKeys []string) ([]PackEntry, error) {
	for _, key := range indexKeys {
		_, n, entries, err := r.readPackIndex(ctx, key)
		if err == nil && n == size {
			return entries, nil
		}
		if ctx.Err() != nil || errors.Is(err, backend.ErrUnavailable) {
			return nil, err
		}
	}
	return r.readTrailer(ctx, id, size)
}

// verifyCopy reads the copy of a blob an entry names and verifies it against its address.
func (r *Repository) verifyCopy(ctx context.Context, e PackEntry) error {
	var buf []byte
	stored, err := r.getStored(ctx, e.Location, &buf)
	if err == nil {
		_, err = r.openBlob(nil, stored, e.Type, e.Addr, e.Location)
	}
	return err
}

// sync is Sync, Rescan and Reindex. lk is the caller's lock, which a full sync needs to give
// the packs it learns from their trailers an index object (learnUnindexedPacks); nil leaves
// those packs unlearned.
func (r *Repository) sync(ctx context.Context, scope syncScope, lk *Lock) (SyncStats, *listing, error) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	full := scope == syncAll
	var st SyncStats
	var lst *listing
	if full {
		lst = newListing()
	}
	after := func(cursor string) string {
		if scope != syncSince || cursor == "" {
			return ""
		}
		t, _, ok := keyTime("", cursor+"-x")
		if !ok {
			return ""
		}
		return timeStamp(t.Add(-syncMargin))
	}
	// Deletions first: a pack learned below is one whose index object outlived every
	// deletion record that names it, so it exists (gc deletes the index object before the pack).
	// Every record is listed, not only those after a cursor: a gc host whose clock is behind
	// must not hide one (the applied marks keep each from being applied twice).
	var keys, damaged []string
	listedRecord := map[string]bool{}
	if err := r.be.List(ctx, deletedPrefix, func(oi backend.ObjectInfo) error {
		keys = append(keys, oi.Key)
		listedRecord[oi.Key] = true
		return nil
	}); err != nil {
		return st, lst, fmt.Errorf("sync: list deletion records: %w", err)
	}
	// Then the copies: one whose record the listing lacks stands in for it, since a record
	// removed outside cairn leaves its copy (docs/design.md, "A deletion record removed
	// outside cairn") [TestARemovedDeletionRecordIsAppliedFromItsCopy].
	if err := r.be.ListKeys(ctx, deletedCopyPrefix, func(ckey string) error {
		if key := deletionOfCopy(ckey); !listedRecord[key] {
			keys = append(keys, key)
		}
		return nil
	}); err != nil {
		return st, lst, fmt.Errorf("sync: list deletion records' copies: %w", err)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if _, _, ok := keyTime(deletedPrefix, key); !ok {
			continue
		}
		if done, err := r.idx.Meta("applied/" + key); err != nil {
			return st, lst, err
		} else if done != "" {
			continue
		}
		// The record is read first, as it may have been stored after the listing. Missing
		// or damaged, its copy stands in; a damaged record without a copy that verifies
		// makes the sync a full one (below), and a name with neither was never a record.
		b, err := r.getObject(ctx, key)
		if errors.Is(err, backend.ErrNotFound) || errors.Is(err, ErrCorrupt) {
			cb, cerr := r.getObject(ctx, deletionCopyKey(key))
			switch {
			case cerr == nil:
				r.logf("sync: deletion record %s: %v (removed or damaged outside cairn); applied from its second copy ('cairn repo repair' stores it again)", key, err)
				b, err = cb, nil
			case errors.Is(err, backend.ErrNotFound):
				err = cerr
			}
		}
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		var d *deletion
		if err == nil {
			if d, err = decodeDeletion(b); err != nil {
				err = fmt.Errorf("%s: %w", key, err)
			}
		}
		if errors.Is(err, ErrCorrupt) {
			// What the record says is lost, but not what it is for: the full listing below
			// forgets every pack the backend no longer holds and learns every index object,
			// the relocations' new packs among them. Before, the record failed every sync of
			// every index that had not applied it, for good
			// [TestADamagedDeletionRecordFallsBackToAFullListing].
			r.logf("sync: %v; the index is checked against a full listing of the backend instead", err)
			damaged = append(damaged, key)
			continue
		}
		if err != nil {
			return st, lst, fmt.Errorf("sync: %w", err)
		}
		if err := r.applyDeletion(ctx, d); err != nil {
			return st, lst, err
		}
		if err := r.idx.SetMeta("applied/"+key, "1"); err != nil {
			return st, lst, err
		}
		st.Deletions++
	}
	if len(damaged) > 0 && !full {
		scope, full, lst = syncAll, true, newListing()
	}

	cur, err := r.idx.Meta("sync/index")
	if err != nil {
		return st, lst, err
	}
	newest := cur
	// The cursor moves to the newest key listed, but never past this host's clock when the
	// listing starts: one writer whose clock is ahead must not move every reader's window
	// past the keys that writers with right clocks write next [TestSyncCursorIgnoresAClockAhead].
	listed := time.Now()
	keys = keys[:0]
	if err := r.be.ListAfter(ctx, indexPrefix, indexPrefix+after(cur), func(oi backend.ObjectInfo) error {
		keys = append(keys, oi.Key)
		return nil
	}); err != nil {
		return st, lst, fmt.Errorf("sync: list pack index: %w", err)
	}
	for _, key := range keys {
		t, name, ok := keyTime(indexPrefix, key)
		if !ok {
			continue
		}
		if t.After(listed) {
			t = listed
		}
		if ts := timeStamp(t); ts > newest {
			newest = ts
		}
		id, err := ParsePackID(name)
		if err != nil {
			continue
		}
		if lst != nil {
			lst.indexKeys[id] = append(lst.indexKeys[id], key)
		}
		if known, err := r.idx.HasPack(id); err != nil {
			return st, lst, err
		} else if known {
			continue
		}
		_, size, entries, err := r.readPackIndex(ctx, key)
		if errors.Is(err, backend.ErrNotFound) {
			continue // deleted by a gc since the listing
		}
		if err != nil {
			// A damaged index object: the pack's own trailer says the same.
			var terr error
			if size, entries, terr = r.trailerOf(ctx, id); terr != nil {
				r.logf("sync: %v; and the pack: %v", err, terr)
				continue
			}
		}
		if err := r.idx.AddPack(id, size, entries); err != nil {
			return st, lst, err
		}
		if lst != nil {
			lst.learned[id] = true
		}
		st.Packs++
	}
	if newest != cur {
		if err := r.idx.SetMeta("sync/index", newest); err != nil {
			return st, lst, err
		}
	}
	if full {
		n, err := r.learnUnindexedPacks(ctx, lst, lk)
		if err != nil {
			return st, lst, err
		}
		st.Packs += n
	}
	for _, key := range damaged {
		if err := r.idx.SetMeta("applied/"+key, "1"); err != nil {
			return st, lst, err
		}
	}
	return st, lst, nil
}

// trailerOf reads a pack's size and blob list from the pack itself.
func (r *Repository) trailerOf(ctx context.Context, id PackID) (int64, []PackEntry, error) {
	oi, err := r.be.Stat(ctx, id.Key())
	if err != nil {
		return 0, nil, err
	}
	entries, err := r.readTrailer(ctx, id, oi.Size)
	return oi.Size, entries, err
}

// learnUnindexedPacks indexes the packs in the backend that no index object described (a
// writer died between storing the pack and its index object, or a gc between deleting a
// doomed pack's index objects and the pack) from their trailers, so that gc sees and judges
// them like every other pack; and it forgets the packs the index lists that the backend does
// not hold, so that no backup reuses a blob that is gone (the next backup of data that hashes
// to a lost block stores it again).
//
// Every pack in the backend without an index object gets one from its trailer, written under
// lk, the caller's lock (checked before each write, as gc checks it before each delete): a
// pack it learns before the index locates its blobs, and a pack the index already knows (it
// learned it before a gc, killed since, deleted its index objects) as well. Once the index
// locates a blob there, a backup may reuse it, and a committed backup's packs must each have
// an index object, or other indexes, which learn packs from index objects, cannot locate its
// blocks and check reports the pack. Before (found by the two-gateway crash trials, seed
// 1796468228252032841), a gc that broke an interrupted gc's lock learned that gc's doomed
// packs here, kept them as its writer's, and the next backup reused their blobs; and an index
// that had learned such a pack before the interrupted gc could reuse its blobs until a repair
// [TestGCGivesAKnownPackWithoutAnIndexObjectOne]. Without lk, or on a read-only repository, no
// index object can be written: a read-only repository locates the blobs (it stores no backup
// that could reuse them) and lists the pack for forgetReadOnlyLearned, since its index
// outlives it; a writable one leaves the pack to a gc or rebuild-index.
func (r *Repository) learnUnindexedPacks(ctx context.Context, lst *listing, lk *Lock) (int, error) {
	type packInfo struct {
		id   PackID
		size int64
	}
	var unknown, described []packInfo // described: known to the index, without an index object
	if err := r.be.List(ctx, "packs/", func(oi backend.ObjectInfo) error {
		id, ok := ParsePackKey(oi.Key)
		if !ok {
			return nil
		}
		lst.packs[id] = oi
		known, err := r.idx.HasPack(id)
		switch {
		case err == nil && !known:
			unknown = append(unknown, packInfo{id, oi.Size})
		case err == nil && len(lst.indexKeys[id]) == 0:
			described = append(described, packInfo{id, oi.Size})
		}
		return err
	}); err != nil {
		return 0, err
	}
	missing := map[PackID][]Address{}
	if err := r.idx.Packs(func(id PackID, _ int64) error {
		if _, ok := lst.packs[id]; !ok {
			missing[id] = nil
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if len(missing) > 0 {
		if err := r.idx.Blobs(func(e PackEntry) error {
			if addrs, ok := missing[e.Pack]; ok {
				missing[e.Pack] = append(addrs, e.Addr)
			}
			return nil
		}); err != nil {
			return 0, err
		}
		for id, addrs := range missing {
			r.logf("pack %s is listed by the index but missing from the backend: forgotten (%d blobs)", id, len(addrs))
			if err := r.idx.DropPack(id, addrs); err != nil {
				return 0, err
			}
		}
	}
	if lk == nil && !r.readOnly {
		return 0, nil // no index object can be written: the packs are left to a gc or rebuild-index
	}
	if !r.readOnly {
		for _, p := range described {
			entries, err := r.readTrailer(ctx, p.id, p.size)
			if err != nil {
				r.logf("sync: %v", err)
				continue
			}
			if err := r.describePack(ctx, lst, lk, p.id, p.size, entries); err != nil {
				return 0, err
			}
		}
	}
	n := 0
	for _, p := range unknown {
		entries, err := r.readTrailer(ctx, p.id, p.size)
		if err != nil {
			r.logf("sync: %v", err)
			continue
		}
		if !r.readOnly {
			if err := r.describePack(ctx, lst, lk, p.id, p.size, entries); err != nil {
				return n, err
			}
		}
		if entries, err = r.notIndexed(entries); err != nil {
			return n, err
		}
		if err := r.idx.AddPack(p.id, p.size, entries); err != nil {
			return n, err
		}
		if r.readOnly {
			if err := r.markReadOnlyLearned(p.id, entries); err != nil {
				return n, err
			}
		}
		lst.learned[p.id] = true // what it does not locate here, another pack holds
		n++
	}
	return n, nil
}

// readOnlyLearnedKey names the index's list of the packs a read-only repository learned from
// their trailers (learnUnindexedPacks), each with the blobs it located there: a line of the
// pack id and the blob addresses.
const readOnlyLearnedKey = "sync/read-only-learned"

// markReadOnlyLearned adds a pack a read-only repository learned from its trailer to the
// index's list, for forgetReadOnlyLearned.
func (r *Repository) markReadOnlyLearned(id PackID, entries []PackEntry) error {
	cur, err := r.idx.Meta(readOnlyLearnedKey)
	if err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString(cur)
	b.WriteString(id.String())
	for _, e := range entries {
		b.WriteByte(' ')
		b.WriteString(e.Addr.String())
	}
	b.WriteByte('\n')
	return r.idx.SetMeta(readOnlyLearnedKey, b.String())
}

// forgetReadOnlyLearned makes a writable repository's index forget what a read-only one
// learned from packs without an index object. A read-only repository may locate blobs there,
// since it stores no backup that could reuse them; but the index outlives it (--read-only on
// a host whose state directory is writable opens the same index), and a backup through a
// writable repository on that index would reuse them and commit a manifest that reaches a pack
// no other index can learn [TestAReadOnlyIndexLendsNoPackWithoutAnIndexObject]. The sync cursor
// is reset too, so the next sync reads every index object again and learns whole each dropped
// pack that has one by then. Dropping first and clearing the list last makes a crash between
// them repeat the drops, which is harmless.
func (r *Repository) forgetReadOnlyLearned() error {
	v, err := r.idx.Meta(readOnlyLearnedKey)
	if err != nil || v == "" {
		return err
	}
	for _, line := range strings.Split(strings.TrimSpace(v), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		id, err := ParsePackID(f[0])
		addrs := make([]Address, len(f)-1)
		for i := 1; err == nil && i < len(f); i++ {
			addrs[i-1], err = ParseAddress(f[i])
		}
		if err != nil {
			return fmt.Errorf("index: the list of packs a read-only run learned: %v: remove the index directory and run 'cairn repo rebuild-index'", err)
		}
		if err := r.idx.DropPack(id, addrs); err != nil {
			return err
		}
	}
	if err := r.idx.SetMeta("sync/index", ""); err != nil {
		return err
	}
	return r.idx.SetMeta(readOnlyLearnedKey, "")
}

// describePack stores an index object for a pack that has none, from its trailer's entries,
// once lk is still held, and adds its key to the listing: gc deletes the index objects the
// listing names before it deletes a pack.
func (r *Repository) describePack(ctx context.Context, lst *listing, lk *Lock, id PackID, size int64, entries []PackEntry) error {
	if err := stillHeld(lk); err != nil {
		return err
	}
	key := indexKey(id)
	if err := r.putIndexObject(ctx, lk, id, key, encodePackIndex(size, entries)); err != nil {
		return fmt.Errorf("store the index of pack %s, from its trailer: %w", id, err)
	}
	lst.indexKeys[id] = append(lst.indexKeys[id], key)
	return nil
}

// notIndexed returns the entries of a pack learned from its trailer whose blobs the index
// does not already locate in another pack. Such a pack has no index object: an interrupted
// backup's, or one an interrupted gc doomed. Pointing blobs at it would move them away from a
// pack that has one (a committed backup's, or a repack's), so that gc would then delete that
// pack and keep the unindexed copy, which check reports as a pack without an index object.
// Left where they are, the unindexed pack holds nothing the index uses, and gc removes it.
func (r *Repository) notIndexed(entries []PackEntry) ([]PackEntry, error) {
	addrs := make([]Address, len(entries))
	for i, e := range entries {
		addrs[i] = e.Addr
	}
	locs, found := make([]Location, len(entries)), make([]bool, len(entries))
	if err := r.idx.LookupBatch(addrs, locs, found); err != nil {
		return nil, err
	}
	out := entries[:0]
	for i, e := range entries {
		if !found[i] {
			out = append(out, e)
		}
	}
	return out, nil
}
