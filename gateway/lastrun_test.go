package gateway_test

import (
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// How the last check ended shows on every gateway on the repository: a check through one that
// found damage is the other's concern too, until a later check through either ends clean.
// Before, it was the history of the gateway that ran it alone.
func TestLastCheckShowsOnEveryGateway(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	gateway.SetFullCatchUpEveryForTest(t, 0)
	vol, _ := distinctVolume(t, dir, "vm.img", 23)
	if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: vol}); err != nil {
		t.Fatal(err)
	}
	damagePack(t, onlyPack(t, dir))
	if rep, err := a.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || rep.OK() {
		t.Fatalf("check of a damaged pack: %v, %v; want problems", rep, err)
	}
	concerns := func(s *gateway.Service) int { return concernsOf(t, s, gateway.ConcernCheck) }
	catchUp(t, b)
	m, err := b.Maintenance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.LastCheck == nil || m.LastCheck.OK() || m.LastCheck.Host == "" {
		t.Fatalf("the other gateway's last check: %+v, want a's, with its problems and host", m.LastCheck)
	}
	if n := concerns(b); n != 1 {
		t.Errorf("the other gateway lists %d check concerns, want 1", n)
	}
	// A later check through b that finds nothing (of the metadata alone) is the newest on both.
	if rep, err := b.Check(ctx, repo.CheckOptions{}); err != nil || !rep.OK() {
		t.Fatalf("check of the metadata: %v, %v; want no problems", rep, err)
	}
	catchUp(t, a)
	if n := concerns(a); n != 0 {
		t.Errorf("after a clean check through b, a lists %d check concerns, want none", n)
	}
	// A check through a whose record the repository did not take stays a's newest: the
	// catch-up does not put b's older one over it.
	faultyRepository(t, a).Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta/last-run/", Effect: faulty.Fail})
	if rep, err := a.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || rep.OK() {
		t.Fatalf("check of a damaged pack: %v, %v; want problems", rep, err)
	}
	catchUp(t, a)
	if n := concerns(a); n != 1 {
		t.Errorf("after its own check found problems, a lists %d check concerns, want 1", n)
	}
}
