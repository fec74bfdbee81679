package repo_test

import (
	"bytes"
	"context"
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
