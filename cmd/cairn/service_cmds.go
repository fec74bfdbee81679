package main

import (
	"context"
	"time"
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
	Backup string `arg:"" help:"Backup id or name."`
	State  string `help:"New state: ${enum}." enum:"available,error" default:"error"`
}

// Run resets the state.
func (c *BackupResetCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	b, err := s.ResetBackupState(ctx, c.Backup, c.State)
	if err != nil {
		return err
	}
	return g.showBackup(s, b)
}
