package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"time"

	"github.com/cairn-backup/cairn/gateway/calendar"
	"github.com/cairn-backup/cairn/gateway/retention"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Policy is a schedule of backups of some volumes, with the keep rules a prune applies after
// each, and optionally a schedule of sampled verification. Policies live in the repository
// (meta/policies/<name>), and so does what their runs did (PolicyRun, PolicyVerify).
type Policy struct {
	Name         string   `json:"name"`
	Project      string   `json:"project"`
	Volumes      []string `json:"volumes,omitempty"`        // volume ids
	AllOfProject bool     `json:"all_of_project,omitempty"` // every volume of Project, as it is at each run
	Schedule     string   `json:"schedule"`
	// Incremental backups, with a full one every FullEvery backups (0: only the first).
	Incremental bool      `json:"incremental"`
	FullEvery   int       `json:"full_every,omitempty"`
	Keep        KeepRules `json:"keep"`
	// VerifyNew verifies each backup the policy makes right after it (VerifyBackup); one
	// that fails is not followed by its volume's prune, which would remove older, sound
	// backups to keep it.
	VerifyNew bool `json:"verify_new,omitempty"`
	// Verify is a calendar of sampled checks (repo check --read-data --sample).
	Verify       string  `json:"verify,omitempty"`
	VerifySample float64 `json:"verify_sample,omitempty"`
	// Hooks run around each of its backups' point in time (admins only; docs/design.md,
	// "Hooks").
	Hooks
	// CopyTarget: after each run, the policy's volumes' backups are copied there (admins
	// only; docs/design.md, "Copies to another repository").
	CopyTarget
	// PruneOnly: the policy backs up nothing; each run prunes the backups of its volumes by
	// Keep (with AllOfProject, of every volume of the project, those that are gone too: the
	// retention of a repository of copies, whose volumes are all gone).
	PruneOnly bool      `json:"prune_only,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// KeepRules are a policy's prune rules as stored (retention.Rules with a time zone name).
type KeepRules struct {
	Last     int      `json:"last,omitempty"`
	Hourly   int      `json:"hourly,omitempty"`
	Daily    int      `json:"daily,omitempty"`
	Weekly   int      `json:"weekly,omitempty"`
	Monthly  int      `json:"monthly,omitempty"`
	Yearly   int      `json:"yearly,omitempty"`
	Within   Duration `json:"within,omitempty"`
	Timezone string   `json:"timezone,omitempty"`
}

// KeepRulesOf stores rules.
func KeepRulesOf(r retention.Rules) KeepRules {
	k := KeepRules{Last: r.Last, Hourly: r.Hourly, Daily: r.Daily, Weekly: r.Weekly, Monthly: r.Monthly, Yearly: r.Yearly,
		Within: Duration(r.Within)}
	if r.Location != nil {
		k.Timezone = r.Location.String()
	}
	return k
}

// Rules are the stored rules, ready for retention.Apply.
func (k KeepRules) Rules() (retention.Rules, error) {
	r := retention.Rules{Last: k.Last, Hourly: k.Hourly, Daily: k.Daily, Weekly: k.Weekly, Monthly: k.Monthly, Yearly: k.Yearly,
		Within: time.Duration(k.Within)}
	if k.Timezone != "" {
		loc, err := time.LoadLocation(k.Timezone)
		if err != nil {
			return r, invalidf("time zone %q: %v", k.Timezone, err)
		}
		r.Location = loc
	}
	return r, nil
}

// shownTo is p as caller c may see it: a member sees that there are hooks and a copy
// target, not the commands or where (they may name an admin's hosts, keys or files).
func (p Policy) shownTo(c Caller) Policy {
	p.Hooks, p.CopyTarget = p.Hooks.shownTo(c), p.CopyTarget.shownTo(c)
	return p
}

// PolicyStatus is a policy with its state, its next times and the volumes it has not backed
// up for two periods.
type PolicyStatus struct {
	Policy
	PolicyState
	NextRun    time.Time `json:"next_run,omitempty"`
	NextVerify time.Time `json:"next_verify,omitempty"`
	// VolumeNames are the names of the volumes a run backs up now.
	VolumeNames []string `json:"volume_names"`
	Overdue     []string `json:"overdue_volumes,omitempty"` // no successful backup for two periods
	// Damaged says why the policy cannot be read (its object and second copy both fail their
	// checks, or its object is missing while its copy is left: Missing): it does not run, and
	// only its name is known.
	Damaged string `json:"damaged,omitempty"`
	// Missing says its object is missing while its second copy is left: removed outside cairn,
	// or by a cairn from before the copies ('cairn repo repair --restore-meta' stores it again).
	Missing bool `json:"missing,omitempty"`
}

// Results of a policy run.
const (
	RunSucceeded = "succeeded"
	RunFailed    = "failed"
	RunRunning   = "running"
)

const metaPolicies = "policies"

var policyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// PolicyRequest creates or changes a policy. Volumes are refs (id, name or path).
type PolicyRequest struct {
	Policy
	VolumeRefs []string
}

// CreatePolicy validates and stores a new policy.
func (s *Service) CreatePolicy(ctx context.Context, req PolicyRequest) (*Policy, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if !policyName.MatchString(req.Name) {
		return nil, invalidf("policy name %q: use letters, digits, '.', '_' and '-' (at most 64)", req.Name)
	}
	s.policyRecMu.Lock()
	defer s.policyRecMu.Unlock()
	if _, err := s.storedPolicy(ctx, req.Name); errors.Is(err, repo.ErrCorrupt) {
		return nil, wrapf(ErrExists, "policy %s exists but is damaged (its second copy too): an admin removes it with 'cairn policy delete %s', then create it again", req.Name, req.Name)
	} else if err == nil {
		return nil, wrapf(ErrExists, "policy %s exists: change it with 'cairn policy update %s'", req.Name, req.Name)
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	p := req.Policy
	p.CreatedAt = s.storeNow()
	if err := p.Hooks.validate(c); err != nil {
		return nil, err
	}
	if err := p.CopyTarget.validate(c); err != nil {
		return nil, err
	}
	if err := s.completePolicy(ctx, c, &p, req.VolumeRefs); err != nil {
		return nil, err
	}
	// A policy of this name deleted earlier may have left its state: in another gateway's
	// index, which takes the repository's for its own but keeps its copy where the repository
	// has none [TestPolicyMadeAgainUnderItsNameStartsAfresh]. The new one's is stored empty.
	if err := s.repo.PutMeta(ctx, metaPolicyRuns, p.Name, &PolicyRun{}); err != nil {
		return nil, err
	}
	if err := s.repo.PutMeta(ctx, metaPolicyVerifies, p.Name, &PolicyVerify{}); err != nil {
		return nil, err
	}
	s.cachePolicyState(p.Name, func(st *PolicyState) { *st = PolicyState{} })
	if err := s.repo.PutMeta(ctx, metaPolicies, p.Name, &p); err != nil {
		return nil, err
	}
	s.policiesChanged()
	s.log.Info("policy created", "policy", p.Name, "schedule", p.Schedule, "project", p.Project)
	return &p, nil
}

// UpdatePolicy changes a policy with fn (refs, when not nil, replace its volumes). It stores
// the policy again only while the repository still holds it as it was read: one deleted
// meanwhile, here (policyRecMu) or through another gateway (a read before the store), stays
// deleted [TestPolicyUpdateNeverBringsBackADeletedPolicy], and one changed through another
// gateway meanwhile keeps that change: this update fails with ErrConflict
// [TestPolicyUpdateNeverUndoesAnotherGatewaysUpdate].
func (s *Service) UpdatePolicy(ctx context.Context, name string, refs []string, fn func(*Policy)) (*Policy, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	s.policyRecMu.Lock()
	defer s.policyRecMu.Unlock()
	p, err := s.visiblePolicy(ctx, c, name)
	if err != nil {
		return nil, err
	}
	read := p.UpdatedAt
	// Without new refs it keeps the volumes it backs up now: one forgotten since (which its
	// runs skip) would make the update fail with "not found".
	named := !p.AllOfProject
	vols, err := s.policyVolumes(p)
	if err != nil {
		return nil, err
	}
	hooks, target := p.Hooks, p.CopyTarget
	fn(p)
	p.Name = name
	if p.Hooks != hooks { // a member may change the rest of a policy an admin gave hooks
		if err := p.Hooks.validate(c); err != nil {
			return nil, err
		}
	}
	if p.CopyTarget != target { // or a copy target
		if err := p.CopyTarget.validate(c); err != nil {
			return nil, err
		}
	}
	if refs == nil && named && !p.AllOfProject {
		refs = []string{}
		for _, v := range vols {
			refs = append(refs, v.ID)
		}
	}
	if err := s.completePolicy(ctx, c, p, refs); err != nil {
		return nil, err
	}
	// Read again right before the store: one deleted, or changed, through another gateway
	// since the read above is not undone by this update.
	switch cur, err := s.storedPolicy(ctx, name); {
	case errors.Is(err, ErrNotFound):
		return nil, wrapf(ErrNotFound, "policy %s was deleted meanwhile, and nothing was changed: see 'cairn policy list'", name)
	case err == nil && !cur.UpdatedAt.Equal(read):
		return nil, wrapf(ErrConflict, "policy %s was changed through another gateway meanwhile, and nothing was changed: see 'cairn policy show %s', then update it again", name, name)
	}
	if err := s.repo.PutMeta(ctx, metaPolicies, p.Name, p); err != nil {
		return nil, err
	}
	s.policiesChanged()
	s.log.Info("policy changed", "policy", p.Name, "schedule", p.Schedule)
	shown := p.shownTo(c)
	return &shown, nil
}

// completePolicy checks a policy and resolves its volumes, which must be the project's.
func (s *Service) completePolicy(ctx context.Context, c Caller, p *Policy, refs []string) error {
	if p.Project == "" {
		p.Project = c.Project
	}
	if p.Project != c.Project && !c.Admin {
		return wrapf(ErrDenied, "only an admin may make a policy for another project")
	}
	if _, err := calendar.Parse(p.Schedule); err != nil {
		return invalidf("--schedule: %v", err)
	}
	if p.Verify != "" {
		if !c.Admin {
			return wrapf(ErrDenied, "only an admin may schedule verification (it reads the whole repository's data)")
		}
		if _, err := calendar.Parse(p.Verify); err != nil {
			return invalidf("--verify: %v", err)
		}
		if p.VerifySample <= 0 || p.VerifySample > 100 {
			return invalidf("--verify-sample %g: give a percentage above 0 and at most 100", p.VerifySample)
		}
	}
	if p.FullEvery < 0 {
		return invalidf("--full-every %d: give a count of backups, or 0 for only the first", p.FullEvery)
	}
	rules, err := p.Keep.Rules()
	if err != nil {
		return err
	}
	if err := p.pruneOnlyValid(rules); err != nil {
		return err
	}
	if p.AllOfProject == (len(refs) > 0) {
		return invalidf("name the policy's volumes with --volume, or give --all-volumes for every volume of its project (not both)")
	}
	p.Volumes = nil
	for _, ref := range refs {
		v, err := s.Volume(ctx, ref)
		if err != nil {
			return err
		}
		if v.Project != p.Project {
			return invalidf("volume %s is in project %s, not the policy's project %s", v.Name, v.Project, p.Project)
		}
		p.Volumes = append(p.Volumes, v.ID)
	}
	p.UpdatedAt = s.storeNow()
	return nil
}

// pruneOnlyValid refuses a prune-only policy without rules, or with what only a policy that
// backs up has.
func (p *Policy) pruneOnlyValid(rules retention.Rules) error {
	if !p.PruneOnly {
		return nil
	}
	if rules.Empty() {
		return invalidf("a prune-only policy needs at least one --keep-* rule (e.g. --keep-monthly 12): it does nothing else")
	}
	for _, f := range []struct {
		set  bool
		flag string
	}{{p.Incremental, "--incremental"}, {p.FullEvery > 0, "--full-every"}, {p.VerifyNew, "--verify-new"},
		{p.Hooks != (Hooks{}), "--pre-hook and --post-hook"}, {p.CopyTarget != (CopyTarget{}), "--copy-to"}} {
		if f.set {
			return invalidf("a prune-only policy backs up nothing, so %s does not apply to it: leave it out, or make a policy that backs up (without --prune-only)", f.flag)
		}
	}
	return nil
}

// DeletePolicy removes a policy; a run in progress finishes.
func (s *Service) DeletePolicy(ctx context.Context, name string) error {
	c, err := callerOf(ctx)
	if err != nil {
		return err
	}
	s.policyRecMu.Lock()
	defer s.policyRecMu.Unlock()
	// A damaged policy's project is not known: an admin alone may remove it.
	if _, err := s.visiblePolicy(ctx, c, name); err != nil && !(c.Admin && errors.Is(err, repo.ErrCorrupt)) {
		return err
	}
	if err := s.repo.DeleteMeta(ctx, metaPolicies, name); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return err // not found: a missing policy's copy went, and with it the policy
	}
	s.forgetPolicyState(ctx, name)
	s.policiesChanged()
	s.log.Info("policy deleted", "policy", name)
	return nil
}

// Policies lists the policies the caller sees, with their state.
func (s *Service) Policies(ctx context.Context) ([]*PolicyStatus, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	all, damaged, err := s.loadPolicies(ctx)
	if err != nil {
		return nil, err
	}
	s.refreshPolicyStates(ctx, all)
	out := []*PolicyStatus{}
	for _, p := range all {
		if c.sees(p.Project) {
			st := s.policyStatus(p, s.storeNow())
			st.Policy = st.Policy.shownTo(c)
			out = append(out, st)
		}
	}
	// Whose a damaged policy is, is not known: admins alone see it. So with a missing one,
	// whose copy is not read until an admin decides.
	if c.Admin {
		for _, name := range slices.Sorted(maps.Keys(damaged)) {
			out = append(out, &PolicyStatus{Policy: Policy{Name: name}, VolumeNames: []string{}, Damaged: damaged[name]})
		}
		missing, err := s.repo.MissingMetaNames(ctx, metaPolicies)
		if err != nil {
			return nil, err
		}
		for _, name := range missing {
			out = append(out, &PolicyStatus{Policy: Policy{Name: name}, VolumeNames: []string{}, Missing: true,
				Damaged: "its object is missing while its second copy is left (removed outside cairn, or by a cairn from before 2026-12-07): 'cairn repo repair --restore-meta' stores it again"})
		}
	}
	return out, nil
}

// PolicyStatus returns one policy with its state.
func (s *Service) PolicyStatus(ctx context.Context, name string) (*PolicyStatus, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.visiblePolicy(ctx, c, name)
	if err != nil {
		return nil, err
	}
	if _, err := s.storedState(ctx, p.Name); err != nil {
		return nil, err
	}
	st := s.policyStatus(p, s.storeNow())
	st.Policy = st.Policy.shownTo(c)
	return st, nil
}

func (s *Service) visiblePolicy(ctx context.Context, c Caller, name string) (*Policy, error) {
	p, err := s.storedPolicy(ctx, name)
	if errors.Is(err, ErrNotFound) && c.Admin {
		// Missing while its copy is left: lost, or removed by a cairn from before the copies
		// (docs/design.md, "A metadata object lost, its copy left"). Whose it was is not read
		// from the copy: admins alone hear of it, as of a damaged one.
		if left, lerr := s.repo.MetaCopyLeft(ctx, metaPolicies, name); lerr == nil && left {
			return nil, fmt.Errorf("policy %s: %w", name, errPolicyMissing)
		}
	}
	if err != nil {
		return nil, err
	}
	if !c.sees(p.Project) {
		return nil, wrapf(ErrNotFound, "policy %s not found: see 'cairn policy list'", name)
	}
	return p, nil
}

// errPolicyMissing says a policy's object is missing while its second copy is left: damage
// to the repository (errors.Is(err, repo.ErrCorrupt) holds, so the CLI exits 8).
var errPolicyMissing error = repo.Damage("its object is missing while its second copy is left (removed outside cairn?), so it does not run: 'cairn repo repair --restore-meta' stores it again, 'cairn policy delete' or '--forget-damaged' removes the copy")

func (s *Service) storedPolicy(ctx context.Context, name string) (*Policy, error) {
	var p Policy
	err := s.repo.GetMeta(ctx, metaPolicies, name, &p)
	if errors.Is(err, backend.ErrNotFound) {
		return nil, wrapf(ErrNotFound, "policy %s not found: see 'cairn policy list'", name)
	}
	if err != nil {
		return nil, err
	}
	return &p, nil
}

// loadPolicies reads every policy from the repository, by name. A policy whose object and
// second copy both fail their checks cannot run: it is left out, and named in damaged with
// why, for an admin's 'policy list' and 'cairn status' to show.
func (s *Service) loadPolicies(ctx context.Context) (out []*Policy, damaged map[string]string, err error) {
	damaged = map[string]string{}
	err = s.repo.ListMeta(ctx, metaPolicies, func(name string, b []byte) error {
		var p Policy
		if json.Unmarshal(b, &p) != nil || p.Name != name {
			s.log.Warn("policy object unreadable: skipped", "policy", name)
			damaged[name] = "its object does not hold a policy of that name"
			return nil
		}
		out = append(out, &p)
		return nil
	}, func(key string, err error) {
		s.log.Warn("policy object damaged: skipped", "key", key, "error", err)
		if m, ok := repo.MetaObjectOf(key); ok {
			damaged[m.Name] = err.Error()
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, damaged, err
}

// policyStatus joins a policy with its state and next times.
func (s *Service) policyStatus(p *Policy, at time.Time) *PolicyStatus {
	st := &PolicyStatus{Policy: *p, PolicyState: s.policyState(p.Name)}
	if sp, err := calendar.Parse(p.Schedule); err == nil {
		st.NextRun = nextOf(sp, s.runSince(p, st.PolicyRun, at))
		if st.NextRun.Before(at) {
			st.NextRun = at // missed: runs as soon as the scheduler looks
		}
		st.Overdue = s.overdueVolumes(p, sp, at)
	}
	st.VolumeNames = []string{}
	if vols, err := s.policyVolumes(p); err == nil {
		for _, v := range vols {
			st.VolumeNames = append(st.VolumeNames, v.Name)
		}
	}
	if p.Verify != "" {
		if sp, err := calendar.Parse(p.Verify); err == nil {
			st.NextVerify = s.verifyDue(sp, p, st.PolicyVerify, at)
		}
	}
	return st
}

// overdueVolumes are the policy's volumes without an available backup for two periods of
// its schedule (counted from the newest backup, or from the policy's creation, or from when
// this gateway first found that dated ahead of its clock: a backup dated by a clock that ran
// ahead, and every later one dated after it (datedAfterEarlier), kept the warning silent until
// the clocks caught up [TestVolumeWhoseBackupIsDatedAheadBecomesOverdue]); none for a
// prune-only policy.
func (s *Service) overdueVolumes(p *Policy, sp *calendar.Spec, at time.Time) []string {
	if p.PruneOnly {
		return nil // it backs up nothing
	}
	vols, err := s.policyVolumes(p)
	if err != nil {
		return nil
	}
	var out []string
	for _, v := range vols {
		since := p.CreatedAt
		if b, err := s.latestBackup(v.ID, p.Project); err == nil && b != nil && b.CreatedAt.After(since) {
			since = b.CreatedAt
		}
		since = s.policyAhead.notAhead(s.log, "newest backup of volume "+v.Name+" ("+v.ID+") for policy "+p.Name, since, at)
		first := nextOf(sp, since)
		if first.IsZero() {
			continue
		}
		if second := nextOf(sp, first); !second.IsZero() && second.Before(at) {
			out = append(out, v.Name)
		}
	}
	return out
}

// policyVolumes are the volumes a run backs up now.
func (s *Service) policyVolumes(p *Policy) ([]*index.Volume, error) {
	if p.AllOfProject {
		all, err := s.idx.Volumes()
		if err != nil {
			return nil, err
		}
		var out []*index.Volume
		for _, v := range all {
			if v.Project == p.Project {
				out = append(out, v)
			}
		}
		return out, nil
	}
	out := make([]*index.Volume, 0, len(p.Volumes))
	for _, id := range p.Volumes {
		v, err := s.idx.Volume(id)
		if errors.Is(err, index.ErrNotFound) {
			continue // deleted since: the policy skips it
		}
		if err != nil {
			return nil, err
		}
		if v.Project != p.Project {
			continue // forgotten and registered again into another project: no longer the policy's
		}
		out = append(out, v)
	}
	return out, nil
}

// learnVolumes adds to the index the volumes of p that another gateway managed since this one
// opened its index (their records are in the repository): a run here skipped them, and the
// gateway that manages them did not run the policy, since this one held its claim
// [TestPolicyRunOnAnotherGatewayBacksUpItsVolumes]. Each is learned by learnVolume, which
// reads the record again under volumeRecMu: a record read without it may be that of a volume
// being forgotten here, and learned back it would be backed up, which stores its record again
// [TestPolicyRunDuringAnUnmanageDoesNotBringTheVolumeBack].
func (s *Service) learnVolumes(ctx context.Context, p *Policy) error {
	learn := func(id string) error {
		learned, err := s.learnVolume(ctx, id)
		if learned {
			s.log.Info("volume managed through another gateway learned for a policy run", "policy", p.Name, "volume_id", id)
		}
		return err
	}
	if !p.AllOfProject {
		for _, id := range p.Volumes {
			if err := learn(id); err != nil {
				return err
			}
		}
		return nil
	}
	return s.repo.ListMeta(ctx, metaVolumes, func(id string, b []byte) error {
		var v index.Volume
		if json.Unmarshal(b, &v) != nil || v.ID != id || v.Project != p.Project {
			return nil
		}
		return learn(id)
	}, func(key string, err error) { s.log.Warn("volume record damaged: skipped", "key", key, "error", err) })
}

// nextOf is the first time after `after` that a policy's calendar names, in UTC like every
// time the gateway keeps. A calendar that names no time zone is read in the server's local
// zone, as systemd reads a timer's and as the keep rules make their buckets: 'Mon..Fri 02:00'
// is 02:00 on this host's clock, not in UTC, which is what now() returns.
func nextOf(sp *calendar.Spec, after time.Time) time.Time {
	return sp.Next(after.In(time.Local)).UTC()
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// RunPolicy runs a policy now: each volume's backup (incremental unless a full is due), then
// a prune of that volume by the policy's rules. It returns the first failure; the other
// volumes are still backed up. It fails with ErrConflict while the policy runs, here or on
// another gateway.
func (s *Service) RunPolicy(ctx context.Context, name string) (*PolicyStatus, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.visiblePolicy(ctx, c, name)
	if err != nil {
		return nil, err
	}
	if !s.claimPolicy(p.Name) {
		return nil, wrapf(ErrConflict, "policy %s is running already: see 'cairn policy show %s'", p.Name, p.Name)
	}
	defer s.unclaimPolicy(p.Name)
	lk, st, err := s.claim(ctx, p.Name, false)
	if errors.Is(err, repo.ErrLocked) {
		return nil, wrapf(ErrConflict, "policy %s is running on another gateway (%v): see 'cairn policy show %s'", p.Name, err, p.Name)
	}
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	err = s.runClaimedPolicy(ctx, p, lk, st.PolicyRun, false)
	if cf := (*copiesFailed)(nil); !c.Admin && errors.As(err, &cf) {
		err = fmt.Errorf("policy %s: %s", p.Name, cf.stored()) // a member may run it: not where
	}
	shown := s.policyStatus(p, s.storeNow())
	shown.Policy = shown.Policy.shownTo(c)
	return shown, err
}

// copiesFailed is a run's failure to copy its backups to the policy's copy target. The run's
// error that is stored (LastError) reaches the project's members (the policy's status, the
// console, the overview), so it says only that the copies failed; where, and why there (a
// path, an endpoint), is the admin's: in the error the run returns (policy run) and in the
// gateway's log.
type copiesFailed struct{ err error }

func (e *copiesFailed) Error() string {
	return "copying the backups to the policy's copy target failed: " + e.err.Error()
}

func (e *copiesFailed) Unwrap() error { return e.err }

func (e *copiesFailed) stored() string {
	return "copying the backups to the policy's copy target failed: an admin sees why in 'cairn policy run' or the gateway's log"
}

// runClaimedPolicy is one run of a policy whose claim lk the caller holds, from the state run
// it read with the claim, as the policy's project (not as whoever triggered it). A scheduled
// run that ends with its context (the gateway stops) is recorded interrupted: the scheduler
// runs it again at its next look. One an admin started and cancelled is only failed.
func (s *Service) runClaimedPolicy(ctx context.Context, p *Policy, lk *repo.Lock, run PolicyRun, scheduled bool) error {
	ctx = WithCaller(ctx, Caller{User: "policy " + p.Name, Project: p.Project})
	began, start := time.Now(), s.storeNow()
	run.LastRun, run.LastResult, run.LastError, run.Interrupted, run.LastDid = start, RunRunning, "", false, nil
	if _, err := s.storeRun(ctx, p, run); err != nil {
		return fmt.Errorf("policy %s: record its run: %w: nothing was backed up", p.Name, err)
	}
	s.log.Info("policy run started", "policy", p.Name)
	err := s.policyBackups(ctx, p, lk, &run)
	if lerr := lk.Check(); lerr != nil {
		// Another gateway may hold the claim now and store its own run: this one's result is
		// not stored over it. The state stays running, which the next claimer, here or
		// elsewhere, takes for an interrupted run and runs again at once
		// [TestPolicyRunThatLostItsClaimRunsAgain].
		if err == nil {
			err = fmt.Errorf("the policy's claim: %w: another gateway may run it now", lerr)
		}
		s.log.Error("policy run stopped: its claim was lost", "policy", p.Name, "error", err)
		return fmt.Errorf("policy %s: %w", p.Name, err)
	}
	run.Runs++
	run.LastResult = RunSucceeded
	if err != nil {
		run.LastResult, run.LastError = RunFailed, err.Error()
		if cf := (*copiesFailed)(nil); errors.As(err, &cf) {
			run.LastError = cf.stored()
		}
		if scheduled && ctx.Err() != nil {
			run.LastError, run.Interrupted = "interrupted: the gateway stopped during the run", true
		}
	}
	// A run of a policy deleted meanwhile (ErrNotFound) is not in the metrics either: its state
	// is not the policy's, nor the state of one made again under its name.
	if st, serr := s.storeRunEnd(ctx, p, lk, run); !errors.Is(serr, ErrNotFound) {
		s.metrics.policyRun(p.Name, st, start)
	}
	switch {
	case isPolicyGone(err):
		s.log.Info("policy deleted during its run: the run stopped", "policy", p.Name, "reason", err)
		return fmt.Errorf("policy %s: %w", p.Name, err)
	case err != nil:
		s.log.Error("policy run failed", "policy", p.Name, "error", err, "seconds", time.Since(began).Seconds())
		return fmt.Errorf("policy %s: %w", p.Name, err)
	}
	s.log.Info("policy run finished", "policy", p.Name, "seconds", time.Since(began).Seconds())
	return nil
}

// runEndRetries bounds the stores of a run's end after the first failed: waits of 1, 2, 4 and
// 8 s. A variable for tests.
var runEndRetries = 4

// storeRunEnd stores how p's run ended, trying again while its claim lk is held: a run whose
// end is not stored stays running in the repository, which the next claimer (any gateway)
// takes for a run whose gateway is gone, and runs again at once: every volume backed up twice
// and pruned once more [TestPolicyRunWhoseEndStoreFailedOnceIsNotRunAgain]. A gateway
// stopping (ctx) stops trying.
func (s *Service) storeRunEnd(ctx context.Context, p *Policy, lk *repo.Lock, run PolicyRun) (PolicyState, error) {
	st, err := s.storeRun(ctx, p, run)
	for i, wait := 0, time.Second; err != nil && !errors.Is(err, ErrNotFound) && i < runEndRetries; i, wait = i+1, 2*wait {
		s.log.Warn("policy run's end not stored: trying again", "policy", p.Name, "in", wait, "error", err)
		select {
		case <-ctx.Done():
			return st, err
		case <-time.After(wait):
		}
		if lerr := lk.Check(); lerr != nil {
			return st, err // another gateway may hold the claim now: its state stands
		}
		st, err = s.storeRun(ctx, p, run)
	}
	return st, err
}

// policyBackups backs up and prunes each of p's volumes in turn, counting the backups since
// each one's last full in run (stored after each). It stops when its claim lk is lost: another
// gateway may run the policy then.
func (s *Service) policyBackups(ctx context.Context, p *Policy, lk *repo.Lock, run *PolicyRun) error {
	if err := s.learnVolumes(ctx, p); err != nil {
		return err
	}
	if p.PruneOnly {
		return s.policyPrune(ctx, p, run)
	}
	vols, err := s.policyVolumes(p)
	if err != nil {
		return err
	}
	var first error
	fail := func(err error) {
		// A policy deleted during the run is what the run ends with, whatever failed before:
		// it stops the copies below and says so [TestPolicyRunPrunesByTheRulesOfItsPolicyNow].
		if first == nil || isPolicyGone(err) && !isPolicyGone(first) {
			first = err
		}
	}
	for _, v := range vols {
		if ctx.Err() != nil {
			fail(ctx.Err())
			break
		}
		if err := lk.Check(); err != nil {
			fail(fmt.Errorf("the policy's claim: %w: another gateway may run it now", err))
			break
		}
		did := PolicyDid{VolumeID: v.ID, Volume: v.Name}
		failed := func(err error) {
			fail(err)
			did.Error = err.Error()
			run.LastDid = append(run.LastDid, did)
		}
		incr, since, err := s.policyIncremental(p, v, run)
		if err != nil {
			failed(err)
			continue
		}
		b, err := s.CreateBackup(ctx, BackupRequest{Volume: v.ID, Incremental: incr, Name: "policy " + p.Name, Hooks: p.Hooks, policyHooks: true})
		if err == nil && s.Async() {
			b, err = s.WaitBackup(ctx, b.ID)
		}
		if err == nil && b.Status != index.BackupAvailable {
			err = fmt.Errorf("backup %s of volume %s: %s", b.ID, v.Name, b.FailReason)
		}
		if err != nil {
			s.log.Warn("policy backup failed", "policy", p.Name, "volume_id", v.ID, "error", err)
			failed(err)
			continue
		}
		did.BackupID, did.Incremental = b.ID, b.IsIncremental
		if run.SinceFull == nil {
			run.SinceFull = map[string]int{}
		}
		run.SinceFull[v.ID] = 1
		if b.IsIncremental {
			run.SinceFull[v.ID] = since + 1
		}
		if err := lk.Check(); err != nil {
			// Not stored: another gateway may hold the claim and store its run now.
			fail(fmt.Errorf("the policy's claim: %w: another gateway may run it now", err))
			break
		}
		if _, err := s.storeRun(ctx, p, *run); errors.Is(err, ErrNotFound) {
			failed(&policyGone{v.Name})
			break
		}
		if p.VerifyNew {
			if _, err := s.VerifyBackup(ctx, b.ID, nil); err != nil {
				s.log.Error("policy: the new backup failed its verification; the volume's prune is skipped",
					"policy", p.Name, "volume_id", v.ID, "backup_id", b.ID, "error", err)
				failed(fmt.Errorf("the verification of backup %s of volume %s (its prune was skipped): %w", b.ID, v.Name, err))
				continue
			}
			did.Verified = true
		}
		rules, err := s.currentRules(ctx, p, v)
		if isPolicyGone(err) {
			failed(err)
			break
		}
		if err != nil {
			s.log.Warn("policy prune skipped", "policy", p.Name, "volume_id", v.ID, "error", err)
			failed(err)
			continue
		}
		if rules.Empty() {
			run.LastDid = append(run.LastDid, did)
			continue
		}
		res, err := s.Prune(ctx, PruneRequest{Volumes: []string{v.ID}, Rules: rules})
		if res != nil {
			did.Pruned, did.Kept = res.Removed, res.Kept
		}
		if err == nil && res.Failed > 0 {
			err = pruneFailure(v, res)
		}
		if err != nil {
			s.log.Warn("policy prune failed", "policy", p.Name, "volume_id", v.ID, "error", err)
			failed(err)
			continue
		}
		run.LastDid = append(run.LastDid, did)
	}
	if p.CopyTarget != (CopyTarget{}) && ctx.Err() == nil && !isPolicyGone(first) {
		if err := lk.Check(); err != nil {
			fail(fmt.Errorf("the policy's claim: %w: another gateway may run it now", err))
		} else if err := s.policyCopies(ctx, p, vols); err != nil {
			// Where the copies go, and why they failed there (a path, an endpoint), is an
			// admin's to know: the run's error reaches the project's members (policy show,
			// the console, the overview), so it says only that the copies failed; the
			// gateway's log has the rest.
			s.log.Warn("policy copies failed", "policy", p.Name, "to", p.Where(), "error", err)
			fail(&copiesFailed{err})
		}
	}
	// Volumes the policy no longer backs up are no longer counted.
	for id := range run.SinceFull {
		if !slices.ContainsFunc(vols, func(v *index.Volume) bool { return v.ID == id }) {
			delete(run.SinceFull, id)
		}
	}
	return first
}

// currentRules are the keep rules p's run prunes volume v by: those of the policy as the
// repository holds it now, read again before each volume's prune. A prune cannot be undone and
// a run over many volumes lasts hours: an admin who corrects a mistaken --keep-last during the
// run, or deletes the policy, spares the volumes not yet pruned
// [TestPolicyRunPrunesByTheRulesOfItsPolicyNow]. A policy deleted, or deleted and made again
// (another created_at), is policyGone, and the run stops; one that cannot be read skips v's
// prune. A change that lands between this read and the prune applies from the next volume.
func (s *Service) currentRules(ctx context.Context, p *Policy, v *index.Volume) (retention.Rules, error) {
	cur, err := s.storedPolicy(ctx, p.Name)
	switch {
	case errors.Is(err, ErrNotFound), err == nil && !cur.CreatedAt.Equal(p.CreatedAt):
		return retention.Rules{}, &policyGone{v.Name}
	case err != nil:
		return retention.Rules{}, fmt.Errorf("volume %s was not pruned: its policy could not be read again before the prune (%w); the next run prunes it", v.Name, err)
	}
	if cur.Keep != p.Keep {
		s.log.Info("policy's keep rules changed during its run: the volume is pruned by the new ones", "policy", p.Name, "volume_id", v.ID)
	}
	return cur.Keep.Rules()
}

// policyGone is why a run whose policy was deleted (or deleted and made again) during it
// stopped at a volume: neither its backups nor its prunes are wanted any more. Its state is
// not stored (ownState), so the run's error and the log say it. Of kind ErrNotFound.
type policyGone struct{ volume string }

func (e *policyGone) Error() string {
	return "deleted during its run: the run stopped before pruning volume " + e.volume + ", and backed up or pruned no volume after it"
}

func (e *policyGone) Is(target error) bool { return target == ErrNotFound }

func isPolicyGone(err error) bool { return errors.As(err, new(*policyGone)) }

// policyPrune is the run of a prune-only policy: one prune of its volumes' backups by its
// rules, as its project (every volume of the project, gone ones too, with AllOfProject).
func (s *Service) policyPrune(ctx context.Context, p *Policy, run *PolicyRun) error {
	rules, err := p.Keep.Rules()
	if err != nil {
		return err
	}
	req := PruneRequest{Rules: rules, All: p.AllOfProject}
	if !p.AllOfProject {
		req.Volumes = p.Volumes
	}
	res, err := s.Prune(ctx, req)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	run.LastDid = prunedByVolume(res)
	if res.Failed > 0 {
		for _, d := range res.Backups {
			if d.Error != "" {
				return fmt.Errorf("prune: %d backups could not be removed and stay (backup %s: %s)", res.Failed, d.ID, d.Error)
			}
		}
	}
	s.log.Info("policy pruned", "policy", p.Name, "kept", res.Kept, "removed", res.Removed)
	return nil
}

// prunedByVolume is what a prune-only run did, volume by volume, in the order the prune
// decided them.
func prunedByVolume(res *PruneResult) []PolicyDid {
	var out []PolicyDid
	at := map[string]int{}
	for _, d := range res.Backups {
		i, ok := at[d.VolumeID]
		if !ok {
			i = len(out)
			at[d.VolumeID] = i
			out = append(out, PolicyDid{VolumeID: d.VolumeID, Volume: d.VolumeName})
		}
		switch {
		case d.Error != "":
			out[i].Error = d.Error
		case d.Action == "remove":
			out[i].Pruned++
		default:
			out[i].Kept++
		}
	}
	return out
}

// pruneFailure says why a policy's prune of v left backups it should have removed.
func pruneFailure(v *index.Volume, res *PruneResult) error {
	for _, d := range res.Backups {
		if d.Error != "" {
			return fmt.Errorf("prune of volume %s: %d backups could not be removed and stay (backup %s: %s)", v.Name, res.Failed, d.ID, d.Error)
		}
	}
	return nil
}

// policyIncremental says whether the volume's next backup under p is incremental: never
// without --incremental or without an earlier backup; with FullEvery n, every nth of the
// policy's backups of the volume is full, however many of them a prune removed. It returns
// the backups since the last full too (PolicyRun.SinceFull).
func (s *Service) policyIncremental(p *Policy, v *index.Volume, run *PolicyRun) (incr bool, since int, err error) {
	if !p.Incremental {
		return false, 0, nil
	}
	latest, err := s.latestBackup(v.ID, p.Project)
	if err != nil || latest == nil {
		return false, 0, err
	}
	since, ok := run.SinceFull[v.ID]
	if !ok {
		// Not counted yet (a new volume of the policy, or one an earlier cairn counted in an
		// index since lost): count the chain back
		// to its base, which is right unless a prune re-linked it; from there the count is kept.
		since = 1
		for b := latest; b.IsIncremental && b.ParentID != ""; since++ {
			if b, err = s.idx.Backup(b.ParentID); err != nil {
				break
			}
		}
	}
	return p.FullEvery <= 0 || since < p.FullEvery, since, nil
}

// claimPolicy marks a policy running; false when it already is.
func (s *Service) claimPolicy(name string) bool {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	if s.policyRuns[name] {
		return false
	}
	if s.policyRuns == nil {
		s.policyRuns = map[string]bool{}
	}
	s.policyRuns[name] = true
	return true
}

func (s *Service) unclaimPolicy(name string) {
	s.policyMu.Lock()
	delete(s.policyRuns, name)
	s.policyMu.Unlock()
}
