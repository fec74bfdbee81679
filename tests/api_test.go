package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// apiEnv is a gateway with two API listeners on 127.0.0.1 over the same service: one in
// noauth mode and one with tokens, as 'cairn serve' runs them, and the real cinder client.
type apiEnv struct {
	t        *testing.T
	svc      *gateway.Service
	dir      string
	noauth   string // base URL of the noauth listener
	token    string // base URL of the token listener
	cinder   string
	home     string
	adminCtx context.Context
}

// Tokens of the token listener.
const (
	tokenP1    = "tok-p1-member"
	tokenAdmin = "tok-admin"
)

func startAPI(t *testing.T, quota *gateway.Quota) *apiEnv {
	t.Helper()
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), DefaultQuota: quota}
	if _, err := gateway.Init(context.Background(), cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	return apiOn(t, dir, cfg)
}

// apiOn opens a gateway with cfg on its repository (made already), with its volumes' images
// in dir, and serves its API as startAPI does, until the test ends.
func apiOn(t *testing.T, dir string, cfg gateway.Config) *apiEnv {
	t.Helper()
	e := &apiEnv{t: t, cinder: testutil.RequireCommand(t, "cinder"), dir: dir, home: t.TempDir()}
	ctx := context.Background()
	cfg.Workers, cfg.Logger = 2, slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.svc = svc
	svc.StartWorkers(2)
	hbCtx, stopBeats := context.WithCancel(ctx)
	beats := make(chan struct{})
	go func() { svc.RunHeartbeats(hbCtx); close(beats) }()

	tokensFile := filepath.Join(e.dir, "tokens")
	writeFile(t, tokensFile, "# token user project roles\n"+tokenP1+" alice p1 member\n"+tokenAdmin+" root admin admin,member\n")
	tokens, err := api.LoadTokens(tokensFile)
	if err != nil {
		t.Fatal(err)
	}
	na := httptest.NewServer(api.New(svc, api.Options{Auth: api.AuthNoAuth}))
	tk := httptest.NewServer(api.New(svc, api.Options{Auth: api.AuthToken, Tokens: tokens}))
	e.noauth, e.token = na.URL, tk.URL
	t.Cleanup(func() {
		na.Close()
		tk.Close()
		stopBeats()
		<-beats
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := svc.StopWorkers(sctx); err != nil {
			t.Error(err)
		}
		if err := svc.Close(); err != nil {
			t.Error(err)
		}
	})
	e.adminCtx = gateway.WithCaller(ctx, gateway.Caller{User: "admin", Project: "admin", Admin: true})
	return e
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// volume writes an image of size bytes and registers it in project as name.
func (e *apiEnv) volume(project, name string, size int64, pattern testutil.Pattern) *index.Volume {
	e.t.Helper()
	path := filepath.Join(e.dir, name+".img")
	testutil.WriteImage(e.t, path, size, int64(len(name))*7+size, pattern)
	ctx := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: project, Admin: true})
	v, err := e.svc.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// cinderResult is one run of the cinder client.
type cinderResult struct {
	out  string
	err  error
	args []string
}

// run runs the cinder client with auth args (noauth as admin unless given) and args.
func (e *apiEnv) run(auth []string, args ...string) cinderResult {
	e.t.Helper()
	if auth == nil {
		auth = e.asNoauth("admin", "admin")
	}
	full := append(append([]string{}, auth...), args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.cinder, full...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OS_") && !strings.HasPrefix(kv, "HOME=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "HOME="+e.home)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return cinderResult{out: buf.String(), err: err, args: full}
}

func (e *apiEnv) asNoauth(user, project string) []string {
	return []string{"--os-auth-type", "noauth", "--os-user-id", user, "--os-project-id", project,
		"--os-endpoint", e.noauth + "/v3"}
}

func (e *apiEnv) asToken(token string) []string {
	return []string{"--os-auth-type", "admin_token", "--os-token", token, "--os-project-id", "p1",
		"--os-endpoint", e.token + "/v3"}
}

// ok runs cinder and fails the test unless it succeeds.
func (e *apiEnv) ok(auth []string, args ...string) string {
	e.t.Helper()
	r := e.run(auth, args...)
	if r.err != nil {
		e.t.Fatalf("cinder %s: %v\n%s", strings.Join(args, " "), r.err, r.out)
	}
	return r.out
}

// fails runs cinder and fails the test unless it fails with an output matching want.
func (e *apiEnv) fails(want string, auth []string, args ...string) string {
	e.t.Helper()
	r := e.run(auth, args...)
	if r.err == nil {
		e.t.Fatalf("cinder %s succeeded, want a failure matching %q:\n%s", strings.Join(args, " "), want, r.out)
	}
	if !regexp.MustCompile(want).MatchString(r.out) {
		e.t.Fatalf("cinder %s: output does not match %q:\n%s", strings.Join(args, " "), want, r.out)
	}
	return r.out
}

var rowRe = regexp.MustCompile(`^\|\s*(.*?)\s*\|\s*(.*?)\s*\|$`)

// dict parses cinder's "| Property | Value |" table.
func dict(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if mm := rowRe.FindStringSubmatch(strings.TrimSpace(line)); mm != nil && mm[1] != "Property" {
			m[mm[1]] = mm[2]
		}
	}
	return m
}

// table parses a cinder list table into rows keyed by column title.
func table(out string) []map[string]string {
	var head []string
	var rows []map[string]string
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if head == nil {
			head = cells
			continue
		}
		row := map[string]string{}
		for i, c := range cells {
			if i < len(head) {
				row[head[i]] = c
			}
		}
		rows = append(rows, row)
	}
	return rows
}

func column(rows []map[string]string, col string) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r[col])
	}
	return out
}

// nameValues turns a cinder "| Name | Value |" list (absolute-limits) into a map.
func nameValues(rows []map[string]string) map[string]string {
	m := map[string]string{}
	for _, r := range rows {
		m[r["Name"]] = r["Value"]
	}
	return m
}

// waitBackup polls the backup through the index until it reaches status.
func (e *apiEnv) waitBackup(id string, status index.BackupStatus) *index.Backup {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := e.svc.Index().Backup(id)
		if err == nil && b.Status == status {
			return b
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("backup %s: not %s after 60s (now %+v, %v)", id, status, b, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitVolume polls a volume with 'cinder show' until it reaches status.
func (e *apiEnv) waitVolume(id, status string) map[string]string {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		d := dict(e.ok(nil, "show", id))
		if d["status"] == status {
			return d
		}
		if d["status"] == "error" || time.Now().After(deadline) {
			e.t.Fatalf("volume %s: status %s, want %s", id, d["status"], status)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestAPICinderClient drives every backup verb through the real cinder client.
func TestAPICinderClient(t *testing.T) {
	e := startAPI(t, &gateway.Quota{Backups: 10, BackupGigabytes: 1000})
	vol1 := e.volume("admin", "vol1", 8<<20, testutil.Mixed)
	src := testutil.SHA256File(t, filepath.Join(e.dir, "vol1.img"))

	// Volumes.
	vols := table(e.ok(nil, "list"))
	if got := column(vols, "Name"); len(got) != 1 || got[0] != "vol1" || vols[0]["Size"] != "1" || vols[0]["Status"] != "available" {
		t.Fatalf("cinder list: %v", vols)
	}

	// A full backup, by volume name: 202 creating, then available.
	d := dict(e.ok(nil, "backup-create", "--name", "b1", "vol1"))
	b1 := d["id"]
	if d["volume_id"] != vol1.ID || d["name"] != "b1" || b1 == "" {
		t.Fatalf("backup-create: %v", d)
	}
	e.waitBackup(b1, index.BackupAvailable)
	d = dict(e.ok(nil, "backup-show", b1))
	if d["status"] != "available" || d["size"] != "1" || d["is_incremental"] != "False" || d["volume_id"] != vol1.ID {
		t.Fatalf("backup-show: %v", d)
	}
	// An incremental after a change; its parent now has a dependant.
	testutil.ScatterWrites(t, filepath.Join(e.dir, "vol1.img"), 3, 0.05, 4096, 65536)
	src2 := testutil.SHA256File(t, filepath.Join(e.dir, "vol1.img"))
	b2 := dict(e.ok(nil, "backup-create", "--incremental", "--name", "b2", vol1.ID))["id"]
	e.waitBackup(b2, index.BackupAvailable)
	if d := dict(e.ok(nil, "backup-show", "b1")); d["has_dependent_backups"] != "True" {
		t.Fatalf("backup-show b1 by name: %v", d)
	}
	rows := table(e.ok(nil, "backup-list"))
	if ids := column(rows, "ID"); len(ids) != 2 || !strings.Contains(strings.Join(ids, " "), b1) || !strings.Contains(strings.Join(ids, " "), b2) {
		t.Fatalf("backup-list: %v", rows)
	}
	e.fails(`dependent incremental backups`, nil, "backup-delete", b1)

	// Restore to a new volume, and onto a registered volume; sha256 against the source.
	d = dict(e.ok(nil, "backup-restore", b1))
	if d["backup_id"] != b1 || d["volume_id"] == "" {
		t.Fatalf("backup-restore: %v", d)
	}
	e.waitVolume(d["volume_id"], "available")
	e.waitBackup(b1, index.BackupAvailable)
	restored, err := e.svc.Index().Volume(d["volume_id"])
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.SHA256File(t, restored.Path); got != src {
		t.Fatalf("restore of b1 to a new volume: sha256 %s, want %s", got, src)
	}
	target := e.volume("admin", "target", 8<<20, testutil.Sparse)
	d = dict(e.ok(nil, "backup-restore", "--volume", "target", b2))
	if d["volume_id"] != target.ID || d["volume_name"] != "target" {
		t.Fatalf("backup-restore --volume: %v", d)
	}
	e.waitVolume(target.ID, "available")
	e.waitBackup(b2, index.BackupAvailable)
	if got := testutil.SHA256File(t, target.Path); got != src2 {
		t.Fatalf("restore of b2 onto volume target: sha256 %s, want %s", got, src2)
	}

	// A protected backup is refused by the API's delete as by the CLI's, forced or not.
	admin := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: "admin", Admin: true})
	if _, err := e.svc.ProtectBackup(admin, b2, true); err != nil {
		t.Fatal(err)
	}
	e.fails(`protected`, nil, "backup-delete", b2)
	e.fails(`protected`, nil, "backup-delete", "--force", b2)
	if _, err := e.svc.ProtectBackup(admin, b2, false); err != nil {
		t.Fatal(err)
	}

	// Export, delete, import: the backup comes back and still restores.
	exp := dict(e.ok(nil, "backup-export", b2))
	if exp["backup_service"] == "" || exp["backup_url"] == "" {
		t.Fatalf("backup-export: %v", exp)
	}
	if out := e.ok(nil, "backup-delete", b2); !strings.Contains(out, "accepted") {
		t.Fatalf("backup-delete: %s", out)
	}
	e.fails(`(?i)not found|could not be found|no volumebackup with a name or id`, nil, "backup-show", b2)
	d = dict(e.ok(nil, "backup-import", exp["backup_service"], exp["backup_url"]))
	if d["id"] != b2 {
		t.Fatalf("backup-import: %v", d)
	}
	e.waitBackup(b2, index.BackupAvailable)
	e.fails(`(?i)already`, nil, "backup-import", exp["backup_service"], exp["backup_url"])

	// Reset state.
	e.ok(nil, "backup-reset-state", "--state", "error", b2)
	if d := dict(e.ok(nil, "backup-show", b2)); d["status"] != "error" {
		t.Fatalf("after reset-state error: %v", d)
	}
	e.ok(nil, "backup-reset-state", b2)
	if d := dict(e.ok(nil, "backup-show", b2)); d["status"] != "available" {
		t.Fatalf("after reset-state available: %v", d)
	}
	e.fails(`(?i)state "bogus"`, nil, "backup-reset-state", "--state", "bogus", b2)

	// Cancel: force-delete of a creating backup; the volume leaves backing-up.
	// Large enough that the backup still runs through two starts of the cinder client.
	big := e.volume("admin", "big", 1<<30, testutil.Random)
	bb := dict(e.ok(nil, "backup-create", "big"))["id"]
	e.fails(`(?i)being created`, nil, "backup-delete", bb)
	e.ok(nil, "backup-delete", "--force", bb)
	e.fails(`(?i)not found|could not be found|no volumebackup with a name or id`, nil, "backup-show", bb)
	e.waitVolume(big.ID, "available")

	// Services.
	svcs := table(e.ok(nil, "service-list"))
	if got := strings.Join(column(svcs, "Binary"), ","); got != "cairn-api,cairn-backup,cairn-volume" {
		t.Fatalf("service-list binaries: %v", svcs)
	}
	for _, s := range svcs {
		if s["State"] != "up" || s["Status"] != "enabled" || s["Zone"] != "nova" {
			t.Fatalf("service-list: %v", svcs)
		}
	}

	// Snapshots: empty until the snapshots issue.
	if rows := table(e.ok(nil, "snapshot-list")); len(rows) != 0 {
		t.Fatalf("snapshot-list: %v", rows)
	}
}

// TestAPIProjectsAndQuotas: per-project visibility with tokens, admin placing a backup in
// another project, quota show/update/usage and enforcement through the cinder client.
func TestAPIProjectsAndQuotas(t *testing.T) {
	e := startAPI(t, &gateway.Quota{Backups: 10, BackupGigabytes: 1000})
	e.volume("admin", "avol", 4<<20, testutil.Mixed)
	pvol := e.volume("p1", "pvol", 4<<20, testutil.Mixed)
	ab := dict(e.ok(nil, "backup-create", "avol"))["id"]
	e.waitBackup(ab, index.BackupAvailable)

	member := e.asToken(tokenP1)
	// Unknown token: 401.
	e.fails(`(?i)401|credentials|authentication`, e.asToken("nope"), "backup-list")

	// Quota show, update, usage.
	if d := dict(e.ok(nil, "quota-show", "p1")); d["backups"] != "10" || d["backup_gigabytes"] != "1000" {
		t.Fatalf("quota-show defaults: %v", d)
	}
	e.fails(`(?i)only an admin`, member, "quota-update", "--backups", "5", "p1")
	if d := dict(e.ok(nil, "quota-update", "--backups", "1", "--backup-gigabytes", "100", "p1")); d["backups"] != "1" || d["backup_gigabytes"] != "100" {
		t.Fatalf("quota-update: %v", d)
	}
	if d := dict(e.ok(member, "quota-show", "p1")); d["backups"] != "1" {
		t.Fatalf("quota-show by the member: %v", d)
	}
	e.fails(`(?i)only an admin`, member, "quota-show", "admin")

	// The member backs up its volume; the second backup is over quota and writes nothing.
	pb := dict(e.ok(member, "backup-create", "pvol"))["id"]
	e.waitBackup(pb, index.BackupAvailable)
	e.fails(`(?i)maximum number of backups allowed \(1\) exceeded.*\(HTTP 413\)`, member, "backup-create", "pvol")
	usage := table(e.ok(member, "quota-usage", "p1"))
	want := map[string][3]string{"backups": {"1", "0", "1"}, "backup_gigabytes": {"1", "0", "100"}}
	if len(usage) != 2 {
		t.Fatalf("quota-usage: %v", usage)
	}
	for _, u := range usage {
		if w := want[u["Type"]]; [3]string{u["In_use"], u["Reserved"], u["Limit"]} != w {
			t.Fatalf("quota-usage %s: %v, want in_use, reserved, limit %v", u["Type"], u, w)
		}
	}
	// absolute-limits: the same figures under Cinder's names. A member gets its own project's
	// whatever it names (as Cinder); an admin names another project.
	wantLimits := map[string]string{"maxTotalBackups": "1", "totalBackupsUsed": "1",
		"maxTotalBackupGigabytes": "100", "totalBackupGigabytesUsed": "1"}
	for _, args := range [][]string{{"absolute-limits"}, {"absolute-limits", "admin"}} {
		if got := nameValues(table(e.ok(member, args...))); !maps.Equal(got, wantLimits) {
			t.Fatalf("member %v: %v, want %v", args, got, wantLimits)
		}
	}
	if got := nameValues(table(e.ok(nil, "absolute-limits", "p1"))); !maps.Equal(got, wantLimits) {
		t.Fatalf("admin absolute-limits p1: %v, want %v", got, wantLimits)
	}
	if got := nameValues(table(e.ok(nil, "absolute-limits"))); got["maxTotalBackups"] != "10" || got["totalBackupsUsed"] != "1" {
		t.Fatalf("admin absolute-limits of its own project: %v", got)
	}
	e.ok(nil, "quota-update", "--backups", "5", "--backup-gigabytes", "1", "p1")
	e.fails(`backup_gigabytes quota of project p1: requested 1G, quota is 1G and 1G has been consumed`, member, "backup-create", "pvol")

	// The member sees only p1's backups; the admin's backup is not found, not forbidden.
	if ids := column(table(e.ok(member, "backup-list")), "ID"); len(ids) != 1 || ids[0] != pb {
		t.Fatalf("member backup-list: %v", ids)
	}
	e.fails(`(?i)could not be found|no volumebackup`, member, "backup-show", ab)
	e.fails(`(?i)could not be found|no volumebackup`, member, "backup-delete", ab)
	if ids := column(table(e.ok(nil, "backup-list")), "ID"); len(ids) != 1 || ids[0] != ab {
		t.Fatalf("admin backup-list: %v", ids)
	}
	if ids := column(table(e.ok(nil, "backup-list", "--all-tenants")), "ID"); len(ids) != 2 {
		t.Fatalf("admin backup-list --all-tenants: %v", ids)
	}
	if ids := column(table(e.ok(member, "backup-list", "--all-tenants")), "ID"); len(ids) != 1 {
		t.Fatalf("member backup-list --all-tenants: %v", ids)
	}
	// Force-delete is for admins.
	e.fails(`(?i)only an admin`, member, "backup-delete", "--force", pb)
	// Deleting gives the quota back.
	e.ok(member, "backup-delete", pb)
	for _, u := range table(e.ok(member, "quota-usage", "p1")) {
		if u["In_use"] != "0" || u["Reserved"] != "0" {
			t.Fatalf("quota-usage after delete: %v", u)
		}
	}

	// The admin backs up its own volume into project p2 (with p2's credentials): the
	// backup is p2's, counts against p2's quota, and is not in the admin project's list.
	pd := dict(e.ok(e.asNoauth("admin", "p2"), "backup-create", "avol"))
	b, _ := e.svc.Index().Backup(pd["id"])
	if b == nil || b.Project != "p2" {
		t.Fatalf("backup by admin for p2: %+v", b)
	}
	e.waitBackup(pd["id"], index.BackupAvailable)
	if ids := column(table(e.ok(nil, "backup-list")), "ID"); len(ids) != 1 || ids[0] != ab {
		t.Fatalf("admin project's backup-list after the p2 backup: %v", ids)
	}
	for _, u := range table(e.ok(nil, "quota-usage", "p2")) {
		if u["In_use"] != "1" {
			t.Fatalf("quota-usage p2: %v", u)
		}
	}
	// The member cannot reach another project through the URL.
	req, _ := http.NewRequest(http.MethodGet, e.token+"/v3/p2/backups", nil)
	req.Header.Set("X-Auth-Token", tokenP1)
	if resp := do(t, req); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("member GET /v3/p2/backups: %d", resp.StatusCode)
	}
	_ = pvol
}

// TestAPIQuotaConcurrentCreates: concurrent creates cannot overshoot a quota.
func TestAPIQuotaConcurrentCreates(t *testing.T) {
	e := startAPI(t, &gateway.Quota{Backups: 2, BackupGigabytes: 1000})
	var ids []string
	for i := range 6 {
		ids = append(ids, e.volume("admin", fmt.Sprintf("c%d", i), 2<<20, testutil.Mixed).ID)
	}
	var wg sync.WaitGroup
	codes := make([]int, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := fmt.Sprintf(`{"backup": {"volume_id": %q}}`, id)
			req, _ := http.NewRequest(http.MethodPost, e.noauth+"/v3/admin/backups", strings.NewReader(body))
			req.Header.Set("X-User-Id", "admin")
			req.Header.Set("X-Project-Id", "admin")
			codes[i] = do(t, req).StatusCode
		}()
	}
	wg.Wait()
	n := map[int]int{}
	for _, c := range codes {
		n[c]++
	}
	if n[http.StatusAccepted] != 2 || n[http.StatusRequestEntityTooLarge] != 4 {
		t.Fatalf("6 concurrent creates with a quota of 2: statuses %v", codes)
	}
	all, err := e.svc.Index().Backups()
	if err != nil || len(all) != 2 {
		t.Fatalf("backups recorded: %d (%v), want 2", len(all), err)
	}
	for _, b := range all {
		e.waitBackup(b.ID, index.BackupAvailable)
	}
	// Metrics and health. A job is counted when it ends, just after its backup shows
	// available: a scrape in between counts one job less (a CI run of 2026-12-07 met that).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(e.noauth + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(text), `cairn_jobs_total{kind="backup",result="success"} 2`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks 2 successful backup jobs 10 s after both backups were available:\n%s", text)
		}
	}
	if resp := do(t, mustRequest(t, e.noauth+"/healthz")); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}
}

func mustRequest(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// do sends req and returns the response with its body read and closed.
func do(t *testing.T, req *http.Request) *http.Response {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return &http.Response{}
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var v any
	if len(body) > 0 && json.Unmarshal(body, &v) != nil && resp.Header.Get("Content-Type") == "application/json" {
		t.Errorf("%s %s: body is not JSON: %s", req.Method, req.URL, body)
	}
	return resp
}

// namedBackups backs up volume as admin with cinder, once per name, and waits for each.
func (e *apiEnv) namedBackups(volume string, names ...string) []string {
	e.t.Helper()
	var ids []string
	for _, name := range names {
		id := dict(e.ok(nil, "backup-create", "--name", name, volume))["id"]
		e.waitBackup(id, index.BackupAvailable)
		ids = append(ids, id)
	}
	return ids
}

// TestAPIBackupListWithCount: 'cinder backup-list --with-count' (3.45) gets the number of
// backups that match the filters, whatever the page, and prints it under the list; so do
// 'cinder list' and 'cinder snapshot-list'.
func TestAPIBackupListWithCount(t *testing.T) {
	e := startAPI(t, &gateway.Quota{Backups: 10, BackupGigabytes: 1000})
	e.volume("admin", "cvol", 1<<20, testutil.Mixed)
	e.namedBackups("cvol", "c1", "c2", "c3")
	out := e.ok(nil, "backup-list", "--with-count")
	if rows := table(out); len(rows) != 3 || !strings.Contains(out, "Backup in total: 3") {
		t.Fatalf("backup-list --with-count:\n%s", out)
	}
	out = e.ok(nil, "backup-list", "--with-count", "--limit", "1")
	if rows := table(out); len(rows) != 1 || !strings.Contains(out, "Backup in total: 3") {
		t.Fatalf("backup-list --with-count --limit 1:\n%s", out)
	}
	// Volumes and snapshots (none here) are counted too.
	if out := e.ok(nil, "list", "--with-count"); len(table(out)) != 1 || !strings.Contains(out, "Volume in total: 1") {
		t.Fatalf("list --with-count:\n%s", out)
	}
	if out := e.ok(nil, "snapshot-list", "--with-count"); !strings.Contains(out, "Snapshot in total: 0") {
		t.Fatalf("snapshot-list --with-count:\n%s", out)
	}
}

// TestAPIBackupListSorted: 'cinder backup-list --sort key:dir' lists in that order (name is
// sent as display_name), a marker pages through that order, and an unknown key or direction
// is a 400.
func TestAPIBackupListSorted(t *testing.T) {
	e := startAPI(t, &gateway.Quota{Backups: 10, BackupGigabytes: 1000})
	e.volume("admin", "svol", 1<<20, testutil.Mixed)
	ids := e.namedBackups("svol", "s2", "s3", "s1")
	names := func(args ...string) string {
		t.Helper()
		return strings.Join(column(table(e.ok(nil, append([]string{"backup-list"}, args...)...)), "Name"), " ")
	}
	for _, tc := range []struct {
		sort, want string
	}{
		{"name:asc", "s1 s2 s3"}, {"name:desc", "s3 s2 s1"}, {"name", "s3 s2 s1"},
		{"created_at:asc", "s2 s3 s1"}, {"created_at:desc", "s1 s3 s2"},
	} {
		if got := names("--sort", tc.sort); got != tc.want {
			t.Errorf("backup-list --sort %s: %s, want %s", tc.sort, got, tc.want)
		}
	}
	if got := names("--sort", "name:asc", "--marker", ids[2], "--limit", "1"); got != "s2" {
		t.Errorf("backup-list --sort name:asc after s1, one: %s, want s2", got)
	}
	for _, query := range []string{"sort=name:sideways", "sort=password", "sort=name&sort_dir=asc"} {
		req := mustRequest(t, e.noauth+"/v3/admin/backups?"+query)
		req.Header.Set("X-User-Id", "admin")
		req.Header.Set("X-Project-Id", "admin")
		if resp := do(t, req); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("GET backups?%s: %d, want 400", query, resp.StatusCode)
		}
	}
}

// TestAPIVolumeListSorted: 'cinder list --sort key:dir' lists volumes in that order, and a
// marker pages through it.
func TestAPIVolumeListSorted(t *testing.T) {
	e := startAPI(t, nil)
	var ids []string
	for _, name := range []string{"vb", "vc", "va"} {
		ids = append(ids, e.volume("admin", name, 1<<20, testutil.Mixed).ID)
	}
	names := func(args ...string) string {
		t.Helper()
		return strings.Join(column(table(e.ok(nil, append([]string{"list"}, args...)...)), "Name"), " ")
	}
	for _, tc := range []struct {
		sort, want string
	}{{"name:asc", "va vb vc"}, {"name:desc", "vc vb va"}, {"created_at:asc", "vb vc va"}} {
		if got := names("--sort", tc.sort); got != tc.want {
			t.Errorf("list --sort %s: %s, want %s", tc.sort, got, tc.want)
		}
	}
	if got := names("--sort", "name:asc", "--marker", ids[2], "--limit", "1"); got != "vb" {
		t.Errorf("list --sort name:asc after va, one: %s, want vb", got)
	}
}

// TestAPICinderCreateAndDeleteVolumes: 'cinder create --name NAME SIZE' makes an empty volume
// of that many GiB that backs up and restores like any other; 'cinder delete' removes it and
// its image while its backups stay, restorable byte for byte; what cairn cannot make (typed,
// nameless, from a backup) is refused by name, and a volume action it does not serve says
// so rather than that the volume is not found.
func TestAPICinderCreateAndDeleteVolumes(t *testing.T) {
	e := startAPI(t, nil)
	d := dict(e.ok(e.asToken(tokenP1), "create", "--name", "made", "--description", "from cinder", "1"))
	if d["name"] != "made" || d["size"] != "1" || d["status"] != "available" || d["description"] != "from cinder" {
		t.Fatalf("cinder create: %v", d)
	}
	made, err := e.svc.Index().Volume(d["id"])
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(made.Path); err != nil || fi.Size() != 1<<30 || made.Project != "p1" || !made.Managed {
		t.Fatalf("the created volume: %+v, its image: %v %v", made, fi, err)
	}
	if rows := table(e.ok(e.asToken(tokenP1), "list")); len(rows) != 1 || rows[0]["Name"] != "made" {
		t.Fatalf("cinder list in p1: %v", rows)
	}
	e.fails(`already exists`, e.asToken(tokenP1), "create", "--name", "made", "1")
	e.fails(`needs a name`, e.asToken(tokenP1), "create", "1")
	e.fails(`no volume types`, e.asToken(tokenP1), "create", "--name", "typed", "--volume-type", "fast", "1")
	e.fails(`whole number of GiB`, e.asToken(tokenP1), "create", "--name", "zero", "0")
	e.fails(`backup-restore`, e.asToken(tokenP1), "--os-volume-api-version", "3.47", "create", "--name", "frombackup", "--backup-id", "b", "1")
	e.fails(`cairn does not serve POST /volumes/`+made.ID+`/action`, e.asToken(tokenP1), "extend", "made", "2")

	// Data written into it is backed up; the volume goes, the backup stays and restores.
	testutil.WriteImage(t, made.Path, 1<<30, 7, testutil.Sparse)
	testutil.ScatterWrites(t, made.Path, 5, 0.01, 4096, 1<<20)
	src := testutil.SHA256File(t, made.Path)
	b := dict(e.ok(e.asToken(tokenP1), "backup-create", "--name", "mb", "made"))["id"]
	e.waitBackup(b, index.BackupAvailable)
	if out := e.ok(e.asToken(tokenP1), "delete", "made"); !strings.Contains(out, "accepted") {
		t.Fatalf("cinder delete: %s", out)
	}
	if _, err := os.Stat(made.Path); !os.IsNotExist(err) {
		t.Fatalf("the deleted volume's image %s: %v, want gone", made.Path, err)
	}
	if rows := table(e.ok(e.asToken(tokenP1), "list")); len(rows) != 0 {
		t.Fatalf("cinder list after delete: %v", rows)
	}
	d = dict(e.ok(e.asToken(tokenP1), "backup-restore", b))
	e.waitBackup(b, index.BackupAvailable)
	restored, err := e.svc.Index().Volume(d["volume_id"])
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.SHA256File(t, restored.Path); got != src {
		t.Fatalf("the backup of a deleted volume restored with sha256 %s, want %s", got, src)
	}
}

// TestDeleteVolumeWithSnapshotsIsRefused: a volume with snapshots is not deleted (its
// snapshots' clones would stay, under a volume no list shows) unless 'cinder delete --cascade'
// deletes them first, as in Cinder.
func TestDeleteVolumeWithSnapshotsIsRefused(t *testing.T) {
	e := startAPI(t, nil)
	xfs := xfsReflinkDir(t, 300<<20)
	path := filepath.Join(xfs, "vol.img")
	testutil.WriteImage(t, path, 16<<20, 3, testutil.Mixed)
	v, err := e.svc.ManageVolume(e.adminCtx, gateway.ManageRequest{Path: path, Name: "vol"})
	if err != nil {
		t.Fatal(err)
	}
	sn := dict(e.ok(nil, "snapshot-create", "--name", "s1", "vol"))
	rec, err := e.svc.Index().Snapshot(sn["id"])
	if err != nil {
		t.Fatal(err)
	}
	e.fails(`volume vol has 1 snapshots \(`+rec.ID+`\): delete them first`, nil, "delete", "vol")
	if _, err := e.svc.DeleteVolume(e.adminCtx, v.ID, true); err == nil || !strings.Contains(err.Error(), "1 snapshots ("+rec.ID+")") {
		t.Fatalf("delete of a volume with a snapshot: %v, want refused naming it", err)
	}
	if _, err := e.svc.Index().Volume(v.ID); err != nil {
		t.Fatalf("the refused delete removed the volume: %v", err)
	}
	e.ok(nil, "delete", "--cascade", "vol")
	if _, err := os.Stat(rec.Path); !os.IsNotExist(err) {
		t.Fatalf("the snapshot's clone %s after delete --cascade: %v, want gone", rec.Path, err)
	}
	if _, err := e.svc.Index().Volume(v.ID); err == nil {
		t.Fatal("delete --cascade kept the volume")
	}
}
