package api

import (
	"cmp"
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
	var u gateway.BackupUpdate
	err := decodeUpdate(r, "backup", "", func(field string, raw json.RawMessage) (known bool, err error) {
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
			return false, nil
		}
		return true, err
	})
	if err != nil {
		s.writeFault(w, r, err)
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

// decodeUpdate reads a PUT body, {"<element>": {"<field>": value, ...}}, and gives each field to
// take, which says whether it knows the field and what was wrong with its value. The fields it
// does not know are refused together, as Cinder does, with hint after them.
func decodeUpdate(r *http.Request, element, hint string, take func(field string, raw json.RawMessage) (bool, error)) error {
	var body map[string]map[string]json.RawMessage
	if err := decode(r, &body); err != nil {
		return err
	}
	fields := body[element]
	if fields == nil {
		return badRequest("missing required element '" + element + "' in request body")
	}
	var unsupported []string
	for field, raw := range fields {
		known, err := take(field, raw)
		if !known {
			unsupported = append(unsupported, field)
		} else if err != nil {
			return badRequest("invalid input for field/attribute " + field + ": " + err.Error())
		}
	}
	if len(unsupported) > 0 {
		slices.Sort(unsupported)
		if hint != "" {
			hint = ": " + hint
		}
		return badRequest("unsupported fields " + strings.Join(unsupported, ", ") + cmp.Or(hint, "."))
	}
	return nil
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
