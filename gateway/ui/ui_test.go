package ui_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/api"
	"github.com/cairn-backup/cairn/gateway/ui"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// env is a real gateway over a real repository with the console in front of it.
type env struct {
	t     *testing.T
	svc   *gateway.Service
	srv   *httptest.Server
	clock *clock
	dir   string
	log   *bytes.Buffer
}

type clock struct {
	mu sync.Mutex
	at time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.at }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.at = c.at.Add(d)
	c.mu.Unlock()
}

var tokens = api.Tokens{
	"tok-admin": {Caller: gateway.Caller{User: "root", Project: "admin", Admin: true}},
	"tok-alice": {Caller: gateway.Caller{User: "alice", Project: "p1"}},
	"tok-bob":   {Caller: gateway.Caller{User: "bob", Project: "p2"}},
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc.StartWorkers(2)
	e := &env{t: t, svc: svc, clock: &clock{at: time.Now()}, dir: dir, log: &bytes.Buffer{}}
	h, err := ui.New(svc, ui.Options{Tokens: tokens, Now: e.clock.now, Idle: time.Hour, Logger: slog.New(slog.NewTextHandler(e.log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		e.srv.Close()
		_ = svc.StopWorkers(context.Background())
		svc.Close()
	})
	return e
}

// serve puts a console with options o in place of e's.
func (e *env) serve(o ui.Options) {
	e.t.Helper()
	h, err := ui.New(e.svc, o)
	if err != nil {
		e.t.Fatal(err)
	}
	e.srv.Close()
	e.srv = httptest.NewServer(h)
}

// writeUserLine writes line as the users file at path, dated at (a reload looks at the time).
func writeUserLine(t *testing.T, path string, line api.UserLine, at time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(line.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// volume registers an image of size bytes in project.
func (e *env) volume(project, name string, size int) *index.Volume {
	e.t.Helper()
	p := filepath.Join(e.dir, name+".img")
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*13 + len(name))
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		e.t.Fatal(err)
	}
	v, err := e.svc.ManageVolume(gateway.WithCaller(context.Background(), gateway.Caller{User: "root", Project: project, Admin: true}),
		gateway.ManageRequest{Path: p, Name: name})
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

// backup makes an available backup of v in its project.
func (e *env) backup(v *index.Volume) *index.Backup {
	e.t.Helper()
	ctx := gateway.WithCaller(context.Background(), gateway.Caller{User: "root", Project: v.Project, Admin: true})
	b, err := e.svc.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		e.t.Fatal(err)
	}
	if b, err = e.svc.WaitBackup(ctx, b.ID); err != nil || b.Status != index.BackupAvailable {
		e.t.Fatalf("backup %v: %v", b, err)
	}
	return b
}

// waitJob waits up to 20 s for job id, as the token's caller sees it, to succeed; a failed
// job fails the test.
func (e *env) waitJob(token, id string) {
	e.t.Helper()
	ctx := gateway.WithCaller(context.Background(), tokens[token].Caller)
	deadline := time.Now().Add(20 * time.Second)
	for {
		j, err := e.svc.Job(ctx, id)
		if err != nil {
			e.t.Fatal(err)
		}
		if j.State == gateway.JobSucceeded {
			return
		}
		if j.State == gateway.JobFailed || time.Now().After(deadline) {
			e.t.Fatalf("job %+v", j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// browser is a client with its own cookies that does not follow redirects.
type browser struct {
	e    *env
	c    *http.Client
	csrf string
}

func (e *env) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (b *browser) get(path string) (int, string, http.Header) {
	b.e.t.Helper()
	resp, err := b.c.Get(b.e.srv.URL + path)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if m := csrfField.FindSubmatch(body); m != nil {
		b.csrf = string(m[1])
	}
	return resp.StatusCode, string(body), resp.Header
}

// post sends a form as a page of the console does (same Origin, the session's CSRF token).
func (b *browser) post(path string, form url.Values, origin string) (int, string, http.Header) {
	b.e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin == "" {
		origin = b.e.srv.URL
	}
	req.Header.Set("Origin", origin)
	resp, err := b.c.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

func (b *browser) signIn(token string) {
	b.e.t.Helper()
	code, _, h := b.post("/ui/signin", url.Values{"token": {token}}, "")
	if code != http.StatusSeeOther || h.Get("Location") != "/ui/volumes" {
		b.e.t.Fatalf("sign-in: %d %v", code, h)
	}
	b.get("/ui/volumes") // picks up the CSRF token
}

func (b *browser) form(kv ...string) url.Values {
	v := url.Values{"csrf": {b.csrf}}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func TestSignInSessionAndHeaders(t *testing.T) {
	e := newEnv(t)
	b := e.browser()
	code, body, h := b.get("/ui/")
	if code != http.StatusOK || !strings.Contains(body, `name="token"`) {
		t.Fatalf("sign-in form: %d\n%s", code, body)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
		if h.Get(k) != want {
			t.Errorf("%s: %q, want %q", k, h.Get(k), want)
		}
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
	if code, _, _ := b.get("/ui/volumes"); code != http.StatusSeeOther {
		t.Fatalf("volumes without a session: %d", code)
	}
	if code, body, _ := b.post("/ui/signin", url.Values{"token": {"nope"}}, ""); code != http.StatusUnauthorized || !strings.Contains(body, "not valid") {
		t.Fatalf("bad token: %d", code)
	}
	if code, _, _ := b.post("/ui/signin", url.Values{"token": {"tok-alice"}}, "http://evil.example"); code != http.StatusForbidden {
		t.Fatalf("cross-origin sign-in: %d", code)
	}
	_, _, h = b.post("/ui/signin", url.Values{"token": {"tok-alice"}}, "")
	ck := h.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/ui/"} {
		if !strings.Contains(ck, want) {
			t.Errorf("cookie %q lacks %s", ck, want)
		}
	}
	if strings.Contains(ck, "tok-alice") {
		t.Fatal("the token is in the cookie")
	}
	code, body, _ = b.get("/ui/volumes")
	if code != http.StatusOK || strings.Contains(body, "tok-alice") || !strings.Contains(body, "alice") {
		t.Fatalf("volumes: %d", code)
	}
	for _, p := range []string{"/ui/jobs", "/ui/policies", "/ui/services"} {
		if code, body, _ := b.get(p); code != http.StatusOK {
			t.Errorf("%s: %d\n%s", p, code, body)
		}
	}
	if code, _, _ := b.get("/ui/repository"); code != http.StatusForbidden {
		t.Errorf("a member's repository page: %d", code)
	}
	// Idle too long: the session is gone.
	e.clock.add(2 * time.Hour)
	if code, _, _ := b.get("/ui/volumes"); code != http.StatusSeeOther {
		t.Fatalf("after the idle time: %d", code)
	}
	b.signIn("tok-alice")
	if code, _, _ := b.post("/ui/signout", b.form(), ""); code != http.StatusSeeOther {
		t.Fatalf("sign-out: %d", code)
	}
	if code, _, _ := b.get("/ui/volumes"); code != http.StatusSeeOther {
		t.Fatalf("after sign-out: %d", code)
	}
}

func TestProjectsAreSeparate(t *testing.T) {
	e := newEnv(t)
	v1 := e.volume("p1", "alpha", 1<<20)
	v2 := e.volume("p2", "bravo", 1<<20)
	b1 := e.backup(v1)
	bob := e.browser()
	bob.signIn("tok-bob")
	_, body, _ := bob.get("/ui/volumes")
	if strings.Contains(body, "alpha") || !strings.Contains(body, "bravo") {
		t.Fatalf("bob's volumes:\n%s", body)
	}
	for _, p := range []string{"/ui/volumes/" + v1.ID, "/ui/backups/" + b1.ID, "/ui/jobs/backup/" + b1.ID} {
		if code, _, _ := bob.get(p); code != http.StatusNotFound {
			t.Errorf("bob GET %s: %d, want 404", p, code)
		}
	}
	if code, _, _ := bob.post("/ui/backups/"+b1.ID+"/protect", bob.form("protect", "yes", "confirm", "yes"), ""); code != http.StatusNotFound {
		t.Errorf("bob protects alice's backup: %d", code)
	}
	if code, _, _ := bob.post("/ui/volumes/"+v1.ID+"/backup", bob.form("mode", "full", "confirm", "yes"), ""); code != http.StatusNotFound {
		t.Errorf("bob backs up alice's volume: %d", code)
	}
	// What needs attention heads the page, the caller's own only: bob's unprotected bravo,
	// never alice's.
	if !strings.Contains(body, `id="attention"`) || !strings.Contains(body, "volume bravo has no backup") || strings.Contains(body, "volume alpha") {
		t.Errorf("bob's attention box:\n%s", body)
	}
	e.backup(v2)
	if _, body, _ = bob.get("/ui/volumes"); strings.Contains(body, `id="attention"`) {
		t.Errorf("bob's page after bravo's backup still asks for attention:\n%s", body)
	}
	admin := e.browser()
	admin.signIn("tok-admin")
	if code, _, _ := admin.post("/ui/project", admin.form("project", "*"), ""); code != http.StatusSeeOther {
		t.Fatalf("switch: %d", code)
	}
	_, body, _ = admin.get("/ui/volumes")
	if !strings.Contains(body, "alpha") || !strings.Contains(body, "bravo") {
		t.Fatalf("admin, all projects:\n%s", body)
	}
	if code, body, _ := admin.get("/ui/repository"); code != http.StatusOK || !strings.Contains(body, "Dedup ratio") || !strings.Contains(body, "<polyline") {
		t.Fatalf("repository: %d\n%s", code, body)
	}
}

func TestActionsNeedCSRFAndConfirmation(t *testing.T) {
	e := newEnv(t)
	v := e.volume("p1", "alpha", 2<<20)
	bk := e.backup(v)
	a := e.browser()
	a.signIn("tok-alice")
	path := "/ui/backups/" + bk.ID + "/protect"
	if code, _, _ := a.post(path, url.Values{"protect": {"yes"}, "confirm": {"yes"}}, ""); code != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token: %d", code)
	}
	if code, _, _ := a.post(path, a.form("protect", "yes", "confirm", "yes"), "http://evil.example"); code != http.StatusForbidden {
		t.Fatalf("cross-origin POST: %d", code)
	}
	code, body, _ := a.post(path, a.form("protect", "yes"), "")
	if code != http.StatusOK || !strings.Contains(body, `name="confirm" value="yes"`) || !strings.Contains(body, "Protect backup") {
		t.Fatalf("confirmation page: %d\n%s", code, body)
	}
	if b, _ := e.svc.BackupByID(gateway.WithCaller(context.Background(), tokens["tok-alice"].Caller), bk.ID); b.Protected {
		t.Fatal("protected before the confirmation")
	}
	if code, _, _ := a.post(path, a.form("protect", "yes", "confirm", "yes"), ""); code != http.StatusSeeOther {
		t.Fatalf("confirmed protect: %d", code)
	}
	if b, _ := e.svc.BackupByID(gateway.WithCaller(context.Background(), tokens["tok-alice"].Caller), bk.ID); !b.Protected {
		t.Fatal("not protected")
	}
	_, body, _ = a.get("/ui/backups/" + bk.ID)
	if !strings.Contains(body, "Unprotect") {
		t.Fatalf("backup page after protect:\n%s", body)
	}

	// Back up now (incremental), then follow the job to its end.
	code, _, h := a.post("/ui/volumes/"+v.ID+"/backup", a.form("mode", "incremental", "confirm", "yes"), "")
	if code != http.StatusSeeOther || !strings.HasPrefix(h.Get("Location"), "/ui/jobs/backup/") {
		t.Fatalf("backup now: %d %v", code, h)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, body, _ = a.get(h.Get("Location"))
		if strings.Contains(body, `id="job-state">succeeded`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("job page:\n%s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(body, "available:") || !strings.Contains(body, "100 %") {
		t.Fatalf("job page:\n%s", body)
	}
	_, body, _ = a.get("/ui/volumes/" + v.ID)
	if strings.Count(body, "<line class=\"link\"") != 1 || !strings.Contains(body, "<rect") || !strings.Contains(body, "class=\"protected\"") {
		t.Fatalf("timeline:\n%s", body)
	}

	// Prune: the first POST is a dry run that changes nothing.
	code, body, _ = a.post("/ui/volumes/"+v.ID+"/prune", a.form("keep-last", "1"), "")
	if code != http.StatusOK || !strings.Contains(body, `id="prune-preview"`) || !strings.Contains(body, "protected") {
		t.Fatalf("prune preview: %d\n%s", code, body)
	}
	bs, _ := e.svc.ListBackups(gateway.WithCaller(context.Background(), tokens["tok-alice"].Caller), gateway.ListFilter{})
	if len(bs) != 2 {
		t.Fatalf("the dry run removed backups: %d left", len(bs))
	}
	if code, body, _ := a.post("/ui/volumes/"+v.ID+"/prune", a.form("keep-last", "x"), ""); code != http.StatusBadRequest {
		t.Fatalf("bad rule: %d\n%s", code, body)
	}

	// Export is for admins, as in the API (Cinder's backup:backup-export): a member sees no
	// button and is refused; an admin gets a confirmation, then the record. Until 2026-12-05 the
	// console gave a member the record the API refused.
	if _, body, _ := a.get("/ui/backups/" + bk.ID); strings.Contains(body, "export-form") {
		t.Fatalf("a member's backup page offers the export")
	}
	if code, body, _ := a.post("/ui/backups/"+bk.ID+"/export", a.form("confirm", "yes"), ""); code != http.StatusForbidden || strings.Contains(body, "cairn.backup.drivers.local") {
		t.Fatalf("a member's export: %d\n%s", code, body)
	}
	admin := e.browser()
	admin.signIn("tok-admin")
	if code, _, _ := admin.post("/ui/project", admin.form("project", "*"), ""); code != http.StatusSeeOther {
		t.Fatalf("switch: %d", code)
	}
	if _, body, _ := admin.get("/ui/backups/" + bk.ID); !strings.Contains(body, "export-form") {
		t.Fatalf("the admin's backup page offers no export")
	}
	code, body, _ = admin.post("/ui/backups/"+bk.ID+"/export", admin.form("confirm", "yes"), "")
	if code != http.StatusOK || !strings.Contains(body, "cairn.backup.drivers.local") {
		t.Fatalf("the admin's export: %d\n%s", code, body)
	}
	// Only a running backup can be cancelled.
	if code, _, _ := a.post("/ui/backups/"+bk.ID+"/cancel", a.form("confirm", "yes"), ""); code != http.StatusConflict {
		t.Fatalf("cancel of an available backup: %d", code)
	}
}

// Restore onto an existing volume: confirmed, run as a job, and byte-exact (sha256). Another
// project's volume cannot be the target.
func TestRestoreOntoExistingVolume(t *testing.T) {
	e := newEnv(t)
	src := e.volume("p1", "alpha", 3<<20)
	bk := e.backup(src)
	dst := e.volume("p1", "target", 3<<20)
	other := e.volume("p2", "bravo", 3<<20)
	a := e.browser()
	a.signIn("tok-alice")
	path := "/ui/backups/" + bk.ID + "/restore"
	if code, _, _ := a.post(path, a.form("target", "existing", "volume", other.ID, "confirm", "yes"), ""); code != http.StatusNotFound {
		t.Fatalf("restore onto p2's volume: %d", code)
	}
	code, body, _ := a.post(path, a.form("target", "existing", "volume", dst.ID), "")
	if code != http.StatusOK || !strings.Contains(body, "overwriting all of its contents") {
		t.Fatalf("confirmation: %d\n%s", code, body)
	}
	code, _, h := a.post(path, a.form("target", "existing", "volume", dst.ID, "confirm", "yes"), "")
	if code != http.StatusSeeOther || h.Get("Location") != "/ui/jobs/restore/"+bk.ID {
		t.Fatalf("restore: %d %v", code, h)
	}
	e.waitJob("tok-alice", "restore/"+bk.ID)
	if got, want := sha(t, dst.Path), sha(t, src.Path); got != want {
		t.Fatalf("restored volume sha256 %s, want %s", got, want)
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// A confirmed prune removes only backups the confirmation page listed. It ran the rules
// again, so a backup made (or deleted, or unprotected) between the page and the click
// changed what went: here the page says nothing is removed, and the click would have
// removed the oldest backup.
func TestPruneRemovesOnlyWhatItShowed(t *testing.T) {
	e := newEnv(t)
	v := e.volume("p1", "alpha", 1<<20)
	first := e.backup(v)
	e.backup(v)
	a := e.browser()
	a.signIn("tok-alice")
	path := "/ui/volumes/" + v.ID + "/prune"
	shown := regexp.MustCompile(`name="shown" value="([^"]*)"`)
	code, body, _ := a.post(path, a.form("keep-last", "2"), "")
	m := shown.FindStringSubmatch(body)
	if code != http.StatusOK || m == nil || m[1] != "" {
		t.Fatalf("prune preview keeping 2 of 2 backups: %d, shown %q\n%s", code, m, body)
	}
	e.backup(v) // made while the page was open
	ctx := gateway.WithCaller(context.Background(), tokens["tok-alice"].Caller)
	if code, body, _ := a.post(path, a.form("keep-last", "2", "shown", m[1], "confirm", "yes"), ""); code != http.StatusBadRequest || !strings.Contains(body, "not in the list shown") {
		t.Fatalf("confirmed prune after a new backup: %d, want 400 saying the list changed\n%s", code, body)
	}
	if bs, _ := e.svc.ListBackups(ctx, gateway.ListFilter{}); len(bs) != 3 {
		t.Fatalf("the prune removed what its page did not show: %d of 3 backups left", len(bs))
	}
	code, body, _ = a.post(path, a.form("keep-last", "2"), "")
	if m = shown.FindStringSubmatch(body); code != http.StatusOK || m == nil || m[1] != first.ID {
		t.Fatalf("prune preview keeping 2 of 3: %d, shown %q, want %s", code, m, first.ID)
	}
	if code, body, _ := a.post(path, a.form("keep-last", "2", "shown", m[1], "confirm", "yes"), ""); code != http.StatusSeeOther {
		t.Fatalf("confirmed prune: %d\n%s", code, body)
	}
	if _, err := e.svc.BackupByID(ctx, first.ID); err == nil {
		t.Fatal("the backup the page listed for removal is still there")
	}
}

// Signing in again and again, with a valid token, never signs anyone else out: the store
// keeps 1,000 sessions, and 1,000 sign-ins of one user used to push out every other one.
func TestSignInsOfOneUserKeepOthersSignedIn(t *testing.T) {
	e := newEnv(t)
	alice := e.browser()
	alice.signIn("tok-alice")
	for range 1001 {
		e.clock.add(time.Millisecond) // alice's session is the least recently used
		if code, _, _ := e.browser().post("/ui/signin", url.Values{"token": {"tok-bob"}}, ""); code != http.StatusSeeOther {
			t.Fatalf("bob's sign-in: %d", code)
		}
	}
	if code, _, _ := alice.get("/ui/volumes"); code != http.StatusOK {
		t.Fatalf("alice's page after bob signed in 1,001 times: %d, want her still signed in", code)
	}
}

// Why a service is down is the backend's error, which names the repository's path, endpoint
// or bucket: the API's os-services and /healthz tell it to operators only, and so must the
// console. A member's services page showed it.
func TestServicesPageTellsWhyOnlyToAdmins(t *testing.T) {
	e := newEnv(t)
	repoDir := filepath.Join(e.dir, "repo")
	if err := os.Rename(filepath.Join(repoDir, "config"), filepath.Join(repoDir, "config.away")); err != nil {
		t.Fatal(err)
	}
	// A link to itself: the backend's error is the file system's, with the path in it.
	if err := os.Symlink("config", filepath.Join(repoDir, "config")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.Remove(filepath.Join(repoDir, "config"))
		_ = os.Rename(filepath.Join(repoDir, "config.away"), filepath.Join(repoDir, "config"))
	})
	admin := e.browser()
	admin.signIn("tok-admin")
	code, body, _ := admin.get("/ui/services")
	if code != http.StatusOK || !strings.Contains(body, repoDir) {
		t.Fatalf("the admin's services page does not say why cairn-backup is down (%s): %d\n%s", repoDir, code, body)
	}
	alice := e.browser()
	alice.signIn("tok-alice")
	code, body, _ = alice.get("/ui/services")
	if code != http.StatusOK || !strings.Contains(body, "down") {
		t.Fatalf("a member's services page: %d\n%s", code, body)
	}
	if strings.Contains(body, repoDir) {
		t.Fatalf("a member's services page names the repository (%s)", repoDir)
	}
}

// TestConsoleServerErrorsSayNoPathToMembers: the page of a server-side failure tells a member
// the API's words for it and a request id, and an admin and the log (under that id) what
// failed. Before, a member read the error as it was: here, the path of the volume's image.
func TestConsoleServerErrorsSayNoPathToMembers(t *testing.T) {
	e := newEnv(t)
	v := e.volume("p1", "alpha", 1<<20)
	// A directory where the image was: reading it fails with no sentinel, so 500.
	if err := os.Remove(v.Path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(v.Path, 0o700); err != nil {
		t.Fatal(err)
	}
	backUp := func(token string) (int, string) {
		b := e.browser()
		b.signIn(token)
		code, body, _ := b.post("/ui/volumes/"+v.ID+"/backup", b.form("mode", "full", "confirm", "yes"), "")
		return code, body
	}
	code, body := backUp("tok-alice")
	id := regexp.MustCompile(`req-[0-9a-f-]{36}`).FindString(body)
	if code != http.StatusInternalServerError || strings.Contains(body, e.dir) || !strings.Contains(body, "has either erred") || id == "" {
		t.Fatalf("alice's backup of a volume whose image is a directory: %d; want 500 in the API's words with a request id, no path:\n%s", code, body)
	}
	if log := e.log.String(); !strings.Contains(log, id) || !strings.Contains(log, v.Path) {
		t.Errorf("the log does not say what failed in request %s:\n%s", id, log)
	}
	if code, body := backUp("tok-admin"); code != http.StatusInternalServerError || !strings.Contains(body, v.Path) {
		t.Errorf("the admin's backup of a volume whose image is a directory: %d; want 500 naming %s:\n%s", code, v.Path, body)
	}
}

// TestVolumePageShowsItsPathToAdminsOnly: a volume's page names its image's path to an admin,
// and not to a member, who gave none (an admin registered it, or cairn created it in its state
// directory). Before, every member read it.
func TestVolumePageShowsItsPathToAdminsOnly(t *testing.T) {
	e := newEnv(t)
	v := e.volume("p1", "alpha", 1<<20)
	alice := e.browser()
	alice.signIn("tok-alice")
	if code, body, _ := alice.get("/ui/volumes/" + v.ID); code != http.StatusOK || strings.Contains(body, v.Path) || strings.Contains(body, e.dir) {
		t.Errorf("alice's page of her volume: %d, names %s:\n%s", code, v.Path, body)
	}
	admin := e.browser()
	admin.signIn("tok-admin")
	if code, body, _ := admin.get("/ui/volumes/" + v.ID); code != http.StatusOK || !strings.Contains(body, v.Path) {
		t.Errorf("the admin's page of alice's volume: %d, does not name %s:\n%s", code, v.Path, body)
	}
}

// TestConsoleShowsTheBackupsOfADeletedVolume: a deleted volume's backups stay, and the
// console lists the volume (status deleted, by the name its backups recorded) with a page of its backups and no
// actions that need the volume; another project sees neither.
func TestConsoleShowsTheBackupsOfADeletedVolume(t *testing.T) {
	e := newEnv(t)
	v := e.volume("p1", "alpha", 1<<20)
	b := e.backup(v)
	ctx := gateway.WithCaller(context.Background(), gateway.Caller{User: "alice", Project: "p1"})
	if _, err := e.svc.DeleteVolume(ctx, v.ID, true); err != nil {
		t.Fatal(err)
	}
	alice := e.browser()
	alice.signIn("tok-alice")
	if _, body, _ := alice.get("/ui/volumes"); !strings.Contains(body, `href="/ui/volumes/`+v.ID+`">alpha</a>`) || !strings.Contains(body, `status deleted`) {
		t.Fatalf("alice's volumes after the delete do not list it:\n%s", body)
	}
	code, body, _ := alice.get("/ui/volumes/" + v.ID)
	if code != http.StatusOK || !strings.Contains(body, `href="/ui/backups/`+b.ID+`"`) || !strings.Contains(body, "gone-note") || strings.Contains(body, "backup-form") {
		t.Fatalf("the deleted volume's page: %d\n%s", code, body)
	}
	if code, _, _ := alice.get("/ui/backups/" + b.ID); code != http.StatusOK {
		t.Fatalf("its backup's page: %d", code)
	}
	bob := e.browser()
	bob.signIn("tok-bob")
	if code, _, _ := bob.get("/ui/volumes/" + v.ID); code != http.StatusNotFound {
		t.Errorf("bob GET the deleted volume of p1: %d, want 404", code)
	}
	if _, body, _ := bob.get("/ui/volumes"); strings.Contains(body, v.ID) {
		t.Errorf("bob's volumes list p1's deleted volume:\n%s", body)
	}
	if code, _, _ := alice.get("/ui/volumes/00000000-0000-0000-0000-000000000000"); code != http.StatusNotFound {
		t.Errorf("a volume id with no volume and no backups: %d, want 404", code)
	}
	// A live volume's name is not an id: no page of a "deleted" volume by that name.
	e.backup(e.volume("p1", "beta", 1<<20))
	if code, _, _ := alice.get("/ui/volumes/beta"); code != http.StatusNotFound {
		t.Errorf("GET /ui/volumes/NAME of a live volume: %d, want 404", code)
	}
}

// A user of the users file signs in with a name and a password; the session ends as soon as
// the user's password changes, as the API's tokens do.
func TestSignInWithAPassword(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(e.dir, "users")
	writeUsers := func(password string) {
		t.Helper()
		h, err := api.HashPassword(password)
		if err != nil {
			t.Fatal(err)
		}
		later := time.Now().Add(time.Minute) // the same size; a reload must see a new time
		if password == "pw-2" {
			later = later.Add(time.Minute)
		}
		writeUserLine(t, path, api.UserLine{User: "alice", Project: "p1", Roles: []string{"member"}, Hash: h}, later)
	}
	writeUsers("pw-1")
	users, err := api.LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	e.serve(ui.Options{Tokens: tokens, Users: users, Idle: time.Hour})
	b := e.browser()
	if code, body, _ := b.get("/ui/"); code != http.StatusOK || !strings.Contains(body, `name="user"`) || !strings.Contains(body, `name="token"`) {
		t.Fatalf("sign-in form with users and tokens: %d\n%s", code, body)
	}
	if code, body, _ := b.post("/ui/signin", url.Values{"user": {"alice"}, "password": {"wrong"}}, ""); code != http.StatusUnauthorized || !strings.Contains(body, "wrong user name, password or project") {
		t.Fatalf("a wrong password: %d\n%s", code, body)
	}
	if code, _, h := b.post("/ui/signin", url.Values{"user": {"alice"}, "password": {"pw-1"}}, ""); code != http.StatusSeeOther || h.Get("Location") != "/ui/volumes" {
		t.Fatalf("sign-in with a password: %d %v", code, h)
	}
	if code, body, _ := b.get("/ui/volumes"); code != http.StatusOK || !strings.Contains(body, "alice") || !strings.Contains(body, "p1") {
		t.Fatalf("volumes after a password sign-in: %d", code)
	}
	writeUsers("pw-2")
	if code, _, _ := b.get("/ui/volumes"); code != http.StatusSeeOther {
		t.Fatalf("volumes after the password changed: %d, want the sign-in page", code)
	}
	// A token still signs in beside the users.
	b.signIn("tok-bob")
}

// Behind a TLS-terminating reverse proxy (--public-url https://…) a sign-in from the public
// address is taken and its cookie is Secure; one whose Origin is the gateway's own address is
// not from the console's pages there. Without the public URL every sign-in and action from
// behind such a proxy was refused (the browser says https and the proxy's host), and the
// cookie was never Secure.
func TestConsoleBehindATLSProxy(t *testing.T) {
	e := newEnv(t)
	public, err := ui.ParsePublicURL("https://backup.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	e.serve(ui.Options{Tokens: tokens, PublicURL: public})
	b := e.browser()
	code, _, h := b.post("/ui/signin", url.Values{"token": {"tok-alice"}}, "https://backup.example.test")
	if code != http.StatusSeeOther {
		t.Fatalf("sign-in from the public address: %d %v", code, h)
	}
	if c := h.Get("Set-Cookie"); !strings.Contains(c, "Secure") || !strings.Contains(c, "HttpOnly") {
		t.Errorf("the session cookie behind an https proxy: %q, want Secure and HttpOnly", c)
	}
	if code, _, _ := e.browser().post("/ui/signin", url.Values{"token": {"tok-alice"}}, e.srv.URL); code != http.StatusForbidden {
		t.Errorf("sign-in whose Origin is the gateway's own address behind the proxy: %d, want 403", code)
	}
	// Written as a browser's Origin says it, or every form from there was refused.
	for in, want := range map[string]string{"https://Backup.Example.test:443/": "https://backup.example.test",
		"http://backup.example.test:80": "http://backup.example.test", "https://backup.example.test:8443": "https://backup.example.test:8443"} {
		if u, err := ui.ParsePublicURL(in); err != nil || u.String() != want {
			t.Errorf("public URL %q: %v, %v; want %s", in, u, err, want)
		}
	}
	for _, bad := range []string{"backup.example.test", "ftp://backup.example.test", "https://backup.example.test/console", "https://u:p@backup.example.test", "https://:443"} {
		if _, err := ui.ParsePublicURL(bad); err == nil {
			t.Errorf("public URL %q taken", bad)
		}
	}
}

// A session signed in with a password ends when its user's line changes even where the
// password does not: an admin whose admin role was taken away (the hash left as it was)
// kept the admin's rights in the console for the rest of the token's hour, while the API's
// next request with the same token was already a member's.
func TestASessionEndsWhenItsUsersRolesChange(t *testing.T) {
	e := newEnv(t)
	path := filepath.Join(e.dir, "users")
	h, err := api.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	writeRoles := func(roles []string, at time.Time) {
		t.Helper()
		writeUserLine(t, path, api.UserLine{User: "carol", Project: "p1", Roles: roles, Hash: h}, at)
	}
	writeRoles([]string{"admin", "member"}, time.Now().Add(time.Minute))
	users, err := api.LoadUsers(path)
	if err != nil {
		t.Fatal(err)
	}
	e.serve(ui.Options{Tokens: tokens, Users: users, Idle: time.Hour})
	b := e.browser()
	if code, _, hdr := b.post("/ui/signin", url.Values{"user": {"carol"}, "password": {"pw"}}, ""); code != http.StatusSeeOther {
		t.Fatalf("sign-in with a password: %d %v", code, hdr)
	}
	if code, _, _ := b.get("/ui/repository"); code != http.StatusOK {
		t.Fatalf("the repository page to an admin: %d", code)
	}
	writeRoles([]string{"member"}, time.Now().Add(2*time.Minute))
	if code, _, _ := b.get("/ui/repository"); code != http.StatusSeeOther {
		t.Fatalf("the repository page once the user's admin role is gone: %d, want the sign-in page", code)
	}
}

// Verify on a backup's page runs a verification job of the backup: confirmed first, only in
// the backup's project, one at a time, and its log says the backup restores.
func TestVerifyFromTheBackupPage(t *testing.T) {
	e := newEnv(t)
	v := e.volume("p1", "alpha", 2<<20)
	bk := e.backup(v)
	a := e.browser()
	a.signIn("tok-alice")
	if _, body, _ := a.get("/ui/backups/" + bk.ID); !strings.Contains(body, `action="/ui/backups/`+bk.ID+`/verify"`) {
		t.Fatalf("the backup page has no Verify form:\n%s", body)
	}
	path := "/ui/backups/" + bk.ID + "/verify"
	if code, body, _ := a.post(path, a.form(), ""); code != http.StatusOK || !strings.Contains(body, "Verify backup "+bk.ID) {
		t.Fatalf("confirmation: %d\n%s", code, body)
	}
	bob := e.browser()
	bob.signIn("tok-bob")
	if code, _, _ := bob.post(path, bob.form("confirm", "yes"), ""); code != http.StatusNotFound {
		t.Fatalf("bob verifies alice's backup: %d", code)
	}
	code, _, h := a.post(path, a.form("confirm", "yes"), "")
	if code != http.StatusSeeOther || h.Get("Location") != "/ui/jobs/verify/"+bk.ID {
		t.Fatalf("verify: %d %v", code, h)
	}
	e.waitJob("tok-alice", "verify/"+bk.ID)
	if code, body, _ := a.get("/ui/jobs/verify/" + bk.ID); code != http.StatusOK || !strings.Contains(body, "the backup restores") {
		t.Fatalf("the verify job's page: %d\n%s", code, body)
	}
	if _, body, _ := a.get("/ui/backups/" + bk.ID); !strings.Contains(body, "<dt>Last verify</dt>") {
		t.Fatalf("the backup page does not show the verification:\n%s", body)
	}
	// A policy that verifies its new backups says so on the policies page.
	if _, err := e.svc.CreatePolicy(gateway.WithCaller(context.Background(), tokens["tok-alice"].Caller), gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily",
		VerifyNew: true}, VolumeRefs: []string{v.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := a.get("/ui/policies"); !strings.Contains(body, "each verified") {
		t.Fatalf("the policies page does not say the policy verifies its backups:\n%s", body)
	}
	// After a run, what it did: the backup it made, verified, and its prune.
	st, err := e.svc.RunPolicy(gateway.WithCaller(context.Background(), tokens["tok-alice"].Caller), "nightly")
	if err != nil || len(st.LastDid) != 1 {
		t.Fatalf("policy run: %v, %+v", err, st)
	}
	did := fmt.Sprintf(`<a href="/ui/backups/%s">%s</a> (full, verified)`, st.LastDid[0].BackupID, st.LastDid[0].BackupID[:8])
	if _, body, _ := a.get("/ui/policies"); !strings.Contains(body, did) {
		t.Fatalf("the policies page does not say what the run did (%s):\n%s", did, body)
	}
	// One an admin gave hooks says so to the project's member, without the admin's commands.
	admin := tokens["tok-alice"].Caller
	admin.Admin = true
	if _, err := e.svc.CreatePolicy(gateway.WithCaller(context.Background(), admin), gateway.PolicyRequest{Policy: gateway.Policy{Name: "frozen", Schedule: "daily",
		Hooks: gateway.Hooks{Pre: "virsh -c qemu+ssh://hv7/system domfsfreeze db"}}, VolumeRefs: []string{v.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := a.get("/ui/policies"); !strings.Contains(body, "with hooks") || strings.Contains(body, "hv7") {
		t.Fatalf("the policies page of a member: hooks not said, or their command shown:\n%s", body)
	}
	// One that copies its backups elsewhere says so, and where only to admins.
	if _, err := e.svc.CreatePolicy(gateway.WithCaller(context.Background(), admin), gateway.PolicyRequest{Policy: gateway.Policy{Name: "offsite", Schedule: "daily",
		CopyTarget: gateway.CopyTarget{CopyTo: "s3://offsite/cairn"}}, VolumeRefs: []string{v.ID}}); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := a.get("/ui/policies"); !strings.Contains(body, "copied to <code>another repository (set by an admin)</code>") || strings.Contains(body, "s3://offsite") {
		t.Fatalf("the policies page of a member does not say the policy copies its backups, or says where:\n%s", body)
	}
	// One whose object and second copy are both damaged is shown to admins, in their
	// project's view too (whose it was is not known), never left out; not to a member.
	key := hex.EncodeToString([]byte("offsite"))
	for _, sub := range []string{"meta", "meta-copies"} {
		if err := os.WriteFile(filepath.Join(e.dir, "repo", sub, "policies", key), []byte("damaged"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	root := e.browser()
	root.signIn("tok-admin")
	if _, body, _ := root.get("/ui/policies"); !strings.Contains(body, "damaged, its second copy too") || !strings.Contains(body, "cairn policy delete offsite") {
		t.Fatalf("the policies page of an admin does not show the damaged policy:\n%s", body)
	}
	if _, body, _ := a.get("/ui/policies"); strings.Contains(body, "offsite") {
		t.Fatalf("the policies page of a member shows a damaged policy:\n%s", body)
	}
}

// The volume page renames its volume and changes its description; a name another volume of
// the project has is refused with the reason; another project's user cannot.
func TestRenameFromTheVolumePage(t *testing.T) {
	e := newEnv(t)
	v := e.volume("p1", "alpha", 1<<20)
	e.volume("p1", "beta", 1<<20)
	a := e.browser()
	a.signIn("tok-alice")
	if _, body, _ := a.get("/ui/volumes/" + v.ID); !strings.Contains(body, `action="/ui/volumes/`+v.ID+`/rename"`) {
		t.Fatalf("the volume page has no rename form:\n%s", body)
	}
	path := "/ui/volumes/" + v.ID + "/rename"
	if code, _, _ := a.post(path, url.Values{"name": {"x"}}, ""); code != http.StatusForbidden {
		t.Fatalf("a rename without the form's token: %d, want 403", code)
	}
	bob := e.browser()
	bob.signIn("tok-bob")
	if code, _, _ := bob.post(path, bob.form("name", "mine"), ""); code != http.StatusNotFound {
		t.Fatalf("bob renames alice's volume: %d, want 404", code)
	}
	if code, body, _ := a.post(path, a.form("name", "beta", "description", ""), ""); code != http.StatusConflict || !strings.Contains(body, "already exists") {
		t.Fatalf("a rename to another volume's name: %d\n%s", code, body)
	}
	code, _, h := a.post(path, a.form("name", " web ", "description", "the web server"), "")
	if code != http.StatusSeeOther || h.Get("Location") != "/ui/volumes/"+v.ID {
		t.Fatalf("rename: %d %v", code, h)
	}
	_, body, _ := a.get("/ui/volumes/" + v.ID)
	if !strings.Contains(body, "<h1>Volume web</h1>") || !strings.Contains(body, `<dd id="volume-description">the web server</dd>`) || !strings.Contains(body, "now called web") {
		t.Fatalf("the volume page after the rename:\n%s", body)
	}
	// Its tracking box is offered, unticked; ticked on a file system without reflinks, the
	// settings are refused with the reason, and nothing changes.
	if !strings.Contains(body, `<input type="checkbox" name="track-changes" value="yes"> Changed-block tracking`) {
		t.Fatalf("the volume page offers no tracking box, or a ticked one:\n%s", body)
	}
	code, body, _ = a.post(path, a.form("name", "web2", "description", "", "track-offered", "yes", "track-changes", "yes"), "")
	if code != http.StatusBadRequest || !strings.Contains(body, "cannot be tracked") {
		t.Fatalf("tracking asked where it cannot be: %d\n%s", code, body)
	}
	if got, err := e.svc.Index().Volume(v.ID); err != nil || got.Name != "web" || got.TrackChanges {
		t.Fatalf("after refused settings: %+v, %v", got, err)
	}
}

// A copy to another repository shows among the jobs with its destination, to admins, and its
// page links to the backup it copied; a project's member sees no such job.
func TestCopyShowsAsAJob(t *testing.T) {
	e := newEnv(t)
	v := e.volume("admin", "web", 1<<20)
	b := e.backup(v)
	ctx := context.Background()
	dcfg := gateway.Config{Repo: filepath.Join(e.dir, "offsite")}
	if _, err := gateway.Init(ctx, dcfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	dst, err := gateway.Open(ctx, dcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	admin := gateway.WithCaller(ctx, tokens["tok-admin"].Caller)
	if _, err := e.svc.CopyBackup(admin, b.ID, dst, gateway.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	br := e.browser()
	br.signIn("tok-admin")
	if code, body, _ := br.get("/ui/jobs"); code != http.StatusOK || !strings.Contains(body, "/ui/jobs/copy/"+b.ID) || !strings.Contains(body, dst.Location()) {
		t.Fatalf("jobs page after a copy: %d\n%s", code, body)
	}
	if code, body, _ := br.get("/ui/jobs/copy/" + b.ID); code != http.StatusOK || !strings.Contains(body, `href="/ui/backups/`+b.ID+`"`) || !strings.Contains(body, "succeeded") {
		t.Fatalf("the copy's job page: %d\n%s", code, body)
	}
	if code, body, _ := br.get("/ui/backups/" + b.ID); code != http.StatusOK || !strings.Contains(body, `<dd id="copies"><code>`+dst.Location()+`</code>`) {
		t.Fatalf("the backup's page after its copy names no copy: %d\n%s", code, body)
	}
	bob := e.browser()
	bob.signIn("tok-bob")
	if code, _, _ := bob.get("/ui/jobs/copy/" + b.ID); code != http.StatusNotFound {
		t.Errorf("bob sees the copy job: %d", code)
	}
}

// The volumes page's attention box counts a volume a policy backs up as protected, as cairn
// status does (the page hands the overview the policies it read).
func TestAttentionBoxKnowsThePolicies(t *testing.T) {
	e := newEnv(t)
	e.volume("admin", "covered", 1<<20)
	e.volume("admin", "bare", 1<<20)
	admin := gateway.WithCaller(context.Background(), tokens["tok-admin"].Caller)
	if _, err := e.svc.CreatePolicy(admin, gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Schedule: "daily"}, VolumeRefs: []string{"covered"}}); err != nil {
		t.Fatal(err)
	}
	br := e.browser()
	br.signIn("tok-admin")
	_, body, _ := br.get("/ui/volumes")
	if !strings.Contains(body, "volume bare has no backup") || strings.Contains(body, "volume covered has no backup") {
		t.Errorf("attention box with a policy backing up covered:\n%s", body)
	}
}
