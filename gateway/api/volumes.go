package api

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
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

// updateVolume is PUT volumes/{id} (cinder rename, openstack volume set --name/--description):
// name and description (display_name and display_description as the older clients call them).
// Any other field is refused; Cinder's volume metadata has no place in cairn. The answer is
// the volume's detail.
func (s *server) updateVolume(w http.ResponseWriter, r *http.Request) {
	var u gateway.VolumeUpdate
	err := decodeUpdate(r, "volume", "cairn's volumes take a name and a description.", func(field string, raw json.RawMessage) (known bool, err error) {
		switch field {
		case "name", "display_name":
			u.Name, err = nullableString(raw)
		case "description", "display_description":
			u.Description, err = nullableString(raw)
		default:
			return false, nil
		}
		return true, err
	})
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	v, err := s.svc.VolumeByID(r.Context(), r.PathValue("id"))
	if err == nil {
		v, err = s.svc.UpdateVolume(r.Context(), v.ID, u)
	}
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"volume": volumeView(r, v, true)})
}

// createVolumeBody is POST volumes as cinderclient sends it: every field present, null where
// not given. Pointers tell null from a value.
type createVolumeBody struct {
	Volume *struct {
		Size             json.Number       `json:"size"`
		Name             *string           `json:"name"`
		Description      *string           `json:"description"`
		AvailabilityZone *string           `json:"availability_zone"`
		VolumeType       *string           `json:"volume_type"`
		Metadata         map[string]string `json:"metadata"`
		SnapshotID       *string           `json:"snapshot_id"`
		SourceVolID      *string           `json:"source_volid"`
		ImageRef         *string           `json:"imageRef"`
		BackupID         *string           `json:"backup_id"`
		ConsistencyGroup *string           `json:"consistencygroup_id"`
		GroupID          *string           `json:"group_id"`
	} `json:"volume"`
}

// createVolume is cinder create: a new, empty volume (a sparse image file in the gateway's
// volume directory) of a whole number of GiB. A volume made from something else, typed, or
// carrying metadata is refused by name, not made empty or plain.
func (s *server) createVolume(w http.ResponseWriter, r *http.Request) {
	var body createVolumeBody
	if err := decode(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	req := body.Volume
	if req == nil {
		s.writeFault(w, r, badRequest("missing required element 'volume' in request body"))
		return
	}
	gib, err := strconv.ParseInt(req.Size.String(), 10, 64)
	switch {
	case err != nil || gib < 1 || gib > 1<<20:
		s.writeFault(w, r, badRequest(fmt.Sprintf("invalid volume size %q: give a whole number of GiB from 1 to %d", req.Size.String(), 1<<20)))
		return
	case deref(req.BackupID) != "":
		s.writeFault(w, r, badRequest("cairn makes a volume from a backup by restoring it: cinder backup-restore "+*req.BackupID+" (without --volume: onto a new volume)"))
		return
	case deref(req.SnapshotID) != "", deref(req.SourceVolID) != "", deref(req.ImageRef) != "":
		s.writeFault(w, r, badRequest("cairn creates empty volumes only (no snapshot, source volume or image): back up the source and restore the backup onto a new volume"))
		return
	case deref(req.ConsistencyGroup) != "", deref(req.GroupID) != "":
		s.writeFault(w, r, badRequest("cairn has no volume groups: leave out the group"))
		return
	case deref(req.VolumeType) != "":
		s.writeFault(w, r, badRequest("volume type "+*req.VolumeType+" does not exist: cairn has no volume types, leave out --volume-type"))
		return
	case deref(req.AvailabilityZone) != "" && *req.AvailabilityZone != zone:
		s.writeFault(w, r, badRequest("availability zone "+*req.AvailabilityZone+" does not exist: cairn has one, "+zone))
		return
	case len(req.Metadata) > 0:
		s.writeFault(w, r, badRequest("cairn keeps no volume metadata: leave out --metadata (a backup's metadata is kept: cinder backup-create --metadata)"))
		return
	case deref(req.Name) == "":
		s.writeFault(w, r, badRequest("a cairn volume needs a name, unique in its project: cinder create --name NAME SIZE"))
		return
	}
	v, err := s.svc.CreateVolume(r.Context(), gateway.CreateVolumeRequest{Name: *req.Name, Size: gib << 30,
		Description: deref(req.Description)})
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]any{"volume": volumeView(r, v, true)})
}

// deleteVolume is cinder delete. As in Cinder, the volume's backups stay (and restore as
// before) and its snapshots hold the delete up unless cascade=True deletes them first.
func (s *server) deleteVolume(w http.ResponseWriter, r *http.Request) {
	v, err := s.svc.VolumeByID(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	if truthy(r.URL.Query().Get("cascade")) {
		snaps, err := s.svc.ListSnapshots(r.Context(), v.ID, true)
		if err != nil {
			s.writeFault(w, r, err)
			return
		}
		for _, sn := range snaps {
			if _, err := s.svc.DeleteSnapshot(r.Context(), sn.ID); err != nil {
				s.writeFault(w, r, err)
				return
			}
		}
	}
	if _, err := s.svc.DeleteVolume(r.Context(), v.ID, true); err != nil {
		s.writeFault(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}
