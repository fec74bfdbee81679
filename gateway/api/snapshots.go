package api

import (
	"cmp"
	"net/http"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// snapshotView is a snapshot in Cinder's shape (sizes in whole GiB, rounded up).
func (s *server) snapshotView(r *http.Request, sn *index.Snapshot) map[string]any {
	out := map[string]any{"id": sn.ID, "name": orNull(sn.Name), "description": orNull(sn.Description),
		"volume_id": sn.VolumeID, "status": sn.Status, "size": gateway.Gigabytes(sn.Size),
		"created_at": stamp(sn.CreatedAt), "updated_at": stamp(sn.UpdatedAt), "metadata": map[string]string{}}
	if callerOf(r).Admin {
		out["os-extended-snapshot-attributes:project_id"] = sn.Project
		out["os-extended-snapshot-attributes:progress"] = "100%"
	}
	if versionOf(r).atLeast(41) {
		out["user_id"] = nil
	}
	return out
}

// snapshotByID resolves a snapshot by its exact id: the API takes ids only.
func (s *server) snapshotByID(r *http.Request, id string) (*index.Snapshot, error) {
	sn, err := s.svc.Snapshot(r.Context(), id)
	if err != nil || sn.ID != id {
		return nil, notFound("snapshot " + id + " could not be found")
	}
	return sn, nil
}

// snapshotOrder compares snapshots by each key a list sorts by (cinderclient sends name as
// display_name).
var snapshotOrder = map[string]func(a, b *index.Snapshot) int{
	"id":           func(a, b *index.Snapshot) int { return strings.Compare(a.ID, b.ID) },
	"name":         func(a, b *index.Snapshot) int { return strings.Compare(a.Name, b.Name) },
	"display_name": func(a, b *index.Snapshot) int { return strings.Compare(a.Name, b.Name) },
	"status":       func(a, b *index.Snapshot) int { return strings.Compare(string(a.Status), string(b.Status)) },
	"size":         func(a, b *index.Snapshot) int { return cmp.Compare(a.Size, b.Size) },
	"volume_id":    func(a, b *index.Snapshot) int { return strings.Compare(a.VolumeID, b.VolumeID) },
	"created_at":   func(a, b *index.Snapshot) int { return a.CreatedAt.Compare(b.CreatedAt) },
	"updated_at":   func(a, b *index.Snapshot) int { return a.UpdatedAt.Compare(b.UpdatedAt) },
}

func (s *server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	volume := q.Get("volume_id")
	if volume != "" {
		if _, err := s.svc.VolumeByID(r.Context(), volume); err != nil {
			writeJSON(w, http.StatusOK, map[string]any{"snapshots": []any{}})
			return
		}
	}
	sns, err := s.svc.ListSnapshots(r.Context(), volume, truthy(q.Get("all_tenants")))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	sns, markerOut := filterKeepingMarker(r, sns, func(sn *index.Snapshot) string { return sn.ID }, func(sn *index.Snapshot) bool {
		return (q.Has("name") && sn.Name != q.Get("name")) || (q.Has("status") && string(sn.Status) != q.Get("status"))
	})
	keys, err := sortKeys(r, func(k string) bool { return snapshotOrder[k] != nil })
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	sortBy(sns, keys, func(k string, a, b *index.Snapshot) int { return snapshotOrder[k](a, b) })
	from, to, err := page(r, len(sns), func(i int) string { return sns[i].ID })
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	out := []any{}
	for _, sn := range sns[from:to] {
		out = append(out, s.snapshotView(r, sn))
	}
	body := map[string]any{"snapshots": out}
	if withCount(r) {
		body["count"] = len(sns)
		if markerOut {
			body["count"] = len(sns) - 1
		}
	}
	writeJSON(w, http.StatusOK, body)
}

func (s *server) showSnapshot(w http.ResponseWriter, r *http.Request) {
	sn, err := s.snapshotByID(r, r.PathValue("id"))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"snapshot": s.snapshotView(r, sn)})
}

// createSnapshot takes a snapshot: 202 with the snapshot (it is available at once).
func (s *server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Snapshot *struct {
			VolumeID    string  `json:"volume_id"`
			Name        *string `json:"name"`
			Description *string `json:"description"`
			Force       any     `json:"force"`
		} `json:"snapshot"`
	}
	if err := decode(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	req := body.Snapshot
	if req == nil || req.VolumeID == "" {
		s.writeFault(w, r, badRequest("incorrect request body format: snapshot.volume_id is required"))
		return
	}
	v, err := s.svc.VolumeByID(r.Context(), req.VolumeID)
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	force := false
	switch f := req.Force.(type) { // cinderclient sends a bool or the string "True"
	case bool:
		force = f
	case string:
		force = truthy(f)
	}
	sn, err := s.svc.CreateSnapshot(r.Context(), gateway.SnapshotRequest{Volume: v.ID, Name: deref(req.Name),
		Description: deref(req.Description), Force: force})
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"snapshot": s.snapshotView(r, sn)})
}

func (s *server) deleteSnapshot(w http.ResponseWriter, r *http.Request) {
	sn, err := s.snapshotByID(r, r.PathValue("id"))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	if _, err := s.svc.DeleteSnapshot(r.Context(), sn.ID); err != nil {
		s.writeFault(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
