package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// BenchmarkQuotaAcrossGateways measures what a project's quota admits when three gateways
// with their own indexes share one repository and 200 backup requests arrive at once, spread
// over them, with a quota of 120 backups. The reservation objects in the repository keep them
// together at the quota (docs/design.md, "Projects and quotas"); the "accepted" metric says how
// many they admitted (120 unless racing admissions both refused a unit).
//
//	go test -run '^$' -bench BenchmarkQuotaAcrossGateways -benchtime 1x ./gateway/
func BenchmarkQuotaAcrossGateways(b *testing.B) {
	for range b.N {
		dir := b.TempDir()
		ctx := context.Background()
		cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), DefaultQuota: &gateway.Quota{Backups: 120, BackupGigabytes: 1000}}
		if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
			b.Fatal(err)
		}
		if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
			b.Fatal(err)
		}
		var gws []*gateway.Service
		for i := range 3 {
			c := cfg
			c.StateDir = filepath.Join(dir, fmt.Sprintf("state-%d", i))
			s, err := gateway.Open(ctx, c)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			gws = append(gws, s)
		}
		admin := adminCtx()
		var mu sync.Mutex
		var jobs []gateway.Job
		refused := 0
		var wg sync.WaitGroup
		for i := range 200 {
			v := image(b, dir, fmt.Sprintf("v%03d.img", i), 32<<10)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, job, err := gws[i%3].StartBackup(admin, gateway.BackupRequest{Volume: v})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					jobs = append(jobs, job)
				case errors.Is(err, gateway.ErrQuota):
					refused++
				default:
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		for _, job := range jobs {
			if err := job(admin); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(jobs)), "accepted")
		b.ReportMetric(float64(refused), "refused")
	}
}
