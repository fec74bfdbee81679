package gateway

import (
	"context"

	"github.com/cairn-backup/cairn/index"
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
	q := s.DefaultQuota()
	set, err := s.idx.QuotaLimits(project)
	if err != nil {
		return Quota{}, err
	}
	for _, r := range QuotaResources {
		if n, ok := set[r]; ok {
			q.set(r, n)
		}
	}
	return q, nil
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
	if err := s.idx.SetQuotaLimits(project, set); err != nil {
		return Quota{}, err
	}
	if err := s.saveQuota(ctx, project); err != nil {
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
	if err := s.idx.DeleteQuotaLimits(project); err != nil {
		return err
	}
	return s.saveQuota(ctx, project)
}

// QuotaUsage returns a project's usage and limits.
func (s *Service) QuotaUsage(ctx context.Context, project string) (QuotaUsage, error) {
	if err := canSeeQuota(ctx, project); err != nil {
		return QuotaUsage{}, err
	}
	return s.quotaUsage(project)
}

func (s *Service) quotaUsage(project string) (QuotaUsage, error) {
	q, err := s.quotaLimits(project)
	if err != nil {
		return QuotaUsage{}, err
	}
	u := QuotaUsage{Backups: QuotaUse{Limit: q.Backups}, BackupGigabytes: QuotaUse{Limit: q.BackupGigabytes}}
	all, err := s.idx.Backups()
	if err != nil {
		return QuotaUsage{}, err
	}
	for _, b := range all {
		if b.Project != project {
			continue
		}
		switch b.Status {
		case index.BackupError:
			// A failed backup released its reservation.
		case index.BackupCreating:
			u.Backups.Reserved++
			u.BackupGigabytes.Reserved += Gigabytes(b.Size)
		default:
			u.Backups.InUse++
			u.BackupGigabytes.InUse += Gigabytes(b.Size)
		}
	}
	return u, nil
}

// reserveQuota checks that one more backup of size bytes fits project's quota, and holds the
// quota lock until the returned release is called: the caller records the backup as creating
// (its reservation) before releasing, so concurrent creates cannot both take the last unit.
func (s *Service) reserveQuota(project string, size int64) (release func(), err error) {
	s.quotaMu.Lock()
	u, err := s.quotaUsage(project)
	if err != nil {
		s.quotaMu.Unlock()
		return nil, err
	}
	if l := u.Backups.Limit; l >= 0 && u.Backups.InUse+u.Backups.Reserved+1 > l {
		s.quotaMu.Unlock()
		return nil, wrapf(ErrQuota, "maximum number of backups allowed (%d) exceeded in project %s: %d in use, %d being created; delete a backup or raise the quota ('cairn quota update %s --backups N')",
			l, project, u.Backups.InUse, u.Backups.Reserved, project)
	}
	g := u.BackupGigabytes
	if need := Gigabytes(size); g.Limit >= 0 && g.InUse+g.Reserved+need > g.Limit {
		s.quotaMu.Unlock()
		return nil, wrapf(ErrQuota, "requested backup exceeds the backup_gigabytes quota of project %s: requested %dG, quota is %dG and %dG has been consumed (%dG in use, %dG being created); delete backups or raise the quota ('cairn quota update %s --backup-gigabytes N')",
			project, need, g.Limit, g.InUse+g.Reserved, g.InUse, g.Reserved, project)
	}
	return s.quotaMu.Unlock, nil
}
