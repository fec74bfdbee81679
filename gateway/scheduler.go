package gateway

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/gateway/calendar"
	"github.com/cairn-backup/cairn/repo"
)

// policyReload is how often the scheduler reads the policies again from the repository, for
// changes made through another gateway (changes made through this one apply at once).
// A variable for tests.
var policyReload = time.Minute

// RunPolicies runs the repository's policies on their schedules until ctx ends ('cairn
// serve'). A run missed while no gateway ran happens once at start: a policy is due when the
// first time its calendar names after its last run has passed, however many have.
func (s *Service) RunPolicies(ctx context.Context) {
	s.policyMu.Lock()
	if s.policyWake == nil {
		s.policyWake = make(chan struct{}, 1)
	}
	wake := s.policyWake
	s.policyMu.Unlock()
	var policies []*Policy
	var loaded time.Time
	overdue := map[string]string{} // policy → overdue volumes last logged
	for {
		// The store's clock, as every gateway stamps the runs by: against its own, a gateway
		// whose clock runs ahead would find each run it stamped due again at once
		// [TestPolicyRunsAreStampedAndScheduledByTheStoresClock].
		at := s.storeNow()
		if loaded.IsZero() || at.Sub(loaded) >= policyReload {
			ps, _, err := s.loadPolicies(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("cannot read the policies", "error", err)
			}
			if err == nil {
				policies, loaded = ps, at
				s.metrics.policiesLoaded(ps)
				// What runs on other gateways did [TestPolicyRunsOnceAcrossGateways].
				s.refreshPolicyStates(ctx, ps)
			}
		}
		wait := policyReload
		for _, p := range policies {
			wait = min(wait, s.schedulePolicy(ctx, p, at, overdue))
		}
		t := time.NewTimer(max(wait, 100*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			// The runs see the same ctx and end; a run that outlived this return went on
			// using the service its owner then closed [TestRunPoliciesReturnsOnceItsRunsEnded].
			s.policyWork.Wait()
			return
		case <-wake:
			loaded = time.Time{}
		case <-t.C:
		}
		t.Stop()
	}
}

// schedulePolicy starts what of p is due at `at` and returns how long until it next is.
func (s *Service) schedulePolicy(ctx context.Context, p *Policy, at time.Time, overdue map[string]string) time.Duration {
	st := s.policyStatus(p, at)
	s.metrics.policyStatus(st)
	if names := strings.Join(st.Overdue, ","); names != overdue[p.Name] {
		overdue[p.Name] = names
		if names != "" {
			s.log.Warn("volumes without a successful backup for two periods of their policy", "policy", p.Name, "volumes", names)
		}
	}
	wait := policyReload
	if sp, err := calendar.Parse(p.Schedule); err == nil {
		wait = min(wait, s.startDue(ctx, p, false, s.runDue(sp, p, st.PolicyRun, at), st.LastResult == RunRunning, at))
	}
	if p.Verify != "" {
		if vs, err := calendar.Parse(p.Verify); err == nil {
			wait = min(wait, s.startDue(ctx, p, true, s.verifyDue(vs, p, st.PolicyVerify, at), st.VerifyResult == RunRunning, at))
		}
	}
	return wait
}

// runDue is when p's next run is due by the state run at `at`: the first time its calendar
// names after its last run (or its creation), or now for a run that ended with its gateway
// [TestPolicyRunInterruptedByAStopRunsAgainAtStart].
func (s *Service) runDue(sp *calendar.Spec, p *Policy, run PolicyRun, at time.Time) time.Time {
	if run.Interrupted && run.LastResult == RunFailed {
		return at
	}
	return nextOf(sp, s.runSince(p, run, at))
}

// runSince is what p's next run counts from at `at`: its last run, or its creation, or when
// this gateway first found that dated ahead of its clock, which would hold the policy's runs
// off on every gateway until the clocks caught up with it
// [TestPolicyRunStampedByAClockAheadRunsAgainOnSchedule].
func (s *Service) runSince(p *Policy, run PolicyRun, at time.Time) time.Time {
	return s.policyAhead.notAhead(s.log, "run of policy "+p.Name, laterOf(run.LastRun, p.CreatedAt), at)
}

// dueBy says whether due, a due time (zero: never), has come at `at`.
func dueBy(due, at time.Time) bool { return !due.IsZero() && !due.After(at) }

// verifyDue is when p's next verification is due by the state v at `at`, counted as runDue
// counts a run.
func (s *Service) verifyDue(vs *calendar.Spec, p *Policy, v PolicyVerify, at time.Time) time.Time {
	return nextOf(vs, s.policyAhead.notAhead(s.log, "verification of policy "+p.Name, laterOf(v.LastVerify, p.CreatedAt), at))
}

// startDue starts p's run (or verification) when it is due by the index's copy of its state,
// or when that copy says it is running and this gateway does not run it (its gateway may be
// gone, which the claim tells). It returns how long until it should look again.
func (s *Service) startDue(ctx context.Context, p *Policy, verify bool, due time.Time, running bool, at time.Time) time.Duration {
	local := p.Name
	if verify {
		local = "verify " + p.Name
	}
	if running {
		due = at
	}
	s.policyMu.Lock()
	if r := s.policyRetry[local]; r.After(due) {
		due = r
	}
	s.policyMu.Unlock()
	switch {
	case due.IsZero():
		return policyReload
	case due.After(at):
		return due.Sub(at)
	case !s.claimPolicy(local):
		return time.Second // running here: look again soon after it ends
	}
	pc := *p
	s.policyWork.Add(1)
	go func() {
		defer s.policyWork.Done()
		defer s.unclaimPolicy(local)
		lk, st, err := s.claim(ctx, pc.Name, verify)
		if err != nil {
			s.claimFailed(ctx, local, verify, st, err)
			return
		}
		defer lk.Unlock()
		if verify {
			s.verifyIfDue(ctx, &pc, st.PolicyVerify)
		} else {
			s.runIfDue(ctx, &pc, lk, st.PolicyRun)
		}
	}()
	return time.Second // look again once the run has recorded its start
}

// claimFailed puts off the next claim of a policy's run (or verification) that another
// gateway holds: a few seconds when two claimers stepped aside together, a reload period when
// the state says it is running elsewhere.
func (s *Service) claimFailed(ctx context.Context, local string, verify bool, st PolicyState, err error) {
	retry := time.Second + time.Duration(mrand.Int64N(int64(2*time.Second)))
	switch {
	case !errors.Is(err, repo.ErrLocked):
		if ctx.Err() == nil {
			s.log.Warn("cannot claim a policy's run", "policy", local, "error", err)
		}
		retry = policyReload / 4
	case !verify && st.LastResult == RunRunning, verify && st.VerifyResult == RunRunning:
		retry = policyReload
	}
	s.policyMu.Lock()
	if s.policyRetry == nil {
		s.policyRetry = map[string]time.Time{}
	}
	s.policyRetry[local] = s.storeNow().Add(retry)
	s.policyMu.Unlock()
}

// runIfDue runs p, whose claim lk is held, if it is still due by the state run read with the
// claim: another gateway may have run it since this one's copy was read.
func (s *Service) runIfDue(ctx context.Context, p *Policy, lk *repo.Lock, run PolicyRun) {
	cur, ok := s.currentPolicy(ctx, p)
	if !ok {
		return
	}
	sp, err := calendar.Parse(cur.Schedule)
	if err != nil {
		return
	}
	at := s.storeNow()
	due := s.runDue(sp, cur, run, at)
	if run.LastResult == RunRunning {
		// No one else holds the claim, so its runner is gone [TestPolicyClaimOfAGoneGatewayIsTakenOver].
		s.log.Warn("policy run left running by a gateway that is gone: running again now", "policy", cur.Name, "started", run.LastRun)
		due = at
	}
	if due.IsZero() || due.After(at) {
		return // run elsewhere meanwhile [TestPolicyRunsOnceAcrossGateways]
	}
	if next := nextOf(sp, due); !next.IsZero() && !next.After(at) {
		s.log.Warn("policy runs missed while no gateway ran: running once now", "policy", cur.Name, "missed_since", due)
	}
	_ = s.runClaimedPolicy(ctx, cur, lk, run, true)
}

// currentPolicy reads p again once its claim is held. The scheduler's copy may be a minute
// old: a policy deleted or changed through another gateway since does not run or verify from
// it, and the scheduler reads the policies again (false). One that cannot be read goes on from
// the copy, and fails if the repository does.
func (s *Service) currentPolicy(ctx context.Context, p *Policy) (*Policy, bool) {
	cur, err := s.storedPolicy(ctx, p.Name)
	switch {
	case errors.Is(err, ErrNotFound), err == nil && !cur.UpdatedAt.Equal(p.UpdatedAt):
		s.policiesChanged()
		return nil, false
	case err != nil:
		return p, true
	}
	return cur, true
}

// verifyIfDue re-reads a sample of the repository's packs, as p says, if p's verification is
// still due by the state v read with its claim.
func (s *Service) verifyIfDue(ctx context.Context, p *Policy, v PolicyVerify) {
	p, ok := s.currentPolicy(ctx, p)
	if !ok || p.Verify == "" {
		return
	}
	if v.VerifyResult == RunRunning {
		v.VerifyResult, v.VerifyError = RunFailed, "interrupted: the gateway stopped during the check"
		_ = s.storeVerify(ctx, p, v)
	}
	vs, err := calendar.Parse(p.Verify)
	if err != nil {
		return
	}
	if at := s.storeNow(); !dueBy(s.verifyDue(vs, p, v, at), at) {
		return
	}
	began, start := time.Now(), s.storeNow()
	v.LastVerify, v.VerifyResult, v.VerifyError = start, RunRunning, ""
	if s.storeVerify(ctx, p, v) != nil {
		return // not verified: the repository would not say so, and another gateway would again
	}
	ctx = WithCaller(ctx, Caller{User: "policy " + p.Name, Project: p.Project, Admin: true})
	rep, err := s.Check(ctx, repo.CheckOptions{ReadData: true, SamplePercent: p.VerifySample})
	if err == nil && !rep.OK() {
		err = wrapf(repo.ErrCorrupt, "%d problems found: run 'cairn repo check' for the list", rep.ProblemCount)
	}
	v.VerifyResult = RunSucceeded
	if err != nil {
		v.VerifyResult, v.VerifyError = RunFailed, err.Error()
	}
	_ = s.storeVerify(ctx, p, v)
	if err != nil {
		s.log.Error("policy verification failed", "policy", p.Name, "error", err)
		return
	}
	s.log.Info("policy verification finished", "policy", p.Name, "sample_percent", p.VerifySample, "seconds", time.Since(began).Seconds())
}

// policiesChanged makes the scheduler read the policies again now.
func (s *Service) policiesChanged() {
	s.policyMu.Lock()
	wake := s.policyWake
	s.policyMu.Unlock()
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}
