package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// What a policy's runs and verifications did is stored in the repository by the gateway that
// holds the run's (or verification's) claim, so every gateway on the repository, and an index
// rebuilt, sees it; the index keeps a copy for the scheduler. docs/design.md, "Policies", has
// the protocol and why a due time runs once across gateways.

// PolicyRun is what a policy's runs did (meta/policy-runs/<name>).
type PolicyRun struct {
	// LastRun is the last run's start by the store's clock (storeNow), which the gateways'
	// clocks agree with once they have measured it: one host's clock running ahead does not
	// hold the policy off on the others.
	LastRun    time.Time `json:"last_run,omitempty"`
	LastResult string    `json:"last_result,omitempty"` // succeeded, failed, running
	LastError  string    `json:"last_error,omitempty"`
	Runs       int       `json:"runs"`
	// Interrupted: the last run ended with its gateway (stopped, or killed) before it had
	// backed up every volume; the next look runs it again at once rather than at its next
	// time, so the volumes it had not reached do not wait a whole period.
	Interrupted bool `json:"interrupted,omitempty"`
	// SinceFull counts, per volume id, the backups the policy made of the volume since its
	// last full one, that one included: what --full-every counts. Not the chain: a prune
	// makes the oldest incremental it keeps its chain's base, so a chain shorter than N
	// would never reach N.
	SinceFull map[string]int `json:"since_full,omitempty"`
	// LastDid is what the last run did, volume by volume, in the order it took them: so an
	// admin sees which backups a run made and how many its prunes removed (the keep rules
	// count every backup of a volume, those made by hand too).
	LastDid []PolicyDid `json:"last_did,omitempty"`
}

// PolicyDid is what a policy's run did to one volume: its backup (none when it failed, or
// for a prune-only policy), its verification, and its prune.
type PolicyDid struct {
	VolumeID    string `json:"volume_id,omitempty"`
	Volume      string `json:"volume"` // its name at the run
	BackupID    string `json:"backup_id,omitempty"`
	Incremental bool   `json:"incremental,omitempty"`
	Verified    bool   `json:"verified,omitempty"`
	Pruned      int    `json:"pruned"` // backups its prune removed
	Kept        int    `json:"kept"`   // and kept (0 when it did not prune)
	Error       string `json:"error,omitempty"`
}

// PolicyVerify is what a policy's verifications did (meta/policy-verifies/<name>).
type PolicyVerify struct {
	LastVerify   time.Time `json:"last_verify,omitempty"`
	VerifyResult string    `json:"verify_result,omitempty"`
	VerifyError  string    `json:"verify_error,omitempty"`
}

// PolicyState is a policy's runs and verifications, as the index keeps them.
type PolicyState struct {
	PolicyRun
	PolicyVerify
}

const (
	metaPolicyRuns     = "policy-runs"
	metaPolicyVerifies = "policy-verifies"
)

func policyStateKey(name string) string { return "policy/" + name }

// policyState is the index's copy of a policy's state.
func (s *Service) policyState(name string) PolicyState {
	var st PolicyState
	if v, err := s.idx.Meta(policyStateKey(name)); err == nil && v != "" {
		_ = json.Unmarshal([]byte(v), &st)
	}
	return st
}

// cachePolicyState changes the index's copy of a policy's state with fn.
func (s *Service) cachePolicyState(name string, fn func(*PolicyState)) PolicyState {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	st := s.policyState(name)
	fn(&st)
	b, _ := json.Marshal(st)
	if err := s.idx.SetMeta(policyStateKey(name), string(b)); err != nil {
		s.log.Error("cannot keep a policy's state in the index", "policy", name, "error", err)
	}
	return st
}

// storeRun stores what a run of p did, in the repository and in the index. Only the holder of
// the policy's claim calls it. A store that fails is logged and returned, and the index's copy
// is left as the repository has it: a run whose start is not in the repository must not go on,
// since another gateway would run its due time again [TestPolicyRunNotStoredDoesNotRun]. Nor
// is anything stored once p is deleted, or made again under its name (ownState).
func (s *Service) storeRun(ctx context.Context, p *Policy, run PolicyRun) (PolicyState, error) {
	var st PolicyState
	err := s.ownState(ctx, p, "run", func(ctx context.Context) error {
		if err := s.repo.PutMeta(ctx, metaPolicyRuns, p.Name, &run); err != nil {
			return err
		}
		st = s.cachePolicyState(p.Name, func(st *PolicyState) { st.PolicyRun = run })
		return nil
	})
	if err != nil {
		return s.policyState(p.Name), err
	}
	return st, nil
}

// storeVerify is storeRun for a verification [TestPolicyVerifyNotStoredDoesNotRun].
func (s *Service) storeVerify(ctx context.Context, p *Policy, v PolicyVerify) error {
	return s.ownState(ctx, p, "verification", func(ctx context.Context) error {
		if err := s.repo.PutMeta(ctx, metaPolicyVerifies, p.Name, &v); err != nil {
			return err
		}
		s.cachePolicyState(p.Name, func(st *PolicyState) { st.PolicyVerify = v })
		return nil
	})
}

// ownState runs store, a store of p's state in the repository and then in the index's copy,
// only while the repository holds p itself: a run that goes on after its policy's delete does
// not bring back the state objects the delete removed, nor write over the empty state of a
// policy made again under its name (another created_at); that refusal is ErrNotFound. The read
// and both stores hold policyRecMu, as a create and a delete do; through another gateway the
// window is the one request between the read and the store. A policy that cannot be read for
// another reason (the repository unreachable, or the policy damaged) is taken for p: the store
// fails with the repository, or keeps a damaged policy's state, as before. Either failure is
// logged, with what (a run or a verification). docs/design.md, "A run's state is stored only for
// its own policy" [TestPolicyStateIsNeverStoredForADeletedPolicy].
func (s *Service) ownState(ctx context.Context, p *Policy, what string, store func(context.Context) error) error {
	ctx = context.WithoutCancel(ctx) // a run cancelled still stores how it ended
	s.policyRecMu.Lock()
	defer s.policyRecMu.Unlock()
	cur, err := s.storedPolicy(ctx, p.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		err = wrapf(ErrNotFound, "policy %s was deleted meanwhile (or its object lost): the %s's state is not stored", p.Name, what)
	case err == nil && !cur.CreatedAt.Equal(p.CreatedAt):
		err = wrapf(ErrNotFound, "policy %s was deleted and made again meanwhile: the old one's %s state is not stored over the new one's", p.Name, what)
	default:
		if err = store(ctx); err != nil {
			s.log.Error("cannot record a policy's "+what+" in the repository", "policy", p.Name, "error", err)
		}
		return err
	}
	s.log.Info("policy gone: what its "+what+" did is not recorded", "policy", p.Name, "reason", err)
	return err
}

// storedState reads a policy's state from the repository into the index's copy and returns
// it. A part never stored there (an earlier cairn kept it in the index alone), or damaged, is
// the index's copy.
func (s *Service) storedState(ctx context.Context, name string) (PolicyState, error) {
	var run PolicyRun
	var ver PolicyVerify
	errRun := s.repo.GetMeta(ctx, metaPolicyRuns, name, &run)
	errVer := s.repo.GetMeta(ctx, metaPolicyVerifies, name, &ver)
	for _, err := range []error{errRun, errVer} {
		if err != nil && !errors.Is(err, backend.ErrNotFound) && !errors.Is(err, repo.ErrCorrupt) {
			return PolicyState{}, err
		}
		if errors.Is(err, repo.ErrCorrupt) {
			s.log.Warn("policy state object damaged: the index's copy is used", "policy", name, "error", err)
		}
	}
	return s.cachePolicyState(name, func(st *PolicyState) {
		if errRun == nil {
			st.PolicyRun = run
		}
		if errVer == nil {
			st.PolicyVerify = ver
		}
	}), nil
}

// refreshPolicyStates reads the states of the policies ps from the repository into the
// index's copies. One that cannot be read keeps its copy (logged): one bad read does not fail
// a policy list, nor hide the others' states from the scheduler.
func (s *Service) refreshPolicyStates(ctx context.Context, ps []*Policy) {
	for _, p := range ps {
		if _, err := s.storedState(ctx, p.Name); err != nil && ctx.Err() == nil {
			s.log.Warn("cannot read a policy's state: the index's copy is used", "policy", p.Name, "error", err)
		}
	}
}

// forgetPolicyState removes a deleted policy's state.
func (s *Service) forgetPolicyState(ctx context.Context, name string) {
	for _, kind := range []string{metaPolicyRuns, metaPolicyVerifies} {
		if err := s.repo.DeleteMeta(ctx, kind, name); err != nil {
			s.log.Warn("cannot remove a deleted policy's state", "policy", name, "error", err)
		}
	}
	_ = s.idx.SetMeta(policyStateKey(name), "")
}

// claimOp names the claim of a policy's runs, or of its verifications.
func claimOp(name string, verify bool) string {
	if verify {
		return "verify " + name
	}
	return "policy " + name
}

// claim takes the claim of a policy's runs (or verifications) across gateways, and then reads
// the state from the repository: a run stored elsewhere before the claim was free is there.
// errors.Is(err, repo.ErrLocked) when another gateway holds it; the index's copy is brought
// up to date then too, so a run in progress elsewhere is seen as running.
func (s *Service) claim(ctx context.Context, name string, verify bool) (*repo.Lock, PolicyState, error) {
	lk, err := s.repo.Claim(ctx, claimOp(name, verify))
	if err != nil {
		if errors.Is(err, repo.ErrLocked) {
			_, _ = s.storedState(ctx, name)
		}
		return nil, PolicyState{}, err
	}
	st, err := s.storedState(ctx, name)
	if err != nil {
		lk.Unlock()
		return nil, st, fmt.Errorf("read policy %s's state: %w", name, err)
	}
	return lk, st, nil
}
