package main

import (
	"context"
	"fmt"
)

// QuotaCmd groups quota commands (seed 3.4).
type QuotaCmd struct {
	Show   QuotaShowCmd   `cmd:"" help:"Show a project's backup quotas."`
	Update QuotaUpdateCmd `cmd:"" help:"Change a project's backup quotas (admins)."`
	Usage  QuotaUsageCmd  `cmd:"" help:"Show a project's quota usage: in use, reserved, limit."`
}

// QuotaShowCmd shows quotas.
type QuotaShowCmd struct {
	Project string `arg:"" help:"Project id."`
}

// Run shows the quotas.
func (c *QuotaShowCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	q, err := s.QuotaShow(ctx, c.Project)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, q)
	}
	return properties(g.stdout, [][2]string{{"backups", fmt.Sprint(q.Backups)}, {"backup_gigabytes", fmt.Sprint(q.BackupGigabytes)}})
}

// QuotaUpdateCmd changes quotas.
type QuotaUpdateCmd struct {
	Project         string `arg:"" help:"Project id."`
	Backups         *int64 `help:"Maximum number of backups (-1: unlimited)."`
	BackupGigabytes *int64 `help:"Maximum total size of backups in GiB (-1: unlimited)."`
}

// Run changes the quotas.
func (c *QuotaUpdateCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	q, err := s.QuotaUpdate(ctx, c.Project, c.Backups, c.BackupGigabytes)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, q)
	}
	return properties(g.stdout, [][2]string{{"backups", fmt.Sprint(q.Backups)}, {"backup_gigabytes", fmt.Sprint(q.BackupGigabytes)}})
}

// QuotaUsageCmd shows usage.
type QuotaUsageCmd struct {
	Project string `arg:"" help:"Project id."`
}

// Run shows the usage.
func (c *QuotaUsageCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	u, err := s.QuotaUsage(ctx, c.Project)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, u)
	}
	t := &table{header: []string{"Type", "In_use", "Reserved", "Limit"}}
	t.add("backups", fmt.Sprint(u.Backups.InUse), fmt.Sprint(u.Backups.Reserved), fmt.Sprint(u.Backups.Limit))
	t.add("backup_gigabytes", fmt.Sprint(u.BackupGigabytes.InUse), fmt.Sprint(u.BackupGigabytes.Reserved), fmt.Sprint(u.BackupGigabytes.Limit))
	return t.write(g.stdout)
}
