package main

import (
	"context"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"

	"github.com/cairn-backup/cairn/units"
)

// SnapshotCmd groups snapshot commands (seed 3.1.5).
type SnapshotCmd struct {
	Create SnapshotCreateCmd `cmd:"" help:"Take a point-in-time snapshot of a volume (reflink on XFS/btrfs, or LVM)."`
	List   SnapshotListCmd   `cmd:"" help:"List snapshots."`
	Show   SnapshotShowCmd   `cmd:"" help:"Show a snapshot."`
	Delete SnapshotDeleteCmd `cmd:"" help:"Delete a snapshot."`
}

// SnapshotCreateCmd takes a snapshot.
type SnapshotCreateCmd struct {
	Volume      string `arg:"" help:"Volume id, name or path."`
	Name        string `help:"Snapshot name."`
	Description string `help:"Description."`
	Force       bool   `help:"Snapshot an in-use volume (crash-consistent)."`
	HookFlags
}

// Run takes the snapshot.
func (c *SnapshotCreateCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	sn, err := s.CreateSnapshot(ctx, gateway.SnapshotRequest{Volume: c.Volume, Name: c.Name, Description: c.Description, Force: c.Force, Hooks: c.hooks()})
	if err != nil {
		return err
	}
	return g.showSnapshot(sn)
}

// SnapshotListCmd lists snapshots.
type SnapshotListCmd struct {
	VolumeID    string `help:"Only this volume's snapshots." placeholder:"VOLUME"`
	AllProjects bool   `help:"Admins: list every project's snapshots (adds a Project column; cinder's --all-tenants)." aliases:"all-tenants"`
}

// Run lists snapshots.
func (c *SnapshotListCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	sns, err := s.ListSnapshots(ctx, c.VolumeID, c.AllProjects)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, nonNil(sns))
	}
	t := &table{header: []string{"ID", "Volume ID", "Status", "Name", "Size", "Kind", "Created"}}
	if c.AllProjects {
		t.header = append(t.header, "Project")
	}
	for _, sn := range sns {
		row := []string{sn.ID, sn.VolumeID, string(sn.Status), none(sn.Name), units.Bytes(sn.Size), sn.Kind, sn.CreatedAt.Format(time.RFC3339)}
		if c.AllProjects {
			row = append(row, sn.Project)
		}
		t.add(row...)
	}
	return t.write(g.stdout)
}

// SnapshotShowCmd shows a snapshot.
type SnapshotShowCmd struct {
	Snapshot string `arg:"" help:"Snapshot id or name."`
}

// Run shows the snapshot.
func (c *SnapshotShowCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	sn, err := s.Snapshot(ctx, c.Snapshot)
	if err != nil {
		return err
	}
	return g.showSnapshot(sn)
}

// SnapshotDeleteCmd deletes a snapshot.
type SnapshotDeleteCmd struct {
	Snapshots []string `arg:"" name:"snapshot" help:"Snapshot ids or names; one failing stops none (exit non-zero)."`
}

// Run deletes the snapshots, as cinder's snapshot-delete does.
func (c *SnapshotDeleteCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	failed := failures{g: g, total: len(c.Snapshots)}
	for _, ref := range c.Snapshots {
		sn, err := s.DeleteSnapshot(ctx, ref)
		if err != nil {
			failed.add(ref, err)
			continue
		}
		if !g.Quiet && !g.json() {
			fmt.Fprintf(g.stdout, "snapshot %s deleted\n", sn.ID)
		}
	}
	return failed.err("snapshots", "not deleted")
}

func (g *Globals) showSnapshot(sn *index.Snapshot) error {
	if g.json() {
		return writeJSON(g.stdout, sn)
	}
	return properties(g.stdout, [][2]string{{"id", sn.ID}, {"name", none(sn.Name)}, {"volume_id", sn.VolumeID},
		{"status", string(sn.Status)}, {"size", units.Bytes(sn.Size)}, {"kind", sn.Kind}, {"path", sn.Path},
		{"project", sn.Project}, {"description", none(sn.Description)}, {"created_at", sn.CreatedAt.Format(time.RFC3339)}})
}
