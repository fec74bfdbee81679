package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/gateway/retention"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// PruneRequest asks to expire backups by keep rules.
type PruneRequest struct {
	Volumes []string // volume ids, names or paths
	All     bool     // every volume the caller sees
	Rules   retention.Rules
	DryRun  bool // decide and report, change nothing
	Force   bool // admins: also prune backups younger than the repository's minimum age
	// Shown, when not nil, is what a dry run shown to the user would remove: the prune then
	// removes nothing unless every backup it would remove is among them (backups made,
	// deleted or protected since can change the decisions).
	Shown []string
}

// PruneDecision is what prune decided for one backup.
type PruneDecision struct {
	ID         string    `json:"id"`
	Name       string    `json:"name,omitempty"`
	VolumeID   string    `json:"volume_id"`
	VolumeName string    `json:"volume_name"`
	Project    string    `json:"project"`
	CreatedAt  time.Time `json:"created_at"`
	// Action is "keep" or "remove".
	Action string `json:"action"`
	// Reasons says which rules kept it ("last", "daily", ..., "newest"), or what forbade its
	// removal ("protected", "min-age", "in-use").
	Reasons []string `json:"reasons,omitempty"`
	// IsIncremental and ParentID are the backup's chain position after the prune: a kept
	// incremental whose parent goes gets the nearest older kept backup of its chain.
	IsIncremental bool   `json:"is_incremental"`
	ParentID      string `json:"parent_id,omitempty"`
	Reparented    bool   `json:"reparented,omitempty"`
	// Error says why a removal or a reparenting did not happen; the backup then stays.
	Error string `json:"error,omitempty"`
}

// Keep and remove, as PruneDecision.Action says them.
const (
	PruneKeep   = "keep"
	PruneRemove = "remove"
)

// PruneResult lists every backup considered, newest first within each volume.
type PruneResult struct {
	DryRun  bool            `json:"dry_run"`
	Rules   string          `json:"rules"`
	Backups []PruneDecision `json:"backups"`
	Kept    int             `json:"kept"`
	Removed int             `json:"removed"`
	Failed  int             `json:"failed"`
}

// Prune expires backups by keep rules, volume by volume (and project by project: an admin's
// prune never lets one project's backups decide another's). It is chain-aware: every
// backup's block map is self-contained, so a full or a middle incremental may go while the
// incrementals after it stay; a kept incremental whose parent goes is given the nearest older
// kept backup of its chain as parent, or becomes the chain's base. Space comes back through
// gc, as after a delete.
func (s *Service) Prune(ctx context.Context, req PruneRequest) (*PruneResult, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if req.Rules.Empty() {
		return nil, invalidf("prune needs at least one --keep-* rule (e.g. --keep-last 7): without one it would keep only the newest backup of each volume")
	}
	if req.Force && !c.Admin {
		return nil, wrapf(ErrDenied, "only an admin may prune with --force")
	}
	vols, err := s.pruneVolumes(ctx, c, req)
	if err != nil {
		return nil, err
	}
	st, err := s.Settings(ctx)
	if err != nil {
		return nil, err
	}
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	res := &PruneResult{DryRun: req.DryRun, Rules: req.Rules.String()}
	at := now()
	var plans []*prunePlan
	for _, v := range vols {
		all, err := s.idx.VolumeBackups(v.ID)
		if err != nil {
			return nil, err
		}
		running := map[string]bool{} // parents of running incrementals stay
		byProject := map[string][]*index.Backup{}
		for i, b := range all {
			if !c.sees(b.Project) {
				continue
			}
			// A backup another gateway restores shows as restoring, and stays whatever the
			// rules say, as one restored here does.
			b = s.backupShown(b)
			all[i] = b
			if b.Status == index.BackupCreating && b.ParentID != "" {
				running[b.ParentID] = true
			}
			if b.Status == index.BackupAvailable || b.Status == index.BackupRestoring {
				byProject[b.Project] = append(byProject[b.Project], b)
			}
		}
		projects := make([]string, 0, len(byProject))
		for p := range byProject {
			projects = append(projects, p)
		}
		sort.Strings(projects)
		kids := children(all)
		for _, p := range projects {
			plans = append(plans, s.pruneChain(c, v, byProject[p], kids, running, req, st, at))
		}
	}
	removing, touched := 0, 0
	for _, pl := range plans {
		if n := pl.removals(); n > 0 {
			removing += n
			touched++
		}
	}
	if !req.DryRun && req.Shown != nil {
		if err := sameAsShown(plans, req.Shown); err != nil {
			return nil, err
		}
	}
	if !req.DryRun && removing > 0 {
		if err := confirm(ctx, fmt.Sprintf("remove %d backups of %d volumes by the rules %s (see --dry-run for the list); they cannot be restored afterwards", removing, touched, res.Rules)); err != nil {
			return nil, err
		}
	}
	for _, pl := range plans {
		if !req.DryRun {
			s.carryOut(ctx, pl)
		}
		res.Backups = append(res.Backups, pl.out...)
	}
	for _, d := range res.Backups {
		switch {
		case d.Error != "":
			res.Failed++
		case d.Action == PruneKeep:
			res.Kept++
		default:
			res.Removed++
		}
	}
	if !req.DryRun && res.Removed > 0 {
		s.syncIndex()
		s.notifyChange()
	}
	s.log.Info("prune finished", "rules", res.Rules, "dry_run", req.DryRun, "kept", res.Kept, "removed", res.Removed, "failed", res.Failed)
	return res, nil
}

// pruneVolumes resolves the request's volumes, or every volume the caller sees with All.
func (s *Service) pruneVolumes(ctx context.Context, c Caller, req PruneRequest) ([]*index.Volume, error) {
	if req.All == (len(req.Volumes) > 0) {
		return nil, invalidf("name the volumes to prune, or give --all (not both)")
	}
	if !req.All {
		out := make([]*index.Volume, 0, len(req.Volumes))
		for _, ref := range req.Volumes {
			v, err := s.Volume(ctx, ref)
			if errors.Is(err, ErrNotFound) {
				// A deleted volume's backups stay; they are pruned by its id, or by the name
				// they were taken under, as 'backup list --volume' finds them: a repository
				// of copies has no volume records at all
				// [TestPruneTheBackupsOfADeletedVolumeByItsID, TestPruneGoneVolumes].
				if gone, gerr := s.goneVolume(c, ref); gerr != nil {
					return nil, gerr
				} else if gone != nil {
					v, err = gone, nil
				}
			}
			if err != nil {
				return nil, err
			}
			if !slices.ContainsFunc(out, func(o *index.Volume) bool { return o.ID == v.ID }) {
				out = append(out, v)
			}
		}
		return out, nil
	}
	all, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	var out []*index.Volume
	for _, v := range all {
		if c.sees(v.Project) {
			out = append(out, v)
		}
	}
	// Every volume's backups: those of volumes that are gone too (deleted or unmanaged with
	// their backups kept, or copied here from another repository).
	gone, err := s.idx.GoneVolumes(func(b *index.Backup) bool { return c.sees(b.Project) })
	if err != nil {
		return nil, err
	}
	for _, g := range gone {
		out = append(out, goneStandIn(g))
	}
	return out, nil
}

// goneVolume stands in for a volume without a record that has backups c sees, named by ref:
// its id, or the name its backups were taken under; nil if there is none. A name that several
// gone volumes had is refused as ambiguous.
func (s *Service) goneVolume(c Caller, ref string) (*index.Volume, error) {
	gone, err := s.idx.GoneVolumes(func(b *index.Backup) bool {
		return (b.VolumeID == ref || b.VolumeName == ref) && c.sees(b.Project)
	})
	if err != nil || len(gone) == 0 {
		return nil, err
	}
	if i := slices.IndexFunc(gone, func(g index.GoneVolume) bool { return g.ID == ref }); i >= 0 {
		return goneStandIn(gone[i]), nil
	}
	if len(gone) > 1 {
		ids := make([]string, len(gone))
		for i, g := range gone {
			ids[i] = g.ID
		}
		return nil, invalidf("%d gone volumes had the name %s (%s): prune by volume id", len(gone), ref, strings.Join(ids, ", "))
	}
	return goneStandIn(gone[0]), nil
}

// goneStandIn is a volume record for a gone volume's backups (oldest first): its id, and the
// name its newest backup was taken under.
func goneStandIn(g index.GoneVolume) *index.Volume {
	newest := g.Backups[len(g.Backups)-1]
	return &index.Volume{ID: g.ID, Name: cmp.Or(newest.VolumeName, g.ID), Project: newest.Project}
}

// pruneChain decides for one volume's backups in one project: the rules, then what forbids a
// removal, then the new parent of each kept backup whose parent goes.
func (s *Service) pruneChain(c Caller, v *index.Volume, bs []*index.Backup, kids map[string]int,
	running map[string]bool, req PruneRequest, st Settings, at time.Time) *prunePlan {
	items := make([]retention.Item, 0, len(bs))
	byID := make(map[string]*index.Backup, len(bs))
	var damaged []retention.Decision
	for _, b := range bs {
		byID[b.ID] = b
		if b.LastVerify.Damaged() {
			// A backup a verification found damaged takes no slot of the rules: counted, it
			// made a prune remove an older, sound backup to keep one that does not restore
			// (what --verify-new's skipped prune is for, one run later). It stays, for a
			// repair or a delete by hand.
			damaged = append(damaged, retention.Decision{ID: b.ID, Time: b.CreatedAt, Keep: true, Reasons: []string{"damaged"}})
			continue
		}
		items = append(items, retention.Item{ID: b.ID, Time: b.CreatedAt})
	}
	ruled := retention.Apply(items, req.Rules)
	kept := map[string]bool{} // by the rules: what keptGone looks for before the removals
	for _, d := range ruled {
		if d.Keep {
			kept[d.ID] = true
		}
	}
	decided := append(ruled, damaged...)
	slices.SortStableFunc(decided, func(a, b retention.Decision) int { // newest first, as Apply
		return byID[b.ID].CreatedAt.Compare(byID[a.ID].CreatedAt)
	})
	out := make([]PruneDecision, len(decided))
	removed := map[string]bool{}
	for i, d := range decided {
		b := byID[d.ID]
		pd := PruneDecision{ID: b.ID, Name: b.Name, VolumeID: v.ID, VolumeName: v.Name, Project: b.Project,
			CreatedAt: b.CreatedAt, Action: PruneKeep, Reasons: d.Reasons, IsIncremental: b.IsIncremental, ParentID: b.ParentID}
		if !d.Keep {
			switch {
			case b.Protected:
				pd.Reasons = []string{"protected"}
			case b.Status != index.BackupAvailable || running[b.ID]:
				pd.Reasons = []string{"in-use"}
			case mayRemove(c, b, st, req.Force, at) != nil:
				pd.Reasons = []string{"min-age"}
			default:
				pd.Action = PruneRemove
				removed[b.ID] = true
			}
		}
		out[i] = pd
	}
	// New parents: walk each kept backup's chain up past the removed ones.
	for i := range out {
		d := &out[i]
		if d.Action != PruneKeep || !removed[d.ParentID] {
			continue
		}
		p := d.ParentID
		for p != "" && removed[p] {
			if pb := byID[p]; pb != nil {
				p = pb.ParentID
			} else {
				p = ""
			}
		}
		d.ParentID, d.IsIncremental, d.Reparented = p, p != "", true
	}
	return &prunePlan{v: v, out: out, byID: byID, kids: kids, removed: removed, kept: kept}
}

// prunePlan is what prune decided for one volume's backups in one project.
type prunePlan struct {
	v       *index.Volume
	out     []PruneDecision // newest first
	byID    map[string]*index.Backup
	kids    map[string]int // the volume's backups that name each backup as parent
	removed map[string]bool
	kept    map[string]bool // what the rules keep
}

// sameAsShown refuses plans that would remove a backup not among those shown.
func sameAsShown(plans []*prunePlan, shown []string) error {
	ok := make(map[string]bool, len(shown))
	for _, id := range shown {
		ok[id] = true
	}
	for _, pl := range plans {
		for _, d := range pl.out {
			if d.Action == PruneRemove && !ok[d.ID] {
				return wrapf(ErrConflict, "the prune would now also remove backup %s, which was not in the list shown (backups changed meanwhile): review the prune again", d.ID)
			}
		}
	}
	return nil
}

func (pl *prunePlan) removals() int {
	n := 0
	for _, d := range pl.out {
		if d.Action == PruneRemove {
			n++
		}
	}
	return n
}

// carryOut acts on a plan: first every kept backup whose parent goes gets its new parent
// (manifest, then index), then the removed backups go newest first, so that none is removed
// while a backup still names it as parent. What fails is recorded in the decision and stays.
func (s *Service) carryOut(ctx context.Context, pl *prunePlan) {
	out, byID, kids, removed, v := pl.out, pl.byID, pl.kids, pl.removed, pl.v
	if gone := s.keptGone(ctx, pl); gone != "" {
		// The plan removes what the rules put after a backup that is no longer there (deleted
		// by hand, through the API or another gateway, since the plan): carried out, it could
		// leave the volume without its newest backup. Nothing of this plan is done.
		for i := range out {
			if out[i].Action == PruneRemove || out[i].Reparented {
				out[i].Error = fmt.Sprintf("kept: backup %s, which this prune keeps, was deleted meanwhile; run the prune again", gone)
			}
		}
		return
	}
	for i := range out {
		d := &out[i]
		if !d.Reparented {
			continue
		}
		old := byID[d.ID].ParentID
		if err := s.reparent(ctx, d.ID, d.ParentID); err != nil {
			d.Error = err.Error()
			// The backup still names its old parent: that parent must stay.
			s.keepChain(out, old, removed)
			continue
		}
		kids[old]--
		kids[d.ParentID]++
	}
	// decided is newest first: children go before their parents.
	for i := range out {
		d := &out[i]
		if d.Action != PruneRemove || d.Error != "" {
			continue
		}
		if kids[d.ID] > 0 {
			d.Error = "kept: a backup still names it as parent"
			continue
		}
		if err := s.removeBackup(ctx, byID[d.ID]); err != nil {
			d.Error = err.Error()
			s.log.Error("prune could not remove a backup", "backup_id", d.ID, "error", err)
			continue
		}
		kids[byID[d.ID].ParentID]--
		s.log.Info("backup pruned", "backup_id", d.ID, "volume_id", v.ID, "created_at", d.CreatedAt)
	}
}

// keptGone returns the first backup the plan keeps by its rules that is gone since the plan
// (its record no longer available or restoring, or its delete begun in the repository, by
// another gateway), or "". Only those not older than the plan's oldest removal are looked
// at, and the new parents re-links will name (a request each): an older one gone cannot leave
// a removal without what the rules kept after it. A backup whose manifest is lost (its copy
// left) is not gone: its delete never began.
func (s *Service) keptGone(ctx context.Context, pl *prunePlan) string {
	var oldest time.Time
	for _, d := range pl.out {
		if d.Action == PruneRemove && (oldest.IsZero() || d.CreatedAt.Before(oldest)) {
			oldest = d.CreatedAt
		}
	}
	if oldest.IsZero() {
		return ""
	}
	var look []string
	for _, d := range pl.out {
		if d.Action == PruneKeep && d.Reparented && d.ParentID != "" {
			look = append(look, d.ParentID) // the new parent the re-link will name
		}
		if !pl.kept[d.ID] || d.CreatedAt.Before(oldest) {
			continue
		}
		look = append(look, d.ID)
	}
	for _, id := range look {
		rec, err := s.idx.Backup(id)
		if err != nil || !rec.Status.Committed() {
			return id
		}
		if deleted, err := s.repo.Deleted(ctx, id); err == nil && deleted {
			return id
		}
	}
	return ""
}

// keepChain turns the removal of id and of its removed ancestors into failures, when a
// backup that stays still names id as its parent.
func (s *Service) keepChain(out []PruneDecision, id string, removed map[string]bool) {
	for id != "" && removed[id] {
		next := ""
		for i := range out {
			if out[i].ID == id {
				out[i].Error = "kept: a later backup still names it as parent"
				next = out[i].ParentID
			}
		}
		delete(removed, id)
		id = next
	}
}

// reparent gives a kept backup its new parent ("" makes it the base of its chain): the
// manifest first, which is what a rebuilt index and other gateways read, then the index.
func (s *Service) reparent(ctx context.Context, id, parent string) error {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	at, err := s.rewriteManifest(ctx, id, func(m *repo.Manifest) {
		m.ParentID, m.Incremental = parent, parent != ""
	})
	if err != nil {
		return err
	}
	_, err = s.idx.UpdateBackup(id, func(rec *index.Backup) error {
		rec.ParentID, rec.IsIncremental = parent, parent != ""
		stampUpdated(rec, at)
		return nil
	})
	return err
}

// children counts, for every backup id, the backups of the volume that depend on it as
// their parent (see dependsOnParent). Prune keeps the count as it re-links and removes;
// removeBackup asks the index again, for a backup that gained a dependant meanwhile.
func children(all []*index.Backup) map[string]int {
	n := map[string]int{}
	for _, b := range all {
		if dependsOnParent(b) {
			n[b.ParentID]++
		}
	}
	return n
}

// dependsOnParent reports whether b's parent must stay while b does: in every status but
// that of a backup which failed before it made a block map (error, no root, no manifest in
// doubt). That one stores no manifest and can never become available, so the parent its
// record names is only a name; counting it, one interrupted backup kept its parent and, with
// it, every older backup of the chain from every prune.
func dependsOnParent(b *index.Backup) bool {
	return b.ParentID != "" && !failedBeforeItsBlockMap(b)
}

// failedBeforeItsBlockMap says whether b failed before it made a block map: error, no root,
// no manifest in doubt, no blocks counted. It stores nothing, never becomes available, keeps
// no parent and holds no quota. A committed backup of an empty or all-zero volume has no root
// either, but its commit counted its blocks (an empty volume's none: its size says so); an
// admin's reset to error keeps what the commit recorded.
func failedBeforeItsBlockMap(b *index.Backup) bool {
	return b.Status == index.BackupError && !b.ManifestInDoubt && b.Root.IsZero() && b.Stats.Blocks == 0 && b.Size != 0
}

// removeBackup deletes one committed backup with no dependants for prune: what prune decided
// from is checked again (protection in the manifest; its dependants in the index; status and
// protection under the index's transaction), then the manifest goes and the record with it.
func (s *Service) removeBackup(ctx context.Context, b *index.Backup) error {
	if err := s.refreshProtection(ctx, b, true); err != nil {
		return err
	}
	if b.Protected {
		return wrapf(ErrConflict, "backup %s was protected through another gateway: it stays", b.ID)
	}
	if obj, ok := s.restoreRunsElsewhere(b.ID); ok {
		return wrapf(ErrConflict, "backup %s is being restored through the gateway on %s since the prune decided: it stays", b.ID, obj.Host)
	}
	// The plan counted dependants when it decided; one may have come since (an incremental
	// made after the newest backup was deleted takes the next newest as parent).
	if deps, err := s.dependants(b.ID); err != nil {
		return err
	} else if len(deps) > 0 {
		return wrapf(ErrConflict, "backup %s became the parent of %s during the prune: it stays", b.ID, strings.Join(deps, ", "))
	}
	return s.removeCommitted(ctx, b.ID, func(rec *index.Backup) error {
		if rec.Status != index.BackupAvailable {
			return wrapf(ErrConflict, "backup %s became %s during the prune: it stays", rec.ID, rec.Status)
		}
		if rec.Protected {
			return wrapf(ErrConflict, "backup %s was protected during the prune: it stays", rec.ID)
		}
		return nil
	})
}
