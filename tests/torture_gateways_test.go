package tests

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// Crash trials of two gateways on one repository: two state dirs (each its own index, as two
// hosts have) share a local repository, and every round runs one operation on each at the same
// time, so gc meets a backup of the other gateway, a delete meets its gc, a backup dedups
// against packs the other is writing. One of them, both or neither is killed with SIGKILL at
// a random point, or paused (SIGSTOP) for longer than its lock lives, as a VM is paused; then
// both gateways must agree on what is available, every backup restore byte-exact through
// either, and 'repo check --read-data' be clean. Gateway B runs as another host where a UTS
// namespace can be had, so locks of its dead processes go only when stale. The seed, trial
// count and budget are TestTorture's (CAIRN_TORTURE_SEED, CAIRN_TORTURE_TRIALS,
// CAIRN_TORTURE_BUDGET).

// duoOps are the operations a gateway runs in a round (rebuild-index is the single-gateway
// trials'; it holds no lock and changes only its own index).
var duoOps = []string{opBackup, opIncremental, opRestore, opDelete, opGC}

// duoKeep is how many available backups of its own volumes each gateway keeps between rounds.
const duoKeep = 2

// duoGateway is one of the two: its state dir, its volumes, and the command line its
// commands start with (the binary, or a wrapper that gives it another host name).
type duoGateway struct {
	name string
	r    *cairnRepo
	vols []*tortureVolume
	argv []string
}

// duoLockStale is both gateways' --lock-stale: short, so a round waits little for a lock
// that a process of the other "host" left when it was killed, or that a paused one stopped
// refreshing. A paused run stops for duoPause, long enough for the other to break its lock.
const (
	duoLockStale = 8 * time.Second
	duoPause     = duoLockStale + 2*time.Second
)

// duoBackup is an available backup: what it restores to and whose volume it is.
type duoBackup struct {
	sha string
	gw  int
}

// duoRun is one gateway's operation in a round (id: a backup run's new backup, once known).
// A run chosen for a fault is killed, or paused (SIGSTOP) for longer than its lock stays
// valid; a paused run may then fail because it lost its lock, and is then run again as a
// killed one is.
type duoRun struct {
	*tortureRun
	gw     int
	kill   bool // a fault: kill it, or pause it
	pause  bool
	res    cairnResult
	killed bool // killed, or failed on a lost lock after its pause
	took   time.Duration
	err    error
}

// duo is the harness's state.
type duo struct {
	t   *testing.T
	cfg tortureConfig
	rng *rand.Rand
	dir string // volumes and restore targets
	// objects is the directory that holds the repository's objects: the repository itself,
	// or the S3 server's directory of its bucket and prefix
	objects      string
	gws          [2]*duoGateway
	known        map[string]duoBackup     // backup id → what it restores to
	took         map[string]time.Duration // each operation's last un-killed run
	stats        map[string]*tortureStats // by operation
	round        int                      // rounds so far
	paused, lost int                      // runs paused past their lock's life; those that then lost it
	now          [2]*duoRun               // the round's runs, for failure reports
	// listed is each gateway's 'backup list' since the last command that may change it, vids
	// its volume ids by path (nil: not read yet)
	listed [2][]backupJSON
	vids   [2]map[string]string
	// mustKill: no run has been killed mid-way yet and the planned rounds or the budget are
	// used up, so each round kills both runs, at a random point, without pauses
	mustKill bool
}

// TestTortureTwoGateways: crash trials of two gateways at once on one local repository (see
// above).
func TestTortureTwoGateways(t *testing.T) {
	runDuo(t, "local", func(env []string) (*cairnRepo, string) {
		r := newCairnRepo(t, env)
		return r, r.Dir
	})
}

// TestTortureTwoGatewaysS3: the same on one S3 repository (versitygw on 127.0.0.1), as
// gateways on several hosts share a bucket: interrupted uploads, listings and lock objects
// through the S3 API. The marks are read from the server's own directory.
func TestTortureTwoGatewaysS3(t *testing.T) {
	runDuo(t, "s3", func(env []string) (*cairnRepo, string) {
		srv := testutil.StartS3(t)
		const prefix = "duo"
		return newS3Repo(t, srv, prefix, env), filepath.Join(srv.Dir, srv.Bucket, prefix)
	})
}

// runDuo runs the two-gateway trials on the repository open makes (with env) for gateway A;
// it returns the directory that holds the repository's objects, for marks and post-mortems.
func runDuo(t *testing.T, kind string, open func(env []string) (*cairnRepo, string)) {
	cfg := tortureSettings(t)
	if cfg.trials == 0 {
		t.Skip("CAIRN_TORTURE_TRIALS=0")
	}
	env, enc := tortureEncryption(cfg.seed)
	rounds := max(cfg.trials*len(duoOps)/2, 4)
	t.Logf("two-gateway torture (%s) seed %d, %d rounds, encryption %s (replay with CAIRN_TORTURE_SEED=%d)", kind, cfg.seed, rounds, enc, cfg.seed)
	d := &duo{t: t, cfg: cfg, rng: rand.New(rand.NewPCG(uint64(cfg.seed), 0x64756f)), dir: t.TempDir(),
		known: map[string]duoBackup{}, took: map[string]time.Duration{}, stats: map[string]*tortureStats{}}
	for _, op := range duoOps {
		d.stats[op] = &tortureStats{}
	}
	a, objects := open(append(env, "CAIRN_LOCK_STALE="+duoLockStale.String()))
	d.objects = objects
	d.gws = [2]*duoGateway{{name: "A", r: a, argv: []string{cairnBin}}, {name: "B", r: a.elsewhere(), argv: []string{cairnBin}}}
	// Gateway B runs as another host where it can (root: a UTS namespace of its own), so
	// neither can tell whether the other's processes live and a lock they leave is broken
	// only once stale; elsewhere both are this host, and a dead process's lock goes at once.
	if out, err := exec.Command("unshare", "-u", "sh", "-c", "hostname cairn-gw-b && hostname").Output(); err == nil && strings.TrimSpace(string(out)) == "cairn-gw-b" {
		d.gws[1].argv = []string{"unshare", "-u", "sh", "-c", `hostname cairn-gw-b && exec "$0" "$@"`, cairnBin}
		t.Logf("gateway B runs as host cairn-gw-b")
	} else {
		t.Logf("gateway B runs as this host: no UTS namespace (%v)", err)
	}
	start := time.Now()
	d.setUp()
	done := 0
	for ; ; done++ {
		over := time.Since(start) > cfg.budget
		if done < rounds && !over {
			d.runRound()
			continue
		}
		if killedMidway(d.stats) {
			if done < rounds {
				t.Logf("time budget %v used up after %d rounds of %d", cfg.budget, done, rounds)
			}
			break
		}
		// A short run (make test's) can end with every kill landing after its run ended,
		// proving nothing: rounds that kill both runs go on, for up to another budget.
		if time.Since(start) > 2*cfg.budget {
			break
		}
		if !d.mustKill {
			t.Logf("no run killed mid-way after %d rounds: rounds that kill both runs follow", done)
			d.mustKill = true
		}
		d.runRound()
	}
	t.Logf("%d rounds in %v; %d runs paused for %v (past their lock's life), %d of them then found their lock lost and stopped\n%s",
		done, time.Since(start).Round(time.Millisecond), d.paused, duoPause, d.lost, tortureTable(duoOps, d.stats))
	requireKills(t, cfg.seed, d.stats)
}

// setUp gives each gateway two volumes of 8–16 MiB, backs each up through its gateway, and
// times one un-killed run of every operation.
func (d *duo) setUp() {
	for g, gw := range d.gws {
		for i := range 2 {
			v := &tortureVolume{path: filepath.Join(d.dir, fmt.Sprintf("%s-vol%d.img", gw.name, i))}
			v.rewrite(d.t, d.rng)
			gw.vols = append(gw.vols, v)
			start := time.Now()
			d.newBackup(g, d.must(g, "--quiet", "--format", "json", "backup", "create", v.path), v)
			d.took[opBackup] = time.Since(start)
		}
	}
	v := d.gws[1].vols[0]
	v.scatter(d.t, d.rng, 0.02)
	start := time.Now()
	inc := d.newBackup(1, d.must(1, "--quiet", "--format", "json", "backup", "create", v.path, "--incremental"), v)
	d.took[opIncremental] = time.Since(start)
	start = time.Now()
	d.restoreMatches(0, inc)
	d.took[opRestore] = time.Since(start)
	start = time.Now()
	d.must(0, "backup", "delete", "--yes", inc)
	d.took[opDelete] = time.Since(start)
	delete(d.known, inc)
	start = time.Now()
	d.must(1, "--quiet", "repo", "gc")
	d.took[opGC] = time.Since(start)
	d.checkClean()
	d.t.Logf("set-up: un-killed runs took %v", d.took)
}

// runRound is one round: an operation on each gateway at once, killed as chosen.
func (d *duo) runRound() {
	d.round++
	d.now = [2]*duoRun{}
	busy := map[string]bool{} // backups the first gateway's run uses: the second leaves them be
	for g := range d.gws {
		run := d.prepare(g, busy)
		d.now[g] = run
	}
	faults := d.rng.IntN(4)
	if d.mustKill {
		faults = 3
	}
	switch faults {
	case 1:
		d.now[0].kill = true
	case 2:
		d.now[1].kill = true
	case 3:
		d.now[0].kill, d.now[1].kill = true, true
	}
	for _, run := range d.now {
		run.pause = run.kill && d.rng.IntN(4) == 0 && !d.mustKill
	}
	before := map[string]bool{}
	for _, b := range d.list(0) {
		before[b.ID] = true
	}
	// The second run starts up to the first's last duration later, so each meets the other
	// at any of its steps; each is killed (when chosen) half the time at one of its marks in
	// the repository or a little after, else at a random point of its last duration.
	offset := time.Duration(d.rng.Int64N(int64(max(d.took[d.now[0].op], time.Millisecond))))
	var wg sync.WaitGroup
	for i, run := range d.now {
		delay, ev := cairnCommandTimeout, (*tortureEvent)(nil)
		took := max(d.took[run.op], time.Millisecond)
		switch {
		case !run.kill:
			run.point = "not killed"
		case len(run.events) > 0 && d.rng.IntN(2) == 0 && !d.mustKill:
			ev = &run.events[d.rng.IntN(len(run.events))]
			delay = 0
			if d.rng.IntN(2) == 0 {
				delay = time.Duration(d.rng.Int64N(int64(took / 10)))
			}
			run.point = fmt.Sprintf("killed %v after a %s", delay.Round(time.Microsecond), ev.name)
		default:
			delay = time.Duration(d.rng.Int64N(int64(took)))
			run.point = fmt.Sprintf("killed %v after it started", delay.Round(time.Microsecond))
		}
		var pause time.Duration
		if run.pause {
			d.paused++
			pause = duoPause
			run.point = strings.Replace(run.point, "killed", fmt.Sprintf("paused for %v", duoPause), 1)
		}
		wait := time.Duration(0)
		if i == 1 {
			wait = offset
			run.point += fmt.Sprintf(", started %v after the other", offset.Round(time.Microsecond))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(wait)
			argv := append(append([]string(nil), d.gws[run.gw].argv...), run.args...)
			run.res, run.killed, run.took, run.err = killAt(d.gws[run.gw].r.Env, argv, delay, ev, pause)
		}()
	}
	wg.Wait()
	d.listed = [2][]backupJSON{}
	for _, run := range d.now {
		st := d.stats[run.op]
		st.trials++
		switch {
		case run.err != nil:
			d.failf("%s: %v", d.describe(run), run.err)
		case run.killed && !run.kill:
			d.failf("%s: no end within %v", d.describe(run), cairnCommandTimeout)
		case run.killed:
			st.killed++
		case run.pause && run.res.Code != 0 && strings.Contains(run.res.Stderr, "lock was lost"):
			st.killed++
			d.lost++
			run.killed = true
			run.point += ", then failed: lock lost"
		case run.res.Code != 0:
			d.failf("%s ended on its own with exit %d: %s", d.describe(run), run.res.Code, strings.TrimSpace(run.res.Stderr))
		default:
			switch {
			case run.pause:
				run.point += ", then finished"
			case run.kill:
				run.point += " (it ended first)"
				d.took[run.op] = run.took
			default:
				d.took[run.op] = run.took
			}
			switch {
			case run.vol != nil:
				run.id = d.newBackup(run.gw, run.res.Stdout, run.vol)
			case run.op == opDelete:
				delete(d.known, run.id)
			}
		}
	}

	// Both gateways recover on their own and agree; nothing available was lost.
	d.recoverAfter(before)
	d.checkClean()
	restores := d.verifyRestores()
	for _, run := range d.now {
		d.stats[run.op].clean++
		d.stats[run.op].restores += restores
	}

	// Each operation's result, or the operation run again when it was killed, is right.
	for _, run := range d.now {
		res := run.res
		if run.killed {
			res = d.rerun(run)
		}
		d.stats[run.op].restores += d.finish(run, res)
		d.stats[run.op].recovered++
		d.t.Logf("round %d gateway %s %s: %s, took %v", d.round, d.gws[run.gw].name, run.op, run.point, run.took.Round(time.Millisecond))
	}
	d.trim()
}

// prepare chooses what gateway g's run of a random operation works on; busy holds the
// backups the other run of the round restores or deletes, and gets this run's.
func (d *duo) prepare(g int, busy map[string]bool) *duoRun {
	gw := d.gws[g]
	op := duoOps[d.rng.IntN(len(duoOps))]
	if g == 1 && d.now[0].op != opGC && d.rng.IntN(2) == 0 {
		op = opGC // half the rounds meet the other gateway's run with a gc
	}
	var ids []string // a restore's or a delete's candidates
	switch op {
	case opRestore:
		for _, id := range slices.Sorted(maps.Keys(d.known)) {
			if !busy[id] {
				ids = append(ids, id)
			}
		}
	case opDelete:
		if d.own(g) < 2 {
			v := gw.vols[d.rng.IntN(len(gw.vols))]
			d.newBackup(g, d.must(g, "--quiet", "--format", "json", "backup", "create", v.path), v)
		}
		if id := d.pickLeaf(g, busy); id != "" {
			ids = []string{id}
		}
	}
	if (op == opRestore || op == opDelete) && len(ids) == 0 {
		op = opBackup // the other run holds every candidate
	}
	run := &duoRun{tortureRun: &tortureRun{op: op}, gw: g}
	switch op {
	case opBackup:
		run.vol = gw.vols[d.rng.IntN(len(gw.vols))]
		switch d.rng.IntN(3) {
		case 0:
			run.vol.rewrite(d.t, d.rng)
		case 1:
			run.vol.scatter(d.t, d.rng, 0.05)
		default:
			// the other gateway's volume's contents: this backup dedups against its packs
			other := d.gws[1-g].vols[d.rng.IntN(len(d.gws[1-g].vols))]
			data, err := os.ReadFile(other.path)
			if err != nil {
				d.t.Fatal(err)
			}
			if err := os.WriteFile(run.vol.path, data, 0o600); err != nil {
				d.t.Fatal(err)
			}
			run.vol.sha = other.sha
		}
		run.args = []string{"--quiet", "--format", "json", "backup", "create", run.vol.path}
		run.events = writeEvents(d.objects)
	case opIncremental:
		run.vol = gw.vols[d.rng.IntN(len(gw.vols))]
		if !d.hasBackup(g, run.vol) {
			d.newBackup(g, d.must(g, "--quiet", "--format", "json", "backup", "create", run.vol.path), run.vol)
		}
		run.vol.scatter(d.t, d.rng, 0.02)
		run.args = []string{"--quiet", "--format", "json", "backup", "create", run.vol.path, "--incremental"}
		run.events = writeEvents(d.objects)
	case opRestore:
		run.id = ids[d.rng.IntN(len(ids))]
		busy[run.id] = true
		run.target = filepath.Join(d.dir, "target-"+gw.name+".img")
		if err := os.Remove(run.target); err != nil && !os.IsNotExist(err) {
			d.t.Fatal(err)
		}
		run.args = []string{"--quiet", "backup", "restore", "--yes", run.id, "--to", run.target}
	case opDelete:
		run.id = ids[0]
		busy[run.id] = true
		run.args = []string{"backup", "delete", "--yes", run.id}
		run.events = []tortureEvent{{"manifest removed", gone(filepath.Join(d.objects, "manifests", run.id))}}
	case opGC:
		// something to reclaim, half the time: a backup of its own deleted just before
		if d.own(g) > 1 && d.rng.IntN(2) == 0 {
			if id := d.pickLeaf(g, busy); id != "" {
				d.must(g, "backup", "delete", "--yes", id)
				delete(d.known, id)
			}
		}
		run.args = []string{"--quiet", "repo", "gc"}
		run.events = []tortureEvent{
			{"deletion record", grows(filepath.Join(d.objects, "deleted"))},
			{"pack removed", shrinks(filepath.Join(d.objects, "packs"))},
		}
	}
	return run
}

// recoverAfter runs the next command on each gateway after a round ('backup list' and 'volume
// list', which open its index and read the repository) and checks that both show the same
// available backups: every one known before (but a deleted one), and new ones only from a
// backup run of the round (committed before its kill). It lists twice on each: a gateway's
// first command after a kill finishes what the kill interrupted, a delete killed before its
// tombstone was stored among them (nothing in the repository says it began), and the other
// gateway, which had listed first, sees that delete at its next command. So too a backup or
// restore the other gateway's kill interrupted: until that gateway's next command ends it, the
// first listing shows it running there (a backup creating, with run_by; a restore, naming that
// gateway's host; its volume restoring-backup), as every gateway shows another's jobs
// (docs/design.md, "Backups being created, on every gateway"); the second listing must not.
func (d *duo) recoverAfter(before map[string]bool) {
	var avail [2]map[string]backupJSON
	for i := range 2 * len(d.gws) {
		g := i % len(d.gws)
		d.listed[g] = nil // each pass lists anew
		avail[g] = map[string]backupJSON{}
		first := i < len(d.gws)
		for _, b := range d.list(g) {
			elsewhere := b.RunBy != "" || (b.LastRestore != nil && strings.Contains(b.LastRestore.Target, "through the gateway on"))
			switch {
			case b.Status == "available":
				avail[g][b.ID] = b
			case b.Status == "restoring" && first && elsewhere:
				avail[g][b.ID] = b // committed: it counts among the available ones
			case b.Status == "error", (b.Status == "creating" || b.Status == "deleting") && first && elsewhere:
			default:
				d.failf("after the round, gateway %s lists backup %s as %s (run by %q)", d.gws[g].name, b.ID, b.Status, b.RunBy)
			}
		}
		for _, v := range d.volumes(g) {
			if v.Status == "restoring-backup" && first {
				continue // another gateway's restore onto it, interrupted: as above
			}
			if v.Status != "available" {
				d.failf("after the round, gateway %s's volume %s (%s) is %s: %s", d.gws[g].name, v.Name, v.Path, v.Status, v.FailReason)
			}
		}
	}
	for id := range avail[0] {
		if _, ok := avail[1][id]; !ok {
			d.failf("backup %s is available on gateway A but not on B", id)
		}
	}
	for id := range avail[1] {
		if _, ok := avail[0][id]; !ok {
			d.failf("backup %s is available on gateway B but not on A", id)
		}
	}
	deleting := map[string]bool{}
	for _, run := range d.now {
		if run.op == opDelete && run.killed {
			deleting[run.id] = true
		}
	}
	for id := range d.known {
		switch _, ok := avail[0][id]; {
		case ok:
		case deleting[id]:
			delete(d.known, id) // the kill came after the delete committed
		default:
			d.failf("backup %s, available before the round, is not available now", id)
		}
	}
	for id, b := range avail[0] {
		if _, ok := d.known[id]; ok {
			continue
		}
		var from *duoRun
		for _, run := range d.now {
			if run.killed && run.vol != nil && d.vids[run.gw][run.vol.path] == b.VolumeID {
				from = run
			}
		}
		if from == nil || before[id] {
			d.failf("backup %s (volume %s) is available, but no run of the round that was killed backed its volume up", id, b.VolumeID)
		}
		d.known[id] = duoBackup{sha: from.vol.sha, gw: from.gw} // committed just before the kill
	}
}

// rerun runs a killed operation again on its gateway, to the end; a delete only if its backup
// is still there, a restore only if its backup is.
func (d *duo) rerun(run *duoRun) cairnResult {
	if (run.op == opDelete || run.op == opRestore) && d.known[run.id].sha == "" {
		return cairnResult{}
	}
	d.listed = [2][]backupJSON{}
	res := d.run(run.gw, run.args...)
	if res.Code != 0 {
		d.failf("%s, run again after the kill: exit %d: %s", d.describe(run), res.Code, strings.TrimSpace(res.Stderr))
	}
	return res
}

// finish checks what a completed run did and returns the restores it verified.
func (d *duo) finish(run *duoRun, res cairnResult) int {
	switch run.op {
	case opBackup, opIncremental:
		if run.killed {
			run.id = d.newBackup(run.gw, res.Stdout, run.vol)
		}
		d.restoreMatches(1-run.gw, run.id)
		return 1
	case opRestore:
		if d.known[run.id].sha == "" {
			return 0
		}
		if got := testutil.SHA256File(d.t, run.target); got != d.known[run.id].sha {
			d.failf("restore of %s through gateway %s: sha256 %s, want %s", run.id, d.gws[run.gw].name, got, d.known[run.id].sha)
		}
		return 1
	case opDelete:
		delete(d.known, run.id)
		for g := range d.gws {
			for _, b := range d.list(g) {
				if b.ID == run.id {
					d.failf("backup %s is still listed (%s) on gateway %s after its delete", run.id, b.Status, d.gws[g].name)
				}
			}
		}
	}
	return 0
}

// trim deletes, on each gateway, error backups and available backups of its own volumes
// beyond duoKeep (leaves, oldest first), so rounds stay short.
func (d *duo) trim() {
	for g := range d.gws {
		for _, b := range d.list(g) {
			if b.Status == "error" && d.isLeaf(g, b.ID) {
				d.must(g, "backup", "delete", "--yes", b.ID)
			}
		}
		for d.own(g) > duoKeep {
			id := d.pickLeaf(g, nil)
			if id == "" {
				break // every one has a failed incremental on it; gone next round
			}
			d.must(g, "backup", "delete", "--yes", id)
			delete(d.known, id)
		}
	}
}

// own counts the known backups of gateway g's volumes.
func (d *duo) own(g int) int {
	n := 0
	for _, b := range d.known {
		if b.gw == g {
			n++
		}
	}
	return n
}

// pickLeaf returns the oldest known backup of gateway g's volumes that no backup names as its
// parent and busy does not hold ("" when there is none).
func (d *duo) pickLeaf(g int, busy map[string]bool) string {
	for _, b := range d.list(g) {
		if kb, ok := d.known[b.ID]; ok && kb.gw == g && !busy[b.ID] && d.isLeaf(g, b.ID) {
			return b.ID
		}
	}
	return ""
}

// isLeaf reports whether no backup gateway g lists names id as its parent.
func (d *duo) isLeaf(g int, id string) bool {
	for _, b := range d.list(g) {
		if b.ParentID == id {
			return false
		}
	}
	return true
}

// hasBackup reports whether v has an available backup on gateway g.
func (d *duo) hasBackup(g int, v *tortureVolume) bool {
	vid := d.volumeID(g, v)
	for _, b := range d.list(g) {
		if b.VolumeID == vid && b.Status == "available" {
			return true
		}
	}
	return false
}

// volumeID returns v's volume id on gateway g ("" before its first backup there).
func (d *duo) volumeID(g int, v *tortureVolume) string {
	if id, ok := d.vids[g][v.path]; ok {
		return id
	}
	d.volumes(g)
	return d.vids[g][v.path]
}

// volumes returns gateway g's 'volume list' and notes their ids by path.
func (d *duo) volumes(g int) []gwVolume {
	var vols []gwVolume
	if err := jsonUnmarshal(d.must(g, "--format", "json", "volume", "list"), &vols); err != nil {
		d.failf("volume list on gateway %s: %v", d.gws[g].name, err)
	}
	d.vids[g] = map[string]string{}
	for _, v := range vols {
		d.vids[g][v.Path] = v.ID
	}
	return vols
}

func (d *duo) newBackup(g int, out string, v *tortureVolume) string {
	var b backupJSON
	if err := jsonUnmarshal(out, &b); err != nil || b.ID == "" || b.Status != "available" {
		d.failf("backup create on gateway %s printed %q (%v); want an available backup", d.gws[g].name, out, err)
	}
	d.known[b.ID] = duoBackup{sha: v.sha, gw: g}
	return b.ID
}

// list returns gateway g's 'backup list', run again only after a command that may change it.
func (d *duo) list(g int) []backupJSON {
	if d.listed[g] == nil {
		var bs []backupJSON
		if err := jsonUnmarshal(d.must(g, "--format", "json", "backup", "list"), &bs); err != nil {
			d.failf("backup list on gateway %s: %v", d.gws[g].name, err)
		}
		if bs == nil {
			bs = []backupJSON{}
		}
		d.listed[g] = bs
	}
	return d.listed[g]
}

// checkClean runs 'repo check --read-data' through a random gateway.
func (d *duo) checkClean() {
	g := d.rng.IntN(2)
	out := d.must(g, "repo", "check", "--read-data")
	if !checkFoundNothing(out) {
		d.failf("repo check --read-data on gateway %s:\n%s", d.gws[g].name, out)
	}
}

// verifyRestores restores every known backup through a random gateway.
func (d *duo) verifyRestores() int {
	ids := slices.Sorted(maps.Keys(d.known))
	for _, id := range ids {
		d.restoreMatches(d.rng.IntN(2), id)
	}
	return len(ids)
}

func (d *duo) restoreMatches(g int, id string) {
	out := filepath.Join(d.dir, "verify-"+id+".img")
	d.must(g, "--quiet", "backup", "restore", "--yes", id, "--to", out)
	if got := testutil.SHA256File(d.t, out); got != d.known[id].sha {
		d.failf("backup %s restored through gateway %s: sha256 %s, want %s", id, d.gws[g].name, got, d.known[id].sha)
	}
	if err := os.Remove(out); err != nil {
		d.t.Fatal(err)
	}
}

func (d *duo) must(g int, args ...string) string {
	if changes(args) {
		d.listed = [2][]backupJSON{}
	}
	res := d.run(g, args...)
	if res.Code != 0 {
		d.failf("cairn %s on gateway %s: exit %d: %s", strings.Join(args, " "), d.gws[g].name, res.Code, strings.TrimSpace(res.Stderr))
	}
	return res.Stdout
}

// run runs cairn args on gateway g (as its host) and returns what it did.
func (d *duo) run(g int, args ...string) cairnResult {
	argv := d.gws[g].argv
	return runBinary(d.t, argv[0], d.gws[g].r.Env, append(append([]string(nil), argv[1:]...), args...)...)
}

func (d *duo) describe(run *duoRun) string {
	return fmt.Sprintf("gateway %s's %s (cairn %s, %s)", d.gws[run.gw].name, run.op, strings.Join(run.args, " "), run.point)
}

// failf stops the run with what failed, the round's two runs, and how to replay it; the
// repository's objects and both gateways' state dirs are kept for a post-mortem.
func (d *duo) failf(format string, args ...any) {
	d.t.Helper()
	keep := filepath.Join(os.TempDir(), fmt.Sprintf("cairn-torture2-%d-round-%d", d.cfg.seed, d.round))
	var runs []string
	for _, run := range d.now {
		if run != nil {
			runs = append(runs, d.describe(run))
		}
	}
	note := keep
	if err := os.MkdirAll(keep, 0o700); err == nil {
		for name, src := range map[string]string{"objects": d.objects, "state-A": d.gws[0].r.Dir, "state-B": d.gws[1].r.Dir} {
			if name == "state-A" && src == d.objects {
				continue // a local repository's own state dir
			}
			if err := exec.Command("cp", "-a", src, filepath.Join(keep, name)).Run(); err != nil {
				note += " (partly: " + err.Error() + ")"
			}
		}
	}
	d.t.Fatalf("two-gateway torture seed %d, round %d: %s\nthe round ran: %s\nthe repository's objects and the state dirs kept in %s\n%s\nreplay: CAIRN_TORTURE_SEED=%d CAIRN_TORTURE_TRIALS=%d go test -count=1 -timeout 60m -run '%s$' -v ./tests/",
		d.cfg.seed, d.round, fmt.Sprintf(format, args...), strings.Join(runs, "; "), note, tortureTable(duoOps, d.stats), d.cfg.seed, d.cfg.trials, d.t.Name())
}
