package gateway_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/retention"
)

// BenchmarkPrune: deciding and carrying out a prune of one volume with n incrementals, keeping
// about one in ten (the re-linking of every kept backup whose parent goes is the costly part).
//
//	go test -run '^$' -bench BenchmarkPrune -benchtime 1x ./gateway/
func BenchmarkPrune(b *testing.B) {
	for _, n := range []int{100, 400} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				s, dir := newService(b)
				ctx := adminCtx()
				v := image(b, dir, "vm.img", 64<<10)
				for i := range n {
					if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v, Incremental: i > 0}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				res, err := s.Prune(ctx, gateway.PruneRequest{All: true, Rules: retention.Rules{Last: n / 10}})
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(time.Since(start).Microseconds())/float64(res.Removed), "µs/removed")
				if res.Removed != n-n/10 {
					b.Fatalf("removed %d of %d, want %d", res.Removed, n, n-n/10)
				}
			}
		})
	}
}
