package gateway_test

import (
	"path/filepath"
	"strings"
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
	waited := throttled(t, s)
	// 3 MiB at 4 MiB a second, the first half MiB free: a quarter second at least each way.
	if len(waited) != 2 || waited["upload"] < 0.2 || waited["read"] < 0.2 {
		t.Errorf("throttled seconds by way: %v, want upload and read, each at least 0.2", waited)
	}
}

// throttled reads cairn_throttled_seconds_total of s by way.
func throttled(t *testing.T, s *gateway.Service) map[string]float64 {
	t.Helper()
	waited := map[string]float64{}
	for key, v := range series(t, s, "cairn_throttled_seconds_total") {
		waited[strings.TrimPrefix(key, "cairn_throttled_seconds_total ")] = v
	}
	return waited
}

// A copy's uploads to another repository count against the gateway's --limit-upload with its
// other jobs, as the flag says every job shares it. Before, the destination was opened with
// meters of its own: a copy beside a backup stored twice the limit.
func TestCopySharesTheGatewaysLimits(t *testing.T) {
	dir := t.TempDir()
	s := initOpened(t, gateway.Config{Repo: filepath.Join(dir, "repo"), Rates: limit.Rates{Up: 4 << 20}})
	defer s.Close()
	vol := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, vol, 3<<20, 9, testutil.Random)
	b, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	cfg, other := otherRepo(t, filepath.Join(dir, "offsite"))
	other.Close() // the copy opens it as the CLI and policies do
	dst, err := s.OpenDestination(adminCtx(), gateway.Destination{Repo: cfg.Repo, StateDir: cfg.StateDir, Password: cfg.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	before := throttled(t, s)["upload"]
	if _, err := s.CopyBackup(adminCtx(), b.ID, dst, gateway.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	// 3 MiB of random blocks at 4 MiB a second, half a MiB free: over half a second waited.
	if got := throttled(t, s)["upload"] - before; got < 0.3 {
		t.Errorf("the gateway's upload limit held the copy back %.2f s, want at least 0.3 (the copy did not share it)", got)
	}
}
