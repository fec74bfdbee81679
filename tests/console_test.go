package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
	"github.com/chromedp/chromedp"
)

// The web console is driven here in a real browser, Debian's headless Chromium, through the
// DevTools protocol (chromedp), against 'cairn serve --listen' on a real repository, as a
// person would use it: sign in, read, act, confirm. Screenshots of every page are written to
// the test's temp dir, and to $CAIRN_UI_SCREENSHOTS when set (docs/ui is made that way).

// Console tokens: alice and bob are members of p1 and p2, root is an admin.
const (
	consoleAdmin = "tok-console-admin"
	consoleAlice = "tok-console-alice"
	consoleBob   = "tok-console-bob"
	// consoleScraper reads /metrics only (role metrics), as Prometheus's token does.
	consoleScraper = "tok-console-prometheus"
)

// browser is one Chromium tab on the console.
type browser struct {
	t     *testing.T
	ctx   context.Context
	base  string
	shots []string // directories screenshots go to
}

// startBrowser starts headless Chromium with a laptop's window; it is stopped with the test.
func startBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path := testutil.RequireCommand(t, "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1366, 900), chromedp.Flag("disable-gpu", true), chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, with no timeout
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{t: t, ctx: ctx, base: base, shots: []string{filepath.Join(t.TempDir(), "screenshots")}}
	if d := os.Getenv("CAIRN_UI_SCREENSHOTS"); d != "" {
		b.shots = append(b.shots, d)
	}
	for _, d := range b.shots {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("screenshots in %s", b.shots[0])
	return b
}

// do runs steps, each bounded, failing the test on an error.
func (b *browser) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
}

// js evaluates a JavaScript expression in the page.
func js[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("browser: %s: %v", expr, err)
	}
	return v
}

// open navigates to a console path and waits for its main part.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS("main")))
}

// text is the text of the first element sel matches, "" when there is none.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return js[string](b, fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent.trim()`, sel))
}

// location is the path of the page shown.
func (b *browser) location() string {
	return js[string](b, `window.location.pathname`)
}

// click clicks sel and waits for want to be visible on the page that follows.
func (b *browser) click(sel, want string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel)), chromedp.WaitVisible(chromedp.CSS(want)))
}

// confirm presses the confirmation page's button and waits for want.
func (b *browser) confirm(want string) {
	b.t.Helper()
	b.do("confirm", chromedp.WaitVisible(chromedp.CSS("#confirm")), chromedp.Click(chromedp.CSS("#confirm")),
		chromedp.WaitVisible(chromedp.CSS(want)))
}

// shot saves a screenshot of the whole page as NAME.png.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	for _, d := range b.shots {
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
}

// signIn signs in with token, typing it and pressing Enter as a person would.
func (b *browser) signIn(token string) {
	b.t.Helper()
	b.open("/ui/")
	b.do("sign in", chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), token+"\r"))
	// The sign-in page has a #main h1 too: wait for the volumes page itself, not any page.
	start := time.Now()
	for b.location() != "/ui/volumes" {
		if time.Since(start) > 20*time.Second {
			b.t.Fatalf("after sign-in the browser is at %s: %s", b.location(), b.text("main"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.do("sign in", chromedp.WaitVisible(chromedp.CSS("#main h1")))
	b.t.Logf("signed in after %v", time.Since(start).Round(time.Millisecond))
}

func (b *browser) signOut() {
	b.t.Helper()
	b.click(`form[action="/ui/signout"] button`, `input[name="token"]`)
}

// waitJob follows a job page until the job ends (the page refreshes itself), and returns
// its final state and the progress values it showed on the way.
func (b *browser) waitJob(timeout time.Duration) (string, []float64) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var seen []float64
	for {
		state := b.text("#job-state")
		p := js[float64](b, `(document.querySelector('#job-progress') || {value: -1}).value`)
		if len(seen) == 0 || seen[len(seen)-1] != p {
			seen = append(seen, p)
		}
		if state != "running" && state != "queued" && state != "" {
			return state, seen
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("job still %q after %v: %s", state, timeout, b.text("main"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freePort returns a TCP port on 127.0.0.1 that is free now.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startConsole runs 'cairn serve --listen' with a tokens file and waits for its listener.
func startConsole(t *testing.T, r *cairnRepo, args ...string) string {
	t.Helper()
	tokens := filepath.Join(t.TempDir(), "tokens")
	writeFile(t, tokens, consoleAdmin+" root admin admin\n"+consoleAlice+" alice p1 member\n"+consoleBob+" bob p2 member\n"+consoleScraper+" prometheus - metrics\n")
	addr := freePort(t)
	startGateway(t, r, append([]string{"--listen", addr, "--tokens", tokens}, args...)...)
	base := "http://" + addr
	waitFor(t, 15*time.Second, "the gateway's listener", func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return base
}

func TestConsoleInBrowser(t *testing.T) {
	t.Parallel() // long waits on timers and child processes: overlaps the other such tests
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	p1 := append(append([]string{}, r.Env...), "CAIRN_PROJECT=p1")
	inP1 := func(args ...string) string {
		t.Helper()
		res := runCairn(t, p1, args...)
		if res.Code != 0 {
			t.Fatalf("cairn %v: exit %d: %s", args, res.Code, res.Stderr)
		}
		return res.Stdout
	}
	// vm1 has a chain already (a full and two incrementals); data is what the browser backs
	// up and restores; big is slow enough to cancel; bravo belongs to p2.
	vm1 := filepath.Join(dir, "vm1.img")
	testutil.WriteImage(t, vm1, 24<<20, 1, testutil.Mixed)
	data := filepath.Join(dir, "data.img")
	testutil.WriteImage(t, data, 192<<20, 2, testutil.Random)
	big := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, big, 1536<<20, 3, testutil.Random)
	bravo := filepath.Join(dir, "bravo.img")
	testutil.WriteImage(t, bravo, 4<<20, 4, testutil.Mixed)
	inP1("volume", "manage", vm1, "--name", "vm1")
	inP1("volume", "manage", data, "--name", "data")
	inP1("volume", "manage", big, "--name", "big")
	r.mustRun("--project", "p2", "volume", "manage", bravo, "--name", "bravo")
	inP1("--quiet", "backup", "create", "vm1", "--name", "base")
	baseSHA := testutil.SHA256File(t, vm1)
	testutil.ScatterWrites(t, vm1, 5, 0.05, 4096, 65536)
	inP1("--quiet", "backup", "create", "vm1", "--incremental", "--name", "monday")
	testutil.ScatterWrites(t, vm1, 6, 0.05, 4096, 65536)
	inP1("--quiet", "backup", "create", "vm1", "--incremental", "--name", "tuesday")
	inP1("policy", "create", "nightly", "--volume", "vm1", "--volume", "data", "--schedule", "*-*-* 02:00", "--incremental",
		"--full-every", "7", "--keep-daily", "7", "--keep-weekly", "4")
	r.mustRun("repo", "gc")
	r.mustRun("repo", "check")
	vm1ID := inP1JSONVolume(t, p1, "vm1").ID

	// One fingerprint worker, and 1.5 GiB of big: its backup must still run after the pages
	// between its start and its cancel (768 MiB on two workers ended first once backups got
	// faster).
	base := startConsole(t, r, "--job-workers", "1", "--workers", "1")
	b := startBrowser(t, base)

	// Signed out: the sign-in form, and no page without a session.
	b.open("/ui/volumes")
	if b.location() != "/ui/" || js[int](b, `document.querySelectorAll('input[name="token"]').length`) != 1 {
		t.Fatalf("signed out, /ui/volumes shows %s", b.location())
	}
	b.shot("signin")
	b.do("bad token", chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), "wrong\r"), chromedp.WaitVisible(chromedp.CSS(".error")))

	// alice (p1): her volumes, a volume's chain.
	b.signIn(consoleAlice)
	vols := b.text("#volumes")
	for _, want := range []string{"vm1", "data", "big", "nightly"} {
		if !strings.Contains(vols, want) {
			t.Fatalf("alice's volumes lack %s:\n%s", want, vols)
		}
	}
	if strings.Contains(vols, "bravo") {
		t.Fatalf("alice sees p2's volume:\n%s", vols)
	}
	b.shot("volumes")
	b.click(`#volumes a[href^="/ui/volumes/"]`, "#backup-form") // the first volume by name
	b.open("/ui/volumes/" + vm1ID)
	if n := js[int](b, `document.querySelectorAll('figure.chain line.link').length`); n != 2 {
		t.Fatalf("vm1's chain has %d parent links, want 2", n)
	}
	table := b.text("#backup-table")
	for _, want := range []string{"base", "monday", "tuesday", "full", "incremental", "available"} {
		if !strings.Contains(table, want) {
			t.Fatalf("vm1's backups lack %q:\n%s", want, table)
		}
	}
	b.shot("volume")

	// Back up data now, a full backup, and watch it to available.
	dataID := inP1JSONVolume(t, p1, "data").ID
	b.open("/ui/volumes/" + dataID)
	b.click(`#backup-form input[value="full"]`, `#backup-form`)
	b.click(`#backup-form button[type="submit"]`, "#confirm")
	if q := b.text("#question"); !strings.Contains(q, "full backup") {
		t.Fatalf("confirmation: %s", q)
	}
	b.shot("confirm-backup")
	b.confirm("#job-state")
	jobPath := b.location()
	if !strings.HasPrefix(jobPath, "/ui/jobs/backup/") {
		t.Fatalf("after back up now the browser is at %s", jobPath)
	}
	backupID := strings.TrimPrefix(jobPath, "/ui/jobs/backup/")
	b.shot("job-running")
	state, progress := b.waitJob(2 * time.Minute)
	t.Logf("backup progress seen by the page: %v", progress)
	if state != "succeeded" || progress[len(progress)-1] != 100 {
		t.Fatalf("backup job ended %s at %v %%: %s", state, progress, b.text("#job-log"))
	}
	for i := 1; i < len(progress); i++ {
		if progress[i] < progress[i-1] {
			t.Fatalf("progress went back: %v", progress)
		}
	}
	if log := b.text("#job-log"); !strings.Contains(log, "available:") {
		t.Fatalf("job log:\n%s", log)
	}
	b.shot("job")
	b.click("#job-backup", "#backup-status")
	if st := b.text("#backup-status"); st != "available" {
		t.Fatalf("backup %s is %s", backupID, st)
	}
	b.shot("backup")

	// Restore it to a new volume, and compare by sha256 with the source.
	b.do("restore name", chromedp.SendKeys(chromedp.CSS("#restore-name"), "data-restored"))
	b.click(`#restore-form button[type="submit"]`, "#confirm")
	b.confirm("#job-state")
	if state, _ := b.waitJob(2 * time.Minute); state != "succeeded" {
		t.Fatalf("restore job ended %s: %s", state, b.text("#job-log"))
	}
	restored := gwVolume{}
	if err := jsonOut(runCairn(t, p1, "--format", "json", "volume", "show", "data-restored"), &restored); err != nil {
		t.Fatal(err)
	}
	if got, want := testutil.SHA256File(t, restored.Path), testutil.SHA256File(t, data); got != want {
		t.Fatalf("restored volume %s: sha256 %s, want %s", restored.Path, got, want)
	}

	// Protect and unprotect vm1's full backup.
	var baseID string
	for _, bk := range r.listBackups("--all-projects") {
		if bk.Name == "base" {
			baseID = bk.ID
		}
	}
	b.open("/ui/backups/" + baseID)
	b.click(`#protect-form button`, "#confirm")
	b.confirm("#protected")
	if got := b.text("#protected"); got != "protected" {
		t.Fatalf("after protect: %q", got)
	}
	b.shot("backup-protected")
	b.click(`#protect-form button`, "#confirm")
	b.confirm("#protected")
	if got := b.text("#protected"); got != "no" {
		t.Fatalf("after unprotect: %q", got)
	}

	// Export record: for admins (Cinder's backup:backup-export), so alice has no button.
	if n := js[int](b, `document.querySelectorAll('#export-form').length`); n != 0 {
		t.Fatalf("alice's backup page offers the export record (%d forms)", n)
	}

	// Prune vm1 keeping the last one: a dry run's preview, then back out; nothing changed.
	before := len(r.listBackups("--all-projects"))
	b.open("/ui/volumes/" + vm1ID)
	b.do("keep-last", chromedp.SendKeys(chromedp.CSS(`#prune-form input[name="keep-last"]`), "1"))
	b.click(`#prune-form button[type="submit"]`, "#prune-preview")
	preview := b.text("#prune-preview")
	if strings.Count(preview, "remove") != 2 || strings.Count(preview, "keep") != 1 {
		t.Fatalf("prune preview:\n%s", preview)
	}
	b.shot("prune-preview")
	b.click(`.buttons a`, "#backup-table")
	if after := len(r.listBackups("--all-projects")); after != before {
		t.Fatalf("the prune preview changed the backups: %d, then %d", before, after)
	}

	// CSRF: a POST from the page without the form's token is refused, and acts on nothing.
	st, err := chromedp.Run(b.ctx, chromedp.Evaluate[int](`fetch('/ui/backups/`+baseID+`/protect', {method: 'POST',
		headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'protect=yes&confirm=yes'}).then(r => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || st != http.StatusForbidden {
		t.Fatalf("POST without the CSRF token: %d, %v", st, err)
	}
	if out := r.mustRun("--format", "json", "backup", "show", baseID); strings.Contains(out, `"protected": true`) || strings.Contains(out, `"protected":true`) {
		t.Fatal("the refused POST protected the backup")
	}

	// A backup of the big volume, started by alice and cancelled by an admin.
	b.open("/ui/volumes/" + inP1JSONVolume(t, p1, "big").ID)
	b.click(`#backup-form button[type="submit"]`, "#confirm")
	b.confirm("#job-state")
	bigBackup := strings.TrimPrefix(b.location(), "/ui/jobs/backup/")
	// The job page refreshes itself: its progress bar moves while the backup runs.
	waitFor(t, 20*time.Second, "the job page to show the big backup part done", func() bool {
		p := js[float64](b, `(document.querySelector('#job-progress') || {value: -1}).value`)
		return p > 0 && p < 100 && strings.Contains(b.text("#job-log"), "started")
	})
	b.shot("job-progress")
	b.open("/ui/jobs")
	b.shot("jobs")
	b.open("/ui/policies")
	if !strings.Contains(b.text("#policies"), "nightly") {
		t.Fatalf("policies: %s", b.text("main"))
	}
	b.shot("policies")
	b.signOut()

	b.signIn(consoleAdmin)
	b.open("/ui/backups/" + bigBackup)
	if st := b.text("#backup-status"); st != "creating" {
		t.Fatalf("the big backup is %q, want creating (it ended too soon to cancel)", st)
	}
	b.shot("backup-running")
	b.click(`#cancel-form button`, "#confirm")
	b.confirm("#backup-form")
	if got := backupStatusIn(r, bigBackup); got != "gone" {
		t.Fatalf("cancelled backup is %s", got)
	}
	waitFor(t, 10*time.Second, "the big volume to leave backing-up", func() bool { return inP1JSONVolume(t, p1, "big").Status == "available" })

	// Export record, as an admin: confirmed, then shown.
	b.open("/ui/backups/" + baseID)
	b.click(`#export-form button`, "#confirm")
	b.confirm("#backup-url")
	if svc := b.text("#backup-service"); svc != "cairn.backup.drivers.local" {
		t.Fatalf("export record service %q", svc)
	}

	// The repository, a check run from it, the services.
	b.open("/ui/repository")
	if !strings.Contains(b.text("#repo-stats"), "Dedup ratio") || js[int](b, `document.querySelectorAll('figure.chart polyline').length`) != 1 {
		t.Fatalf("repository page: %s", b.text("main"))
	}
	if !strings.Contains(b.text("#last-gc"), "succeeded") || !strings.Contains(b.text("#last-check"), "no problems") {
		t.Fatalf("last gc and check: %s / %s", b.text("#last-gc"), b.text("#last-check"))
	}
	b.shot("repository")
	b.click(`#check-form input[value="data"]`, "#check-form")
	b.click(`#check-form button`, "#confirm")
	b.confirm("#job-state")
	if state, _ := b.waitJob(2 * time.Minute); state != "succeeded" {
		t.Fatalf("check job ended %s: %s", state, b.text("#job-log"))
	}
	b.open("/ui/services")
	if !strings.Contains(b.text("#services"), "cairn-backup") {
		t.Fatalf("services: %s", b.text("main"))
	}
	b.shot("services")
	b.signOut()

	// bob (p2): no p1 volume, and p1's URLs are not found.
	b.signIn(consoleBob)
	if v := b.text("#volumes"); strings.Contains(v, "vm1") || !strings.Contains(v, "bravo") {
		t.Fatalf("bob's volumes:\n%s", v)
	}
	for _, p := range []string{"/ui/volumes/" + vm1ID, "/ui/backups/" + baseID, "/ui/jobs/backup/" + backupID} {
		b.open(p)
		if h := b.text("main h1"); !strings.HasPrefix(h, "404") {
			t.Fatalf("bob at %s sees %q: %s", p, h, b.text("main"))
		}
	}
	b.shot("not-found")

	// The base backup still restores byte-exact after everything the console did.
	out := filepath.Join(dir, "base.img")
	res := runCairn(t, p1, "--quiet", "backup", "restore", baseID, "--to", out, "--wait")
	if res.Code != 0 {
		t.Fatalf("restore base: %s", res.Stderr)
	}
	if got := testutil.SHA256File(t, out); got != baseSHA {
		t.Fatalf("restored base: sha256 %s, want %s", got, baseSHA)
	}
}

// backupStatusIn is a backup's status in any project, or "gone".
func backupStatusIn(r *cairnRepo, id string) string {
	for _, b := range r.listBackups("--all-projects") {
		if b.ID == id {
			return b.Status
		}
	}
	return "gone"
}

// inP1JSONVolume shows a volume of p1.
func inP1JSONVolume(t *testing.T, env []string, ref string) gwVolume {
	t.Helper()
	var v gwVolume
	if err := jsonOut(runCairn(t, env, "--format", "json", "volume", "show", ref), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// jsonOut decodes a command's JSON output.
func jsonOut(res cairnResult, v any) error {
	if res.Code != 0 {
		return fmt.Errorf("exit %d: %s", res.Code, res.Stderr)
	}
	return json.Unmarshal([]byte(res.Stdout), v)
}

// TestConsoleOnlyOnTCP: the console is served on --listen only, never on the unix socket,
// and --no-ui turns it off there too; the API is unchanged either way.
func TestConsoleOnlyOnTCP(t *testing.T) {
	r := newCairnRepo(t, nil)
	base := startConsole(t, r)
	get := func(c *http.Client, url string) int {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(http.DefaultClient, base+"/ui/"); code != http.StatusOK {
		t.Fatalf("console on --listen: %d", code)
	}
	sock := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(r.Dir, "cairn.sock"))
	}}}
	if code := get(sock, "http://cairn/ui/"); code != http.StatusNotFound {
		t.Fatalf("console on the unix socket: %d, want 404", code)
	}
	if code := get(sock, "http://cairn/healthz"); code != http.StatusOK {
		t.Fatalf("API on the unix socket: %d", code)
	}

	r2 := newCairnRepo(t, nil)
	base2 := startConsole(t, r2, "--no-ui")
	if code := get(http.DefaultClient, base2+"/ui/"); code != http.StatusNotFound {
		t.Fatalf("console with --no-ui: %d, want 404", code)
	}
	if code := get(http.DefaultClient, base2+"/healthz"); code != http.StatusOK {
		t.Fatalf("API with --no-ui: %d", code)
	}
}
