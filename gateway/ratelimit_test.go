package gateway_test

import (
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo/backend/limit"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// /metrics says how long the bandwidth limits held transfers back, for each limit set
// (cairn_throttled_seconds_total by way), so an admin can tell a slow link from a limit; a
// limit that is not set has no series.
func TestThrottledTimeIsAMetric(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), Rates: limit.Rates{Up: 4 << 20}, VolumeReadRate: 4 << 20}
	s := initOpened(t, cfg)
	defer s.Close()
	vol := filepath.Join(t.TempDir(), "vm.img")
	testutil.WriteImage(t, vol, 3<<20, 5, testutil.Random)
	if _, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: vol}); err != nil {
		t.Fatal(err)
	}
	mfs, err := s.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	waited := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cairn_throttled_seconds_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				waited[l.GetValue()] = mt.GetCounter().GetValue()
			}
		}
	}
	// 3 MiB at 4 MiB a second, the first half MiB free: a quarter second at least each way.
	if len(waited) != 2 || waited["upload"] < 0.2 || waited["read"] < 0.2 {
		t.Errorf("throttled seconds by way: %v, want upload and read, each at least 0.2", waited)
	}
}
