package api

import (
	"net/http"

	"github.com/cairn-backup/cairn/gateway"
)

// listServices is GET os-services (admins), filtered by host and binary.
func (s *server) listServices(w http.ResponseWriter, r *http.Request) {
	if !callerOf(r).Admin {
		s.writeFault(w, r, &httpError{http.StatusForbidden, "only an admin may list services"})
		return
	}
	q := r.URL.Query()
	ver := versionOf(r)
	out := []any{}
	for _, st := range s.svc.Services(r.Context()) {
		if (q.Has("host") && st.Host != q.Get("host")) || (q.Has("binary") && st.Binary != q.Get("binary")) {
			continue
		}
		out = append(out, serviceView(st, ver))
	}
	writeJSON(w, http.StatusOK, map[string]any{"services": out})
}

func serviceView(st gateway.ServiceStatus, ver version) map[string]any {
	v := map[string]any{"binary": st.Binary, "host": st.Host, "zone": st.Zone, "status": st.Status,
		"state": st.State, "updated_at": stamp(st.UpdatedAt), "disabled_reason": orNull(st.DisabledReason)}
	if ver.atLeast(7) {
		v["cluster"] = nil
	}
	if ver.atLeast(49) && st.Binary == "cairn-volume" {
		v["backend_state"] = st.State
	}
	return v
}
