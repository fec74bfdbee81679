package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
)

// StatusCmd shows what needs attention.
type StatusCmd struct {
	AllProjects bool `help:"Admins: every project's volumes, backups and policies." aliases:"all-tenants"`
	ExitCode    bool `help:"Exit 1 when something needs attention (for cron and monitoring checks)."`
}

// errAttention: with --exit-code, something needs attention.
type errAttention int

func (e errAttention) Error() string {
	if e == 1 {
		return "1 thing needs attention"
	}
	return fmt.Sprintf("%d things need attention", int(e))
}

// Run shows the overview.
func (c *StatusCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	o, err := s.Overview(ctx, gateway.OverviewOptions{All: c.AllProjects, Locks: true})
	if err != nil {
		return err
	}
	if g.json() {
		err = writeJSON(g.stdout, o)
	} else {
		err = printOverview(g.stdout, o, c.AllProjects)
	}
	if err == nil && c.ExitCode && len(o.Concerns) > 0 {
		err = errAttention(len(o.Concerns))
	}
	return err
}

func printOverview(w io.Writer, o *gateway.Overview, allProjects bool) error {
	var counts []string
	for _, st := range slices.Sorted(maps.Keys(o.Backups)) {
		counts = append(counts, fmt.Sprintf("%d %s", o.Backups[st], st))
	}
	total := 0
	for _, n := range o.Backups {
		total += n
	}
	backups := fmt.Sprint(total)
	if len(counts) > 0 {
		backups += ": " + strings.Join(counts, ", ")
	}
	if err := properties(w, [][2]string{{"volumes", fmt.Sprint(o.Volumes)}, {"backups", backups},
		{"last 24 hours", fmt.Sprintf("%s succeeded, %d failed", backupsCount(o.Succeeded), o.Failed)},
		{"attention", attentionSummary(len(o.Concerns))}}); err != nil {
		return err
	}
	for _, c := range o.Concerns {
		line := "- [" + c.Kind + "] "
		if allProjects && c.Project != "" {
			line += c.Project + ": "
		}
		line += c.Message
		if !c.At.IsZero() {
			line += " (" + c.At.UTC().Format(listTime) + " UTC)"
		}
		if _, err := fmt.Fprintln(w, line); err != nil {
			return err
		}
	}
	return nil
}

func attentionSummary(n int) string {
	switch n {
	case 0:
		return "nothing needs attention"
	case 1:
		return "1 thing (below)"
	}
	return fmt.Sprintf("%d things (below)", n)
}

// backupsCount is "1 backup" or "N backups".
func backupsCount(n int) string {
	if n == 1 {
		return "1 backup"
	}
	return fmt.Sprintf("%d backups", n)
}
