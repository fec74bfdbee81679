package main

import (
	"context"
	"strconv"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/units"
)

// BackupVerifyCmd verifies backups: every block read and checked, nothing written.
type BackupVerifyCmd struct {
	Backups []string `arg:"" name:"backup" help:"Backup ids or names; each is verified, one failing stops none (exit non-zero)."`
}

// Run verifies each backup and prints a row each.
func (c *BackupVerifyCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	var results []*gateway.VerifyResult
	failed := failures{g: g, total: len(c.Backups)}
	t := &table{header: []string{"ID", "Name", "Size", "Result", "Lost", "Seconds"}}
	for _, ref := range c.Backups {
		p := g.progress("verifying " + ref)
		res, err := s.VerifyBackup(ctx, ref, p.update)
		p.finish()
		if err != nil {
			failed.add(ref, err)
		}
		if res == nil {
			continue
		}
		results = append(results, res)
		lost := "-"
		if res.LostBytes > 0 {
			lost = units.Bytes(res.LostBytes) + ": " + byteRanges(res.Lost, 4)
		}
		t.add(res.BackupID, none(res.Name), units.Bytes(res.Size), res.Result, lost, strconv.FormatFloat(res.Seconds, 'f', 1, 64))
	}
	if err := writeRows(g, results, t); err != nil {
		return err
	}
	return failed.err("backups", "failed verification")
}
