package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/units"
)

// Kinds of concern: what 'cairn status' and the console's volumes page ask an admin to look at.
const (
	ConcernBackupFailed  = "backup-failed"  // a volume's newest backup failed
	ConcernBackupDamaged = "backup-damaged" // a verification found a backup damaged
	ConcernVolumeError   = "volume-error"   // a volume in error (a restore onto it incomplete, ...)
	ConcernUnprotected   = "unprotected"    // a volume without a backup that no policy backs up
	ConcernOverdue       = "overdue"        // a policy's volume without a backup for two periods
	ConcernPolicyFailed  = "policy-failed"  // a policy's last run, or its verification, failed, or it is damaged
	ConcernGCFailed      = "gc-failed"      // the last gc failed
	ConcernCheck         = "check-problems" // the last check failed or found problems
	ConcernStaleLock     = "stale-lock"     // a lock whose holder seems gone
	ConcernServiceDown   = "service-down"   // a service without a recent heartbeat
	ConcernQuota         = "quota"          // a project at 90 % or more of a quota
)

// concernKinds are the kinds of concern, in the order they are listed.
var concernKinds = []string{ConcernBackupDamaged, ConcernBackupFailed, ConcernCheck, ConcernGCFailed,
	ConcernOverdue, ConcernPolicyFailed, ConcernQuota, ConcernServiceDown, ConcernStaleLock,
	ConcernUnprotected, ConcernVolumeError}

// Concern is one thing that needs an admin's attention, said in one line.
type Concern struct {
	Kind    string    `json:"kind"`
	Project string    `json:"project,omitempty"`
	Subject string    `json:"subject"` // a volume's name, a backup's id, a policy's name, ...
	At      time.Time `json:"at,omitzero"`
	Message string    `json:"message"`
}

// Overview is the state of the caller's backups at a glance.
type Overview struct {
	Volumes int `json:"volumes"`
	// Backups counts the backups by status.
	Backups map[index.BackupStatus]int `json:"backups"`
	// Succeeded and Failed count the backups taken in the last 24 hours.
	Succeeded int       `json:"succeeded_24h"`
	Failed    int       `json:"failed_24h"`
	Concerns  []Concern `json:"concerns"`
}

// quotaNear is the share of a quota at which a project is a concern.
const quotaNear = 0.9

// OverviewOptions say what an overview covers.
type OverviewOptions struct {
	// All: an admin's overview of every project.
	All bool
	// Locks: look for stale locks by writing a probe object to read the store's clock, as
	// 'cairn status' does. Without it a gateway looks without writing, judging their ages by
	// storeNow once it has measured the store's clock (before that it leaves them out), so a
	// page that refreshes itself and a metrics scrape write nothing.
	Locks bool
	// Inventory, when not nil, is the caller's inventory as Inventory gave it just now: a page
	// that shows it too reads it once.
	Inventory *Inventory
}

// Inventory is what a caller sees of volumes, backups and policies, read once for a page that
// lists them and for its overview.
type Inventory struct {
	Volumes []*index.Volume
	// ByVolume are the backups by volume id, oldest first (BackupsByVolume).
	ByVolume map[string][]*index.Backup
	Policies []*PolicyStatus
}

// Inventory reads the volumes, backups and policies the caller sees (with all, an admin sees
// every project's volumes and backups).
func (s *Service) Inventory(ctx context.Context, all bool) (*Inventory, error) {
	vols, err := s.ListVolumes(ctx, all)
	if err != nil {
		return nil, err
	}
	byVolume, err := s.BackupsByVolume(ctx, all)
	if err != nil {
		return nil, err
	}
	policies, err := s.Policies(ctx)
	if err != nil {
		return nil, err
	}
	return &Inventory{Volumes: vols, ByVolume: byVolume, Policies: policies}, nil
}

// Overview summarises the volumes, backups and policies the caller sees and lists what needs
// attention; for an admin also the repository's maintenance, locks and services.
func (s *Service) Overview(ctx context.Context, opt OverviewOptions) (*Overview, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	all := opt.All && c.Admin
	inView := func(project string) bool { return project == c.Project || all }
	inv := opt.Inventory
	if inv == nil {
		if inv, err = s.Inventory(ctx, all); err != nil {
			return nil, err
		}
	}
	vols, byVolume, policies := inv.Volumes, inv.ByVolume, inv.Policies
	o := &Overview{Volumes: len(vols), Backups: map[index.BackupStatus]int{}, Concerns: []Concern{}}
	add := func(kind, project, subject string, at time.Time, format string, args ...any) {
		o.Concerns = append(o.Concerns, Concern{Kind: kind, Project: project, Subject: subject, At: at, Message: fmt.Sprintf(format, args...)})
	}
	dayAgo := now().Add(-24 * time.Hour)
	projects := map[string]bool{c.Project: true}
	lost := s.lostBackups(ctx)
	for _, bs := range byVolume {
		for _, b := range bs {
			projects[b.Project] = true
			o.Backups[b.Status]++
			if b.CreatedAt.After(dayAgo) {
				switch {
				case b.Status == index.BackupError:
					o.Failed++
				case b.Status.Committed():
					o.Succeeded++
				}
			}
			if v := b.LastVerify; v.Damaged() && b.Status.Committed() {
				add(ConcernBackupDamaged, b.Project, b.ID, v.At, "backup %s of volume %s is damaged: a restore would lose %s; 'cairn repo repair' says what can be recovered",
					b.ID, cmp.Or(b.VolumeName, b.VolumeID), units.Bytes(v.LostBytes))
			}
			if at, ok := lost[b.ID]; ok {
				add(ConcernBackupDamaged, b.Project, b.ID, at, "backup %s of volume %s: its manifest is missing though no delete of it began, and its second copy is intact: 'cairn repo repair' stores the manifest again",
					b.ID, cmp.Or(b.VolumeName, b.VolumeID))
			}
		}
	}
	type key struct{ project, name string }
	covered := map[key]bool{}
	for _, p := range policies {
		if !inView(p.Project) && p.Damaged == "" { // a damaged one is listed to admins alone
			continue
		}
		for _, n := range p.VolumeNames {
			covered[key{p.Project, n}] = !p.PruneOnly || covered[key{p.Project, n}] // a prune-only policy backs up nothing
		}
		for _, n := range p.Overdue {
			add(ConcernOverdue, p.Project, n, time.Time{}, "volume %s: no backup by policy %s for two of its periods", n, p.Name)
		}
		switch {
		case p.Missing:
			add(ConcernPolicyFailed, p.Project, p.Name, time.Time{}, "policy %s does not run: its object is missing while its second copy is left (removed outside cairn?): 'cairn repo repair --restore-meta' stores it again, '--forget-damaged' removes the copy", p.Name)
		case p.Damaged != "":
			add(ConcernPolicyFailed, p.Project, p.Name, time.Time{}, "policy %s is damaged, its second copy too, and does not run: 'cairn policy delete %s' removes it, then create it again ('cairn repo check' says more)", p.Name, p.Name)
		}
		if p.LastResult == RunFailed {
			add(ConcernPolicyFailed, p.Project, p.Name, p.LastRun, "policy %s: its last run failed: %s", p.Name, p.LastError)
		}
		if p.VerifyResult == RunFailed {
			add(ConcernPolicyFailed, p.Project, p.Name, p.LastVerify, "policy %s: its last verification failed: %s", p.Name, p.VerifyError)
		}
	}
	missing := s.missingRecords(ctx)
	for _, v := range vols {
		projects[v.Project] = true
		if at, ok := missing[metaVolumes+"/"+v.ID]; ok {
			add(ConcernVolumeError, v.Project, v.Name, at, "volume %s: its record in the repository is missing while its second copy is left (removed outside cairn?): its next backup stores it again, or 'cairn repo repair --restore-meta'", v.Name)
		}
		bs := byVolume[v.ID]
		if failed := newestFailed(bs); failed != nil {
			add(ConcernBackupFailed, v.Project, v.Name, failed.CreatedAt, "volume %s: its last backup (%s) failed: %s", v.Name, failed.ID, cmp.Or(failed.FailReason, "no reason recorded"))
		}
		if v.Status == index.VolumeError {
			add(ConcernVolumeError, v.Project, v.Name, v.UpdatedAt, "volume %s is in error: %s", v.Name, cmp.Or(v.FailReason, "no reason recorded"))
		}
		if LastCommitted(bs) == nil && !covered[key{v.Project, v.Name}] && v.Status == index.VolumeAvailable {
			add(ConcernUnprotected, v.Project, v.Name, v.CreatedAt, "volume %s has no backup, and no policy backs it up", v.Name)
		}
	}
	// Every project's quota usage from the backups already read: asked project by project,
	// each read every backup record again, and /metrics asks for this overview.
	var seen []*index.Backup
	for _, bs := range byVolume {
		seen = append(seen, bs...)
	}
	usage, err := s.allQuotaUsage(seen)
	if err != nil {
		return nil, err
	}
	for _, p := range slices.Sorted(maps.Keys(projects)) {
		u := usage[p]
		if !inView(p) || u == nil {
			continue
		}
		for _, q := range []struct {
			name string
			use  QuotaUse
		}{{"backups", u.Backups}, {"backup_gigabytes", u.BackupGigabytes}} {
			if q.use.Limit > 0 && float64(q.use.InUse+q.use.Reserved) >= quotaNear*float64(q.use.Limit) {
				add(ConcernQuota, p, q.name, time.Time{}, "project %s uses %d of its %d %s (%d in use, %d reserved): 'cairn quota update' or delete backups",
					p, q.use.InUse+q.use.Reserved, q.use.Limit, q.name, q.use.InUse, q.use.Reserved)
			}
		}
	}
	for key, at := range missing {
		if id, ok := strings.CutPrefix(key, metaSnapshots+"/"); ok {
			if sn, err := s.idx.Snapshot(id); err == nil && inView(sn.Project) {
				add(ConcernVolumeError, sn.Project, cmp.Or(sn.Name, sn.ID), at, "snapshot %s: its record in the repository is missing while its second copy is left (removed outside cairn?): kept here; 'cairn repo repair --restore-meta' stores it again", cmp.Or(sn.Name, sn.ID))
			}
		}
		if p, ok := strings.CutPrefix(key, metaQuotas+"/"); ok && c.Admin {
			add(ConcernQuota, p, "quota", at, "project %s: its quota record in the repository is missing while its second copy is left (removed outside cairn?): its limits hold here until 'cairn repo repair --restore-meta' stores it again", p)
		}
	}
	if c.Admin {
		s.maintenanceConcerns(ctx, opt.Locks, add)
	}
	slices.SortStableFunc(o.Concerns, func(a, b Concern) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Project, b.Project), cmp.Compare(a.Subject, b.Subject))
	})
	return o, nil
}

// maintenanceConcerns adds what an admin alone is told: the repository's last gc and check,
// stale locks, services that are down.
func (s *Service) maintenanceConcerns(ctx context.Context, locks bool, add func(kind, project, subject string, at time.Time, format string, args ...any)) {
	if m, err := s.Maintenance(ctx); err == nil {
		if g := m.LastGC; g != nil && g.Error != "" {
			add(ConcernGCFailed, "", "gc", g.At, "the last gc%s failed: %s", elsewhere(g.Host), g.Error)
		}
		if ck := m.LastCheck; ck != nil && !ck.OK() {
			if ck.Error != "" {
				add(ConcernCheck, "", "check", ck.At, "the last check%s failed: %s", elsewhere(ck.Host), ck.Error)
			} else {
				add(ConcernCheck, "", "check", ck.At, "the last check%s found %d problems: 'cairn repo check' lists them", elsewhere(ck.Host), len(ck.Problems))
			}
		}
	}
	if _, err := s.Settings(ctx); errors.Is(err, errSettingsMissing) {
		add(ConcernCheck, "", "settings", time.Time{}, "deletes and prunes are refused: %v", errSettingsMissing)
	}
	var ls []repo.LockInfo
	switch {
	case locks:
		ls, _ = s.Locks(ctx) // on an error the rest of the overview stands without them
	case s.storeOffsetKnown.Load():
		ls, _ = s.repo.LocksAt(ctx, s.storeNow())
	}
	for _, l := range ls {
		if l.Stale {
			add(ConcernStaleLock, "", l.ID, l.Created, "a stale %s lock of %s (host %s, pid %d): %s; 'cairn repo unlock' removes it", l.Kind, l.Operation, l.Host, l.PID, l.Why)
		}
	}
	for _, sv := range s.Services(ctx) {
		// Without a gateway the API is down by design: the embedded CLI is a way to run.
		if sv.State == "down" && sv.DisabledReason != noGateway {
			add(ConcernServiceDown, "", sv.Binary, sv.UpdatedAt, "service %s on %s is down: %s", sv.Binary, sv.Host, cmp.Or(sv.DisabledReason, "no heartbeat"))
		}
	}
}

// newestFailed returns the newest of bs (oldest first) when it failed, with no backup of the
// volume committed since; nil otherwise. A backup running now does not hide one that failed.
func newestFailed(bs []*index.Backup) *index.Backup {
	for _, b := range slices.Backward(bs) {
		switch {
		case b.Status == index.BackupError:
			return b
		case b.Status.Committed():
			return nil
		}
	}
	return nil
}

// elsewhere names the host of a gc or check another host's gateway ran (" on HOST"), and is
// empty for this host's.
func elsewhere(host string) string {
	if host == "" || host == hostName() {
		return ""
	}
	return " on " + host
}
