package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/cairn-backup/cairn/gateway"
)

// updateBackup is PUT backups/{id} (backup-update, 3.9): name and description, and from 3.43
// metadata (replacing the backup's). Any other field is refused, as Cinder does. The answer is
// the backup's summary.
func (s *server) updateBackup(w http.ResponseWriter, r *http.Request) {
	ver := versionOf(r)
	if !ver.atLeast(9) {
		s.writeFault(w, r, notFound("the resource could not be found (backup-update needs microversion 3.9 or later)"))
		return
	}
	var body struct {
		Backup map[string]json.RawMessage `json:"backup"`
	}
	if err := decode(r, &body); err != nil {
		s.writeFault(w, r, err)
		return
	}
	if body.Backup == nil {
		s.writeFault(w, r, badRequest("missing required element 'backup' in request body"))
		return
	}
	var u gateway.BackupUpdate
	var unsupported []string
	for field, raw := range body.Backup {
		var err error
		switch {
		case field == "name":
			u.Name, err = nullableString(raw)
		case field == "description":
			u.Description, err = nullableString(raw)
		case field == "metadata" && ver.atLeast(43):
			var md map[string]string
			if err = json.Unmarshal(raw, &md); err == nil && md == nil {
				md = map[string]string{} // null clears, as an empty object does
			}
			u.Metadata = md
		default:
			unsupported = append(unsupported, field)
			continue
		}
		if err != nil {
			s.writeFault(w, r, badRequest("invalid input for field/attribute "+field+": "+err.Error()))
			return
		}
	}
	if len(unsupported) > 0 {
		slices.Sort(unsupported)
		s.writeFault(w, r, badRequest("unsupported fields "+strings.Join(unsupported, ", ")+"."))
		return
	}
	b, err := s.svc.BackupByID(r.Context(), r.PathValue("id"))
	if err == nil {
		b, err = s.svc.UpdateBackup(r.Context(), b.ID, u)
	}
	if err != nil {
		s.writeFault(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"backup": s.backupView(r, b, false, nil)})
}

// nullableString reads a JSON string; null is the empty string (Cinder clears the field).
func nullableString(raw json.RawMessage) (*string, error) {
	var p *string
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, err
	}
	if p == nil {
		p = new(string)
	}
	return p, nil
}
