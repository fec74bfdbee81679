package gateway_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo/backend"
)

// A policy deleted through another gateway stops running on this one: the scheduler reads
// the policies again only every minute, and ran its copy of a deleted (or changed) policy
// until then. A run now reads its policy from the repository as it starts.
func TestPolicyDeletedThroughAnotherGatewayStopsRunningHere(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	if _, err := b.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "often", Schedule: "*:*:*",
		Keep: gateway.KeepRules{Last: -1}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.RunPolicies(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done }) // before the gateways close
	backups := func() int {
		t.Helper()
		bs, err := b.ListBackups(ctx, gateway.ListFilter{Volume: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		return len(bs)
	}
	for deadline := time.Now().Add(10 * time.Second); backups() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the policy made no backup through the second gateway in 10 s of a schedule of every second")
		}
	}
	if err := a.DeletePolicy(ctx, "often"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // a run in progress finishes
	before := backups()
	time.Sleep(2500 * time.Millisecond)
	if n := backups() - before; n > 0 {
		t.Fatalf("the policy deleted through the other gateway made %d more backups here", n)
	}
}

// A policy run that a stopped (or killed) gateway left unfinished runs again when the
// scheduler starts: it was recorded failed with its start as its last run, so the volumes it
// had not reached waited for the next scheduled time (a whole day for a daily policy).
func TestPolicyRunInterruptedByAStopRunsAgainAtStart(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	gateway.LeaveRunningPolicyForTest(s, "nightly", time.Now())
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.RunPolicies(runCtx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) > 0 {
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
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 1<<20), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "often", Schedule: "*:*:*",
		Keep: gateway.KeepRules{Last: 7}}, VolumeRefs: []string{"vm"}}); err != nil {
		t.Fatal(err)
	}
	slow := &slowPackStore{hit: make(chan struct{})}
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend { slow.Backend = be; return slow })
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.RunPolicies(runCtx); close(done) }()
	select {
	case <-slow.hit:
	case <-time.After(10 * time.Second):
		stop()
		<-done
		t.Fatal("no policy run stored a pack in 10 s of a schedule of every second")
	}
	stop()
	<-done
	st, err := s.PolicyStatus(ctx, "often")
	if err != nil {
		t.Fatal(err)
	}
	if st.LastResult != gateway.RunFailed || !strings.Contains(st.LastError, "interrupted") {
		t.Fatalf("when RunPolicies returned, its run was %s (%q): still running", st.LastResult, st.LastError)
	}
}
