package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// TestQuotasAndProjects: quotas refuse creates that would overshoot (nothing written),
// deleting gives quota back, and an admin's backup placed in another project is counted
// there and hidden from the volume's own project (seed 3.1.2, 3.4).
func TestQuotasAndProjects(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 3<<20, 51, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm")

	r.mustRun("quota", "update", "admin", "--backups", "2")
	var q struct{ Backups, BackupGigabytes int64 }
	r.mustJSON(&q, "quota-show", "admin")
	if q.Backups != 2 {
		t.Fatalf("quota-show after update: %+v", q)
	}
	first := r.createBackup("vm")
	r.createBackup("vm", "--incremental")
	manifests := func() int {
		m, _ := filepath.Glob(filepath.Join(r.Dir, "manifests", "*"))
		return len(m)
	}
	before := manifests()
	line := r.mustFail([]int{5}, "backup", "create", "vm", "--incremental")
	if !strings.Contains(line, "backups") || !strings.Contains(line, "2") {
		t.Fatalf("quota refusal %q does not name the quota and its numbers", line)
	}
	if n := len(r.listBackups()); n != 2 || manifests() != before {
		t.Fatalf("a refused create wrote something: %d backups, %d manifests (want 2, %d)", n, manifests(), before)
	}
	var u struct {
		Backups struct {
			InUse    int64 `json:"in_use"`
			Reserved int64 `json:"reserved"`
			Limit    int64 `json:"limit"`
		} `json:"backups"`
	}
	r.mustJSON(&u, "quota", "usage", "admin")
	if u.Backups.Limit != 2 || u.Backups.InUse != 2 || u.Backups.Reserved != 0 {
		t.Fatalf("quota usage: %+v", u)
	}
	// Deleting the latest gives its quota back.
	latest := r.listBackups()[1]
	r.mustRun("backup", "delete", "--yes", latest.ID)
	r.createBackup("vm", "--incremental")

	// An admin acting in project p1 backs up admin's volume: the backup is p1's.
	var forP1 backupJSON
	r.mustJSON(&forP1, "--quiet", "--project", "p1", "backup", "create", "vm")
	for _, b := range r.listBackups() {
		if b.ID == forP1.ID {
			t.Fatal("a backup placed in p1 shows in the volume owner's project")
		}
	}
	var inP1 []backupJSON
	r.mustJSON(&inP1, "--project", "p1", "backup", "list")
	if len(inP1) != 1 || inP1[0].ID != forP1.ID {
		t.Fatalf("p1's backup list: %+v", inP1)
	}
	var p1use struct {
		Backups struct {
			InUse int64 `json:"in_use"`
		} `json:"backups"`
	}
	r.mustJSON(&p1use, "quota", "usage", "p1")
	if p1use.Backups.InUse != 1 {
		t.Fatalf("p1 usage after an admin's backup for p1: %+v", p1use)
	}
	var all []backupJSON
	r.mustJSON(&all, "backup", "list", "--all-projects")
	if len(all) != 3 {
		t.Fatalf("--all-projects: %d backups, want 3", len(all))
	}
	// It restores byte-exact.
	out := filepath.Join(dir, "p1.img")
	r.mustRun("--quiet", "--project", "p1", "backup", "restore", "--yes", forP1.ID, "--to", out)
	if testutil.SHA256File(t, out) != testutil.SHA256File(t, img) {
		t.Fatal("p1's backup does not restore to the volume")
	}

	// Incrementals chain only within their project: p1's backup is the volume's newest, but
	// p2 has none to build on, and the admin's incremental builds on the admin's own latest.
	line = r.mustFail([]int{2}, "--project", "p2", "backup", "create", "vm", "--incremental")
	if !strings.Contains(line, "no available backup") {
		t.Fatalf("an incremental for p2 with only p1's backup of the volume: %q", line)
	}
	r.mustRun("quota", "update", "admin", "--backups", "3")
	adminLatest := r.listBackups()[1]
	inc := r.createBackup("vm", "--incremental")
	if inc.ParentID != adminLatest.ID {
		t.Fatalf("the admin's incremental has parent %s, want the admin's latest %s (p1's is %s)", inc.ParentID, adminLatest.ID, forP1.ID)
	}
	incOut := filepath.Join(dir, "inc.img")
	r.restoreTo(inc.ID, incOut)
	if testutil.SHA256File(t, incOut) != testutil.SHA256File(t, img) {
		t.Fatal("the admin's incremental does not restore to the volume")
	}
	// Nothing of another project hangs on p1's backup: p1 can delete it.
	r.mustRun("--project", "p1", "backup", "delete", "--yes", forP1.ID)
	var leftP1 []backupJSON
	r.mustJSON(&leftP1, "--project", "p1", "backup", "list")
	if len(leftP1) != 0 {
		t.Fatalf("p1's backup list after its delete: %+v", leftP1)
	}
	_ = first
	_ = os.Remove(out)
}
