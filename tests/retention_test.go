package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// pruneJSON is the part of 'backup prune --format json' the tests read.
type pruneJSON struct {
	DryRun  bool `json:"dry_run"`
	Removed int  `json:"removed"`
	Kept    int  `json:"kept"`
	Backups []struct {
		ID            string   `json:"id"`
		Action        string   `json:"action"`
		Reasons       []string `json:"reasons"`
		IsIncremental bool     `json:"is_incremental"`
		ParentID      string   `json:"parent_id"`
	} `json:"backups"`
	GC *struct {
		PacksDeleted  int   `json:"packs_deleted"`
		PacksRepacked int   `json:"packs_repacked"`
		BytesFreed    int64 `json:"bytes_freed"`
	} `json:"gc"`
}

// TestPruneChain: a full and four incrementals; 'prune --keep-last 2' removes three, the full
// among them. The two kept restore byte-exact, the older of them is now the base of its
// chain, gc frees the space, and check is clean. A dry run before changes nothing.
func TestPruneChain(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 8*mib, 41, testutil.Mixed)
	points := r.chain(vol, 1, 4100)
	// Rewrite the volume whole: the full and the first incremental hold data that no kept
	// backup shares, so gc has whole packs to free.
	testutil.WriteImage(t, vol, 8*mib, 4150, testutil.Mixed)
	points = append(points, pointInTime{sha: testutil.SHA256File(t, vol), backup: r.createBackup(vol, "--incremental")})
	for i := 3; i <= 4; i++ {
		testutil.ScatterWrites(t, vol, 4100+int64(i), 0.005, 4<<10, 64<<10)
		points = append(points, pointInTime{sha: testutil.SHA256File(t, vol), backup: r.createBackup(vol, "--incremental")})
	}
	before := r.stats()

	var dry pruneJSON
	r.mustJSON(&dry, "backup", "prune", vol, "--keep-last", "2", "--dry-run")
	if msg := r.mustFail([]int{2}, "backup", "prune", vol, "--keep-last", "2"); !strings.Contains(msg, "--yes") || !strings.Contains(msg, "remove 3 backups") {
		t.Errorf("prune without a terminal or --yes: %q, want it to say what it would remove and name --yes", msg)
	}
	if !dry.DryRun || dry.Removed != 3 || dry.Kept != 2 || len(r.listBackups()) != 5 {
		t.Fatalf("dry run: %+v and %d backups listed, want 3 to remove, 2 kept, all 5 still there", dry, len(r.listBackups()))
	}

	var res pruneJSON
	r.mustJSON(&res, "backup", "prune", vol, "--keep-last", "2", "--gc", "--yes")
	want := map[string]string{}
	for i, p := range points {
		want[p.backup.ID] = "remove"
		if i >= 3 {
			want[p.backup.ID] = "keep"
		}
	}
	for _, d := range res.Backups {
		if want[d.ID] != d.Action {
			t.Errorf("backup %s: %s, want %s", d.ID, d.Action, want[d.ID])
		}
		if d.Action == "keep" && !strings.Contains(strings.Join(d.Reasons, ","), "last") {
			t.Errorf("kept backup %s: reasons %v, want last", d.ID, d.Reasons)
		}
	}
	if res.Removed != 3 || res.GC == nil || res.GC.PacksDeleted+res.GC.PacksRepacked == 0 {
		t.Fatalf("prune --gc: %+v, want 3 removed and gc freeing space", res)
	}
	left := r.listBackups()
	if len(left) != 2 {
		t.Fatalf("%d backups left, want 2", len(left))
	}
	base, top := r.showBackup(points[3].backup.ID), r.showBackup(points[4].backup.ID)
	if base.IsIncremental || base.ParentID != "" {
		t.Errorf("the older kept backup: is_incremental=%v parent=%q, want the base of its chain", base.IsIncremental, base.ParentID)
	}
	if !top.IsIncremental || top.ParentID != base.ID {
		t.Errorf("the newest backup: is_incremental=%v parent=%q, want an incremental of %s", top.IsIncremental, top.ParentID, base.ID)
	}
	after := r.stats()
	if after.PackBytes >= before.PackBytes {
		t.Errorf("pack bytes %d after prune and gc, %d before: want less", after.PackBytes, before.PackBytes)
	}
	r.checkRestoresToFiles(points[3:], dir)
	r.checkClean()

	// The chain's new shape is in the manifests, not only in this index.
	if err := os.RemoveAll(filepath.Join(r.Dir, "index")); err != nil {
		t.Fatal(err)
	}
	r.mustRun("repo", "rebuild-index")
	if b := r.showBackup(points[3].backup.ID); b.IsIncremental || b.ParentID != "" {
		t.Errorf("after rebuild-index the base is incremental=%v parent=%q", b.IsIncremental, b.ParentID)
	}
	// The seed's rule still holds for delete: the base has a dependant.
	r.mustFail([]int{4}, "backup", "delete", points[3].backup.ID)
	// An incremental taken now follows the newest kept backup.
	testutil.ScatterWrites(t, vol, 4199, 0.005, 4<<10, 64<<10)
	next := r.createBackup(vol, "--incremental")
	if next.ParentID != points[4].backup.ID {
		t.Errorf("incremental after prune: parent %q, want %s", next.ParentID, points[4].backup.ID)
	}
}

// TestPruneMiddle: removing a middle incremental re-links the next kept one to the nearest
// older kept backup of its chain.
func TestPruneMiddle(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 42, testutil.Mixed)
	points := r.chain(vol, 3, 4200)
	// Keep the full (protected) and the newest: the two middle incrementals go.
	r.mustRun("backup", "protect", points[0].backup.ID)
	var res pruneJSON
	r.mustJSON(&res, "backup", "prune", vol, "--keep-last", "1", "--yes")
	if res.Removed != 2 {
		t.Fatalf("prune: removed %d, want the 2 middle incrementals: %+v", res.Removed, res)
	}
	for _, d := range res.Backups {
		if d.ID == points[0].backup.ID && (d.Action != "keep" || strings.Join(d.Reasons, ",") != "protected") {
			t.Errorf("the protected full: %s %v, want keep (protected)", d.Action, d.Reasons)
		}
	}
	top := r.showBackup(points[3].backup.ID)
	if !top.IsIncremental || top.ParentID != points[0].backup.ID {
		t.Errorf("newest: incremental=%v parent=%q, want an incremental of the full %s", top.IsIncremental, top.ParentID, points[0].backup.ID)
	}
	r.mustRun("repo", "gc")
	r.checkRestoresToFiles([]pointInTime{points[0], points[3]}, dir)
	r.checkClean()
}

// TestProtectAndMinAge: a protected backup survives delete, force delete and prune; the
// repository's minimum age refuses young backups unless an admin forces it.
func TestProtectAndMinAge(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 43, testutil.Mixed)
	b := r.createBackup(vol, "--protected")
	if msg := r.mustFail([]int{4}, "backup", "delete", b.ID); !strings.Contains(msg, "protected") || !strings.Contains(msg, "unprotect") {
		t.Errorf("delete of a protected backup: %q, want it to say protected and how to unprotect", msg)
	}
	r.mustFail([]int{4}, "backup", "delete", "--force", b.ID)
	second := r.createBackup(vol)
	var res pruneJSON
	r.mustJSON(&res, "backup", "prune", vol, "--keep-last", "1", "--yes")
	if res.Removed != 0 || len(r.listBackups()) != 2 {
		t.Fatalf("prune removed %d of a protected backup and the newest: %+v", res.Removed, res)
	}
	var shown map[string]any
	r.mustJSON(&shown, "backup", "show", b.ID)
	if shown["protected"] != true {
		t.Errorf("backup show: protected=%v, want true", shown["protected"])
	}
	// The protection is in the manifest: a rebuilt index still has it.
	if err := os.RemoveAll(filepath.Join(r.Dir, "index")); err != nil {
		t.Fatal(err)
	}
	r.mustRun("repo", "rebuild-index")
	r.mustFail([]int{4}, "backup", "delete", b.ID)
	r.mustRun("backup", "unprotect", b.ID)

	r.mustRun("repo", "settings", "--min-age", "1d")
	var st map[string]string
	r.mustJSON(&st, "repo", "settings")
	if st["min_age"] != "24h0m0s" {
		t.Errorf("repo settings: %v, want min_age 24h0m0s", st)
	}
	if msg := r.mustFail([]int{4}, "backup", "delete", second.ID); !strings.Contains(msg, "minimum age") {
		t.Errorf("delete of a young backup: %q, want it to name the minimum age", msg)
	}
	r.mustJSON(&res, "backup", "prune", vol, "--keep-last", "1", "--yes")
	if res.Removed != 0 {
		t.Errorf("prune removed %d backups younger than the minimum age", res.Removed)
	}
	// An admin can force (gateway tests check that nobody else can).
	r.mustJSON(&res, "backup", "prune", vol, "--keep-last", "1", "--force", "--yes")
	if res.Removed != 1 {
		t.Errorf("prune --force removed %d, want the older backup", res.Removed)
	}
	r.mustRun("repo", "settings", "--min-age", "0")
	r.mustRun("backup", "delete", "--yes", second.ID)
	r.mustFail([]int{2}, "backup", "prune", vol)
	r.mustFail([]int{2}, "backup", "prune", "--keep-last", "2")
	r.mustFail([]int{2}, "backup", "prune", "--all", "--keep-within", "soon")
	r.mustFail([]int{2}, "repo", "settings", "--min-age", "-3h")
}

// TestPolicyRunsOnSchedule: a policy every 5 s on a running gateway backs up by itself and
// never keeps more than two backups (plus one in flight); with the gateway stopped for 20 s,
// the missed run happens once when it starts again.
func TestPolicyRunsOnSchedule(t *testing.T) {
	t.Parallel() // long waits on timers and child processes: overlaps the other such tests
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 44, testutil.Mixed)
	r.mustRun("volume", "manage", vol, "--name", "vm1")
	logFile := filepath.Join(dir, "gw.log")
	r.mustRun("policy", "create", "often", "--volume", "vm1", "--schedule", "*:*:0/5", "--incremental", "--keep-last", "2",
		"--verify", "*:*:0/7", "--verify-sample", "50")
	gw := startGateway(t, r, "--log-file", logFile)
	seen := map[string]bool{}
	deadline := time.Now().Add(18 * time.Second)
	for time.Now().Before(deadline) {
		bs := r.listBackups()
		if len(bs) > 3 {
			t.Fatalf("%d backups with --keep-last 2: %+v", len(bs), bs)
		}
		for _, b := range bs {
			seen[b.ID] = true
		}
		time.Sleep(300 * time.Millisecond)
	}
	if len(seen) < 3 {
		t.Fatalf("the policy made %d backups in 18 s of a 5 s schedule, want at least 3\n%s", len(seen), readFile(t, logFile))
	}
	var ps []struct {
		Name         string `json:"name"`
		LastResult   string `json:"last_result"`
		Runs         int    `json:"runs"`
		VerifyResult string `json:"verify_result"`
	}
	r.mustJSON(&ps, "policy", "list")
	if len(ps) != 1 || ps[0].Runs < 3 || (ps[0].LastResult != "succeeded" && ps[0].LastResult != "running") {
		t.Fatalf("policy list: %+v, want one policy with at least 3 runs", ps)
	}
	if ps[0].VerifyResult != "succeeded" && ps[0].VerifyResult != "running" {
		t.Errorf("policy list: verification %q, want a sampled check that succeeded", ps[0].VerifyResult)
	}
	if !strings.Contains(readFile(t, logFile), "policy verification finished") {
		t.Errorf("no sampled verification ran in 18 s of a 7 s verify schedule")
	}
	// A stop in the middle of a run's backup leaves that backup in error, as it must; the
	// test stops the gateway between runs, so every backup it made is available.
	stopBetweenRuns := func() {
		t.Helper()
		waitFor(t, 20*time.Second, "a moment with no policy run in flight", func() bool {
			l := readFile(t, logFile)
			return strings.Count(l, `"msg":"policy run started"`) ==
				strings.Count(l, `"msg":"policy run finished"`)+strings.Count(l, `"msg":"policy run failed"`)
		})
		gw.stop()
	}
	stopBetweenRuns()
	time.Sleep(20 * time.Second)
	start := time.Now()
	gw = startGateway(t, r, "--log-file", logFile)
	waitFor(t, 10*time.Second, "the missed run", func() bool {
		return strings.Count(readFile(t, logFile), "running once now") == 1
	})
	time.Sleep(3 * time.Second)
	if n := strings.Count(readFile(t, logFile), "running once now"); n != 1 {
		t.Errorf("the missed run was reported %d times, want once", n)
	}
	// Runs after the restart: the missed one at start, then the schedule's own.
	runs := 0
	for _, line := range strings.Split(readFile(t, logFile), "\n") {
		var e struct {
			Msg  string    `json:"msg"`
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(line), &e) == nil && e.Msg == "policy run started" && e.Time.After(start) {
			runs++
		}
	}
	if runs < 1 || runs > 2 {
		t.Errorf("%d runs in the 3 s after the missed one started, want the missed run and at most one scheduled", runs)
	}
	stopBetweenRuns()
	// A run the stop interrupted between its backup and its prune leaves one more (it logs
	// "policy run failed": context canceled); the next run prunes it. Otherwise every run
	// finished with its prune.
	started := strings.Count(readFile(t, logFile), `"msg":"policy run started"`)
	ended := strings.Count(readFile(t, logFile), `"msg":"policy run finished"`)
	if bs := r.listBackups(); len(bs) > 3 || (len(bs) == 3 && started == ended) {
		lines := strings.Split(readFile(t, logFile), "\n")
		t.Errorf("%d backups left with --keep-last 2 (%d runs started, %d finished); the log's end:\n%s", len(bs), started, ended,
			strings.Join(lines[max(0, len(lines)-40):], "\n"))
	}
	for _, b := range r.listBackups() {
		if b.Status != "available" {
			t.Errorf("backup %s is %s", b.ID, b.Status)
		}
	}
	r.checkClean()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

// TestProtectionAcrossHosts: two hosts on one bucket. A backup protected on one is refused by
// delete and prune on the other, whose index learned it before the protection; unprotected on
// the first, the second deletes it.
func TestProtectionAcrossHosts(t *testing.T) {
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	a := newS3Repo(t, srv, "prot", nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 45, testutil.Mixed)
	old := a.createBackup(vol)
	b := a.elsewhere()
	if len(b.listBackups()) != 1 {
		t.Fatalf("host b sees %d backups, want 1", len(b.listBackups()))
	}
	a.mustRun("backup", "protect", old.ID)
	if msg := b.mustFail([]int{4}, "backup", "delete", old.ID); !strings.Contains(msg, "protected") {
		t.Errorf("host b deleting a backup host a protected: %q, want it refused as protected", msg)
	}
	testutil.ScatterWrites(t, vol, 4501, 0.01, 4<<10, 64<<10)
	a.createBackup(vol)
	var res pruneJSON
	b.mustJSON(&res, "backup", "prune", "--all", "--keep-last", "1", "--yes")
	if res.Removed != 0 || len(b.listBackups()) != 2 {
		t.Fatalf("host b's prune removed %d backups, one of them protected through host a: %+v", res.Removed, res)
	}
	a.mustRun("backup", "unprotect", old.ID)
	b.mustRun("backup", "delete", "--yes", "--force", old.ID)
	if bs := a.listBackups(); len(bs) != 1 {
		t.Errorf("host a lists %d backups after host b deleted one, want 1", len(bs))
	}
}

// TestPruneSeenFromAnotherHost: a prune on one host re-links the kept incrementals; another
// host's index follows at its next sync, so its parent ids name existing backups.
func TestPruneSeenFromAnotherHost(t *testing.T) {
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	a := newS3Repo(t, srv, "relink", nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 46, testutil.Mixed)
	points := a.chain(vol, 2, 4600)
	b := a.elsewhere()
	if got := b.showBackup(points[2].backup.ID).ParentID; got != points[1].backup.ID {
		t.Fatalf("host b: parent %q, want %s", got, points[1].backup.ID)
	}
	a.mustRun("backup", "protect", points[0].backup.ID)
	var res pruneJSON
	a.mustJSON(&res, "backup", "prune", vol, "--keep-last", "1", "--yes")
	if res.Removed != 1 {
		t.Fatalf("prune removed %d, want the middle incremental", res.Removed)
	}
	top := b.showBackup(points[2].backup.ID)
	if top.ParentID != points[0].backup.ID || !top.IsIncremental {
		t.Errorf("host b after host a's prune: parent %q incremental %v, want %s", top.ParentID, top.IsIncremental, points[0].backup.ID)
	}
	b.restoreMatches(points[2].backup.ID, points[2].sha, dir)
}

// TestPolicyRunSaysWhatItDid: a policy created over a volume with backups made by hand says
// which of them its keep rules leave out (its next run removes them), and its run says what it
// did, volume by volume: its backup, and what its prune removed and kept. Found in a first
// hour by hand: a run removed the day's earlier backups, printing only "succeeded".
func TestPolicyRunSaysWhatItDid(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 45, testutil.Mixed)
	r.mustRun("volume", "manage", vol, "--name", "vm1")
	for range 3 {
		r.createBackup("vm1")
	}
	res := r.run("policy", "create", "nightly", "--volume", "vm1", "--schedule", "daily", "--keep-last", "2")
	if res.Code != 0 || !strings.Contains(res.Stderr, "note: 1 backup already there falls outside policy nightly's keep rules (last 2") ||
		!strings.Contains(res.Stderr, ": 1 of vm1;") {
		t.Fatalf("policy create over 3 backups with --keep-last 2: exit %d, stderr %q: want a note that its next run removes 1", res.Code, res.Stderr)
	}
	out := r.mustRun("policy", "run", "nightly")
	bs := r.listBackups()
	if len(bs) != 2 {
		t.Fatalf("%d backups after the run, want 2", len(bs))
	}
	newest := bs[len(bs)-1]
	if want := "vm1: full " + newest.ID + ", pruned 2 (kept 2)"; !strings.Contains(out, want) {
		t.Fatalf("policy run's output lacks %q:\n%s", want, out)
	}
	var st struct {
		LastDid []struct {
			Volume   string `json:"volume"`
			BackupID string `json:"backup_id"`
			Pruned   int    `json:"pruned"`
			Kept     int    `json:"kept"`
		} `json:"last_did"`
	}
	r.mustJSON(&st, "policy", "show", "nightly")
	if d := st.LastDid; len(d) != 1 || d[0].Volume != "vm1" || d[0].BackupID != newest.ID || d[0].Pruned != 2 || d[0].Kept != 2 {
		t.Fatalf("policy show's last_did: %+v", d)
	}
	got := filepath.Join(dir, "restored.img")
	r.restoreTo(newest.ID, got)
	if a, b := testutil.SHA256File(t, got), testutil.SHA256File(t, vol); a != b {
		t.Fatalf("the policy's backup restored: sha256 %s, want %s", a, b)
	}
	// A policy whose rules leave every backup in place says nothing.
	if res := r.run("policy", "create", "keepall", "--volume", "vm1", "--schedule", "daily", "--keep-last", "5"); res.Code != 0 || strings.Contains(res.Stderr, "note") {
		t.Fatalf("policy create whose rules keep everything: exit %d, stderr %q", res.Code, res.Stderr)
	}
}
