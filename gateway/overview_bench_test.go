package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// BenchmarkOverview: 'cairn status --all-projects', and a scrape of /metrics (which asks for
// the same overview for cairn_attention), over n backup records in 100 projects, 10 volumes a
// project (records only: no data is read).
//
//	go test -run '^$' -bench BenchmarkOverview -benchtime 3x ./gateway/
func BenchmarkOverview(b *testing.B) {
	for _, n := range []int{10_000, 40_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			s, _ := newService(b)
			at := time.Now().Add(-48 * time.Hour)
			for i := range n {
				p := i % 100
				rec := &index.Backup{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), VolumeID: fmt.Sprintf("vol-%d-%d", p, i%1000/100),
					VolumeName: fmt.Sprintf("v%d", i%1000/100), Project: fmt.Sprintf("p%d", p), Status: index.BackupAvailable,
					Size: 10 << 30, CreatedAt: at.Add(time.Duration(i) * time.Second), UpdatedAt: at}
				if err := s.Index().CreateBackup(rec); err != nil {
					b.Fatal(err)
				}
			}
			ctx := adminCtx()
			b.ResetTimer()
			for range b.N {
				o, err := s.Overview(ctx, gateway.OverviewOptions{All: true})
				if err != nil {
					b.Fatal(err)
				}
				if o.Backups[index.BackupAvailable] != n {
					b.Fatalf("overview counts %d available backups, want %d", o.Backups[index.BackupAvailable], n)
				}
			}
		})
	}
}
