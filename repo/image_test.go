package repo_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

// TestImagePrefetch: sequential reads load the blocks ahead into the chunk cache, so the next
// reads hit it, and the blocks they have read leave it; random reads do not prefetch.
func TestImagePrefetch(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	// Every block distinct: a block that repeats further on is prefetched again there.
	data := make([]byte, 16<<20)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	src := &memSource{data: data}
	m := f.backup(t, "seq", src, nil)
	r, err := repo.Open(context.Background(), f.r.Backend(), f.idx, repo.Options{ChunkCacheBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	im := r.Image(m)
	buf := make([]byte, 128<<10)
	for off := int64(0); off < 1<<20; off += int64(len(buf)) {
		if _, err := im.ReadAt(buf, off); err != nil {
			t.Fatal(err)
		}
	}
	// The prefetcher runs in the background: wait until it has loaded at least the next 1 MiB
	// and then stopped loading more.
	deadline := time.Now().Add(20 * time.Second)
	last, stable := -1, 0
	for time.Now().Before(deadline) && stable < 30 {
		n := repo.CachedBlocksForTest(r)
		if n == last && n >= (2<<20)/16384 {
			stable++
		} else {
			stable = 0
		}
		last = n
		time.Sleep(10 * time.Millisecond)
	}
	// The next 128 KiB were prefetched; the blocks the sequential reads went through, from
	// the third read on (the stream's confirmation), left the cache.
	if n := repo.ImageCachedForTest(im, 1<<20, int64(len(buf))); n != len(buf)/16384 {
		t.Errorf("%d of the %d blocks after a sequential run are cached, want all prefetched", n, len(buf)/16384)
	}
	if n := repo.ImageCachedForTest(im, 256<<10, 768<<10); n != 0 {
		t.Errorf("%d blocks a sequential reader has read are still cached, want none", n)
	}
	if _, err := im.ReadAt(buf, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, src.data[1<<20:1<<20+len(buf)]) {
		t.Error("prefetched bytes differ")
	}
	if _, err := im.ReadAt(buf, 512<<10); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, src.data[512<<10:512<<10+len(buf)]) {
		t.Error("bytes read again differ")
	}

	// Random reads do not start streams that prefetch.
	r2, err := repo.Open(context.Background(), f.r.Backend(), f.idx, repo.Options{ChunkCacheBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	im2 := r2.Image(m)
	small := make([]byte, 100)
	// 10 MiB is within a stream's slack of the read at 9 MiB: random reads land so now and
	// then, and one such read alone must not start a prefetch.
	for _, off := range []int64{9 << 20, 1 << 20, 13 << 20, 10 << 20, 5 << 20} {
		if _, err := im2.ReadAt(small, off); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if n := repo.CachedBlocksForTest(r2); n != 5 {
		t.Errorf("5 random reads cached %d blocks, want 5: a prefetch ran", n)
	}
}

// TestImageConcurrentReaders: many readers of overlapping ranges, sequential and not, all
// get the volume's bytes.
func TestImageConcurrentReaders(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	src := &memSource{data: randomVolume(6, 6<<20+777)}
	m := f.backup(t, "conc", src, nil)
	im := f.r.Image(m)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			buf := make([]byte, 100_000+w*999)
			for off := int64(w * 1234); off < int64(len(src.data)); off += int64(len(buf)) {
				n, err := im.ReadAt(buf, off)
				if err != nil && n == 0 {
					t.Error(err)
					return
				}
				if !bytes.Equal(buf[:n], src.data[off:off+int64(n)]) {
					t.Errorf("reader %d at %d: bytes differ", w, off)
					return
				}
			}
		})
	}
	wg.Wait()
}

// A leaf with fewer blocks than its place in the volume holds is damage to NextData, as it is
// to a read, whether it is the last leaf or one before it. Before, NextData took a short leaf
// for the end of the image, and SEEK_DATA over NBD or FUSE reported holes (zeros) where the
// block map had no blocks at all, while a read of the same bytes failed as corrupt.
//
// A stored leaf cannot be cut short without failing its address check on load, so the damage
// is made where a clean short leaf can come from: a block map that does not cover the size its
// manifest records (the tree of a 6 MiB backup, whose second leaf holds half of a leaf's
// blocks, under a manifest of 8 or 12 MiB).
func TestImageNextDataShortLeafIsCorrupt(t *testing.T) {
	const leaf = repo.LeafFanout * repo.DefaultBlockSize
	f := newFixture(t, repo.InitOptions{})
	m := f.backup(t, "short", &memSource{data: randomBytes(91, leaf+leaf/2)}, nil)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		size int64
	}{
		{"the last leaf", 2 * leaf},
		{"a leaf before the last", 3 * leaf},
	} {
		t.Run(c.name, func(t *testing.T) {
			damaged := *m
			damaged.Size = c.size
			im := f.r.Image(&damaged)
			if _, err := im.ReadAt(make([]byte, 4096), leaf+leaf/2); !errors.Is(err, repo.ErrCorrupt) {
				t.Fatalf("a read past the short leaf's blocks: %v, want ErrCorrupt", err)
			}
			for _, off := range []int64{0, leaf, leaf + leaf/2} {
				start, end, err := im.NextData(ctx, off)
				if !errors.Is(err, repo.ErrCorrupt) {
					t.Errorf("NextData(%d) = [%d, %d), %v; want ErrCorrupt", off, start, end, err)
				}
			}
		})
	}
}
