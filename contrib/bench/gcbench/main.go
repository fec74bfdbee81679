// Command gcbench fills a local repository with many synthetic backups for measuring gc:
// N volumes of SIZE bytes, each a copy of one random base with 1% of its 16 KiB blocks
// rewritten, so the backups share most of their blocks as clones of one image do. It writes
// through the repository engine directly (no volume records), as fast as the disk allows;
// 'cairn repo gc' then marks from every manifest. Used by contrib/bench/gc.sh.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

type memSource struct{ data []byte }

func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memSource) Size() int64 { return int64(len(m.data)) }
func (m *memSource) NextData(off int64) (int64, int64, error) {
	if off >= int64(len(m.data)) {
		return 0, 0, io.EOF
	}
	return off, int64(len(m.data)), nil
}

func main() {
	dir := flag.String("repo", "", "repository directory (created)")
	n := flag.Int("backups", 1000, "backups to write")
	size := flag.Int("size", 4<<20, "volume size in bytes")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "gcbench: -repo DIR is required")
		os.Exit(2)
	}
	if err := run(*dir, *n, *size); err != nil {
		fmt.Fprintln(os.Stderr, "gcbench:", err)
		os.Exit(1)
	}
}

func run(dir string, n, size int) error {
	ctx := context.Background()
	be, err := local.Open(dir)
	if err != nil {
		return err
	}
	if _, err := repo.Init(ctx, be, repo.InitOptions{Compression: repo.CompressNone}); err != nil {
		return err
	}
	idx, err := index.Open(filepath.Join(dir, "index"))
	if err != nil {
		return err
	}
	defer idx.Close()
	r, err := repo.Open(ctx, be, idx, repo.Options{})
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(1, 2))
	base := make([]byte, size)
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	start := time.Now()
	vol := make([]byte, size)
	for i := range n {
		copy(vol, base)
		for range size / (16 << 10) / 100 { // 1% of the blocks differ
			off := rng.IntN(size/(16<<10)) * (16 << 10)
			for j := range 16 << 10 {
				vol[off+j] = byte(rng.Uint32())
			}
		}
		id := fmt.Sprintf("bench-%05d", i)
		_, err := r.Write(ctx, &memSource{vol}, repo.WriteOptions{}, func(res repo.WriteResult) error {
			return r.PutManifest(ctx, &repo.Manifest{ID: id, VolumeID: fmt.Sprintf("vol-%05d", i), VolumeName: id,
				Size: int64(size), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats, CreatedAt: time.Now().UTC()})
		})
		if err != nil {
			return err
		}
	}
	fmt.Printf("wrote %d backups of %d MiB in %.1f s\n", n, size>>20, time.Since(start).Seconds())
	return nil
}
