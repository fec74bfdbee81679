package gateway_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// threeGateways opens three services, each with its own index (state dir), on one new
// repository in dir whose projects have a quota of limit backups.
func threeGateways(tb testing.TB, dir string, limit int64) []*gateway.Service {
	tb.Helper()
	ctx := context.Background()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), DefaultQuota: &gateway.Quota{Backups: limit, BackupGigabytes: 1000}}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		tb.Fatal(err)
	}
	if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
		tb.Fatal(err)
	}
	var gws []*gateway.Service
	for i := range 3 {
		c := cfg
		c.StateDir = filepath.Join(dir, fmt.Sprintf("state-%d", i))
		s, err := gateway.Open(ctx, c)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { s.Close() })
		gws = append(gws, s)
	}
	return gws
}

// requestAtOnce asks for n backups of new small volumes at once, spread over gws, and returns
// the admitted ones' jobs and how many the quota refused; any other error fails tb.
func requestAtOnce(tb testing.TB, dir string, gws []*gateway.Service, n int) (jobs []gateway.Job, refused int) {
	tb.Helper()
	admin := adminCtx()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for i := range n {
		v := image(tb, dir, fmt.Sprintf("v%03d.img", i), 32<<10)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, job, err := gws[i%len(gws)].StartBackup(admin, gateway.BackupRequest{Volume: v})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				jobs = append(jobs, job)
			case errors.Is(err, gateway.ErrQuota):
				refused++
			default:
				tb.Error(err)
			}
		}()
	}
	wg.Wait()
	return jobs, refused
}

// Three gateways with their own indexes on one repository, 60 backup requests at once spread
// over them, a project quota of 25 backups: together they never admit more than 25 (each
// writes its reservation to the repository before it counts the others'), every admitted one
// ends available, and a refused one says why.
func TestQuotaAcrossGateways(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	const limit = 25
	gws := threeGateways(t, dir, limit)
	admin := adminCtx()
	jobs, refused := requestAtOnce(t, dir, gws, 60)
	if len(jobs) > limit || len(jobs) == 0 || len(jobs)+refused != 60 {
		t.Fatalf("admitted %d and refused %d of 60 under a quota of %d", len(jobs), refused, limit)
	}
	for _, job := range jobs {
		if err := job(admin); err != nil {
			t.Fatal(err)
		}
	}
	// Every gateway learns the others' backups and then counts them as backups, not
	// reservations: one more is refused everywhere once the quota is full.
	for _, s := range gws {
		if err := s.SyncBackups(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("admitted %d, refused %d", len(jobs), refused)
	if len(jobs) == limit {
		v := image(t, dir, "extra.img", 32<<10)
		for i, s := range gws {
			if _, _, err := s.StartBackup(admin, gateway.BackupRequest{Volume: v}); !errors.Is(err, gateway.ErrQuota) {
				t.Fatalf("gateway %d admitted a backup past the full quota: %v", i, err)
			}
		}
	}
}

// Backups another gateway accepted while their project had no limit (so with no reservation
// object) count once a limit is set: they were in neither this gateway's index nor the
// reservations, and it admitted the whole new quota on top of them.
func TestALimitSetWhileAnotherGatewayCreatesCountsItsBackups(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	admin := adminCtx()
	for i := range 3 {
		if _, _, err := a.StartBackup(admin, gateway.BackupRequest{Volume: image(t, dir, fmt.Sprintf("a%d.img", i), 32<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	limit := int64(4)
	if _, err := a.QuotaUpdate(admin, gateway.DefaultProject, &limit, nil); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if err := b.SyncBackups(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.StartBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "b0.img", 32<<10)}); err != nil {
		t.Fatalf("the fourth backup of a quota of 4: %v", err)
	}
	if _, _, err := b.StartBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "b1.img", 32<<10)}); !errors.Is(err, gateway.ErrQuota) {
		t.Fatalf("a fifth backup while another gateway creates three of a quota of 4: %v, want the quota exceeded", err)
	}
}

// Another gateway's reservation goes once that gateway has known its backup committed for
// the grace, by its own clock. It went by the record's time, the writer's clock: a writer
// minutes behind had its reservation removed by the first gateway that learned the backup,
// and a third that had not learned it yet counted neither the reservation nor the backup,
// and admitted one past the quota.
func TestQuotaReservationOfAWriterWhoseClockIsBehind(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	gws := threeGateways(t, dir, 2)
	a, b, c := gws[0], gws[1], gws[2]
	admin := adminCtx()
	first, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "v1.img", 32<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	// The writer's clock was three minutes behind: so is the commit time b adopted.
	if _, err := b.Index().UpdateBackup(first.ID, func(rec *index.Backup) error {
		rec.UpdatedAt = rec.UpdatedAt.Add(-3 * time.Minute)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.StartBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "v2.img", 32<<10)}); err != nil {
		t.Fatal(err)
	}
	// c has learned neither backup: it must count both reservations.
	if _, _, err := c.StartBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "v3.img", 32<<10)}); !errors.Is(err, gateway.ErrQuota) {
		t.Fatalf("a third backup under a quota of 2 was admitted by a gateway that had learned neither of the others: %v", err)
	}
}

// quotaOfOneOnA opens three gateways on one repository in dir (a default of 10 backups), sets
// the default project's quota to 1 backup through the first and catches the second up.
func quotaOfOneOnA(t *testing.T, dir string) (a, b *gateway.Service) {
	t.Helper()
	gws := threeGateways(t, dir, 10)
	a, b = gws[0], gws[1]
	one := int64(1)
	if _, err := a.QuotaUpdate(adminCtx(), gateway.DefaultProject, &one, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(adminCtx()); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// A quota set through one gateway applies on the others from their next full catch-up, and so
// does its reset: until 2026-12-05 only after a rebuild-index, so a project limited to 1
// backup through one gateway could go on backing up through another.
func TestQuotaSetOnOneGatewayAppliesOnAnother(t *testing.T) {
	dir := t.TempDir()
	a, b := quotaOfOneOnA(t, dir)
	admin := adminCtx()
	if u, err := b.QuotaUsage(admin, gateway.DefaultProject); err != nil || u.Backups.Limit != 1 {
		t.Fatalf("the other gateway's quota after its catch-up: %+v, %v; want a limit of 1", u, err)
	}
	if _, err := b.CreateBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "v1.img", 32<<10)}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreateBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "v2.img", 32<<10)}); !errors.Is(err, gateway.ErrQuota) {
		t.Fatalf("a second backup through the other gateway under a quota of 1 set through the first: %v", err)
	}
	if err := a.QuotaReset(admin, gateway.DefaultProject); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(admin); err != nil {
		t.Fatal(err)
	}
	if u, err := b.QuotaUsage(admin, gateway.DefaultProject); err != nil || u.Backups.Limit != 10 {
		t.Fatalf("the other gateway's quota after a reset and its catch-up: %+v, %v; want the default of 10", u, err)
	}
}

// /metrics says each project's quota use beside its limit (cairn_quota_used and
// cairn_quota_limit by project and resource): a project with backups under the default
// quota, one with limits of its own and no backups yet; a backup in error does not count.
func TestQuotaUseIsAMetric(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), DefaultQuota: &gateway.Quota{Backups: 10, BackupGigabytes: -1}}
	s := initOpened(t, cfg)
	defer s.Close()
	admin := adminCtx()
	var last *index.Backup
	for i := range 4 {
		b, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: image(t, dir, fmt.Sprintf("v%d.img", i), 256<<10), Project: "p1"})
		if err != nil {
			t.Fatal(err)
		}
		last = b
	}
	if _, err := s.ResetBackupState(admin, last.ID, "error"); err != nil {
		t.Fatal(err)
	}
	four := int64(4)
	if _, err := s.QuotaUpdate(admin, "p2", &four, nil); err != nil {
		t.Fatal(err)
	}
	got := series(t, s, "cairn_quota_")
	want := map[string]float64{
		// The backup reset to error keeps its data, and counts [TestAResetToErrorDoesNotFreeQuota].
		"cairn_quota_used p1 backups": 4, "cairn_quota_limit p1 backups": 10,
		"cairn_quota_used p1 backup_gigabytes": 4, "cairn_quota_limit p1 backup_gigabytes": -1,
		"cairn_quota_used p2 backups": 0, "cairn_quota_limit p2 backups": 4,
		"cairn_quota_used p2 backup_gigabytes": 0, "cairn_quota_limit p2 backup_gigabytes": -1,
	}
	if !maps.Equal(got, want) {
		t.Errorf("quota series: %v, want %v", got, want)
	}
}

// series gathers s's metrics whose names start with prefix: "name label-value..." → value (a
// gauge's or a counter's).
func series(t *testing.T, s *gateway.Service, prefix string) map[string]float64 {
	t.Helper()
	mfs, err := s.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), prefix) {
			continue
		}
		for _, mt := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range mt.GetLabel() {
				key += " " + l.GetValue()
			}
			got[key] = mt.GetGauge().GetValue() + mt.GetCounter().GetValue()
		}
	}
	return got
}

// A quota record removed outside cairn (its copy left) is a loss, not a reset through another
// gateway: the catch-up keeps the project's limits, and the overview names it to admins, until
// repair stores it again (docs/design.md, "A metadata object lost, its copy left"). Before,
// every gateway dropped the project's limits at its next catch-up.
func TestALostQuotaRecordKeepsItsLimits(t *testing.T) {
	dir := t.TempDir()
	a, b := quotaOfOneOnA(t, dir)
	admin := adminCtx()
	if err := os.Remove(filepath.Join(dir, "repo", "meta", "quotas", hex.EncodeToString([]byte(gateway.DefaultProject)))); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*gateway.Service{a, b} {
		if err := g.SyncBackups(admin); err != nil {
			t.Fatal(err)
		}
		if u, err := g.QuotaUsage(admin, gateway.DefaultProject); err != nil || u.Backups.Limit != 1 {
			t.Fatalf("the quota after its record was removed outside cairn and a catch-up: %+v, %v; want the limit of 1 kept", u, err)
		}
		if !concerned(t, g, admin, gateway.ConcernQuota, "", "quota record in the repository is missing") {
			t.Error("the overview does not name the missing quota record")
		}
	}
	if _, err := a.Repair(admin, gateway.RepairOptions{RestoreMeta: true}); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(admin); err != nil {
		t.Fatal(err)
	}
	if u, err := b.QuotaUsage(admin, gateway.DefaultProject); err != nil || u.Backups.Limit != 1 {
		t.Fatalf("the quota after repair: %+v, %v", u, err)
	}
	if c, err := b.Check(admin, repo.CheckOptions{}); err != nil || !c.OK() {
		t.Fatalf("check after: %+v, %v", c, err)
	}
}
