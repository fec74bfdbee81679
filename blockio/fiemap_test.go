//go:build linux

package blockio

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
	"golang.org/x/sys/unix"
)

// covers reports whether every range in want lies inside c.
func covers(c Changes, want []Extent) bool {
	for _, w := range want {
		for off := w.Start; off < w.End; {
			s, e, err := c.NextChange(off)
			if err != nil || s > off {
				return false
			}
			off = e
		}
	}
	return true
}

// On a real XFS with reflinks: a clone differs from its image in nothing; after writes, punched
// holes and written zeros, the diff holds every changed range and little else; a copy that
// shares nothing differs everywhere it has data.
func TestReflinkDiffXFS(t *testing.T) {
	const size = 64 << 20
	img, store, base := keptImage(t, size, 7, testutil.Mixed)
	dir := filepath.Dir(img)
	if c, err := ReflinkDiff(img, base, size); err != nil || len(c) != 0 {
		t.Fatalf("an image and its fresh clone differ in %v (%v)", c, err)
	}

	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{4096, 8192}, {1<<20 + 512, 1<<20 + 700}, {30 << 20, 30<<20 + 200<<10}, {size - 4096, size}}
	for _, w := range want {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, int(w.End-w.Start)), w.Start); err != nil {
			t.Fatal(err)
		}
	}
	punched := Extent{40 << 20, 41 << 20}
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, punched.Start, punched.End-punched.Start); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// The backup reads a clone of the image, never the live file.
	clone2, err := store.Clone(img, "b2")
	if err != nil {
		t.Fatal(err)
	}
	c, err := ReflinkDiff(clone2, base, size)
	if err != nil {
		t.Fatal(err)
	}
	// The punched range counts only where the base had data; the byte comparison below
	// checks it.
	if !covers(c, want) {
		t.Fatalf("diff %v misses some of the written ranges %v", c, want)
	}
	want = append(want, punched)
	var changed int64
	for _, w := range want {
		changed += w.End - w.Start
	}
	// XFS maps in 4 KiB blocks; a punched hole may cover a whole extent of the base.
	if c.Bytes() > 3*changed+64<<10 {
		t.Errorf("diff covers %d bytes for %d changed: %v", c.Bytes(), changed, c)
	}
	t.Logf("changed %d bytes, diff %d bytes in %d ranges", changed, c.Bytes(), len(c))

	// Outside the diff, the clone and the base hold the same bytes.
	a, _ := os.ReadFile(clone2)
	b, _ := os.ReadFile(base)
	for off := int64(0); off < size; {
		s, e, err := c.NextChange(off)
		if err != nil {
			s, e = size, size
		}
		if !bytes.Equal(a[off:s], b[off:s]) {
			t.Fatalf("bytes in [%d, %d) differ but the diff calls them unchanged", off, s)
		}
		off = e
	}

	// The clone becomes the base; the old one goes.
	if err := store.Keep(clone2, "b2"); err != nil {
		t.Fatal(err)
	}
	if p, _ := store.Base("b1"); p != "" {
		t.Error("the old base is still there after Keep")
	}
	if p, _ := store.Base("b2"); p == "" {
		t.Error("the new base is not there after Keep")
	}

	// A plain copy shares nothing: every data extent differs.
	cp := filepath.Join(dir, "copy.img")
	if err := os.WriteFile(cp, a, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = ReflinkDiff(cp, filepath.Join(store.Dir(), "b2.base"), size)
	if err != nil {
		t.Fatal(err)
	}
	if c.Bytes() < size-8<<20 {
		t.Errorf("an unshared copy differs in only %d of %d bytes", c.Bytes(), size)
	}
	if sha256.Sum256(a) == sha256.Sum256(b) {
		t.Error("the writes changed nothing")
	}
	if err := RemoveBaseStore(img, "vol-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, BaseDirName)); !os.IsNotExist(err) {
		t.Errorf("RemoveBaseStore left %s: %v", BaseDirName, err)
	}
}

// On a file system without reflinks the store says so, as ErrNoSnapshot.
func TestBaseStoreWithoutReflinks(t *testing.T) {
	img := sparseFile(t, 1<<20, extent{0, 4096})
	store, err := OpenBaseStore(img, "v")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Probe(); err == nil {
		testutil.Skip(t, "the file system of %s makes reflinks; this test needs one that does not", img)
	} else if !errorsIs(err, ErrNoSnapshot) {
		t.Fatalf("Probe without reflinks = %v, want ErrNoSnapshot", err)
	}
}

// Keep removes what the new base replaces, but a .dirty record only once its base is gone: a
// base it cannot remove (here: immutable) keeps its record, so it is never trusted whole if
// the backup it is named after becomes a parent again (found by review). A record whose base
// is gone goes.
func TestKeepLeavesTheRecordOfABaseItCannotRemove(t *testing.T) {
	img := sparseFile(t, 1<<20, extent{0, 4096})
	store, err := OpenBaseStore(img, "v")
	if err != nil {
		t.Fatal(err)
	}
	file := func(name string) string { return filepath.Join(store.dir, name) }
	for _, name := range []string{"old" + baseSuffix, "old" + dirtySuffix, "orphan" + dirtySuffix, "clone"} {
		if err := os.WriteFile(file(name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("chattr", "+i", file("old"+baseSuffix)).CombinedOutput(); err != nil {
		testutil.Skip(t, "chattr +i: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", file("old"+baseSuffix)).Run() })
	if err := store.Keep(file("clone"), "new"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"new" + baseSuffix: true, "old" + baseSuffix: true, "old" + dirtySuffix: true, "orphan" + dirtySuffix: false, "clone": false} {
		if _, err := os.Stat(file(name)); (err == nil) != want {
			t.Errorf("after Keep, %s exists: %v, want %v", name, err == nil, want)
		}
	}
}

// Changes walks in order and merges touching ranges.
func TestChangesNextChange(t *testing.T) {
	var c Changes
	c = c.add(0, 10)
	c = c.add(10, 20)
	c = c.add(30, 40)
	c = c.add(35, 50)
	if len(c) != 2 || c[0] != (Extent{0, 20}) || c[1] != (Extent{30, 50}) || c.Bytes() != 40 {
		t.Fatalf("changes = %v", c)
	}
	for _, tt := range []struct{ off, s, e int64 }{{0, 0, 20}, {5, 5, 20}, {20, 30, 50}, {49, 49, 50}} {
		s, e, err := c.NextChange(tt.off)
		if err != nil || s != tt.s || e != tt.e {
			t.Errorf("NextChange(%d) = %d, %d, %v; want %d, %d", tt.off, s, e, err, tt.s, tt.e)
		}
	}
	if _, _, err := c.NextChange(50); err == nil {
		t.Error("NextChange past the last range found one")
	}
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }

// fixed is a mappings that answers from a list, as FIEMAP would.
func fixed(size int64, ms ...mapping) *mappings {
	return &mappings{size: size, got: ms, last: true}
}

// The sweep's rules, one case each: same physical bytes shared and trusted is unchanged;
// anything else where either has data is changed.
func TestDiffMappingsRules(t *testing.T) {
	const mib = 1 << 20
	sh := uint32(extentShared)
	tests := []struct {
		name string
		a, b []mapping
		want Changes
	}{
		{"identical shared", []mapping{{0, 100 * mib, mib, sh}}, []mapping{{0, 100 * mib, mib, sh}}, nil},
		{"holes in both", nil, nil, nil},
		{"same physical, not flagged shared", []mapping{{0, 100 * mib, mib, 0}}, []mapping{{0, 100 * mib, mib, sh}}, Changes{{0, mib}}},
		{"rewritten middle", []mapping{{0, 100 * mib, 4096, sh}, {4096, 7 * mib, 8192, 0}, {12288, 100*mib + 12288, mib - 12288, sh}},
			[]mapping{{0, 100 * mib, mib, sh}}, Changes{{4096, 12288}}},
		{"split differently, same bytes", []mapping{{0, 100 * mib, mib / 2, sh}, {mib / 2, 100*mib + mib/2, mib / 2, sh}},
			[]mapping{{0, 100 * mib, mib, sh}}, nil},
		{"shifted physical", []mapping{{0, 100*mib + 4096, mib, sh}}, []mapping{{0, 100 * mib, mib, sh}}, Changes{{0, mib}}},
		{"punched in the file", []mapping{{0, 100 * mib, 4096, sh}}, []mapping{{0, 100 * mib, mib, sh}}, Changes{{4096, mib}}},
		{"new data past the base's", []mapping{{0, 100 * mib, mib, sh}, {3 * mib / 2, 9 * mib, 4096, 0}}, []mapping{{0, 100 * mib, mib, sh}}, Changes{{3 * mib / 2, 3*mib/2 + 4096}}},
		{"compressed", []mapping{{0, 100 * mib, mib, sh | extentEncoded}}, []mapping{{0, 100 * mib, mib, sh | extentEncoded}}, Changes{{0, mib}}},
		{"delayed allocation", []mapping{{0, 0, mib, extentDelalloc | extentUnknown}}, []mapping{{0, 100 * mib, mib, sh}}, Changes{{0, mib}}},
		{"inline tail", []mapping{{0, 100 * mib, mib, sh | extentNotAligned | extentInline}}, []mapping{{0, 100 * mib, mib, sh | extentNotAligned | extentInline}}, Changes{{0, mib}}},
		{"past the size", []mapping{{0, 100 * mib, 4 * mib, 0}}, []mapping{{0, 50 * mib, 4 * mib, 0}}, Changes{{0, 2 * mib}}},
		{"merged (block-mapped file)", []mapping{{0, 100 * mib, mib, sh | extentMerged}}, []mapping{{0, 100 * mib, mib, sh}}, nil},
		{"a flag of a later kernel", []mapping{{0, 100 * mib, mib, sh | 0x4000}}, []mapping{{0, 100 * mib, mib, sh}}, Changes{{0, mib}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := diffMappings(fixed(2*mib, tt.a...), fixed(2*mib, tt.b...), 2*mib)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("diff = %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("diff = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// A fragmented file maps in many FIEMAP batches: the diff is exact across the batches' edges.
func TestReflinkDiffAcrossBatches(t *testing.T) {
	dir := testutil.XFSReflinkDir(t, 512<<20)
	const size = 32 << 20
	const stride = 8 << 10 // 4 KiB of data, 4 KiB of hole: 4,096 extents, 8 batches
	img := filepath.Join(dir, "frag.img")
	f, err := os.OpenFile(img, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	blk := bytes.Repeat([]byte{0x11}, 4096)
	for off := int64(0); off < size; off += stride {
		if _, err := f.WriteAt(blk, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	store, err := OpenBaseStore(img, "frag")
	if err != nil {
		t.Fatal(err)
	}
	base, err := store.Clone(img, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if n := extentCount(t, base, size); n < 3*fiemapBatch {
		t.Fatalf("the base has %d extents, want at least %d (several batches)", n, 3*fiemapBatch)
	}

	// Rewritten data blocks and new data in holes, on both sides of batch edges (extent
	// fiemapBatch*k starts at offset fiemapBatch*k*stride) and at the ends.
	var want []Extent
	for _, k := range []int64{0, fiemapBatch - 1, fiemapBatch, 2*fiemapBatch + 1, 5 * fiemapBatch, size/stride - 1} {
		want = append(want, Extent{k * stride, k*stride + 4096})       // a data block
		want = append(want, Extent{k*stride + 4096, (k + 1) * stride}) // the hole after it
	}
	for _, w := range want {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0x22}, int(w.End-w.Start)), w.Start); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	c, err := ReflinkDiff(img, base, size)
	if err != nil {
		t.Fatal(err)
	}
	if !covers(c, want) {
		t.Fatalf("diff %v misses some of the written ranges %v", c, want)
	}
	var changed int64
	for _, w := range want {
		changed += w.End - w.Start
	}
	if c.Bytes() != changed {
		t.Errorf("diff covers %d bytes for %d written: %v", c.Bytes(), changed, c)
	}
}

// extentCount counts path's extents, as the diff's walk sees them.
func extentCount(t *testing.T, path string, size int64) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := newMappings(f, size)
	n := 0
	for {
		_, ok, err := m.peek()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return n
		}
		m.pop()
		n++
	}
}

// Union merges two sorted lists of ranges, overlapping or touching ones into one.
func TestChangesUnion(t *testing.T) {
	a := Changes{{0, 10}, {20, 30}, {50, 60}}
	b := Changes{{5, 12}, {30, 40}, {70, 80}}
	want := Changes{{0, 12}, {20, 40}, {50, 60}, {70, 80}}
	if got := a.Union(b); !slices.Equal(got, want) {
		t.Errorf("Union = %v, want %v", got, want)
	}
	if got := Changes(nil).Union(b); !slices.Equal(got, b) {
		t.Errorf("nil ∪ b = %v", got)
	}
	if got := a.Union(nil); !slices.Equal(got, a) {
		t.Errorf("a ∪ nil = %v", got)
	}
}

// Advance on a real XFS: the record is written first, the base then holds the image's bytes in
// the ranges and its own elsewhere, and it shares those ranges with the image; a record that
// is not whole, or not this base's, is an error, never an empty list.
func TestAdvanceXFS(t *testing.T) {
	const size = 16 << 20
	img, store, base := keptImage(t, size, 9, testutil.Random)
	old, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	// Two writes; only the first is advanced.
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{1 << 20, 8 << 20} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 64<<10), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if d, err := store.Dirty("b1"); err != nil || d != nil {
		t.Fatalf("Dirty before any Advance = %v, %v", d, err)
	}
	ranges := Changes{{1 << 20, 1<<20 + 64<<10}}
	if p, err := store.Advance(img, "b1", ranges); err != nil || p != base {
		t.Fatalf("Advance = %q, %v", p, err)
	}
	if d, err := store.Dirty("b1"); err != nil || !slices.Equal(d, ranges) {
		t.Fatalf("Dirty after Advance = %v, %v; want %v", d, err, ranges)
	}
	now, _ := os.ReadFile(base)
	cur, _ := os.ReadFile(img)
	want := bytes.Clone(old)
	copy(want[1<<20:1<<20+64<<10], cur[1<<20:])
	if !bytes.Equal(now, want) {
		t.Fatal("the base does not hold the image's bytes in the advanced range and its own elsewhere")
	}
	diff, err := ReflinkDiff(img, base, size)
	if err != nil {
		t.Fatal(err)
	}
	if covers(diff, ranges) || !covers(diff, []Extent{{8 << 20, 8<<20 + 64<<10}}) {
		t.Fatalf("after Advance the diff is %v: want the other write only", diff)
	}
	for _, bad := range []string{`{"base":"b1","ranges":[[1,`, `{"base":"b2","ranges":[]}`, `{"base":"b1","ranges":[[10,5]]}`} {
		if err := os.WriteFile(filepath.Join(store.Dir(), "b1"+dirtySuffix), []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if d, err := store.Dirty("b1"); err == nil {
			t.Errorf("Dirty of %q = %v, nil; want an error", bad, d)
		}
	}
}

// keptImage writes a size-byte image vol.img (seed, pattern) on a fresh XFS with reflinks, opens
// its base store (volume vol-1) and keeps a clone of it as base b1.
func keptImage(t *testing.T, size, seed int64, pattern testutil.Pattern) (img string, store *BaseStore, base string) {
	t.Helper()
	img = filepath.Join(testutil.XFSReflinkDir(t, 512<<20), "vol.img")
	testutil.WriteImage(t, img, size, seed, pattern)
	store, err := OpenBaseStore(img, "vol-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Probe(); err != nil {
		t.Fatalf("XFS with reflink=1 does not clone: %v", err)
	}
	clone, err := store.Clone(img, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Keep(clone, "b1"); err != nil {
		t.Fatal(err)
	}
	if base, err = store.Base("b1"); err != nil || base == "" {
		t.Fatalf("base b1 = %q, %v", base, err)
	}
	return img, store, base
}

// A base store is one backup's at a time, across processes: a second Lock, through another
// open of the directory as another process would make, is refused without waiting until the
// first is released.
func TestBaseStoreLock(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := OpenBaseStore(img, "vol")
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.Lock()
	if err != nil {
		t.Fatal(err)
	}
	other, err := OpenBaseStore(img, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if u, err := other.Lock(); err == nil {
		u()
		t.Fatal("a second backup locked the base store while the first held it")
	}
	if u, err := st.Lock(); err == nil {
		u()
		t.Fatal("the same store locked twice")
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	u, err := other.Lock()
	if err != nil {
		t.Fatalf("the store stays locked after it was released: %v", err)
	}
	if err := u(); err != nil {
		t.Fatal(err)
	}
}
