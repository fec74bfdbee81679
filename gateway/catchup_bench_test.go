package gateway_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// BenchmarkSyncBackups: a second gateway on the same repository learning one backup the first
// stored (SyncBackups, which a gateway runs every 10 s), with 20 and with 200 backups already
// in the repository. It lists every manifest and reads every backup record, so it grows with
// the number of backups (not with the blobs: the packs follow by the cursor of repo.Sync).
//
//	go test -run '^$' -bench BenchmarkSyncBackups -benchtime 10x ./gateway/
func BenchmarkSyncBackups(b *testing.B) {
	for _, n := range []int{20, 200} {
		b.Run(fmt.Sprintf("backups=%d", n), func(b *testing.B) {
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
