package main

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"

	"github.com/cairn-backup/cairn/units"
)

// BackupCmd groups backup commands.
type BackupCmd struct {
	Create    BackupCreateCmd    `cmd:"" help:"Back up a volume, full or incremental."`
	List      BackupListCmd      `cmd:"" help:"List backups."`
	Show      BackupShowCmd      `cmd:"" help:"Show a backup."`
	Delete    BackupDeleteCmd    `cmd:"" help:"Delete backups (only the latest of an incremental chain; several go newest first)."`
	Prune     BackupPruneCmd     `cmd:"" help:"Expire backups by keep rules (--keep-last, --keep-daily, ...); chains stay restorable."`
	Protect   BackupProtectCmd   `cmd:"" help:"Protect a backup: delete, force delete and prune refuse it."`
	Unprotect BackupUnprotectCmd `cmd:"" help:"Remove a backup's protection."`
	Restore   BackupRestoreCmd   `cmd:"" help:"Restore a backup to a new volume, a volume, or a device or file."`
	Verify    BackupVerifyCmd    `cmd:"" help:"Read every block of backups and check it, as a restore would, writing nothing."`
	Copy      BackupCopyCmd      `cmd:"" help:"Copy backups into another repository with its own keys (an offsite copy); an incremental whose parent was copied reads only what changed."`
	Export    BackupExportCmd    `cmd:"" help:"Print a backup's exported metadata (backup_service, backup_url)."`
	Import    BackupImportCmd    `cmd:"" help:"Import exported backup metadata into the index."`
	Update    BackupUpdateCmd    `cmd:"" help:"Change a backup's name, description or metadata."`
	Reset     BackupResetCmd     `cmd:"" name:"reset-state" help:"Set a backup's state; cancels a running restore (admins)."`
}

// BackupCreateCmd backs up one or more volumes.
type BackupCreateCmd struct {
	Volumes     []string `arg:"" name:"volume" optional:"" help:"Volume ids, names or paths (an unknown path is registered), each its own backup; optional with --all or --snapshot-id."`
	All         bool     `help:"Back up every volume of the project, each its own backup." xor:"volumes"`
	Incremental bool     `help:"Store only the blocks changed since the volume's last backup." short:"i"`
	Name        string   `help:"Backup name (each backup's, with several volumes)."`
	Description string   `help:"Backup description."`
	Force       bool     `help:"Back up an in-use volume from a snapshot taken first (crash-consistent)."`
	SnapshotID  string   `help:"Back up this snapshot of the volume (full or --incremental)." placeholder:"SNAPSHOT" xor:"volumes"`
	Wait        bool     `help:"With a gateway: follow the backup until it ends (the embedded CLI always does)." short:"w"`
	Protected   bool     `help:"Protect the backup: delete and prune refuse it until 'cairn backup unprotect'."`
	Bitmap      string   `help:"With --incremental, for an NBD volume: read only what the export's dirty bitmap marks (qemu:dirty-bitmap:NAME)." placeholder:"NAME"`
	Metadata    []string `help:"Backup metadata KEY=VALUE (cinder's --metadata; give it once per pair)." placeholder:"KEY=VALUE" sep:"none"`
	Container   string   `help:"Cinder's --container: every backup goes to the repository, so only its own location (as backup show's container says) is taken." placeholder:"CONTAINER"`
	HookFlags

	md map[string]string // Metadata, parsed
}

// parseMetadata reads KEY=VALUE pairs; nil for none.
func parseMetadata(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	md := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usageError(fmt.Sprintf("--metadata %q: give KEY=VALUE, like --metadata tier=gold", p))
		}
		md[k] = v
	}
	return md, nil
}

// Run backs up the volumes: one alone as before (its backup's properties), several or --all
// one after the other, a line for each as it ends; a failed one does not stop the rest.
func (c *BackupCreateCmd) Run(ctx context.Context, g *Globals) error {
	if len(c.Volumes) == 0 && !c.All && c.SnapshotID == "" {
		return usageError("name the volume to back up (or several, or --all, or --snapshot-id)")
	}
	if c.All && len(c.Volumes) > 0 {
		return usageError("--all backs up every volume: name none with it")
	}
	if c.SnapshotID != "" && len(c.Volumes) > 1 {
		return usageError("--snapshot-id backs up one snapshot: name at most its volume")
	}
	md, err := parseMetadata(c.Metadata)
	if err != nil {
		return err
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	if c.Container != "" && c.Container != s.Location() {
		g.closeService(s)
		return usageError(fmt.Sprintf("--container %s is not this repository: every backup goes to %s; leave --container out", c.Container, s.Location()))
	}
	c.md = md
	if g.shared == nil {
		// Not inside a gateway: its limit is for all it runs. Set once the repository is
		// open: under it, scrypt's 32 MiB on the passphrase made the collector and the
		// scavenger work through the key derivation.
		setMemoryLimit(backupMemoryLimit, 0)
	}
	defer g.closeService(s)
	vols := c.Volumes
	if c.All {
		all, err := s.ListVolumes(ctx, false)
		if err != nil {
			return err
		}
		if len(all) == 0 {
			return gateway.Errorf(gateway.ErrNotFound, "project %s has no volumes: register one with 'cairn volume manage'", g.Project)
		}
		for _, v := range all {
			vols = append(vols, v.Name)
		}
	}
	if len(vols) <= 1 && !c.All {
		vol := ""
		if len(vols) == 1 {
			vol = vols[0]
		}
		b, err := c.backup(ctx, g, s, vol)
		if err != nil {
			return err
		}
		return g.showBackup(s, b)
	}
	return c.backupEach(ctx, g, s, vols)
}

// backupEach backs up each volume in turn and says how each ended, in a line (a JSON list
// with --format json), then how many failed; the error is the first failure's, so the exit
// code says what kind it was.
func (c *BackupCreateCmd) backupEach(ctx context.Context, g *Globals, s *gateway.Service, vols []string) error {
	var results []map[string]any
	failed := failures{g: g, total: len(vols), quiet: true} // said on stdout, a line each
	for _, vol := range vols {
		if ctx.Err() != nil {
			failed.add(vol, ctx.Err())
			results = append(results, map[string]any{"volume": vol, "error": message(ctx.Err())})
			continue
		}
		b, err := c.backup(ctx, g, s, vol)
		if err != nil {
			failed.add(vol, err)
			results = append(results, map[string]any{"volume": vol, "error": strings.TrimPrefix(message(err), "cairn: ")})
			if !g.json() {
				fmt.Fprintf(g.stdout, "%s: failed: %s\n", vol, strings.TrimPrefix(message(err), "cairn: "))
			}
			continue
		}
		r := backupJSON(s, b)
		r["volume"] = vol
		results = append(results, r)
		if !g.json() {
			fmt.Fprintf(g.stdout, "%s: backup %s %s, %s, stored %s new\n", vol, b.ID, b.Status, units.Bytes(b.Size), units.Bytes(b.Stats.NewBytes))
		}
	}
	if g.json() {
		if err := writeJSON(g.stdout, results); err != nil {
			return err
		}
	}
	if err := failed.err("backups", "failed"); err != nil {
		return err
	}
	if !g.json() {
		fmt.Fprintf(g.stdout, "%d backups of %d volumes: all succeeded\n", len(vols), len(vols))
	}
	return nil
}

// backup backs up one volume, with progress and its summary.
func (c *BackupCreateCmd) backup(ctx context.Context, g *Globals, s *gateway.Service, vol string) (*index.Backup, error) {
	p := g.progress("backing up " + cmp.Or(vol, "snapshot "+c.SnapshotID))
	req := gateway.BackupRequest{Volume: vol, Name: c.Name, Description: c.Description, Metadata: c.md, Hooks: c.hooks(),
		Incremental: c.Incremental, Force: c.Force, SnapshotID: c.SnapshotID, Protected: c.Protected, Bitmap: c.Bitmap, Progress: p.update}
	async := s.Async()
	if async && !c.Wait {
		req.Progress = nil // the command returns at once; the job outlives it
	}
	b, err := s.CreateBackup(ctx, req)
	if err == nil && async && c.Wait {
		b, err = s.WaitBackup(ctx, b.ID)
		if err == nil {
			err = gateway.BackupError(b)
		}
	}
	p.finish()
	if err != nil {
		return nil, err
	}
	if !async || c.Wait {
		p.summary("backed up "+cmp.Or(vol, "snapshot "+c.SnapshotID)+" as backup "+b.ID, b.Size, backupFigures(b)...)
	}
	return b, nil
}

// backupFigures are a finished backup's read and stored bytes, for its summary line.
func backupFigures(b *index.Backup) []string {
	read := b.Stats.ReadBytes
	if b.ReadMode == "" && read == 0 {
		read = b.Size // a record from before cairn counted what it read
	}
	return []string{"read " + units.Bytes(read), "stored " + units.Bytes(b.Stats.NewBytes) + " new"}
}

// BackupListCmd lists backups.
type BackupListCmd struct {
	Volume      string `help:"Only this volume's backups, by id or name, also of a volume no longer registered here (cinder's --volume-id)." placeholder:"VOLUME" aliases:"volume-id"`
	Name        string `help:"Only backups of this name."`
	Status      string `help:"Only backups in this status: ${enum}." enum:"any,creating,available,deleting,restoring,error" default:"any"`
	AllProjects bool   `help:"Admins: list every project's backups (adds a Project column; cinder's --all-tenants)." aliases:"all-tenants"`
	Sort        string `help:"Order by KEY (created_at, name, size, status, id, volume_id, ...: cinder's keys), ascending unless :desc follows, like created_at:desc (the default: oldest first)." placeholder:"KEY[:asc|desc]"`
	Limit       int    `help:"At most this many backups (after --sort)." placeholder:"N"`
	Long        bool   `help:"Every column: volume ids, stored bytes, object counts, parents, the container, copies in other repositories." short:"l"`
}

// backupOrder is the order spec (KEY, KEY:asc or KEY:desc) names, ties by creation time.
func backupOrder(spec string) (func(a, b *index.Backup) int, error) {
	key, dir, _ := strings.Cut(spec, ":")
	by, ok := gateway.BackupOrder[key]
	if !ok {
		return nil, usageError(fmt.Sprintf("--sort %s: sort by one of %s, with :asc or :desc after it", spec, strings.Join(slices.Sorted(maps.Keys(gateway.BackupOrder)), ", ")))
	}
	sign := 1
	switch dir {
	case "", "asc":
	case "desc":
		sign = -1
	default:
		return nil, usageError(fmt.Sprintf("--sort %s: the direction is asc or desc", spec))
	}
	return func(a, b *index.Backup) int { return sign * cmp.Or(by(a, b), a.CreatedAt.Compare(b.CreatedAt)) }, nil
}

// listWidth is what the default backup list fits in; listTime is its short time of day.
const (
	listWidth = 120
	listTime  = "2006-01-02 15:04"
)

// Run lists backups.
func (c *BackupListCmd) Run(ctx context.Context, g *Globals) error {
	if c.Limit < 0 {
		return usageError(fmt.Sprintf("--limit %d: give how many backups at most, 1 or more", c.Limit))
	}
	var order func(a, b *index.Backup) int
	if c.Sort != "" {
		var err error
		if order, err = backupOrder(c.Sort); err != nil {
			return err
		}
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	status := c.Status
	if status == "any" {
		status = ""
	}
	bs, err := s.ListBackups(ctx, gateway.ListFilter{Volume: c.Volume, AllProjects: c.AllProjects, Status: status})
	if err != nil {
		return err
	}
	if c.Name != "" {
		bs = slices.DeleteFunc(bs, func(b *index.Backup) bool { return b.Name != c.Name })
	}
	if order != nil {
		slices.SortStableFunc(bs, order)
	}
	if c.Limit > 0 && len(bs) > c.Limit {
		bs = bs[:c.Limit]
	}
	if g.json() {
		out := make([]map[string]any, 0, len(bs))
		for _, b := range bs {
			out = append(out, backupJSON(s, b))
		}
		return writeJSON(g.stdout, out)
	}
	vols, err := s.ListVolumes(ctx, c.AllProjects)
	if err != nil {
		return err
	}
	names := make(map[string]string, len(vols))
	for _, v := range vols {
		names[v.ID] = v.Name
	}
	if err := backupTable(bs, names, s.Location(), c.Long, c.AllProjects).write(g.stdout); err != nil {
		return err
	}
	if len(bs) == 0 && !c.AllProjects && c.Volume == "" && c.Name == "" {
		all, err := s.ListBackups(ctx, gateway.ListFilter{AllProjects: true, Status: status})
		if err == nil { // an admin's: say where the backups are
			projects := make([]string, 0, len(all))
			for _, b := range all {
				projects = append(projects, b.Project)
			}
			g.elsewhereHint("backups", projects)
		}
	}
	return nil
}

// elsewhereHint tells an admin whose project's list came out empty that other projects hold
// some (the embedded CLI acts in project admin, and cinder's users in their own), on stderr,
// so the table stays what a script reads.
func (g *Globals) elsewhereHint(what string, projects []string) {
	if len(projects) == 0 {
		return
	}
	count := map[string]int{}
	for _, p := range projects {
		count[p]++
	}
	names := slices.Sorted(maps.Keys(count))
	list := strings.Join(names, ", ")
	if len(names) > 5 {
		list = strings.Join(names[:5], ", ") + ", …"
	}
	fmt.Fprintf(g.stderr, "cairn: no %s in project %s; %d in other projects (%s): add --all-projects, or --project P\n",
		what, g.Project, len(projects), list)
}

// backupTable is the backup list: by default the columns that fit 120 columns, the volume
// by name (a gone volume's by the name its backup recorded, marked gone, else by its id),
// long names cut short; long adds ids and every figure, and how many other repositories hold a
// copy of the backup.
func backupTable(bs []*index.Backup, volNames map[string]string, location string, long, allProjects bool) *table {
	volume := func(b *index.Backup) string {
		if n := volNames[b.VolumeID]; n != "" {
			return n
		}
		if b.VolumeName != "" {
			return b.VolumeName + " (gone)"
		}
		return b.VolumeID
	}
	t := &table{}
	if long {
		t.header = []string{"ID", "Volume ID", "Volume", "Name", "Status", "Size", "Stored", "Object Count", "Incremental", "Parent ID", "Created", "Container", "Copies"}
		if allProjects {
			t.header = append(t.header, "Project")
		}
		for _, b := range bs {
			row := []string{b.ID, b.VolumeID, volume(b), none(b.Name), string(b.Status), units.Bytes(b.Size), units.Bytes(b.Stats.NewBytes),
				fmt.Sprint(b.ObjectCount()), fmt.Sprint(b.IsIncremental), none(b.ParentID), b.CreatedAt.Format(time.RFC3339), location,
				fmt.Sprint(len(b.Copies))}
			if allProjects {
				row = append(row, b.Project)
			}
			t.add(row...)
		}
		return t
	}
	t.header = []string{"ID", "Volume", "Name", "Status", "Size", "Created (UTC)"}
	t.maxWidth, t.shrink = listWidth, []int{1, 2}
	if allProjects {
		t.header = append(t.header, "Project")
		t.shrink = append(t.shrink, 6)
	}
	for _, b := range bs {
		row := []string{b.ID, volume(b), none(b.Name), string(b.Status), units.Bytes(b.Size), b.CreatedAt.UTC().Format(listTime)}
		if allProjects {
			row = append(row, b.Project)
		}
		t.add(row...)
	}
	return t
}

// BackupShowCmd shows a backup.
type BackupShowCmd struct {
	Backup string `arg:"" help:"Backup id or name."`
}

// Run shows the backup.
func (c *BackupShowCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	b, err := s.Backup(ctx, c.Backup)
	if err != nil {
		return err
	}
	return g.showBackup(s, b)
}

// BackupDeleteCmd deletes a backup.
type BackupDeleteCmd struct {
	Backups []string `arg:"" name:"backup" help:"Backup ids or names; newest first whatever the order given, so a chain named whole goes; one failing stops none (exit non-zero)."`
	Force   bool     `help:"Admins: delete even while creating or restoring (cancels a running backup)."`
	Yes     bool     `help:"Do not ask for confirmation (needed without a terminal)." short:"y"`
}

// Run deletes the backups, each once confirmed, newest first: only the latest backup of a
// chain may be deleted, so `cinder backup-delete FULL INC` in that order still deletes both.
func (c *BackupDeleteCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	refs := byCreation(ctx, s, c.Backups, true) // one not found fails in its turn, with the delete's own message
	var deleted []map[string]string
	failed := failures{g: g, total: len(c.Backups)}
	for _, n := range refs {
		b, err := s.DeleteBackup(g.confirmer(ctx, c.Yes), n.ref, c.Force)
		if err != nil {
			failed.add(n.ref, err)
			continue
		}
		if b.RunBy != "" {
			deleted = append(deleted, map[string]string{"id": b.ID, "status": "cancel requested"})
			if !g.json() && !g.Quiet {
				fmt.Fprintf(g.stdout, "backup %s: cancel requested; the gateway on %s that runs it stops it and removes it, unless it committed first (then delete it again)\n", b.ID, b.RunBy)
			}
			continue
		}
		deleted = append(deleted, map[string]string{"id": b.ID, "status": "deleted"})
		if !g.json() && !g.Quiet {
			fmt.Fprintf(g.stdout, "backup %s deleted; 'cairn repo gc' reclaims its space\n", b.ID)
		}
	}
	if g.json() {
		var out any = nonNil(deleted)
		if len(c.Backups) == 1 {
			if len(deleted) == 0 {
				return failed.err("backups", "not deleted")
			}
			out = deleted[0]
		}
		if err := writeJSON(g.stdout, out); err != nil {
			return err
		}
	}
	return failed.err("backups", "not deleted")
}

// namedBackup is a ref a command was given and the backup it names (nil: none).
type namedBackup struct {
	ref string
	b   *index.Backup
}

// byCreation resolves refs and orders them by when their backups were made, newest or oldest
// first; refs that name no backup follow, in the order given, for the command to fail on
// each in its turn with its own message.
func byCreation(ctx context.Context, s *gateway.Service, refs []string, newestFirst bool) []namedBackup {
	out := make([]namedBackup, 0, len(refs))
	for _, ref := range refs {
		n := namedBackup{ref: ref}
		if b, err := s.Backup(ctx, ref); err == nil {
			n.b = b
		}
		out = append(out, n)
	}
	slices.SortStableFunc(out, func(x, y namedBackup) int {
		switch {
		case x.b == nil || y.b == nil:
			return cmp.Compare(boolInt(x.b == nil), boolInt(y.b == nil))
		case newestFirst:
			return y.b.CreatedAt.Compare(x.b.CreatedAt)
		}
		return x.b.CreatedAt.Compare(y.b.CreatedAt)
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BackupUpdateCmd changes what describes a backup (cinder's backup-update).
type BackupUpdateCmd struct {
	Backup      string   `arg:"" help:"Backup id or name."`
	Name        *string  `help:"New name (\"\" for none)."`
	Description *string  `help:"New description (\"\" for none)."`
	Metadata    []string `help:"Metadata KEY=VALUE, once per pair: replaces the backup's metadata whole, as cinder's backup-update does." placeholder:"KEY=VALUE" sep:"none"`
}

// Run updates the backup and shows it.
func (c *BackupUpdateCmd) Run(ctx context.Context, g *Globals) error {
	md, err := parseMetadata(c.Metadata)
	if err != nil {
		return err
	}
	if c.Name == nil && c.Description == nil && md == nil {
		return usageError("say what to change: --name, --description or --metadata KEY=VALUE")
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	b, err := s.UpdateBackup(ctx, c.Backup, gateway.BackupUpdate{Name: c.Name, Description: c.Description, Metadata: md})
	if err != nil {
		return err
	}
	return g.showBackup(s, b)
}

// BackupRestoreCmd restores a backup.
type BackupRestoreCmd struct {
	Backup string `arg:"" help:"Backup id or name."`
	Volume string `help:"Overwrite this registered volume." xor:"target" placeholder:"VOLUME"`
	To     string `help:"Write onto this block device or file (created when missing)." xor:"target" placeholder:"PATH"`
	Name   string `help:"Name of the new volume (when neither --volume nor --to)."`
	Wait   bool   `help:"With a gateway: follow the restore until it ends (the embedded CLI always does)." short:"w"`
	Yes    bool   `help:"Do not ask before overwriting a volume, a device or a non-empty file (needed without a terminal)." short:"y"`
	// Salvage restores what survives of a damaged backup.
	Salvage bool `help:"Write what survives of a damaged backup, zeros for what does not, and list the lost ranges."`
}

// Run restores the backup.
func (c *BackupRestoreCmd) Run(ctx context.Context, g *Globals) error {
	if c.Name != "" && (c.Volume != "" || c.To != "") {
		return usageError("--name names the new volume a restore makes: give it without --volume and --to, or leave it out")
	}
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	if g.shared == nil { // as for backup create: not inside a gateway
		setMemoryLimit(restoreMemoryLimit, 0)
	}
	defer g.closeService(s)
	p := g.progress("restoring " + c.Backup)
	req := gateway.RestoreRequest{Backup: c.Backup, Volume: c.Volume, To: c.To, Name: c.Name, Progress: p.update, Salvage: c.Salvage}
	async := s.Async()
	if async && !c.Wait {
		req.Progress = nil
	}
	res, err := s.Restore(g.confirmer(ctx, c.Yes), req)
	if err == nil && async && c.Wait {
		var b *index.Backup
		if b, err = s.WaitBackup(ctx, res.BackupID); err == nil {
			// The job's outcome is the command's: its record says how it ended. A record of
			// another target is another restore's, which followed this one (reset-state
			// cancels a restore): this one's end is not known, and is no success
			// [TestRestoreWaitSupersededIsNoSuccess].
			if b.LastRestore != nil && b.LastRestore.Target == res.Path {
				err = gateway.RestoreError(b.ID, b.LastRestore)
			} else {
				err = gateway.Errorf(gateway.ErrConflict, "restore of backup %s to %s: another restore of the backup followed it before it ended (was its state reset?), so it may not have run: see 'cairn backup show %s' and the log", b.ID, res.Path, b.ID)
			}
			if err == nil && res.VolumeID != "" {
				if v, verr := s.Volume(ctx, res.VolumeID); verr == nil && v.Status == index.VolumeError {
					err = fmt.Errorf("restore of backup %s: %s", res.BackupID, v.FailReason)
				}
			}
		}
	}
	p.finish()
	if err != nil {
		return err
	}
	if !async || c.Wait {
		var lost []string
		if res.LostBytes > 0 {
			lost = append(lost, units.Bytes(res.LostBytes)+" lost (written as zeros)")
		}
		p.summary("restored backup "+res.BackupID+" to "+res.Path, res.Size, lost...)
	}
	if g.json() {
		return writeJSON(g.stdout, res)
	}
	rows := [][2]string{{"backup_id", res.BackupID}, {"volume_id", none(res.VolumeID)},
		{"volume_name", none(res.VolumeName)}, {"path", res.Path}, {"size", units.Bytes(res.Size)}}
	if res.LostBytes > 0 {
		rows = append(rows, [2]string{"lost_bytes", fmt.Sprintf("%d (written as zeros)", res.LostBytes)},
			[2]string{"lost_ranges", byteRanges(res.Lost, 8)})
	}
	return properties(g.stdout, rows)
}

// BackupExportCmd exports a backup's metadata.
type BackupExportCmd struct {
	Backup string `arg:"" help:"Backup id or name."`
}

// Run prints backup_service and backup_url.
func (c *BackupExportCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	e, err := s.ExportBackup(ctx, c.Backup)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, e)
	}
	return properties(g.stdout, [][2]string{{"backup_service", e.BackupService}, {"backup_url", e.BackupURL}})
}

// BackupImportCmd imports exported metadata.
type BackupImportCmd struct {
	Service string `arg:"" help:"backup_service from the export."`
	URL     string `arg:"" name:"url" help:"backup_url from the export."`
}

// Run imports the backup.
func (c *BackupImportCmd) Run(ctx context.Context, g *Globals) error {
	s, err := g.open(ctx)
	if err != nil {
		return err
	}
	defer g.closeService(s)
	b, err := s.ImportBackup(ctx, c.Service, c.URL)
	if err != nil {
		return err
	}
	if g.json() {
		return writeJSON(g.stdout, backupJSON(s, b))
	}
	return properties(g.stdout, [][2]string{{"id", b.ID}, {"name", none(b.Name)}})
}

func backupJSON(s *gateway.Service, b *index.Backup) map[string]any {
	out := map[string]any{"id": b.ID, "name": b.Name, "description": b.Description, "volume_id": b.VolumeID,
		"volume_name": b.VolumeName, "status": b.Status, "fail_reason": b.FailReason, "size": b.Size, "object_count": b.ObjectCount(),
		"stored_bytes": b.Stats.NewBytes, "metadata": nonNilMap(b.Metadata), "user_id": b.UserID,
		"container": s.Location(), "is_incremental": b.IsIncremental, "parent_id": b.ParentID, "project": b.Project,
		"snapshot_id": b.SnapshotID, "created_at": b.CreatedAt, "updated_at": b.UpdatedAt, "stats": b.Stats,
		"last_restore": b.LastRestore, "last_verify": b.LastVerify, "protected": b.Protected, "read_bytes": b.Stats.ReadBytes,
		"read_mode": b.ReadMode, "read_fallback": b.ReadFallback, "copies": nonNilCopies(b.Copies)}
	if b.RunBy != "" {
		out["run_by"] = b.RunBy // created through another gateway, on that host
	}
	return out
}

func nonNilCopies(c repo.CopyRecords) repo.CopyRecords {
	if c == nil {
		return repo.CopyRecords{}
	}
	return c
}

// copies lists where a backup was copied to, and when, or "-".
func copies(cs repo.CopyRecords) string {
	if len(cs) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		parts = append(parts, cmp.Or(c.Location, c.Repository, "another repository")+" ("+c.At.Format(time.RFC3339)+")")
	}
	return strings.Join(parts, ", ")
}

// readMode says how a backup read its volume, and why in full when tracking was wanted.
func readMode(b *index.Backup) string {
	m := b.ReadMode
	if m == "" {
		m = "-" // backups from before cairn recorded it
	}
	if b.ReadFallback != "" {
		m += " (" + b.ReadFallback + ")"
	}
	return m
}

func lastRestore(o *index.RestoreOutcome) string {
	if o == nil {
		return "-"
	}
	s := o.Result + " (" + o.Target + ", " + o.At.Format(time.RFC3339) + ")"
	if o.Reason != "" {
		s += ": " + o.Reason
	}
	return s
}

func (g *Globals) showBackup(s *gateway.Service, b *index.Backup) error {
	if g.json() {
		return writeJSON(g.stdout, backupJSON(s, b))
	}
	status := string(b.Status)
	if b.RunBy != "" {
		status += " (through the gateway on " + b.RunBy + ")"
	}
	return properties(g.stdout, [][2]string{{"id", b.ID}, {"name", none(b.Name)}, {"volume_id", b.VolumeID},
		{"volume_name", none(b.VolumeName)}, {"status", status}, {"size", units.Bytes(b.Size)}, {"is_incremental", fmt.Sprint(b.IsIncremental)},
		{"parent_id", none(b.ParentID)}, {"protected", fmt.Sprint(b.Protected)}, {"created_at", b.CreatedAt.Format(time.RFC3339)},
		{"description", none(b.Description)}, {"fail_reason", none(b.FailReason)}, {"object_count", fmt.Sprint(b.ObjectCount())},
		{"read_bytes", units.Bytes(b.Stats.ReadBytes)}, {"read_mode", readMode(b)},
		{"stored_bytes", units.Bytes(b.Stats.NewBytes)}, {"changed_blocks", fmt.Sprint(b.Stats.ChangedBlocks)},
		{"container", s.Location()}, {"project", b.Project}, {"user_id", none(b.UserID)}, {"metadata", metadata(b.Metadata)},
		{"last_restore", lastRestore(b.LastRestore)}, {"last_verify", lastVerify(b.LastVerify)}, {"copies", copies(b.Copies)}})
}

func lastVerify(o *index.VerifyOutcome) string {
	if o == nil {
		return "-"
	}
	s := o.Result + " (" + o.At.Format(time.RFC3339) + ")"
	if o.LostBytes > 0 {
		s += ": " + units.Bytes(o.LostBytes) + " cannot be restored"
	}
	if o.Mended {
		s += ": the blocks the verification before it lost were stored again and verify"
	}
	return s
}

// metadata lists key=value pairs in key order, or None.
func metadata(md map[string]string) string {
	if len(md) == 0 {
		return "None"
	}
	parts := make([]string, 0, len(md))
	for _, k := range slices.Sorted(maps.Keys(md)) {
		parts = append(parts, k+"="+md[k])
	}
	return strings.Join(parts, ", ")
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// byteRanges lists byte ranges as "a-b, c-d", the first most of them.
func byteRanges(rs [][2]int64, most int) string {
	parts := make([]string, 0, min(len(rs), most))
	for i, r := range rs {
		if i == most {
			return strings.Join(parts, ", ") + fmt.Sprintf(" (+%d more)", len(rs)-most)
		}
		parts = append(parts, fmt.Sprintf("%d-%d", r[0], r[1]))
	}
	return strings.Join(parts, ", ")
}
