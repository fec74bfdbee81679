package main

import (
	"context"
	"time"

	"github.com/cairn-backup/cairn/index"
)

// ServiceCmd groups service commands.
type ServiceCmd struct {
	List ServiceListCmd `cmd:"" help:"List cairn's services with their state (seed 3.6.1)."`
}

// ServiceListCmd lists services.
type ServiceListCmd struct{}

// Run lists services.
func (c *ServiceListCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	svcs := s.Services(ctx)
	if g.json() {
		return writeJSON(g.stdout, svcs)
	}
	t := &table{header: []string{"Binary", "Host", "Zone", "Status", "State", "Updated_at", "Disabled Reason"}}
	for _, v := range svcs {
		updated := "-"
		if !v.UpdatedAt.IsZero() {
			updated = v.UpdatedAt.Format(time.RFC3339)
		}
		reason := v.DisabledReason
		if reason == "" {
			reason = "-"
		}
		t.add(v.Binary, v.Host, v.Zone, v.Status, v.State, updated, reason)
	}
	return t.write(g.stdout)
}

// BackupResetCmd sets a backup's state; on a restoring backup it cancels the restore.
type BackupResetCmd struct {
	Backups []string `arg:"" name:"backup" help:"Backup ids or names; each is reset, one failing stops none (exit non-zero)."`
	State   string   `help:"New state: ${enum}. available, as with cinder's backup-reset-state, is for a backup left restoring or reset to error (only one whose manifest is stored becomes available); error takes a backup out of restores and incrementals." enum:"available,error" default:"available"`
}

// Run resets the state of each backup: the backup's properties for one, a row each for
// several.
func (c *BackupResetCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	var done []*index.Backup
	failed := failures{g: g, total: len(c.Backups)}
	for _, ref := range c.Backups {
		b, err := s.ResetBackupState(ctx, ref, c.State)
		if err != nil {
			failed.add(ref, err)
			continue
		}
		done = append(done, b)
	}
	if len(c.Backups) == 1 {
		if len(done) == 0 {
			return failed.err("backups", "not reset")
		}
		return g.showBackup(s, done[0])
	}
	if g.json() {
		out := []any{}
		for _, b := range done {
			out = append(out, backupJSON(s, b))
		}
		if err := writeJSON(g.stdout, out); err != nil {
			return err
		}
	} else if len(done) > 0 {
		t := &table{header: []string{"ID", "Name", "Status"}}
		for _, b := range done {
			t.add(b.ID, none(b.Name), string(b.Status))
		}
		if err := t.write(g.stdout); err != nil {
			return err
		}
	}
	return failed.err("backups", "not reset")
}
