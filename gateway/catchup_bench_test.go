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
)

// BenchmarkSyncBackups: a second gateway on the same repository learning one backup the first
// stored, with 20 to 20,000 backups already in the repository, both ways a gateway catches up:
// the full catch-up (SyncBackups, when a gateway starts and at least once a minute) lists
// every manifest and compares the list with every backup record, so it grows with the number
// of backups (not with the blobs: the packs follow by the cursor of repo.Sync); the catch-up
// between full ones (CatchUp, every 10 s) lists only the backup log's new keys. Past 200 the
// rest are synthetic: a record in both gateways' indexes and an object under manifests/ for
// each, which the full catch-up lists but, knowing the backup, never reads.
//
//	go test -run '^$' -bench BenchmarkSyncBackups -benchtime 10x ./gateway/
func BenchmarkSyncBackups(b *testing.B) {
	for _, c := range []struct{ n, synthetic int }{{20, 0}, {200, 0}, {2000, 1800}, {20000, 19800}} {
		n := c.n - c.synthetic
		b.Run(fmt.Sprintf("backups=%d", c.n), func(b *testing.B) {
			dir := b.TempDir()
			ctx := context.Background()
			a, peer, repoDir := twoGateways(b, dir)
			admin := adminCtx()
			for i := range n {
				v := image(b, dir, fmt.Sprintf("base%03d.img", i), 64<<10)
				if _, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: v}); err != nil {
					b.Fatal(err)
				}
			}
			synthesize(b, repoDir, c.synthetic, a.Index(), peer.Index())
			if err := peer.SyncBackups(ctx); err != nil {
				b.Fatal(err)
			}
			// The log's keys of the backups above are examined once, by the first catch-up
			// between full ones; from then on each catch-up examines what is new.
			if err := peer.CatchUp(ctx); err != nil {
				b.Fatal(err)
			}
			var full, log time.Duration
			for i := range b.N {
				for k, catchUp := range []func(context.Context) error{peer.SyncBackups, peer.CatchUp} {
					v := image(b, dir, fmt.Sprintf("new%03d-%d.img", i, k), 64<<10)
					bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: v})
					if err != nil {
						b.Fatal(err)
					}
					start := time.Now()
					if err := catchUp(ctx); err != nil {
						b.Fatal(err)
					}
					if k == 0 {
						full += time.Since(start)
					} else {
						log += time.Since(start)
					}
					if got, err := peer.Index().Backup(bk.ID); err != nil || got.Status != "available" {
						b.Fatalf("the second gateway does not know the new backup: %v %v", got, err)
					}
				}
			}
			b.ReportMetric(float64(full.Microseconds())/1000/float64(b.N), "ms/full-catch-up")
			b.ReportMetric(float64(log.Microseconds())/1000/float64(b.N), "ms/log-catch-up")
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
