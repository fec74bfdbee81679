package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// Scenario 9: every bad input is refused with the right exit code and one line on stderr, and
// leaves the earlier backups intact.
func TestCLIBadInput(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 20, testutil.Mixed)
	earlier := r.chain(vol, 1, 900)

	contains := func(msg string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q does not say %q", msg, w)
			}
		}
	}

	r.mustFail([]int{2, 3}, "backup", "create", filepath.Join(dir, "missing.img"))
	r.mustFail([]int{2}, "backup", "create", dir)

	fresh := filepath.Join(dir, "fresh.img")
	testutil.WriteImage(t, fresh, 1*mib, 21, testutil.Random)
	contains(r.mustFail([]int{2}, "backup", "create", fresh, "--incremental"), "full backup first")

	// A loop device smaller than the backup.
	smallImg := filepath.Join(dir, "small-target.img")
	testutil.WriteImage(t, smallImg, 2*mib, 22, testutil.Random)
	smallDev := testutil.LoopDevice(t, smallImg, false)
	contains(r.mustFail([]int{2}, "backup", "restore", "--yes", earlier[0].backup.ID, "--to", smallDev), "smaller")
	smallFile := filepath.Join(dir, "small-file.img")
	testutil.WriteImage(t, smallFile, 1*mib, 25, testutil.Random)
	contains(r.mustFail([]int{2}, "backup", "restore", "--yes", earlier[0].backup.ID, "--to", smallFile), "smaller")

	// An image attached to a loop device, and a mounted loop device.
	attached := filepath.Join(dir, "attached.img")
	testutil.WriteImage(t, attached, 8*mib, 23, testutil.Mixed)
	testutil.LoopDevice(t, attached, false)
	attachedSHA := testutil.SHA256File(t, attached)
	contains(r.mustFail([]int{4}, "backup", "restore", "--yes", earlier[0].backup.ID, "--to", attached), "in use")
	if testutil.SHA256File(t, attached) != attachedSHA {
		t.Error("a refused restore changed the attached image")
	}
	contains(r.mustFail([]int{4}, "backup", "create", attached), "--force")

	fsImg := filepath.Join(dir, "fs.img")
	testutil.WriteImage(t, fsImg, 32*mib, 24, testutil.Sparse)
	fsDev := testutil.LoopDevice(t, fsImg, false)
	testutil.MakeExt4(t, fsDev)
	testutil.Mount(t, fsDev)
	// (No hash of the mounted device: ext4's lazy init writes to it in the background.)
	contains(r.mustFail([]int{4}, "backup", "restore", "--yes", earlier[0].backup.ID, "--to", fsDev), "in use")
	contains(r.mustFail([]int{4}, "backup", "create", fsDev), "--force")

	// Targets that are neither a file nor a block device, or a file in a missing directory.
	for _, target := range []string{"/dev/null", dir, filepath.Join(dir, "no-such-dir", "x.img")} {
		r.mustFail([]int{2}, "backup", "restore", "--yes", earlier[0].backup.ID, "--to", target)
	}

	r.mustFail([]int{4}, "repo", "init")
	for _, args := range [][]string{
		{"backup", "show", "0badc0de-0000-4000-8000-000000000000"},
		{"backup", "restore", "--yes", "0badc0de-0000-4000-8000-000000000000", "--to", filepath.Join(dir, "x.img")},
		{"backup", "delete", "--yes", "no-such-backup"},
		{"backup", "export", "no-such-backup"},
	} {
		r.mustFail([]int{3}, args...)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.img")); err == nil {
		t.Error("a restore of an unknown backup created its target")
	}
	r.mustFail([]int{2}, "--format", "xml", "backup", "list")

	// Commands against a directory with no repository, and a path that does not exist.
	empty := t.TempDir()
	for _, repoDir := range []string{empty, filepath.Join(empty, "does", "not", "exist")} {
		for _, args := range [][]string{{"backup", "list"}, {"backup", "create", vol}, {"repo", "check"}} {
			msg := checkFailure(t, runCairn(t, []string{"CAIRN_REPO=" + repoDir}, args...), []int{3}, args)
			contains(msg, "cairn repo init")
		}
	}
	for _, bad := range []string{"ftp://host/x", "s3://"} {
		checkFailure(t, runCairn(t, []string{"CAIRN_REPO=" + bad}, "backup", "list"), []int{2}, []string{"--repo", bad, "backup", "list"})
	}
	if _, err := os.Stat(filepath.Join(empty, "does")); err == nil {
		t.Error("a command against a missing repository created its directory")
	}

	// Nothing above touched the earlier backups.
	if bs := r.listBackups(); len(bs) != len(earlier) {
		t.Errorf("after the bad inputs %d backups are listed, want %d", len(bs), len(earlier))
	}
	r.checkRestoresToFiles(earlier, dir)
	r.checkClean()
}

// Scenario 10: the Cinder-style aliases run the same commands; --format json parses; --quiet
// prints no progress.
func TestCLIAliasesFormatsQuiet(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 6*mib, 30, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)

	// Without --quiet the (non-terminal) progress goes to stderr; with it, nothing does.
	res := r.run("backup-create", vol, "--name", "by-alias")
	if res.Code != 0 || !strings.Contains(res.Stderr, "backing up") {
		t.Fatalf("backup-create: exit %d, want progress lines on stderr, got %q", res.Code, res.Stderr)
	}
	res = r.run("--quiet", "backup-create", vol, "-i", "--name", "quiet")
	if res.Code != 0 || res.Stderr != "" {
		t.Fatalf("backup-create --quiet: exit %d, stderr %q; want 0 and nothing", res.Code, res.Stderr)
	}

	same := func(alias, sub []string) string {
		t.Helper()
		a, s := r.mustRun(alias...), r.mustRun(sub...)
		if a != s {
			t.Errorf("cairn %v and cairn %v differ:\n%s\n%s", alias, sub, a, s)
		}
		return a
	}
	var list []backupJSON
	if err := json.Unmarshal([]byte(same([]string{"-f", "json", "backup-list"}, []string{"-f", "json", "backup", "list"})), &list); err != nil {
		t.Fatalf("backup list --format json: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("backup list: %d backups, want 2", len(list))
	}
	full, inc := list[0], list[1]
	if full.Name != "by-alias" {
		full, inc = inc, full
	}
	if full.Name != "by-alias" || inc.Name != "quiet" || !inc.IsIncremental || inc.ParentID != full.ID {
		t.Fatalf("backup list: %+v, want by-alias (full) and quiet (its incremental)", list)
	}
	same([]string{"backup-show", inc.ID}, []string{"backup", "show", inc.ID})
	// The volume's listing counts its backups and names the last one.
	var vols []struct {
		Name         string `json:"name"`
		Backups      int    `json:"backups"`
		LastBackupID string `json:"last_backup_id"`
	}
	r.mustJSON(&vols, "volume", "list")
	if len(vols) != 1 || vols[0].Backups != 2 || vols[0].LastBackupID != inc.ID {
		t.Errorf("volume list: %+v, want its 2 backups, the last %s", vols, inc.ID)
	}
	if out := r.mustRun("volume", "show", vol); !strings.Contains(out, "last_backup") || !strings.Contains(out, inc.ID) {
		t.Errorf("volume show does not name the last backup %s:\n%s", inc.ID, out)
	}
	same([]string{"-f", "json", "backup-list", "--volume", vol}, []string{"-f", "json", "backup", "list", "--volume", vol})
	var exp exportJSON
	if err := json.Unmarshal([]byte(same([]string{"-f", "json", "backup-export", full.ID}, []string{"-f", "json", "backup", "export", full.ID})), &exp); err != nil {
		t.Fatalf("backup export --format json: %v", err)
	}

	for i, restore := range [][]string{{"backup-restore", "--yes"}, {"backup", "restore", "--yes"}} {
		out := filepath.Join(dir, "restored.img")
		res := r.run(append([]string{"--quiet"}, append(restore, inc.ID, "--to", out)...)...)
		if res.Code != 0 || res.Stderr != "" {
			t.Fatalf("%v --quiet: exit %d, stderr %q", restore, res.Code, res.Stderr)
		}
		if got := testutil.SHA256File(t, out); got != sha {
			t.Errorf("restore %d by %v: sha256 %s, want %s", i, restore, got, sha)
		}
		os.Remove(out)
	}

	// Restore to a new volume (the default) and onto a registered volume.
	var res1 struct {
		VolumeID string `json:"volume_id"`
		Path     string `json:"path"`
	}
	r.mustJSON(&res1, "--quiet", "backup-restore", inc.ID, "--name", "restored")
	if res1.VolumeID == "" || testutil.SHA256File(t, res1.Path) != sha {
		t.Errorf("restore to a new volume: %+v, want a new volume with the backup's content", res1)
	}
	other := filepath.Join(dir, "other.img")
	testutil.WriteImage(t, other, 6*mib, 31, testutil.Random)
	r.mustRun("volume", "manage", other, "--name", "other")
	r.mustRun("--quiet", "backup", "restore", "--yes", full.ID, "--volume", "other")
	if got := testutil.SHA256File(t, other); got != sha {
		t.Errorf("restore onto registered volume other: sha256 %s, want %s", got, sha)
	}

	// Import: refused alike while present; after its manifest is gone (deleted, not yet
	// garbage-collected), the alias brings it back.
	a := r.mustFail([]int{4}, "backup-import", exp.Service, exp.URL)
	s := r.mustFail([]int{4}, "backup", "import", exp.Service, exp.URL)
	if a != s {
		t.Errorf("backup-import and backup import refuse differently: %q, %q", a, s)
	}
	r.mustFail([]int{4}, "backup-delete", "--yes", full.ID)
	r.mustRun("backup-delete", "--yes", inc.ID)
	r.mustRun("backup-delete", "--yes", full.ID)
	if err := os.RemoveAll(filepath.Join(r.Dir, "index")); err != nil {
		t.Fatal(err)
	}
	var imported backupJSON
	r.mustJSON(&imported, "backup-import", exp.Service, exp.URL)
	if imported.ID != full.ID {
		t.Errorf("backup-import: got %+v, want backup %s", imported, full.ID)
	}
	r.checkRestoresToFiles([]pointInTime{{backup: full, sha: sha}}, dir)

	// Every command's JSON parses.
	for _, args := range [][]string{{"backup", "show", full.ID}, {"volume", "list"}, {"repo", "stats"}, {"repo", "check"}} {
		out := r.mustRun(append([]string{"--format", "json"}, args...)...)
		if !json.Valid([]byte(out)) {
			t.Errorf("cairn --format json %v: not JSON:\n%s", args, out)
		}
	}
}

// backup reset-state is cinder's backup-reset-state: several backups at once, one failing
// stops none (exit non-zero, naming it), and without --state the backups become available,
// as cinder's default is (cairn's was error, so `cairn backup-reset-state ID` as an
// OpenStack admin types it took a sound backup out of restores).
func TestResetStateAsCinderDoes(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, vol, 4*mib, 61, testutil.Mixed)
	a := r.createBackup(vol, "--name", "a")
	b := r.createBackup(vol, "--name", "b", "--incremental")
	status := func(id string) string {
		t.Helper()
		var got backupJSON
		r.mustJSON(&got, "backup", "show", id)
		return got.Status
	}
	var rows []backupJSON
	r.mustJSON(&rows, "backup", "reset-state", a.ID, "b", "--state", "error")
	if len(rows) != 2 || rows[0].Status != "error" || rows[1].Status != "error" {
		t.Fatalf("reset-state of two backups to error printed %+v", rows)
	}
	if sa, sb := status(a.ID), status(b.ID); sa != "error" || sb != "error" {
		t.Fatalf("after reset-state --state error of both: %s, %s", sa, sb)
	}
	res := r.run("backup-reset-state", a.ID, "nosuch", b.ID)
	if res.Code == 0 || !strings.Contains(res.Stderr, "nosuch: failed") || !strings.Contains(res.Stderr, "1 of 3 backups not reset (nosuch)") {
		t.Fatalf("reset-state with an unknown backup between two: exit %d, stderr %q", res.Code, res.Stderr)
	}
	if sa, sb := status(a.ID), status(b.ID); sa != "available" || sb != "available" {
		t.Fatalf("after reset-state without --state: %s, %s; want both available, as cinder's default", sa, sb)
	}
	r.restoreMatches(b.ID, testutil.SHA256File(t, vol), dir)
	// One backup: its properties, as before.
	out := r.mustRun("backup", "reset-state", "a", "--state", "error")
	if !strings.Contains(out, "| status ") || !strings.Contains(out, "error") {
		t.Fatalf("reset-state of one backup printed:\n%s", out)
	}
}

// backup delete takes several backups, as cinder's backup-delete does, and deletes them
// newest first whatever the order given, so a whole chain named oldest first goes (only the
// latest backup of a chain may be deleted); one failing stops none.
func TestDeleteSeveralNewestFirst(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, vol, 4*mib, 62, testutil.Mixed)
	full := r.createBackup(vol, "--name", "full")
	inc1 := r.createBackup(vol, "--name", "inc1", "--incremental")
	inc2 := r.createBackup(vol, "--name", "inc2", "--incremental")
	other := filepath.Join(dir, "other.img")
	testutil.WriteImage(t, other, 4*mib, 63, testutil.Mixed)
	kept := r.createBackup(other, "--name", "kept")
	res := r.run("--format", "json", "backup-delete", "-y", full.ID, "nosuch", inc1.ID, "inc2")
	if res.Code == 0 || !strings.Contains(res.Stderr, "nosuch: failed") || !strings.Contains(res.Stderr, "1 of 4 backups not deleted (nosuch)") {
		t.Fatalf("delete of a chain and an unknown backup: exit %d, stderr %q", res.Code, res.Stderr)
	}
	var out []map[string]string
	if err := json.Unmarshal([]byte(res.Stdout), &out); err != nil {
		t.Fatalf("stdout is not JSON: %v\n%s", err, res.Stdout)
	}
	var order []string
	for _, d := range out {
		order = append(order, d["id"])
	}
	if want := []string{inc2.ID, inc1.ID, full.ID}; strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("deleted %v, want the chain newest first %v", order, want)
	}
	left := r.listBackups()
	if len(left) != 1 || left[0].ID != kept.ID {
		t.Fatalf("backups left: %+v, want only %s", left, kept.ID)
	}
	r.mustRun("repo", "gc")
	r.restoreMatches(kept.ID, testutil.SHA256File(t, other), dir)
	r.checkClean()
}

// The cinder-style list verbs take cinder's flags: backup-list --all-tenants, --volume-id,
// --name, --sort KEY[:DIR] and --limit N, snapshot-list --all-tenants; a bad sort key or
// limit is a usage error (exit 2) that names the keys. Before, each was an unknown flag to an
// OpenStack admin typing what cinder takes.
func TestListsTakeCindersFlags(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, vol, 2*mib, 64, testutil.Mixed)
	other := filepath.Join(dir, "db.img")
	testutil.WriteImage(t, other, 3*mib, 65, testutil.Mixed)
	r.mustRun("volume", "manage", vol, "--name", "vm")
	r.mustRun("volume", "manage", other, "--name", "db", "--project", "p1")
	b1 := r.createBackup("vm", "--name", "nightly")
	b2 := r.createBackup("vm", "--name", "weekly")
	b3 := r.createBackup("db", "--name", "nightly", "--project", "p1")
	ids := func(args ...string) string {
		t.Helper()
		var bs []backupJSON
		r.mustJSON(&bs, append([]string{"backup-list"}, args...)...)
		var out []string
		for _, b := range bs {
			out = append(out, b.ID)
		}
		return strings.Join(out, " ")
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--all-tenants", "--sort", "created_at:desc"}, []string{b3.ID, b2.ID, b1.ID}},
		{[]string{"--all-tenants", "--sort", "created_at:desc", "--limit", "2"}, []string{b3.ID, b2.ID}},
		{[]string{"--all-tenants", "--name", "nightly"}, []string{b1.ID, b3.ID}},
		{[]string{"--volume-id", "vm", "--sort", "name:desc"}, []string{b2.ID, b1.ID}},
		{[]string{"--all-tenants", "--sort", "size"}, []string{b1.ID, b2.ID, b3.ID}},
		{[]string{"--name", "nightly"}, []string{b1.ID}}, // project admin's only
	} {
		if got := ids(c.args...); got != strings.Join(c.want, " ") {
			t.Errorf("backup-list %s: %s, want %s", strings.Join(c.args, " "), got, strings.Join(c.want, " "))
		}
	}
	var vols []map[string]any
	r.mustJSON(&vols, "volume", "list", "--all-tenants")
	if len(vols) != 2 {
		t.Errorf("volume list --all-tenants: %d volumes, want 2", len(vols))
	}
	r.mustRun("snapshot-list", "--all-tenants")
	for _, bad := range [][]string{{"--sort", "colour"}, {"--sort", "name:up"}, {"--limit", "-1"}} {
		res := r.run(append([]string{"backup-list"}, bad...)...)
		if res.Code != 2 || !strings.Contains(res.Stderr, bad[0]+" "+bad[1]) {
			t.Errorf("backup-list %s: exit %d, stderr %q; want a usage error naming it", strings.Join(bad, " "), res.Code, res.Stderr)
		}
	}
}

// backup create takes cinder's --metadata and --container (only this repository's location),
// and backup update (backup-update) renames, redescribes and re-tags a backup; what it changes
// is in the manifest, so an index rebuilt from the repository has it.
func TestBackupMetadataAndUpdate(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, vol, 2*mib, 66, testutil.Mixed)
	type described struct {
		ID          string            `json:"id"`
		Name        string            `json:"name"`
		Description string            `json:"description"`
		Metadata    map[string]string `json:"metadata"`
		Container   string            `json:"container"`
	}
	var b described
	r.mustJSON(&b, "--quiet", "backup-create", vol, "--name", "n1", "--metadata", "tier=gold", "--metadata", "owner=ops=2")
	if b.Metadata["tier"] != "gold" || b.Metadata["owner"] != "ops=2" || len(b.Metadata) != 2 {
		t.Fatalf("backup created with metadata: %+v", b)
	}
	var again described
	r.mustJSON(&again, "--quiet", "backup", "create", vol, "--container", b.Container)
	for _, bad := range [][]string{{"--container", "elsewhere"}, {"--metadata", "novalue"}, {"--metadata", "=v"}} {
		res := r.run(append([]string{"backup", "create", vol}, bad...)...)
		if res.Code != 2 || !strings.Contains(res.Stderr, bad[0]) {
			t.Errorf("backup create %s: exit %d, stderr %q; want a usage error naming it", strings.Join(bad, " "), res.Code, res.Stderr)
		}
	}
	if res := r.run("backup", "update", b.ID); res.Code != 2 {
		t.Errorf("backup update with nothing to change: exit %d, stderr %q", res.Code, res.Stderr)
	}
	var u described
	r.mustJSON(&u, "backup-update", "n1", "--name", "kept", "--description", "before the upgrade", "--metadata", "ticket=42")
	if u.ID != b.ID || u.Name != "kept" || u.Description != "before the upgrade" || len(u.Metadata) != 1 || u.Metadata["ticket"] != "42" {
		t.Fatalf("after backup-update: %+v", u)
	}
	r.mustRun("repo", "rebuild-index")
	var rebuilt described
	r.mustJSON(&rebuilt, "backup", "show", b.ID)
	if rebuilt.Name != "kept" || rebuilt.Description != "before the upgrade" || len(rebuilt.Metadata) != 1 || rebuilt.Metadata["ticket"] != "42" {
		t.Fatalf("after rebuild-index: %+v, want the update kept", rebuilt)
	}
	r.mustJSON(&u, "backup", "update", "kept", "--name", "")
	if u.Name != "" || u.Description != "before the upgrade" {
		t.Fatalf("after clearing the name: %+v", u)
	}
}

// backup create --pre-hook/--post-hook and a policy's hooks, through the real binary: the
// backup holds what the pre-hook wrote and not what the post-hook wrote; policy show says
// what hooks run; a failing pre-hook is a clear error with nothing backed up.
func TestHooksFromTheCLI(t *testing.T) {
	r := newCairnRepo(t, nil)
	dir := t.TempDir()
	vol := filepath.Join(testutil.XFSReflinkDir(t, 1<<30), "vm.img")
	testutil.WriteImage(t, vol, 1*mib, 67, testutil.Random)
	r.mustRun("volume", "manage", vol, "--name", "vm")
	pre := `printf PRE | dd of="$CAIRN_VOLUME_PATH" bs=1 seek=0 conv=notrunc status=none`
	post := `printf POST | dd of="$CAIRN_VOLUME_PATH" bs=1 seek=0 conv=notrunc status=none`
	b := r.createBackup("vm", "--pre-hook", pre, "--post-hook", post, "--hook-timeout", "1m")
	out := filepath.Join(dir, "out.img")
	r.mustRun("--quiet", "backup", "restore", b.ID, "--to", out, "--yes")
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(got[:3]) != "PRE" {
		t.Errorf("the backup begins %q, want what the pre-hook wrote before its point in time", got[:4])
	}
	res := r.run("backup", "create", "vm", "--pre-hook", "echo cannot freeze >&2; exit 2")
	if res.Code == 0 || !strings.Contains(res.Stderr, "pre-hook") || !strings.Contains(res.Stderr, "cannot freeze") || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
		t.Errorf("backup whose pre-hook fails: exit %d, stderr %q; want one line naming the hook and its output", res.Code, res.Stderr)
	}
	if n := len(r.listBackups()); n != 1 {
		t.Errorf("backups after the failed pre-hook: %d, want 1", n)
	}
	r.mustRun("policy", "create", "nightly", "--volume", "vm", "--schedule", "daily", "--keep-last", "2", "--pre-hook", pre)
	if show := r.mustRun("policy", "show", "nightly"); !strings.Contains(show, "pre: printf PRE") {
		t.Errorf("policy show does not say its hooks:\n%s", show)
	}
	r.mustRun("policy", "update", "nightly", "--post-hook", post)
	if show := r.mustRun("policy", "show", "nightly"); !strings.Contains(show, "pre: printf PRE") || !strings.Contains(show, "post: printf POST") {
		t.Errorf("policy show after --post-hook was added:\n%s", show)
	}
}

// snapshot delete takes several snapshots, as cinder's snapshot-delete does; one failing stops
// none, and the error names it.
func TestSnapshotDeleteSeveral(t *testing.T) {
	r := newCairnRepo(t, nil)
	vol := filepath.Join(testutil.XFSReflinkDir(t, 1<<30), "vm.img")
	testutil.WriteImage(t, vol, 1*mib, 68, testutil.Random)
	r.mustRun("volume", "manage", vol, "--name", "vm")
	files := func() int {
		t.Helper()
		entries, err := os.ReadDir(filepath.Dir(vol))
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}
	before := files()
	r.mustRun("snapshot", "create", "vm", "--name", "s1")
	r.mustRun("snapshot", "create", "vm", "--name", "s2")
	res := r.run("snapshot-delete", "s1", "nosuch", "s2")
	if res.Code == 0 || !strings.Contains(res.Stderr, "nosuch: failed") || !strings.Contains(res.Stderr, "1 of 3 snapshots not deleted (nosuch)") {
		t.Fatalf("snapshot-delete of two snapshots and an unknown one: exit %d, stderr %q", res.Code, res.Stderr)
	}
	if strings.Count(res.Stdout, " deleted\n") != 2 {
		t.Errorf("snapshot-delete said:\n%s", res.Stdout)
	}
	var left []map[string]any
	r.mustJSON(&left, "snapshot", "list")
	if len(left) != 0 {
		t.Errorf("snapshots left: %v", left)
	}
	if n := files(); n != before {
		t.Errorf("files beside the volume after the snapshots' delete: %d, want %d as before them", n, before)
	}
}
