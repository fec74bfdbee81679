package api

import "net/http"

// Snapshots come with the snapshots issue; until then the collection is empty, so that
// tooling listing them works, and every snapshot is not found.

func (s *server) listSnapshots(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"snapshots": []any{}})
}

func (s *server) showSnapshot(w http.ResponseWriter, r *http.Request) {
	s.writeFault(w, r, notFound("snapshot "+r.PathValue("id")+" could not be found"))
}

func (s *server) createSnapshot(w http.ResponseWriter, r *http.Request) {
	s.writeFault(w, r, badRequest("snapshots are not supported yet"))
}
