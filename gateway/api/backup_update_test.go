package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway/api"
)

// PUT backups/{id}: from 3.9 name and description, from 3.43 metadata; anything else 400;
// below 3.9 there is no such method (404). Create takes metadata from 3.43, and show returns
// it and the creator's user id (3.56).
func TestBackupUpdate(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v := e.volume(t, "p1", "vol1")
	carol := call{user: "carol", project: "p1", version: "3.64"}
	c := carol
	c.method, c.path, c.body = "POST", "/v3/p1/backups", `{"backup": {"volume_id": "`+v.ID+`", "name": "b1", "metadata": {"k": "v"}}}`
	code, _, body := e.do(t, c)
	if code != http.StatusAccepted {
		t.Fatalf("create with metadata: %d %s", code, body)
	}
	var created struct{ Backup struct{ ID string } }
	_ = json.Unmarshal(body, &created)
	id := created.Backup.ID
	old := c
	old.version = "3.42"
	if code, _, body := e.do(t, old); code != http.StatusBadRequest || !strings.Contains(string(body), "3.43") {
		t.Errorf("create with metadata at 3.42: %d %s", code, body)
	}

	put := func(version, body string) (int, []byte) {
		t.Helper()
		code, _, out := e.do(t, call{method: "PUT", path: "/v3/p1/backups/" + id, body: body, user: "carol", project: "p1", version: version})
		return code, out
	}
	for _, tc := range []struct {
		version, body string
		code          int
		want          string
	}{
		{"3.8", `{"backup": {"name": "x"}}`, 404, "3.9"},
		{"3.9", `{"backup": {"metadata": {"a": "b"}}}`, 400, "unsupported fields metadata"},
		{"3.43", `{"backup": {"name": "x", "size": 3, "status": "error"}}`, 400, "unsupported fields size, status"},
		{"3.43", `{"nobackup": {}}`, 400, "missing required element 'backup'"},
		{"3.43", `{"backup": {"name": 7}}`, 400, "name"},
		{"3.43", `{"backup": {"metadata": {"": "v"}}}`, 400, "key"},
		{"3.43", `{"backup": {"description": "` + strings.Repeat("d", 256) + `"}}`, 400, "at most 255"},
	} {
		code, out := put(tc.version, tc.body)
		if code != tc.code || !strings.Contains(strings.ToLower(string(out)), strings.ToLower(tc.want)) {
			t.Errorf("PUT %s at %s: %d %s, want %d naming %q", tc.body, tc.version, code, out, tc.code, tc.want)
		}
	}
	code, out := put("3.9", `{"backup": {"name": "renamed", "description": "new words"}}`)
	if code != http.StatusOK {
		t.Fatalf("update: %d %s", code, out)
	}
	golden(t, "backup-update", out)
	if code, out := put("3.43", `{"backup": {"metadata": {"owner": "ops", "tier": "gold"}}}`); code != http.StatusOK {
		t.Fatalf("update metadata: %d %s", code, out)
	}
	c = carol
	c.method, c.path = "GET", "/v3/p1/backups/"+id
	_, _, body = e.do(t, c)
	golden(t, "backup-show-updated", body, e.dir, "DIR")
	// Another project's user does not find it.
	if code, _, _ := e.do(t, call{method: "PUT", path: "/v3/p2/backups/" + id, body: `{"backup": {"name": "x"}}`, user: "dave", project: "p2", version: "3.9"}); code != http.StatusNotFound {
		t.Errorf("update from another project: %d, want 404", code)
	}
	// Cleared by null and {}.
	if code, out := put("3.43", `{"backup": {"description": null, "metadata": {}}}`); code != http.StatusOK {
		t.Fatalf("clear: %d %s", code, out)
	}
	b, err := e.svc.Index().Backup(id)
	if err != nil || b.Description != "" || b.Metadata != nil || b.Name != "renamed" {
		t.Errorf("after clearing: %+v %v", b, err)
	}
}

// Create holds a description to Cinder's 255 characters as update does: a longer one is a
// 400 and no backup is made.
func TestBackupCreateBoundsDescription(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v := e.volume(t, "p1", "vol1")
	create := func(description string) (int, []byte) {
		t.Helper()
		code, _, out := e.do(t, call{method: "POST", path: "/v3/p1/backups", user: "carol", project: "p1", version: "3.64",
			body: `{"backup": {"volume_id": "` + v.ID + `", "description": "` + description + `"}}`})
		return code, out
	}
	if code, out := create(strings.Repeat("é", 256)); code != http.StatusBadRequest || !strings.Contains(string(out), "at most 255") {
		t.Errorf("create with a description of 256 characters: %d %s, want 400", code, out)
	}
	if all, err := e.svc.Index().Backups(); err != nil || len(all) != 0 {
		t.Errorf("a refused create left %d backups (%v)", len(all), err)
	}
	if code, out := create(strings.Repeat("é", 255)); code != http.StatusAccepted {
		t.Errorf("create with a description of 255 characters: %d %s, want 202", code, out)
	}
}

// PUT volumes/{id} (cinder rename, openstack volume set): the name and the description, also
// as display_name and display_description; any other field 400; a name another volume of the
// project has 409; another project's volume 404. The answer is the volume's detail.
func TestVolumeUpdate(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v := e.volume(t, "p1", "vol1")
	e.volume(t, "p1", "vol2")
	put := func(project, body string) (int, []byte) {
		t.Helper()
		code, _, out := e.do(t, call{method: "PUT", path: "/v3/" + project + "/volumes/" + v.ID, body: body, user: "carol", project: project, version: "3.0"})
		return code, out
	}
	for _, tc := range []struct {
		project, body string
		code          int
		want          string
	}{
		{"p1", `{"volume": {"metadata": {"a": "b"}}}`, 400, "unsupported fields metadata"},
		{"p1", `{"novolume": {}}`, 400, "missing required element 'volume'"},
		{"p1", `{"volume": {"name": 7}}`, 400, "name"},
		{"p1", `{"volume": {"name": null}}`, 400, "1 to 255 characters"},
		{"p1", `{"volume": {"name": "vol2"}}`, 409, "already exists"},
		{"p1", `{"volume": {}}`, 400, "say what to change"},
		{"p2", `{"volume": {"name": "x"}}`, 404, "could not be found"},
	} {
		code, out := put(tc.project, tc.body)
		if code != tc.code || !strings.Contains(strings.ToLower(string(out)), strings.ToLower(tc.want)) {
			t.Errorf("PUT %s in %s: %d %s, want %d naming %q", tc.body, tc.project, code, out, tc.code, tc.want)
		}
	}
	code, out := put("p1", `{"volume": {"name": "web", "description": "the web server"}}`)
	if code != http.StatusOK {
		t.Fatalf("rename: %d %s", code, out)
	}
	var shown struct {
		Volume struct{ ID, Name, Description string }
	}
	if err := json.Unmarshal(out, &shown); err != nil || shown.Volume.ID != v.ID || shown.Volume.Name != "web" || shown.Volume.Description != "the web server" {
		t.Fatalf("rename's answer: %s (%v)", out, err)
	}
	if code, out := put("p1", `{"volume": {"display_name": "www", "display_description": null}}`); code != http.StatusOK {
		t.Fatalf("rename by display_name: %d %s", code, out)
	}
	got, err := e.svc.Index().Volume(v.ID)
	if err != nil || got.Name != "www" || got.Description != "" {
		t.Errorf("after the second rename: %+v %v", got, err)
	}
}
