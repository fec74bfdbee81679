package repo_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// manyPacks returns a fixture whose backups are spread over at least min packs (every backup
// seals a pack of its own).
func manyPacks(t *testing.T, min int) *fixture {
	t.Helper()
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	for i := range min {
		f.backup(t, "b"+itoa(i), &memSource{data: randomVolume(uint64(100+i), 256<<10)}, nil)
	}
	return f
}

func TestCheckSample(t *testing.T) {
	f := manyPacks(t, 12)
	ctx := context.Background()
	full, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil || !full.OK() {
		t.Fatalf("check --read-data: %v %+v", err, full)
	}
	packs := full.Packs
	if packs < 12 || full.PacksRead != packs || full.SamplePercent != 0 {
		t.Fatalf("check --read-data read %d of %d packs (sample %v), want all of at least 12", full.PacksRead, packs, full.SamplePercent)
	}
	for _, tc := range []struct {
		name    string
		percent float64
		want    int // packs read
	}{
		{"100 % reads every pack", 100, packs},
		{"a small share reads one pack", 1, 1},
		{"2.5 % of a dozen packs is one", 2.5, 1},
		{"a third", 100.0 / 3, int(math.Ceil(float64(packs) / 3))},
		{"99 % rounds up", 99, packs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true, SamplePercent: tc.percent})
			if err != nil || !rep.OK() {
				t.Fatalf("check: %v %+v", err, rep)
			}
			if rep.PacksRead != tc.want {
				t.Errorf("read %d packs, want %d", rep.PacksRead, tc.want)
			}
			if tc.want < packs && (rep.BytesRead <= 0 || rep.BytesRead >= full.BytesRead || rep.Blobs >= full.Blobs) {
				t.Errorf("a sample read %d bytes and %d blobs, all packs %d and %d", rep.BytesRead, rep.Blobs, full.BytesRead, full.Blobs)
			}
			if want := tc.percent; tc.percent == 100 && rep.SamplePercent != 0 || tc.percent < 100 && rep.SamplePercent != want {
				t.Errorf("report says a sample of %v %%, asked for %v", rep.SamplePercent, tc.percent)
			}
			if rep.Backups != full.Backups || rep.Packs != packs {
				t.Errorf("a sample checked %d backups and %d packs, the full check %d and %d", rep.Backups, rep.Packs, full.Backups, full.Packs)
			}
		})
	}
	for _, p := range []float64{-1, 100.5, math.NaN(), math.Inf(1)} {
		if _, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true, SamplePercent: p}); err == nil {
			t.Errorf("a sample of %v %% was accepted", p)
		}
	}
}

// A sampled check that reads a damaged pack says so, and which backup it costs.
func TestCheckSampleFindsDamage(t *testing.T) {
	f := manyPacks(t, 4)
	packs, err := filepath.Glob(filepath.Join(f.dir, "repo", "packs", "*", "*"))
	if err != nil || len(packs) < 4 {
		t.Fatalf("packs: %v %v", packs, err)
	}
	b, err := os.ReadFile(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x40
	if err := os.WriteFile(packs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := f.r.Check(context.Background(), repo.CheckOptions{ReadData: true, SamplePercent: 100})
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Classes[repo.ProblemDamaged] == 0 || len(rep.Lost) != 1 {
		t.Fatalf("a check of every pack missed a damaged one: %+v", rep)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), repo.ProblemDamaged) {
		t.Fatalf("problems do not say damaged: %q", rep.Problems)
	}
}

// leafOf returns where a tree node of m below its root is stored, found through a peer so that
// f's own node cache stays as it was.
func leafOf(t *testing.T, f *fixture, m *repo.Manifest) repo.Location {
	t.Helper()
	p := f.peer(t, "walker", repo.LockOptions{})
	var leaf repo.Address
	if err := p.r.Walk(context.Background(), m.Root, m.RootLevel, map[repo.Address]struct{}{}, func(a repo.Address, bt repo.BlobType) error {
		if bt == repo.BlobTree && a != m.Root && leaf.IsZero() {
			leaf = a
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	loc, ok, err := p.idx.Lookup(leaf)
	if err != nil || !ok || leaf.IsZero() {
		t.Fatalf("no leaf of backup %s below its root (%v, %v)", m.ID, ok, err)
	}
	return loc
}

// A check in a process that read the backup's block map before (a gc's mark here; a restore,
// a mount, the gateway's scheduled verify) must see a tree node damaged since: it reads every
// node from the backend, not from the node cache. Before, only --read-data of the node's pack
// found it (found by review); plain check and a sample that missed the pack said no problem.
func TestCheckSeesATreeNodeDamagedAfterItWasCached(t *testing.T) {
	for _, o := range []repo.CheckOptions{{}, {ReadData: true, SamplePercent: 1}} {
		f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
		m := f.backup(t, "a", &memSource{data: randomVolume(7, 8<<20)}, nil)
		for i := range 30 { // packs enough that a 1 % sample may miss the node's
			f.backup(t, "b"+itoa(i), &memSource{data: randomVolume(uint64(100+i), 64<<10)}, nil)
		}
		f.gc(t) // walks every tree node through the node cache
		f.damage(t, leafOf(t, f, m))
		rep, err := f.r.Check(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() {
			t.Fatalf("check %+v found no problem with a damaged tree node: %+v", o, rep)
		}
	}
}

// blobsOf returns the distinct tree nodes and data blocks of m's block map in the order a
// depth-first walk meets them (for a volume of distinct blocks, data block i of the volume is
// data[i]), read through a peer so that f's own node cache stays as it was.
func blobsOf(t *testing.T, f *fixture, m *repo.Manifest) (trees, data []repo.Address) {
	t.Helper()
	p := f.peer(t, "lister", repo.LockOptions{})
	if err := p.r.Walk(context.Background(), m.Root, m.RootLevel, map[repo.Address]struct{}{}, func(a repo.Address, bt repo.BlobType) error {
		if bt == repo.BlobTree {
			trees = append(trees, a)
		} else {
			data = append(data, a)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return trees, data
}

// A damaged or lost block map part that several backups share (a leaf, or an interior node
// above a damaged leaf) costs every one of them, each at its own place in its volume: a full
// backup a, an incremental b of it, and a full backup c of another volume that holds a's first
// part further on. Check names all three with their own byte ranges. Before, it walked a
// shared tree node once for all backups and named only the first that reached it (found by
// review): b and c passed as undamaged, and 'repo repair --forget' refused to forget them.
func TestCheckNamesEveryBackupOfASharedDamagedBlock(t *testing.T) {
	const bs = repo.DefaultBlockSize
	const leaf = repo.LeafFanout * bs // 4 MiB of volume a leaf covers
	const half = 1024 * leaf          // 4 GiB: what one child of a level-2 root covers
	for _, c := range []struct {
		name     string
		readData bool
		sparse   bool // 8 GiB sparse volumes whose root is level 2, not 8 MiB ones of level 1
		// lose damages or loses a part of a's block map in its first 4 MiB (its first half
		// when sparse), given a's tree nodes and data blocks in walk order, and returns the
		// bytes of a's volume it costs.
		lose func(t *testing.T, f *fixture, trees, data []repo.Address) (start, end int64)
	}{
		{"a damaged data block in a shared leaf", true, false, func(t *testing.T, f *fixture, _, data []repo.Address) (int64, int64) {
			f.damage(t, lookup(t, f, data[5]))
			return 5 * bs, 6 * bs
		}},
		{"a data block the index forgot, in a shared leaf", false, false, func(t *testing.T, f *fixture, _, data []repo.Address) (int64, int64) {
			if err := f.idx.ForgetBlobs([]repo.Address{data[5]}); err != nil {
				t.Fatal(err)
			}
			return 5 * bs, 6 * bs
		}},
		{"a damaged leaf below a shared interior node", false, true, func(t *testing.T, f *fixture, trees, _ []repo.Address) (int64, int64) {
			f.damage(t, lookup(t, f, trees[2])) // root, its first child, that child's first leaf
			return 0, leaf
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
			// The first part of a is its first leaf (8 MiB volumes) or its first half (sparse
			// ones): c holds the same bytes one part further on, so its block map holds the
			// same subtree there.
			first, other := randomBytes(61, leaf), randomBytes(62, leaf)
			part := int64(leaf)
			var srcA, srcB, srcC repo.Source
			if c.sparse {
				part = half
				srcA = &sparseSource{size: 2 * half, data: map[int64][]byte{0: first, half: other}}
				srcB = &sparseSource{size: 2 * half, data: map[int64][]byte{0: first, half: randomBytes(63, bs)}}
				srcC = &sparseSource{size: 2 * half, data: map[int64][]byte{0: other, half: first}}
			} else {
				srcA = &memSource{data: append(append([]byte(nil), first...), other...)}
				srcB = &memSource{data: append(append(append([]byte(nil), first...), other[:leaf-bs]...), randomBytes(63, bs)...)}
				srcC = &memSource{data: append(append([]byte(nil), other...), first...)}
			}
			mA := f.backup(t, "a", srcA, nil)
			f.backup(t, "b", srcB, mA)
			f.backup(t, "c", srcC, nil)
			trees, data := blobsOf(t, f, mA)
			start, end := c.lose(t, f, trees, data)
			rep, err := f.r.Check(context.Background(), repo.CheckOptions{ReadData: c.readData})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][][2]int64{
				"a": {{start, end}},
				"b": {{start, end}},
				"c": {{part + start, part + end}},
			}
			if !reflect.DeepEqual(rep.Lost, want) {
				t.Fatalf("check says the backups lost %v, want %v\nproblems: %q", rep.Lost, want, rep.Problems)
			}
		})
	}
}

// lookup returns where the index of f locates a.
func lookup(t *testing.T, f *fixture, a repo.Address) repo.Location {
	t.Helper()
	loc, ok, err := f.idx.Lookup(a)
	if err != nil || !ok {
		t.Fatalf("blob %s is not indexed (%v, %v)", a.Short(), ok, err)
	}
	return loc
}

// countingBackend counts the reads of pack ranges (how a check without --read-data reads tree
// nodes). It hides the local backend's RangeReader, so every such read is a GetRange.
type countingBackend struct {
	backend.Backend
	packReads atomic.Int64
}

func (b *countingBackend) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	if strings.HasPrefix(key, "packs/") {
		b.packReads.Add(1)
	}
	return b.Backend.GetRange(ctx, key, offset, length)
}

// A clean block map that many backups share is still read once by a check, however many of
// them reach it: only a subtree with a problem is walked again for each backup.
func TestCheckReadsASharedCleanBlockMapOnce(t *testing.T) {
	dir := t.TempDir()
	lb, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	be := &countingBackend{Backend: lb}
	if _, err := repo.Init(context.Background(), be, repo.InitOptions{Compression: repo.CompressNone}); err != nil {
		t.Fatal(err)
	}
	f := fixtureOn(t, be, dir, "index", repo.Options{ChunkCacheBytes: 8 << 20})
	vol := randomBytes(71, 2*repo.LeafFanout*repo.DefaultBlockSize) // a root and two leaves
	var m *repo.Manifest
	for i := range 4 {
		m = f.backup(t, "b"+itoa(i), &memSource{data: vol}, m)
	}
	trees, _ := blobsOf(t, f, m)
	be.packReads.Store(0)
	rep, err := f.r.Check(context.Background(), repo.CheckOptions{})
	if err != nil || !rep.OK() || rep.Backups != 4 {
		t.Fatalf("check: %v %+v", err, rep)
	}
	if got := be.packReads.Load(); got != int64(len(trees)) {
		t.Fatalf("check of 4 backups sharing %d tree nodes read %d of them, want each once", len(trees), got)
	}
}

// A blob stored twice (here: again after the index forgot it) whose indexed copy is damaged
// is not lost while the other copy verifies. Check names no backup for it and says where the
// good copy is; UseGoodCopies (repo repair) points the index there, and both backups restore.
func TestCheckAndRepairUseAGoodCopyInAnotherPack(t *testing.T) {
	vol := randomBytes(61, 1<<20)
	f, mA, mB, first, old, _ := twoCopiesSetup(t, vol)
	ctx := context.Background()

	rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Lost) != 0 || len(rep.LostData()) != 0 {
		t.Fatalf("check counts lost %v (%d blocks) though pack %s holds a good copy", rep.Lost, len(rep.LostData()), old.Pack)
	}
	if rep.Classes[repo.ProblemIndex] != 1 || !strings.Contains(strings.Join(rep.Problems, "\n"), old.Pack.String()) {
		t.Fatalf("check does not name the good copy in pack %s: %v", old.Pack, rep.Problems)
	}
	n, err := f.r.UseGoodCopies(ctx, rep)
	if err != nil || n != 1 {
		t.Fatalf("UseGoodCopies: %d %v; want 1", n, err)
	}
	if loc, ok, err := f.idx.Lookup(first); err != nil || !ok || loc != old {
		t.Fatalf("the block after repair: %v %v %v; want %v", loc, ok, err, old)
	}
	for _, m := range []*repo.Manifest{mA, mB} {
		if got := f.restore(t, m); sha256.Sum256(got) != sha256.Sum256(vol) {
			t.Fatalf("backup %s restores a different sha256 after repair", m.ID)
		}
	}
	rep, err = f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("check after repair: %v", rep.Problems)
	}
}

// TestRepairUsesACopyOfABlobWhosePackIsMissing: a blob stored twice whose indexed pack is gone
// from the backend is not lost while the other copy verifies. Check names the good copy as an
// index problem and no backup as losing bytes, with or without reading the data, and repair
// points the index at it. Before, only a damaged copy was looked for elsewhere: repair forgot
// the blob, and with --forget-damaged both backups that needed it.
func TestRepairUsesACopyOfABlobWhosePackIsMissing(t *testing.T) {
	vol := randomBytes(62, 1<<20)
	f, mA, mB, first, good, used := twoCopies(t, vol)
	ctx := context.Background()
	if err := os.Remove(filepath.Join(f.dir, "repo", filepath.FromSlash(used.Pack.Key()))); err != nil {
		t.Fatal(err)
	}
	for _, readData := range []bool{false, true} {
		rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: readData})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Lost) != 0 || len(rep.LostData()) != 0 || len(rep.LostNodes()) != 0 {
			t.Fatalf("check (read data %v) counts lost %v (%d blocks) though pack %s holds a good copy: %v", readData, rep.Lost, len(rep.LostData()), good.Pack, rep.Problems)
		}
		if rep.Classes[repo.ProblemIndex] == 0 || !strings.Contains(strings.Join(rep.Problems, "\n"), good.Pack.String()) {
			t.Fatalf("check (read data %v) does not name the good copy in pack %s: %v", readData, good.Pack, rep.Problems)
		}
		if !readData {
			continue
		}
		if n, err := f.r.UseGoodCopies(ctx, rep); err != nil || n != 1 {
			t.Fatalf("UseGoodCopies: %d %v; want 1", n, err)
		}
	}
	if loc, ok, err := f.idx.Lookup(first); err != nil || !ok || loc != good {
		t.Fatalf("the block after repair: %v %v %v; want %v", loc, ok, err, good)
	}
	for _, m := range []*repo.Manifest{mA, mB} {
		if got := f.restore(t, m); sha256.Sum256(got) != sha256.Sum256(vol) {
			t.Fatalf("backup %s restores a different sha256 after repair", m.ID)
		}
	}
	rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Lost) != 0 || rep.Classes[repo.ProblemIndex] != 0 {
		t.Fatalf("check after repair: %v", rep.Problems)
	}
}

// A metadata object (a volume's record, a snapshot, a quota, a delete's tombstone) with a
// flipped byte is damage like any other: rebuild-index skips it, so what it held is lost with
// the index. Check must not call such a repository clean.
func TestCheckFindsADamagedMetadataObject(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	f.backup(t, "b1", &memSource{data: randomVolume(1, 256<<10)}, nil)
	if err := f.r.PutMeta(ctx, "volumes", "vol-1", map[string]string{"id": "vol-1", "name": "db"}); err != nil {
		t.Fatal(err)
	}
	if rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || !rep.OK() {
		t.Fatalf("check before the damage: %v %+v", err, rep)
	}
	matches, err := filepath.Glob(filepath.Join(f.dir, "repo", "meta", "volumes", "*"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("volume records on disk: %v %v, want one", matches, err)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x5a
	if err := os.WriteFile(matches[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, readData := range []bool{false, true} {
		rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: readData})
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() || rep.Classes[repo.ProblemDamaged] == 0 {
			t.Errorf("check (read data %v) of a repository whose volume record has a flipped byte: problems %q, want it damaged", readData, rep.Problems)
		}
	}
}

// A backup that commits while a check runs (both hold shared locks) is not reported lost: its
// new packs were stored after the check listed the packs, and the check listed the manifests
// after that, so it walked the new backup into packs it took for missing, and repair forgot
// the backup's blobs (or, with --forget-damaged, the backup). Its packs, indexed by the
// check's own index after the listing, are not "missing from the backend" either.
func TestABackupCommittedDuringACheckIsNotLost(t *testing.T) {
	for _, here := range []bool{false, true} {
		f := newFixture(t, repo.InitOptions{})
		ctx := context.Background()
		f.backup(t, "a", &memSource{data: randomVolume(1, 1<<20)}, nil)
		other := f.peer(t, "other", repo.LockOptions{})
		var g *fixture
		w := &afterListing{prefix: "packs/", hook: func() {
			writer := other
			if here {
				writer = g
			}
			writer.backup(t, "b", &memSource{data: randomVolume(2, 1<<20)}, nil)
		}}
		g = f.wrapped(t, fmt.Sprintf("index-g-%v", here), repo.Options{}, func(be backend.Backend) backend.Backend { w.Backend = be; return w })
		rep, err := g.r.Check(ctx, repo.CheckOptions{ReadData: true})
		if w.hook != nil {
			t.Fatal("the backup did not run during the check")
		}
		if err != nil || !rep.OK() || len(rep.Lost) != 0 {
			t.Fatalf("check while a backup (through this index: %v) committed: %v %+v; want no problem", here, err, rep)
		}
		f.mustCheck(t)
	}
}

// flakyPackRead corrupts the first whole-pack read (a byte in its middle) and fails the read
// after it as unavailable: a read that went wrong on the way, then an outage.
type flakyPackRead struct {
	backend.Backend
	mu              sync.Mutex
	corrupted, done bool
}

func (f *flakyPackRead) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !strings.HasPrefix(key, "packs/") || f.done {
		return f.Backend.GetRange(ctx, key, off, n)
	}
	if f.corrupted {
		f.done = true
		return nil, fmt.Errorf("get %s: %w", key, backend.ErrUnavailable)
	}
	data, err := f.Backend.GetRange(ctx, key, off, n)
	if err == nil && off == 0 && n > 256<<10 {
		data[len(data)/2] ^= 1
		f.corrupted = true
	}
	return data, err
}

// A blob that fails to open in check's read of its pack, and whose second read cannot be made
// (an outage), stops the check as unavailable: one bad read is no damage. It was reported
// damaged, and repair forgot the sound blob.
func TestCheckStopsWhenTheSecondReadOfABlobCannotBeMade(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	f.backup(t, "a", &memSource{data: randomVolume(3, 2<<20)}, nil)
	w := &flakyPackRead{}
	g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { w.Backend = be; return w })
	rep, err := g.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if !w.done {
		t.Fatalf("the set-up is wrong: no second read was made (%v, %+v)", err, rep)
	}
	if !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("check whose second read of a blob met an outage: %v, %+v; want it unavailable, no damage", err, rep)
	}
	f.mustCheck(t)
}
