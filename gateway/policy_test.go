package gateway_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// A policy's calendar without a time zone is read in the server's local zone, as systemd
// reads a timer's and as the keep rules make their buckets; one that names a zone keeps it.
// The gateway's clock is UTC, so without the rule '02:00' ran at 02:00 UTC. Not parallel: it
// sets time.Local (the zone is never UTC, whatever the host's).
func TestPolicyScheduleInTheServersZone(t *testing.T) {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	old := time.Local
	time.Local = loc
	t.Cleanup(func() { time.Local = old }) // after the service's Close, registered below
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		schedule string
		zone     *time.Location
	}{
		{"02:00", loc},
		{"Mon..Fri 02:00", loc},
		{"02:00 UTC", time.UTC},
	} {
		name := fmt.Sprintf("p%d", i)
		if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: name, Schedule: tc.schedule,
			Keep: gateway.KeepRules{Last: 2}}, VolumeRefs: []string{"vm"}}); err != nil {
			t.Fatal(err)
		}
		st, err := s.PolicyStatus(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if at := st.NextRun.In(tc.zone); at.Hour() != 2 || at.Minute() != 0 {
			t.Errorf("next run of %q is %s, %s: want 02:00 in %s", tc.schedule, st.NextRun.Format(time.RFC3339),
				at.Format("15:04 MST"), tc.zone)
		}
	}
}

// A policy with --incremental --full-every 3 takes a full backup every third run, also when
// its keep rules are shorter than that: its prune removes the chain's full and makes the
// oldest incremental it keeps the chain's base, so counting the chain back to its base never
// reaches 3 (docs/design.md, "Policies").
func TestPolicyFullEverySurvivesPrune(t *testing.T) {
	for _, tc := range []struct {
		name string
		keep gateway.KeepRules
	}{
		{"keep-last 2", gateway.KeepRules{Last: 2}},
		{"keep all", gateway.KeepRules{Last: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dir := newService(t)
			ctx := adminCtx()
			if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 256<<10), Name: "vm"}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
				Incremental: true, FullEvery: 3, Keep: tc.keep}, VolumeRefs: []string{"vm"}}); err != nil {
				t.Fatal(err)
			}
			var got []string
			for range 7 {
				if _, err := s.RunPolicy(ctx, "nightly"); err != nil {
					t.Fatal(err)
				}
				bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: "vm"})
				if err != nil {
					t.Fatal(err)
				}
				// Its parent is the previous newest, which every prune keeps: never re-linked.
				newest := bs[len(bs)-1]
				switch {
				case !newest.IsIncremental && newest.ParentID == "":
					got = append(got, "full")
				case newest.IsIncremental && newest.ParentID != "":
					got = append(got, "incremental")
				default:
					t.Fatalf("backup %s: incremental %v with parent %q", newest.ID, newest.IsIncremental, newest.ParentID)
				}
			}
			want := []string{"full", "incremental", "incremental", "full", "incremental", "incremental", "full"}
			if !slices.Equal(got, want) {
				t.Fatalf("7 runs with --full-every 3 took %v, want %v", got, want)
			}
		})
	}
}

// A policy names its volumes by id, and a volume forgotten and registered again keeps its id,
// also when an admin registers it into another project. The policy of the first project must
// then neither show the volume (its name is the other project's) nor try to back it up.
func TestPolicySkipsAVolumeNowOfAnotherProject(t *testing.T) {
	s, dir := newService(t)
	admin, p1 := adminCtx(), as("alice", "p1", false)
	img := image(t, dir, "vm.img", 64<<10)
	v, err := s.ManageVolume(p1, gateway.ManageRequest{Path: img, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePolicy(p1, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 2}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnmanageVolume(admin, v.ID); err != nil {
		t.Fatal(err)
	}
	again, err := s.ManageVolume(admin, gateway.ManageRequest{Path: img, Name: "secret", Project: "p2"})
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != v.ID {
		t.Fatalf("the volume registered again got a new id (%s, was %s): the set-up is wrong", again.ID, v.ID)
	}
	st, err := s.PolicyStatus(p1, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.VolumeNames) != 0 || len(st.Overdue) != 0 {
		t.Errorf("p1's policy shows volumes %v (overdue %v): want none, the volume is p2's now", st.VolumeNames, st.Overdue)
	}
	if _, err := s.RunPolicy(p1, "nightly"); err != nil {
		t.Errorf("p1's policy run: %v, want nothing to do", err)
	}
}

// A policy run whose prune could not remove a backup it should have is a failed run, with the
// reason: it said succeeded, and a policy whose retention never happens (its backups pile up
// until the quota refuses the next) looked healthy.
func TestPolicyRunFailsWhenItsPruneFails(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 1}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RunPolicy(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: "vm"})
	if err != nil || len(bs) != 1 {
		t.Fatalf("backups after the first run: %v, %v", bs, err)
	}
	// Neither its manifest nor the manifest's second copy reads back: the second run's prune
	// cannot remove it.
	for _, sub := range []string{"manifests", "manifest-copies"} {
		if err := os.WriteFile(filepath.Join(dir, "repo", sub, bs[0].ID), []byte("damaged"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.RunPolicy(ctx, "nightly")
	if err == nil || st.LastResult != gateway.RunFailed || st.LastError == "" {
		t.Fatalf("a run whose prune failed: %v, result %q (%q): want failed", err, st.LastResult, st.LastError)
	}
	// What it did says so too: its backup made, its prune failed.
	if d := st.LastDid; len(d) != 1 || d[0].Volume != "vm" || d[0].BackupID == "" || d[0].BackupID == bs[0].ID || d[0].Error == "" {
		t.Errorf("what the failed run did: %+v, want vm's new backup and the prune's error", d)
	}
}

// A policy whose volume was forgotten can still be changed without naming its volumes again:
// a change of its schedule tried to find every volume it had named, and refused with "volume
// <id> not found" for the forgotten one (which the policy's runs already skip).
func TestPolicyUpdateAfterAVolumeWasForgotten(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vm1, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm1.img", 64<<10), Name: "vm1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm2.img", 64<<10), Name: "vm2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 2}}, VolumeRefs: []string{"vm1", "vm2"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnmanageVolume(ctx, "vm2"); err != nil {
		t.Fatal(err)
	}
	p, err := s.UpdatePolicy(ctx, "nightly", nil, func(p *gateway.Policy) { p.Schedule = "weekly" })
	if err != nil {
		t.Fatalf("schedule change of a policy one of whose volumes was forgotten: %v", err)
	}
	if p.Schedule != "weekly" || !slices.Equal(p.Volumes, []string{vm1.ID}) {
		t.Fatalf("policy after the change: schedule %q, volumes %v; want weekly, [%s]", p.Schedule, p.Volumes, vm1.ID)
	}
}

// A policy with VerifyNew verifies each backup it makes; one that fails (its blocks read back
// damaged) is not followed by the volume's prune, so the older, sound backup the keep rules
// would have removed stays.
func TestPolicyVerifyNewSkipsThePruneOfADamagedBackup(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 256<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		VerifyNew: true, Keep: gateway.KeepRules{Last: 1}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	st, err := s.RunPolicy(ctx, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: "vm"})
	if err != nil || len(bs) != 1 || bs[0].LastVerify == nil || bs[0].LastVerify.Result != "ok" {
		t.Fatalf("after the first run: %+v, %v; want one backup, verified ok", bs, err)
	}
	first := bs[0].ID
	if want := (gateway.PolicyDid{VolumeID: bs[0].VolumeID, Volume: "vm", BackupID: first, Verified: true, Kept: 1}); !slices.Equal(st.LastDid, []gateway.PolicyDid{want}) {
		t.Errorf("what the first run did: %+v, want %+v", st.LastDid, want)
	}
	// From now on every read of a pack comes back with a bit flipped.
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.GetRange | faulty.Get, Prefix: "packs/", Effect: faulty.Corrupt})
		return f
	})
	st, err = s.RunPolicy(ctx, "nightly")
	if err == nil || st.LastResult != gateway.RunFailed || !strings.Contains(st.LastError, "its prune was skipped") {
		t.Fatalf("a run whose new backup is damaged: %v, result %q (%q)", err, st.LastResult, st.LastError)
	}
	if d := st.LastDid; len(d) != 1 || d[0].BackupID == "" || d[0].BackupID == first || d[0].Verified || d[0].Pruned != 0 || !strings.Contains(d[0].Error, "its prune was skipped") {
		t.Errorf("what the second run did: %+v, want its new backup, not verified, no prune", d)
	}
	bs, err = s.ListBackups(ctx, gateway.ListFilter{Volume: "vm"})
	if err != nil || len(bs) != 2 {
		t.Fatalf("after the second run: %d backups (%v), want both: the first kept", len(bs), err)
	}
	for _, b := range bs {
		if b.ID != first && (b.LastVerify == nil || b.LastVerify.Result != "damaged") {
			t.Errorf("the second backup's last_verify: %+v", b.LastVerify)
		}
	}
}

// A prune-only policy backs up nothing and prunes every volume of its project by its rules,
// those that are gone too (the retention of a repository of copies, whose volumes are all
// gone): before, a policy pruned only after its own backups, so such a repository's
// retention needed a 'backup prune' from cron. It leaves other projects alone, never makes
// a volume overdue, and does not count as protecting one.
func TestPruneOnlyPolicyPrunesGoneVolumes(t *testing.T) {
	s, dir := newService(t)
	p1 := as("alice", "p1", false)
	backups := func(ctx context.Context, name string, n int) {
		t.Helper()
		img := image(t, dir, name+".img", 256<<10)
		if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: img, Name: name}); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			writeAt(t, img, int64(i)*64<<10, 4096, byte(i+1))
			if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: name, Incremental: i > 0}); err != nil {
				t.Fatal(err)
			}
		}
	}
	backups(p1, "old", 4)
	if _, err := s.DeleteVolume(p1, "old", true); err != nil {
		t.Fatal(err)
	}
	backups(p1, "live", 3)
	p2 := as("bob", "p2", false)
	backups(p2, "other", 3)
	for _, bad := range []gateway.Policy{
		{Name: "norules", Schedule: "daily", AllOfProject: true, PruneOnly: true},
		{Name: "incr", Schedule: "daily", AllOfProject: true, PruneOnly: true, Incremental: true, Keep: gateway.KeepRules{Last: 1}},
	} {
		if _, err := s.CreatePolicy(p1, gateway.PolicyRequest{Policy: bad}); !errors.Is(err, gateway.ErrInvalid) {
			t.Errorf("prune-only policy %s: %v, want it refused", bad.Name, err)
		}
	}
	if _, err := s.CreatePolicy(p1, gateway.PolicyRequest{Policy: gateway.Policy{Name: "retention", Schedule: "daily",
		AllOfProject: true, PruneOnly: true, Keep: gateway.KeepRules{Last: 2}}}); err != nil {
		t.Fatal(err)
	}
	count := func(ctx context.Context) int {
		t.Helper()
		bs, err := s.ListBackups(ctx, gateway.ListFilter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(bs)
	}
	st, err := s.RunPolicy(p1, "retention")
	if err != nil || st.LastResult != gateway.RunSucceeded {
		t.Fatalf("run of the prune-only policy: %v, %+v", err, st)
	}
	if n := count(p1); n != 4 {
		t.Errorf("p1 has %d backups after the prune-only run, want 2 of each of its volumes, the gone one too", n)
	}
	if n := count(p2); n != 3 {
		t.Errorf("p2 has %d backups after p1's prune-only run, want its 3", n)
	}
	did := map[string][2]int{}
	for _, d := range st.LastDid {
		if d.BackupID != "" || d.Error != "" {
			t.Errorf("a prune-only run did %+v", d)
		}
		did[d.Volume] = [2]int{d.Pruned, d.Kept}
	}
	if want := map[string][2]int{"old": {2, 2}, "live": {1, 2}}; !maps.Equal(did, want) {
		t.Errorf("what the prune-only run did (pruned, kept by volume): %v, want %v", did, want)
	}
	// A new volume of the project without a backup is not covered by it, and not overdue.
	if _, err := s.ManageVolume(p1, gateway.ManageRequest{Path: image(t, dir, "new.img", 64<<10), Name: "new"}); err != nil {
		t.Fatal(err)
	}
	o, err := s.Overview(p1, gateway.OverviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, c := range o.Concerns {
		kinds[c.Kind]++
	}
	if kinds[gateway.ConcernUnprotected] != 1 || kinds[gateway.ConcernOverdue] != 0 {
		t.Errorf("concerns with a prune-only policy over the project: %v, want the new volume unprotected and nothing overdue", o.Concerns)
	}
	// Two periods of its calendar without a backup make no volume of it overdue.
	if _, err := s.CreatePolicy(p1, gateway.PolicyRequest{Policy: gateway.Policy{Name: "often", Schedule: "*:*:0/1",
		AllOfProject: true, PruneOnly: true, Keep: gateway.KeepRules{Last: 2}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2100 * time.Millisecond)
	if st, err := s.PolicyStatus(p1, "often"); err != nil || len(st.Overdue) != 0 {
		t.Errorf("a prune-only policy after two of its periods: overdue %v (%v), want none", st.Overdue, err)
	}
}

// A policy whose object and second copy both fail their checks cannot run: it is not left
// silent (before 2026-12-07 it vanished from 'policy list' and 'cairn status' said nothing
// needed attention, while its volumes' backups stopped). Admins see it listed as damaged and in
// the overview's concerns (a project's members do not: whose it was is not known); it can
// neither be created over nor shown, an admin deletes it, and repair --forget-damaged forgets it.
func TestDamagedPolicyIsShownToAdmins(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	damage := func(name string) {
		t.Helper()
		h := hex.EncodeToString([]byte(name))
		for _, sub := range []string{"meta", "meta-copies"} {
			if err := os.WriteFile(filepath.Join(dir, "repo", sub, "policies", h), []byte("damaged"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range []string{"nightly", "weekly"} {
		if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: name, Schedule: "daily",
			Keep: gateway.KeepRules{Last: 2}}, VolumeRefs: []string{"vm"}}); err != nil {
			t.Fatal(err)
		}
		damage(name)
	}
	ps, err := s.Policies(ctx)
	if err != nil || len(ps) != 2 || ps[0].Name != "nightly" || ps[0].Damaged == "" || ps[1].Damaged == "" {
		t.Fatalf("policies with two damaged: %+v, %v; want both listed damaged", ps, err)
	}
	if ps, err := s.Policies(as("alice", "p1", false)); err != nil || len(ps) != 0 {
		t.Errorf("a project member's policies: %+v, %v; want none", ps, err)
	}
	o, err := s.Overview(ctx, gateway.OverviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	damaged := 0
	for _, c := range o.Concerns {
		if c.Kind == gateway.ConcernPolicyFailed && strings.Contains(c.Message, "is damaged") {
			damaged++
		}
	}
	if damaged != 2 {
		t.Errorf("concerns: %+v; want both damaged policies", o.Concerns)
	}
	if _, err := s.PolicyStatus(ctx, "nightly"); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("show of a damaged policy: %v, want ErrCorrupt", err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 2}}, VolumeRefs: []string{"vm"}}); !errors.Is(err, gateway.ErrExists) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("create over a damaged policy: %v, want refused as damaged", err)
	}
	if err := s.DeletePolicy(as("alice", gateway.DefaultProject, false), "nightly"); err == nil {
		t.Error("a project member deleted a damaged policy")
	}
	if err := s.DeletePolicy(ctx, "nightly"); err != nil {
		t.Fatalf("an admin's delete of a damaged policy: %v", err)
	}
	rep, err := s.Repair(ctx, gateway.RepairOptions{})
	if err != nil || len(rep.LostMeta) != 1 || rep.LostMeta[0].Name != "weekly" || rep.LostMeta[0].Forgotten {
		t.Fatalf("repair: %+v, %v; want policies/weekly lost and kept", rep, err)
	}
	if rep, err = s.Repair(ctx, gateway.RepairOptions{ForgetDamaged: true}); err != nil || len(rep.LostMeta) != 1 || !rep.LostMeta[0].Forgotten {
		t.Fatalf("repair --forget-damaged: %+v, %v; want policies/weekly forgotten", rep, err)
	}
	if ps, err := s.Policies(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("policies after: %+v, %v; want none", ps, err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "weekly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 2}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatalf("create again after the forget: %v", err)
	}
	if c, err := s.Check(ctx, repo.CheckOptions{}); err != nil || !c.OK() {
		t.Fatalf("check after: %+v, %v", c, err)
	}
}

// A policy object removed outside cairn, its copy intact, stops the policy (it is absent to
// every reader), and repair keeps the copy and names the object until the admin decides:
// RestoreMeta stores it again and the policy is back with its rules (docs/design.md, "A
// metadata object lost, its copy left").
func TestALostPolicyIsStoredAgainByRepair(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 4}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString([]byte("nightly"))
	cp := filepath.Join(dir, "repo", "meta-copies", "policies", h)
	if err := os.Remove(filepath.Join(dir, "repo", "meta", "policies", h)); err != nil {
		t.Fatal(err)
	}
	// Admins see it listed as missing (it does not run: nothing reads a copy for a missing
	// object), and the overview names it before any check; a project's member sees nothing.
	if ps, err := s.Policies(ctx); err != nil || len(ps) != 1 || ps[0].Name != "nightly" || !ps[0].Missing || ps[0].Keep.Last != 0 {
		t.Fatalf("policies with the object lost: %+v, %v; want nightly listed as missing, its rules unread", ps, err)
	}
	if ps, err := s.Policies(as("alice", gateway.DefaultProject, false)); err != nil || len(ps) != 0 {
		t.Fatalf("a member's policies with the object lost: %+v, %v; want none", ps, err)
	}
	if !concerned(t, s, ctx, gateway.ConcernPolicyFailed, "nightly", "--restore-meta") {
		t.Error("the overview does not name the lost policy")
	}
	if _, err := s.PolicyStatus(ctx, "nightly"); !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "missing while its second copy is left") {
		t.Errorf("an admin's show of the lost policy: %v; want the loss named", err)
	}
	if _, err := s.PolicyStatus(as("alice", gateway.DefaultProject, false), "nightly"); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("a member's show of the lost policy: %v; want not found", err)
	}
	nightly := repo.MetaObject{Kind: "policies", Name: "nightly"}
	rep, err := s.Repair(ctx, gateway.RepairOptions{})
	if err != nil || len(rep.MissingMeta) != 1 || rep.MissingMeta[0].MetaObject != nightly || rep.MissingMeta[0].Restored || rep.MissingMeta[0].Forgotten {
		t.Fatalf("repair: %+v, %v; want policies/nightly missing and kept", rep, err)
	}
	if _, err := os.Stat(cp); err != nil {
		t.Fatalf("repair removed the copy: %v", err)
	}
	if rep, err = s.Repair(ctx, gateway.RepairOptions{RestoreMeta: true, ForgetDamaged: true}); err != nil || len(rep.MissingMeta) != 1 || !rep.MissingMeta[0].Restored {
		t.Fatalf("repair with RestoreMeta: %+v, %v; want policies/nightly stored again (restoring wins over forgetting)", rep, err)
	}
	ps, err := s.Policies(ctx)
	if err != nil || len(ps) != 1 || ps[0].Name != "nightly" || ps[0].Keep.Last != 4 {
		t.Fatalf("policies after the restore: %+v, %v; want nightly keeping the last 4", ps, err)
	}
	if c, err := s.Check(ctx, repo.CheckOptions{}); err != nil || !c.OK() {
		t.Fatalf("check after: %+v, %v", c, err)
	}
	// Lost again, an admin may delete it: its copy goes, and the policy with it.
	if err := os.Remove(filepath.Join(dir, "repo", "meta", "policies", h)); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePolicy(ctx, "nightly"); err != nil {
		t.Fatalf("an admin's delete of the lost policy: %v", err)
	}
	if _, err := os.Stat(cp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copy after the delete: %v", err)
	}
	if ps, err := s.Policies(ctx); err != nil || len(ps) != 0 {
		t.Fatalf("policies after the delete: %+v, %v", ps, err)
	}
}

// A settings object removed outside cairn (its copy left) does not drop its guard on a guess:
// deletes fail, naming the loss, until an admin decides; restored, the minimum age holds again
// (docs/design.md, "A metadata object lost, its copy left"). Before, the minimum age silently
// became none.
func TestALostSettingsObjectKeepsDeletesGuarded(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.UpdateSettings(ctx, func(st *gateway.Settings) error { st.MinAge = gateway.Duration(time.Hour); return nil }); err != nil {
		t.Fatal(err)
	}
	b := backedUp(t, s, dir)
	if err := os.Remove(filepath.Join(dir, "repo", "meta", "settings", hex.EncodeToString([]byte("repository")))); err != nil {
		t.Fatal(err)
	}
	member := as("bob", gateway.DefaultProject, false)
	if _, err := s.DeleteBackup(member, b.ID, false); !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "--restore-meta") {
		t.Fatalf("a delete with the settings object lost: %v; want it refused, naming the loss", err)
	}
	if !concerned(t, s, ctx, "", "settings", "deletes and prunes are refused") {
		t.Error("the overview does not say deletes are refused")
	}
	if rep, err := s.Repair(ctx, gateway.RepairOptions{RestoreMeta: true}); err != nil || len(rep.MissingMeta) != 1 || !rep.MissingMeta[0].Restored {
		t.Fatalf("repair --restore-meta: %+v, %v", rep, err)
	}
	if _, err := s.DeleteBackup(member, b.ID, false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "minimum age") {
		t.Fatalf("a delete of a young backup after the restore: %v; want the minimum age to refuse it", err)
	}
	// An admin may also set the settings anew over a lost object.
	if err := os.Remove(filepath.Join(dir, "repo", "meta", "settings", hex.EncodeToString([]byte("repository")))); err != nil {
		t.Fatal(err)
	}
	if st, err := s.UpdateSettings(ctx, func(st *gateway.Settings) error { st.MinAge = 0; return nil }); err != nil || st.MinAge != 0 {
		t.Fatalf("settings set anew over a lost object: %+v, %v", st, err)
	}
	if _, err := s.DeleteBackup(member, b.ID, false); err != nil {
		t.Fatalf("a delete after the minimum age was set to none: %v", err)
	}
}

// A run prunes each volume by the rules of its policy as the repository holds it when it gets
// there: an admin who corrects a mistaken --keep-last 1 during a run over many volumes (here
// through another gateway, as the run stores volume vm2's count) spares the volumes not yet
// pruned, and one who deletes the policy stops the run, which neither prunes vm2 nor backs up
// vm3. Until 2026-12-08 the run pruned every volume by the rules it read at its start, which
// no later command could undo.
func TestPolicyRunPrunesByTheRulesOfItsPolicyNow(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(ctx context.Context, b *gateway.Service) error
		runErr error
		want   map[string]int // backups of each volume after the run
		vm1    bool           // vm1's backup fails first (its image is a directory)
	}{
		{"its keep rules updated", func(ctx context.Context, b *gateway.Service) error {
			_, err := b.UpdatePolicy(ctx, "nightly", nil, func(p *gateway.Policy) { p.Keep.Last = 30 })
			return err
		}, nil, map[string]int{"vm1": 1, "vm2": 3, "vm3": 3}, false},
		{"deleted", func(ctx context.Context, b *gateway.Service) error { return b.DeletePolicy(ctx, "nightly") },
			gateway.ErrNotFound, map[string]int{"vm1": 1, "vm2": 3, "vm3": 2}, false},
		// A volume that failed before does not hide the delete: the run still says the policy
		// went (and runs no copies), where it reported the first volume's failure.
		{"deleted after a volume failed", func(ctx context.Context, b *gateway.Service) error { return b.DeletePolicy(ctx, "nightly") },
			gateway.ErrNotFound, map[string]int{"vm1": 2, "vm2": 3, "vm3": 2}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b, _ := twoGateways(t, dir)
			ctx := adminCtx()
			gateway.SetFullCatchUpEveryForTest(t, 0)
			names := []string{"vm1", "vm2", "vm3"}
			for _, name := range names {
				vol := image(t, dir, name+".img", 64<<10)
				if _, err := a.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: name}); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: name}); err != nil {
						t.Fatal(err)
					}
				}
			}
			if _, err := a.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
				Keep: gateway.KeepRules{Last: 1}}, VolumeRefs: names}); err != nil {
				t.Fatal(err)
			}
			catchUp(t, b) // b knows the volumes, so its update keeps them in the policy
			if c.vm1 {
				img := filepath.Join(dir, "vm1.img")
				if err := os.Remove(img); err != nil {
					t.Fatal(err)
				}
				if err := os.Mkdir(img, 0o700); err != nil {
					t.Fatal(err)
				}
			}
			runKey := "meta/policy-runs/" + hex.EncodeToString([]byte("nightly"))
			var stores int
			var changed error
			gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
				return gateway.BeforePutForTest(be, func(k string) {
					// The run stores its start, then each volume's count after its backup and
					// before its prune: the third store is vm2's (the second, when vm1's
					// backup failed).
					if k == runKey {
						at := 3
						if c.vm1 {
							at = 2
						}
						if stores++; stores == at {
							changed = c.change(ctx, b)
						}
					}
				})
			})
			if _, err := a.RunPolicy(ctx, "nightly"); !errors.Is(err, c.runErr) {
				t.Fatalf("the run: %v, want %v", err, c.runErr)
			}
			if stores < 2 || changed != nil {
				t.Fatalf("the change during the run: %d stores of the run's state, %v", stores, changed)
			}
			for _, name := range names {
				bs, err := a.ListBackups(ctx, gateway.ListFilter{Volume: name})
				if err != nil {
					t.Fatal(err)
				}
				if len(bs) != c.want[name] {
					t.Errorf("volume %s has %d backups after the run, want %d", name, len(bs), c.want[name])
				}
			}
		})
	}
}
