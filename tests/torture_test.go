package tests

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// The crash-trial harness. Each trial runs one operation of the built binary on a local
// repository and kills it with SIGKILL at a random point: a random delay within the time the
// operation took when it was last left alone, or the moment it leaves a given mark in the
// repository (its first pack, a manifest, a deletion record...). Then the next command must
// recover on its own, 'repo check --read-data' must be clean, every backup that was available
// before the trial (or became available in it) must restore byte-exact, and the operation,
// run again, must work. 'make torture' runs 20 trials of each operation; 'make test' a few.
//
// CAIRN_TORTURE_SEED replays a run's choices (operations, volumes, kill points); the kills
// are timed, so a replay may land a little earlier or later in the same operation.
// CAIRN_TORTURE_TRIALS sets the trials per operation, CAIRN_TORTURE_BUDGET (a duration) how
// long to keep starting rounds.

// The operations a trial kills.
const (
	opBackup      = "backup"
	opIncremental = "incremental"
	opRestore     = "restore"
	opDelete      = "delete"
	opGC          = "gc"
	opRebuild     = "rebuild-index"
)

var tortureOps = []string{opBackup, opIncremental, opRestore, opDelete, opGC, opRebuild}

// tortureKeep is how many available backups the harness keeps between trials: every trial
// restores each of them, so this bounds a trial's time.
const tortureKeep = 4

// tortureConfig is one run's settings.
type tortureConfig struct {
	seed   int64
	trials int           // per operation
	budget time.Duration // no round starts after this
}

func tortureSettings(t *testing.T) tortureConfig {
	t.Helper()
	if os.Getenv("CAIRN_TORTURE_TRIALS") == "" {
		// make test's few trials, bounded by their budget, run beside the other tests, whose
		// serial part is mostly waiting; make torture (trials set) runs each with the machine
		// to itself, so its trials fit their budget.
		t.Parallel()
	}
	c := tortureConfig{seed: time.Now().UnixNano(), trials: 3}
	if testing.Short() {
		c.trials = 1
	}
	if s := os.Getenv("CAIRN_TORTURE_SEED"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_TORTURE_SEED=%q: want an integer", s)
		}
		c.seed = n
	}
	if s := os.Getenv("CAIRN_TORTURE_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("CAIRN_TORTURE_TRIALS=%q: want a count", s)
		}
		c.trials = n
	}
	c.budget = 40 * time.Second
	if c.trials > 3 {
		c.budget = time.Duration(c.trials) * time.Duration(len(tortureOps)) * 4 * time.Second
	}
	if s := os.Getenv("CAIRN_TORTURE_BUDGET"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CAIRN_TORTURE_BUDGET=%q: want a duration", s)
		}
		c.budget = d
	}
	if dl, ok := t.Deadline(); ok {
		c.budget = min(c.budget, time.Until(dl)-time.Minute)
	}
	return c
}

// tortureVolume is an image file and the sha256 of its current contents.
type tortureVolume struct {
	path string
	sha  string
}

// rewrite gives v new contents of a new size (8–16 MiB), drawn from rng.
func (v *tortureVolume) rewrite(t *testing.T, rng *rand.Rand) {
	size := int64(8+rng.IntN(9)) * mib
	testutil.WriteImage(t, v.path, size, rng.Int64(), testutil.Mixed)
	v.sha = testutil.SHA256File(t, v.path)
}

// scatter rewrites fraction of v with 4–64 KiB writes drawn from rng.
func (v *tortureVolume) scatter(t *testing.T, rng *rand.Rand, fraction float64) {
	testutil.ScatterWrites(t, v.path, rng.Int64(), fraction, 4<<10, 64<<10)
	v.sha = testutil.SHA256File(t, v.path)
}

// writeEvents are the marks a backup leaves in the repository whose objects are in dir: its
// first pack and pack index object, and its manifest (the commit point; the kill then comes
// before the record says available). With two gateways either one's backup may leave them
// first: the kill then comes a little early.
func writeEvents(dir string) []tortureEvent {
	return []tortureEvent{
		{"first pack", grows(filepath.Join(dir, "packs"))},
		{"first pack index", grows(filepath.Join(dir, "packindex"))},
		{"manifest", grows(filepath.Join(dir, "manifests"))},
	}
}

// tortureStats is one operation's line of the summary.
type tortureStats struct {
	trials, killed, recovered, clean, restores int
}

// tortureEvent is a mark an operation leaves in the repository, to kill it at.
type tortureEvent struct {
	name  string
	fired func() bool
}

// tortureRun is one trial's operation.
type tortureRun struct {
	op     string
	args   []string
	vol    *tortureVolume // backup, incremental: the volume (a new backup has its sha)
	id     string         // restore, delete: the backup
	target string         // restore: where to
	events []tortureEvent
	point  string // where it was killed, for reports
}

// torture is the harness's state: the repository, the volumes, and every backup that must be
// available with the sha256 it must restore to.
type torture struct {
	t      *testing.T
	cfg    tortureConfig
	rng    *rand.Rand
	r      *cairnRepo
	dir    string
	vols   []*tortureVolume
	known  map[string]string        // backup id → sha256 it restores to
	took   map[string]time.Duration // each operation's last un-killed run
	stats  map[string]*tortureStats // by operation
	trial  int                      // trials so far
	now    *tortureRun              // the trial running, for failure reports
	listed []backupJSON             // 'backup list' since the last command that may change it
}

// TestTorture: crash trials of every operation (see the top of this file).
func TestTorture(t *testing.T) {
	cfg := tortureSettings(t)
	if cfg.trials == 0 {
		t.Skip("CAIRN_TORTURE_TRIALS=0")
	}
	env, enc := tortureEncryption(cfg.seed)
	t.Logf("torture seed %d, %d trials per operation, encryption %s (replay with CAIRN_TORTURE_SEED=%d)", cfg.seed, cfg.trials, enc, cfg.seed)
	tt := &torture{t: t, cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.seed), 0x70727475)), dir: t.TempDir(),
		known: map[string]string{}, took: map[string]time.Duration{}, stats: map[string]*tortureStats{}}
	for _, op := range tortureOps {
		tt.stats[op] = &tortureStats{}
	}
	tt.r = newCairnRepo(t, env)
	start := time.Now()
	tt.setUp()
	rounds := 0
	for ; rounds < cfg.trials; rounds++ {
		if time.Since(start) > cfg.budget {
			t.Logf("time budget %v used up after %d rounds of %d", cfg.budget, rounds, cfg.trials)
			break
		}
		for _, i := range tt.rng.Perm(len(tortureOps)) {
			tt.runTrial(tortureOps[i])
		}
	}
	t.Logf("%d trials in %v\n%s", tt.trial, time.Since(start).Round(time.Millisecond), tt.table())
	requireKills(t, cfg.seed, tt.stats)
}

// tortureEncryption says how a run's repository is made, from its seed: odd seeds encrypted,
// even ones not (pack ids are content hashes in both, but only unencrypted packs of the same
// blobs are the same bytes). It returns the environment to run with and the name to report.
func tortureEncryption(seed int64) ([]string, string) {
	if seed&1 == 1 {
		return []string{"CAIRN_PASSWORD=torture"}, "aes-256-gcm"
	}
	return nil, "none"
}

// requireKills fails a run in which no trial killed its operation mid-way: its kill points
// miss, and it proved nothing.
func requireKills(t *testing.T, seed int64, stats map[string]*tortureStats) {
	t.Helper()
	if !killedMidway(stats) {
		t.Fatalf("seed %d: no trial killed its operation mid-way: the kill points miss", seed)
	}
}

// killedMidway reports whether a trial killed its operation before it ended.
func killedMidway(stats map[string]*tortureStats) bool {
	for _, st := range stats {
		if st.killed > 0 {
			return true
		}
	}
	return false
}

// setUp makes three volumes of 8–16 MiB and runs every operation once un-killed, to measure
// how long each takes.
func (tt *torture) setUp() {
	tt.now = &tortureRun{op: "set-up", point: "not killed"}
	for i := range 3 {
		v := &tortureVolume{path: filepath.Join(tt.dir, fmt.Sprintf("vol%d.img", i))}
		v.rewrite(tt.t, tt.rng)
		tt.vols = append(tt.vols, v)
	}
	for _, v := range tt.vols {
		tt.calibrate(opBackup, v, "--quiet", "--format", "json", "backup", "create", v.path)
	}
	tt.vols[0].scatter(tt.t, tt.rng, 0.02)
	inc := tt.calibrate(opIncremental, tt.vols[0], "--quiet", "--format", "json", "backup", "create", tt.vols[0].path, "--incremental")
	target := filepath.Join(tt.dir, "target.img")
	tt.calibrate(opRestore, nil, "--quiet", "backup", "restore", "--yes", inc, "--to", target)
	if got := testutil.SHA256File(tt.t, target); got != tt.known[inc] {
		tt.failf("restore of %s: sha256 %s, want %s", inc, got, tt.known[inc])
	}
	tt.calibrate(opDelete, nil, "backup", "delete", "--yes", inc)
	delete(tt.known, inc)
	tt.calibrate(opGC, nil, "--quiet", "repo", "gc")
	tt.calibrate(opRebuild, nil, "--quiet", "repo", "rebuild-index")
	tt.checkClean()
	tt.verifyRestores()
	tt.t.Logf("set-up: un-killed runs took %v", tt.took)
}

// calibrate runs an operation to the end, records how long it took, and returns the id of
// the backup it made (when it is a backup, which becomes known with v's sha256).
func (tt *torture) calibrate(op string, v *tortureVolume, args ...string) string {
	start := time.Now()
	out := tt.must(args...)
	tt.took[op] = time.Since(start)
	if v == nil {
		return ""
	}
	return tt.newBackup(out, v)
}

// newBackup reads the JSON 'backup create' printed and records the backup as known.
func (tt *torture) newBackup(out string, v *tortureVolume) string {
	var b backupJSON
	if err := jsonUnmarshal(out, &b); err != nil || b.ID == "" || b.Status != "available" {
		tt.failf("backup create printed %q (%v); want an available backup", out, err)
	}
	tt.known[b.ID] = v.sha
	return b.ID
}

// runTrial is one crash trial of op.
func (tt *torture) runTrial(op string) {
	tt.trial++
	st := tt.stats[op]
	run := tt.prepare(op)
	tt.now = run
	pre := map[string]bool{}
	for _, b := range tt.list() {
		pre[b.ID] = true
	}
	delay, ev := tt.killPoint(run)
	res, killed, took := tt.runKilled(run, delay, ev)
	st.trials++
	if killed {
		st.killed++
	} else {
		run.point += " (it ended first)"
		if res.Code != 0 {
			tt.failf("it ended on its own with exit %d: %s", res.Code, res.Stderr)
		}
		tt.took[op] = took
	}

	// The next command recovers on its own: nothing is left half-done, no backup that was
	// available is lost, and a backup that committed before the kill is available.
	tt.recoverAfter(run, pre)
	tt.checkClean()
	st.clean++
	st.restores += tt.verifyRestores()

	// The operation, run again (or its result, when it was not killed), works.
	if killed {
		res = tt.rerun(run)
	}
	st.restores += tt.finish(run, res)
	st.recovered++
	tt.t.Logf("trial %d %s: %s, took %v", tt.trial, op, run.point, took.Round(time.Millisecond))
	tt.trim()
}

// prepare chooses what a trial of op works on and the marks it can be killed at.
func (tt *torture) prepare(op string) *tortureRun {
	run := &tortureRun{op: op}
	repo := tt.r.Dir
	switch op {
	case opBackup:
		run.vol = tt.vols[tt.rng.IntN(len(tt.vols))]
		if tt.rng.IntN(2) == 0 {
			run.vol.rewrite(tt.t, tt.rng)
		} else {
			run.vol.scatter(tt.t, tt.rng, 0.05)
		}
		run.args = []string{"--quiet", "--format", "json", "backup", "create", run.vol.path}
		run.events = writeEvents(tt.r.Dir)
	case opIncremental:
		run.vol = tt.volumeWithBackup()
		run.vol.scatter(tt.t, tt.rng, 0.02)
		run.args = []string{"--quiet", "--format", "json", "backup", "create", run.vol.path, "--incremental"}
		run.events = writeEvents(tt.r.Dir)
	case opRestore:
		run.id = tt.pick(slices.Sorted(maps.Keys(tt.known)))
		run.target = filepath.Join(tt.dir, "target.img")
		tt.freshTarget(run)
		run.args = []string{"--quiet", "backup", "restore", "--yes", run.id, "--to", run.target}
		run.events = []tortureEvent{{"target written", changed(run.target)}}
	case opDelete:
		for len(tt.known) < 2 {
			tt.newBackup(tt.must("--quiet", "--format", "json", "backup", "create", tt.vols[0].path), tt.vols[0])
		}
		run.id = tt.pick(tt.leaves(true))
		run.args = []string{"backup", "delete", "--yes", run.id}
		run.events = []tortureEvent{{"manifest removed", gone(filepath.Join(repo, "manifests", run.id))}}
	case opGC:
		// Something to reclaim, half the time: a backup deleted just before.
		if len(tt.known) > 2 && tt.rng.IntN(2) == 0 {
			id := tt.pick(tt.leaves(true))
			tt.must("backup", "delete", "--yes", id)
			delete(tt.known, id)
		}
		run.args = []string{"--quiet", "repo", "gc"}
		run.events = []tortureEvent{
			{"deletion record", grows(filepath.Join(repo, "deleted"))},
			{"pack removed", shrinks(filepath.Join(repo, "packs"))},
		}
	case opRebuild:
		run.args = []string{"--quiet", "repo", "rebuild-index"}
	}
	return run
}

// freshTarget removes the restore target half the time, and when it is too small to hold the
// backup (a restore onto an existing file needs one at least as large).
func (tt *torture) freshTarget(run *tortureRun) {
	var size int64
	for _, b := range tt.list() {
		if b.ID == run.id {
			size = b.Size
		}
	}
	fi, err := os.Stat(run.target)
	if err == nil && (fi.Size() < size || tt.rng.IntN(2) == 0) {
		err = os.Remove(run.target)
	}
	if err != nil && !os.IsNotExist(err) {
		tt.t.Fatal(err)
	}
}

// volumeWithBackup picks a volume that has an available backup to be the parent of an
// incremental; when none has, it backs one up first.
func (tt *torture) volumeWithBackup() *tortureVolume {
	has := map[string]bool{}
	for _, b := range tt.list() {
		if b.Status == "available" {
			has[b.VolumeID] = true
		}
	}
	ids := tt.volumeIDs()
	var with []*tortureVolume
	for _, v := range tt.vols {
		if has[ids[v.path]] {
			with = append(with, v)
		}
	}
	if len(with) == 0 {
		v := tt.vols[tt.rng.IntN(len(tt.vols))]
		tt.newBackup(tt.must("--quiet", "--format", "json", "backup", "create", v.path), v)
		return v
	}
	return with[tt.rng.IntN(len(with))]
}

// volumeIDs returns the registered volumes' ids by path.
func (tt *torture) volumeIDs() map[string]string {
	ids := map[string]string{}
	for _, v := range tt.volumes() {
		ids[v.Path] = v.ID
	}
	return ids
}

// volumes returns 'volume list'.
func (tt *torture) volumes() []gwVolume {
	var vols []gwVolume
	if err := jsonUnmarshal(tt.must("--format", "json", "volume", "list"), &vols); err != nil {
		tt.failf("volume list: %v", err)
	}
	return vols
}

// killPoint chooses when to kill run: half the time (when it has marks) right at one of its
// marks or a little after, else at a random point of its last measured duration.
func (tt *torture) killPoint(run *tortureRun) (time.Duration, *tortureEvent) {
	took := max(tt.took[run.op], time.Millisecond)
	if len(run.events) > 0 && tt.rng.IntN(2) == 0 {
		ev := &run.events[tt.rng.IntN(len(run.events))]
		var extra time.Duration
		if tt.rng.IntN(2) == 0 {
			extra = time.Duration(tt.rng.Int64N(int64(took / 10)))
		}
		run.point = fmt.Sprintf("killed %v after its %s", extra.Round(time.Microsecond), ev.name)
		return extra, ev
	}
	delay := time.Duration(tt.rng.Int64N(int64(took)))
	run.point = fmt.Sprintf("killed %v after it started", delay.Round(time.Microsecond))
	return delay, nil
}

// runKilled runs the trial's command, killed as killAt says; a command that cannot start or
// hangs fails the run.
func (tt *torture) runKilled(run *tortureRun, delay time.Duration, ev *tortureEvent) (cairnResult, bool, time.Duration) {
	tt.listed = nil
	res, killed, took, err := killAt(tt.r.Env, append([]string{cairnBin}, run.args...), delay, ev, 0)
	if err != nil {
		tt.failf("%v", err)
	}
	return res, killed, took
}

// killAt runs argv (the binary and its arguments, or a wrapper that execs it) with env and
// kills it with SIGKILL after delay, counted from when ev fires if ev is set (a mark never
// left means no kill). With pause set it stops the process there instead (SIGSTOP) and lets
// it go on after pause. It reports whether a kill took it, and fails (without touching a
// testing.T: trials run it from goroutines) when the command cannot start or does not end
// within cairnCommandTimeout.
func killAt(env, argv []string, delay time.Duration, ev *tortureEvent, pause time.Duration) (cairnResult, bool, time.Duration, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = cairnEnv(env)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return cairnResult{}, false, 0, fmt.Errorf("start: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Kill() // a no-op once it has been waited for
		<-done
	}()
	if ev != nil {
		tick := time.NewTicker(500 * time.Microsecond)
		defer tick.Stop()
	watch:
		for !ev.fired() {
			select {
			case <-done:
				break watch
			case <-tick.C:
			}
		}
	}
	select {
	case <-done:
	case <-time.After(delay):
		if pause == 0 {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			break
		}
		_ = cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(pause)
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	select {
	case <-done:
	case <-time.After(cairnCommandTimeout):
		return cairnResult{}, false, 0, fmt.Errorf("no end within %v", cairnCommandTimeout)
	}
	took := time.Since(start)
	res := cairnResult{Stdout: stdout.String(), Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return res, ws.Signaled() && ws.Signal() == syscall.SIGKILL, took, nil
}

// recoverAfter runs the next command after a trial ('backup list', which opens the index) and
// checks what it shows: no backup or volume left in a running state, every backup known to
// be available still available (but the one deleted), and a backup that appeared available
// only from a backup operation (it committed before the kill).
func (tt *torture) recoverAfter(run *tortureRun, pre map[string]bool) {
	listed := map[string]backupJSON{}
	for _, b := range tt.list() {
		listed[b.ID] = b
		switch b.Status {
		case "available", "error":
		default:
			tt.failf("after the kill, backup %s is %s", b.ID, b.Status)
		}
	}
	for _, v := range tt.volumes() {
		if v.Status != "available" {
			tt.failf("after the kill, volume %s (%s) is %s: %s", v.Name, v.Path, v.Status, v.FailReason)
		}
	}
	for id := range tt.known {
		b, ok := listed[id]
		switch {
		case run.op == opDelete && id == run.id && (!ok || b.Status == "available"):
			if !ok {
				delete(tt.known, id)
			}
		case !ok:
			tt.failf("backup %s, available before the trial, is gone", id)
		case b.Status != "available":
			tt.failf("backup %s, available before the trial, is %s: %s", id, b.Status, b.FailReason)
		}
	}
	for id, b := range listed {
		if b.Status != "available" || tt.known[id] != "" {
			continue
		}
		if pre[id] || run.vol == nil {
			tt.failf("backup %s is available, but it was not before the trial and the trial made no backup", id)
		}
		tt.known[id] = run.vol.sha // committed just before the kill
	}
}

// rerun runs a killed operation again, to the end; a delete only if its backup is still there.
func (tt *torture) rerun(run *tortureRun) cairnResult {
	if run.op == opDelete && tt.known[run.id] == "" {
		return cairnResult{}
	}
	start := time.Now()
	tt.listed = nil
	res := runCairn(tt.t, tt.r.Env, run.args...)
	if res.Code != 0 {
		tt.failf("run again after the kill: exit %d: %s", res.Code, res.Stderr)
	}
	tt.took[run.op] = time.Since(start)
	return res
}

// finish checks what a completed run of the operation did and returns the restores it
// verified: a new backup restores byte-exact, a restore's target matches, a deleted backup is
// gone.
func (tt *torture) finish(run *tortureRun, res cairnResult) int {
	switch run.op {
	case opBackup, opIncremental:
		id := tt.newBackup(res.Stdout, run.vol)
		tt.restoreMatches(id)
		return 1
	case opRestore:
		if got := testutil.SHA256File(tt.t, run.target); got != tt.known[run.id] {
			tt.failf("restore of %s to %s: sha256 %s, want %s", run.id, run.target, got, tt.known[run.id])
		}
		return 1
	case opDelete:
		delete(tt.known, run.id)
		for _, b := range tt.list() {
			if b.ID == run.id {
				tt.failf("backup %s is still listed (%s) after its delete", run.id, b.Status)
			}
		}
	}
	return 0
}

// trim deletes error backups beyond two and available ones beyond tortureKeep (leaves first,
// oldest first), so trials stay short.
func (tt *torture) trim() {
	for {
		all := tt.list()
		errs := 0
		for _, b := range all {
			if b.Status == "error" {
				errs++
			}
		}
		var victim string
		if errs > 2 {
			for _, id := range tt.leaves(false) {
				if tt.known[id] == "" {
					victim = id
					break
				}
			}
		}
		if victim == "" && len(tt.known) > tortureKeep {
			victim = tt.leaves(true)[0]
		}
		if victim == "" {
			return
		}
		tt.must("backup", "delete", "--yes", victim)
		delete(tt.known, victim)
	}
}

// leaves returns the backups no other backup names as its parent, in the order 'backup list'
// gives (oldest first); only available ones when available is set. A failed incremental keeps
// its parent from being deleted (as the Block Storage service counts it a dependent), so when
// every available backup has one, the failed ones that are leaves go first.
func (tt *torture) leaves(available bool) []string {
	for {
		all := tt.list()
		parent := map[string]bool{}
		for _, b := range all {
			parent[b.ParentID] = true
		}
		var out, failed []string
		for _, b := range all {
			switch {
			case parent[b.ID]:
			case !available || b.Status == "available":
				out = append(out, b.ID)
			case b.Status == "error":
				failed = append(failed, b.ID)
			}
		}
		if len(out) > 0 {
			return out
		}
		if len(failed) == 0 {
			tt.failf("no backup to delete among %d", len(all))
		}
		for _, id := range failed {
			tt.must("backup", "delete", "--yes", id)
		}
	}
}

func (tt *torture) pick(ids []string) string {
	if len(ids) == 0 {
		tt.failf("nothing to pick from")
	}
	return ids[tt.rng.IntN(len(ids))]
}

// list returns 'backup list', run again only after a command that may change it.
func (tt *torture) list() []backupJSON {
	if tt.listed == nil {
		var bs []backupJSON
		if err := jsonUnmarshal(tt.must("--format", "json", "backup", "list"), &bs); err != nil {
			tt.failf("backup list: %v", err)
		}
		if bs == nil {
			bs = []backupJSON{}
		}
		tt.listed = bs
	}
	return tt.listed
}

// changes reports whether cairn args may change what 'backup list' shows.
func changes(args []string) bool {
	for _, a := range args {
		switch a {
		case "list", "check", "restore":
			return false
		}
	}
	return true
}

// checkClean runs 'repo check --read-data' and fails on any problem.
func (tt *torture) checkClean() {
	out := tt.must("repo", "check", "--read-data")
	if !checkFoundNothing(out) {
		tt.failf("repo check --read-data:\n%s", out)
	}
}

// verifyRestores restores every known backup to a new file and compares it by sha256.
func (tt *torture) verifyRestores() int {
	ids := slices.Sorted(maps.Keys(tt.known))
	for _, id := range ids {
		tt.restoreMatches(id)
	}
	return len(ids)
}

func (tt *torture) restoreMatches(id string) {
	out := filepath.Join(tt.dir, "verify-"+id+".img")
	tt.must("--quiet", "backup", "restore", "--yes", id, "--to", out)
	if got := testutil.SHA256File(tt.t, out); got != tt.known[id] {
		tt.failf("backup %s restored: sha256 %s, want %s", id, got, tt.known[id])
	}
	if err := os.Remove(out); err != nil {
		tt.t.Fatal(err)
	}
}

// must runs the binary to the end and fails the trial unless it exits 0.
func (tt *torture) must(args ...string) string {
	if changes(args) {
		tt.listed = nil
	}
	res := runCairn(tt.t, tt.r.Env, args...)
	if res.Code != 0 {
		tt.failf("cairn %s: exit %d: %s", strings.Join(args, " "), res.Code, strings.TrimSpace(res.Stderr))
	}
	return res.Stdout
}

// failf stops the run with what failed, where, and how to replay it; the repository is kept
// for a post-mortem.
func (tt *torture) failf(format string, args ...any) {
	tt.t.Helper()
	keep := filepath.Join(os.TempDir(), fmt.Sprintf("cairn-torture-%d-trial-%d", tt.cfg.seed, tt.trial))
	if err := exec.Command("cp", "-a", tt.r.Dir, keep).Run(); err != nil {
		keep = "(not kept: " + err.Error() + ")"
	}
	run := tt.now
	tt.t.Fatalf("torture seed %d, trial %d: %s (cairn %s), %s: %s\nrepository kept in %s\n%s\nreplay: CAIRN_TORTURE_SEED=%d CAIRN_TORTURE_TRIALS=%d go test -count=1 -timeout 60m -run 'TestTorture$' -v ./tests/",
		tt.cfg.seed, tt.trial, run.op, strings.Join(run.args, " "), run.point, fmt.Sprintf(format, args...),
		keep, tt.table(), tt.cfg.seed, tt.cfg.trials)
}

// table is the summary: one line per operation.
func (tt *torture) table() string { return tortureTable(tortureOps, tt.stats) }

// tortureTable is a crash-trial summary: a line for each of ops.
func tortureTable(ops []string, stats map[string]*tortureStats) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s | %6s | %14s | %9s | %11s | %17s\n", "operation", "trials", "killed mid-way", "recovered", "check clean", "restores verified")
	for _, op := range ops {
		st := stats[op]
		fmt.Fprintf(&b, "%-14s | %6d | %14d | %9d | %11d | %17d\n", op, st.trials, st.killed, st.recovered, st.clean, st.restores)
	}
	return b.String()
}

// countFiles counts the objects under dir (temp files of unfinished writes are not objects).
func countFiles(dir string) int {
	n := 0
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			n++
		}
		return nil
	})
	return n
}

// grows fires once dir holds more objects than now.
func grows(dir string) func() bool {
	n := countFiles(dir)
	return func() bool { return countFiles(dir) > n }
}

// shrinks fires once dir holds fewer objects than now.
func shrinks(dir string) func() bool {
	n := countFiles(dir)
	return func() bool { return countFiles(dir) < n }
}

// gone fires once path no longer exists.
func gone(path string) func() bool {
	return func() bool {
		_, err := os.Stat(path)
		return os.IsNotExist(err)
	}
}

// changed fires once path's size or modification time differs from now.
func changed(path string) func() bool {
	before, _ := os.Stat(path)
	return func() bool {
		fi, err := os.Stat(path)
		if err != nil {
			return false
		}
		return before == nil || fi.Size() != before.Size() || !fi.ModTime().Equal(before.ModTime())
	}
}
