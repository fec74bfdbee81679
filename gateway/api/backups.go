package api

import (
	"encoding/json"
	"net/http"
	"slices"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// backupView is a backup in Cinder's shape; parents says which backups have dependants.
// Sizes are whole GiB rounded up; container is the repository (one for every backup), named
// by its location to admins only (containerOf).
func (s *server) backupView(r *http.Request, b *index.Backup, detail bool, parents map[string]bool) map[string]any {
	out := map[string]any{"id": b.ID, "name": orNull(b.Name), "links": links(r, "backups", b.ID)}
	if !detail {
		return out
	}
	ver := versionOf(r)
	out["status"] = b.Status
	out["fail_reason"] = orNull(b.FailReason)
	out["description"] = orNull(b.Description)
	out["volume_id"] = b.VolumeID
	out["snapshot_id"] = orNull(b.SnapshotID)
	out["size"] = gateway.Gigabytes(b.Size)
	out["object_count"] = b.ObjectCount()
	out["container"] = s.containerOf(r)
	out["availability_zone"] = zone
	out["created_at"] = stamp(b.CreatedAt)
	out["updated_at"] = stamp(b.UpdatedAt)
	out["data_timestamp"] = stamp(b.CreatedAt)
	out["is_incremental"] = b.IsIncremental
	out["has_dependent_backups"] = parents[b.ID]
	// cairn's own: what the backup read from the volume and how, beside what it stored.
	out["read_bytes"] = b.Stats.ReadBytes
	out["stored_bytes"] = b.Stats.NewBytes
	out["read_mode"] = orNull(b.ReadMode)
	out["read_fallback"] = orNull(b.ReadFallback)
	if ver.atLeast(18) && callerOf(r).Admin {
		out["os-backup-project-attr:project_id"] = b.Project
	}
	if ver.atLeast(43) {
		md := b.Metadata
		if md == nil {
			md = map[string]string{}
		}
		out["metadata"] = md
	}
	if ver.atLeast(56) {
		out["user_id"] = orNull(b.UserID)
	}
	if ver.atLeast(64) {
		out["encryption_key_id"] = nil
	}
	return out
}

func (s *server) listBackups(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		backups, err := s.svc.ListBackups(r.Context(), gateway.ListFilter{AllProjects: truthy(q.Get("all_tenants"))})
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		// volume_id is matched against the backups' own, exactly: the volume may be deleted
		// while its backups stay (and restore), and the API takes no names or paths.
		volume, status := q.Get("volume_id"), q.Get("status")
		excluded := func(b *index.Backup) bool {
			return (q.Has("name") && b.Name != q.Get("name")) || (q.Has("project_id") && b.Project != q.Get("project_id")) ||
				(volume != "" && b.VolumeID != volume) || (status != "" && string(b.Status) != status)
		}
		backups, markerOut := filterKeepingMarker(r, backups, func(b *index.Backup) string { return b.ID }, excluded)
		slices.Reverse(backups) // newest first, as Cinder sorts by default
		keys, err := sortKeys(r, func(k string) bool { return gateway.BackupOrder[k] != nil })
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		sortBy(backups, keys, func(k string, a, b *index.Backup) int { return gateway.BackupOrder[k](a, b) })
		from, to, err := page(r, len(backups), func(i int) string { return backups[i].ID })
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		parents, err := s.svc.Parents()
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		out := []any{}
		for _, b := range backups[from:to] {
			out = append(out, s.backupView(r, b, detail, parents))
		}
		body := map[string]any{"backups": out}
		if withCount(r) {
			body["count"] = len(backups)
			if markerOut {
				body["count"] = len(backups) - 1
			}
		}
		writeJSON(w, http.StatusOK, body)
	}
}

func (s *server) showBackup(w http.ResponseWriter, r *http.Request) {
	b, err := s.svc.BackupByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	parents, err := s.svc.Parents()
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup": s.backupView(r, b, true, parents)})
}

// createBody is POST backups. Pointers tell null from absent where Cinder does.
type createBody struct {
	Backup *struct {
		VolumeID    string  `json:"volume_id"`
		Name        *string `json:"name"`
		Description *string `json:"description"`
		Incremental bool    `json:"incremental"`
		Force       bool    `json:"force"`
		SnapshotID  *string `json:"snapshot_id"`
		Container   *string `json:"container"`
		// Metadata is 3.43's.
		Metadata map[string]string `json:"metadata"`
		// AvailabilityZone is 3.51's (cinder backup-create --availability-zone).
		AvailabilityZone *string `json:"availability_zone"`
	} `json:"backup"`
}

// createBackup accepts a backup: 202 with the backup creating; a worker runs it.
func (s *server) createBackup(w http.ResponseWriter, r *http.Request) {
	var body createBody
	if err := decodeStrict(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	req := body.Backup
	switch {
	case req == nil:
		s.writeFault(w, r, badRequest("missing required element 'backup' in request body"))
		return
	case req.VolumeID == "":
		s.writeFault(w, r, badRequest("incorrect request body format: volume_id is required"))
		return
	case deref(req.Container) != "" && *req.Container != s.svc.Location() && *req.Container != memberContainer:
		// The one container there is, as backup-show names it to anyone, is taken: a script
		// that copies an earlier backup's container gets what it asked for.
		s.writeFault(w, r, badRequest("container "+*req.Container+" is not this gateway's: every backup goes to its repository, container "+s.containerOf(r)+"; leave container out"))
		return
	case req.Metadata != nil && !versionOf(r).atLeast(43):
		s.writeFault(w, r, badRequest("backup metadata needs microversion 3.43 or later"))
		return
	case req.AvailabilityZone != nil && !versionOf(r).atLeast(51):
		s.writeFault(w, r, badRequest("a backup's availability_zone needs microversion 3.51 or later"))
		return
	case deref(req.AvailabilityZone) != "" && *req.AvailabilityZone != zone:
		s.writeFault(w, r, badRequest("availability zone "+*req.AvailabilityZone+" does not exist: cairn has one, "+zone))
		return
	}
	// Resolve the id strictly first: the gateway also takes names and paths, the API ids only.
	v, err := s.svc.VolumeByID(r.Context(), req.VolumeID)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	snapshot := deref(req.SnapshotID)
	if snapshot != "" {
		if _, err := s.snapshotByID(r, snapshot); err != nil {
			s.writeFault(w, r, err)
			return
		}
	}
	b, err := s.svc.CreateBackup(r.Context(), gateway.BackupRequest{Volume: v.ID, Name: deref(req.Name),
		Description: deref(req.Description), Incremental: req.Incremental, Force: req.Force, SnapshotID: snapshot,
		Metadata: req.Metadata})
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"backup": s.backupView(r, b, false, nil)})
}

// containerOf is the container of every backup as the caller of r sees it: the repository's
// location for an admin, memberContainer for anyone else [TestBackupContainerIsNoLocationToMembers].
func (s *server) containerOf(r *http.Request) string {
	if callerOf(r).Admin {
		return s.svc.Location()
	}
	return memberContainer
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func (s *server) deleteBackup(w http.ResponseWriter, r *http.Request) {
	s.deleteBackupAs(w, r, false)
}

func (s *server) deleteBackupAs(w http.ResponseWriter, r *http.Request, force bool) {
	b, err := s.svc.BackupByID(r.Context(), r.PathValue("id"))
	if err == nil {
		_, err = s.svc.DeleteBackup(r.Context(), b.ID, force)
	}
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// backupAction is POST backups/{id}/action: os-force_delete or os-reset_status.
func (s *server) backupAction(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if err := decode(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	if len(body) != 1 {
		s.writeFault(w, r, badRequest("an action body names exactly one action"))
		return
	}
	for action, arg := range body {
		switch action {
		case "os-force_delete":
			s.deleteBackupAs(w, r, true)
		case "os-reset_status":
			var st struct {
				Status string `json:"status"`
			}
			if err := json.Unmarshal(arg, &st); err != nil || st.Status == "" {
				s.writeFault(w, r, badRequest("os-reset_status needs {\"status\": \"available\" or \"error\"}"))
				return
			}
			b, err := s.svc.BackupByID(r.Context(), r.PathValue("id"))
			if err == nil {
				_, err = s.svc.ResetBackupState(r.Context(), b.ID, st.Status)
			}
			if err != nil {
				s.writeFault(w, r, err)
				return
			}
			w.WriteHeader(http.StatusAccepted)
		default:
			s.writeFault(w, r, badRequest("there is no such action: "+action))
		}
	}
}

// restoreBackup is POST backups/{id}/restore: 202, a worker writes the volume.
func (s *server) restoreBackup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Restore *struct {
			VolumeID *string `json:"volume_id"`
			Name     *string `json:"name"`
		} `json:"restore"`
	}
	if err := decodeStrict(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	if body.Restore == nil {
		s.writeFault(w, r, badRequest("missing required element 'restore' in request body"))
		return
	}
	b, err := s.svc.BackupByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	req := gateway.RestoreRequest{Backup: b.ID, Name: deref(body.Restore.Name)}
	if id := deref(body.Restore.VolumeID); id != "" {
		v, err := s.svc.VolumeByID(r.Context(), id)
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		req.Volume, req.Name = v.ID, ""
	}
	res, err := s.svc.Restore(r.Context(), req)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"restore": map[string]any{
		"backup_id": res.BackupID, "volume_id": res.VolumeID, "volume_name": res.VolumeName}})
}

// exportBackup is GET backups/{id}/export_record, for admins as in Cinder (whose
// backup:backup-export policy is admin_api, as backup-import's is): a member is refused
// before the backup is looked up, so the answer says nothing of which backups exist.
func (s *server) exportBackup(w http.ResponseWriter, r *http.Request) {
	if !callerOf(r).Admin {
		s.writeFault(w, r, &httpError{http.StatusForbidden, "only an admin may export a backup's record (policy backup:backup-export)"})
		return
	}
	b, err := s.svc.BackupByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	rec, err := s.svc.ExportBackup(r.Context(), b.ID)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup-record": rec})
}

func (s *server) importBackup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Record *gateway.Export `json:"backup-record"`
	}
	if err := decodeStrict(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	if body.Record == nil || body.Record.BackupService == "" || body.Record.BackupURL == "" {
		s.writeFault(w, r, badRequest("incorrect request body format: backup-record needs backup_service and backup_url"))
		return
	}
	b, err := s.svc.ImportBackup(r.Context(), body.Record.BackupService, body.Record.BackupURL)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"backup": s.backupView(r, b, false, nil)})
}
