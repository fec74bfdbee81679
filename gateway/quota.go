package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// Quota resources (Cinder's names).
const (
	QuotaBackups         = "backups"
	QuotaBackupGigabytes = "backup_gigabytes"
)

// QuotaResources are the resources cairn enforces, in display order.
var QuotaResources = []string{QuotaBackups, QuotaBackupGigabytes}

// Quota is a project's limits; -1 is unlimited.
type Quota struct {
	Backups         int64 `json:"backups"`
	BackupGigabytes int64 `json:"backup_gigabytes"`
}

// CinderQuota is Cinder's default quota (10 backups, 1000 GiB), for 'cairn serve' to pass as
// Config.DefaultQuota.
var CinderQuota = Quota{Backups: 10, BackupGigabytes: 1000}

// Unlimited is the default quota when the config sets none.
var Unlimited = Quota{Backups: -1, BackupGigabytes: -1}

func (q *Quota) set(resource string, n int64) {
	if resource == QuotaBackups {
		q.Backups = n
	} else {
		q.BackupGigabytes = n
	}
}

// QuotaUse is one resource's usage: in_use counts finished backups, reserved the backups
// being created (their reservation ends with the job: success moves it to in_use, failure or
// cancel releases it).
type QuotaUse struct {
	InUse    int64 `json:"in_use"`
	Reserved int64 `json:"reserved"`
	Limit    int64 `json:"limit"`
}

// QuotaUsage is a project's usage of each resource.
type QuotaUsage struct {
	Backups         QuotaUse `json:"backups"`
	BackupGigabytes QuotaUse `json:"backup_gigabytes"`
}

// Gigabytes is what a backup of size bytes counts against backup_gigabytes: whole GiB,
// rounded up, as Cinder counts volume sizes.
func Gigabytes(size int64) int64 { return (size + 1<<30 - 1) >> 30 }

// DefaultQuota returns the limits of a project that has none of its own.
func (s *Service) DefaultQuota() Quota {
	if s.cfg.DefaultQuota != nil {
		return *s.cfg.DefaultQuota
	}
	return Unlimited
}

// QuotaShow returns a project's limits. A non-admin sees only its own project's.
func (s *Service) QuotaShow(ctx context.Context, project string) (Quota, error) {
	if err := canSeeQuota(ctx, project); err != nil {
		return Quota{}, err
	}
	return s.quotaLimits(project)
}

func (s *Service) quotaLimits(project string) (Quota, error) {
	set, err := s.idx.QuotaLimits(project)
	if err != nil {
		return Quota{}, err
	}
	return s.limitsWith(set), nil
}

// limitsWith is the default quota with the limits a project set of its own over it.
func (s *Service) limitsWith(set map[string]int64) Quota {
	q := s.DefaultQuota()
	for _, r := range QuotaResources {
		if n, ok := set[r]; ok {
			q.set(r, n)
		}
	}
	return q
}

func canSeeQuota(ctx context.Context, project string) error {
	c, err := callerOf(ctx)
	if err != nil {
		return err
	}
	if project == "" {
		return invalidf("no project given")
	}
	if !c.Admin && c.Project != project {
		return wrapf(ErrDenied, "only an admin may see the quota of project %s", project)
	}
	return nil
}

// QuotaUpdate sets a project's limits (admins). A nil value leaves that limit alone; -1
// makes it unlimited. A limit below the usage is accepted (as Cinder does by default): it
// only refuses new backups.
func (s *Service) QuotaUpdate(ctx context.Context, project string, backups, gigabytes *int64) (Quota, error) {
	if _, err := adminOf(ctx, "change quotas"); err != nil {
		return Quota{}, err
	}
	if project == "" {
		return Quota{}, invalidf("no project given")
	}
	set := map[string]int64{}
	for r, v := range map[string]*int64{QuotaBackups: backups, QuotaBackupGigabytes: gigabytes} {
		if v == nil {
			continue
		}
		if *v < -1 {
			return Quota{}, invalidf("quota %s must be -1 (unlimited) or more, not %d", r, *v)
		}
		set[r] = *v
	}
	if err := s.changeQuota(ctx, project, func() error { return s.idx.SetQuotaLimits(project, set) }); err != nil {
		return Quota{}, err
	}
	q, err := s.quotaLimits(project)
	if err == nil {
		s.log.Info("quota updated", "project", project, "backups", q.Backups, "backup_gigabytes", q.BackupGigabytes)
	}
	return q, err
}

// QuotaReset drops a project's own limits: the defaults apply again (admins).
func (s *Service) QuotaReset(ctx context.Context, project string) error {
	if _, err := adminOf(ctx, "change quotas"); err != nil {
		return err
	}
	return s.changeQuota(ctx, project, func() error { return s.idx.DeleteQuotaLimits(project) })
}

// changeQuota makes change to a project's limits in the index and writes them through to the
// repository. When the repository does not take them the index gets the old limits back: the
// change is reported failed, so this gateway must not enforce what rebuild-index and the other
// gateways do not know.
func (s *Service) changeQuota(ctx context.Context, project string, change func() error) error {
	s.limitsMu.Lock()
	defer s.limitsMu.Unlock()
	old, err := s.idx.QuotaLimits(project)
	if err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	err = s.saveQuota(ctx, project)
	if err == nil {
		return nil
	}
	// A Put the client saw fail may have landed: the old limits are stored again too.
	if rerr := s.idx.DeleteQuotaLimits(project); rerr != nil {
		s.log.Error("cannot put back the quota of a project whose change failed", "project", project, "error", rerr)
	} else if rerr := s.idx.SetQuotaLimits(project, old); rerr != nil {
		s.log.Error("cannot put back the quota of a project whose change failed", "project", project, "error", rerr)
	} else if rerr := s.saveQuota(context.WithoutCancel(ctx), project); rerr != nil {
		s.log.Warn("cannot store again the quota of a project whose change failed", "project", project, "error", rerr)
	}
	return fmt.Errorf("quota of project %s not changed: the repository cannot store it (%w); try again", project, err)
}

// syncQuotaLimits makes the index's quota limits the repository's (meta/quotas/), part of the
// full catch-up: a limit set or reset through another gateway applies here within a minute.
// Until 2026-12-05 it applied only after a rebuild-index, and each gateway admitted backups by
// the limits it had [TestQuotaSetOnOneGatewayAppliesOnAnother]. With a damaged quota object it
// only adds and changes: what the damaged one said is not known, so no limit is dropped.
func (s *Service) syncQuotaLimits(ctx context.Context) error {
	s.limitsMu.Lock()
	defer s.limitsMu.Unlock()
	stored := map[string]map[string]int64{}
	damaged := false
	err := s.repo.ListMeta(ctx, metaQuotas, func(project string, b []byte) error {
		var limits map[string]int64
		if json.Unmarshal(b, &limits) != nil {
			damaged = true
			return nil
		}
		stored[project] = limits
		return nil
	}, func(key string, err error) {
		damaged = true
		s.log.Warn("quota object damaged: skipped", "key", key, "error", err)
	})
	if err != nil {
		return err
	}
	have, err := s.idx.AllQuotaLimits()
	if err != nil {
		return err
	}
	for project, limits := range stored {
		if maps.Equal(have[project], limits) {
			continue
		}
		if err := s.idx.DeleteQuotaLimits(project); err != nil {
			return err
		}
		if err := s.idx.SetQuotaLimits(project, limits); err != nil {
			return err
		}
		s.log.Info("quota changed through another gateway", "project", project)
	}
	for project := range have {
		if _, ok := stored[project]; !ok && !damaged {
			// Missing while its copy is left: a loss (every reset of this cairn removes the
			// copy first), so the index keeps the limits (docs/design.md, "A metadata object
			// lost, its copy left").
			if has, err := s.repo.HasMeta(ctx, metaQuotas, project); err != nil || has {
				continue // stored since the listing, or cannot tell
			}
			if left, err := s.repo.MetaCopyLeft(ctx, metaQuotas, project); err != nil || left {
				if left {
					s.missingRecord(metaQuotas, project)
				}
				continue
			}
			if err := s.idx.DeleteQuotaLimits(project); err != nil {
				return err
			}
			s.log.Info("quota reset through another gateway", "project", project)
		}
	}
	return nil
}

// QuotaUsage returns a project's usage and limits.
func (s *Service) QuotaUsage(ctx context.Context, project string) (QuotaUsage, error) {
	if err := canSeeQuota(ctx, project); err != nil {
		return QuotaUsage{}, err
	}
	return s.quotaUsage(project)
}

func (s *Service) quotaUsage(project string) (QuotaUsage, error) {
	u, _, err := s.quotaUsageIDs(project)
	return u, err
}

// quotaUsageIDs is quotaUsage and every backup of the project the index knows, by id, from one
// reading of the records.
func (s *Service) quotaUsageIDs(project string) (QuotaUsage, map[string]*index.Backup, error) {
	q, err := s.quotaLimits(project)
	if err != nil {
		return QuotaUsage{}, nil, err
	}
	ids := map[string]*index.Backup{}
	u := QuotaUsage{Backups: QuotaUse{Limit: q.Backups}, BackupGigabytes: QuotaUse{Limit: q.BackupGigabytes}}
	all, err := s.idx.Backups()
	if err != nil {
		return QuotaUsage{}, nil, err
	}
	for _, b := range all {
		if b.Project != project {
			continue
		}
		ids[b.ID] = b
		u.count(b)
	}
	// With the backups other gateways are creating, as their creating objects say: one
	// accepted while the project had no limit left no reservation object, and a limit set
	// since let every other gateway admit its whole quota on top of them
	// [TestALimitSetWhileAnotherGatewayCreatesCountsItsBackups]. Only those still creating:
	// one whose object went stale is shown interrupted, but may still commit, and its
	// reservation, if it has one, counts it (unknown to ids).
	for _, b := range s.elsewhereRecords() {
		if b.Project == project && b.Status == index.BackupCreating && ids[b.ID] == nil {
			ids[b.ID] = b
			u.count(b)
		}
	}
	return u, ids, nil
}

// count adds what backup b of the project counts against its quota.
func (u *QuotaUsage) count(b *index.Backup) {
	switch {
	case failedBeforeItsBlockMap(b):
		// A failed backup released its reservation. One with a block map (an admin's
		// reset to error keeps the manifest and the data) counts as stored until it is
		// deleted: freed by a reset, its unit went to a new backup, and a reset back to
		// available overshot the limit [TestAResetToErrorDoesNotFreeQuota].
	case b.Status == index.BackupCreating:
		u.Backups.Reserved++
		u.BackupGigabytes.Reserved += Gigabytes(b.Size)
	default:
		u.Backups.InUse++
		u.BackupGigabytes.InUse += Gigabytes(b.Size)
	}
}

// allQuotaUsage is quotaUsage of every project that has backups or limits of its own, from
// all, one reading of the backup records (the metrics').
func (s *Service) allQuotaUsage(all []*index.Backup) (map[string]*QuotaUsage, error) {
	limits, err := s.idx.AllQuotaLimits()
	if err != nil {
		return nil, err
	}
	out := map[string]*QuotaUsage{}
	of := func(project string) *QuotaUsage {
		if u := out[project]; u != nil {
			return u
		}
		q := s.limitsWith(limits[project])
		u := &QuotaUsage{Backups: QuotaUse{Limit: q.Backups}, BackupGigabytes: QuotaUse{Limit: q.BackupGigabytes}}
		out[project] = u
		return u
	}
	for project := range limits {
		of(project)
	}
	for _, b := range all {
		of(b.Project).count(b)
	}
	return out, nil
}

// reserveQuota checks that one more backup (id, of size bytes) fits project's quota, and holds
// the quota lock until the returned release is called: the caller records the backup as
// creating (its reservation in this index) before releasing, so concurrent creates through
// this gateway cannot both take the last unit. Other gateways on the repository have their own
// indexes; for them a limited project's backup also leaves a reservation object in the
// repository (sharedReservation), and drop removes it when the backup fails.
func (s *Service) reserveQuota(ctx context.Context, project, id string, size int64) (release, drop func(), err error) {
	s.quotaMu.Lock()
	u, err := s.quotaUsage(project)
	if err != nil {
		s.quotaMu.Unlock()
		return nil, nil, err
	}
	if err := fits(project, u, size, 0, 0); err != nil {
		s.quotaMu.Unlock()
		return nil, nil, err
	}
	if u.Backups.Limit < 0 && u.BackupGigabytes.Limit < 0 {
		return s.quotaMu.Unlock, func() {}, nil
	}
	drop, err = s.sharedReservation(ctx, project, id, size)
	if err != nil {
		s.quotaMu.Unlock()
		return nil, nil, err
	}
	return s.quotaMu.Unlock, drop, nil
}

// fits says whether one more backup of size bytes fits u, with n backups and g gigabytes being
// created through other gateways on top.
func fits(project string, u QuotaUsage, size, n, g int64) error {
	elsewhere := ""
	if n > 0 {
		elsewhere = fmt.Sprintf(", %d of them through other gateways", n)
	}
	if l := u.Backups.Limit; l >= 0 && u.Backups.InUse+u.Backups.Reserved+n+1 > l {
		return wrapf(ErrQuota, "maximum number of backups allowed (%d) exceeded in project %s: %d in use, %d being created%s; delete a backup or raise the quota ('cairn quota update %s --backups N')",
			l, project, u.Backups.InUse, u.Backups.Reserved+n, elsewhere, project)
	}
	q := u.BackupGigabytes
	if need := Gigabytes(size); q.Limit >= 0 && q.InUse+q.Reserved+g+need > q.Limit {
		return wrapf(ErrQuota, "requested backup exceeds the backup_gigabytes quota of project %s: requested %dG, quota is %dG and %dG has been consumed (%dG in use, %dG being created%s); delete backups or raise the quota ('cairn quota update %s --backup-gigabytes N')",
			project, need, q.Limit, q.InUse+q.Reserved+g, q.InUse, q.Reserved+g, elsewhere, project)
	}
	return nil
}

// metaReservations holds a reservation object for each backup being created in a project with
// a quota, so that gateways with their own indexes on one repository count each other's.
const metaReservations = repo.MetaReservations

// reservationGrace is how long a committed backup's reservation outlives its commit: longer
// than any gateway takes to learn the new manifest (the full catch-up runs at least once a
// minute), so there is no moment when a gateway counts it neither as a reservation nor as a
// backup. Another gateway measures it from when it first saw the backup committed.
// reservationTTL ends a reservation its gateway never removed (it died and never came back).
const (
	reservationGrace = 2 * time.Minute
	reservationTTL   = 24 * time.Hour
)

type reservation struct {
	Project   string    `json:"project"`
	BackupID  string    `json:"backup_id"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

// sharedReservation writes this backup's reservation object, lists every other one of the
// project, then counts the index's backups and those reservations whose backup the index does
// not know, from one reading of the records (a catch-up between two readings could otherwise
// hide a backup from both counts), and admits the backup only if it still fits. Each admission
// writes before it lists, so of two racing admissions at least one sees the other: both may
// refuse, never both overshoot (the lock objects' argument).
func (s *Service) sharedReservation(ctx context.Context, project, id string, size int64) (drop func(), err error) {
	drop = func() {
		if err := s.repo.DeleteMeta(context.WithoutCancel(ctx), metaReservations, id); err != nil && !errors.Is(err, backend.ErrNotFound) {
			s.log.Warn("cannot remove a quota reservation; it ends by itself after a day", "backup_id", id, "error", err)
		}
	}
	if err := s.repo.PutMeta(ctx, metaReservations, id, reservation{Project: project, BackupID: id, Size: size, CreatedAt: now()}); err != nil {
		return nil, fmt.Errorf("quota reservation: %w", err)
	}
	var others []reservation
	listed := map[string]bool{}
	err = s.repo.ListMeta(ctx, metaReservations, func(name string, data []byte) error {
		listed[name] = true
		var r reservation
		if json.Unmarshal(data, &r) != nil || r.BackupID != name || r.Project != project || name == id {
			return nil
		}
		if now().Sub(r.CreatedAt) > reservationTTL {
			s.repo.DeleteMeta(ctx, metaReservations, name) // its gateway is gone: best effort
			return nil
		}
		others = append(others, r)
		return nil
	}, func(key string, err error) {
		s.log.Warn("unreadable quota reservation skipped", "key", key, "error", err)
	})
	if err == nil {
		var u QuotaUsage
		var known map[string]*index.Backup
		if u, known, err = s.quotaUsageIDs(project); err == nil {
			var n, g int64
			for _, r := range others {
				b := known[r.BackupID]
				if b == nil {
					n++
					g += Gigabytes(r.Size)
					continue
				}
				// Counted as a record already. Known committed here for longer than every
				// gateway takes to learn it (its own gateway may have ended before removing
				// it): the reservation has done its work. The time is this gateway's own,
				// from when it first saw the backup committed, never the record's, which
				// is the writer's clock: a writer minutes behind would have had its
				// reservation removed at once, while a gateway that had not learned the
				// backup yet counted neither [TestQuotaReservationOfAWriterWhoseClockIsBehind].
				if b.Status != index.BackupAvailable {
					continue
				}
				if s.resvCommitted == nil {
					s.resvCommitted = map[string]time.Time{}
				}
				if first, ok := s.resvCommitted[r.BackupID]; !ok {
					s.resvCommitted[r.BackupID] = now()
				} else if now().Sub(first) > reservationGrace {
					s.repo.DeleteMeta(ctx, metaReservations, r.BackupID) // best effort
					delete(s.resvCommitted, r.BackupID)
				}
			}
			for id := range s.resvCommitted {
				if !listed[id] {
					delete(s.resvCommitted, id) // removed by another gateway
				}
			}
			err = fits(project, u, size, n, g)
		}
	}
	if err != nil {
		drop()
		return nil, err
	}
	return drop, nil
}
