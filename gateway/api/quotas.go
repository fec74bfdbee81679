package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
)

// Quota sets: cairn enforces backups and backup_gigabytes; the other Cinder resources are
// not cairn's to limit, so they are absent from the answers and refused in updates.

func (s *server) showQuota(w http.ResponseWriter, r *http.Request) {
	project := r.PathValue("project")
	if truthy(r.URL.Query().Get("usage")) {
		u, err := s.svc.QuotaUsage(r.Context(), project)
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"quota_set": map[string]any{"id": project,
			gateway.QuotaBackups: u.Backups, gateway.QuotaBackupGigabytes: u.BackupGigabytes}})
		return
	}
	q, err := s.svc.QuotaShow(r.Context(), project)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, quotaSet(project, q))
}

func quotaSet(project string, q gateway.Quota) map[string]any {
	return map[string]any{"quota_set": map[string]any{"id": project,
		gateway.QuotaBackups: q.Backups, gateway.QuotaBackupGigabytes: q.BackupGigabytes}}
}

func (s *server) defaultQuota(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, quotaSet(r.PathValue("project"), s.svc.DefaultQuota()))
}

// updateQuota is PUT os-quota-sets/{project} {"quota_set": {"backups": N, ...}}.
func (s *server) updateQuota(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Set map[string]json.RawMessage `json:"quota_set"`
	}
	if err := decode(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	if body.Set == nil {
		s.writeFault(w, r, badRequest("missing required element 'quota_set' in request body"))
		return
	}
	vals := map[string]*int64{}
	for k, raw := range body.Set {
		switch k {
		case "tenant_id", "id":
			continue
		case gateway.QuotaBackups, gateway.QuotaBackupGigabytes:
			n, err := quotaValue(raw)
			if err != nil {
				s.writeFault(w, r, badRequest("quota "+k+": "+err.Error()))
				return
			}
			vals[k] = &n
		default:
			s.writeFault(w, r, badRequest("quota "+k+" is not managed by cairn: only backups and backup_gigabytes"))
			return
		}
	}
	q, err := s.svc.QuotaUpdate(r.Context(), r.PathValue("project"), vals[gateway.QuotaBackups], vals[gateway.QuotaBackupGigabytes])
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, quotaSet(r.PathValue("project"), q))
}

// quotaValue reads a limit given as a JSON number or a numeric string.
func quotaValue(raw json.RawMessage) (int64, error) {
	text := strings.Trim(string(raw), `" `)
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// deleteQuota is DELETE os-quota-sets/{project}: back to the defaults.
func (s *server) deleteQuota(w http.ResponseWriter, r *http.Request) {
	if err := s.svc.QuotaReset(r.Context(), r.PathValue("project")); err != nil {
		s.writeFault(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// showLimits is GET limits (`cinder absolute-limits`): the caller's project's backup limits
// and what it uses of them, under Cinder's names. An admin names another project with
// ?project_id= (or cinderclient's ?tenant_id=) from microversion 3.39, as Cinder; anyone else
// always gets their own. cairn has no rate limits.
func (s *server) showLimits(w http.ResponseWriter, r *http.Request) {
	project := callerOf(r).Project
	if q := r.URL.Query(); versionOf(r).atLeast(39) && callerOf(r).Admin {
		for _, key := range []string{"tenant_id", "project_id"} {
			if v := q.Get(key); v != "" {
				project = v
			}
		}
	}
	u, err := s.svc.QuotaUsage(r.Context(), project)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"limits": map[string]any{
		"rate": []any{},
		"absolute": map[string]int64{
			"maxTotalBackups":          u.Backups.Limit,
			"maxTotalBackupGigabytes":  u.BackupGigabytes.Limit,
			"totalBackupsUsed":         u.Backups.InUse,
			"totalBackupGigabytesUsed": u.BackupGigabytes.InUse,
		},
	}})
}
