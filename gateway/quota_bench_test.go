package gateway_test

import (
	"testing"
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
		jobs, refused := requestAtOnce(b, dir, threeGateways(b, dir, 120), 200)
		admin := adminCtx()
		for _, job := range jobs {
			if err := job(admin); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(jobs)), "accepted")
		b.ReportMetric(float64(refused), "refused")
	}
}
