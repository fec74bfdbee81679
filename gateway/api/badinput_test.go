package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
)

// The bad-input tour through the API: garbage, oversized and NUL-laden bodies, huge and
// negative sizes, escaping paths, and another project's ids. Each gets a Cinder fault with the
// right status, and the index and the repository are as they were.
func TestAPIBadInputTour(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v, b := e.backedUp(t, "p1", "data")
	state := func() string {
		admin := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: "admin", Admin: true})
		bs, _ := e.svc.ListBackups(admin, gateway.ListFilter{AllProjects: true})
		vs, _ := e.svc.ListVolumes(admin, true)
		j, _ := json.Marshal([]any{bs, vs})
		var files []string
		_ = filepath.Walk(filepath.Join(e.dir, "repo"), func(p string, fi os.FileInfo, err error) error {
			rel, _ := filepath.Rel(filepath.Join(e.dir, "repo"), p)
			if err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(rel, "index/") && !strings.HasPrefix(rel, "locks/") {
				files = append(files, fmt.Sprintf("%s %d %d", rel, fi.Size(), fi.ModTime().UnixNano()))
			}
			return nil
		})
		sort.Strings(files)
		return string(j) + "\n" + strings.Join(files, "\n")
	}
	before := state()

	p2 := func(method, path, body string) call {
		return call{method: method, path: "/v3/p2" + path, body: body, user: "u2", project: "p2"}
	}
	huge := `{"volume": {"size": 99999999999999999999, "name": "x"}}`
	big := `{"backup": {"volume_id": "` + strings.Repeat("a", 8<<20) + `"}}`
	for _, tc := range []struct {
		c    call
		want int
	}{
		// another project's backup and volume: not found, never forbidden
		{p2("GET", "/backups/"+b.ID, ""), 404},
		{p2("DELETE", "/backups/"+b.ID, ""), 404},
		{p2("POST", "/backups/"+b.ID+"/restore", `{"restore": {}}`), 404},
		{p2("GET", "/backups/"+b.ID+"/export_record", ""), 403}, // admins' alone, whoever's backup
		{p2("POST", "/backups/"+b.ID+"/action", `{"os-force_delete": {}}`), 404},
		{p2("GET", "/volumes/"+v.ID, ""), 404},
		{p2("POST", "/backups", `{"backup": {"volume_id": "`+v.ID+`"}}`), 404},
		// the URL names a project that is not the caller's
		{call{method: "GET", path: "/v3/p1/backups", user: "u2", project: "p2"}, 400},
		// garbage and oversized bodies
		{p2("POST", "/backups", `not json`), 400},
		{p2("POST", "/backups", `{"backup": 7}`), 400},
		{p2("POST", "/backups", big), 413},
		{p2("POST", "/backups", `{"backup": {"volume_id": "a\u0000b"}}`), 404},
		{p2("POST", "/backups", `{"backup": {"volume_id": "../../etc"}}`), 404},
		{p2("POST", "/backups/import_record", `{"backup-record": {"backup_service": "x", "backup_url": "\u0000"}}`), 403},
		{p2("POST", "/volumes", huge), 400},
		{p2("POST", "/volumes", `{"volume": {"size": -1, "name": "x"}}`), 400},
		{p2("POST", "/volumes", `{"volume": {"size": 1.5, "name": "x"}}`), 400},
		{p2("POST", "/volumes", `{"volume": {"size": "1", "name": "a\u0007b"}}`), 400},
		{p2("POST", "/volumes", `{"volume": {"size": 1, "name": "x", "source_volid": "`+v.ID+`"}}`), 400},
		{p2("POST", "/volumes", `{"volume": {"size": 1, "name": "x", "metadata": {"k": "v"}}}`), 400},
		{p2("DELETE", "/volumes/"+v.ID, ""), 404},
		{p2("POST", "/volumes/"+v.ID+"/action", `{"os-extend": {"new_size": 2}}`), 405},
		{p2("POST", "/snapshots", `{"snapshot": {"volume_id": "nope", "name": "a\u0007b"}}`), 404},
		{p2("PUT", "/os-quota-sets/p2", `{"quota_set": {"backups": -9}}`), 403},
		{p2("GET", "/backups/..%2F..%2Fconfig", ""), 404},
		{p2("GET", "/backups/"+strings.Repeat("z", 5000), ""), 404},
	} {
		code, _, body := e.do(t, tc.c)
		if code != tc.want {
			t.Errorf("%s %s: %d, want %d: %.200s", tc.c.method, tc.c.path[:min(len(tc.c.path), 80)], code, tc.want, body)
			continue
		}
		var fault map[string]map[string]any
		if err := json.Unmarshal(body, &fault); err != nil || len(fault) != 1 {
			t.Errorf("%s %s: not a Cinder fault: %.200s", tc.c.method, tc.c.path[:min(len(tc.c.path), 80)], body)
		}
	}
	if after := state(); after != before {
		t.Errorf("bad requests changed the index or the repository:\nbefore: %s\nafter:  %s", before, after)
	}
	if code, _, _ := e.do(t, call{method: "GET", path: "/v3/p1/backups/" + b.ID, user: "u1", project: "p1"}); code != http.StatusOK {
		t.Errorf("the owner's backup: %d", code)
	}
}

// FuzzAPIBodies sends arbitrary bodies to every endpoint that decodes one: no panic, no 5xx
// (a body the API cannot use is the client's error), and always a Cinder fault or a success.
func FuzzAPIBodies(f *testing.F) {
	for _, s := range []string{`{"backup": {"volume_id": "v"}}`, `{"restore": {"volume_id": "x"}}`,
		`{"os-reset_status": {"status": "error"}}`, `{"backup-record": {"backup_service": "s", "backup_url": "u"}}`,
		`{"quota_set": {"backups": 3}}`, `{"snapshot": {"volume_id": "v", "force": true}}`, `[]`, `null`, `{`} {
		f.Add(s)
	}
	e := newEnv(f, api.Options{Auth: api.AuthNoAuth})
	paths := []struct{ method, path string }{
		{"POST", "/backups"}, {"POST", "/backups/x/restore"}, {"POST", "/backups/x/action"},
		{"POST", "/backups/import_record"}, {"PUT", "/os-quota-sets/p"}, {"POST", "/snapshots"},
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, p := range paths {
			code, _, out := e.do(t, call{method: p.method, path: "/v3/p" + p.path, body: body, user: "u", project: "p"})
			if code >= 500 {
				t.Fatalf("%s %s with %q: %d %s", p.method, p.path, body, code, out)
			}
			if code >= 400 && !json.Valid(out) {
				t.Fatalf("%s %s: a fault that is not JSON: %s", p.method, p.path, out)
			}
		}
	})
}

// Backup create, restore and import bodies are closed in Cinder (additionalProperties
// false): a field the API does not know, such as a misspelt "incremental", is a 400 naming
// it, and nothing is backed up, restored or imported.
func TestBackupBodiesRefuseUnknownFields(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v, b := e.backedUp(t, "p1", "data")
	admin := func(method, path, body string) call {
		return call{method: method, path: "/v3/p1" + path, body: body, user: "admin", project: "p1", version: "3.64"}
	}
	for _, tc := range []struct {
		c     call
		field string
	}{
		{admin("POST", "/backups", `{"backup": {"volume_id": "`+v.ID+`", "incremantal": true}}`), "incremantal"},
		{admin("POST", "/backups", `{"backup": {"volume_id": "`+v.ID+`"}, "force": true}`), "force"},
		{admin("POST", "/backups/"+b.ID+"/restore", `{"restore": {"volume": "`+v.ID+`"}}`), "volume"},
		{admin("POST", "/backups/import_record", `{"backup-record": {"backup_service": "s", "backup_url": "u", "size": 1}}`), "size"},
	} {
		code, _, body := e.do(t, tc.c)
		if code != http.StatusBadRequest || !strings.Contains(string(body), `\"`+tc.field+`\"`) {
			t.Errorf("%s %s %s: %d %s; want 400 naming %s", tc.c.method, tc.c.path, tc.c.body, code, body, tc.field)
		}
	}
	all, err := e.svc.Index().Backups()
	if err != nil || len(all) != 1 {
		t.Errorf("backups after refused requests: %d %v, want 1", len(all), err)
	}
	if vols, err := e.svc.Index().Volumes(); err != nil || len(vols) != 1 {
		t.Errorf("volumes after a refused restore: %d %v, want 1", len(vols), err)
	}
	// Cinder's own fields still pass, availability_zone from 3.51 (the one zone there is) and
	// the container as backup-show names it (the one there is); another container is refused.
	c := admin("POST", "/backups", `{"backup": {"volume_id": "`+v.ID+`", "container": "elsewhere"}}`)
	if code, _, body := e.do(t, c); code != http.StatusBadRequest || !strings.Contains(string(body), "container elsewhere") {
		t.Errorf("create in another container: %d %s", code, body)
	}
	c = admin("POST", "/backups", `{"backup": {"volume_id": "`+v.ID+`", "name": "n", "description": null, "container": "`+e.svc.Location()+`", "incremental": true, "force": false, "snapshot_id": null, "metadata": {"k": "v"}, "availability_zone": "nova"}}`)
	if code, _, body := e.do(t, c); code != http.StatusAccepted {
		t.Errorf("create with every field of Cinder's: %d %s", code, body)
	}
	c.body = `{"backup": {"volume_id": "` + v.ID + `", "availability_zone": "elsewhere"}}`
	if code, _, body := e.do(t, c); code != http.StatusBadRequest || !strings.Contains(string(body), "elsewhere") {
		t.Errorf("create in an unknown zone: %d %s", code, body)
	}
}

// export_record is for admins, as in Cinder (policy backup:backup-export is admin_api): a
// member of the backup's project is refused with 403, and so is a member of another project,
// with the same words, so the answer tells nothing of which backups exist. It used to hand the
// record to any member of the backup's project.
func TestExportRecordIsForAdmins(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	_, b := e.backedUp(t, "p1", "data")
	var refusals []string
	for _, c := range []call{
		{method: "GET", path: "/v3/p1/backups/" + b.ID + "/export_record", user: "u1", project: "p1"},
		{method: "GET", path: "/v3/p2/backups/" + b.ID + "/export_record", user: "u2", project: "p2"},
		{method: "GET", path: "/v3/p2/backups/no-such-backup/export_record", user: "u2", project: "p2"},
	} {
		code, _, body := e.do(t, c)
		if code != http.StatusForbidden || strings.Contains(string(body), "backup_url") {
			t.Errorf("%s as %s: %d %s, want 403 and no record", c.path, c.user, code, body)
		}
		refusals = append(refusals, strings.ReplaceAll(string(body), b.ID, "no-such-backup"))
	}
	if refusals[1] != refusals[2] {
		t.Errorf("another project's backup and no backup are told apart: %q, %q", refusals[1], refusals[2])
	}
	code, _, body := e.do(t, call{method: "GET", path: "/v3/p1/backups/" + b.ID + "/export_record", user: "admin", project: "p1"})
	if code != http.StatusOK || !strings.Contains(string(body), "backup_url") {
		t.Errorf("an admin's export_record: %d %s", code, body)
	}
}
