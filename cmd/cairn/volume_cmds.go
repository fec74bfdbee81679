package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"

	"github.com/cairn-backup/cairn/units"
)

// VolumeCmd groups volume commands.
type VolumeCmd struct {
	Manage   VolumeManageCmd   `cmd:"" help:"Register a block device or image file as a volume."`
	Create   VolumeCreateCmd   `cmd:"" help:"Create a sparse image file volume in the repository's volume directory."`
	List     VolumeListCmd     `cmd:"" help:"List volumes."`
	Show     VolumeShowCmd     `cmd:"" help:"Show a volume."`
	Update   VolumeUpdateCmd   `cmd:"" help:"Rename a volume, change its description, or turn changed-block tracking on or off (every gateway on the repository follows)."`
	Delete   VolumeDeleteCmd   `cmd:"" help:"Delete a volume (a volume cairn created loses its image file)."`
	Unmanage VolumeUnmanageCmd `cmd:"" help:"Forget a volume without touching its device or file."`
}

// VolumeManageCmd registers a volume.
type VolumeManageCmd struct {
	Path         string `arg:"" help:"Block device, image file, or NBD URI (nbd+unix:///EXPORT?socket=PATH, nbd://HOST:PORT/EXPORT)."`
	Name         string `help:"Volume name (default: the file name)."`
	Description  string `help:"Description."`
	TrackChanges *bool  `help:"Keep what the next incremental compares with, so it reads only what changed: a reflink clone of an image file (default where the file system has reflinks) or a thin snapshot of a thin LV (default)." negatable:""`
}

// Run registers the volume.
func (c *VolumeManageCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	v, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: c.Path, Name: c.Name, Description: c.Description, TrackChanges: c.TrackChanges})
	if err != nil {
		return err
	}
	return g.showVolume(v)
}

// VolumeUpdateCmd renames a volume, changes its description, or turns changed-block tracking
// on or off.
type VolumeUpdateCmd struct {
	Volume       string  `arg:"" help:"Volume id, name or path."`
	Name         *string `help:"New name, unique in the volume's project."`
	Description  *string `help:"New description (\"\" for none)."`
	TrackChanges *bool   `help:"Turn changed-block tracking on (the backup after it keeps a base; the one after that reads only what changed) or off (its base is given back at once)." negatable:""`
}

// Run updates the volume and shows it.
func (c *VolumeUpdateCmd) Run(ctx context.Context, g *Globals) error {
	if c.Name == nil && c.Description == nil && c.TrackChanges == nil {
		return usageError("say what to change: --name, --description, or --track-changes / --no-track-changes")
	}
	return g.updateVolume(ctx, c.Volume, gateway.VolumeUpdate{Name: c.Name, Description: c.Description, TrackChanges: c.TrackChanges})
}

// VolumeRenameCmd is cinder's rename: VOLUME [NAME], and maybe a description.
type VolumeRenameCmd struct {
	Volume      string  `arg:"" help:"Volume id, name or path."`
	Name        string  `arg:"" optional:"" help:"New name, unique in the volume's project."`
	Description *string `help:"New description (\"\" for none)."`
}

// Run renames the volume and shows it.
func (c *VolumeRenameCmd) Run(ctx context.Context, g *Globals) error {
	u := gateway.VolumeUpdate{Description: c.Description}
	if c.Name != "" {
		u.Name = &c.Name
	}
	if u.Name == nil && u.Description == nil {
		return usageError("give the new NAME, or --description, as cinder rename takes them")
	}
	return g.updateVolume(ctx, c.Volume, u)
}

func (g *Globals) updateVolume(ctx context.Context, ref string, u gateway.VolumeUpdate) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	v, err := s.UpdateVolume(ctx, ref, u)
	if err != nil {
		return err
	}
	return g.showVolume(v)
}

// VolumeCreateCmd creates a volume image.
type VolumeCreateCmd struct {
	Size        string `required:"" help:"Size, like 10G."`
	Name        string `required:"" help:"Volume name."`
	Description string `help:"Description."`
}

// Run creates the volume.
func (c *VolumeCreateCmd) Run(ctx context.Context, g *Globals) error {
	size, err := parseSize(c.Size)
	if err != nil {
		return gateway.Errorf(gateway.ErrInvalid, "--size: %v", err)
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	v, err := s.CreateVolume(ctx, gateway.CreateVolumeRequest{Name: c.Name, Size: size, Description: c.Description})
	if err != nil {
		return err
	}
	return g.showVolume(v)
}

// VolumeListCmd lists volumes.
type VolumeListCmd struct {
	AllProjects bool `help:"Admins: list every project's volumes (adds a Project column; cinder's --all-tenants)." aliases:"all-tenants"`
}

// Run lists volumes.
func (c *VolumeListCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	vols, err := s.ListVolumes(ctx, c.AllProjects)
	if err != nil {
		return err
	}
	byVolume, err := s.BackupsByVolume(ctx, c.AllProjects)
	if err != nil {
		return err
	}
	listed := make([]volumeWithBackups, 0, len(vols))
	for _, v := range vols {
		listed = append(listed, withBackups(v, byVolume[v.ID]))
	}
	if g.json() {
		return writeJSON(g.stdout, listed)
	}
	// The path last: the longest cell, and a terminal that wraps it keeps the rest aligned.
	t := &table{header: []string{"ID", "Name", "Status", "Size", "Kind", "Backups", "Last backup (UTC)", "Path"}}
	if c.AllProjects {
		t.header = slices.Insert(t.header, 2, "Project") // names repeat across projects
	}
	for _, v := range listed {
		last := "never"
		if v.LastBackupAt != nil {
			last = v.LastBackupAt.UTC().Format(listTime)
		}
		row := []string{v.ID, v.Name, string(v.Status), units.Bytes(v.Size), v.Kind, fmt.Sprint(v.Backups), last, v.Path}
		if c.AllProjects {
			row = slices.Insert(row, 2, v.Project)
		}
		t.add(row...)
	}
	if err := t.write(g.stdout); err != nil {
		return err
	}
	if len(vols) == 0 && !c.AllProjects {
		if all, err := s.ListVolumes(ctx, true); err == nil { // an admin's
			projects := make([]string, 0, len(all))
			for _, v := range all {
				projects = append(projects, v.Project)
			}
			g.elsewhereHint("volumes", projects)
		}
	}
	return nil
}

// VolumeShowCmd shows a volume.
type VolumeShowCmd struct {
	Volume string `arg:"" help:"Volume id, name or path."`
}

// Run shows the volume.
func (c *VolumeShowCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	v, err := s.ShowVolume(ctx, c.Volume)
	if err != nil {
		return err
	}
	// Every backup of the volume the caller sees: an admin's of any project.
	bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: v.ID, AllProjects: true})
	if err != nil {
		return err
	}
	vb := withBackups(v, bs)
	if g.json() {
		return writeJSON(g.stdout, vb)
	}
	last := "never"
	if vb.LastBackupAt != nil {
		last = fmt.Sprintf("%s (%s)", vb.LastBackupID, vb.LastBackupAt.UTC().Format(time.RFC3339))
	}
	return properties(g.stdout, append(volumeProperties(v), [2]string{"backups", fmt.Sprint(vb.Backups)}, [2]string{"last_backup", last}))
}

// VolumeDeleteCmd deletes a volume.
type VolumeDeleteCmd struct {
	Volume string `arg:"" help:"Volume id, name or path."`
	Force  bool   `help:"Delete a volume that has backups (they stay)."`
	Yes    bool   `help:"Do not ask before removing an image or a volume with backups (needed without a terminal)." short:"y"`
}

// Run deletes the volume, once confirmed.
func (c *VolumeDeleteCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	v, err := s.DeleteVolume(g.confirmer(ctx, c.Yes), c.Volume, c.Force)
	if err != nil {
		return err
	}
	if !g.Quiet && !g.json() {
		fmt.Fprintf(g.stdout, "volume %s (%s) deleted\n", v.Name, v.ID)
	}
	return nil
}

// VolumeUnmanageCmd forgets a volume.
type VolumeUnmanageCmd struct {
	Volume string `arg:"" help:"Volume id, name or path."`
}

// Run forgets the volume.
func (c *VolumeUnmanageCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	v, err := s.UnmanageVolume(ctx, c.Volume)
	if err != nil {
		return err
	}
	if !g.Quiet && !g.json() {
		fmt.Fprintf(g.stdout, "volume %s (%s) unmanaged; %s is untouched\n", v.Name, v.ID, v.Path)
	}
	return nil
}

func (g *Globals) showVolume(v *index.Volume) error {
	if g.json() {
		return writeJSON(g.stdout, v)
	}
	return properties(g.stdout, volumeProperties(v))
}

func volumeProperties(v *index.Volume) [][2]string {
	return [][2]string{{"id", v.ID}, {"name", v.Name}, {"status", string(v.Status)}, {"size", units.Bytes(v.Size)},
		{"kind", v.Kind}, {"path", v.Path}, {"project", v.Project}, {"managed", fmt.Sprint(v.Managed)}, {"track_changes", fmt.Sprint(v.TrackChanges)},
		{"identity", none(v.Identity)}, {"description", none(v.Description)}, {"fail_reason", none(v.FailReason)},
		{"created_at", v.CreatedAt.Format(time.RFC3339)}}
}

// volumeWithBackups is a volume as volume list and volume show print it: with how many
// backups it has (that the caller sees) and when its last one (failed and running ones
// aside) was taken.
type volumeWithBackups struct {
	*index.Volume
	Backups      int        `json:"backups"`
	LastBackupID string     `json:"last_backup_id,omitempty"`
	LastBackupAt *time.Time `json:"last_backup_at,omitempty"`
}

func withBackups(v *index.Volume, bs []*index.Backup) volumeWithBackups {
	out := volumeWithBackups{Volume: v, Backups: len(bs)}
	if last := gateway.LastCommitted(bs); last != nil {
		at := last.CreatedAt
		out.LastBackupID, out.LastBackupAt = last.ID, &at
	}
	return out
}

func none(s string) string {
	if s == "" {
		return "None"
	}
	return s
}

// writeRows prints a command's results: as JSON (an array, empty for none), or as the table t
// when there are some.
func writeRows[T any](g *Globals, results []T, t *table) error {
	if g.json() {
		return writeJSON(g.stdout, nonNil(results))
	}
	if len(results) == 0 {
		return nil
	}
	return t.write(g.stdout)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
