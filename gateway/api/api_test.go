package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// env is a real service on a temporary local repository behind the API on 127.0.0.1.
type env struct {
	svc *gateway.Service
	url string
	dir string
	log *bytes.Buffer
}

func newEnv(t testing.TB, o api.Options) *env {
	t.Helper()
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), DefaultQuota: &gateway.Quota{Backups: 3, BackupGigabytes: 5}}
	ctx := context.Background()
	if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	var logs bytes.Buffer
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	srv := httptest.NewServer(api.New(svc, o))
	t.Cleanup(srv.Close)
	return &env{svc: svc, url: srv.URL, dir: dir, log: &logs}
}

// volume registers a small image file with data in project p.
func (e *env) volume(t *testing.T, p, name string) *index.Volume {
	t.Helper()
	path := filepath.Join(e.dir, name+".img")
	data := bytes.Repeat([]byte(name+" data block "), 100000)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: p, Admin: true})
	v, err := e.svc.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: name})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// backedUp registers a volume as volume does and backs it up as user u1, a member of p.
func (e *env) backedUp(t *testing.T, p, name string) (*index.Volume, *index.Backup) {
	t.Helper()
	v := e.volume(t, p, name)
	ctx := gateway.WithCaller(context.Background(), gateway.Caller{User: "u1", Project: p})
	b, err := e.svc.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	return v, b
}

// page lists resource (backups or volumes) in project as user at microversion 3.45: the
// status, the ids in the order given, and the count that with_count=true asks for.
func (e *env) page(t *testing.T, user, project, resource, query string) (int, []string, float64) {
	t.Helper()
	code, _, body := e.do(t, call{method: "GET", path: "/v3/" + project + "/" + resource + "?" + query, user: user, project: project, version: "3.45"})
	var got map[string]json.RawMessage
	_ = json.Unmarshal(body, &got)
	var items []struct{ ID string }
	_ = json.Unmarshal(got[resource], &items)
	var count float64
	_ = json.Unmarshal(got["count"], &count)
	var ids []string
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return code, ids, count
}

type call struct {
	method, path, body string
	user, project      string // noauth headers; empty user sends none
	version            string
	header             []string // more headers: name, value, ...
}

func (e *env) do(t testing.TB, c call) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(c.method, e.url+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.user != "" {
		req.Header.Set("X-User-Id", c.user)
		req.Header.Set("X-Project-Id", c.project)
	}
	if c.version != "" {
		req.Header.Set("OpenStack-API-Version", "volume "+c.version)
	}
	for i := 0; i+1 < len(c.header); i += 2 {
		req.Header.Set(c.header[i], c.header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

var (
	uuidRe = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)
	timeRe = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}`)
	hostRe = regexp.MustCompile(`127\.0\.0\.1:\d+`)
	// A backup's stored bytes are compressed blobs, tree nodes among them, that hold chunk
	// addresses keyed by the repository's random key: their size varies by a byte or two from
	// one repository to the next. The golden files keep whether any were stored.
	storedRe = regexp.MustCompile(`"stored_bytes": [1-9]\d*`)
)

// golden compares an indented, masked body with testdata/name.golden.
func golden(t *testing.T, name string, body []byte, extra ...string) {
	t.Helper()
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%s: not JSON: %v\n%s", name, err, body)
	}
	pretty, _ := json.MarshalIndent(v, "", "  ")
	s := uuidRe.ReplaceAllString(string(pretty), "UUID")
	s = timeRe.ReplaceAllString(s, "TIME")
	s = hostRe.ReplaceAllString(s, "HOST")
	s = storedRe.ReplaceAllString(s, `"stored_bytes": "SOME"`)
	for i := 0; i+1 < len(extra); i += 2 {
		s = strings.ReplaceAll(s, extra[i], extra[i+1])
	}
	s += "\n"
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if s != string(want) {
		t.Errorf("%s differs from %s (run with -update if intended):\n%s", name, path, s)
	}
}

func TestVersions(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	code, _, body := e.do(t, call{method: "GET", path: "/"})
	if code != http.StatusMultipleChoices {
		t.Fatalf("GET /: %d", code)
	}
	golden(t, "versions", body)
	code, _, body2 := e.do(t, call{method: "GET", path: "/v3/"})
	if code != http.StatusOK || !bytes.Equal(body, body2) {
		t.Fatalf("GET /v3/: %d %s", code, body2)
	}
	for _, tc := range []struct {
		ask, echo string
		code      int
	}{
		{"", "3.0", 200}, {"3.64", "3.64", 200}, {"latest", "3.70", 200}, {"3.71", "", 406}, {"4.0", "", 406}, {"x.y", "", 400},
	} {
		code, h, body := e.do(t, call{method: "GET", path: "/v3/admin/backups", user: "admin", project: "admin", version: tc.ask})
		if code != tc.code || (tc.echo != "" && h.Get("OpenStack-API-Version") != "volume "+tc.echo) {
			t.Errorf("version %q: %d %q %s", tc.ask, code, h.Get("OpenStack-API-Version"), body)
		}
	}
	if !strings.Contains(e.log.String(), "without authentication") {
		t.Errorf("noauth mode logged no warning: %s", e.log.String())
	}
}

func TestFaults(t *testing.T) {
	e := newEnv(t, api.Options{Tokens: api.Tokens{"t1": {Caller: gateway.Caller{User: "u", Project: "p1"}}}})
	code, _, body := e.do(t, call{method: "GET", path: "/v3/p1/backups"})
	if code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	golden(t, "fault-401", body)
	for _, tc := range []struct {
		c    call
		code int
		name string
	}{
		{call{method: "GET", path: "/v3/backups/nope"}, 404, "fault-404"},
		{call{method: "POST", path: "/v3/backups", body: `{"backup": {}}`}, 400, "fault-400"},
		{call{method: "POST", path: "/v3/backups", body: `{"backup": `}, 400, ""},
		{call{method: "POST", path: "/v3/backups", body: `{"backup": {"volume_id": "v", "snapshot_id": "s"}}`}, 404, ""},
		{call{method: "POST", path: "/v3/backups/x/action", body: `{"os-frobnicate": null}`}, 400, ""},
		{call{method: "PUT", path: "/v3/os-quota-sets/p1", body: `{"quota_set": {"backups": 1}}`}, 403, "fault-403"},
		{call{method: "GET", path: "/v3/os-services"}, 403, ""},
		{call{method: "GET", path: "/v3/snapshots/s1"}, 404, ""},
		{call{method: "GET", path: "/v3/p2/backups"}, 400, ""},
		{call{method: "GET", path: "/v3/p1/nothing/here"}, 404, ""},
	} {
		req, _ := http.NewRequest(tc.c.method, e.url+tc.c.path, strings.NewReader(tc.c.body))
		req.Header.Set("X-Auth-Token", "t1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %d, want %d: %s", tc.c.method, tc.c.path, resp.StatusCode, tc.code, body)
		}
		if tc.name != "" {
			golden(t, tc.name, body)
		}
	}
}

// TestServerFaultsSayNoPathToMembers: a 500 tells a member Cinder's words for it, and an admin
// and the log what failed. Before, a member read the error as it was: here, the path of the
// volume's image under the state directory (elsewhere the repository's directory, or its S3
// endpoint and bucket).
func TestServerFaultsSayNoPathToMembers(t *testing.T) {
	e := newEnv(t, api.Options{Tokens: api.Tokens{
		"member": {Caller: gateway.Caller{User: "u1", Project: "p1"}},
		"admin":  {Caller: gateway.Caller{User: "admin", Project: "p1", Admin: true}},
	}})
	v := e.volume(t, "p1", "vol1")
	// A directory where the image was: reading it fails with no sentinel, so 500.
	img := filepath.Join(e.dir, "vol1.img")
	if err := os.Remove(img); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(img, 0o700); err != nil {
		t.Fatal(err)
	}
	create := func(token string) (int, http.Header, string) {
		code, h, body := e.do(t, call{method: "POST", path: "/v3/p1/backups", body: `{"backup": {"volume_id": "` + v.ID + `"}}`,
			header: []string{"X-Auth-Token", token}})
		return code, h, string(body)
	}
	code, h, body := create("member")
	if code != http.StatusInternalServerError {
		t.Fatalf("member's backup of a volume whose image is a directory: %d %s, want 500", code, body)
	}
	if strings.Contains(body, e.dir) || !strings.Contains(body, "computeFault") || !strings.Contains(body, "has either erred") {
		t.Errorf("member's 500: %s; want Cinder's message, no path", body)
	}
	if id := h.Get("X-Openstack-Request-Id"); id == "" || !strings.Contains(e.log.String(), id) || !strings.Contains(e.log.String(), img) {
		t.Errorf("the log does not say what failed in request %q:\n%s", id, e.log.String())
	}
	if code, _, body := create("admin"); code != http.StatusInternalServerError || !strings.Contains(body, img) {
		t.Errorf("admin's backup of a volume whose image is a directory: %d %s; want 500 naming %s", code, body, img)
	}
}

// TestRefusalsNameNoPathToMembers: a refusal (4xx) says what is wrong, to a member with the
// volume's name where the message had its image's path; an admin reads the path. Before, a
// member's restore onto a volume whose image was not a file was told the image's path.
func TestRefusalsNameNoPathToMembers(t *testing.T) {
	e := newEnv(t, api.Options{Tokens: api.Tokens{
		"member": {Caller: gateway.Caller{User: "u1", Project: "p1"}},
		"admin":  {Caller: gateway.Caller{User: "admin", Project: "p1", Admin: true}},
	}})
	v, b := e.backedUp(t, "p1", "vol1")
	if err := os.Remove(v.Path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	restore := func(token string) (int, string) {
		code, _, body := e.do(t, call{method: "POST", path: "/v3/p1/backups/" + b.ID + "/restore",
			body: `{"restore": {"volume_id": "` + v.ID + `"}}`, header: []string{"X-Auth-Token", token}})
		return code, string(body)
	}
	if code, body := restore("member"); code != http.StatusBadRequest || strings.Contains(body, e.dir) || !strings.Contains(body, "volume vol1") {
		t.Errorf("member's restore onto a volume whose image is a directory: %d %s; want 400 naming volume vol1, no path", code, body)
	}
	if code, body := restore("admin"); code != http.StatusBadRequest || !strings.Contains(body, v.Path) {
		t.Errorf("admin's restore onto a volume whose image is a directory: %d %s; want 400 naming %s", code, body, v.Path)
	}
}

// TestBackupContainerIsNoLocationToMembers: a backup's container names the repository's
// location (its directory, or S3 bucket and prefix) to admins only; a member reads a name, which
// a create takes back. Before, every member read the location in backup-show, and in the error
// for a container that is not this gateway's.
func TestBackupContainerIsNoLocationToMembers(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v, b := e.backedUp(t, "p1", "vol1")
	member := call{user: "u1", project: "p1", version: "3.64"}
	admin := call{user: "admin", project: "p1", version: "3.64"}
	container := func(c call) string {
		t.Helper()
		c.method, c.path = "GET", "/v3/p1/backups/"+b.ID
		code, _, body := e.do(t, c)
		var got struct{ Backup struct{ Container *string } }
		if err := json.Unmarshal(body, &got); code != http.StatusOK || err != nil || got.Backup.Container == nil {
			t.Fatalf("%s's backup show: %d %s; want a container", c.user, code, body)
		}
		return *got.Backup.Container
	}
	loc := e.svc.Location()
	if got := container(member); strings.Contains(got, loc) || strings.Contains(got, e.dir) || got == "" {
		t.Errorf("a member's container = %q; want a name, not the location %s", got, loc)
	}
	if got := container(admin); got != loc {
		t.Errorf("an admin's container = %q, want %s", got, loc)
	}
	for _, c := range []call{member, admin} {
		c.method, c.path, c.body = "POST", "/v3/p1/backups", `{"backup": {"volume_id": "`+v.ID+`", "container": "`+container(member)+`"}}`
		if code, _, body := e.do(t, c); code != http.StatusAccepted {
			t.Errorf("%s's create in the container a member reads: %d %s", c.user, code, body)
		}
	}
	c := member
	c.method, c.path, c.body = "POST", "/v3/p1/backups", `{"backup": {"volume_id": "`+v.ID+`", "container": "elsewhere"}}`
	if code, _, body := e.do(t, c); code != http.StatusBadRequest || strings.Contains(string(body), loc) {
		t.Errorf("a member's create in another container: %d %s; want 400 without the location", code, body)
	}
}

// TestBackupBodies: Cinder's shapes for create, show, list and quota usage, and a refused
// create (413) that writes nothing.
func TestBackupBodies(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v := e.volume(t, "admin", "vol1")
	admin := call{user: "admin", project: "admin", version: "3.64"}
	c := admin
	c.method, c.path, c.body = "POST", "/v3/admin/backups", `{"backup": {"volume_id": "`+v.ID+`", "name": "b1", "container": null, "incremental": false, "force": false, "snapshot_id": null}}`
	code, _, body := e.do(t, c)
	if code != http.StatusAccepted {
		t.Fatalf("create: %d %s", code, body)
	}
	golden(t, "backup-create", body)
	var created struct{ Backup struct{ ID string } }
	_ = json.Unmarshal(body, &created)
	// The embedded service (no workers) finished it already.
	c = admin
	c.method, c.path = "GET", "/v3/admin/backups/"+created.Backup.ID
	code, _, body = e.do(t, c)
	if code != http.StatusOK {
		t.Fatalf("show: %d %s", code, body)
	}
	golden(t, "backup-show", body, filepath.Join(e.dir, "repo"), "REPO")
	c.path = "/v3/backups?all_tenants=1"
	_, _, body = e.do(t, c)
	golden(t, "backup-list", body)

	// Another project's member: not found.
	code, _, _ = e.do(t, call{method: "GET", path: "/v3/backups/" + created.Backup.ID, user: "bob", project: "p1"})
	if code != http.StatusNotFound {
		t.Fatalf("show by another project: %d", code)
	}
	// Quota: 5 GiB allow five 1-GiB backups but 3 backups only.
	for range 2 {
		c = admin
		c.method, c.path, c.body = "POST", "/v3/backups", `{"backup": {"volume_id": "`+v.ID+`"}}`
		if code, _, body := e.do(t, c); code != http.StatusAccepted {
			t.Fatalf("create: %d %s", code, body)
		}
	}
	code, h, body := e.do(t, c)
	if code != http.StatusRequestEntityTooLarge || h.Get("Retry-After") != "0" {
		t.Fatalf("over quota: %d %s", code, body)
	}
	golden(t, "fault-413", body)
	all, _ := e.svc.Index().Backups()
	if len(all) != 3 {
		t.Fatalf("a refused create wrote a backup: %d backups", len(all))
	}
	c = admin
	c.method, c.path = "GET", "/v3/os-quota-sets/admin?usage=True"
	_, _, body = e.do(t, c)
	golden(t, "quota-usage", body)
	c.method, c.path, c.body = "PUT", "/v3/os-quota-sets/admin", `{"quota_set": {"tenant_id": "admin", "volumes": 3}}`
	if code, _, body := e.do(t, c); code != http.StatusBadRequest {
		t.Fatalf("quota update of volumes: %d %s", code, body)
	}
	c.body = `{"quota_set": {"backups": "-2"}}`
	if code, _, body := e.do(t, c); code != http.StatusBadRequest {
		t.Fatalf("quota update to -2: %d %s", code, body)
	}
	c.body = `{"quota_set": {"backups": -1}}`
	if code, _, body := e.do(t, c); code != http.StatusOK || !strings.Contains(string(body), `"backups":-1`) {
		t.Fatalf("quota update to unlimited: %d %s", code, body)
	}
	c.method, c.body = "DELETE", ""
	if code, _, _ := e.do(t, c); code != http.StatusOK {
		t.Fatalf("quota delete: %d", code)
	}
	c.method = "GET"
	if _, _, body := e.do(t, c); !strings.Contains(string(body), `"backups":3`) {
		t.Fatalf("after quota delete: %s", body)
	}
	// Volumes.
	c = admin
	c.method, c.path = "GET", "/v3/volumes/"+v.ID
	_, _, body = e.do(t, c)
	golden(t, "volume-show", body)
	c.path = "/v3/volumes/" + filepath.Join(e.dir, "vol1.img")
	if code, _, _ := e.do(t, c); code != http.StatusNotFound {
		t.Fatalf("a volume by path through the API: %d", code)
	}
}

func TestLoadTokens(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		text string
		want map[string]gateway.Caller
		err  string
	}{
		{"# c\n\nt1 alice p1 member\nt2 root admin admin,member\n", map[string]gateway.Caller{
			"t1": {User: "alice", Project: "p1"}, "t2": {User: "root", Project: "admin", Admin: true}}, ""},
		{"t1 alice p1 member\nt3 prometheus - metrics\n", map[string]gateway.Caller{"t1": {User: "alice", Project: "p1"}}, ""},
		{"t1 alice p1\n", nil, "line 1: want TOKEN USER PROJECT"},
		{"t1 a p r\nt1 b p r\n", nil, "line 2: the token is already"},
	} {
		path := filepath.Join(dir, "tokens")
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := api.LoadTokens(path)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.text, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		for k, v := range tc.want {
			if c, ok := got.Lookup(k); !ok || c != v {
				t.Errorf("token %s: %+v, want %+v", k, got[k], v)
			}
		}
	}
	if _, err := api.LoadTokens(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing tokens file loaded")
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go e.svc.RunHeartbeats(ctx)
	if code, _, body := e.do(t, call{method: "GET", path: "/healthz"}); code != 200 || !strings.Contains(string(body), "ok") {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	if code, _, body := e.do(t, call{method: "GET", path: "/metrics"}); code != 200 || !strings.Contains(string(body), "cairn_chunk_cache_hits_total") {
		t.Fatalf("/metrics: %d %s", code, body)
	}
}

// TestMetricsAreForAdminsAndScrapers: /metrics names every project's policies, so in token
// mode only an admin's token or one of role metrics (as X-Auth-Token, or as the Bearer
// token Prometheus sends) reads it; a member of another project, with his token or none,
// learns nothing there; a metrics-only token opens nothing else.
func TestMetricsAreForAdminsAndScrapers(t *testing.T) {
	tokens := writeTokens(t, "tok-root root admin admin\ntok-bob bob pb member\ntok-prom prometheus - metrics\n")
	e := newEnv(t, api.Options{Auth: api.AuthToken, Tokens: tokens})
	e.volume(t, "pa", "vola")
	ctx := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: "pa", Admin: true})
	if _, err := e.svc.CreatePolicy(ctx, gateway.PolicyRequest{Policy: gateway.Policy{Name: "acme-payroll-nightly",
		Schedule: "daily", Keep: gateway.KeepRules{Last: 3}}, VolumeRefs: []string{"vola"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RunPolicy(ctx, "acme-payroll-nightly"); err != nil {
		t.Fatal(err)
	}
	get := func(path string, header ...string) (int, string) {
		t.Helper()
		code, _, body := e.do(t, call{method: "GET", path: path, header: header})
		return code, string(body)
	}
	for _, tc := range []struct {
		header []string
		code   int
	}{
		{nil, http.StatusUnauthorized},
		{[]string{"X-Auth-Token", "tok-wrong"}, http.StatusUnauthorized},
		{[]string{"X-Auth-Token", "tok-bob"}, http.StatusForbidden},
		{[]string{"Authorization", "Bearer tok-bob"}, http.StatusForbidden},
		{[]string{"X-Auth-Token", "tok-root"}, http.StatusOK},
		{[]string{"Authorization", "Bearer tok-prom"}, http.StatusOK},
	} {
		code, body := get("/metrics", tc.header...)
		if code != tc.code {
			t.Errorf("/metrics with %v: %d, want %d", tc.header, code, tc.code)
		}
		named := strings.Contains(body, "acme-payroll-nightly")
		if code == http.StatusOK && !named {
			t.Errorf("/metrics with %v lacks the policy's series:\n%s", tc.header, body)
		}
		if code != http.StatusOK && named {
			t.Errorf("/metrics with %v names project pa's policy", tc.header)
		}
	}
	// The scraper's token opens neither the API nor anything of a project.
	if code, _ := get("/v3/-/backups", "X-Auth-Token", "tok-prom"); code != http.StatusUnauthorized {
		t.Errorf("the API with a metrics-only token: %d, want 401", code)
	}
	if code, _ := get("/healthz"); code != http.StatusOK && code != http.StatusServiceUnavailable {
		t.Errorf("/healthz without a token: %d", code)
	}
}

// TestMetricsTakeSignedInAdmins: a token an admin's password sign-in issued opens /metrics as
// the admin's tokens-file token does; a member's issued token is refused (403), and an issued
// token whose user's line is gone is not known (401). Before, every issued token was unknown
// to /metrics and to /healthz's reason.
func TestMetricsTakeSignedInAdmins(t *testing.T) {
	usersPath := filepath.Join(t.TempDir(), "users")
	var lines []string
	for _, u := range []struct{ user, project, roles string }{{"root", "admin", "admin"}, {"bob", "pb", "member"}} {
		hash, err := api.HashPassword("pw-" + u.user)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.Join([]string{u.user, u.project, u.roles, hash}, " "))
	}
	if err := os.WriteFile(usersPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	users, err := api.LoadUsers(usersPath)
	if err != nil {
		t.Fatal(err)
	}
	users.UseKey([]byte("0123456789abcdef0123456789abcdef"))
	tokens := writeTokens(t, "tok-prom prometheus - metrics\n")
	e := newEnv(t, api.Options{Auth: api.AuthToken, Tokens: tokens, Users: users})
	issue := func(user string) string {
		t.Helper()
		s, err := users.SignIn("127.0.0.1", user, "pw-"+user, "")
		if err != nil {
			t.Fatal(err)
		}
		return s.Token
	}
	root, bob := issue("root"), issue("bob")
	for _, tc := range []struct {
		token string
		code  int
	}{{root, http.StatusOK}, {bob, http.StatusForbidden}, {"cairnu1.bogus.bogus", http.StatusUnauthorized}} {
		if code, _, _ := e.do(t, call{method: "GET", path: "/metrics", header: []string{"Authorization", "Bearer " + tc.token}}); code != tc.code {
			t.Errorf("/metrics with %.12s…: %d, want %d", tc.token, code, tc.code)
		}
	}
	if err := os.WriteFile(usersPath, []byte(lines[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := e.do(t, call{method: "GET", path: "/metrics", header: []string{"X-Auth-Token", root}}); code != http.StatusUnauthorized {
		t.Errorf("/metrics with the token of a removed admin: %d, want 401", code)
	}
}

// TestHealthzSaysWhyOnlyToOperators: /healthz answers anyone up or down, but the reason it
// is down (the backend's error, which names the repository's path, endpoint or bucket) only
// to an admin's token or one of role metrics, as os-services is admin-only.
func TestHealthzSaysWhyOnlyToOperators(t *testing.T) {
	tokens := writeTokens(t, "tok-root root admin admin\ntok-bob bob pb member\ntok-prom prometheus - metrics\n")
	e := newEnv(t, api.Options{Auth: api.AuthToken, Tokens: tokens})
	for _, name := range []string{"config", "config-copy"} { // the objects the heartbeat looks for
		config := filepath.Join(e.dir, "repo", name)
		if err := os.Rename(config, config+".moved"); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		token  string
		reason bool
	}{{"", false}, {"tok-bob", false}, {"tok-prom", true}, {"tok-root", true}} {
		var header []string
		if tc.token != "" {
			header = []string{"X-Auth-Token", tc.token}
		}
		code, _, body := e.do(t, call{method: "GET", path: "/healthz", header: header})
		if code != http.StatusServiceUnavailable || !strings.Contains(string(body), `"down"`) {
			t.Fatalf("/healthz with the repository gone, token %q: %d %s", tc.token, code, body)
		}
		if named := strings.Contains(string(body), `"reason"`); named != tc.reason {
			t.Errorf("/healthz with token %q: %s; want the reason given: %v", tc.token, body, tc.reason)
		}
	}
}

// writeTokens writes a tokens file and loads it as 'cairn serve --tokens' does.
func writeTokens(t *testing.T, text string) api.Tokens {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	tokens, err := api.LoadTokens(path)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// A marker with the largest limit a client may send lists the rest, never a 500.
func TestPageWithMarkerAndHugeLimit(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	first := e.volume(t, "p1", "a")
	e.volume(t, "p1", "b")
	code, _, body := e.do(t, call{method: "GET", path: "/v3/p1/volumes?marker=" + first.ID + "&limit=9223372036854775807", user: "u1", project: "p1"})
	var got struct{ Volumes []struct{ Name string } }
	if err := json.Unmarshal(body, &got); code != http.StatusOK || err != nil || len(got.Volumes) != 1 || got.Volumes[0].Name != "b" {
		t.Errorf("volumes after the marker with limit 2^63-1: %d %s; want 200 with volume b", code, body)
	}
}

// A list of backups filtered by volume_id finds the backups of a volume that was unmanaged or
// deleted (its backups stay and restore), as Cinder filters on the backups' own volume_id;
// another project's backups of it stay hidden.
func TestBackupListByVolumeIDOfAGoneVolume(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v, b := e.backedUp(t, "p1", "gone")
	admin := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: "admin", Admin: true})
	if _, err := e.svc.UnmanageVolume(admin, v.ID); err != nil {
		t.Fatal(err)
	}
	list := func(user, project string) []string {
		t.Helper()
		code, _, body := e.do(t, call{method: "GET", path: "/v3/" + project + "/backups?volume_id=" + v.ID, user: user, project: project})
		var got struct{ Backups []struct{ ID string } }
		if err := json.Unmarshal(body, &got); code != http.StatusOK || err != nil {
			t.Fatalf("list by volume_id as %s: %d %s", project, code, body)
		}
		var ids []string
		for _, b := range got.Backups {
			ids = append(ids, b.ID)
		}
		return ids
	}
	if ids := list("u1", "p1"); len(ids) != 1 || ids[0] != b.ID {
		t.Errorf("backups of the unmanaged volume by volume_id: %v, want [%s]", ids, b.ID)
	}
	if ids := list("u2", "p2"); len(ids) != 0 {
		t.Errorf("another project lists p1's backups by volume_id: %v", ids)
	}
}

// A page of backups filtered by status goes on from a marker that has left the filter since
// the last page (it was restored, or reset to error), as Cinder pages from the marker's place
// in the order: the next page is the backups after it, which it is not among, and the count
// leaves it out. It used to answer 404, so a client paging through available backups failed
// halfway whenever the last one listed changed state. Another project's backup is still not
// found as a marker, as no backup is.
func TestBackupPageGoesOnFromAMarkerOutsideTheFilter(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	v := e.volume(t, "p1", "data")
	ctx := gateway.WithCaller(context.Background(), gateway.Caller{User: "u1", Project: "p1"})
	var ids []string
	for range 3 {
		b, err := e.svc.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	list := func(project, query string) (int, []string, float64) {
		t.Helper()
		return e.page(t, "u-"+project, project, "backups", query)
	}
	// The first page: the newest available backup.
	if code, page, _ := list("p1", "status=available&limit=1"); code != http.StatusOK || len(page) != 1 || page[0] != ids[2] {
		t.Fatalf("first page: %d %v, want [%s]", code, page, ids[2])
	}
	admin := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: "p1", Admin: true})
	if _, err := e.svc.ResetBackupState(admin, ids[2], "error"); err != nil {
		t.Fatal(err)
	}
	code, page, count := list("p1", "status=available&limit=1&with_count=true&marker="+ids[2])
	if code != http.StatusOK || len(page) != 1 || page[0] != ids[1] || count != 2 {
		t.Errorf("next page from a marker now in error: %d %v count %v, want [%s] count 2", code, page, count, ids[1])
	}
	if code, page, _ := list("p1", "status=available&marker="+ids[2]); code != http.StatusOK || len(page) != 2 || page[0] != ids[1] || page[1] != ids[0] {
		t.Errorf("the rest from a marker now in error: %d %v, want [%s %s]", code, page, ids[1], ids[0])
	}
	if code, _, _ := list("p2", "marker="+ids[1]); code != http.StatusNotFound {
		t.Errorf("another project's backup as a marker: %d, want 404", code)
	}
}

// A page of volumes filtered by status goes on from a marker that has left the filter since
// the last page (a backup of it began: backing-up), as backup lists do and as Cinder does;
// it used to answer 404 halfway through the pages.
func TestVolumePageGoesOnFromAMarkerOutsideTheFilter(t *testing.T) {
	e := newEnv(t, api.Options{Auth: api.AuthNoAuth})
	for _, n := range []string{"a", "b", "c"} {
		e.volume(t, "p1", n)
	}
	list := func(query string) (int, []string, float64) {
		t.Helper()
		return e.page(t, "u1", "p1", "volumes", query)
	}
	code, first, _ := list("status=available&limit=1")
	if code != http.StatusOK || len(first) != 1 {
		t.Fatalf("first page: %d %v", code, first)
	}
	if _, err := e.svc.Index().UpdateVolume(first[0], func(v *index.Volume) error {
		v.Status = index.VolumeBackingUp
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	code, rest, count := list("status=available&with_count=true&marker=" + first[0])
	if code != http.StatusOK || len(rest) != 2 || slices.Contains(rest, first[0]) || count != 2 {
		t.Errorf("the rest from a marker now backing up: %d %v count %v, want the 2 others, count 2", code, rest, count)
	}
}

// An API without tokens or users refuses every request, and says so at start, unless it is
// served on the gateway's socket alone (serve without --listen), where the CLI needs none:
// the warning there sent an admin who ran 'cairn serve' for the CLI looking for a tokens file.
func TestNoTokensWarning(t *testing.T) {
	for _, socketOnly := range []bool{false, true} {
		e := newEnv(t, api.Options{Auth: api.AuthToken, SocketOnly: socketOnly})
		if warned := strings.Contains(e.log.String(), "has no tokens"); warned == socketOnly {
			t.Errorf("socket only %v: warned %v: %s", socketOnly, warned, e.log.String())
		}
	}
}
