package gateway_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// BenchmarkSyncBackups: a second gateway on the same repository learning one backup the first
// stored (SyncBackups, which a gateway runs every 10 s), with 20 to 20,000 backups already in
// the repository. It lists every manifest and compares the list with every backup record, so
// it grows with the number of backups (not with the blobs: the packs follow by the cursor of
// repo.Sync). Past 200 the rest are synthetic: a record in both gateways' indexes and an
// object under manifests/ for each, which the sync lists but, knowing the backup, never reads.
//
//	go test -run '^$' -bench BenchmarkSyncBackups -benchtime 10x ./gateway/
func BenchmarkSyncBackups(b *testing.B) {
	for _, c := range []struct{ n, synthetic int }{{20, 0}, {200, 0}, {2000, 1800}, {20000, 19800}} {
		n := c.n - c.synthetic
		b.Run(fmt.Sprintf("backups=%d", c.n), func(b *testing.B) {
			dir := b.TempDir()
			ctx := context.Background()
			cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state-a")}
			if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
				b.Fatal(err)
			}
			if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
				b.Fatal(err)
			}
			open := func(c gateway.Config) *gateway.Service {
				s, err := gateway.Open(ctx, c)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Close() })
				return s
			}
			a := open(cfg)
			admin := adminCtx()
			for i := range n {
				v := image(b, dir, fmt.Sprintf("base%03d.img", i), 64<<10)
				if _, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: v}); err != nil {
					b.Fatal(err)
				}
			}
			cfgB := cfg
			cfgB.StateDir = filepath.Join(dir, "state-b")
			peer := open(cfgB)
			synthesize(b, cfg.Repo, c.synthetic, a.Index(), peer.Index())
			if err := peer.SyncBackups(ctx); err != nil {
				b.Fatal(err)
			}
			var total time.Duration
			for i := range b.N {
				v := image(b, dir, fmt.Sprintf("new%03d.img", i), 64<<10)
				bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: v})
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				if err := peer.SyncBackups(ctx); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				if got, err := peer.Index().Backup(bk.ID); err != nil || got.Status != "available" {
					b.Fatalf("the second gateway does not know the new backup: %v %v", got, err)
				}
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms/catch-up")
		})
	}
}

// synthesize adds n synthetic available backups to the indexes and an object under manifests/
// for each in the local repository at dir.
func synthesize(b *testing.B, dir string, n int, ixs ...*index.Index) {
	b.Helper()
	at := time.Now().UTC().Add(-time.Hour)
	for i := range n {
		rec := &index.Backup{ID: fmt.Sprintf("5e000000-0000-4000-8000-%012d", i), Name: fmt.Sprintf("synthetic-%d", i),
			VolumeID: fmt.Sprintf("vol-%d", i%100), Project: gateway.DefaultProject, Status: index.BackupAvailable,
			Size: 64 << 10, CreatedAt: at, UpdatedAt: at, VolumePath: fmt.Sprintf("/srv/volumes/vol-%d.img", i%100)}
		for _, ix := range ixs {
			if err := ix.PutBackup(rec); err != nil {
				b.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "manifests", rec.ID), []byte("synthetic"), 0o600); err != nil {
			b.Fatal(err)
		}
	}
}
