package repo_test

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/repo"
)

// rangeList is changed-block tracking's answer as a sorted list of ranges.
type rangeList [][2]int64

func (l rangeList) NextChange(off int64) (int64, int64, error) {
	i := sort.Search(len(l), func(i int) bool { return l[i][1] > off })
	if i == len(l) {
		return 0, 0, io.EOF
	}
	return max(l[i][0], off), l[i][1], nil
}

// countingSource counts the bytes read from it.
type countingSource struct {
	*memSource
	read atomic.Int64
}

func (c *countingSource) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.memSource.ReadAt(p, off)
	c.read.Add(int64(n))
	return n, err
}

func (f *fixture) backupWith(t *testing.T, id string, src repo.Source, o repo.WriteOptions) *repo.Manifest {
	t.Helper()
	var m *repo.Manifest
	_, err := f.r.Write(context.Background(), src, o, func(res repo.WriteResult) error {
		m = &repo.Manifest{ID: id, VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
		return f.r.PutManifest(context.Background(), m)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// An incremental told which ranges changed reads only those (rounded out to blocks) and makes
// the very block map an incremental that reads everything makes.
func TestIncrementalReadsOnlyChanges(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	const size = 40<<20 + 12345 // several leaves, a short last block
	src := &memSource{data: randomVolume(3, size), holes: [][2]int64{{8 << 20, 12 << 20}}}
	clear(src.data[8<<20 : 12<<20])
	full := f.backup(t, "full", src, nil)
	if full.Stats.ReadBytes == 0 || full.Stats.ReadBytes > size-4<<20 {
		t.Fatalf("full backup read %d bytes of %d with a 4 MiB hole", full.Stats.ReadBytes, size)
	}

	rng := rand.New(rand.NewPCG(5, 5))
	var changes rangeList
	changed := int64(0)
	write := func(off, n int64, zero bool) {
		for j := off; j < off+n; j++ {
			if zero {
				src.data[j] = 0
			} else {
				src.data[j] = byte(rng.Uint32())
			}
		}
		changes = append(changes, [2]int64{off, off + n})
		changed += n
	}
	for range 24 {
		n := int64(4096 + rng.IntN(60<<10))
		off := rng.Int64N(size - n)
		if off+n > 8<<20 && off < 12<<20 {
			off += 4 << 20 // the hole stays a hole, but for the write below
		}
		write(off, n, false)
	}
	write(9<<20, 5000, false) // into the hole
	src.holes = [][2]int64{{8 << 20, 9 << 20}, {9<<20 + 8192, 12 << 20}}
	write(20<<20, 1<<20, true)  // zeros where data was: holes now
	write(size-100, 100, false) // the short last block
	sort.Slice(changes, func(i, j int) bool { return changes[i][0] < changes[j][0] })
	merged := rangeList{}
	for _, c := range changes {
		if n := len(merged); n > 0 && c[0] <= merged[n-1][1] {
			merged[n-1][1] = max(merged[n-1][1], c[1])
			continue
		}
		merged = append(merged, c)
	}

	cs := &countingSource{memSource: src}
	tracked := f.backupWith(t, "tracked", cs, repo.WriteOptions{Parent: full.Parent(), Changes: merged})
	untracked := f.backup(t, "untracked", src, full)
	if tracked.Root != untracked.Root {
		t.Fatal("the tracked incremental's block map differs from the untracked one's")
	}
	if tracked.Stats.DataBlocks != untracked.Stats.DataBlocks || tracked.Stats.ChangedBlocks != untracked.Stats.ChangedBlocks {
		t.Errorf("tracked stats %+v, untracked %+v: data and changed blocks differ", tracked.Stats, untracked.Stats)
	}
	if got := cs.read.Load(); got != tracked.Stats.ReadBytes {
		t.Errorf("the source served %d bytes, stats say %d were read", got, tracked.Stats.ReadBytes)
	}
	if tracked.Stats.ReadBytes > 3*changed || tracked.Stats.ReadBytes < changed-1<<20 {
		t.Errorf("tracked incremental read %d bytes for %d changed", tracked.Stats.ReadBytes, changed)
	}
	t.Logf("changed %d bytes; tracked read %d, untracked read %d", changed, tracked.Stats.ReadBytes, untracked.Stats.ReadBytes)
	if got := f.restore(t, tracked); !bytes.Equal(got, src.data) {
		for i := range got {
			if got[i] != src.data[i] {
				t.Fatalf("tracked incremental restores other bytes from offset %d (%x, want %x)", i, got[i], src.data[i])
			}
		}
	}

	// Nothing changed: nothing read, the parent's root again.
	cs = &countingSource{memSource: src}
	same := f.backupWith(t, "same", cs, repo.WriteOptions{Parent: tracked.Parent(), Changes: rangeList{}})
	if same.Root != tracked.Root || cs.read.Load() != 0 || same.Stats.NewBlobs != 0 || same.Stats.DataBlocks != tracked.Stats.DataBlocks {
		t.Fatalf("unchanged tracked incremental: root equal %v, read %d, new blobs %d, data blocks %d want %d",
			same.Root == tracked.Root, cs.read.Load(), same.Stats.NewBlobs, same.Stats.DataBlocks, tracked.Stats.DataBlocks)
	}

	// The spot check finds a block the tracking missed, and passes the ones it reported.
	before := append([]byte(nil), src.data[30<<20:30<<20+10]...)
	copy(src.data[30<<20:], "missed!!!!")
	differ, read, err := f.r.DifferFromParent(context.Background(), src, same.Parent(), []int64{0, 30 << 20 / (16 << 10), 9 << 20 / (16 << 10), 10 << 20 / (16 << 10)})
	if err != nil {
		t.Fatal(err)
	}
	if len(differ) != 1 || differ[0] != 30<<20/(16<<10) || read != 4*16<<10 {
		t.Fatalf("DifferFromParent = %v, %d bytes read; want the one block written behind the tracking's back", differ, read)
	}
	copy(src.data[30<<20:], before)

	// More blocks than are checked at once: every one is read, and the differing ones come
	// back in the order asked, whatever order their checks end in.
	var probes, want []int64
	for i := int64(0); i < 40; i++ {
		b := (39 - i) * 50 // descending, spread over the volume
		probes = append(probes, b)
		if i%7 == 3 {
			src.data[b*16<<10] ^= 0xff
			want = append(want, b)
		}
	}
	differ, read, err = f.r.DifferFromParent(context.Background(), src, same.Parent(), probes)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(differ, want) || read != int64(len(probes))*16<<10 {
		t.Fatalf("DifferFromParent = %v, %d bytes read; want %v, %d", differ, read, want, len(probes)*16<<10)
	}
	for _, b := range want {
		src.data[b*16<<10] ^= 0xff
	}
}

// Changes without a parent of the same size are refused, never guessed at.
func TestChangesNeedParentOfSameSize(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	src := &memSource{data: randomVolume(4, 1<<20)}
	full := f.backup(t, "full", src, nil)
	bigger := &memSource{data: randomVolume(4, 2<<20)}
	_, err := f.r.Write(context.Background(), bigger, repo.WriteOptions{Parent: full.Parent(), Changes: rangeList{}}, func(repo.WriteResult) error { return nil })
	if err == nil {
		t.Fatal("an incremental with changes against a parent of another size was written")
	}
}

// Changed compares two block maps of one volume size without reading a block: on a 1 TiB
// sparse volume (a tree three levels deep), the blocks written, the block written into a hole
// and the block that became a hole are the ranges, merged where they touch, and a backup
// compared with itself changed nothing.
func TestChangedComparesBlockMaps(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	const tib = int64(1) << 40
	bs := int64(f.r.Config().BlockSize)
	a := &sparseSource{size: tib, data: map[int64][]byte{0: []byte("boot"), tib / 2: []byte("middle"), tib/2 + bs: []byte("next"), tib - 5: []byte("end")}}
	ma := f.backup(t, "a", a, nil)
	b := &sparseSource{size: tib, data: map[int64][]byte{0: []byte("boot"), tib / 2: []byte("MIDDLE"), tib/2 + bs: []byte("NEXT"), 3 * tib / 4: []byte("new"), tib - 5: nil}}
	mb := f.backup(t, "b", b, ma)
	got, err := f.r.Changed(context.Background(), mb, ma)
	if err != nil {
		t.Fatal(err)
	}
	want := [][2]int64{{tib / 2, tib/2 + 2*bs}, {3 * tib / 4, 3*tib/4 + bs}, {tib - bs, tib}}
	if !slices.Equal(got, want) {
		t.Errorf("Changed = %v, want %v", got, want)
	}
	if same, err := f.r.Changed(context.Background(), mb, mb); err != nil || len(same) != 0 {
		t.Errorf("a backup against itself: %v, %v; want no ranges", same, err)
	}
	small := f.backup(t, "small", &memSource{data: []byte("short")}, nil)
	if _, err := f.r.Changed(context.Background(), mb, small); err == nil {
		t.Error("backups of two sizes compared without an error")
	}
}
