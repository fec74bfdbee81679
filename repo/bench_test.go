package repo_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// The hot paths on real parts: a local backend and a Badger index on disk, volumes as image
// files read through blockio. `make bench` measures the whole process; these isolate the engine
// (go test -run '^$' -bench . -benchtime 3x ./repo/ -cpuprofile cpu.out).

// benchVolumeSize is small enough for a shared 2-core machine, large enough for several packs.
const benchVolumeSize = 64 << 20

// benchVolume writes an image file like the one `make bench` makes, at 256 KiB granularity:
// text (compressible), random (incompressible), zeros (holes) and copies of earlier regions.
func benchVolume(b *testing.B, size int) string {
	b.Helper()
	const region = 256 << 10
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, size)
	words := []string{"volume ", "backup ", "restore ", "snapshot ", "block ", "incremental ", "cinder ", "2026-01-01 "}
	for off := 0; off < size; off += region {
		r := data[off:min(off+region, size)]
		switch k := rng.IntN(10); {
		case k < 3: // text
			for i := 0; i < len(r); {
				i += copy(r[i:], words[rng.IntN(len(words))])
			}
		case k < 6: // random
			for i := 0; i+8 <= len(r); i += 8 {
				v := rng.Uint64()
				for j := range 8 {
					r[i+j] = byte(v >> (8 * j))
				}
			}
		case k < 8 && off > 0: // a copy of an earlier region
			src := rng.IntN(off/region) * region
			copy(r, data[src:src+len(r)])
		}
		// else zeros: left as a hole below
	}
	path := filepath.Join(b.TempDir(), "vol.img")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		b.Fatal(err)
	}
	for off := 0; off < size; off += region {
		r := data[off:min(off+region, size)]
		if string(r) != string(make([]byte, len(r))) {
			if _, err := f.WriteAt(r, int64(off)); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	return path
}

// scatter rewrites about 1% of the image with random 4–64 KiB writes at 4 KiB-aligned offsets.
func scatter(b *testing.B, path string, seed uint64) {
	b.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 3))
	buf := make([]byte, 64<<10)
	for left := st.Size() / 100; left > 0; {
		n := int64(1+rng.IntN(16)) << 12
		off := rng.Int64N((st.Size()-n)>>12+1) << 12
		for i := range buf[:n] {
			buf[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			b.Fatal(err)
		}
		left -= n
	}
}

type benchRepo struct {
	r   *repo.Repository
	be  *local.Local
	idx *index.Index
}

// openBenchRepo makes a repository in a new temporary directory.
func openBenchRepo(b *testing.B, encryption string, cacheBytes int64) *benchRepo {
	b.Helper()
	dir, err := os.MkdirTemp(b.TempDir(), "repo")
	if err != nil {
		b.Fatal(err)
	}
	be, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	o := repo.InitOptions{Encryption: encryption, Password: "bench"}
	if _, err := repo.Init(ctx, be, o); err != nil {
		b.Fatal(err)
	}
	idx, err := index.Open(filepath.Join(dir, "index"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { idx.Close() })
	r, err := repo.Open(ctx, be, idx, repo.Options{Password: "bench", ChunkCacheBytes: cacheBytes})
	if err != nil {
		b.Fatal(err)
	}
	return &benchRepo{r: r, be: be, idx: idx}
}

// backup writes the image at path as backup id, incremental to parent when it is not nil.
func (br *benchRepo) backup(b *testing.B, id, path string, parent *repo.Manifest) *repo.Manifest {
	b.Helper()
	src, err := blockio.OpenSource(path)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	o := repo.WriteOptions{}
	if parent != nil {
		o.Parent = parent.Parent()
	}
	var m *repo.Manifest
	_, err = br.r.Write(context.Background(), src, o, func(res repo.WriteResult) error {
		m = &repo.Manifest{ID: id, VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
		return br.r.PutManifest(context.Background(), m)
	})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

var encryptions = []string{"none", "aes-256-gcm"}

// BenchmarkWriteFull backs up the volume into an empty repository: read, fingerprint,
// address, compress, seal, pack and store every block.
func BenchmarkWriteFull(b *testing.B) {
	path := benchVolume(b, benchVolumeSize)
	for _, enc := range encryptions {
		b.Run(enc, func(b *testing.B) {
			b.SetBytes(benchVolumeSize)
			var stored int64
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				br := openBenchRepo(b, enc, 0)
				b.StartTimer()
				stored += br.backup(b, fmt.Sprintf("full-%d", i), path, nil).Stats.NewBytes
			}
			b.ReportMetric(float64(stored)/float64(b.N)/(1<<20), "MiB-stored/op")
		})
	}
}

// BenchmarkWriteIncremental backs up a chain: before each backup about 1% of the volume is
// rewritten, and the backup compares every block with its parent's fingerprints.
func BenchmarkWriteIncremental(b *testing.B) {
	for _, enc := range encryptions {
		b.Run(enc, func(b *testing.B) {
			path := benchVolume(b, benchVolumeSize)
			br := openBenchRepo(b, enc, 0)
			parent := br.backup(b, "full", path, nil)
			b.SetBytes(benchVolumeSize)
			var stored int64
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				scatter(b, path, uint64(i))
				b.StartTimer()
				parent = br.backup(b, fmt.Sprintf("inc-%d", i), path, parent)
				stored += parent.Stats.NewBytes
			}
			b.ReportMetric(float64(stored)/float64(b.N)/(1<<20), "MiB-stored/op")
		})
	}
}

// BenchmarkRestore restores a backup to a new image file (holes stay holes).
func BenchmarkRestore(b *testing.B) {
	path := benchVolume(b, benchVolumeSize)
	for _, enc := range encryptions {
		b.Run(enc, func(b *testing.B) {
			br := openBenchRepo(b, enc, 0)
			m := br.backup(b, "full", path, nil)
			dir := b.TempDir()
			b.SetBytes(benchVolumeSize)
			for i := 0; b.Loop(); i++ {
				out := filepath.Join(dir, fmt.Sprintf("restored-%d.img", i))
				t, err := blockio.OpenTarget(out, m.Size)
				if err != nil {
					b.Fatal(err)
				}
				if err := br.r.Restore(context.Background(), m, t, repo.RestoreOptions{Fresh: t.Empty()}); err != nil {
					b.Fatal(err)
				}
				if err := t.Close(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.Remove(out); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkImageReadAt reads 4 KiB at random 4 KiB-aligned offsets of a backup, as a FUSE
// client does: "nocache" decodes a block from the pack for every read (the cold path),
// "cache" serves from a chunk cache that holds the whole volume (the warm path).
func BenchmarkImageReadAt(b *testing.B) {
	path := benchVolume(b, benchVolumeSize)
	for _, c := range []struct {
		name  string
		cache int64
	}{{"nocache", 0}, {"cache", 2 * benchVolumeSize}} {
		br := openBenchRepo(b, "aes-256-gcm", c.cache)
		m := br.backup(b, "full", path, nil)
		im := br.r.Image(m)
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(4096)
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(rand.Uint64(), 4))
				buf := make([]byte, 4096)
				for pb.Next() {
					off := rng.Int64N(benchVolumeSize>>12) << 12
					if _, err := im.ReadAt(buf, off); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkImageSequentialRead reads the image front to back in 1 MiB reads (dd bs=1M
// through FUSE), with prefetch into a 64 MiB chunk cache.
func BenchmarkImageSequentialRead(b *testing.B) {
	path := benchVolume(b, benchVolumeSize)
	br := openBenchRepo(b, "aes-256-gcm", 64<<20)
	m := br.backup(b, "full", path, nil)
	buf := make([]byte, 1<<20)
	b.SetBytes(benchVolumeSize)
	for b.Loop() {
		b.StopTimer() // a newly opened repository: an empty chunk cache
		r, err := repo.Open(context.Background(), br.be, br.idx, repo.Options{Password: "bench", ChunkCacheBytes: 64 << 20})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		im := r.Image(m)
		for off := int64(0); off < m.Size; off += int64(len(buf)) {
			if _, err := im.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
}
