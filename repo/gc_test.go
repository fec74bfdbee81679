package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// peer opens the repository of f a second time with an index of its own: another gateway
// (process or host) on the same backend.
func (f *fixture) peer(t *testing.T, name string, lo repo.LockOptions) *fixture {
	t.Helper()
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return fixtureOn(t, be, f.dir, "index-"+name, repo.Options{ChunkCacheBytes: 8 << 20, Lock: lo})
}

// fixtureOn opens the repository in be with the index dir/name (made if new).
func fixtureOn(t *testing.T, be backend.Backend, dir, name string, o repo.Options) *fixture {
	t.Helper()
	idx, err := index.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	r, err := repo.Open(context.Background(), be, idx, o)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{r: r, idx: idx, dir: dir}
}

func (f *fixture) mustCheck(t *testing.T) {
	t.Helper()
	rep, err := f.r.Check(context.Background(), repo.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %+v", err, rep)
	}
}

func (f *fixture) gc(t *testing.T) repo.GCStats {
	t.Helper()
	// A mark buffer of a few addresses: every gc of these tests spills its mark set to runs on
	// disk and merges them (the tests that call GC directly keep it in memory).
	tmp := t.TempDir()
	st, err := f.r.GC(context.Background(), repo.GCOptions{TempDir: tmp, MarkBuffer: 7})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("gc left %d temporary files", len(left))
	}
	return st
}

func TestGCReclaimsOnlyWhatNoManifestReaches(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	a := &memSource{data: randomVolume(5, 8<<20)}
	ma := f.backup(t, "a", a, nil)
	b := &memSource{data: randomVolume(6, 8<<20)}
	mb := f.backup(t, "b", b, nil)
	// A gc with nothing deleted reclaims nothing.
	if st := f.gc(t); st.BytesFreed != 0 || st.Backups != 2 {
		t.Fatalf("gc with every backup stored: %+v", st)
	}
	if err := f.r.DeleteManifest(ctx, ma.ID); err != nil {
		t.Fatal(err)
	}
	st := f.gc(t)
	if st.BytesFreed == 0 || st.Backups != 1 {
		t.Fatalf("gc freed nothing after a delete: %+v", st)
	}
	f.mustCheck(t)
	if got := f.restore(t, mb); !bytes.Equal(got, b.data) {
		t.Fatal("b differs after gc")
	}
	// An index that knows nothing (a fresh state dir) must not make gc delete anything.
	g := f.peer(t, "empty", repo.LockOptions{})
	if st := g.gc(t); st.PacksDeleted != 0 || st.PacksRepacked != 0 {
		t.Fatalf("gc through an empty index deleted: %+v", st)
	}
	if got := g.restore(t, mb); !bytes.Equal(got, b.data) {
		t.Fatal("b differs after the second gc")
	}
}

// deletesAfterListing is another process deleting a backup between gc's listing of
// manifests/ and its reads: its ListKeys lists, then deletes victim through other (a delete:
// tombstone, manifest, copy), or, with other nil, removes its manifest alone, as a hand or a
// lifecycle rule would.
type deletesAfterListing struct {
	backend.Backend
	victim string
	other  *repo.Repository
}

func (d *deletesAfterListing) ListKeys(ctx context.Context, prefix string, fn func(string) error) error {
	if err := d.Backend.ListKeys(ctx, prefix, fn); err != nil {
		return err
	}
	if prefix == "manifests/" && d.victim != "" {
		victim := d.victim
		d.victim = ""
		if d.other != nil {
			return d.other.DeleteManifest(ctx, victim)
		}
		return d.Backend.Delete(ctx, "manifests/"+victim)
	}
	return nil
}

// A manifest listed but deleted before gc reads it is skipped, as its delete meant: gc
// reclaims what only it reached, and every other backup stays whole. One that vanished
// without a delete (no tombstone) is a lost manifest: gc marks through its copy and reclaims
// nothing of it, and repair stores it again (docs/design.md, "A manifest lost, its copy
// left"). Before, gc took it for deleted and reclaimed its data.
func TestGCSkipsAManifestDeletedAfterItsListing(t *testing.T) {
	for _, deleted := range []bool{true, false} {
		t.Run(map[bool]string{true: "deleted", false: "lost"}[deleted], func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{})
			a := &memSource{data: randomVolume(21, 4<<20)}
			ma := f.backup(t, "a", a, nil)
			b := &memSource{data: randomVolume(22, 4<<20)}
			mb := f.backup(t, "b", b, nil)
			be, err := local.Open(filepath.Join(f.dir, "repo"))
			if err != nil {
				t.Fatal(err)
			}
			d := &deletesAfterListing{Backend: be, victim: ma.ID}
			if deleted {
				d.other = f.peer(t, "other", repo.LockOptions{}).r
			}
			g := fixtureOn(t, d, f.dir, "index-g", repo.Options{})
			st := g.gc(t)
			if deleted {
				if st.Backups != 1 || st.BytesFreed == 0 {
					t.Fatalf("gc with a deleted after its listing: %+v, want 1 backup marked and a's data freed", st)
				}
				f.mustCheck(t)
			} else {
				if st.Backups != 2 || st.BytesFreed != 0 {
					t.Fatalf("gc with a's manifest lost after its listing: %+v, want it marked through its copy and nothing freed", st)
				}
				rep, err := f.r.Check(context.Background(), repo.CheckOptions{ReadData: true})
				if err != nil || len(rep.Problems) != 1 || len(rep.Lost) != 0 {
					t.Fatalf("check: %v %+v; want the lost manifest reported, nothing lost", err, rep)
				}
				if n, err := f.r.MendManifests(context.Background(), rep); err != nil || n.Lost != 1 {
					t.Fatalf("mend: %+v, %v", n, err)
				}
				f.mustCheck(t)
				if got := f.restore(t, ma); !bytes.Equal(got, a.data) {
					t.Fatal("a differs after gc and repair")
				}
			}
			if got := f.restore(t, mb); !bytes.Equal(got, b.data) {
				t.Fatal("b differs after gc")
			}
		})
	}
}

// commitsAfterListing commits a backup (commit) once gc's mark has listed manifests/: a
// writer elsewhere that took gc's exclusive lock for stale (gc's host was suspended) and
// committed while gc ran.
type commitsAfterListing struct {
	backend.Backend
	commit func(context.Context) error
}

func (c *commitsAfterListing) ListKeys(ctx context.Context, prefix string, fn func(string) error) error {
	if err := c.Backend.ListKeys(ctx, prefix, fn); err != nil {
		return err
	}
	if commit := c.commit; prefix == "manifests/" && commit != nil {
		c.commit = nil
		return commit(ctx)
	}
	return nil
}

// A backup committed between gc's mark and its deletes, against the packs of a deleted
// backup that gc doomed: its writer took gc's lock for stale, as it may once gc's host is
// suspended past --lock-stale. gc lists manifests/ again before it deletes anything, finds a
// backup its mark did not read, and stops: nothing deleted, the backup restores, and the next
// gc marks it. Before, gc deleted the packs under the committed backup.
func TestGCStopsForABackupCommittedAfterItsMark(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	vol := randomVolume(51, 4<<20)
	ma := f.backup(t, "a", &memSource{data: vol}, nil)
	// b dedups against a (no pack of its own) and is committed only during gc.
	var mb *repo.Manifest
	if _, err := f.r.Write(ctx, &memSource{data: vol}, repo.WriteOptions{}, func(res repo.WriteResult) error {
		mb = &repo.Manifest{ID: "b", VolumeID: "vol", Size: int64(len(vol)), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := f.r.DeleteManifest(ctx, ma.ID); err != nil {
		t.Fatal(err)
	}
	stored := func() []string {
		var keys []string
		for _, sub := range []string{"packs", "packindex"} {
			_ = filepath.Walk(filepath.Join(f.dir, "repo", sub), func(p string, fi os.FileInfo, err error) error {
				if err == nil && !fi.IsDir() {
					keys = append(keys, p)
				}
				return nil
			})
		}
		return keys
	}
	before := stored()
	if len(before) == 0 {
		t.Fatal("no pack stored")
	}
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	w := &commitsAfterListing{Backend: be, commit: func(ctx context.Context) error { return f.r.PutManifest(ctx, mb) }}
	g := fixtureOn(t, w, f.dir, "index-g", repo.Options{})
	st, err := g.r.GC(ctx, repo.GCOptions{})
	if !errors.Is(err, repo.ErrLockLost) || !strings.Contains(err.Error(), "backup b committed") || !strings.Contains(err.Error(), "nothing was deleted") {
		t.Fatalf("gc with b committed after its mark: %+v, %v; want it stopped for b", st, err)
	}
	for _, k := range before {
		if !slices.Contains(stored(), k) {
			t.Fatalf("gc deleted %s though it stopped", k)
		}
	}
	if rec, _ := filepath.Glob(filepath.Join(f.dir, "repo", "deleted", "*")); len(rec) != 0 {
		t.Fatalf("the stopped gc wrote a deletion record: %v", rec)
	}
	if got := f.restore(t, mb); !bytes.Equal(got, vol) {
		t.Fatal("b differs after the stopped gc")
	}
	if st := g.gc(t); st.Backups != 1 || st.PacksDeleted != 0 {
		t.Fatalf("the next gc: %+v, want b marked and nothing deleted", st)
	}
	if got := f.restore(t, mb); !bytes.Equal(got, vol) {
		t.Fatal("b differs after the next gc")
	}
	f.mustCheck(t)
}

func TestGCRefusesWhenABackupCannotBeRead(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	f.backup(t, "a", &memSource{data: randomVolume(1, 2<<20)}, nil)
	mb := f.backup(t, "b", &memSource{data: randomVolume(2, 2<<20)}, nil)
	f.backup(t, "c", &memSource{data: randomVolume(3, 2<<20)}, nil)
	if err := f.r.DeleteManifest(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	// The manifest and its second copy: with one of them intact gc marks through it
	// [TestManifestCopyStandsInForADamagedManifest].
	for _, dir := range []string{"manifests", "manifest-copies"} {
		path := filepath.Join(f.dir, "repo", dir, mb.ID)
		raw, _ := os.ReadFile(path)
		raw[len(raw)/2] ^= 1
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := f.r.GC(ctx, repo.GCOptions{})
	if !errors.Is(err, repo.ErrUnreadableBackup) || !strings.Contains(err.Error(), "nothing was deleted") {
		t.Fatalf("gc with a damaged manifest: %v", err)
	}
	if packs := len(packFiles(f.dir)); packs != 3 {
		t.Fatalf("%d packs left, want all 3", packs)
	}
}

// Two gateways with their own indexes on one backend: one backs up while the other runs gc
// over and over; every committed backup restores, and the second gateway dedups against the
// first's packs.
func TestTwoIndexesOneBackend(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	lo := repo.LockOptions{Wait: 30 * time.Second}
	g := f.peer(t, "g", lo)
	ctx := context.Background()
	vols := make([]*memSource, 6)
	for i := range vols {
		vols[i] = &memSource{data: randomVolume(uint64(100+i), 4<<20)}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var gcs int
	var gcErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := g.r.GC(ctx, repo.GCOptions{}); err != nil {
				gcErr = err
				return
			}
			gcs++
			time.Sleep(50 * time.Millisecond) // let writers in: a gc run back to back starves them
		}
	}()
	ms := make([]*repo.Manifest, len(vols))
	for i, v := range vols {
		ms[i] = f.backup(t, fmt.Sprintf("v%d", i), v, nil)
		if i%2 == 1 { // delete every other one: gc has something to do
			if err := f.r.DeleteManifest(ctx, ms[i-1].ID); err != nil {
				t.Fatal(err)
			}
			ms[i-1] = nil
		}
	}
	close(done)
	wg.Wait()
	if gcErr != nil {
		t.Fatal(gcErr)
	}
	if gcs == 0 {
		t.Fatal("gc never ran")
	}
	g.gc(t)
	for i, m := range ms {
		if m == nil {
			continue
		}
		for _, x := range []*fixture{f, g} {
			if got := x.restore(t, m); !bytes.Equal(got, vols[i].data) {
				t.Fatalf("backup %s differs", m.ID)
			}
		}
	}
	g.mustCheck(t)
	// Dedup across indexes: the other gateway stores nothing new for the same volume.
	var st repo.Stats
	_, err := g.r.Write(ctx, vols[1], repo.WriteOptions{}, func(res repo.WriteResult) error {
		st = res.Stats
		return g.r.PutManifest(ctx, &repo.Manifest{ID: "again", VolumeID: "vol", Size: vols[1].Size(), Root: res.Root, RootLevel: res.RootLevel})
	})
	if err != nil {
		t.Fatal(err)
	}
	if st.NewBlobs != 0 || st.Packs != 0 {
		t.Fatalf("second gateway stored %d blobs in %d packs for a volume the first stored", st.NewBlobs, st.Packs)
	}
}

// A gateway whose index still lists packs another gateway's gc deleted forgets them when it
// takes the lock, so it stores the blocks again instead of reusing blobs that are gone.
func TestDeletionRecordsReachOtherIndexes(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	g := f.peer(t, "g", repo.LockOptions{})
	ctx := context.Background()
	vol := &memSource{data: randomVolume(9, 4<<20)}
	m := f.backup(t, "a", vol, nil)
	if got := g.restore(t, m); !bytes.Equal(got, vol.data) { // g learns the packs
		t.Fatal("restore through g differs")
	}
	if err := g.r.DeleteManifest(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if st := g.gc(t); st.PacksDeleted == 0 {
		t.Fatalf("gc deleted nothing: %+v", st)
	}
	// f's index still lists the deleted packs until it takes a lock.
	m2 := f.backup(t, "b", vol, nil)
	if m2.Stats.NewBlobs == 0 {
		t.Fatal("f reused blobs that gc deleted")
	}
	for _, x := range []*fixture{f, g} {
		if got := x.restore(t, m2); !bytes.Equal(got, vol.data) {
			t.Fatal("restore differs")
		}
	}
	f.mustCheck(t)
}

// Repacking moves live blobs; another index follows the move through the deletion record.
func TestRepackRelocatesForOtherIndexes(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	g := f.peer(t, "g", repo.LockOptions{})
	ctx := context.Background()
	// Two backups in one pack: small volumes share the single pack of one write? No: each
	// write makes its own pack. Make one pack hold live and dead blobs with an incremental
	// that rewrites most of its parent's blocks.
	base := randomVolume(11, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	if got := g.restore(t, mA); !bytes.Equal(got, base) {
		t.Fatal("restore differs")
	}
	changed := append([]byte(nil), base...)
	copy(changed[:3<<20], randomVolume(12, 3<<20))
	mB := f.backup(t, "b", &memSource{data: changed}, mA)
	if err := f.r.DeleteManifest(ctx, mA.ID); err != nil {
		t.Fatal(err)
	}
	st := f.gc(t)
	if st.PacksRepacked == 0 {
		t.Fatalf("gc repacked nothing: %+v", st)
	}
	if got := g.restore(t, mB); !bytes.Equal(got, changed) {
		t.Fatal("restore through the other index differs after a repack")
	}
	g.mustCheck(t)
}

// A deletion record that no longer verifies cannot be applied, but what it is for can be
// done without it: the index is checked against a full listing (the packs gc deleted are
// forgotten, the repack's new pack learned). Before, the record failed the lock, and so every
// backup, restore and check, of every index that had not applied it.
func TestADamagedDeletionRecordFallsBackToAFullListing(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	g := f.peer(t, "g", repo.LockOptions{})
	base, changed, mB := repackedWhileKnown(t, f, g, 13)
	o := f.objectFiles(t)
	records := o.keys("deleted")
	if len(records) == 0 {
		t.Fatal("gc wrote no deletion record")
	}
	// The copies too: one that verifies stands in for its damaged record.
	for _, k := range append(records, o.keys("deleted-copies")...) {
		o.flip(k)
	}
	if got := g.restore(t, mB); !bytes.Equal(got, changed) {
		t.Fatal("restore through the other index differs after a damaged deletion record")
	}
	rep := storedAgain(t, f, g, base)
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "deletion record deleted/") {
		t.Fatalf("check does not note the damaged deletion record: %q", rep.Notes)
	}
}

// repackedWhileKnown backs up base (random, from seed) through f, restores it through g (which
// learns its packs), backs up changed (its first 3 MiB new) on it, deletes the first backup
// and runs gc, which repacks and writes a deletion record that g has not applied.
func repackedWhileKnown(t *testing.T, f, g *fixture, seed uint64) (base, changed []byte, mB *repo.Manifest) {
	t.Helper()
	base = randomVolume(seed, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	if got := g.restore(t, mA); !bytes.Equal(got, base) {
		t.Fatal("restore differs")
	}
	changed = append([]byte(nil), base...)
	copy(changed[:3<<20], randomVolume(seed+1, 3<<20))
	mB = f.backup(t, "b", &memSource{data: changed}, mA)
	if err := f.r.DeleteManifest(context.Background(), mA.ID); err != nil {
		t.Fatal(err)
	}
	if st := f.gc(t); st.PacksRepacked == 0 {
		t.Fatalf("gc repacked nothing: %+v", st)
	}
	return base, changed, mB
}

// storedAgain backs up base, whose blocks gc deleted, through g: g must store them again rather
// than reuse what it located, the backup must restore through f, and g's check must pass. It
// returns that check's report.
func storedAgain(t *testing.T, f, g *fixture, base []byte) *repo.CheckReport {
	t.Helper()
	mC := g.backup(t, "c", &memSource{data: base}, nil)
	if mC.Stats.NewBlobs == 0 {
		t.Fatal("g reused blobs that gc deleted: it did not apply gc's deletion record")
	}
	if got := f.restore(t, mC); !bytes.Equal(got, base) {
		t.Fatal("restore of g's backup differs")
	}
	rep, err := g.r.Check(context.Background(), repo.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() {
		t.Fatalf("check: %v %+v", err, rep)
	}
	return rep
}

// A deletion record removed (or damaged) outside cairn before another index applied it is
// applied there from its second copy: that index forgets the packs gc deleted and stores their
// blocks again. Before, it went on locating them, and its next backup of the same data
// reused blobs that were gone (docs/design.md, "A deletion record removed outside cairn").
func TestARemovedDeletionRecordIsAppliedFromItsCopy(t *testing.T) {
	for _, how := range []string{"removed", "damaged", "removed after the listing"} {
		t.Run(how, func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
			w := &afterListing{}
			g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { w.Backend = be; return w })
			ctx := context.Background()
			base, changed, mB := repackedWhileKnown(t, f, g, 15)
			o := f.objectFiles(t)
			records, copies := o.keys("deleted"), o.keys("deleted-copies")
			if len(records) == 0 || len(copies) != len(records) {
				t.Fatalf("gc wrote %d deletion records and %d copies", len(records), len(copies))
			}
			remove := func() {
				for _, k := range records {
					o.remove(k)
				}
			}
			switch how {
			case "removed":
				remove()
			case "damaged":
				for _, k := range records {
					o.flip(k)
				}
			}
			if how != "removed after the listing" {
				if got := g.restore(t, mB); !bytes.Equal(got, changed) {
					t.Fatal("restore through the other index differs")
				}
			} else {
				// The backup's own sync lists the records, then finds them gone when it reads
				// them: the sync right before it looks blobs up.
				w.prefix, w.hook = "deleted/", remove
			}
			rep := storedAgain(t, f, g, base)
			if w.hook != nil {
				t.Fatal("the records were not removed during g's sync")
			}
			want := map[string]string{"damaged": "is damaged"}[how]
			if want == "" {
				want = "is missing while its second copy is left"
			}
			if notes := strings.Join(rep.Notes, "\n"); !strings.Contains(notes, want) {
				t.Fatalf("check does not note the %s deletion record: %q", how, notes)
			}
			objects, _, err := g.r.MendMeta(ctx, rep)
			if err != nil || objects != len(records) {
				t.Fatalf("repair wrote %d deletion records again (%v), want %d", objects, err, len(records))
			}
			rep, err = g.r.Check(ctx, repo.CheckOptions{})
			if err != nil || !rep.OK() || hasText(rep.Notes, "deletion record") {
				t.Fatalf("check after repair: %v %+v", err, rep)
			}
		})
	}
}

// A gc that stores its record and the record's copy between a sync's listing of the records
// and its listing of the copies: the sync finds the copy without a listed record, reads the
// record first (it is there) and applies it once; the next sync does not apply it again.
func TestAGCBetweenASyncsTwoListingsIsAppliedOnce(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	w := &afterListing{}
	g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { w.Backend = be; return w })
	ctx := context.Background()
	base := randomVolume(19, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	if got := g.restore(t, mA); !bytes.Equal(got, base) { // g learns A's packs
		t.Fatal("restore differs")
	}
	if err := f.r.DeleteManifest(ctx, mA.ID); err != nil {
		t.Fatal(err)
	}
	w.prefix, w.hook = "deleted/", func() {
		if st := f.gc(t); st.PacksDeleted == 0 {
			t.Errorf("gc deleted no pack: %+v", st)
		}
	}
	st, err := g.r.Sync(ctx, false)
	if err != nil || w.hook != nil || st.Deletions != 1 {
		t.Fatalf("the sync a gc ran within: %+v, %v (gc ran: %v); want its record applied", st, err, w.hook == nil)
	}
	if st, err := g.r.Sync(ctx, false); err != nil || st.Deletions != 0 {
		t.Fatalf("the next sync: %+v, %v; want nothing applied again", st, err)
	}
	storedAgain(t, f, g, base)
}

// A deletion record written by a cairn from before the copies (none beside it) is noted by
// check, and repair stores its copy.
func TestADeletionRecordWithoutACopyGetsOne(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	ctx := context.Background()
	mA := f.backup(t, "a", &memSource{data: randomVolume(17, 2<<20)}, nil)
	if err := f.r.DeleteManifest(ctx, mA.ID); err != nil {
		t.Fatal(err)
	}
	f.gc(t)
	o := f.objectFiles(t)
	copies := o.keys("deleted-copies")
	if len(copies) == 0 {
		t.Fatal("gc wrote no copy of its deletion record")
	}
	for _, k := range copies {
		o.remove(k)
	}
	rep, err := f.r.Check(ctx, repo.CheckOptions{})
	if err != nil || !rep.OK() || !hasText(rep.Notes, "deletion records have no second copy") {
		t.Fatalf("check does not note the record without a copy: %q", rep.Notes)
	}
	if _, n, err := f.r.MendMeta(ctx, rep); err != nil || n != len(copies) {
		t.Fatalf("repair wrote %d copies (%v), want %d", n, err, len(copies))
	}
	if again := o.keys("deleted-copies"); len(again) != len(copies) {
		t.Fatalf("%d copies after repair, want %d", len(again), len(copies))
	}
	if rep, err := f.r.Check(ctx, repo.CheckOptions{}); err != nil || !rep.OK() || hasText(rep.Notes, "deletion record") {
		t.Fatalf("check after repair: %v %+v", err, rep)
	}
}

func TestLocks(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	g := f.peer(t, "g", repo.LockOptions{Wait: 300 * time.Millisecond, StaleAfter: 2 * time.Second})
	sh, err := f.r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	// A shared lock elsewhere keeps gc out, with a message that names it.
	_, err = g.r.GC(ctx, repo.GCOptions{})
	if !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "shared lock of backup") {
		t.Fatalf("gc while a backup holds a lock: %v", err)
	}
	// Shared locks coexist.
	sh2, err := g.r.Lock(ctx, repo.LockShared, "restore")
	if err != nil {
		t.Fatal(err)
	}
	sh2.Unlock()
	locks, err := g.r.Locks(ctx)
	if err != nil || len(locks) != 1 || locks[0].Stale || locks[0].Operation != "backup" {
		t.Fatalf("locks = %+v, %v", locks, err)
	}
	sh.Unlock()
	if _, err := g.r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatalf("gc after the lock went: %v", err)
	}

	// A lock of a process of this host that is gone is stale at once.
	be, _ := local.Open(filepath.Join(f.dir, "repo"))
	host, _ := os.Hostname()
	writeForeignLock(t, f, be, "dead", host, 1<<22-1)
	locks, err = g.r.Locks(ctx)
	if err != nil || len(locks) != 1 || !locks[0].Stale || !strings.Contains(locks[0].Why, "is gone") {
		t.Fatalf("locks = %+v, %v", locks, err)
	}
	st := g.gc(t)
	if st.LocksBroken != 1 {
		t.Fatalf("gc broke %d stale locks, want 1", st.LocksBroken)
	}

	// A lock of another host is stale only when it has not been refreshed for StaleAfter.
	writeForeignLock(t, f, be, "other", "elsewhere", 1)
	if _, err := g.r.GC(ctx, repo.GCOptions{}); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("gc while another host holds a fresh lock: %v", err)
	}
	time.Sleep(2500 * time.Millisecond)
	if removed, err := g.r.Unlock(ctx, false); err != nil || len(removed) != 1 {
		t.Fatalf("unlock removed %+v, %v", removed, err)
	}

	// A held lock refreshes itself; once someone removes it, the holder finds it lost.
	lk, err := g.r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	time.Sleep(600 * time.Millisecond)
	if err := lk.Check(); err != nil {
		t.Fatalf("a refreshed lock: %v", err)
	}
	if _, err := f.r.Unlock(ctx, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for lk.Check() == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := lk.Check(); !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("a removed lock: %v", err)
	}
}

// gc waiting for another host's lock takes the repository once that lock goes stale during
// the wait: the waiting lock's own object, rewritten on every try, is the store's clock by
// which the other's age is judged (written once, that clock stood still and gc gave up after
// its whole wait with the lock long stale; found by the two-gateway crash trials).
func TestExclusiveLockWaitsOutALockThatGoesStale(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	g := f.peer(t, "g", repo.LockOptions{Wait: 20 * time.Second, StaleAfter: time.Second})
	be, _ := local.Open(filepath.Join(f.dir, "repo"))
	writeForeignLock(t, f, be, "killed", "elsewhere", 1)
	start := time.Now()
	st := g.gc(t)
	if st.LocksBroken != 1 {
		t.Fatalf("gc broke %d stale locks, want 1", st.LocksBroken)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("gc took the lock after %v: it waited on past the other lock going stale (1 s)", took.Round(time.Millisecond))
	}
}

// A lock of another machine (or container) with this host's name is judged by age alone: its
// pid means nothing here. Judged by pid, a pid that no process here has made it "gone" at
// once, and gc broke a live writer's lock and deleted what it had written.
func TestLockOfAnotherMachineOfTheSameNameIsNotBrokenByPID(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	g := f.peer(t, "g", repo.LockOptions{Wait: 300 * time.Millisecond, StaleAfter: 2 * time.Second})
	host, _ := os.Hostname()
	if err := repo.WriteLockInSpaceForTest(f.r, "twin", host, "another-boot/pid:[4026531836]", 1<<22-1, "backup"); err != nil {
		t.Fatal(err)
	}
	g.heldOut(t, "a machine of the same name")
	// By age it goes stale as any other host's lock does.
	time.Sleep(2500 * time.Millisecond)
	if st := g.gc(t); st.LocksBroken != 1 {
		t.Fatalf("gc broke %d stale locks, want 1", st.LocksBroken)
	}
}

// TestLockIsJudgedByItsHoldersStaleness: a lock is stale only after its holder's --lock-stale,
// however short the judge's. Before, a gc (or a gateway) run with a shorter --lock-stale broke
// the lock of a live holder that refreshes every eighth of a longer one, between its
// refreshes: the holder, judging by its own, went on, and a backup could commit after that gc
// had deleted its packs.
func TestLockIsJudgedByItsHoldersStaleness(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	holder := f.peer(t, "holder", repo.LockOptions{StaleAfter: time.Minute}) // refreshes every 7.5 s
	g := f.peer(t, "g", repo.LockOptions{Wait: 300 * time.Millisecond, StaleAfter: time.Second})
	lk, err := holder.r.Lock(context.Background(), repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	time.Sleep(2 * time.Second) // past g's --lock-stale, short of the holder's next refresh
	g.heldOut(t, "a holder with a longer --lock-stale")
	if err := lk.Check(); err != nil {
		t.Fatalf("the holder lost its lock: %v", err)
	}
}

// TestLockOfALiveProcessSurvivesAClockStep: a lock of this host names its holder by pid and
// start time since boot, which no clock step moves. Judged by wall clock instead (the
// process's start against the lock's creation time), a holder whose clock stepped forward
// after it took its lock (a machine that booted with its clock years behind, then synced it)
// looked like a newer process given the same pid: its lock was broken as "gone" and gc
// deleted what it had written at once.
func TestLockOfALiveProcessSurvivesAClockStep(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	g := f.peer(t, "g", repo.LockOptions{Wait: 300 * time.Millisecond, StaleAfter: time.Minute})
	host, _ := os.Hostname()
	start, err := repo.ProcessStartForTest(1) // pid 1: a process that runs for the whole test
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.WriteLockInfoForTest(f.r, repo.LockInfo{ID: "stepped", Kind: repo.LockShared, Host: host, Space: ".",
		PID: 1, Start: start, Operation: "backup", Created: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	g.heldOut(t, "a live process of this host")
}

// heldOut checks that the one lock of the repository, which holder took, is live: it is not
// listed stale and keeps gc out.
func (f *fixture) heldOut(t *testing.T, holder string) {
	t.Helper()
	ctx := context.Background()
	locks, err := f.r.Locks(ctx)
	if err != nil || len(locks) != 1 || locks[0].Stale {
		t.Fatalf("locks = %+v, %v; want the lock of %s, not stale", locks, err, holder)
	}
	if _, err := f.r.GC(ctx, repo.GCOptions{}); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("gc while %s holds a fresh lock: %v", holder, err)
	}
}

// TestGCKeepsWhatABrokenLocksWriterWrote: gc that breaks a lock stale by age keeps the packs
// written since that lock was taken (until a later gc), for its writer may be alive and about
// to find its lock lost; only a lock whose process is seen gone (this host, boot and pid
// namespace) frees them at once. A lock of this host broken by age (a clock step, a stalled
// process) used to count as gone, and gc deleted what its live writer had just written; so
// did a lock of a host whose clock ran hours ahead of the store's (it was dated by that clock).
func TestGCKeepsWhatABrokenLocksWriterWrote(t *testing.T) {
	host, _ := os.Hostname()
	for _, tc := range []struct {
		name string
		here bool // the lock names this host, boot and pid namespace
		pid  int
		kept bool
		skew time.Duration // of another host's clock against the store's
	}{
		{"another host, stale by age", false, 1, true, 0},
		{"another host whose clock is 3 h ahead, stale by age", false, 1, true, 3 * time.Hour},
		{"this host, its process alive, stale by age", true, 1, true, 0},
		{"this host, its process gone", true, 1<<22 - 1, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{})
			ctx := context.Background()
			g := f.peer(t, "g", repo.LockOptions{Wait: 10 * time.Second, StaleAfter: time.Second})
			var err error
			switch {
			case tc.here:
				err = repo.WriteLockForTest(f.r, "writer", host, tc.pid, "backup")
			case tc.skew != 0:
				err = repo.WriteSkewedLockForTest(f.r, "writer", "elsewhere", tc.skew)
			default:
				err = repo.WriteLockInSpaceForTest(f.r, "writer", "elsewhere", "another-boot/pid:[1]", tc.pid, "backup")
			}
			if err != nil {
				t.Fatal(err)
			}
			// What the writer stored before it was stopped: packs no manifest reaches yet.
			vol := &memSource{data: randomVolume(31, 2<<20)}
			if _, err := f.r.Write(ctx, vol, repo.WriteOptions{}, func(repo.WriteResult) error { return nil }); err != nil {
				t.Fatal(err)
			}
			st := g.gc(t)
			if st.LocksBroken != 1 {
				t.Fatalf("gc broke %d stale locks, want 1", st.LocksBroken)
			}
			if tc.kept && (st.PacksKept == 0 || st.PacksDeleted != 0) {
				t.Fatalf("gc deleted %d packs and kept %d young ones: it deleted what a live writer wrote", st.PacksDeleted, st.PacksKept)
			}
			if !tc.kept && (st.PacksDeleted == 0 || st.PacksKept != 0) {
				t.Fatalf("gc deleted %d packs and kept %d young ones after the writer's process was gone", st.PacksDeleted, st.PacksKept)
			}
		})
	}
}

// A holder that stalled past ¾ of --lock-stale has lost its lock even when its object is
// still there: someone may have judged it stale meanwhile and be about to break it, and the
// holder's own refresh must not bring it back and commit.
func TestLockLostAfterAStall(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	g := f.peer(t, "g", repo.LockOptions{StaleAfter: time.Second})
	lk, err := g.r.Lock(context.Background(), repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	time.Sleep(300 * time.Millisecond) // refreshed every 125 ms
	if err := lk.Check(); err != nil {
		t.Fatalf("a lock refreshing on time: %v", err)
	}
	repo.StallLockForTest(lk, 2*time.Second)
	time.Sleep(300 * time.Millisecond) // a refresh comes after the "stall"
	if err := lk.Check(); !errors.Is(err, repo.ErrLockLost) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("after a stall, with the object still in place: %v, want the lock lost", err)
	}
}

// A host suspended (or a VM paused) past --lock-stale: its monotonic clock stood still while
// the store's ran on, and others took its lock for stale. Its wall clock says so, and the
// lock is lost by it: to Check (gc's stillHeld, a backup before it commits), and to the
// refresher, which must not write the object again as if nothing had happened. Judged by the
// monotonic clock alone, a gc that woke from a suspend after its mark deleted packs a backup
// elsewhere had just committed against.
func TestLockLostWhenTheWallClockJumps(t *testing.T) {
	for _, by := range []string{"check", "refresher"} {
		t.Run(by, func(t *testing.T) {
			var ahead atomic.Int64
			repo.WallClockAheadForTest(t, &ahead)
			f := newFixture(t, repo.InitOptions{})
			stale := 10 * time.Minute // no refresh runs during the test
			if by == "refresher" {
				stale = time.Second // refreshed every 125 ms
			}
			g := f.peer(t, "g", repo.LockOptions{StaleAfter: stale})
			lk, err := g.r.Lock(context.Background(), repo.LockExclusive, "gc")
			if err != nil {
				t.Fatal(err)
			}
			defer lk.Unlock()
			if by == "refresher" {
				time.Sleep(300 * time.Millisecond)
			}
			if err := lk.Check(); err != nil {
				t.Fatalf("a lock refreshing on time: %v", err)
			}
			ahead.Store(int64(3 * stale)) // suspended for three times --lock-stale
			if by == "refresher" {
				time.Sleep(300 * time.Millisecond) // a refresh comes after the suspend
			}
			err = lk.Check()
			if !errors.Is(err, repo.ErrLockLost) {
				t.Fatalf("after the wall clock jumped %s with no monotonic advance: %v, want the lock lost", 3*stale, err)
			}
			if by == "refresher" && !strings.Contains(err.Error(), "suspended?") {
				t.Fatalf("after the jump: %v, want the refresher to have found the lock lost", err)
			}
		})
	}
}

func writeForeignLock(t *testing.T, f *fixture, be backend.Backend, id, host string, pid int) {
	t.Helper()
	// Take a real lock through a throwaway repository handle, then rewrite its object as if
	// another process had written it: the same code path that every holder uses.
	lk, err := f.r.Lock(context.Background(), repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	info := lk.Info()
	lk.Unlock()
	if err := repo.WriteLockForTest(f.r, id, host, pid, info.Operation); err != nil {
		t.Fatal(err)
	}
}

// A deletion record written by a gc whose clock is hours behind is applied all the same:
// records are listed in full, never from a time cursor.
func TestDeletionRecordFromASkewedClock(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	vol := &memSource{data: randomVolume(21, 2<<20)}
	f.backup(t, "a", vol, nil)
	// f has seen a newer record (of a pack it never knew): a time cursor would now skip
	// anything older.
	if err := repo.PutDeletionForTest(f.r, time.Now(), repo.PackID{9}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.r.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	var id repo.PackID
	var addrs []repo.Address
	if err := f.idx.Blobs(func(e repo.PackEntry) error {
		id = e.Pack
		addrs = append(addrs, e.Addr)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := repo.PutDeletionForTest(f.r, time.Now().Add(-6*time.Hour), id, addrs); err != nil {
		t.Fatal(err)
	}
	// As that gc would: the pack's index object goes before the pack.
	idxObjs, _ := filepath.Glob(filepath.Join(f.dir, "repo", "packindex", "*-"+id.String()))
	for _, p := range idxObjs {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	st, err := f.r.Sync(ctx, false)
	if err != nil || st.Deletions != 1 {
		t.Fatalf("sync applied %d deletion records (%v), want the skewed one", st.Deletions, err)
	}
	if known, _ := f.idx.HasPack(id); known {
		t.Fatal("the index still lists a pack a deletion record names")
	}
}

// recorder notes the order of writes and deletes.
type recorder struct {
	backend.Backend
	mu  sync.Mutex
	ops []string
	// patient are the operations (of every kind, with the reads) made under a
	// backend.Patient context.
	patient []string
}

func (r *recorder) Put(ctx context.Context, key string, b []byte) error {
	r.note(ctx, "put "+key)
	return r.Backend.Put(ctx, key, b)
}

func (r *recorder) Delete(ctx context.Context, key string) error {
	r.note(ctx, "delete "+key)
	return r.Backend.Delete(ctx, key)
}

func (r *recorder) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	r.notePatient(ctx, "get "+key)
	return r.Backend.Get(ctx, key)
}

func (r *recorder) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	r.notePatient(ctx, "get "+key)
	return r.Backend.GetRange(ctx, key, off, n)
}

func (r *recorder) note(ctx context.Context, op string) {
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
	r.notePatient(ctx, op)
}

func (r *recorder) notePatient(ctx context.Context, op string) {
	if backend.IsPatient(ctx) {
		r.mu.Lock()
		r.patient = append(r.patient, op)
		r.mu.Unlock()
	}
}

// gc removes a pack's index objects, then writes the deletion record, then removes the pack.
// So a sync that runs beside it without a lock (a gateway's periodic one, a read's) and
// applied the record cannot learn the pack again from an index object, and an index object
// never outlives its pack.
func TestGCDeletionOrder(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	m := f.backup(t, "a", &memSource{data: randomVolume(31, 2<<20)}, nil)
	if err := f.r.DeleteManifest(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	be, _ := local.Open(filepath.Join(f.dir, "repo"))
	rec := &recorder{Backend: be}
	idx, err := index.Open(filepath.Join(f.dir, "index-rec"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	r, err := repo.Open(ctx, rec, idx, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Under a Patient context, as the gateway runs it: its reads may wait out an outage, its
	// removals and its deletion record may not (landing late, after its lock could have been
	// broken, they could remove what a writer reuses).
	if st, err := r.GC(backend.Patient(ctx), repo.GCOptions{}); err != nil || st.PacksDeleted != 1 {
		t.Fatalf("gc: %+v, %v", st, err)
	}
	var patientReads int
	for _, op := range rec.patient {
		if strings.HasPrefix(op, "delete ") || strings.HasPrefix(op, "put deleted") { // the record and its copy
			t.Errorf("gc's %s ran under a patient context", op)
		}
		if strings.HasPrefix(op, "get ") {
			patientReads++
		}
	}
	if patientReads == 0 {
		t.Errorf("none of gc's reads ran under the patient context it was given: %v", rec.patient)
	}
	pos := map[string]int{}
	for i, op := range rec.ops {
		for _, kind := range []string{"delete packindex/", "put deleted/", "put deleted-copies/", "delete packs/"} {
			if _, seen := pos[kind]; !seen && strings.HasPrefix(op, kind) {
				pos[kind] = i
			}
		}
	}
	if len(pos) != 4 || !(pos["delete packindex/"] < pos["put deleted/"] && pos["put deleted/"] < pos["put deleted-copies/"] &&
		pos["put deleted-copies/"] < pos["delete packs/"]) {
		t.Fatalf("gc's deletion order: %v", rec.ops)
	}
}

// pausingSource reads as its inner source, but the first read reaching pauseAt closes
// reached and waits for release.
type pausingSource struct {
	*memSource
	pauseAt  int64
	reached  chan struct{}
	release  chan struct{}
	announce sync.Once
}

func (p *pausingSource) ReadAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > p.pauseAt {
		p.announce.Do(func() { close(p.reached) })
		<-p.release
	}
	return p.memSource.ReadAt(b, off)
}

// TestGCWaitsForASpoolingBackup plays the interleaving spooled packs add: a backup on a local
// repository has stored packs no manifest reaches yet and is writing the next one to a temp
// file when another process runs gc. gc is refused while the backup's shared lock is held,
// and once the backup has committed, a gc deletes nothing it needs: it restores byte-exact
// and no temp file is left.
func TestGCWaitsForASpoolingBackup(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Encryption: "none"})
	g := f.peer(t, "g", repo.LockOptions{Wait: 200 * time.Millisecond})
	ctx := context.Background()
	data := make([]byte, 96<<20)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	src := &pausingSource{memSource: &memSource{data: data}, pauseAt: 88 << 20, reached: make(chan struct{}), release: make(chan struct{})}
	lk, err := f.r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	var m *repo.Manifest
	done := make(chan error, 1)
	go func() {
		_, err := f.r.Write(ctx, src, repo.WriteOptions{Lock: lk}, func(res repo.WriteResult) error {
			m = &repo.Manifest{ID: "spooled", VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
			return f.r.PutManifest(ctx, m)
		})
		done <- err
	}()
	<-src.reached
	temps, packs := 0, 0
	deadline := time.Now().Add(10 * time.Second)
	for (temps == 0 || packs == 0) && time.Now().Before(deadline) {
		temps, packs = 0, 0
		_ = filepath.WalkDir(filepath.Join(f.dir, "repo"), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), ".tmp-") {
				temps++
			} else if err == nil && !d.IsDir() && strings.Contains(p, "/packs/") {
				packs++
			}
			return nil
		})
		time.Sleep(20 * time.Millisecond)
	}
	if temps == 0 || packs == 0 {
		t.Fatalf("mid-backup: %d spooled files, %d stored packs; want both", temps, packs)
	}
	if _, err := g.r.GC(ctx, repo.GCOptions{}); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("gc while a backup spools its packs: %v, want ErrLocked", err)
	}
	close(src.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	lk.Unlock()
	g.gc(t)
	if got := f.restore(t, m); !bytes.Equal(got, data) {
		t.Fatal("the backup does not restore after gc")
	}
	_ = filepath.WalkDir(filepath.Join(f.dir, "repo"), func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temp file left after the backup committed: %s", p)
		}
		return nil
	})
}

// TestGCRemovesStaleTempFiles: gc removes the temp files that interrupted writes left in a
// local repository (a spooled pack in the root, Puts' files beside their objects) once they
// are over an hour old by the store's clock, and no younger one: that may be a write still
// running in another process. A dry run removes nothing. The backup stays restorable.
func TestGCRemovesStaleTempFiles(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Encryption: "none"})
	vol := &memSource{data: randomVolume(3, 1<<20)}
	m := f.backup(t, "b1", vol, nil)
	root := filepath.Join(f.dir, "repo")
	plant := func(rel string, age time.Duration) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("half a pack"), 0o600); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(-age)
		if err := os.Chtimes(p, when, when); err != nil {
			t.Fatal(err)
		}
		return p
	}
	stale := []string{
		plant(".tmp-1111", 2*time.Hour),          // a spooled pack of a crashed backup
		plant("packs/ab/.tmp-2222", 3*time.Hour), // a Put of a pack
		plant("manifests/.tmp-3333", 25*time.Hour),
	}
	young := []string{
		plant(".tmp-4444", 0),                    // a write in flight elsewhere
		plant("locks/.tmp-5555", 50*time.Minute), // under an hour
	}
	ctx := context.Background()
	st, err := f.r.GC(ctx, repo.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if st.TempFilesRemoved != 0 {
		t.Errorf("dry run removed %d temp files", st.TempFilesRemoved)
	}
	for _, p := range append(stale, young...) {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("dry run touched %s: %v", p, err)
		}
	}
	if st, err = f.r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if st.TempFilesRemoved != len(stale) {
		t.Errorf("gc removed %d temp files, want %d", st.TempFilesRemoved, len(stale))
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stale temp file %s still there: %v", p, err)
		}
	}
	for _, p := range young {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("young temp file %s removed: %v", p, err)
		}
	}
	if got := f.restore(t, m); !bytes.Equal(got, vol.data) {
		t.Fatal("restore after gc differs from the volume")
	}
}

// stopGC is a backend that refuses the Put of a deletion record (refuseRecord) or the Delete of
// a pack (refuseDelete): a gc that dies before its record, or after it and before its packs go;
// or the Put of a pack's index object (refuseIndexObject): a backup that dies after its pack.
type stopGC struct {
	backend.Backend
	refuseRecord, refuseDelete, refuseIndexObject atomic.Bool
	// stallAt, when set, makes the first removal of an index object take that long, with
	// every lock write refused meanwhile: the process stalls, as a paused VM does.
	stallAt  atomic.Int64
	stalling atomic.Bool
	// stallTrailer is stallAt for the first range read of a pack (a trailer read by a full
	// sync, right before it stores the pack's index object).
	stallTrailer atomic.Int64
}

func (b *stopGC) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if d := b.stallTrailer.Swap(0); d > 0 && strings.HasPrefix(key, "packs/") {
		b.stalling.Store(true)
		time.Sleep(time.Duration(d))
		b.stalling.Store(false)
	}
	return b.Backend.GetRange(ctx, key, off, n)
}

// newStopGC makes a repository in dir/repo, through a stopGC that refuses nothing yet.
func newStopGC(t *testing.T, dir string, o repo.InitOptions) *stopGC {
	t.Helper()
	lb, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	be := &stopGC{Backend: lb}
	if _, err := repo.Init(context.Background(), be, o); err != nil {
		t.Fatal(err)
	}
	return be
}

func (b *stopGC) Put(ctx context.Context, key string, data []byte) error {
	if b.stalling.Load() && strings.HasPrefix(key, "locks/") {
		return fmt.Errorf("put %s: the process stalls: %w", key, backend.ErrUnavailable)
	}
	if (b.refuseRecord.Load() && strings.HasPrefix(key, "deleted/")) || (b.refuseIndexObject.Load() && strings.HasPrefix(key, "packindex/")) {
		return fmt.Errorf("put %s: refused by the test: %w", key, backend.ErrUnavailable)
	}
	return b.Backend.Put(ctx, key, data)
}

func (b *stopGC) Delete(ctx context.Context, key string) error {
	if d := b.stallAt.Swap(0); d > 0 && strings.HasPrefix(key, "packindex/") {
		b.stalling.Store(true)
		time.Sleep(time.Duration(d))
		b.stalling.Store(false)
	}
	if b.refuseDelete.Load() && strings.HasPrefix(key, "packs/") {
		return fmt.Errorf("delete %s: refused by the test: %w", key, backend.ErrUnavailable)
	}
	return b.Backend.Delete(ctx, key)
}

// A gc repacks a pack's live blobs into a new pack and dies before its packs go: both stay,
// the old one without index objects. In an unencrypted repository the next gc's repack of the
// old one would write the same bytes under the same pack id, so two things must hold. A pack
// learned from its trailer (the next gc's full sync; a fresh index, rebuild-index) does not
// take blobs the index locates in another pack: the old pack then holds nothing in use and
// the next gc deletes it. And should an index still point the live blobs at the old pack (it
// did until 2026-12-02), that gc dooms the new pack, repacks the old one into it again, and
// must not delete what it has just written. Either way the backup sharing the blobs restores
// byte-exact and check is clean. (make test's crash trials found it: a gc killed after its
// deletion record, then the next gc, deleted the pack and lost the blobs.)
func TestGCKeepsThePackItRepackedInto(t *testing.T) {
	for _, c := range []struct {
		name  string
		stop  string // what the first gc's backend refuses
		fresh bool   // the second gc runs through a fresh index
		stale bool   // the index learns the old pack again with all its blobs
	}{
		{"killed after its record", "delete pack", false, false},
		{"killed before its record, fresh index", "deletion record", true, false},
		{"index still points at the old pack", "delete pack", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			be := newStopGC(t, dir, repo.InitOptions{Encryption: repo.EncryptionNone})
			open := func(name string) *fixture { return fixtureOn(t, be, dir, name, repo.Options{ChunkCacheBytes: 8 << 20}) }
			f := open("index")
			a := randomVolume(21, 4<<20)
			ma := f.backup(t, "a", &memSource{data: a}, nil)
			b := append(append([]byte(nil), a[:2<<20]...), randomVolume(22, 2<<20)...) // a's first half
			mb := f.backup(t, "b", &memSource{data: b}, nil)
			if err := f.r.DeleteManifest(ctx, ma.ID); err != nil {
				t.Fatal(err)
			}
			packs := map[repo.PackID][]repo.PackEntry{} // every pack's blobs before gc, from the index
			sizes := map[repo.PackID]int64{}
			if err := f.idx.Blobs(func(e repo.PackEntry) error { packs[e.Pack] = append(packs[e.Pack], e); return nil }); err != nil {
				t.Fatal(err)
			}
			if err := f.idx.Packs(func(id repo.PackID, size int64) error { sizes[id] = size; return nil }); err != nil {
				t.Fatal(err)
			}
			refuse := &be.refuseDelete
			if c.stop == "deletion record" {
				refuse = &be.refuseRecord
			}
			refuse.Store(true)
			st, err := f.r.GC(ctx, repo.GCOptions{})
			refuse.Store(false)
			if err == nil || !strings.Contains(err.Error(), c.stop) || st.PacksRepacked != 1 {
				t.Fatalf("gc through a backend that refuses to %s: %+v, %v; want one pack repacked, then the error", c.stop, st, err)
			}
			if c.stale {
				for id, entries := range packs {
					known, err := f.idx.HasPack(id)
					if err != nil {
						t.Fatal(err)
					}
					if _, serr := os.Stat(filepath.Join(dir, "repo", id.Key())); serr == nil && !known {
						if err := f.idx.AddPack(id, sizes[id], entries); err != nil {
							t.Fatal(err)
						}
					}
				}
			}

			g := f
			if c.fresh {
				g = open("index-fresh")
			}
			st = g.gc(t)
			// The old pack goes either way: dropped (nothing in use), or repacked into the new one.
			if gone := st.PacksDeleted + st.PacksRepacked; gone != 1 || (st.PacksRepacked == 1) != c.stale {
				t.Fatalf("the second gc: %+v, want the old pack %s", st, map[bool]string{false: "deleted", true: "repacked"}[c.stale])
			}
			g.mustCheck(t)
			if got := g.restore(t, mb); !bytes.Equal(got, b) {
				t.Fatal("b differs after the second gc")
			}
			if c.fresh {
				f.mustCheck(t)
				if got := f.restore(t, mb); !bytes.Equal(got, b) {
					t.Fatal("b differs through the first index")
				}
			}
		})
	}
}

// A backup dies after storing a pack, before its index object; the next backup of the same
// data stores the same blobs again (the index never learned the first pack). In an encrypted
// repository the two packs have different ids. gc learns the first one from its trailer and
// must not move the blobs to it: it deletes the unindexed copy and keeps the committed
// backup's pack, index object and all, so check stays clean. (make test's crash trials, on an
// encrypted repository: before, gc dropped the committed pack and kept the copy, which check
// then reported as a pack without an index object.)
func TestGCDropsAnInterruptedBackupsCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const pw = "copy"
	be := newStopGC(t, dir, repo.InitOptions{Encryption: repo.EncryptionAES, Password: pw})
	f := fixtureOn(t, be, dir, "index", repo.Options{Password: pw, ChunkCacheBytes: 8 << 20})
	data := randomVolume(31, 3<<20)
	be.refuseIndexObject.Store(true)
	_, err := f.r.Write(ctx, &memSource{data: data}, repo.WriteOptions{}, func(repo.WriteResult) error { return nil })
	be.refuseIndexObject.Store(false)
	if err == nil || !strings.Contains(err.Error(), "index of pack") {
		t.Fatalf("a backup whose index object is refused: %v", err)
	}
	m := f.backup(t, "m", &memSource{data: data}, nil)
	packs := func() int { return len(packFiles(dir)) }
	if n := packs(); n != 2 {
		t.Fatalf("%d packs before gc, want the interrupted backup's and the committed one's", n)
	}
	st := f.gc(t)
	if st.PacksDeleted != 1 || st.PacksRepacked != 0 || packs() != 1 {
		t.Fatalf("gc: %+v, %d packs left; want the unindexed copy deleted", st, packs())
	}
	f.mustCheck(t)
	if got := f.restore(t, m); !bytes.Equal(got, data) {
		t.Fatal("the backup differs after gc")
	}
}

// A gc that stalls past --lock-stale in the middle of its deletions (a paused VM: backups
// elsewhere may have seen its lock stale and run meanwhile, reusing blobs of the packs it
// doomed) stops with its lock lost: no deletion record, no pack deleted, every backup intact.
func TestGCStopsWhenItsLockIsLost(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be := newStopGC(t, dir, repo.InitOptions{})
	f := fixtureOn(t, be, dir, "index", repo.Options{ChunkCacheBytes: 8 << 20, Lock: repo.LockOptions{StaleAfter: time.Second}})
	a, b := randomVolume(41, 2<<20), randomVolume(42, 2<<20)
	f.backup(t, "a", &memSource{data: a}, nil)
	mb := f.backup(t, "b", &memSource{data: b}, nil)
	if err := f.r.DeleteManifest(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	before := packFiles(dir)
	be.stallAt.Store(int64(1500 * time.Millisecond))
	_, err := f.r.GC(ctx, repo.GCOptions{})
	if !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("gc that stalled 1.5 s with --lock-stale 1s: %v, want its lock lost", err)
	}
	after := packFiles(dir)
	for _, p := range before {
		if !slices.Contains(after, p) {
			t.Fatalf("pack %s is gone after the stalled gc: it deleted packs without its lock", filepath.Base(p))
		}
	}
	if rec, _ := filepath.Glob(filepath.Join(dir, "repo", "deleted", "*")); len(rec) != 0 {
		t.Fatalf("the stalled gc wrote a deletion record: %v", rec)
	}
	if got := f.restore(t, mb); !bytes.Equal(got, b) {
		t.Fatal("backup b differs after the stalled gc")
	}
	st := f.gc(t)
	if st.PacksDeleted == 0 {
		t.Fatalf("the next gc: %+v, want a's packs deleted", st)
	}
	f.mustCheck(t)
}

// TestGCDryRunSaysWhatARunWouldDo: a dry run changes nothing in the backend and reports the
// deletions and repacks the run after it then does, with the bytes they free (a repack's
// estimate is its dead blobs; the run also frees their trailer entries).
func TestGCDryRunSaysWhatARunWouldDo(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	ctx := context.Background()
	base := randomVolume(21, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	changed := append([]byte(nil), base...)
	copy(changed[:3<<20], randomVolume(22, 3<<20))
	mB := f.backup(t, "b", &memSource{data: changed}, mA) // a's pack: 3/4 of it dead once a goes
	mC := f.backup(t, "c", &memSource{data: randomVolume(23, 2<<20)}, nil)
	for _, id := range []string{mA.ID, mC.ID} { // c's pack: all of it dead
		if err := f.r.DeleteManifest(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	objects := func() []string {
		var keys []string
		if err := f.r.Backend().List(ctx, "", func(oi backend.ObjectInfo) error {
			if !strings.HasPrefix(oi.Key, "locks/") {
				keys = append(keys, fmt.Sprintf("%s %d", oi.Key, oi.Size))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	before := objects()
	dry, err := f.r.GC(ctx, repo.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if after := objects(); !slices.Equal(before, after) {
		t.Fatalf("a dry run changed the backend:\nbefore %v\nafter  %v", before, after)
	}
	st := f.gc(t)
	if !dry.DryRun || st.DryRun {
		t.Errorf("dry_run is %v for the dry run and %v for the real one", dry.DryRun, st.DryRun)
	}
	if st.PacksDeleted == 0 || st.PacksRepacked == 0 {
		t.Fatalf("the fixture should make gc delete a pack and repack one: %+v", st)
	}
	if dry.PacksDeleted != st.PacksDeleted || dry.PacksRepacked != st.PacksRepacked || dry.BlobsReclaimed != st.BlobsReclaimed {
		t.Errorf("the dry run said %d deleted, %d repacked, %d blobs; the run did %d, %d, %d",
			dry.PacksDeleted, dry.PacksRepacked, dry.BlobsReclaimed, st.PacksDeleted, st.PacksRepacked, st.BlobsReclaimed)
	}
	if slack := st.BytesFreed - dry.BytesFreed; slack < 0 || slack > 64<<10 {
		t.Errorf("the dry run said %d bytes freed, the run freed %d", dry.BytesFreed, st.BytesFreed)
	}
	if got := f.restore(t, mB); !bytes.Equal(got, changed) {
		t.Fatal("b differs after gc")
	}
	f.mustCheck(t)
}

// pausePackRead holds the first pack read through it until release is closed; reached is
// closed once it holds. It hides the local backend's RangeReader, so every read is a GetRange.
type pausePackRead struct {
	backend.Backend
	once             sync.Once
	reached, release chan struct{}
}

func (p *pausePackRead) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if strings.HasPrefix(key, "packs/") {
		p.once.Do(func() { close(p.reached); <-p.release })
	}
	return p.Backend.GetRange(ctx, key, off, n)
}

// TestReadsThatLoseTheirLockSaySo: a restore or a check whose lock was broken while it
// paused (a stalled host) and which then finds what it reads gone says its lock was lost
// and that the loss may be a gc, not damage; the same missing pack under a lock that held
// is reported as damage, as before.
func TestReadsThatLoseTheirLockSaySo(t *testing.T) {
	ctx := context.Background()
	for _, op := range []string{"restore", "check"} {
		for _, breakLock := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/lock_broken=%v", op, breakLock), func(t *testing.T) {
				f := newFixture(t, repo.InitOptions{})
				data := randomVolume(31, 6<<20)
				m := f.backup(t, "m", &memSource{data: data}, nil)
				be, err := local.Open(filepath.Join(f.dir, "repo"))
				if err != nil {
					t.Fatal(err)
				}
				p := &pausePackRead{Backend: be, reached: make(chan struct{}), release: make(chan struct{})}
				g := fixtureOn(t, p, f.dir, "index-g", repo.Options{ChunkCacheBytes: 8 << 20, Lock: repo.LockOptions{StaleAfter: time.Second}})
				done := make(chan error, 1)
				go func() {
					switch op {
					case "restore":
						done <- g.r.Restore(ctx, m, &memTarget{data: make([]byte, m.Size)}, repo.RestoreOptions{})
					case "check":
						rep, err := g.r.Check(ctx, repo.CheckOptions{})
						if err == nil && rep.OK() {
							err = errors.New("check found nothing wrong")
						} else if err == nil {
							err = fmt.Errorf("check reported %v", rep.Problems)
						}
						done <- err
					}
				}()
				<-p.reached
				if breakLock {
					// An admin's 'repo unlock --force', until g's refresher has seen its
					// object gone (a refresh that began before a removal writes it back).
					for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
						if _, err := f.r.Unlock(ctx, true); err != nil {
							t.Fatal(err)
						}
						time.Sleep(300 * time.Millisecond) // over two of g's refreshes
						if locks, err := f.r.Locks(ctx); err != nil {
							t.Fatal(err)
						} else if len(locks) == 0 {
							break
						}
						if time.Now().After(deadline) {
							t.Fatal("g's lock object keeps coming back")
						}
					}
					if err := f.r.DeleteManifest(ctx, m.ID); err != nil {
						t.Fatal(err)
					}
					if st := f.gc(t); st.PacksDeleted == 0 {
						t.Fatalf("gc deleted nothing: %+v", st)
					}
				} else {
					// Damage: the packs go behind everyone's back; g's lock holds.
					if err := f.r.ListPacks(ctx, func(id repo.PackID, _ int64) error { return be.Delete(ctx, id.Key()) }); err != nil {
						t.Fatal(err)
					}
				}
				close(p.release)
				err = <-done
				if err == nil {
					t.Fatalf("%s succeeded with its packs gone", op)
				}
				said := errors.Is(err, repo.ErrLockLost) && strings.Contains(err.Error(), "may be a gc elsewhere")
				if said != breakLock {
					t.Fatalf("%s with lock broken=%v: %v", op, breakLock, err)
				}
			})
		}
	}
}

// An image read without a lock (a mount) on a process whose index has not heard of a repack
// elsewhere follows the moved blobs: sequential reads (prefetched in leaf batches at the
// stale locations) and single blocks alike return the backup's bytes.
func TestImageFollowsARepackElsewhere(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	g := f.peer(t, "g", repo.LockOptions{})
	h := f.peer(t, "h", repo.LockOptions{})
	ctx := context.Background()
	base := randomVolume(21, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	changed := append([]byte(nil), base...)
	copy(changed[:3<<20], randomVolume(22, 3<<20))
	mB := f.backup(t, "b", &memSource{data: changed}, mA)
	for _, x := range []*fixture{g, h} { // both know the backups' packs as they were
		if _, err := x.r.Sync(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.r.DeleteManifest(ctx, mA.ID); err != nil {
		t.Fatal(err)
	}
	if st := f.gc(t); st.PacksRepacked == 0 {
		t.Fatalf("gc repacked nothing: %+v", st)
	}

	im := g.r.Image(mB)
	got := make([]byte, len(changed))
	for off := 0; off < len(got); off += 128 << 10 { // sequential: the prefetch reads ahead
		if n, err := im.ReadAt(got[off:off+128<<10], int64(off)); err != nil || n != 128<<10 {
			t.Fatalf("sequential read at %d: %d bytes, %v", off, n, err)
		}
	}
	if !bytes.Equal(got, changed) {
		t.Fatal("sequential read after a repack elsewhere differs from the volume")
	}
	// Single 4 KiB reads, the moved last MiB first, on another stale process.
	im = h.r.Image(mB)
	p := make([]byte, 4<<10)
	for _, off := range []int{4<<20 - 4<<10, 3<<20 + 100<<10, 3 << 20, 5 << 10, 2<<20 + 7<<10} {
		if _, err := im.ReadAt(p, int64(off)); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		if !bytes.Equal(p, changed[off:off+len(p)]) {
			t.Fatalf("read at %d after a repack elsewhere differs from the volume", off)
		}
	}
}

// heldIndex holds every pack back from the index until n leaf dedup checks have run, so that
// backups running at once all find the blocks they share new and each stores them.
type heldIndex struct {
	repo.Index
	n      int64
	looked atomic.Int64
	ready  chan struct{}
	once   sync.Once
}

func (x *heldIndex) LookupBatch(addrs []repo.Address, locs []repo.Location, found []bool) error {
	err := x.Index.LookupBatch(addrs, locs, found)
	if x.looked.Add(1) == x.n {
		x.once.Do(func() { close(x.ready) })
	}
	return err
}

func (x *heldIndex) AddPack(id repo.PackID, size int64, entries []repo.PackEntry) error {
	select {
	case <-x.ready:
	case <-time.After(10 * time.Second):
	}
	return x.Index.AddPack(id, size, entries)
}

// Two backups that run at once on two gateways and share blocks new to the repository both
// store them; the index locates each in one pack, and the other pack's copies are read by nothing. gc counts
// them dead, repacks the pack they fill half of, and every backup still restores, through
// this index and through a fresh one (which failed before: it learned the kept pack from the
// deletion record's relocations alone, and never located its other blobs).
func TestGCRepacksCopiesNoIndexEntryUses(t *testing.T) {
	x := &heldIndex{n: 4, ready: make(chan struct{})}
	f := newFixtureWith(t, repo.InitOptions{Compression: repo.CompressNone}, func(idx repo.Index) repo.Index {
		x.Index = idx
		return x
	})
	ctx := context.Background()
	// Two handles on the repository, as two gateways: the backups of one process share what
	// they pack (TestConcurrentBackupsShareWhatTheyPack), those of two do not.
	r2, err := repo.Open(ctx, f.r.Backend(), x, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	handles := []*repo.Repository{f.r, r2}

	// One-leaf parts: the volumes are a+b and b+c, each two leaves, four checks in all.
	const leaf = repo.LeafFanout * 16 << 10
	a, b, c := randomBytes(31, leaf), randomBytes(32, leaf), randomBytes(33, leaf)
	vols := [][]byte{append(append([]byte(nil), a...), b...), append(append([]byte(nil), b...), c...)}
	ms := make([]*repo.Manifest, 2)
	var wg sync.WaitGroup
	for k, data := range vols {
		wg.Go(func() {
			src := &memSource{data: data}
			r := handles[k]
			_, err := r.Write(ctx, src, repo.WriteOptions{}, func(res repo.WriteResult) error {
				ms[k] = &repo.Manifest{ID: fmt.Sprint("v", k), VolumeID: fmt.Sprint("vol", k), Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
				return r.PutManifest(ctx, ms[k])
			})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	if ms[0].Stats.NewBlobs+ms[1].Stats.NewBlobs < 4*repo.LeafFanout {
		t.Fatalf("the backups stored %d and %d blobs: they did not both store the shared part", ms[0].Stats.NewBlobs, ms[1].Stats.NewBlobs)
	}

	st := f.gc(t)
	if st.PacksRepacked != 1 || st.PacksDeleted != 0 || st.CopyBytes < int64(len(b)) || st.BytesFreed < int64(len(b)) {
		t.Fatalf("gc: %+v; want one pack repacked and the shared part's copy (%d bytes) freed", st, len(b))
	}
	for k, m := range ms {
		if got := f.restore(t, m); !bytes.Equal(got, vols[k]) {
			t.Fatalf("backup %d differs after gc", k)
		}
	}
	f.mustCheck(t)
	if st := f.gc(t); st.PacksRepacked != 0 || st.PacksDeleted != 0 || st.CopyBytes != 0 {
		t.Fatalf("a second gc: %+v; want nothing to do", st)
	}
	// A fresh index (rebuild-index, a gateway joining) replays the deletion record, which
	// moved the copies' blobs to the other pack: it learns that pack whole, not only them.
	g := f.peer(t, "g", repo.LockOptions{})
	for k, m := range ms {
		if got := g.restore(t, m); !bytes.Equal(got, vols[k]) {
			t.Fatalf("backup %d differs through another index", k)
		}
	}
	g.mustCheck(t)
}

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// lostBlobSetup backs up a, then b (a with every block but the first keep changed), deletes a
// and makes the index forget b's first block, which is in a's pack: with keep 1 gc would drop
// that pack, with more it would repack it.
func lostBlobSetup(t *testing.T, keep int) (f *fixture, mB *repo.Manifest, vol []byte, lost repo.PackEntry) {
	t.Helper()
	f = newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	ctx := context.Background()
	base := randomBytes(41, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	vol = append([]byte(nil), base...)
	copy(vol[keep*16<<10:], randomBytes(42, 4<<20-keep*16<<10))
	mB = f.backup(t, "b", &memSource{data: vol}, mA)
	if err := f.r.DeleteManifest(ctx, mA.ID); err != nil {
		t.Fatal(err)
	}
	first := f.firstDataBlock(t, mB)
	loc, ok, err := f.idx.Lookup(first)
	if err != nil || !ok {
		t.Fatalf("lookup of b's first block: %v %v", ok, err)
	}
	if err := f.idx.ForgetBlobs([]repo.Address{first}); err != nil {
		t.Fatal(err)
	}
	return f, mB, vol, repo.PackEntry{Addr: first, Location: loc}
}

// A pack gc would drop that holds a blob a backup needs, which the index locates nowhere (an
// index that learned only part of the pack): gc deletes nothing and says to rebuild the index;
// a rebuilt index locates the blob, and gc then keeps it.
func TestGCKeepsABlobTheIndexLost(t *testing.T) {
	f, mB, vol, lost := lostBlobSetup(t, 1)
	ctx := context.Background()
	_, err := f.r.GC(ctx, repo.GCOptions{})
	if err == nil || !strings.Contains(err.Error(), "rebuild-index") || !strings.Contains(err.Error(), lost.Pack.String()) {
		t.Fatalf("gc with a pack holding a blob the index lost: %v", err)
	}
	if _, err := f.r.Backend().Stat(ctx, lost.Pack.Key()); err != nil {
		t.Fatalf("gc deleted the pack: %v", err)
	}
	// A rebuilt index (a fresh one) locates the blob: gc repacks a's pack and b restores.
	g := f.peer(t, "rebuilt", repo.LockOptions{})
	if st := g.gc(t); st.PacksRepacked+st.PacksDeleted == 0 {
		t.Fatalf("gc on the rebuilt index: %+v", st)
	}
	if got := g.restore(t, mB); !bytes.Equal(got, vol) {
		t.Fatal("b differs after gc on the rebuilt index")
	}
	g.mustCheck(t)
}

// rebuild-index (Reindex) on the index that forgot the blob, not a fresh one: the full sync
// alone skips the pack, which the index knows, so gc stayed blocked after the rebuild it asks
// for. Reindex locates the blob again in its pack, and gc then repacks the pack.
func TestRebuildIndexLearnsAgainABlobTheIndexForgot(t *testing.T) {
	f, mB, vol, lost := lostBlobSetup(t, 1)
	ctx := context.Background()
	if _, err := f.r.GC(ctx, repo.GCOptions{}); err == nil || !strings.Contains(err.Error(), "rebuild-index") {
		t.Fatalf("gc with a pack holding a blob the index lost: %v", err)
	}
	st, err := reindex(t, f.r)
	if err != nil {
		t.Fatal(err)
	}
	if st.Relearned != 1 {
		t.Fatalf("rebuild-index located %d blobs again; want the 1 forgotten", st.Relearned)
	}
	if loc, ok, err := f.idx.Lookup(lost.Addr); err != nil || !ok || loc.Pack != lost.Pack {
		t.Fatalf("the forgotten blob after rebuild-index: %v %v %v; want it in pack %s", loc, ok, err, lost.Pack)
	}
	if st := f.gc(t); st.PacksRepacked+st.PacksDeleted == 0 {
		t.Fatalf("gc after rebuild-index: %+v; want a's pack repacked", st)
	}
	if got := f.restore(t, mB); !bytes.Equal(got, vol) {
		t.Fatal("b differs after rebuild-index and gc")
	}
	f.mustCheck(t)
	// Nothing is left to learn: a second rebuild locates nothing.
	if st, err := reindex(t, f.r); err != nil || st.Relearned != 0 {
		t.Fatalf("second rebuild-index: %+v %v", st, err)
	}
}

// A damaged copy the index forgot stays forgotten through rebuild-index: located again, the
// next backup of the same data would deduplicate against it instead of storing it again.
func TestRebuildIndexLeavesADamagedCopyForgotten(t *testing.T) {
	f, _, _, lost := lostBlobSetup(t, 1)
	f.damage(t, lost.Location)
	st, err := reindex(t, f.r)
	if err != nil {
		t.Fatal(err)
	}
	if st.Relearned != 0 {
		t.Fatalf("rebuild-index located %d blobs again; want the damaged one left out", st.Relearned)
	}
	if _, ok, err := f.idx.Lookup(lost.Addr); err != nil || ok {
		t.Fatalf("the damaged blob after rebuild-index: located %v (%v)", ok, err)
	}
}

// The same pack with that blob's copy damaged (the index forgot it as repair does): deleting
// it loses nothing readable, so gc goes on.
func TestGCDropsADamagedCopyTheIndexForgot(t *testing.T) {
	f, _, _, lost := lostBlobSetup(t, 1)
	f.damage(t, lost.Location)
	if st := f.gc(t); st.PacksDeleted+st.PacksRepacked == 0 {
		t.Fatalf("gc: %+v; want a's pack gone", st)
	}
	if _, err := f.r.Backend().Stat(context.Background(), lost.Pack.Key()); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("a's pack after gc: %v", err)
	}
}

// damage flips a byte in the middle of the blob at loc in a local repository's pack file.
func (f *fixture) damage(t *testing.T, loc repo.Location) {
	t.Helper()
	path := filepath.Join(f.dir, "repo", filepath.FromSlash(loc.Pack.Key()))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[loc.Offset+loc.Length/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A pack gc repacks that holds a damaged copy the index forgot (repo repair does that when no
// volume can heal the block): the repack leaves it out instead of failing gc, the block's
// backup stays damaged, and its other blocks move with the pack.
func TestGCRepackLeavesOutADamagedCopyTheIndexForgot(t *testing.T) {
	f, mB, vol, lost := lostBlobSetup(t, 2)
	f.damage(t, lost.Location)
	st := f.gc(t)
	if st.PacksRepacked != 1 {
		t.Fatalf("gc: %+v; want a's pack repacked", st)
	}
	im := f.r.Image(mB)
	p := make([]byte, 16<<10)
	if _, err := im.ReadAt(p, 16<<10); err != nil || !bytes.Equal(p, vol[16<<10:32<<10]) {
		t.Fatalf("b's second block after the repack: %v", err)
	}
	if _, err := im.ReadAt(p, 0); !errors.Is(err, repo.ErrCorrupt) && !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("b's first block, damaged and forgotten: %v", err)
	}
}

// gc removes the backup log objects over a day old and keeps the newer ones: a manifest's
// Put writes one (docs/design.md, "Catch-up: the backup log").
func TestGCRemovesOldLogObjects(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressZstd})
	m := f.backup(t, "b1", &memSource{data: randomVolume(3, 64<<10)}, nil)
	logDir := filepath.Join(f.dir, "repo", "backuplog")
	names := func() []string {
		entries, err := os.ReadDir(logDir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	fresh := names()
	if len(fresh) != 1 || !strings.HasSuffix(fresh[0], "-"+m.ID) {
		t.Fatalf("after one manifest the backup log holds %v, want one object naming %s", fresh, m.ID)
	}
	old := fmt.Sprintf("%016x-%s", uint64(time.Now().Add(-25*time.Hour).UnixNano()), "b0")
	if err := os.WriteFile(filepath.Join(logDir, old), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := f.r.GC(context.Background(), repo.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(); st.LogObjectsRemoved != 1 || len(got) != 1 || got[0] != fresh[0] {
		t.Fatalf("gc removed %d log objects and left %v, want the day-old one removed and %v kept", st.LogObjectsRemoved, got, fresh)
	}
}

// A blob stored twice whose copy in use is damaged: the other copy, in a pack gc would repack
// (a quarter of it is that copy, dead to the index), is the only good one. gc stops with
// nothing deleted and says to repair; after repair reads the good copy, gc keeps it and
// both backups restore.
func TestGCKeepsTheOnlyGoodCopyOfABlob(t *testing.T) {
	vol := randomBytes(71, 4*16<<10)
	f, mA, mB, _, good, _ := twoCopiesSetup(t, vol)
	ctx := context.Background()
	_, err := f.r.GC(ctx, repo.GCOptions{})
	if err == nil || !strings.Contains(err.Error(), "repair") || !strings.Contains(err.Error(), good.Pack.String()) {
		t.Fatalf("gc with the only good copy in a pack it would repack: %v", err)
	}
	if _, err := f.r.Backend().Stat(ctx, good.Pack.Key()); err != nil {
		t.Fatalf("gc deleted the pack with the good copy: %v", err)
	}
	rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.r.UseGoodCopies(ctx, rep); err != nil || n != 1 {
		t.Fatalf("UseGoodCopies: %d %v; want 1", n, err)
	}
	// gc now keeps the good copy (its repack may even store it again under the name of the
	// damaged copy's pack: packs are named by their bytes) and removes the damaged one.
	f.gc(t)
	for _, m := range []*repo.Manifest{mA, mB} {
		if got := f.restore(t, m); !bytes.Equal(got, vol) {
			t.Fatalf("backup %s differs after repair and gc", m.ID)
		}
	}
	rep, err = f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || !rep.OK() || len(rep.Notes) != 0 {
		t.Fatalf("check after repair and gc: %v %+v; want no damaged copy left", err, rep)
	}
}

// firstDataBlock returns the address of the first data block of m's block map.
func (f *fixture) firstDataBlock(t *testing.T, m *repo.Manifest) repo.Address {
	t.Helper()
	var first repo.Address
	if err := f.r.Walk(context.Background(), m.Root, m.RootLevel, map[repo.Address]struct{}{}, func(a repo.Address, bt repo.BlobType) error {
		if bt == repo.BlobData && first.IsZero() {
			first = a
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return first
}

// twoCopiesSetup backs up vol as a, makes the index forget a's first data block and backs up
// vol again as b, which stores that block a second time; then it damages the copy the index
// reads (used). good is the first copy, which the index no longer reads.
func twoCopiesSetup(t *testing.T, vol []byte) (f *fixture, mA, mB *repo.Manifest, first repo.Address, good, used repo.Location) {
	t.Helper()
	f, mA, mB, first, good, used = twoCopies(t, vol)
	f.damage(t, used)
	return f, mA, mB, first, good, used
}

// twoCopies is twoCopiesSetup without the damage: the index reads the block's second copy,
// used, and its first, good, is left in backup a's pack.
func twoCopies(t *testing.T, vol []byte) (f *fixture, mA, mB *repo.Manifest, first repo.Address, good, used repo.Location) {
	t.Helper()
	f = newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	mA = f.backup(t, "a", &memSource{data: vol}, nil)
	first = f.firstDataBlock(t, mA)
	good, ok, err := f.idx.Lookup(first)
	if err != nil || !ok {
		t.Fatalf("lookup of the first block: %v %v", ok, err)
	}
	if err := f.idx.ForgetBlobs([]repo.Address{first}); err != nil {
		t.Fatal(err)
	}
	mB = f.backup(t, "b", &memSource{data: vol}, nil)
	used, ok, err = f.idx.Lookup(first)
	if err != nil || !ok || used.Pack == good.Pack {
		t.Fatalf("the block after the second backup: %v %v %v; want a second copy outside pack %s", used, ok, err, good.Pack)
	}
	return f, mA, mB, first, good, used
}

// Many readers of an image (a mount's FUSE threads, NBD clients) on a process whose index has
// not heard of a repack elsewhere all miss at once: each follows the move, none fails because
// another reader's sync of the index was still running (or had just run) when it missed.
func TestImageConcurrentReadersFollowARepackElsewhere(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	g := f.peer(t, "g", repo.LockOptions{})
	ctx := context.Background()
	base := randomVolume(23, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	changed := append([]byte(nil), base...)
	copy(changed[:3<<20], randomVolume(24, 3<<20))
	mB := f.backup(t, "b", &memSource{data: changed}, mA)
	if _, err := g.r.Sync(ctx, false); err != nil { // g knows the packs as they were
		t.Fatal(err)
	}
	im := g.r.Image(mB)
	p := make([]byte, 4<<10)
	if _, err := im.ReadAt(p, 0); err != nil { // g's tree nodes are cached, its last sync is now
		t.Fatal(err)
	}
	if err := f.r.DeleteManifest(ctx, mA.ID); err != nil {
		t.Fatal(err)
	}
	if st := f.gc(t); st.PacksRepacked == 0 {
		t.Fatalf("gc repacked nothing: %+v", st)
	}
	// Single blocks of the moved last MiB, each by its own reader, all at once.
	var wg sync.WaitGroup
	for off := 3 << 20; off < 4<<20; off += 16 << 10 {
		wg.Go(func() {
			p := make([]byte, 4<<10)
			if _, err := im.ReadAt(p, int64(off)); err != nil {
				t.Errorf("read at %d: %v", off, err)
				return
			}
			if !bytes.Equal(p, changed[off:off+len(p)]) {
				t.Errorf("read at %d after a repack elsewhere differs from the volume", off)
			}
		})
	}
	wg.Wait()
}

// TestClaims: one process anywhere holds a claim of one operation at a time; claims of other
// operations, shared locks and gc's exclusive lock are not held up by it, nor it by them; a
// claim whose process is gone (or that went stale) is taken over.
func TestClaims(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	g := f.peer(t, "g", repo.LockOptions{Wait: 300 * time.Millisecond, StaleAfter: 2 * time.Second})
	c, err := f.r.Claim(ctx, "policy nightly")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.r.Claim(ctx, "policy nightly"); !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "claim lock of policy nightly") {
		t.Fatalf("a second claim of the same operation: %v", err)
	}
	other, err := g.r.Claim(ctx, "verify nightly")
	if err != nil {
		t.Fatalf("a claim of another operation: %v", err)
	}
	other.Unlock()
	// gc and backups neither wait for a claim nor keep one out.
	if _, err := g.r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatalf("gc while a claim is held: %v", err)
	}
	sh, err := f.r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	if other, err = g.r.Claim(ctx, "verify nightly"); err != nil {
		t.Fatalf("a claim while a backup holds a shared lock: %v", err)
	}
	other.Unlock()
	sh.Unlock()
	c.Unlock()
	c2, err := g.r.Claim(ctx, "policy nightly")
	if err != nil {
		t.Fatalf("the claim once released: %v", err)
	}
	c2.Unlock()

	// A claim of a process of this host that is gone is taken over at once; one of another
	// host once it is stale.
	host, _ := os.Hostname()
	if err := repo.WriteLockInfoForTest(f.r, repo.LockInfo{ID: "dead", Kind: repo.LockClaim, Host: host, Space: ".", PID: 1<<22 - 1, Operation: "policy nightly", Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if c2, err = g.r.Claim(ctx, "policy nightly"); err != nil {
		t.Fatalf("the claim of a process that is gone: %v", err)
	}
	c2.Unlock()
	if err := repo.WriteLockInfoForTest(f.r, repo.LockInfo{ID: "far", Kind: repo.LockClaim, Host: "elsewhere", PID: 1, Operation: "policy nightly", Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.r.Claim(ctx, "policy nightly"); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("the fresh claim of another host: %v", err)
	}
	time.Sleep(2500 * time.Millisecond)
	if c2, err = g.r.Claim(ctx, "policy nightly"); err != nil {
		t.Fatalf("the stale claim of another host: %v", err)
	}
	c2.Unlock()
}

// A restore whose backup another gateway deleted (and gc'd) after the restore read its
// manifest, and before the restore's lock, fails saying so and writes nothing: it restored
// what was left, a salvage wrote the blocks gc had removed as zeros and called the result
// salvaged, and a plain restore stopped part way with the target half overwritten.
func TestRestoreOfABackupDeletedElsewhereWritesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	m := f.backup(t, "x", &memSource{data: randomVolume(11, 1<<20)}, nil)
	other := f.peer(t, "other", repo.LockOptions{})
	if err := f.r.DeleteManifest(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	f.gc(t)
	for _, salvage := range []bool{false, true} {
		tgt := &memTarget{data: bytes.Repeat([]byte{0xAA}, int(m.Size))}
		o := repo.RestoreOptions{}
		if salvage {
			o.Lost = func(start, end int64, err error) {}
		}
		err := other.r.Restore(ctx, m, tgt, o)
		if !errors.Is(err, repo.ErrManifestDeleted) {
			t.Errorf("restore (salvage %v) of a backup deleted elsewhere: %v, want it to say the backup was deleted", salvage, err)
		}
		if !bytes.Equal(tgt.data, bytes.Repeat([]byte{0xAA}, int(m.Size))) {
			t.Errorf("restore (salvage %v) of a backup deleted elsewhere wrote to its target", salvage)
		}
	}
}

// dropIndexObjects deletes every pack index object of f's repository, as a gc elsewhere that
// deleted doomed packs' index objects and was killed before the packs leaves them.
func (f *fixture) dropIndexObjects(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	if err := f.r.Backend().List(ctx, "packindex/", func(oi backend.ObjectInfo) error {
		return f.r.Backend().Delete(ctx, oi.Key)
	}); err != nil {
		t.Fatal(err)
	}
}

// reindex runs r's Reindex under a shared lock, as rebuild-index does.
func reindex(t *testing.T, r *repo.Repository) (repo.SyncStats, error) {
	t.Helper()
	lk, err := r.Lock(context.Background(), repo.LockShared, "rebuild-index")
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	return r.Reindex(context.Background(), lk)
}

// A pack that has no index object (a gc doomed it, deleted its index objects and was killed
// before the pack) and that the next gc keeps (it breaks that gc's stale lock, and keeps what a
// broken lock's holder may have written) gets an index object before the index locates its
// blobs. A backup that then reuses them commits a manifest whose every pack has one, so check
// is clean and another index locates its blocks. Before (found by the two-gateway crash trials,
// seed 1796468228252032841), gc learned the pack from its trailer alone: the backup that
// reused it was one that other gateways could not restore, and check reported the pack.
func TestGCGivesAPackItLearnsFromItsTrailerAnIndexObject(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	data := randomVolume(41, 2<<20)
	m1 := f.backup(t, "first", &memSource{data: data}, nil)
	if err := f.r.DeleteManifest(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	// The interrupted gc: the pack's index objects are gone, the pack and the gc's lock stay.
	f.dropIndexObjects(t)
	if err := repo.WriteLockInfoForTest(f.r, repo.LockInfo{ID: "killed-gc", Kind: repo.LockExclusive, Host: "elsewhere",
		Space: "another-boot/pid:[1]", PID: 1, Operation: "gc", Created: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	g := f.peer(t, "g", repo.LockOptions{Wait: 10 * time.Second, StaleAfter: time.Second})
	if st := g.gc(t); st.LocksBroken != 1 || st.PacksKept == 0 || st.PacksDeleted != 0 {
		t.Fatalf("gc after the interrupted one: %+v; want its lock broken and its pack kept", st)
	}
	m2 := g.backup(t, "second", &memSource{data: data}, nil) // the same data: its blobs reused
	g.mustCheck(t)
	h := f.peer(t, "h", repo.LockOptions{})
	if got := h.restore(t, m2); !bytes.Equal(got, data) {
		t.Fatal("the backup that reused the kept pack's blobs restores different bytes through another index")
	}
}

// A pack the index already knows and the backend holds without an index object (the index
// learned it before a gc, killed since, deleted its index objects) gets one from the next gc
// or rebuild-index, so a backup that reused its blobs meanwhile becomes one that every index
// locates and check passes. Before, the full sync gave an index object only to packs it
// learned: such a pack stayed without one until 'cairn repo repair', and no other index could
// restore the backup.
func TestGCGivesAKnownPackWithoutAnIndexObjectOne(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name string
		run  func(t *testing.T, f *fixture)
	}{
		{"gc", func(t *testing.T, f *fixture) {
			if st := f.gc(t); st.PacksDeleted != 0 {
				t.Fatalf("gc: %+v; want the reused packs kept", st)
			}
		}},
		{"rebuild-index", func(t *testing.T, f *fixture) {
			if _, err := reindex(t, f.r); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{})
			data := randomVolume(43, 2<<20)
			m1 := f.backup(t, "first", &memSource{data: data}, nil)
			if err := f.r.DeleteManifest(ctx, m1.ID); err != nil {
				t.Fatal(err)
			}
			// The interrupted gc elsewhere: the packs' index objects are gone, the packs stay,
			// and this index, which learned them before, still locates their blobs.
			f.dropIndexObjects(t)
			m2 := f.backup(t, "second", &memSource{data: data}, nil) // its blobs reused
			h := f.peer(t, "h", repo.LockOptions{})
			tgt := &memTarget{data: make([]byte, m2.Size)}
			if err := h.r.Restore(ctx, m2, tgt, repo.RestoreOptions{}); err == nil {
				t.Fatal("another index restored a backup whose packs have no index object: the test staged nothing")
			}
			c.run(t, f)
			f.mustCheck(t)
			if got := f.peer(t, "after", repo.LockOptions{}).restore(t, m2); !bytes.Equal(got, data) {
				t.Fatal("the backup that reused the pack's blobs restores different bytes through a new index")
			}
			if got := h.restore(t, m2); !bytes.Equal(got, data) {
				t.Fatal("the backup that reused the pack's blobs restores different bytes through the other index")
			}
		})
	}
}

// A read-only repository locates the blobs of a pack without an index object, learned from its
// trailer (it stores no backup that could reuse them), but its index outlives it: --read-only
// on a host whose state directory is writable opens the gateway's own index. A writable
// repository that opens that index afterwards must not reuse those blobs, or its next backup
// reaches a pack that no other index can learn. Before, it did: check reported the pack and
// another index could not restore the backup until a gc or 'repo repair'.
func TestAReadOnlyIndexLendsNoPackWithoutAnIndexObject(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	data := randomVolume(47, 2<<20)
	m1 := f.backup(t, "first", &memSource{data: data}, nil)
	if err := f.r.DeleteManifest(ctx, m1.ID); err != nil {
		t.Fatal(err)
	}
	// An interrupted gc: the pack's index objects are gone, the pack stays.
	f.dropIndexObjects(t)
	open := func(readOnly bool) *fixture {
		be, err := local.Open(filepath.Join(f.dir, "repo"))
		if err != nil {
			t.Fatal(err)
		}
		return fixtureOn(t, be, f.dir, "index-shared", repo.Options{ChunkCacheBytes: 8 << 20, ReadOnly: readOnly})
	}
	ro := open(true)
	if st, err := reindex(t, ro.r); err != nil || st.Packs == 0 {
		t.Fatalf("read-only rebuild-index: %+v, %v; want the pack learned from its trailer", st, err)
	}
	if err := ro.idx.Close(); err != nil {
		t.Fatal(err)
	}
	w := open(false)
	m2 := w.backup(t, "second", &memSource{data: data}, nil)
	w.mustCheck(t)
	if got := f.peer(t, "other", repo.LockOptions{}).restore(t, m2); !bytes.Equal(got, data) {
		t.Fatal("the backup restores different bytes through another index")
	}
	if got := w.restore(t, m2); !bytes.Equal(got, data) {
		t.Fatal("the backup restores different bytes through the index it was made with")
	}
}

// A gc that stalls past --lock-stale after it found a pack without an index object and before
// it stores one (the trailer read in between) stops with its lock lost and stores nothing: a
// gc that broke its lock meanwhile may have deleted the pack, and an index object must never
// name a pack that is gone. The next gc gives the pack its index object.
func TestGCStoresNoIndexObjectOnceItsLockIsLost(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	be := newStopGC(t, dir, repo.InitOptions{})
	f := fixtureOn(t, be, dir, "index", repo.Options{ChunkCacheBytes: 8 << 20, Lock: repo.LockOptions{StaleAfter: time.Second}})
	data := randomVolume(53, 2<<20)
	m := f.backup(t, "a", &memSource{data: data}, nil)
	indexObjects := func() []string {
		var keys []string
		if err := be.List(ctx, "packindex/", func(oi backend.ObjectInfo) error {
			keys = append(keys, oi.Key)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	f.dropIndexObjects(t) // an interrupted gc elsewhere, as in TestGCGivesAKnownPackWithoutAnIndexObjectOne
	be.stallTrailer.Store(int64(1500 * time.Millisecond))
	if _, err := f.r.GC(ctx, repo.GCOptions{}); !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("gc that stalled 1.5 s with --lock-stale 1s before an index object: %v, want its lock lost", err)
	}
	if keys := indexObjects(); len(keys) != 0 {
		t.Fatalf("the stalled gc stored index objects after its lock was lost: %v", keys)
	}
	if st := f.gc(t); st.PacksDeleted != 0 {
		t.Fatalf("the next gc: %+v, want nothing deleted", st)
	}
	f.mustCheck(t)
	if got := f.peer(t, "other", repo.LockOptions{}).restore(t, m); !bytes.Equal(got, data) {
		t.Fatal("the backup restores different bytes through another index after the gcs")
	}
}

// A gc on a local repository that has no room left for the packs a repack would write (it
// keeps local.Reserve free) still deletes the unreachable packs, and leaves the mostly dead
// ones as they are for a later run: that frees what a full repository needs. Before, the
// refused repack stopped gc before it deleted anything, so a full repository could not be
// freed by gc at all.
func TestGCFreesSpaceWhenARepackDoesNotFit(t *testing.T) {
	ctx := context.Background()
	fs := testutil.MountTmpfs(t, 256<<20)
	be, err := local.Open(filepath.Join(fs, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() }) // its open packs, before the unmount
	if _, err := repo.Init(ctx, be, repo.InitOptions{Compression: repo.CompressNone}); err != nil {
		t.Fatal(err)
	}
	f := fixtureOn(t, be, t.TempDir(), "index", repo.Options{ChunkCacheBytes: 8 << 20})
	a := randomBytes(71, 24<<20)
	f.backup(t, "a", &memSource{data: a}, nil)
	b := append(randomBytes(72, 20<<20), a[20<<20:]...) // shares a's last 4 MiB
	mb := f.backup(t, "b", &memSource{data: b}, nil)
	if err := f.r.DeleteManifest(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	before := packFiles(fs)
	free := testutil.FillFS(t, fs, 66<<20) // room for no pack beyond the 64 MiB reserve
	st, err := f.r.GC(ctx, repo.GCOptions{})
	if err != nil {
		t.Fatalf("gc with no room to repack: %v; want the unreachable packs deleted all the same", err)
	}
	if st.PacksDeleted == 0 || st.PacksNotRepacked == 0 || st.PacksRepacked != 0 {
		t.Fatalf("gc with no room to repack: %+v; want unreachable packs deleted and the mostly dead one left", st)
	}
	if after := packFiles(fs); len(after) >= len(before) {
		t.Fatalf("packs before gc %d, after %d: nothing was freed", len(before), len(after))
	}
	f.mustCheck(t)
	if got := f.restore(t, mb); !bytes.Equal(got, b) {
		t.Fatal("the backup that shares the pack left unrepacked restores different bytes")
	}
	free()
	if st := f.gc(t); st.PacksRepacked == 0 {
		t.Fatalf("gc once there is room: %+v; want the pack left last time repacked", st)
	}
	f.mustCheck(t)
	if got := f.restore(t, mb); !bytes.Equal(got, b) {
		t.Fatal("the backup restores different bytes after the repack")
	}
}

// TestLocksAtJudgesByTheClockItIsGiven: LocksAt lists the locks without writing a probe, so
// a metrics scrape writes nothing; a live lock is not stale by the store's time now (given, or
// its own object's time when the one given is earlier), and is stale by a time past its
// staleness; the listing leaves no object behind.
func TestLocksAtJudgesByTheClockItIsGiven(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	lk, err := f.r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	lockObjects := func() int {
		es, err := os.ReadDir(filepath.Join(f.dir, "repo", "locks"))
		if err != nil {
			t.Fatal(err)
		}
		return len(es)
	}
	for _, c := range []struct {
		at    time.Time
		stale bool
	}{
		{time.Time{}, false},
		{time.Now().Add(-time.Hour), false},
		{time.Now(), false},
		{time.Now().Add(repo.DefaultLockStale + time.Minute), true},
	} {
		ls, err := f.r.LocksAt(ctx, c.at)
		if err != nil {
			t.Fatal(err)
		}
		if len(ls) != 1 || ls[0].ID != lk.Info().ID || ls[0].Stale != c.stale {
			t.Fatalf("LocksAt(%v): %+v, want the backup's lock, stale %v", c.at, ls, c.stale)
		}
		if n := lockObjects(); n != 1 {
			t.Fatalf("LocksAt(%v) left %d lock objects, want the one lock", c.at, n)
		}
	}
}
