package gateway

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/gateway/calendar"
	"github.com/cairn-backup/cairn/repo"
)

// policyReload is how often the scheduler reads the policies again from the repository, for
// changes made through another gateway (changes made through this one apply at once).
const policyReload = time.Minute

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
	s.policiesInterrupted(ctx)
	var policies []*Policy
	var loaded time.Time
	overdue := map[string]string{} // policy → overdue volumes last logged
	for {
		at := now()
		if loaded.IsZero() || at.Sub(loaded) >= policyReload {
			ps, err := s.loadPolicies(ctx)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("cannot read the policies", "error", err)
			}
			if err == nil {
				policies, loaded = ps, at
				s.metrics.policiesLoaded(ps)
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
	sp, err := calendar.Parse(p.Schedule)
	if err != nil {
		return wait
	}
	due := nextOf(sp, laterOf(st.LastRun, p.CreatedAt))
	if st.Interrupted && st.LastResult == RunFailed {
		due = at // its run ended with a gateway: again now [TestPolicyRunInterruptedByAStopRunsAgainAtStart]
	}
	switch {
	case due.IsZero():
	case due.After(at):
		wait = min(wait, due.Sub(at))
	case !s.claimPolicy(p.Name):
		wait = time.Second // still running: look again soon after it ends
	default:
		if next := nextOf(sp, due); !next.IsZero() && !next.After(at) {
			s.log.Warn("policy runs missed while no gateway ran: running once now", "policy", p.Name, "missed_since", due)
		}
		pc := *p
		wait = time.Second // look again once the run has recorded its start
		s.policyWork.Add(1)
		go func() {
			defer s.policyWork.Done()
			defer s.unclaimPolicy(pc.Name)
			// The scheduler's copy may be a minute old: a policy deleted or changed through
			// another gateway since does not run from it; the policies are read again first.
			cur, err := s.storedPolicy(ctx, pc.Name)
			switch {
			case errors.Is(err, ErrNotFound), err == nil && !cur.UpdatedAt.Equal(pc.UpdatedAt):
				s.policiesChanged()
				return
			case err != nil:
				cur = &pc // cannot tell: the run goes on from the copy, and fails if the repository does
			}
			if err := s.runClaimedPolicy(ctx, cur); err != nil && ctx.Err() != nil {
				s.setPolicyState(pc.Name, func(st *PolicyState) {
					st.LastError, st.Interrupted = "interrupted: the gateway stopped during the run", true
				})
			}
		}()
	}
	if p.Verify != "" {
		vs, err := calendar.Parse(p.Verify)
		if err == nil {
			vdue := nextOf(vs, laterOf(st.LastVerify, p.CreatedAt))
			switch {
			case vdue.IsZero():
			case vdue.After(at):
				wait = min(wait, vdue.Sub(at))
			case s.claimPolicy("verify " + p.Name):
				pc := *p
				wait = time.Second
				s.policyWork.Add(1)
				go func() {
					defer s.policyWork.Done()
					defer s.unclaimPolicy("verify " + pc.Name)
					s.verifyPolicy(ctx, &pc)
				}()
			default:
				wait = time.Second
			}
		}
	}
	return wait
}

// verifyPolicy re-reads a sample of the repository's packs, as the policy says.
func (s *Service) verifyPolicy(ctx context.Context, p *Policy) {
	start := now()
	s.setPolicyState(p.Name, func(st *PolicyState) { st.LastVerify, st.VerifyResult, st.VerifyError = start, RunRunning, "" })
	ctx = WithCaller(ctx, Caller{User: "policy " + p.Name, Project: p.Project, Admin: true})
	rep, err := s.Check(ctx, repo.CheckOptions{ReadData: true, SamplePercent: p.VerifySample})
	if err == nil && !rep.OK() {
		err = wrapf(repo.ErrCorrupt, "%d problems found: run 'cairn repo check' for the list", len(rep.Problems))
	}
	s.setPolicyState(p.Name, func(st *PolicyState) {
		st.VerifyResult = RunSucceeded
		if err != nil {
			st.VerifyResult, st.VerifyError = RunFailed, err.Error()
		}
	})
	if err != nil {
		s.log.Error("policy verification failed", "policy", p.Name, "error", err)
		return
	}
	s.log.Info("policy verification finished", "policy", p.Name, "sample_percent", p.VerifySample, "seconds", time.Since(start).Seconds())
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

// policiesInterrupted records as failed, and to run again now, the runs a stopped gateway left
// running.
func (s *Service) policiesInterrupted(ctx context.Context) {
	ps, err := s.loadPolicies(ctx)
	if err != nil {
		return
	}
	for _, p := range ps {
		st := s.policyState(p.Name)
		if st.LastResult == RunRunning && !s.claimPolicy(p.Name) {
			continue
		}
		if st.LastResult == RunRunning {
			s.setPolicyState(p.Name, func(st *PolicyState) {
				st.LastResult, st.LastError, st.Interrupted = RunFailed, "interrupted: the gateway stopped during the run", true
			})
			s.unclaimPolicy(p.Name)
		}
		if st.VerifyResult == RunRunning {
			s.setPolicyState(p.Name, func(st *PolicyState) {
				st.VerifyResult, st.VerifyError = RunFailed, "interrupted: the gateway stopped during the check"
			})
		}
	}
}
