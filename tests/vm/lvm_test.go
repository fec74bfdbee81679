//go:build linux && vmtest

package vm

import (
	"encoding/json"
	"strings"
	"testing"
)

// backup is the part of 'cairn backup create --format json' the tests read.
type backup struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ReadBytes    int64  `json:"read_bytes"`
	ReadMode     string `json:"read_mode"`
	ReadFallback string `json:"read_fallback"`
}

// backupOf decodes the backup the scenario printed under key, failing unless it is available.
func (r results) backupOf(t *testing.T, scenario, key string) backup {
	t.Helper()
	if rc := r.int(t, scenario, key+".rc"); rc != 0 {
		t.Fatalf("%s: cairn %s exited %d (see the console log)", scenario, key, rc)
	}
	var b backup
	if err := json.Unmarshal([]byte(r.get(t, scenario, key)), &b); err != nil {
		t.Fatalf("%s %s: not JSON: %v", scenario, key, err)
	}
	if b.ID == "" || b.Status != "available" {
		t.Fatalf("%s %s: %+v, want an available backup", scenario, key, b)
	}
	return b
}

// expectZero fails unless every key of scenario is "0" (exit codes).
func (r results) expectZero(t *testing.T, scenario string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v := r.get(t, scenario, k); v != "0" {
			t.Errorf("%s %s = %s, want 0", scenario, k, v)
		}
	}
}

// forceBackup checks an in-use backup through a snapshot: refused without --force, taken with
// it, nothing left behind, the restored file system clean; it logs the writer's longest pause.
func forceBackup(t *testing.T, r results, scen string) {
	t.Helper()
	r.expectZero(t, scen, "setup")
	if rc := r.int(t, scen, "refused.rc"); rc != 4 {
		t.Errorf("backup of the mounted volume without --force exited %d, want 4 (in use)", rc)
	}
	b := r.backupOf(t, scen, "backup")
	if left := r.get(t, scen, "leftovers"); left != "" {
		t.Errorf("--force left behind: %s", left)
	}
	wantKept := "0" // a thin LV keeps the snapshot the backup read, for change tracking
	if scen == "thin" {
		wantKept = "1"
	}
	if k := r.get(t, scen, "kept"); k != wantKept {
		t.Errorf("%s thin snapshots kept for change tracking after the backup, want %s", k, wantKept)
	}
	r.expectZero(t, scen, "restore.rc", "fsck.rc")
	w := strings.Fields(r.get(t, scen, "writer"))
	if len(w) != 2 {
		t.Fatalf("writer result %q", w)
	}
	t.Logf("%s: backup %s read %d bytes (%s); the writer's longest pause was %s ms over %s writes; scenario took %s s",
		scen, b.ID, b.ReadBytes, b.ReadMode, w[0], w[1], r.get(t, scen, "seconds"))
	if r.int(t, scen, "writer") > 8000 { // TCG on a busy 2-core host: 0.2-3 s seen
		t.Errorf("the writer paused %s ms: the snapshot must not block it for long", w[0])
	}
}

// TestLVMForceClassic: 'backup create --force' of a mounted classic LV with a writer reads an
// LVM snapshot; the restore is fsck-clean and the snapshot is gone.
func TestLVMForceClassic(t *testing.T) {
	forceBackup(t, scenario(t, "classic"), "classic")
}

// TestLVMForceThin: the same for a thin LV, read through a thin snapshot; then 'snapshot
// create' of it makes a thin snapshot, whose backup restores equal to it, and 'snapshot
// delete' removes it.
func TestLVMForceThin(t *testing.T) {
	const s = "thin"
	r := scenario(t, s)
	forceBackup(t, r, s)
	r.expectZero(t, s, "snap.rc", "snaprestore.rc", "snapdelete.rc")
	if st := r.get(t, s, "snap.segtype"); st != "thin" {
		t.Errorf("snapshot create of a thin LV made a %q LV, want thin", st)
	}
	r.backupOf(t, s, "snapbackup")
	if got, want := r.get(t, s, "snaprestore.sha"), r.get(t, s, "snap.sha"); got != want {
		t.Errorf("the snapshot's backup restores to %s, the snapshot is %s", got, want)
	}
	if left := r.get(t, s, "snapleft"); left != "" {
		t.Errorf("snapshot delete left behind: %s", left)
	}
}

// TestLVMSnapshotBackups: 'snapshot create' of an LV, a full backup from the first snapshot
// and an incremental from the second; each restore equals its snapshot, and 'snapshot delete'
// removes the snapshot LVs.
func TestLVMSnapshotBackups(t *testing.T) {
	const s = "snap"
	r := scenario(t, s)
	r.expectZero(t, s, "setup", "snap1.rc", "snap2.rc", "restore1.rc", "restore2.rc", "delete.rc")
	full, inc := r.backupOf(t, s, "full"), r.backupOf(t, s, "inc")
	if r.get(t, s, "snap1.sha") == r.get(t, s, "snap2.sha") {
		t.Fatal("the volume did not change between the snapshots: the test proves nothing")
	}
	if got, want := r.get(t, s, "full.sha"), r.get(t, s, "snap1.sha"); got != want {
		t.Errorf("full backup %s restores to sha256 %s, its snapshot is %s", full.ID, got, want)
	}
	if got, want := r.get(t, s, "inc.sha"), r.get(t, s, "snap2.sha"); got != want {
		t.Errorf("incremental backup %s restores to sha256 %s, its snapshot is %s", inc.ID, got, want)
	}
	if r.get(t, s, "volume.sha") != r.get(t, s, "snap2.sha") {
		t.Error("the second snapshot differs from the unchanged volume")
	}
	if left := r.get(t, s, "leftovers"); left != "" {
		t.Errorf("snapshot delete left behind: %s", left)
	}
}

// TestDMSnapshot: a plain device-mapper device (linear over a loop device) in use is backed up
// with --force through a dm-snapshot cairn builds and removes; two kept snapshots of it share
// the origin, back full and incremental backups that restore byte-exact, and deleting the
// last one gives the device its linear table back.
func TestDMSnapshot(t *testing.T) {
	const s = "dm"
	r := scenario(t, s)
	forceBackup(t, r, s)
	if tb := r.get(t, s, "table"); tb != "linear" {
		t.Errorf("after the --force backup the device's table is %q, want linear", tb)
	}
	r.expectZero(t, s, "s1.rc", "s2.rc", "restore1.rc", "restore2.rc", "delete1.rc", "delete2.rc", "cow.loops")
	if tb := r.get(t, s, "origin.table"); tb != "snapshot-origin" {
		t.Errorf("with two snapshots the device's table is %q, want snapshot-origin", tb)
	}
	if r.get(t, s, "s1.sha") == r.get(t, s, "s2.sha") {
		t.Fatal("the volume did not change between the snapshots: the test proves nothing")
	}
	r.backupOf(t, s, "full")
	r.backupOf(t, s, "inc")
	for _, c := range [][2]string{{"full.sha", "s1.sha"}, {"inc.sha", "s2.sha"}} {
		if got, want := r.get(t, s, c[0]), r.get(t, s, c[1]); got != want {
			t.Errorf("%s %s, want %s (%s)", c[0], got, want, c[1])
		}
	}
	if tb := r.get(t, s, "after1.table"); tb != "snapshot-origin" {
		t.Errorf("after deleting one of two snapshots the table is %q, want snapshot-origin", tb)
	}
	if tb := r.get(t, s, "after2.table"); tb != "linear" {
		t.Errorf("after deleting both snapshots the table is %q, want linear", tb)
	}
}

// TestThinChangeTracking: a thin LV is tracked by default; each backup keeps its thin
// snapshot (and only the latest), an incremental reads only what thin_delta reports changed
// since the parent's (at most 2x the bytes written) and restores byte-exact; an unchanged
// volume reads nothing; with the kept snapshot removed it reads in full and says why; the
// pool's metadata snapshot is released; turning tracking off removes the kept snapshot, and on
// again keeps one; unmanaging the volume removes the kept snapshot.
func TestThinChangeTracking(t *testing.T) {
	const s = "thincbt"
	r := scenario(t, s)
	r.expectZero(t, s, "setup", "vol.rc", "restore.rc", "gone.restore.rc", "held.reserve", "held.release", "untrack.rc", "kept.untracked", "kept.untracked.after", "retrack.rc", "unmanage.rc", "kept.after")
	var vol struct {
		TrackChanges bool `json:"track_changes"`
	}
	if err := json.Unmarshal([]byte(r.get(t, s, "vol")), &vol); err != nil || !vol.TrackChanges {
		t.Errorf("volume manage of a thin LV: track_changes is not true (%v): %s", err, r.get(t, s, "vol"))
	}
	full := r.backupOf(t, s, "full")
	if full.ReadMode != "full" || full.ReadFallback != "" {
		t.Errorf("full backup: read_mode %q, read_fallback %q", full.ReadMode, full.ReadFallback)
	}
	if k := r.get(t, s, "kept.full"); k != "1" {
		t.Errorf("after the full backup %s thin snapshots cairn-cbt-%s, want 1", k, full.ID)
	}
	inc := r.backupOf(t, s, "inc")
	changed := r.int(t, s, "changed")
	t.Logf("thin-delta incremental: read %d bytes for %d written (%.2fx); scenario took %s s",
		inc.ReadBytes, changed, float64(inc.ReadBytes)/float64(changed), r.get(t, s, "seconds"))
	if inc.ReadMode != "thin-delta" || inc.ReadFallback != "" {
		t.Errorf("incremental: read_mode %q, read_fallback %q; want thin-delta", inc.ReadMode, inc.ReadFallback)
	}
	if inc.ReadBytes < changed || inc.ReadBytes > 2*changed {
		t.Errorf("incremental read %d bytes for %d changed: want between 1x and 2x", inc.ReadBytes, changed)
	}
	if k, want := r.get(t, s, "kept.inc"), "cairn-cbt-"+r.get(t, s, "inc.id"); k != want {
		t.Errorf("after the incremental the kept thin snapshots are %q, want only %s", k, want)
	}
	if got, want := r.get(t, s, "inc.sha"), r.get(t, s, "volume.sha"); got != want {
		t.Errorf("incremental restores to %s, the volume is %s", got, want)
	}
	same := r.backupOf(t, s, "same")
	if same.ReadMode != "thin-delta" || same.ReadBytes != 0 {
		t.Errorf("incremental of an unchanged thin LV: read_mode %q, read %d bytes; want thin-delta, 0", same.ReadMode, same.ReadBytes)
	}
	gone := r.backupOf(t, s, "gone")
	if gone.ReadMode != "full" || !strings.Contains(gone.ReadFallback, "no thin snapshot kept by parent backup") {
		t.Errorf("incremental without the kept snapshot: read_mode %q, read_fallback %q; want full, saying the snapshot is gone", gone.ReadMode, gone.ReadFallback)
	}
	if got, want := r.get(t, s, "gone.sha"), r.get(t, s, "gone.volume.sha"); got != want {
		t.Errorf("the full-read incremental restores to %s, the volume is %s", got, want)
	}
	if held := r.backupOf(t, s, "held"); held.ReadMode != "full" || !strings.Contains(held.ReadFallback, "metadata snapshot is held by something else") ||
		!strings.Contains(held.ReadFallback, "release_metadata_snap") {
		t.Errorf("incremental while the pool's metadata snapshot is held: read_mode %q, read_fallback %q; want full, saying it is held and how to release it", held.ReadMode, held.ReadFallback)
	}
	// volume update --no-track-changes dropped the kept snapshot (checked zero above, with the
	// untracked incremental's); the untracked incremental read in full; turned on again, the
	// next backup kept one.
	if k := r.get(t, s, "kept.before.untrack"); k != "1" {
		t.Errorf("before tracking was turned off %s kept thin snapshots, want 1", k)
	}
	if u := r.backupOf(t, s, "untracked"); u.ReadMode != "full" {
		t.Errorf("the incremental after tracking was turned off: read_mode %q (%s), want full", u.ReadMode, u.ReadFallback)
	}
	if k := r.get(t, s, "kept.retracked"); k != "1" {
		t.Errorf("after tracking was turned on again %s kept thin snapshots, want 1", k)
	}
	if m := r.get(t, s, "pool.metasnap"); m != "-" {
		t.Errorf("the pool's metadata snapshot is still held (%s)", m)
	}
	if left := r.get(t, s, "leftovers"); left != "" {
		t.Errorf("left behind: %s", left)
	}
}

// TestCrashLeavesNoSnapshot: a --force backup killed while it reads its temporary snapshot (of
// an LV, and of a plain device-mapper device) leaves the snapshot; the next cairn command's
// recovery removes it, and the device's table is linear again.
func TestCrashLeavesNoSnapshot(t *testing.T) {
	const s = "crash"
	r := scenario(t, s)
	r.expectZero(t, s, "setup")
	for _, v := range []struct{ name, prefix, table string }{
		{"crash", "cairn-snap-tmp-", "linear"},
		{"crashdm", "cairn-snap-tmp-", "linear"},
	} {
		before := r.get(t, s, v.name+".before")
		if !strings.Contains(before, v.prefix) {
			t.Errorf("%s: the killed backup left %q, want its temporary snapshot (was it killed too late?)", v.name, before)
		}
		r.expectZero(t, s, v.name+".list.rc")
		if after := r.get(t, s, v.name+".after"); after != "" {
			t.Errorf("%s: after recovery %q is still there", v.name, after)
		}
		if tb := r.get(t, s, v.name+".table"); tb != v.table {
			t.Errorf("%s: after recovery its table is %q, want %s", v.name, tb, v.table)
		}
	}
}
