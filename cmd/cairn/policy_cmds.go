package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/cairn-backup/cairn/gateway"
)

// PolicyCmd manages scheduled backup policies, which 'cairn serve' runs.
type PolicyCmd struct {
	Create PolicyCreateCmd `cmd:"" help:"Create a policy: backups on a calendar, a prune after each, sampled verification."`
	List   PolicyListCmd   `cmd:"" help:"List policies with their last and next runs and overdue volumes."`
	Show   PolicyShowCmd   `cmd:"" help:"Show a policy."`
	Update PolicyUpdateCmd `cmd:"" help:"Change a policy (only the flags given)."`
	Delete PolicyDeleteCmd `cmd:"" help:"Delete a policy (its backups stay)."`
	Run    PolicyRunCmd    `cmd:"" help:"Run a policy now."`
}

// PolicyFlags are what a policy says, for create and update.
type PolicyFlags struct {
	Volume       []string `help:"A volume the policy backs up (id, name or path); repeat for more." placeholder:"VOLUME"`
	AllVolumes   bool     `help:"Back up every volume of the project (--project), as it is at each run."`
	Schedule     string   `help:"When to back up: a systemd calendar expression (daily, 'Mon..Fri 02:00', '*:0/15'), in the server's local time unless it names a zone ('02:00 UTC')." placeholder:"CALENDAR"`
	Incremental  bool     `help:"Incremental backups (the first, and every --full-every'th, is full)." negatable:""`
	FullEvery    int      `help:"With --incremental: every Nth of the policy's backups of a volume is full, whatever its prunes removed (0: only the first)." placeholder:"N"`
	VerifyNew    bool     `help:"Verify each backup the policy makes right after it (every block read back and checked); a volume whose new backup fails is not pruned." negatable:""`
	Verify       string   `help:"Admins: when to re-read a sample of the repository's data (a calendar expression, read as --schedule)." placeholder:"CALENDAR"`
	VerifySample float64  `help:"Percent of the packs each verification reads." default:"5" placeholder:"PERCENT"`
	PruneOnly    bool     `help:"Back up nothing: each run prunes the backups of the policy's volumes by its --keep-* rules; with --all-volumes, of every volume of the project, those that are gone too (the retention of a repository of copies)." negatable:""`
	KeepFlags
	HookFlags
	CopyFlags
}

// CopyFlags say where a policy copies its backups after each run.
type CopyFlags struct {
	CopyTo           string `help:"Admins: after each run, copy the backups of the policy's volumes that REPO lacks there, oldest first (a directory or s3://BUCKET/PREFIX; an empty one, --copy-to=, stops it)." placeholder:"REPO"`
	CopyConfig       string `help:"Admins: a cairn configuration file for the copies' repository (repo, endpoint, keys, password_file, ...), read by the gateway that runs the policy: another S3 service or other keys than the gateway's (an empty one, --copy-config=, stops it)." placeholder:"FILE"`
	CopyPasswordFile string `help:"The passphrase file of --copy-to's repository, read by the gateway that runs the policy." placeholder:"FILE"`
	CopyStateDir     string `help:"Where the gateway keeps the index of --copy-to's repository (default: as for that repository)." placeholder:"DIR"`
}

// target is the copy target as the gateway will read it: paths made absolute from the CLI's
// working directory.
func (f CopyFlags) target(g *Globals) gateway.CopyTarget {
	abs := func(p string) string {
		if p == "" || strings.Contains(p, "://") {
			return p
		}
		a, err := filepath.Abs(g.clientPath(p))
		if err != nil {
			return p
		}
		return a
	}
	return gateway.CopyTarget{CopyTo: abs(f.CopyTo), CopyConfig: abs(f.CopyConfig), CopyPasswordFile: abs(f.CopyPasswordFile),
		CopyStateDir: abs(f.CopyStateDir)}
}

// HookFlags are the commands run around a backup's point in time (docs/design.md, "Hooks").
type HookFlags struct {
	PreHook     string        `help:"Admins: a shell command run just before the point in time (the snapshot or clone read) is taken, to quiesce what uses the volume (virsh domfsfreeze DOMAIN, fsfreeze -f MOUNT); if it fails, nothing is backed up." placeholder:"CMD"`
	PostHook    string        `help:"Admins: a shell command run as soon as the point in time is taken (or failed), to resume (virsh domfsthaw DOMAIN); always run once --pre-hook started." placeholder:"CMD"`
	HookTimeout time.Duration `help:"Bound on each hook; then it is killed (default 5m)." placeholder:"DURATION"`
}

func (h HookFlags) hooks() gateway.Hooks {
	return gateway.Hooks{Pre: h.PreHook, Post: h.PostHook, Timeout: gateway.Duration(h.HookTimeout)}
}

// hooksText says what hooks run, without their commands' arguments in full.
func hooksText(h gateway.Hooks) string {
	if h.Pre == "" && h.Post == "" {
		return "-"
	}
	var parts []string
	if h.Pre != "" {
		parts = append(parts, "pre: "+h.Pre)
	}
	if h.Post != "" {
		parts = append(parts, "post: "+h.Post)
	}
	if h.Timeout > 0 {
		parts = append(parts, "timeout "+time.Duration(h.Timeout).String())
	}
	return strings.Join(parts, "; ")
}

// PolicyCreateCmd creates a policy.
type PolicyCreateCmd struct {
	Name string `arg:"" help:"Policy name."`
	PolicyFlags
}

// Run creates the policy.
func (c *PolicyCreateCmd) Run(ctx context.Context, g *Globals) error {
	if c.Schedule == "" {
		return gateway.Errorf(gateway.ErrInvalid, "--schedule is required: a systemd calendar expression like daily or 'Mon..Fri 02:00'")
	}
	rules, err := c.rules()
	if err != nil {
		return err
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	p := gateway.Policy{Name: c.Name, AllOfProject: c.AllVolumes, Schedule: c.Schedule, Incremental: c.Incremental,
		FullEvery: c.FullEvery, Keep: gateway.KeepRulesOf(rules), Verify: c.Verify, VerifyNew: c.VerifyNew, Hooks: c.hooks(),
		CopyTarget: c.target(g), PruneOnly: c.PruneOnly}
	if c.Verify != "" {
		p.VerifySample = c.VerifySample
	}
	created, err := s.CreatePolicy(ctx, gateway.PolicyRequest{Policy: p, VolumeRefs: c.Volume})
	if err != nil {
		return err
	}
	st, err := s.PolicyStatus(ctx, created.Name)
	if err != nil {
		return err
	}
	if err := showPolicy(g, st); err != nil {
		return err
	}
	pruneNote(ctx, g, s, created)
	return nil
}

// pruneNote tells, after a policy's keep rules were set, how many backups already there they
// leave out, which the policy's next run removes: its rules count every backup of a volume,
// those made by hand too, and a new admin's first run of a policy removed the day's earlier
// backups without a word. A note on stderr; a failure to work it out is not the command's.
func pruneNote(ctx context.Context, g *Globals, s *gateway.Service, p *gateway.Policy) {
	rules, err := p.Keep.Rules()
	if err != nil || rules.Empty() || g.Quiet {
		return
	}
	req := gateway.PruneRequest{Rules: rules, DryRun: true, All: p.AllOfProject}
	if !p.AllOfProject {
		req.Volumes = p.Volumes
	}
	res, err := s.Prune(gateway.WithCaller(ctx, gateway.Caller{User: "policy " + p.Name, Project: p.Project}), req)
	if err != nil || res.Removed == 0 {
		return
	}
	var names []string
	n := map[string]int{}
	for _, d := range res.Backups {
		if d.Action == "remove" {
			if n[d.VolumeName] == 0 {
				names = append(names, d.VolumeName)
			}
			n[d.VolumeName]++
		}
	}
	var parts []string
	for _, v := range names {
		parts = append(parts, fmt.Sprintf("%d of %s", n[v], v))
	}
	what := fmt.Sprintf("%d backups already there fall", res.Removed)
	if res.Removed == 1 {
		what = "1 backup already there falls"
	}
	fmt.Fprintf(g.stderr, "cairn: note: %s outside policy %s's keep rules (%s): %s; its next run removes them ('cairn backup protect ID' keeps one out of their reach)\n",
		what, p.Name, rules, strings.Join(parts, ", "))
}

// PolicyUpdateCmd changes a policy.
type PolicyUpdateCmd struct {
	Name string `arg:"" help:"Policy name."`
	PolicyFlags
}

// Run changes what the flags given say.
func (c *PolicyUpdateCmd) Run(ctx context.Context, g *Globals, k *kong.Context) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	set := flagsGiven(k)
	keepSet := false
	for _, f := range []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-within", "timezone"} {
		keepSet = keepSet || set[f]
	}
	// The rules given are checked before anything is stored: refused from inside the update,
	// they left the flags read before them stored (--all-volumes, --prune-only) and the command
	// said it had failed [TestPolicyUpdateWithABadRuleChangesNothing].
	var keep gateway.KeepRules
	if keepSet {
		r, err := c.rules()
		if err != nil {
			return err
		}
		keep = gateway.KeepRulesOf(r)
	}
	var refs []string
	if set["volume"] {
		refs = c.Volume
	}
	p, err := s.UpdatePolicy(ctx, c.Name, refs, func(p *gateway.Policy) {
		if set["all-volumes"] {
			p.AllOfProject = c.AllVolumes
			if c.AllVolumes {
				p.Volumes = nil
			}
		}
		if set["volume"] {
			p.AllOfProject = false
		}
		if set["schedule"] {
			p.Schedule = c.Schedule
		}
		if set["incremental"] {
			p.Incremental = c.Incremental
		}
		if set["full-every"] {
			p.FullEvery = c.FullEvery
		}
		if set["verify-new"] {
			p.VerifyNew = c.VerifyNew
		}
		if set["prune-only"] {
			p.PruneOnly = c.PruneOnly
		}
		if set["verify"] {
			p.Verify = c.Verify
			if p.VerifySample == 0 {
				p.VerifySample = c.VerifySample
			}
		}
		if set["verify-sample"] {
			p.VerifySample = c.VerifySample
		}
		if set["pre-hook"] {
			p.Pre = c.PreHook
		}
		if set["post-hook"] {
			p.Post = c.PostHook
		}
		if set["hook-timeout"] {
			p.Timeout = gateway.Duration(c.HookTimeout)
		}
		given := c.target(g)
		if set["copy-to"] {
			p.CopyTo = given.CopyTo
		}
		if set["copy-config"] {
			p.CopyConfig = given.CopyConfig
		}
		if (set["copy-to"] || set["copy-config"]) && p.CopyTo == "" && p.CopyConfig == "" {
			p.CopyTarget = gateway.CopyTarget{} // no copies any more
		}
		if set["copy-password-file"] {
			p.CopyPasswordFile = given.CopyPasswordFile
		}
		if set["copy-state-dir"] {
			p.CopyStateDir = given.CopyStateDir
		}
		if keepSet {
			// Only the rules given change; the others, and the time zone, stay.
			for _, f := range []struct {
				flag     string
				to, from *int
			}{{"keep-last", &p.Keep.Last, &keep.Last}, {"keep-hourly", &p.Keep.Hourly, &keep.Hourly},
				{"keep-daily", &p.Keep.Daily, &keep.Daily}, {"keep-weekly", &p.Keep.Weekly, &keep.Weekly},
				{"keep-monthly", &p.Keep.Monthly, &keep.Monthly}, {"keep-yearly", &p.Keep.Yearly, &keep.Yearly}} {
				if set[f.flag] {
					*f.to = *f.from
				}
			}
			if set["keep-within"] {
				p.Keep.Within = keep.Within
			}
			if set["timezone"] {
				p.Keep.Timezone = keep.Timezone
			}
		}
	})
	if err != nil {
		return err
	}
	st, err := s.PolicyStatus(ctx, p.Name)
	if err != nil {
		return err
	}
	if err := showPolicy(g, st); err != nil {
		return err
	}
	pruneNote(ctx, g, s, p)
	return nil
}

// PolicyListCmd lists policies.
type PolicyListCmd struct{}

// Run lists the policies.
func (c *PolicyListCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	ps, err := s.Policies(ctx)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, ps)
	}
	t := &table{header: []string{"Name", "Project", "Schedule", "Volumes", "Keep", "Last Run", "Result", "Next Run", "Overdue"}}
	for _, p := range ps {
		if p.Damaged != "" {
			result := "damaged"
			if p.Missing {
				result = "missing (repo repair --restore-meta)"
			}
			t.add(p.Name, "-", "-", "-", "-", "-", result, "-", "-")
			continue
		}
		keep := keepText(p.Keep)
		if p.PruneOnly {
			keep += ", prune only"
		}
		t.add(p.Name, p.Project, p.Schedule, policyVolumes(p), keep, timeOrDash(p.LastRun), dash(p.LastResult),
			timeOrDash(p.NextRun), dash(strings.Join(p.Overdue, ",")))
	}
	return t.write(g.stdout)
}

// PolicyShowCmd shows a policy.
type PolicyShowCmd struct {
	Name string `arg:"" help:"Policy name."`
}

// Run shows the policy.
func (c *PolicyShowCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	st, err := s.PolicyStatus(ctx, c.Name)
	if err != nil {
		return err
	}
	return showPolicy(g, st)
}

// PolicyDeleteCmd deletes a policy.
type PolicyDeleteCmd struct {
	Name string `arg:"" help:"Policy name."`
}

// Run deletes the policy.
func (c *PolicyDeleteCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	if err := s.DeletePolicy(ctx, c.Name); err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]string{"name": c.Name, "status": "deleted"})
	}
	if !g.Quiet {
		fmt.Fprintf(g.stdout, "policy %s deleted; its backups stay\n", c.Name)
	}
	return nil
}

// PolicyRunCmd runs a policy now.
type PolicyRunCmd struct {
	Name string `arg:"" help:"Policy name."`
}

// Run runs the policy and shows how it went.
func (c *PolicyRunCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	st, err := s.RunPolicy(ctx, c.Name)
	if st != nil {
		if perr := showPolicy(g, st); perr != nil && err == nil {
			err = perr
		}
	}
	return err
}

// flagsGiven names the flags given on the command line (not defaults or config files).
func flagsGiven(k *kong.Context) map[string]bool {
	set := map[string]bool{}
	for _, p := range k.Path {
		if p.Flag != nil {
			set[p.Flag.Name] = true
		}
	}
	return set
}

func showPolicy(g *Globals, p *gateway.PolicyStatus) error {
	if g.json() {
		return writeJSON(g.stdout, p)
	}
	verify := "-"
	if p.Verify != "" {
		verify = fmt.Sprintf("%s, %g%% of the packs", p.Verify, p.VerifySample)
	}
	kind := "full"
	if p.Incremental {
		kind = "incremental"
		if p.FullEvery > 0 {
			kind += fmt.Sprintf(", a full every %d", p.FullEvery)
		}
	}
	if p.VerifyNew {
		kind += ", each verified"
	}
	if p.PruneOnly {
		kind = "none (prune only)"
	}
	return properties(g.stdout, [][2]string{{"name", p.Name}, {"project", p.Project}, {"schedule", p.Schedule},
		{"volumes", policyVolumes(p)}, {"backups", kind}, {"keep", keepText(p.Keep)}, {"verify", verify}, {"hooks", hooksText(p.Hooks)}, {"copy_to", dash(p.Where())},
		{"last_run", timeOrDash(p.LastRun)}, {"last_result", dash(p.LastResult)}, {"last_error", dash(p.LastError)},
		{"last_run_did", dash(didText(p.LastDid))},
		{"next_run", timeOrDash(p.NextRun)}, {"runs", fmt.Sprint(p.Runs)},
		{"last_verify", timeOrDash(p.LastVerify)}, {"verify_result", dash(p.VerifyResult)}, {"verify_error", dash(p.VerifyError)},
		{"overdue_volumes", dash(strings.Join(p.Overdue, ", "))}})
}

// didText is what a policy's last run did, a volume after another: "vm1: incremental
// BACKUP_ID, verified, pruned 4 (kept 7); vm2: failed: ...".
func didText(did []gateway.PolicyDid) string {
	var parts []string
	for _, d := range did {
		var what []string
		if d.BackupID != "" {
			kind := "full"
			if d.Incremental {
				kind = "incremental"
			}
			what = append(what, kind+" "+d.BackupID)
		}
		if d.Verified {
			what = append(what, "verified")
		}
		if d.Pruned > 0 || d.Kept > 0 {
			what = append(what, fmt.Sprintf("pruned %d (kept %d)", d.Pruned, d.Kept))
		}
		if d.Error != "" {
			what = append(what, "failed: "+d.Error)
		}
		parts = append(parts, d.Volume+": "+strings.Join(what, ", "))
	}
	return strings.Join(parts, "; ")
}

func policyVolumes(p *gateway.PolicyStatus) string {
	if p.AllOfProject {
		return "all of project " + p.Project
	}
	return strings.Join(p.VolumeNames, ",")
}

func keepText(k gateway.KeepRules) string {
	r, err := k.Rules()
	if err != nil || r.Empty() {
		return "all (no prune)"
	}
	return r.String()
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
