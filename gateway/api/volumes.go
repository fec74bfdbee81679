package api

import (
	"cmp"
	"net/http"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// volumeView is a volume in Cinder's shape. Sizes are whole GiB rounded up; cairn volumes
// are never attached, bootable, encrypted or typed.
func volumeView(r *http.Request, v *index.Volume, detail bool) map[string]any {
	out := map[string]any{"id": v.ID, "name": v.Name, "links": links(r, "volumes", v.ID)}
	if !detail {
		return out
	}
	out["status"] = v.Status
	out["size"] = gateway.Gigabytes(v.Size)
	out["availability_zone"] = zone
	out["created_at"] = stamp(v.CreatedAt)
	out["updated_at"] = stamp(v.UpdatedAt)
	out["attachments"] = []any{}
	out["bootable"] = "false"
	out["encrypted"] = false
	out["multiattach"] = false
	out["description"] = orNull(v.Description)
	out["volume_type"] = nil
	out["snapshot_id"] = nil
	out["source_volid"] = nil
	out["consistencygroup_id"] = nil
	out["replication_status"] = nil
	out["migration_status"] = nil
	out["user_id"] = nil
	out["metadata"] = map[string]string{}
	if callerOf(r).Admin {
		out["os-vol-tenant-attr:tenant_id"] = v.Project
	}
	if versionOf(r).atLeast(13) {
		out["group_id"] = nil
	}
	return out
}

// volumeOrder compares volumes by each key a list sorts by (cinderclient sends name as
// display_name).
var volumeOrder = map[string]func(a, b *index.Volume) int{
	"id":           func(a, b *index.Volume) int { return strings.Compare(a.ID, b.ID) },
	"name":         func(a, b *index.Volume) int { return strings.Compare(a.Name, b.Name) },
	"display_name": func(a, b *index.Volume) int { return strings.Compare(a.Name, b.Name) },
	"status":       func(a, b *index.Volume) int { return strings.Compare(string(a.Status), string(b.Status)) },
	"size":         func(a, b *index.Volume) int { return cmp.Compare(a.Size, b.Size) },
	"created_at":   func(a, b *index.Volume) int { return a.CreatedAt.Compare(b.CreatedAt) },
	"updated_at":   func(a, b *index.Volume) int { return a.UpdatedAt.Compare(b.UpdatedAt) },
	// One zone, never bootable: every volume ties.
	"availability_zone": func(a, b *index.Volume) int { return 0 },
	"bootable":          func(a, b *index.Volume) int { return 0 },
}

func (s *server) listVolumes(detail bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		vols, err := s.svc.ListVolumes(r.Context(), truthy(q.Get("all_tenants")))
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		vols, markerOut := filterKeepingMarker(r, vols, func(v *index.Volume) string { return v.ID }, func(v *index.Volume) bool {
			return (q.Has("name") && v.Name != q.Get("name")) || (q.Has("status") && string(v.Status) != q.Get("status")) ||
				(q.Has("project_id") && v.Project != q.Get("project_id"))
		})
		keys, err := sortKeys(r, func(k string) bool { return volumeOrder[k] != nil })
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		sortBy(vols, keys, func(k string, a, b *index.Volume) int { return volumeOrder[k](a, b) })
		from, to, err := page(r, len(vols), func(i int) string { return vols[i].ID })
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		out := []any{}
		for _, v := range vols[from:to] {
			out = append(out, volumeView(r, v, detail))
		}
		body := map[string]any{"volumes": out}
		if withCount(r) {
			body["count"] = len(vols)
			if markerOut {
				body["count"] = len(vols) - 1
			}
		}
		writeJSON(w, http.StatusOK, body)
	}
}

func (s *server) showVolume(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.VolumeByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume": volumeView(r, v, true)})
}
