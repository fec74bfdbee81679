package repo_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// BenchmarkScale measures gc's mark (a dry run), check (without reading data) and rebuild-index
// (Reindex into an empty index, and on the complete one) over a synthetic repository of CAIRN_SCALE_BLOBS distinct
// data blobs (default 2^18) in 8 backups: peak Go heap above what was in use before, per blob,
// and the time per 10^7 blobs. Run with -benchtime=1x, and GOGC=5 for the memory figures
// (heap in use is then close to what is live); docs/benchmarks.md has the figures.
func BenchmarkScale(b *testing.B) {
	n := 1 << 18
	if s := os.Getenv("CAIRN_SCALE_BLOBS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatalf("CAIRN_SCALE_BLOBS=%q: give a number of blobs", s)
		}
	}
	ctx := context.Background()
	dir := b.TempDir()
	open := func(name string) *repo.Repository {
		be, err := local.Open(filepath.Join(dir, "repo"))
		if err != nil {
			b.Fatal(err)
		}
		idx, err := index.Open(filepath.Join(dir, name))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { idx.Close() }) // a second Close does nothing
		r, err := repo.Open(ctx, be, idx, repo.Options{ChunkCacheBytes: 8 << 20})
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	be, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := repo.Init(ctx, be, repo.InitOptions{Compression: repo.CompressNone}); err != nil {
		b.Fatal(err)
	}
	r := open("index")
	const backups = 8
	start := time.Now()
	for i := range backups {
		if _, err := repo.SynthBackupForTest(ctx, r, fmt.Sprintf("synth-%d", i), n/backups, uint64(i), time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("%d blobs in %d backups written in %v", n, backups, time.Since(start).Round(time.Millisecond))
	// Open the index again, so that what the writes left to Badger (memtables, compactions)
	// is not counted against the first step measured.
	if err := r.Index().(*index.Index).Close(); err != nil {
		b.Fatal(err)
	}
	r = open("index")
	run := func(b *testing.B, r *repo.Repository, fn func() error) {
		for range b.N {
			peak, elapsed, err := peakHeap(fn)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(peak)/float64(n), "peak-heap-B/blob")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(elapsed.Seconds()*1e7/float64(n), "s/1e7blobs")
		}
	}
	b.Run("gc-mark", func(b *testing.B) {
		run(b, r, func() error {
			st, err := r.GC(ctx, repo.GCOptions{DryRun: true, TempDir: b.TempDir()})
			if err == nil && st.LiveBlobs < n {
				err = fmt.Errorf("marked %d blobs, want at least %d", st.LiveBlobs, n)
			}
			return err
		})
	})
	b.Run("check", func(b *testing.B) {
		run(b, r, func() error {
			rep, err := r.Check(ctx, repo.CheckOptions{})
			if err == nil && !rep.OK() {
				err = fmt.Errorf("check: %+v", rep)
			}
			return err
		})
	})
	b.Run("rebuild-index", func(b *testing.B) {
		for i := range b.N {
			r2 := open(fmt.Sprintf("index-rebuild-%d", i))
			peak, elapsed, err := peakHeap(func() error {
				st, err := r2.Reindex(ctx, nil)
				if err == nil && st.Packs == 0 {
					err = fmt.Errorf("the sync learned no pack")
				}
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(peak)/float64(n), "peak-heap-B/blob")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(elapsed.Seconds()*1e7/float64(n), "s/1e7blobs")
		}
	})
	// rebuild-index on the index that is there (every pack known): the full sync plus the
	// pass that reads every pack's index object for blobs the index forgot (none here).
	b.Run("rebuild-index-existing", func(b *testing.B) {
		run(b, r, func() error {
			st, err := r.Reindex(ctx, nil)
			if err == nil && (st.Packs != 0 || st.Relearned != 0) {
				err = fmt.Errorf("rebuild of a complete index learned %+v", st)
			}
			return err
		})
	})
}

// BenchmarkCatchUp: a second gateway's index learning one new backup (1,024 blobs, one
// pack) that another gateway stored, by the incremental sync every lock and every periodic
// catch-up runs, in repositories of two sizes (CAIRN_SCALE_BLOBS, default 2^18, and 1/16 of
// it). The time should not grow with the repository: the sync lists pack index objects after
// its cursor (less 15 minutes for clocks that disagree) and the deletion records (one per gc
// run), never all packs or blobs. The base backups' index objects are named an hour back, as in
// a repository whose bulk was written before the last quarter of an hour.
func BenchmarkCatchUp(b *testing.B) {
	n := 1 << 18
	if s := os.Getenv("CAIRN_SCALE_BLOBS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatalf("CAIRN_SCALE_BLOBS=%q: give a number of blobs", s)
		}
	}
	for _, size := range []int{n / 16, n} {
		b.Run(fmt.Sprintf("blobs=%d", size), func(b *testing.B) {
			ctx := context.Background()
			dir := b.TempDir()
			open := func(name string) *repo.Repository {
				be, err := local.Open(filepath.Join(dir, "repo"))
				if err != nil {
					b.Fatal(err)
				}
				idx, err := index.Open(filepath.Join(dir, name))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { idx.Close() })
				r, err := repo.Open(ctx, be, idx, repo.Options{ChunkCacheBytes: 8 << 20})
				if err != nil {
					b.Fatal(err)
				}
				return r
			}
			be, err := local.Open(filepath.Join(dir, "repo"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := repo.Init(ctx, be, repo.InitOptions{Compression: repo.CompressNone}); err != nil {
				b.Fatal(err)
			}
			w, peer := open("index-a"), open("index-b")
			for i := range 8 {
				if _, err := repo.SynthBackupForTest(ctx, w, fmt.Sprintf("base-%d", i), size/8, uint64(1000+i), time.Now().Add(-time.Hour)); err != nil {
					b.Fatal(err)
				}
			}
			start := time.Now()
			st, err := peer.Sync(ctx, false)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%d blobs: the first catch-up learned %d packs in %v", size, st.Packs, time.Since(start).Round(time.Millisecond))
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				m, err := repo.SynthBackupForTest(ctx, w, fmt.Sprintf("new-%d", i), 1024, uint64(5000+i), time.Time{})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				st, err := peer.Sync(ctx, false)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if st.Packs != 1 {
					b.Fatalf("the catch-up learned %d packs, want 1", st.Packs)
				}
				if _, ok, err := peer.Index().Lookup(m.Root); err != nil || !ok {
					b.Fatalf("the new backup's root is not in the second index: %v %v", ok, err)
				}
				b.StartTimer()
			}
		})
	}
}

// peakHeap runs fn and returns the most heap in use while it ran, above what was in use before.
func peakHeap(fn func() error) (uint64, time.Duration, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse
	peak := base
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak {
					peak = ms.HeapInuse
					if name := os.Getenv("CAIRN_SCALE_HEAP_PROFILE"); name != "" {
						// What holds the heap at its peak (as of the last collection).
						if f, err := os.Create(name); err == nil {
							_ = pprof.WriteHeapProfile(f)
							f.Close()
						}
					}
				}
			}
		}
	}()
	start := time.Now()
	err := fn()
	elapsed := time.Since(start)
	close(done)
	wg.Wait()
	runtime.ReadMemStats(&ms)
	peak = max(peak, ms.HeapInuse)
	return peak - base, elapsed, err
}
