package repo

import (
	"bytes"
	"context"
	cryptorand "crypto/rand"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/cairn-backup/cairn/repo/backend"
)

// CheckOptions says how much of the repository a check reads.
type CheckOptions struct {
	// ReadData reads packs and verifies every blob in them against its address.
	ReadData bool
	// SamplePercent, with ReadData, reads only this share of the packs (above 0, at most
	// 100), chosen uniformly at random and each read whole: a check a schedule can afford on
	// a large repository, and which, run often, reaches every pack in time. 0 reads them all.
	SamplePercent float64
}

// CheckReport lists what a check found. Problems make a repository unhealthy; Notes do not
// (a leftover pack that gc will remove).
type CheckReport struct {
	Backups  int   `json:"backups"`
	Packs    int   `json:"packs"`
	Blobs    int64 `json:"blobs"`
	ReadData bool  `json:"read_data"`
	// SamplePercent is the share of the packs the check chose to read, when not all of them.
	SamplePercent float64 `json:"sample_percent,omitempty"`
	PacksRead     int     `json:"packs_read"`
	BytesRead     int64   `json:"bytes_read"`
	// Problems lists the first 1,000 problems; ProblemCount counts them all.
	Problems     []string `json:"problems"`
	ProblemCount int      `json:"problem_count"`
	Notes        []string `json:"notes"`
	// Classes counts problems by class (ProblemDamaged, ProblemMissing, ProblemIndex).
	Classes map[string]int `json:"classes"`
	// Lost lists, per stored backup with damaged or missing data, the byte ranges of its
	// volume that cannot be restored ([0, -1]: all of it, its manifest is damaged).
	Lost map[string][][2]int64 `json:"lost,omitempty"`

	lostData   map[Address]struct{}   // data blobs some backup needs that cannot be read
	lostNodes  map[Address]LostNode   // block map nodes some backup needs that cannot be read
	goodCopies map[Address]sizedEntry // good copies of blobs whose indexed copy is damaged
	// mendManifests are the backups whose manifest or its second copy repair writes again
	// from the other (MendManifests).
	mendManifests []string
	// lostManifests are the backups whose manifests are lost and whose intact copies repair
	// stores again (docs/design.md, "A manifest lost, its copy left").
	lostManifests []string
	// mendConfig says the config or its second copy is to be written again (MendConfig).
	mendConfig bool
	// mendKeys says a key object or a copy is to be written again or removed (MendKeys).
	mendKeys bool
	// mendMeta are the metadata objects whose second copy (or themselves) repair writes
	// again (MendMeta).
	mendMeta []string
	// lostMeta are the metadata objects that are damaged with no copy that stands in.
	lostMeta []string
	// missingMeta are the metadata objects missing while their second copies are left.
	missingMeta []string
	// mendDeletions are the deletion records missing while their second copies are left, or
	// stored without one: repair writes each from the other (MendMeta).
	mendDeletions []string
}

// sizedEntry is a blob's copy and the size of the pack that holds it.
type sizedEntry struct {
	PackEntry
	packSize int64
}

// LostData returns the addresses of data blocks some backup needs that cannot be read: what
// Heal looks for in volumes.
func (c *CheckReport) LostData() map[Address]struct{} { return c.lostData }

// LostNodes returns the block map nodes some backup needs that cannot be read, each with where
// it sits: what HealNodes rebuilds from volumes.
func (c *CheckReport) LostNodes() map[Address]LostNode { return c.lostNodes }

// OK reports whether the check found no problems.
func (c *CheckReport) OK() bool { return len(c.Problems) == 0 }

func (c *CheckReport) problem(format string, args ...any) {
	c.ProblemCount++
	if len(c.Problems) < 1000 {
		c.Problems = append(c.Problems, fmt.Sprintf(format, args...))
	}
}

// Check verifies the repository from its manifests: every backup the backend holds has a
// readable manifest and a complete block map, and every blob it reaches is indexed in a pack
// that exists; every indexed pack exists with its size. With o.ReadData it also reads every
// pack, or a random sample of them, and verifies every blob in them against its address. It
// holds a shared lock.
func (r *Repository) Check(ctx context.Context, o CheckOptions) (*CheckReport, error) {
	if p := o.SamplePercent; p != 0 && !(p > 0 && p <= 100) {
		return nil, fmt.Errorf("check: a sample of %v%% of the packs: give a share above 0 and at most 100", p)
	}
	readData := o.ReadData
	lk, err := r.Lock(ctx, LockShared, "check")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	rep := &CheckReport{ReadData: readData, Classes: map[string]int{}, Lost: map[string][][2]int64{}, lostData: map[Address]struct{}{}, lostNodes: map[Address]LostNode{}}
	if readData && o.SamplePercent < 100 {
		rep.SamplePercent = o.SamplePercent
	}
	// The manifests are listed before the packs: every pack a listed manifest reaches was
	// stored before its commit, so before the pack listing (no gc runs under this lock).
	// Listed after, a backup that committed between the two listings (a shared lock lets
	// backups run) had its new packs reported missing, and repair forgot its blobs or, with
	// --forget-damaged, the backup itself [TestABackupCommittedDuringACheckIsNotLost].
	var ids []string
	if err := r.ListManifests(ctx, func(id string) error { ids = append(ids, id); return nil }); err != nil {
		return nil, err
	}
	sort.Strings(ids)
	stored := map[PackID]int64{}
	if err := r.ListPacks(ctx, func(id PackID, size int64) error {
		stored[id] = size
		return nil
	}); err != nil {
		return nil, err
	}
	// A stored pack the index does not know may hold a committed backup whose writer's clock
	// was behind this index's sync window: every index object is read first, or that backup's
	// blocks would be reported missing and repair would forget an intact backup
	// [TestRepairKeepsTheBackupOfAWriterWhoseClockIsBehind].
	for id := range stored {
		known, err := r.idx.HasPack(id)
		if err != nil {
			return nil, err
		}
		if !known {
			if _, _, err := r.sync(ctx, syncIndex, nil); err != nil {
				return nil, err
			}
			break
		}
	}
	sizeDiffers := func(id PackID, stored, indexed int64) {
		rep.Classes[ProblemDamaged]++
		rep.problem("%s: pack %s: %d bytes in the backend, %d in the index (truncated or replaced)", ProblemDamaged, id, stored, indexed)
	}
	indexed := map[PackID]int64{}
	var unlisted []PackID        // in the index, not in the listing: stored since, or missing
	missing := map[PackID]bool{} // in the index, and the backend does not have it
	if err := r.idx.Packs(func(id PackID, size int64) error {
		indexed[id] = size
		rep.Packs++
		if got, ok := stored[id]; !ok {
			unlisted = append(unlisted, id)
		} else if got != size {
			sizeDiffers(id, got, size)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	for _, id := range unlisted {
		// A backup running beside this check stores packs and indexes them after the
		// listing: only one the backend does not have now is missing.
		switch fi, err := r.be.Stat(ctx, id.Key()); {
		case errors.Is(err, backend.ErrNotFound):
			missing[id] = true
			rep.Classes[ProblemMissing]++
			rep.problem("%s: pack %s: in the index but missing from the backend", ProblemMissing, id)
		case err != nil:
			return nil, err
		default:
			// Stored since the listing: the walk and the reads below find it there.
			stored[id] = fi.Size
			if fi.Size != indexed[id] {
				sizeDiffers(id, fi.Size, indexed[id])
			}
		}
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

	seen := map[Address]bool{} // tree nodes walked: was the subtree clean
	bad := map[Address]checkProblem{}
	livePacks := map[PackID]struct{}{}
	if readData {
		// First every blob against its address: the walk below then names each backup and
		// byte range a damaged blob costs.
		if err := r.checkData(ctx, stored, samplePacks(stored, rep.SamplePercent), rep, bad); err != nil {
			return nil, err
		}
	}
	if err := r.findGoodCopies(ctx, stored, missing, rep, bad); err != nil {
		return nil, err
	}
	// walk counts a backup and walks its block map: every damaged or missing object is listed
	// with the bytes of each backup it costs, and the walk goes on past it.
	walk := func(m *Manifest) error {
		rep.Backups++
		return r.checkWalk(ctx, m, seen, bad, stored, func(loc Location) { livePacks[loc.Pack] = struct{}{} },
			func(class string, start, end int64, what string) {
				rep.Classes[class]++
				if class != ProblemIndex {
					rep.Lost[m.ID] = append(rep.Lost[m.ID], [2]int64{start, end})
				}
				rep.problem("%s: backup %s: bytes %d-%d: %s", class, m.ID, start, end, what)
			})
	}
	noCopy, oldCopy := 0, 0
	read := make(map[string]bool, len(ids)) // the backups whose manifests were read
	for _, id := range ids {
		mc, err := r.checkManifest(ctx, id)
		if errors.Is(err, backend.ErrNotFound) {
			continue // deleted since the listing, or lost: then its copy is looked at below
		}
		read[id] = true
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return nil, err
			}
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: backup %s: its manifest: %v", ProblemDamaged, id, err)
			rep.Lost[id] = [][2]int64{{0, -1}}
			continue
		}
		m := mc.m
		switch {
		case mc.damaged != nil:
			// Its copy stands in: the backup's blocks are walked through it, and nothing is lost.
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: backup %s: its manifest: %v; its second copy is intact ('cairn repo repair' writes the manifest again from it)", ProblemDamaged, id, mc.damaged)
			rep.mendManifests = append(rep.mendManifests, id)
		case mc.copyDamaged != nil:
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: backup %s: %v ('cairn repo repair' writes it again from the manifest)", ProblemDamaged, id, mc.copyDamaged)
			rep.mendManifests = append(rep.mendManifests, id)
		case mc.noCopy:
			noCopy++
			rep.mendManifests = append(rep.mendManifests, id)
		case mc.oldCopy:
			oldCopy++
			rep.mendManifests = append(rep.mendManifests, id)
		}
		if err := walk(m); err != nil {
			return nil, err
		}
	}
	// A copy whose manifest is missing and whose backup no delete began is a lost manifest's:
	// the backup's blocks are walked through the copy, and repair stores the manifest again.
	err = r.EachLostManifest(ctx, read, func(id string, m *Manifest, err error) error {
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				return err
			}
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: backup %s: its manifest is missing though no delete of it began, and %v: the backup is lost ('cairn repo repair --forget-damaged' forgets it)", ProblemDamaged, id, err)
			rep.Lost[id] = [][2]int64{{0, -1}}
			return nil
		}
		rep.Classes[ProblemMissing]++
		rep.problem("%s: backup %s: its manifest is missing though no delete of it began (removed outside cairn?); its second copy is intact ('cairn repo repair' stores the manifest again from it)", ProblemMissing, id)
		rep.lostManifests = append(rep.lostManifests, id)
		return walk(m)
	})
	if err != nil {
		return nil, err
	}
	if err := r.checkConfig(ctx, rep); err != nil {
		return nil, err
	}
	if err := r.checkKeys(ctx, rep); err != nil {
		return nil, err
	}
	if noCopy > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d backups' manifests have no second copy (made by an earlier cairn, or its store failed; 'cairn repo repair' stores them)", noCopy))
	}
	if oldCopy > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d backups' manifests have a second copy older than themselves (a rewrite stopped between the two, or made by an earlier cairn; 'cairn repo repair' stores them again)", oldCopy))
	}
	if err := r.checkMeta(ctx, rep); err != nil {
		return nil, err
	}
	for a, p := range bad {
		if p.data {
			rep.lostData[a] = struct{}{}
		}
		if p.node != nil {
			rep.lostNodes[a] = *p.node
		}
	}
	if err := r.checkPackIndex(ctx, stored, livePacks, rep); err != nil {
		return nil, err
	}
	if dead := len(indexed) - len(livePacks); dead > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d packs hold nothing a stored backup needs ('cairn repo gc' reclaims their space)", dead))
	}
	if !readData {
		if err := r.idx.Blobs(func(PackEntry) error { rep.Blobs++; return nil }); err != nil {
			return nil, err
		}
	}
	if err := lk.Check(); err != nil && !rep.OK() {
		// Its problems may be a gc elsewhere removing what it was reading: no report, so
		// nothing (repair, an admin) acts on them.
		return nil, fmt.Errorf("check: %w, so the %d problems it found may be a gc elsewhere removing what it read, not damage: run it again", err, rep.ProblemCount)
	}
	return rep, nil
}

// checkMeta reads and verifies every metadata object (volumes, snapshots, quotas, tombstones),
// with its second copy where its kind has one (checkMetaPairs), and every deletion record:
// rebuild-index skips a damaged one, so what it held is lost with the index
// [TestCheckFindsADamagedMetadataObject].
func (r *Repository) checkMeta(ctx context.Context, rep *CheckReport) error {
	keys, err := r.checkMetaPairs(ctx, rep)
	if err != nil {
		return err
	}
	for _, key := range keys {
		if _, err := r.getObject(ctx, key); errors.Is(err, ErrCorrupt) {
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: metadata object %v", ProblemDamaged, err)
			rep.lostMeta = append(rep.lostMeta, key)
		} else if err != nil && !errors.Is(err, backend.ErrNotFound) {
			return err
		}
	}
	// A damaged deletion record costs no backup: an index that has not applied it checks
	// itself against a full listing instead (see sync). It is a note, not a problem: nothing
	// repairs it, and it stays, as every record does, for the indexes that have not read it.
	keys = keys[:0]
	if err := r.be.ListKeys(ctx, deletedPrefix, func(key string) error { keys = append(keys, key); return nil }); err != nil {
		return err
	}
	copies := map[string]bool{}
	if err := r.be.ListKeys(ctx, deletedCopyPrefix, func(ckey string) error {
		copies[deletionOfCopy(ckey)] = true
		return nil
	}); err != nil {
		return err
	}
	var noCopy int
	for _, key := range keys {
		b, err := r.getObject(ctx, key)
		if err == nil {
			_, err = decodeDeletion(b)
		}
		if errors.Is(err, ErrCorrupt) {
			rep.Notes = append(rep.Notes, fmt.Sprintf("deletion record %s is damaged (%v): indexes that have not applied it read its second copy, or check themselves against a full listing of the backend, so no backup is affected; the storage under the repository may be failing", key, err))
			if copies[key] {
				rep.mendDeletions = append(rep.mendDeletions, key)
			}
		} else if err != nil && !errors.Is(err, backend.ErrNotFound) {
			return err
		}
		if !copies[key] && err == nil {
			noCopy++
			rep.mendDeletions = append(rep.mendDeletions, key)
		}
		delete(copies, key)
	}
	if noCopy > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d deletion records have no second copy (written by an earlier cairn, or its store failed; 'cairn repo repair' stores them)", noCopy))
	}
	// A copy whose record the listing lacked: the record is looked for again (stored since the
	// listing: gc stores it before its copy), and a missing one was removed outside cairn,
	// which no cairn does (docs/design.md, "A deletion record removed outside cairn").
	for _, key := range slices.Sorted(maps.Keys(copies)) {
		if has, err := r.exists(ctx, key); err != nil {
			return err
		} else if has {
			continue
		}
		rep.Notes = append(rep.Notes, fmt.Sprintf("deletion record %s is missing while its second copy is left (removed outside cairn?): indexes apply the copy instead, so no backup is affected; 'cairn repo repair' stores the record again", key))
		rep.mendDeletions = append(rep.mendDeletions, key)
	}
	return nil
}

// samplePacks returns the stored packs a check reads, in the order of their ids: all of them,
// or percent of them (at least one) chosen uniformly at random with a seed from crypto/rand.
func samplePacks(stored map[PackID]int64, percent float64) []PackID {
	ids := make([]PackID, 0, len(stored))
	for id := range stored {
		ids = append(ids, id)
	}
	byID := func(a, b PackID) int { return bytes.Compare(a[:], b[:]) }
	slices.SortFunc(ids, byID)
	if percent <= 0 || percent >= 100 || len(ids) == 0 {
		return ids
	}
	n := min(max(int(math.Ceil(float64(len(ids))*percent/100)), 1), len(ids))
	var seed [32]byte
	if _, err := cryptorand.Read(seed[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	rng := rand.New(rand.NewChaCha8(seed))
	// The first n places of a Fisher-Yates shuffle: a uniform choice of n packs.
	for i := range n {
		j := i + rng.IntN(len(ids)-i)
		ids[i], ids[j] = ids[j], ids[i]
	}
	ids = ids[:n]
	slices.SortFunc(ids, byID)
	return ids
}

// findGoodCopies looks in every stored pack for a good copy of each blob whose indexed copy
// cannot be read: one checkData found damaged, or one in a pack the backend does not have
// (missing). A blob stored twice (by two writers, or again after the index forgot it) is not
// lost while one copy verifies. A damaged one is taken out of bad, and a missing one's entry
// in bad becomes an index problem, so no backup is named as losing it; the problem names the
// good copy, and UseGoodCopies (repo repair) points the index at it
// [TestCheckAndRepairUseAGoodCopyInAnotherPack, TestRepairUsesACopyOfABlobWhosePackIsMissing].
// Before, repair forgot a blob whose indexed pack was missing, and with it every backup that
// needed it, while another pack held it. It costs a trailer per stored pack, and only when a
// blob was found damaged or a pack missing (then also an index look-up per stored blob).
func (r *Repository) findGoodCopies(ctx context.Context, stored map[PackID]int64, missing map[PackID]bool, rep *CheckReport, bad map[Address]checkProblem) error {
	damagedIn := map[Address]PackID{}
	for a := range bad {
		if loc, ok, err := r.idx.Lookup(a); err != nil {
			return err
		} else if ok {
			damagedIn[a] = loc.Pack
		}
	}
	if len(damagedIn) == 0 && len(missing) == 0 {
		return nil
	}
	ids := make([]PackID, 0, len(stored))
	for id := range stored {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b PackID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range ids {
		entries, err := r.readTrailer(ctx, id, stored[id])
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, backend.ErrUnavailable) {
				return err
			}
			continue // reported by checkData when it read the pack
		}
		for _, e := range entries {
			if _, found := rep.goodCopies[e.Addr]; found {
				continue
			}
			p, ok := damagedIn[e.Addr]
			if !ok && len(missing) > 0 {
				loc, found, err := r.idx.Lookup(e.Addr)
				if err != nil {
					return err
				}
				p, ok = loc.Pack, found && missing[loc.Pack]
			}
			if !ok || p == id {
				continue
			}
			if err := r.verifyCopy(ctx, e); err != nil {
				if isDamage(err) {
					continue
				}
				return err
			}
			if rep.goodCopies == nil {
				rep.goodCopies = map[Address]sizedEntry{}
			}
			rep.goodCopies[e.Addr] = sizedEntry{e, stored[id]}
			rep.Classes[ProblemIndex]++
			if missing[p] {
				// The walk meets it in the index's missing pack: it tells each backup that
				// the index reads it from there, not that the backup lost it.
				bad[e.Addr] = checkProblem{class: ProblemIndex, what: fmt.Sprintf("%s blob %s: the index reads it in pack %s, which is missing; pack %s holds a good copy", typeName(e.Type), e.Addr.Short(), p, id)}
				rep.problem("%s: %s blob %s: the index reads it in pack %s, which is missing; pack %s holds a good one ('cairn repo repair' points the index at it)",
					ProblemIndex, typeName(e.Type), e.Addr.Short(), p, id)
				continue
			}
			delete(bad, e.Addr)
			rep.problem("%s: %s blob %s: the copy the index reads in pack %s is damaged, pack %s holds a good one ('cairn repo repair' points the index at it)",
				ProblemIndex, typeName(e.Type), e.Addr.Short(), p, id)
		}
	}
	return nil
}

// UseGoodCopies points the index at the good copies a check found of blobs whose indexed copy
// is damaged, each verified again under a shared lock (so no gc removes it meanwhile), and
// returns how many it used. Nothing is written to the backend: the damaged copy is dead weight
// that gc removes with its pack.
func (r *Repository) UseGoodCopies(ctx context.Context, rep *CheckReport) (int, error) {
	if len(rep.goodCopies) == 0 {
		return 0, nil
	}
	lk, err := r.Lock(ctx, LockShared, "repair")
	if err != nil {
		return 0, err
	}
	defer lk.Unlock()
	n := 0
	for _, c := range rep.goodCopies {
		if err := r.verifyCopy(ctx, c.PackEntry); err != nil {
			if isDamage(err) {
				r.logf("repair: the good copy of blob %s in pack %s: %v; left as it is", c.Addr.Short(), c.Pack, err)
				continue
			}
			return n, err
		}
		if err := r.idx.AddPack(c.Pack, c.packSize, []PackEntry{c.PackEntry}); err != nil {
			return n, err
		}
		n++
	}
	return n, lk.Check()
}

// checkData reads the packs ids and verifies every blob in them.
func (r *Repository) checkData(ctx context.Context, stored map[PackID]int64, ids []PackID, rep *CheckReport, bad map[Address]checkProblem) error {
	var scratch, plain []byte
	staleCopies := 0
	defer func() {
		if staleCopies > 0 {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%d damaged copies of blobs that the index reads from good copies elsewhere (no backup is affected)", staleCopies))
		}
	}()
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		size := stored[id]
		entries, err := r.readTrailer(ctx, id, size)
		if errors.Is(err, ErrCorrupt) {
			entries, err = r.readTrailer(ctx, id, size) // one bad read on the way is no damage
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, backend.ErrUnavailable) {
				return err
			}
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: %v", ProblemDamaged, err)
			// The pack's index object is the second copy of its blob list: check the blobs by it.
			entries = nil
			if ierr := r.idx.Blobs(func(e PackEntry) error {
				if e.Pack == id {
					entries = append(entries, e)
				}
				return nil
			}); ierr != nil {
				return ierr
			}
		}
		data, err := r.be.GetRange(ctx, id.Key(), 0, size)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, backend.ErrUnavailable) {
				return err
			}
			rep.Classes[classify(err)]++
			rep.problem("%s: pack %s: read: %v", classify(err), id, err)
			continue
		}
		rep.PacksRead++
		rep.BytesRead += size
		for _, e := range entries {
			rep.Blobs++
			if int64(e.Offset)+int64(e.Length) > int64(len(data)) {
				rep.Classes[ProblemDamaged]++
				rep.problem("%s: pack %s offset %d: past the end of the pack (truncated)", ProblemDamaged, id, e.Offset)
				if loc, ok, lerr := r.idx.Lookup(e.Addr); lerr == nil && ok && loc.Pack == id {
					bad[e.Addr] = checkProblem{ProblemDamaged, fmt.Sprintf("%s blob %s: past the end of its pack", typeName(e.Type), e.Addr.Short()), e.Type == BlobData, bad[e.Addr].node}
				}
				continue
			}
			plain, scratch, err = r.keys.decodeBlob(plain[:0], scratch, data[e.Offset:e.Offset+e.Length], e.Type, e.Addr)
			if err != nil {
				if loc, ok, lerr := r.idx.Lookup(e.Addr); lerr == nil && ok && loc.Pack != id {
					// The index reads a good copy elsewhere (stored again by repair or
					// another backup): this one is dead weight, not lost data.
					staleCopies++
					continue
				}
				loc := e.Location
				loc.Pack = id
				_, good, damaged := r.readAgainJudged(ctx, e.Type, e.Addr, loc, nil)
				if good {
					continue // the pack's read went wrong on the way: the copy is good
				}
				if !damaged {
					// The second read judged nothing (an outage, a cancel). One bad read is
					// no damage, and reported as some, repair forgot a sound blob
					// [TestCheckStopsWhenTheSecondReadOfABlobCannotBeMade].
					if err := ctx.Err(); err != nil {
						return err
					}
					return fmt.Errorf("check: pack %s: blob %s did not open and could not be read again: %w", id, e.Addr.Short(), backend.ErrUnavailable)
				}
				rep.Classes[ProblemDamaged]++
				rep.problem("%s: pack %s offset %d: %v", ProblemDamaged, id, e.Offset, err)
				bad[e.Addr] = checkProblem{ProblemDamaged, fmt.Sprintf("%s blob %s: %v", typeName(e.Type), e.Addr.Short(), err), e.Type == BlobData, bad[e.Addr].node}
			}
		}
	}
	return nil
}
