package tests

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// xfsReflinkDir makes an XFS file system with reflink on a loop device and mounts it.
func xfsReflinkDir(t *testing.T, size int64) string {
	t.Helper()
	return testutil.XFSReflinkDir(t, size)
}

// TestForceBackupOfInUseVolume: an ext4 image on XFS, loop-mounted and written to all the
// time, is refused without --force; with --force it is backed up from a reflink snapshot, and
// the restored image is a consistent point in time (fsck clean after the journal replay).
func TestForceBackupOfInUseVolume(t *testing.T) {
	testutil.RequireCommand(t, "e2fsck")
	xfs := xfsReflinkDir(t, 700<<20)
	vol := filepath.Join(xfs, "vm.img")
	f, err := os.Create(vol)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(160 << 20)
	f.Close()
	testutil.MakeExt4(t, vol)
	mnt := testutil.MountLoop(t, vol)

	// The writer: rewrites files in the mounted ext4 and logs a timestamp after each write.
	stamps := filepath.Join(t.TempDir(), "stamps")
	writer := exec.Command("sh", "-c", `i=0; while :; do head -c 65536 /dev/urandom > "$1/f$((i % 300))"; date +%s%N >> "$2"; i=$((i+1)); done`, "writer", mnt, stamps)
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writer.Process.Kill(); _ = writer.Wait() })
	time.Sleep(300 * time.Millisecond)

	r := newCairnRepo(t, nil)
	r.mustRun("volume", "manage", vol, "--name", "vm1")
	line := r.mustFail([]int{4}, "backup", "create", "vm1")
	if !strings.Contains(line, "in use") || !strings.Contains(line, "--force") {
		t.Fatalf("in-use backup without --force: %q does not say in use and --force", line)
	}

	start := time.Now()
	full := r.createBackup("vm1", "--force", "--name", "crash-consistent")
	during := [2]time.Time{start, time.Now()}
	time.Sleep(200 * time.Millisecond)
	_ = writer.Process.Kill()
	_ = writer.Wait()

	// Never stalled: the writer kept writing while the backup ran.
	gap := maxGap(t, stamps, during)
	t.Logf("backup took %v; the writer's longest pause meanwhile was %v", during[1].Sub(during[0]), gap)
	if gap > 2*time.Second {
		t.Fatalf("the writer paused %v during the backup: the snapshot must not block it", gap)
	}
	// The snapshot taken for the backup is gone.
	if m, _ := filepath.Glob(filepath.Join(xfs, ".vm.img.cairn-snap-*")); len(m) != 0 {
		t.Fatalf("--force left its snapshot behind: %v", m)
	}

	out := filepath.Join(t.TempDir(), "restored.img")
	r.restoreTo(full.ID, out)
	// The restored image is a crash of the volume: the journal replay makes it clean.
	if o, err := exec.Command("e2fsck", "-fy", out).CombinedOutput(); err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() > 1 {
			t.Fatalf("e2fsck -fy on the restored image: %v\n%s", err, o)
		}
	}
	if o, err := exec.Command("e2fsck", "-fn", out).CombinedOutput(); err != nil {
		t.Fatalf("restored image is not clean after the journal replay: %v\n%s", err, o)
	}
}

func maxGap(t *testing.T, path string, during [2]time.Time) time.Duration {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var prev time.Time
	var gap time.Duration
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		ns, err := strconv.ParseInt(strings.TrimSpace(sc.Text()), 10, 64)
		if err != nil {
			continue
		}
		at := time.Unix(0, ns)
		if at.After(during[0]) && at.Before(during[1].Add(100*time.Millisecond)) {
			n++
			if !prev.IsZero() {
				gap = max(gap, at.Sub(prev))
			}
		}
		prev = at
	}
	if n < 2 {
		t.Fatalf("the writer wrote %d times during the backup: it must keep writing", n)
	}
	return gap
}

// TestSnapshotsAndBackupFromSnapshot: snapshot create/list/show/delete and full and
// incremental backups from a snapshot, each restoring to the volume as it was at the snapshot.
func TestSnapshotsAndBackupFromSnapshot(t *testing.T) {
	xfs := xfsReflinkDir(t, 300<<20)
	vol := filepath.Join(xfs, "data.img")
	testutil.WriteImage(t, vol, 48<<20, 41, testutil.Mixed)
	r := newCairnRepo(t, nil)
	r.mustRun("volume", "manage", vol, "--name", "data")

	var s1 struct{ ID, Status, Kind string }
	r.mustJSON(&s1, "snapshot", "create", "data", "--name", "monday")
	if s1.Status != "available" || s1.Kind != "reflink" {
		t.Fatalf("snapshot create: %+v", s1)
	}
	want1 := testutil.SHA256File(t, vol)
	testutil.ScatterWrites(t, vol, 42, 0.02, 4<<10, 64<<10) // the volume moves on
	b1 := r.createBackup("--snapshot-id", s1.ID)
	if got := r.showBackup(b1.ID); got.VolumeID == "" {
		t.Fatalf("backup of a snapshot has no volume id: %+v", got)
	}

	var s2 struct{ ID string }
	r.mustJSON(&s2, "snapshot", "create", "data", "--name", "tuesday")
	want2 := testutil.SHA256File(t, vol)
	testutil.ScatterWrites(t, vol, 43, 0.02, 4<<10, 64<<10)
	b2 := r.createBackup("data", "--snapshot-id", "tuesday", "--incremental")
	if !b2.IsIncremental || b2.ParentID != b1.ID {
		t.Fatalf("incremental from a snapshot: %+v", b2)
	}
	for id, want := range map[string]string{b1.ID: want1, b2.ID: want2} {
		out := filepath.Join(t.TempDir(), "r.img")
		r.restoreTo(id, out)
		if got := testutil.SHA256File(t, out); got != want {
			t.Fatalf("backup %s of a snapshot: sha256 %s, want the volume at the snapshot %s", id, got, want)
		}
	}
	var list []struct{ ID string }
	r.mustJSON(&list, "snapshot", "list", "--volume-id", "data")
	if len(list) != 2 {
		t.Fatalf("snapshot list: %d snapshots, want 2", len(list))
	}
	r.mustRun("snapshot", "delete", "monday")
	r.mustRun("snapshot", "delete", s2.ID)
	r.mustFail([]int{3}, "snapshot", "show", "monday")
	if m, _ := filepath.Glob(filepath.Join(xfs, ".data.img.cairn-snap-*")); len(m) != 0 {
		t.Fatalf("deleted snapshots left files: %v", m)
	}
	// A snapshot of a volume whose file system has no reflinks is a clear error.
	plain := filepath.Join(t.TempDir(), "plain.img")
	testutil.WriteImage(t, plain, 4<<20, 44, testutil.Mixed)
	line := r.mustFail([]int{2}, "snapshot", "create", plain)
	if !strings.Contains(line, "reflink") {
		t.Fatalf("snapshot on a file system without reflinks: %q", line)
	}
}

// TestAPISnapshotsWithCinder: the stock cinder client takes, lists, backs up and deletes
// snapshots through the API (seed 3.1.5: backup-create VOLUME --snapshot-id).
func TestAPISnapshotsWithCinder(t *testing.T) {
	e := startAPI(t, nil)
	xfs := xfsReflinkDir(t, 300<<20)
	path := filepath.Join(xfs, "db.img")
	testutil.WriteImage(t, path, 12<<20, 61, testutil.Mixed)
	v, err := e.svc.ManageVolume(e.adminCtx, gateway.ManageRequest{Path: path, Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	snap := dict(e.ok(nil, "snapshot-create", v.ID, "--name", "s1"))
	if snap["status"] != "available" || snap["volume_id"] != v.ID {
		t.Fatalf("snapshot-create: %v", snap)
	}
	want := testutil.SHA256File(t, path)
	testutil.ScatterWrites(t, path, 62, 0.05, 4<<10, 64<<10) // the volume moves on
	rows := table(e.ok(nil, "snapshot-list", "--volume-id", v.ID))
	if ids := column(rows, "ID"); len(ids) != 1 || ids[0] != snap["id"] {
		t.Fatalf("snapshot-list: %v", rows)
	}
	if d := dict(e.ok(nil, "snapshot-show", snap["id"])); d["name"] != "s1" {
		t.Fatalf("snapshot-show: %v", d)
	}
	b := dict(e.ok(nil, "backup-create", v.ID, "--snapshot-id", snap["id"]))
	got := e.waitBackup(b["id"], "available")
	if got.SnapshotID != snap["id"] {
		t.Fatalf("backup of a snapshot records snapshot %q", got.SnapshotID)
	}
	out := filepath.Join(t.TempDir(), "r.img")
	if _, err := e.svc.Restore(e.adminCtx, gateway.RestoreRequest{Backup: got.ID, To: out}); err != nil {
		t.Fatal(err)
	}
	e.waitBackup(got.ID, "available")
	if sha := testutil.SHA256File(t, out); sha != want {
		t.Fatalf("backup of the snapshot restores %s, want the volume at the snapshot %s", sha, want)
	}
	e.ok(nil, "snapshot-delete", snap["id"])
	e.fails("No snapshot with a name or ID", nil, "snapshot-show", snap["id"])
}

// TestAPISnapshotListPagesAndSorts: 'cinder snapshot-list' takes --sort, --marker and
// --limit as the backup and volume lists do.
func TestAPISnapshotListPagesAndSorts(t *testing.T) {
	e := startAPI(t, nil)
	path := filepath.Join(xfsReflinkDir(t, 300<<20), "db.img")
	testutil.WriteImage(t, path, 1<<20, 61, testutil.Mixed)
	v, err := e.svc.ManageVolume(e.adminCtx, gateway.ManageRequest{Path: path, Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]string{}
	for _, name := range []string{"sb", "sc", "sa"} {
		ids[name] = dict(e.ok(nil, "snapshot-create", v.ID, "--name", name))["id"]
	}
	names := func(args ...string) string {
		t.Helper()
		return strings.Join(column(table(e.ok(nil, append([]string{"snapshot-list"}, args...)...)), "Name"), " ")
	}
	for _, tc := range []struct {
		sort, want string
	}{{"name:asc", "sa sb sc"}, {"name:desc", "sc sb sa"}, {"created_at:asc", "sb sc sa"}} {
		if got := names("--sort", tc.sort); got != tc.want {
			t.Errorf("snapshot-list --sort %s: %s, want %s", tc.sort, got, tc.want)
		}
	}
	if got := names("--sort", "name:asc", "--marker", ids["sa"], "--limit", "1"); got != "sb" {
		t.Errorf("snapshot-list --sort name:asc after sa, one: %s, want sb", got)
	}
	if got := names("--sort", "name:desc", "--marker", ids["sb"]); got != "sa" {
		t.Errorf("snapshot-list --sort name:desc after sb: %s, want sa", got)
	}
}

// The index is a cache: rebuild-index on an empty state dir brings back volumes (names,
// descriptions, kinds, projects), snapshots, quotas and backups exactly as they were.
func TestRebuildIndexRestoresEverything(t *testing.T) {
	xfs := xfsReflinkDir(t, 300<<20)
	r := newCairnRepo(t, nil)
	vol := filepath.Join(xfs, "data.img")
	testutil.WriteImage(t, vol, 16*mib, 61, testutil.Mixed)
	r.mustRun("volume", "manage", vol, "--name", "data", "--description", "the data volume")
	r.mustRun("volume", "create", "--size", "8M", "--name", "scratch", "--description", "empty, never backed up")
	r.mustRun("--project", "p1", "volume", "create", "--size", "4M", "--name", "p1vol")
	r.mustRun("quota", "update", "p1", "--backups", "7", "--backup-gigabytes", "70")
	r.mustRun("quota", "update", "admin", "--backups", "50")
	r.mustRun("snapshot", "create", "data", "--name", "before-upgrade", "--description", "kept")
	full := r.createBackup("data", "--name", "nightly", "--description", "first")
	testutil.ScatterWrites(t, vol, 62, 0.01, 4<<10, 64<<10)
	incr := r.createBackup("data", "--incremental")
	p1 := r.createBackup("--project", "p1", "p1vol")
	// Each change after the commit rewrites the manifest, and the updated_at it stamps is the
	// one the rebuilt index shows: a protection, a new description, a verification, a restore.
	r.mustRun("backup", "protect", full.ID)
	r.mustRun("backup", "update", incr.ID, "--description", "after 1 % changed")
	r.mustRun("backup", "verify", p1.ID)
	restored := filepath.Join(t.TempDir(), "incr.img")
	r.restoreTo(incr.ID, restored)
	if got, want := testutil.SHA256File(t, restored), testutil.SHA256File(t, vol); got != want {
		t.Fatalf("restore of the incremental: sha256 %s, want %s", got, want)
	}

	snapshotOf := func(x *cairnRepo) map[string]string {
		out := map[string]string{}
		for name, args := range map[string][]string{
			"volumes":   {"volume", "list", "--all-projects"},
			"backups":   {"backup", "list", "--all-projects"},
			"snapshots": {"snapshot", "list", "--all-projects"},
			"quota p1":  {"quota", "show", "p1"},
			"quota adm": {"quota", "show", "admin"},
			"backup":    {"backup", "show", full.ID},
		} {
			out[name] = x.mustRun(append([]string{"--format", "json"}, args...)...)
		}
		return out
	}
	before := snapshotOf(r)
	if err := os.RemoveAll(filepath.Join(r.Dir, "index")); err != nil {
		t.Fatal(err)
	}
	r.mustRun("--quiet", "repo", "rebuild-index")
	after := snapshotOf(r)
	for k := range before {
		if before[k] != after[k] {
			t.Errorf("%s after rebuild-index differs:\nbefore: %s\nafter:  %s", k, before[k], after[k])
		}
	}
	r.checkClean()
}
