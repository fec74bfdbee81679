package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/retention"
	"github.com/cairn-backup/cairn/repo"

	"github.com/cairn-backup/cairn/units"
)

// KeepFlags are prune's keep rules, shared by 'backup prune' and policies.
type KeepFlags struct {
	KeepLast    int    `help:"Keep the N newest backups of the volume, made by hand or by a policy (-1: all)." placeholder:"N"`
	KeepHourly  int    `help:"Keep the newest backup of each of the last N hours that have one." placeholder:"N"`
	KeepDaily   int    `help:"Keep the newest backup of each of the last N days that have one." placeholder:"N"`
	KeepWeekly  int    `help:"Keep the newest backup of each of the last N ISO weeks that have one." placeholder:"N"`
	KeepMonthly int    `help:"Keep the newest backup of each of the last N months that have one." placeholder:"N"`
	KeepYearly  int    `help:"Keep the newest backup of each of the last N years that have one." placeholder:"N"`
	KeepWithin  string `help:"Keep every backup made within this long of the volume's newest one (like 36h, 7d, 2w)." placeholder:"DURATION"`
	Timezone    string `help:"Time zone of the calendar buckets (IANA name, like Europe/Berlin)." default:"Local"`
}

// rules turns the flags into keep rules.
func (k KeepFlags) rules() (retention.Rules, error) {
	r := retention.Rules{Last: k.KeepLast, Hourly: k.KeepHourly, Daily: k.KeepDaily, Weekly: k.KeepWeekly,
		Monthly: k.KeepMonthly, Yearly: k.KeepYearly}
	for _, n := range []struct {
		flag string
		v    int
	}{{"--keep-last", r.Last}, {"--keep-hourly", r.Hourly}, {"--keep-daily", r.Daily}, {"--keep-weekly", r.Weekly},
		{"--keep-monthly", r.Monthly}, {"--keep-yearly", r.Yearly}} {
		if n.v < -1 {
			return r, gateway.Errorf(gateway.ErrInvalid, "%s %d: give a count, or -1 for all", n.flag, n.v)
		}
	}
	if k.KeepWithin != "" {
		d, err := parseAge(k.KeepWithin)
		if err != nil {
			return r, gateway.Errorf(gateway.ErrInvalid, "--keep-within: %v", err)
		}
		r.Within = d
	}
	loc, err := time.LoadLocation(k.Timezone)
	if err != nil {
		return r, gateway.Errorf(gateway.ErrInvalid, "--timezone %q: not a time zone: use an IANA name like Europe/Berlin, or UTC", k.Timezone)
	}
	r.Location = loc
	return r, nil
}

// parseAge reads a duration as Go writes it, with days (d) and weeks (w) too: 36h, 7d, 2w3d.
func parseAge(s string) (time.Duration, error) {
	in := strings.TrimSpace(s)
	rest, total := in, time.Duration(0)
	for rest != "" {
		i := 0
		for i < len(rest) && (rest[i] >= '0' && rest[i] <= '9') {
			i++
		}
		if i == 0 || i == len(rest) || (rest[i] != 'd' && rest[i] != 'w') {
			break
		}
		n, err := strconv.Atoi(rest[:i])
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("%q: use a duration like 36h, 7d or 2w", in)
		}
		unit := 24 * time.Hour
		if rest[i] == 'w' {
			unit *= 7
		}
		total += time.Duration(n) * unit
		rest = rest[i+1:]
	}
	if rest != "" {
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("%q: use a duration like 36h, 7d or 2w", in)
		}
		total += d
	}
	if in == "" || total < 0 {
		return 0, fmt.Errorf("%q: use a duration like 36h, 7d or 2w", in)
	}
	return total, nil
}

// BackupPruneCmd expires backups by keep rules.
type BackupPruneCmd struct {
	Volumes []string `arg:"" optional:"" help:"Volumes (id, name or path) whose backups to prune; a gone volume (deleted, or copied here from another repository) by its id or the name its backups were taken under." name:"volume"`
	All     bool     `help:"Prune every volume's backups, gone volumes' too (admins: every project's)."`
	KeepFlags
	DryRun bool `help:"Say what would be kept and removed; change nothing."`
	GC     bool `help:"Run gc afterwards to reclaim the space." name:"gc"`
	Force  bool `help:"Admins: also remove backups younger than the repository's --min-age."`
	Yes    bool `help:"Do not ask before removing (needed without a terminal)." short:"y"`
}

// Run prunes.
func (c *BackupPruneCmd) Run(ctx context.Context, g *Globals) error {
	rules, err := c.rules()
	if err != nil {
		return err
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	res, err := s.Prune(g.confirmer(ctx, c.Yes), gateway.PruneRequest{Volumes: c.Volumes, All: c.All, Rules: rules, DryRun: c.DryRun, Force: c.Force})
	if err != nil {
		return err
	}
	var gcStats *repo.GCStats
	if c.GC && !c.DryRun && res.Removed > 0 {
		st, err := s.GC(ctx, repo.GCOptions{Log: g.logf})
		if err != nil {
			return fmt.Errorf("pruned %d backups, then gc failed: %w", res.Removed, err)
		}
		gcStats = &st
	}
	if g.json() {
		if res.Backups == nil {
			res.Backups = []gateway.PruneDecision{}
		}
		if err := writeJSON(g.stdout, struct {
			*gateway.PruneResult
			GC *repo.GCStats `json:"gc,omitempty"`
		}{res, gcStats}); err != nil {
			return err
		}
	} else {
		if err := printPrune(g, res); err != nil {
			return err
		}
		if gcStats != nil && !g.Quiet {
			fmt.Fprintf(g.stdout, "gc: %d packs deleted, %d repacked, %s freed\n", gcStats.PacksDeleted, gcStats.PacksRepacked, units.Bytes(gcStats.BytesFreed))
		}
	}
	if res.Failed > 0 {
		return fmt.Errorf("prune could not remove %d backups (see the table): they stay", res.Failed)
	}
	return nil
}

func printPrune(g *Globals, res *gateway.PruneResult) error {
	t := &table{header: []string{"Volume", "Backup ID", "Created", "Action", "Why"}}
	for _, d := range res.Backups {
		action, why := d.Action, strings.Join(d.Reasons, ", ")
		switch {
		case d.Error != "":
			action, why = "keep", "removal failed: "+d.Error
		case d.Action == gateway.PruneRemove && res.DryRun:
			action, why = "would remove", "no rule keeps it"
		case d.Action == gateway.PruneRemove:
			action, why = "removed", "no rule keeps it"
		case d.Reparented && d.ParentID == "":
			why += "; now the base of its chain"
		case d.Reparented:
			why += "; parent now " + d.ParentID
		}
		t.add(d.VolumeName, d.ID, d.CreatedAt.Format(time.RFC3339), action, why)
	}
	if err := t.write(g.stdout); err != nil {
		return err
	}
	if g.Quiet {
		return nil
	}
	verb := "removed"
	if res.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(g.stdout, "prune (%s): %s %d, kept %d", res.Rules, verb, res.Removed, res.Kept)
	if res.Removed > 0 && !res.DryRun {
		fmt.Fprint(g.stdout, "; 'cairn repo gc' reclaims the space")
	}
	_, err := fmt.Fprintln(g.stdout)
	return err
}

// BackupProtectCmd protects a backup from delete and prune.
type BackupProtectCmd struct {
	Backup string `arg:"" help:"Backup id or name."`
}

// Run protects the backup.
func (c *BackupProtectCmd) Run(ctx context.Context, g *Globals) error {
	return setProtection(ctx, g, c.Backup, true)
}

// BackupUnprotectCmd lets a backup be deleted and pruned again.
type BackupUnprotectCmd struct {
	Backup string `arg:"" help:"Backup id or name."`
}

// Run unprotects the backup.
func (c *BackupUnprotectCmd) Run(ctx context.Context, g *Globals) error {
	return setProtection(ctx, g, c.Backup, false)
}

func setProtection(ctx context.Context, g *Globals, ref string, on bool) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	b, err := s.ProtectBackup(ctx, ref, on)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, map[string]any{"id": b.ID, "protected": b.Protected})
	}
	if !g.Quiet {
		word := "protected: delete and prune refuse it"
		if !on {
			word = "no longer protected"
		}
		fmt.Fprintf(g.stdout, "backup %s %s\n", b.ID, word)
	}
	return nil
}

// RepoSettingsCmd shows or changes the repository-wide settings.
type RepoSettingsCmd struct {
	MinAge string `help:"No backup younger than this is deleted or pruned unless an admin forces it (like 7d; 0 turns it off)." placeholder:"DURATION"`
}

// Run shows the settings, changing them first when a flag is given.
func (c *RepoSettingsCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	var st gateway.Settings
	if c.MinAge != "" {
		d, err := parseAge(c.MinAge)
		if c.MinAge == "0" {
			d, err = 0, nil
		}
		if err != nil {
			return gateway.Errorf(gateway.ErrInvalid, "--min-age: %v", err)
		}
		st, err = s.UpdateSettings(ctx, func(st *gateway.Settings) error { st.MinAge = gateway.Duration(d); return nil })
		if err != nil {
			return err
		}
	} else if st, err = s.Settings(ctx); err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, st)
	}
	minAge := "none"
	if st.MinAge > 0 {
		minAge = time.Duration(st.MinAge).String()
	}
	return properties(g.stdout, [][2]string{{"min_age", minAge}})
}
