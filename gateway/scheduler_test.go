package gateway_test

import (
	"context"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// A policy deleted through another gateway stops running on this one: the scheduler reads
// the policies again only every minute, and ran its copy of a deleted (or changed) policy
// until then. A run now reads its policy from the repository as it starts.
func TestPolicyDeletedThroughAnotherGatewayStopsRunningHere(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	policyOfAVolume(t, b, image(t, dir, "vol.img", 64<<10), gateway.Policy{Name: "often", Schedule: "*:*:*",
		Keep: gateway.KeepRules{Last: -1}})
	runScheduler(t, b)
	for deadline := time.Now().Add(10 * time.Second); vmBackups(t, b) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the policy made no backup through the second gateway in 10 s of a schedule of every second")
		}
	}
	if err := a.DeletePolicy(ctx, "often"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a run in progress finishes
	before := vmBackups(t, b)
	time.Sleep(2500 * time.Millisecond)
	if n := vmBackups(t, b) - before; n > 0 {
		t.Fatalf("the policy deleted through the other gateway made %d more backups here", n)
	}
}

// A policy run that a stopped (or killed) gateway left unfinished runs again when the
// scheduler starts: it was recorded failed with its start as its last run, so the volumes it
// had not reached waited for the next scheduled time (a whole day for a daily policy).
func TestPolicyRunInterruptedByAStopRunsAgainAtStart(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	policyOfAVolume(t, s, image(t, dir, "vol.img", 64<<10), gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 7}})
	gateway.LeaveRunningPolicyForTest(s, "nightly", time.Now())
	runScheduler(t, s)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if vmBackups(t, s) > 0 {
			break
		}
		if time.Now().After(deadline) {
			st, _ := s.PolicyStatus(ctx, "nightly")
			t.Fatalf("the interrupted run did not run again at start (last result %s, next run %v)", st.LastResult, st.NextRun)
		}
	}
}

// slowPackStore holds every pack Put until its context ends, and then a moment more, as a
// store answering slowly does; hit closes at the first.
type slowPackStore struct {
	backend.Backend
	once sync.Once
	hit  chan struct{}
}

func (b *slowPackStore) Put(ctx context.Context, key string, data []byte) error {
	if !strings.HasPrefix(key, "packs/") {
		return b.Backend.Put(ctx, key, data)
	}
	b.once.Do(func() { close(b.hit) })
	<-ctx.Done()
	time.Sleep(300 * time.Millisecond)
	return ctx.Err()
}

// RunPolicies returns only once the runs it started have ended: 'cairn serve' closes the
// service when it returns, and a run that outlived it went on reading and writing an index
// closed under it (Badger's tables are unmapped by then). The run ends recorded as interrupted.
func TestRunPoliciesReturnsOnceItsRunsEnded(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	policyOfAVolume(t, s, image(t, dir, "vol.img", 1<<20), gateway.Policy{Name: "often", Schedule: "*:*:*",
		Keep: gateway.KeepRules{Last: 7}})
	slow := &slowPackStore{hit: make(chan struct{})}
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend { slow.Backend = be; return slow })
	stop := runScheduler(t, s)
	select {
	case <-slow.hit:
	case <-time.After(10 * time.Second):
		stop()
		t.Fatal("no policy run stored a pack in 10 s of a schedule of every second")
	}
	stop()
	st, err := s.PolicyStatus(ctx, "often")
	if err != nil {
		t.Fatal(err)
	}
	if st.LastResult != gateway.RunFailed || !strings.Contains(st.LastError, "interrupted") {
		t.Fatalf("when RunPolicies returned, its run was %s (%q): still running", st.LastResult, st.LastError)
	}
}

// Two gateways on one repository both run the scheduler; a policy's due time runs on one of
// them, once: until 2026-12-05 each ran it from its own index's state, so every gateway made
// its own backup of every volume at every time the calendar named.
func TestPolicyRunsOnceAcrossGateways(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	// Both know the volume (the catch-up adopts it with its backup), so both could back it up.
	backedUpVolume(t, b, dir, 1<<20)
	if err := a.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Volume(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	// Due once, a few seconds from now, on both gateways' clocks.
	at := time.Now().Add(3 * time.Second).Truncate(time.Second)
	if _, err := b.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "once",
		Schedule: at.UTC().Format("2006-01-02 15:04:05") + " UTC", Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	stopA, stopB := runScheduler(t, a), runScheduler(t, b)
	time.Sleep(time.Until(at) + 6*time.Second)
	stopA()
	stopB()
	for _, g := range []*gateway.Service{a, b} {
		if err := g.SyncBackups(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := vmBackups(t, b); n != 2 {
		t.Fatalf("the policy's one due time made %d backups across two gateways, want 1", n-1)
	}
	// Both gateways say what the run did, wherever it ran.
	for name, g := range map[string]*gateway.Service{"a": a, "b": b} {
		st, err := g.PolicyStatus(ctx, "once")
		if err != nil {
			t.Fatal(err)
		}
		if st.Runs != 1 || st.LastResult != gateway.RunSucceeded {
			t.Fatalf("gateway %s says the policy ran %d times (last %q), want once, succeeded", name, st.Runs, st.LastResult)
		}
	}
}

// A policy whose run another gateway holds the claim of does not run here; once that claim
// goes (its gateway died, and the claim was broken as stale) with the run still recorded
// running, this gateway runs it again.
func TestPolicyClaimOfAGoneGatewayIsTakenOver(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetPolicyReloadForTest(t, time.Second)
	ctx := adminCtx()
	policyOfAVolume(t, b, image(t, dir, "vol.img", 64<<10), gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 7}})
	release := gateway.HoldPolicyClaimForTest(t, a, "nightly")
	runScheduler(t, b)
	time.Sleep(3 * time.Second)
	if n := vmBackups(t, b); n != 0 {
		t.Fatalf("the policy ran here (%d backups) while another gateway held its claim", n)
	}
	// This gateway's scheduler tries the claim every second and holds the policy here while it
	// tries: a run asked for then is refused as running here (a CI run of 2026-12-07 met that),
	// so the run is asked for again until it meets the other gateway's claim.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := b.RunPolicy(ctx, "nightly")
		if !errors.Is(err, gateway.ErrConflict) {
			t.Fatalf("policy run while another gateway holds the claim: %v", err)
		}
		if strings.Contains(err.Error(), "another gateway") {
			break
		}
		if !strings.Contains(err.Error(), "running already") || time.Now().After(deadline) {
			t.Fatalf("policy run while another gateway holds the claim: %v", err)
		}
	}
	release()
	for deadline := time.Now().Add(10 * time.Second); vmBackups(t, b) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			st, _ := b.PolicyStatus(ctx, "nightly")
			t.Fatalf("the run left running by a gone gateway was not taken over in 10 s (last result %s)", st.LastResult)
		}
	}
}

// A run on a gateway that did not know the policy's volume yet (managed through another
// gateway after it opened its index) backs it up: it skipped it, and since the run held the
// policy's claim, the gateway that manages the volume did not run the policy either.
func TestPolicyRunOnAnotherGatewayBacksUpItsVolumes(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	for _, name := range []string{"vm", "db"} {
		if _, err := b.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, name+".img", 64<<10), Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "named", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "all", Schedule: "daily",
		AllOfProject: true, Keep: gateway.KeepRules{Last: 7}}}); err != nil {
		t.Fatal(err)
	}
	// In this order: "all" backs up vm again after "named" did.
	for _, run := range []struct {
		policy string
		want   int
	}{{"named", 1}, {"all", 3}} {
		policy, want := run.policy, run.want
		if _, err := a.RunPolicy(ctx, policy); err != nil {
			t.Fatalf("policy %s run on the other gateway: %v", policy, err)
		}
		bs, err := a.ListBackups(ctx, gateway.ListFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != want {
			t.Fatalf("after policy %s ran on the other gateway there are %d backups, want %d", policy, len(bs), want)
		}
	}
}

// A policy run learns the volumes of its project that another gateway managed, but never one
// being unmanaged here: until 2026-12-07 it learned from a record read without volumeRecMu, so
// a run between the unmanage's removal of the index's record and of the repository's brought
// the volume back and backed it up, which stored its record and copy again; the unmanage
// then removed the record alone, and a new index learned the volume from the copy
// (docs/design.md, "The full catch-up also follows").
func TestPolicyRunDuringAnUnmanageDoesNotBringTheVolumeBack(t *testing.T) {
	dir := t.TempDir()
	cfg, s, v := managedHere(t, dir)
	ctx := adminCtx()
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "all", Schedule: "daily",
		AllOfProject: true, Keep: gateway.KeepRules{Last: 7}}}); err != nil {
		t.Fatal(err)
	}
	wait := duringUnmanage(t, s, v.ID, func() error { _, err := s.RunPolicy(ctx, "all"); return err })
	if _, err := s.UnmanageVolume(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("the policy run: %v", err)
	}
	noVolume(t, s, cfg.Repo, filepath.Join(dir, "state-new"), "after the unmanage and a policy run during it")
}

// A policy update reads the policy and stores it whole again; a delete between the two was
// undone until 2026-12-07, and the deleted policy ran again and pruned by its keep rules. Here
// the delete waits for the update (policyRecMu); through another gateway the update finds the
// policy gone before it stores it, and fails (docs/design.md, "An update never brings back a
// deleted policy").
func TestPolicyUpdateNeverBringsBackADeletedPolicy(t *testing.T) {
	for _, where := range []string{"here", "through another gateway"} {
		t.Run(where, func(t *testing.T) {
			a, b, key := policyOnTwoGateways(t)
			ctx := adminCtx()
			var once sync.Once
			var deleted chan error
			gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
				if where == "here" { // right before the update's store, a delete here
					return gateway.BeforePutForTest(be, func(k string) {
						if k != key {
							return
						}
						once.Do(func() { deleted = runBriefly(func() error { return a.DeletePolicy(ctx, "p") }) })
					})
				}
				return &afterGet{Backend: be, after: func(k string) { // right after its read, one elsewhere
					if k == key {
						once.Do(func() { deleted = make(chan error, 1); deleted <- b.DeletePolicy(ctx, "p") })
					}
				}}
			})
			_, uerr := a.UpdatePolicy(ctx, "p", nil, func(p *gateway.Policy) { p.Keep.Last = 3 })
			if deleted == nil {
				t.Fatal("no delete ran during the update")
			}
			if err := <-deleted; err != nil {
				t.Fatalf("the delete: %v", err)
			}
			if where != "here" && !errors.Is(uerr, gateway.ErrNotFound) {
				t.Fatalf("update of a policy deleted through another gateway after its read: %v, want not found", uerr)
			}
			for _, g := range []*gateway.Service{a, b} {
				ps, err := g.Policies(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if len(ps) != 0 {
					t.Fatalf("after the delete a gateway lists policy %s: the update stored it again", ps[0].Name)
				}
			}
		})
	}
}

// Two updates of one policy through two gateways at once: the one whose read came before the
// other's store fails with a conflict, and the other's change stays. Until 2026-12-07 both
// were stored, and the later store undid the earlier update without a word.
func TestPolicyUpdateNeverUndoesAnotherGatewaysUpdate(t *testing.T) {
	a, b, key := policyOnTwoGateways(t)
	ctx := adminCtx()
	var once sync.Once
	var other error
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
		return &afterGet{Backend: be, after: func(k string) { // right after a's read, b's update
			if k == key {
				once.Do(func() {
					_, other = b.UpdatePolicy(ctx, "p", nil, func(p *gateway.Policy) { p.Keep.Last = 5 })
				})
			}
		}}
	})
	_, err := a.UpdatePolicy(ctx, "p", nil, func(p *gateway.Policy) { p.Schedule = "weekly" })
	if other != nil {
		t.Fatalf("the update through the other gateway: %v", other)
	}
	if !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("an update whose read came before another gateway's update: %v, want a conflict", err)
	}
	for name, g := range map[string]*gateway.Service{"a": a, "b": b} {
		st, err := g.PolicyStatus(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		if st.Keep.Last != 5 || st.Schedule != "daily" {
			t.Fatalf("gateway %s has keep-last %d and schedule %s, want b's 5 and the old daily: an update was lost or half made",
				name, st.Keep.Last, st.Schedule)
		}
	}
}

// backedUpVolume manages image vol.img of dir (size bytes) through g as volume vm and backs
// it up once.
func backedUpVolume(t *testing.T, g *gateway.Service, dir string, size int) {
	t.Helper()
	ctx := adminCtx()
	if _, err := g.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", size), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
}

// policyOnTwoGateways opens two gateways on a new repository and creates policy p (every
// volume of the project, daily, keep the last 7) through a; key is the policy's object.
func policyOnTwoGateways(t *testing.T) (a, b *gateway.Service, key string) {
	t.Helper()
	a, b, _ = twoGateways(t, t.TempDir())
	if _, err := a.CreatePolicy(adminCtx(), gateway.PolicyRequest{Policy: gateway.Policy{Name: "p", Schedule: "daily",
		AllOfProject: true, Keep: gateway.KeepRules{Last: 7}}}); err != nil {
		t.Fatal(err)
	}
	return a, b, "meta/policies/" + hex.EncodeToString([]byte("p"))
}

// afterGet is a backend that calls after once a Get returned, with the key.
type afterGet struct {
	backend.Backend
	after func(key string)
}

func (g *afterGet) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := g.Backend.Get(ctx, key)
	g.after(key)
	return rc, err
}

// A policy's --full-every count is the repository's, not one gateway's: runs that alternate
// between two gateways take a full backup every Nth run. Until 2026-12-05 each gateway counted
// in its own index, and a run counted only its own gateway's backups since the last full.
func TestPolicyFullEveryCountsAcrossGateways(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	policyOfAVolume(t, a, image(t, dir, "vm.img", 256<<10), gateway.Policy{Name: "nightly", Schedule: "daily",
		Incremental: true, FullEvery: 2, Keep: gateway.KeepRules{Last: -1}})
	var got []string
	for i := range 4 {
		g := []*gateway.Service{a, b}[i%2]
		if err := g.SyncBackups(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := g.RunPolicy(ctx, "nightly"); err != nil {
			t.Fatal(err)
		}
		bs, err := g.ListBackups(ctx, gateway.ListFilter{Volume: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		kind := "full"
		if bs[len(bs)-1].IsIncremental {
			kind = "incremental"
		}
		got = append(got, kind)
	}
	if want := []string{"full", "incremental", "full", "incremental"}; !slices.Equal(got, want) {
		t.Fatalf("4 runs with --full-every 2 alternating between two gateways took %v, want %v", got, want)
	}
}

// A gateway that cannot store a policy's run in the repository does not run it: the
// repository would not say the due time ran, so another gateway ran it again once the claim
// was free (until 2026-12-05 the store's error was only logged, and the run went on).
func TestPolicyRunNotStoredDoesNotRun(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	if _, err := a.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(2 * time.Second).Truncate(time.Second)
	if _, err := a.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "once",
		Schedule: at.UTC().Format("2006-01-02 15:04:05") + " UTC", Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta/policy-runs/", Effect: faulty.Fail})
		return f
	})
	schedule := func(g *gateway.Service, d time.Duration) {
		stop := runScheduler(t, g)
		time.Sleep(d)
		stop()
	}
	schedule(a, time.Until(at)+2*time.Second)
	schedule(b, 2*time.Second)
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if n := vmBackups(t, b); n != 1 {
		t.Fatalf("the policy's one due time made %d backups when one gateway could not store its run, want 1", n)
	}
}

// unlockAtFirstPack removes every lock object (as 'repo unlock --force' does) at the first
// pack stored, and holds that Put until the holders had time to notice.
type unlockAtFirstPack struct {
	backend.Backend
	once   sync.Once
	unlock func()
}

func (b *unlockAtFirstPack) Put(ctx context.Context, key string, data []byte) error {
	if strings.HasPrefix(key, "packs/") {
		b.once.Do(func() { b.unlock(); time.Sleep(time.Second) })
	}
	return b.Backend.Put(ctx, key, data)
}

// A run that loses its claim stops, and leaves the policy to run again now: its volumes not
// backed up yet are not left for the next due time. Until 2026-12-05 the stopped run stored
// itself failed, which is not due before the calendar's next time, so a policy whose claim
// was broken with no other gateway running it skipped the rest of its volumes for a period.
func TestPolicyRunThatLostItsClaimRunsAgain(t *testing.T) {
	dir := t.TempDir()
	cfg := newRepo(t, dir)
	cfg.Lock.StaleAfter = 2 * time.Second
	s, err := gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := adminCtx()
	for _, name := range []string{"vm", "db"} {
		if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, name+".img", 64<<10), Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm", "db"}}); err != nil {
		t.Fatal(err)
	}
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		return &unlockAtFirstPack{Backend: be, unlock: func() {
			if _, err := s.Unlock(ctx, true); err != nil {
				t.Error(err)
			}
		}}
	})
	if _, err := s.RunPolicy(ctx, "nightly"); err == nil {
		t.Fatal("a policy run whose locks were removed during its first backup succeeded")
	}
	runScheduler(t, s)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		backedUp := 0
		for _, name := range []string{"vm", "db"} {
			bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: name})
			if err != nil {
				t.Fatal(err)
			}
			if slices.ContainsFunc(bs, func(b *index.Backup) bool { return b.Status == index.BackupAvailable }) {
				backedUp++
			}
		}
		if backedUp == 2 {
			break
		}
		if time.Now().After(deadline) {
			st, _ := s.PolicyStatus(ctx, "nightly")
			t.Fatalf("%d of 2 volumes backed up 10 s after a run lost its claim (last result %s, next run %v)", backedUp, st.LastResult, st.NextRun)
		}
	}
}

// A policy deleted and made again under its name starts with no runs on every gateway: until
// 2026-12-05 a gateway that had run the old one kept its state in its index, and since the
// repository had none for the new one, it showed the old one's runs, result and error (of
// another project's volumes, when the new policy was another project's) and counted its
// --full-every from them.
func TestPolicyMadeAgainUnderItsNameStartsAfresh(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	if _, err := b.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	req := gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily", Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}
	if _, err := b.CreatePolicy(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RunPolicy(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	if err := a.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.DeletePolicy(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreatePolicy(ctx, req); err != nil {
		t.Fatal(err)
	}
	for name, g := range map[string]*gateway.Service{"a": a, "b": b} {
		st, err := g.PolicyStatus(ctx, "nightly")
		if err != nil {
			t.Fatal(err)
		}
		if st.Runs != 0 || st.LastResult != "" {
			t.Fatalf("gateway %s says the new policy ran %d times (last %q): the deleted one's runs", name, st.Runs, st.LastResult)
		}
	}
}

// packReads counts the whole-object reads of packs/, as a verification makes.
type packReads struct {
	backend.Backend
	n atomic.Int64
}

func (b *packReads) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if strings.HasPrefix(key, "packs/") {
		b.n.Add(1)
	}
	return b.Backend.Get(ctx, key)
}

func (b *packReads) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	if strings.HasPrefix(key, "packs/") {
		b.n.Add(1)
	}
	return b.Backend.GetRange(ctx, key, offset, length)
}

// A gateway that cannot store a policy's verification in the repository does not verify: the
// repository would not say the due time was verified, and another gateway read the sample of
// packs again (until 2026-12-05 the store's error was only logged, and the check went on).
func TestPolicyVerifyNotStoredDoesNotRun(t *testing.T) {
	a, dir := newService(t)
	ctx := adminCtx()
	backedUpVolume(t, a, dir, 64<<10)
	at := time.Now().Add(2 * time.Second).Truncate(time.Second)
	if _, err := a.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "checked", Schedule: "yearly",
		Verify: at.UTC().Format("2006-01-02 15:04:05") + " UTC", VerifySample: 100, Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	reads := &packReads{}
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta/policy-verifies/", Effect: faulty.Fail})
		reads.Backend = f
		return reads
	})
	stop := runScheduler(t, a)
	time.Sleep(time.Until(at) + 2*time.Second)
	stop()
	if n := reads.n.Load(); n != 0 {
		t.Fatalf("a gateway that could not store the verification verified (%d pack reads): another gateway verifies the same due time again", n)
	}
}

// A verification reads its policy again once it holds the claim, as a run does: one changed
// through another gateway since the scheduler's copy was read (here: its verification
// removed) is not verified from that copy. Until 2026-12-07 a verification went on from the
// copy, up to a reload period old.
func TestPolicyVerificationFollowsAnUpdateThroughAnotherGateway(t *testing.T) {
	gateway.SetPolicyReloadForTest(t, time.Hour) // a's copy stays as read at its start
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	backedUpVolume(t, a, dir, 64<<10)
	at := time.Now().Add(4 * time.Second).Truncate(time.Second)
	if _, err := a.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "checked", Schedule: "yearly", AllOfProject: true,
		Verify: at.UTC().Format("2006-01-02 15:04:05") + " UTC", VerifySample: 100, Keep: gateway.KeepRules{Last: 7}}}); err != nil {
		t.Fatal(err)
	}
	reads := &packReads{}
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
		reads.Backend = be
		return reads
	})
	stop := runScheduler(t, a)
	// a's scheduler has read the policy once it exports the policy's series; the update
	// comes after that, and before the verification is due.
	for !scheduled(t, a, "checked") {
		if time.Until(at) < time.Second {
			t.Fatal("gateway a's scheduler did not read the policy within 3 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := b.UpdatePolicy(ctx, "checked", nil, func(p *gateway.Policy) { p.Verify = "" }); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(at) + 2*time.Second)
	stop()
	if n := reads.n.Load(); n != 0 {
		t.Fatalf("gateway a verified a policy whose verification was removed through gateway b (%d pack reads): it went on from its copy", n)
	}
}

// scheduled says whether g's scheduler has scheduled policy name: it exports the policy's
// cairn_policy_overdue_volumes series at each look.
func scheduled(t *testing.T, g *gateway.Service, name string) bool {
	t.Helper()
	mfs, err := g.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "cairn_policy_overdue_volumes" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "policy" && l.GetValue() == name {
					return true
				}
			}
		}
	}
	return false
}

// A policy whose state cannot be read keeps the index's copy: one failed read failed the
// whole policy list, and left every policy's state unread by the scheduler.
func TestPolicyListSurvivesOneUnreadableState(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: name, Schedule: "daily",
			Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
			t.Fatal(err)
		}
	}
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Get, Prefix: "meta/policy-runs/" + hex.EncodeToString([]byte("a")), Effect: faulty.Fail})
		return f
	})
	ps, err := s.Policies(ctx)
	if err != nil || len(ps) != 2 {
		t.Fatalf("policy list with one policy's state unreadable: %d policies, %v; want both", len(ps), err)
	}
}

// policyOfAVolume manages the image at path as volume "vm" through g and makes p a policy of it.
func policyOfAVolume(t *testing.T, g *gateway.Service, path string, p gateway.Policy) {
	t.Helper()
	ctx := adminCtx()
	if _, err := g.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.CreatePolicy(ctx, gateway.PolicyRequest{Policy: p, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
}

// runScheduler runs g's policies (RunPolicies) until the test ends or stop is called; stop
// returns once RunPolicies did.
func runScheduler(t *testing.T, g *gateway.Service) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { g.RunPolicies(ctx); close(done) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop) // before the gateways close
	return stop
}

// vmBackups is how many backups of volume "vm" g lists.
func vmBackups(t *testing.T, g *gateway.Service) int {
	t.Helper()
	bs, err := g.ListBackups(adminCtx(), gateway.ListFilter{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	return len(bs)
}

// A run stores no state for a policy deleted during it: not the state objects the delete
// removed, nor, when a policy of the same name was made meanwhile, its runs over the new
// policy's empty state; it stops at its next store, as not found (since 2026-12-08; it went on
// before, without storing). A delete here that comes during a store of the run's state waits
// for it (policyRecMu), and then removes what it stored; through another gateway the run reads
// the policy before each store.
// Until 2026-12-07 the run stored its state after each volume and at its end whatever the
// repository held; the new policy then took its first due time and its --full-every count
// from the old one.
func TestPolicyStateIsNeverStoredForADeletedPolicy(t *testing.T) {
	for _, c := range []struct {
		name        string
		again, here bool
	}{{"deleted here", false, true}, {"deleted through another gateway", false, false}, {"made again through another gateway", true, false}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b, repoDir := twoGateways(t, dir)
			ctx := adminCtx()
			p := gateway.Policy{Name: "nightly", Schedule: "daily", Keep: gateway.KeepRules{Last: 7}}
			policyOfAVolume(t, a, image(t, dir, "vm.img", 256<<10), p)
			var once sync.Once
			var deleted chan error
			runKey := "meta/policy-runs/" + hex.EncodeToString([]byte(p.Name))
			gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
				return gateway.BeforePutForTest(be, func(k string) {
					if c.here && k == runKey { // the store of the run's start: a delete here waits for it
						once.Do(func() { deleted = runBriefly(func() error { return a.DeletePolicy(ctx, p.Name) }) })
						return
					}
					if c.here || !strings.HasPrefix(k, "manifests/") { // the run's backup commits
						return
					}
					once.Do(func() {
						deleted = make(chan error, 1)
						err := b.DeletePolicy(ctx, p.Name)
						if err == nil && c.again {
							again := p
							again.AllOfProject = true // b has not learned volume vm
							_, err = b.CreatePolicy(ctx, gateway.PolicyRequest{Policy: again})
						}
						deleted <- err
					})
				})
			})
			if _, err := a.RunPolicy(ctx, p.Name); !errors.Is(err, gateway.ErrNotFound) {
				t.Fatalf("the run, which stops after the delete: %v, want not found", err)
			}
			if deleted == nil {
				t.Fatal("no delete ran during the run")
			}
			if err := <-deleted; err != nil {
				t.Fatalf("the delete: %v", err)
			}
			if c.again {
				for name, g := range map[string]*gateway.Service{"a": a, "b": b} {
					st, err := g.PolicyStatus(ctx, p.Name)
					if err != nil {
						t.Fatal(err)
					}
					if st.Runs != 0 || st.LastResult != "" || !st.LastRun.IsZero() {
						t.Fatalf("gateway %s says the new policy ran %d times (last %q at %v): the deleted one's run stored its state over the new one's",
							name, st.Runs, st.LastResult, st.LastRun)
					}
				}
				// Nor do a's metrics say the new policy's last run failed (the alert
				// CairnPolicyRunFailed), from the new one's empty state.
				mfs, err := a.Metrics().Gather()
				if err != nil {
					t.Fatal(err)
				}
				for _, mf := range mfs {
					for _, m := range mf.GetMetric() {
						if mf.GetName() == "cairn_policy_last_run_success" && m.GetGauge().GetValue() == 0 {
							t.Fatalf("gateway a exports %s %v = 0 for a policy that never ran: the old run's end", mf.GetName(), m.GetLabel())
						}
					}
				}
				return
			}
			for _, kind := range []string{"policy-runs", "policy-verifies"} {
				for _, top := range []string{"meta", "meta-copies"} {
					obj := filepath.Join(repoDir, top, kind, hex.EncodeToString([]byte(p.Name)))
					if _, err := os.Stat(obj); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("%s of the deleted policy is in the repository (%v): the run stored it again", obj, err)
					}
				}
			}
		})
	}
}

// TestPolicyRunWhoseEndStoreFailedOnceIsNotRunAgain: a run whose end fails to store once (the
// store hiccups) stores it again while it holds the claim, so no gateway takes the run for one
// whose gateway is gone. Before, the state stayed running, and the next gateway to look ran
// the policy again at once: a second backup of every volume, and one more prune.
func TestPolicyRunWhoseEndStoreFailedOnceIsNotRunAgain(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	if _, err := a.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "daily",
		Schedule: "daily", Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	// The run's stores: its start, its volume's, its end (the third fails once).
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta/policy-runs/", Nth: 3, Times: 1, Effect: faulty.Fail})
		return f
	})
	if _, err := a.RunPolicy(ctx, "daily"); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	stop := runScheduler(t, b)
	time.Sleep(2 * time.Second)
	stop()
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if n := vmBackups(t, b); n != 1 {
		t.Fatalf("one run of the policy, whose end store failed once, made %d backups; want 1", n)
	}
	if st, err := b.PolicyStatus(ctx, "daily"); err != nil || st.LastResult != gateway.RunSucceeded {
		t.Fatalf("the policy's state: %+v, %v; want its run succeeded", st, err)
	}
}

// A policy whose last run a clock running ahead stamped (a gateway booted two days ahead of
// the store, before NTP set it right) runs again by its calendar once the clock is right: its
// next run counts from when the gateway first found the stamp ahead of its clock. Until
// 2026-12-08 it counted from the stamp, and no gateway ran the policy until the clocks caught
// up with it (two days, for every policy the gateway had run).
func TestPolicyRunStampedByAClockAheadRunsAgainOnSchedule(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	policyOfAVolume(t, s, image(t, dir, "vol.img", 64<<10), gateway.Policy{Name: "often", Schedule: "*:*:*",
		Keep: gateway.KeepRules{Last: 7}})
	gateway.SetClockSkewForTest(t, 48*time.Hour)
	if _, err := s.RunPolicy(ctx, "often"); err != nil {
		t.Fatal(err)
	}
	gateway.SetClockSkewForTest(t, 0) // NTP sets the clock right
	runScheduler(t, s)
	for deadline := time.Now().Add(10 * time.Second); vmBackups(t, s) < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			st, _ := s.PolicyStatus(ctx, "often")
			t.Fatalf("a policy of every second did not run in 10 s after a run stamped 48 h ahead (last run %v, next %v)",
				st.LastRun, st.NextRun)
		}
	}
}

// A volume whose newest backup a clock running ahead dated is overdue once two periods of its
// policy pass, counted from when the gateway first found that date ahead of its clock: counted
// from the date, the warning and cairn_policy_overdue_volumes stayed silent until the clocks
// caught up with it, however long the policy's backups failed meanwhile.
func TestVolumeWhoseBackupIsDatedAheadBecomesOverdue(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol := image(t, dir, "vol.img", 64<<10)
	policyOfAVolume(t, s, vol, gateway.Policy{Name: "often", Schedule: "*:*:*", Keep: gateway.KeepRules{Last: 7}})
	gateway.SetClockSkewForTest(t, 48*time.Hour)
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol}); err != nil {
		t.Fatal(err)
	}
	gateway.SetClockSkewForTest(t, 0)
	if st, err := s.PolicyStatus(ctx, "often"); err != nil || len(st.Overdue) != 0 {
		t.Fatalf("a volume backed up a moment ago: overdue %v, %v; want none", st.Overdue, err)
	}
	time.Sleep(2500 * time.Millisecond) // two periods of a policy of every second, and a half
	if st, err := s.PolicyStatus(ctx, "often"); err != nil || !slices.Equal(st.Overdue, []string{"vm"}) {
		t.Fatalf("a volume not backed up for two periods since its backup dated 48 h ahead was found: overdue %v, %v; want vm",
			st.Overdue, err)
	}
}

// A gateway whose clock runs ahead of the store's stamps and schedules its policies' runs by
// the store's clock once it has measured the difference (its heartbeat): a run's last run is
// the store's time, which the other gateways' clocks agree with, and the policy does not run
// again before its calendar's next time by that clock.
func TestPolicyRunsAreStampedAndScheduledByTheStoresClock(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	policyOfAVolume(t, s, image(t, dir, "vol.img", 64<<10), gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 7}})
	gateway.SetClockSkewForTest(t, 48*time.Hour)
	gateway.ShareServicesForTest(s)
	st, err := s.RunPolicy(ctx, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if off := time.Until(st.LastRun); off > time.Minute || off < -time.Minute {
		t.Fatalf("a run by a gateway 48 h ahead of the store is stamped %v, %v from the store's clock", st.LastRun, off)
	}
	runScheduler(t, s)
	time.Sleep(3 * time.Second)
	if n := vmBackups(t, s); n != 1 {
		t.Fatalf("a daily policy run a moment ago made %d backups in 3 s of its scheduler, want its run's 1", n)
	}
}
