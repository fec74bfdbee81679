package gateway_test

import (
	"errors"
	"maps"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// The overview names what needs attention, each once: a volume whose last backup failed (until
// a backup of it succeeds), a backup found damaged, a volume with no backup that no policy
// covers (not one a policy covers), a project near its quota; and it counts the backups. A
// member of another project sees none of it.
func TestOverviewNamesWhatNeedsAttention(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	for _, name := range []string{"good", "failing", "bare", "covered", "target"} {
		if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, name+".img", 128<<10), Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily"}, VolumeRefs: []string{"covered"}}); err != nil {
		t.Fatal(err)
	}
	good, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "good"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "failing"}); err != nil {
		t.Fatal(err)
	}
	// The next backup of "failing" cannot store its packs.
	var f *faulty.Faulty
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f = faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "packs/", Effect: faulty.Fail})
		return f
	})
	writeAt(t, dir+"/failing.img", 0, 4096, 9)
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "failing", Incremental: true}); err == nil {
		t.Fatal("a backup whose packs cannot be stored succeeded")
	}
	f.Reset()
	// "good" is found damaged: every pack read comes back with a bit flipped.
	f.Add(faulty.Rule{Methods: faulty.GetRange | faulty.Get, Prefix: "packs/", Effect: faulty.Corrupt})
	if _, err := s.VerifyBackup(ctx, good.ID, nil); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("verification through corrupting reads: %v, want damage", err)
	}
	// A restore onto "target" through the same reads fails and leaves the volume in error.
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: good.ID, Volume: "target"}); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("restore through corrupting reads: %v, want damage", err)
	}
	f.Reset()
	two := int64(2)
	if _, err := s.QuotaUpdate(ctx, gateway.DefaultProject, &two, nil); err != nil {
		t.Fatal(err)
	}

	o, err := s.Overview(ctx, gateway.OverviewOptions{Locks: true})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range o.Concerns {
		if _, dup := got[c.Kind+" "+c.Subject]; dup {
			t.Errorf("concern %s %s twice", c.Kind, c.Subject)
		}
		got[c.Kind+" "+c.Subject] = c.Message
	}
	for _, want := range []string{gateway.ConcernBackupFailed + " failing", gateway.ConcernBackupDamaged + " " + good.ID,
		gateway.ConcernUnprotected + " bare", gateway.ConcernQuota + " backups", gateway.ConcernVolumeError + " target"} {
		if _, ok := got[want]; !ok {
			t.Errorf("no concern %q in %v", want, got)
		}
	}
	if len(got) != 5 {
		t.Errorf("concerns %v, want the five above (not 'covered', which a policy backs up; not 'good' unprotected; not 'target' unprotected, which is in error)", got)
	}
	if !strings.Contains(got[gateway.ConcernBackupFailed+" failing"], "failing") {
		t.Errorf("the failed backup's concern: %q", got[gateway.ConcernBackupFailed+" failing"])
	}
	if o.Volumes != 5 || o.Backups[index.BackupAvailable] != 2 || o.Backups[index.BackupError] != 1 || o.Succeeded != 2 || o.Failed != 1 {
		t.Errorf("overview counts: %+v", o)
	}
	// /metrics counts the same concerns, for alerts: each kind found, in its project; every
	// other kind at 0.
	want := map[string]float64{}
	for _, k := range []string{gateway.ConcernBackupFailed, gateway.ConcernBackupDamaged, gateway.ConcernUnprotected,
		gateway.ConcernQuota, gateway.ConcernVolumeError} {
		want["cairn_attention "+k+" admin"] = 1
	}
	for _, k := range []string{gateway.ConcernCheck, gateway.ConcernGCFailed, gateway.ConcernOverdue,
		gateway.ConcernPolicyFailed, gateway.ConcernServiceDown, gateway.ConcernStaleLock} {
		want["cairn_attention "+k+" "] = 0
	}
	if got := series(t, s, "cairn_attention"); !maps.Equal(got, want) {
		t.Errorf("cairn_attention series %v, want %v", got, want)
	}

	// Once a backup of "failing" succeeds, its failure is past.
	unlimited := int64(-1)
	if _, err := s.QuotaUpdate(ctx, gateway.DefaultProject, &unlimited, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "failing", Incremental: true}); err != nil {
		t.Fatal(err)
	}
	if o, err = s.Overview(ctx, gateway.OverviewOptions{Locks: true}); err != nil {
		t.Fatal(err)
	}
	for _, c := range o.Concerns {
		if c.Kind == gateway.ConcernBackupFailed {
			t.Errorf("after a good backup of it: %+v", c)
		}
	}

	other, err := s.Overview(as("u2", "p2", false), gateway.OverviewOptions{All: true, Locks: true})
	if err != nil {
		t.Fatal(err)
	}
	if other.Volumes != 0 || len(other.Concerns) != 0 || len(other.Backups) != 0 {
		t.Errorf("another project's member sees %+v", other)
	}
}
