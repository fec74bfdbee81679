package gateway_test

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// concerned reports whether the overview g gives ctx's caller has a concern of kind about
// subject ("" for any) whose message says text.
func concerned(t *testing.T, g *gateway.Service, ctx context.Context, kind, subject, text string) bool {
	t.Helper()
	o, err := g.Overview(ctx, gateway.OverviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range o.Concerns {
		if (kind == "" || c.Kind == kind) && (subject == "" || c.Subject == subject) && strings.Contains(c.Message, text) {
			return true
		}
	}
	return false
}

// A backup whose manifest was removed outside cairn (its copy left, no delete begun) is lost,
// not deleted: the gateway keeps its record, its restore is refused saying the manifest is
// lost and that repair stores it again (damage, exit 8 in the CLI), and a gateway whose index
// never had it says the same on a lookup by id to those who see its project; another
// project's member finds nothing and learns nothing of it. Repair stores the manifest again,
// and the backup restores byte-exact (docs/design.md, "A manifest lost, its copy left").
func TestALostManifestIsReportedToItsProjectAndRepaired(t *testing.T) {
	s, dir := newService(t)
	// Another gateway, whose first catch-up runs before the backup: its index never has the
	// record.
	other := gatewayOn(t, filepath.Join(dir, "repo"), filepath.Join(dir, "state-other"))
	b := backedUp(t, s, dir)
	if err := os.Remove(filepath.Join(dir, "repo", "manifests", b.ID)); err != nil {
		t.Fatal(err)
	}
	member := as("alice", gateway.DefaultProject, false)
	if _, err := s.Restore(member, gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "early.img")}); !errors.Is(err, repo.ErrLostManifest) {
		t.Fatalf("a restore of a backup whose manifest is lost: %v; want it refused as a lost manifest", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "early.img")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore left a file: %v", err)
	}
	// The full catch-up (within a minute in cairn serve, at every start of the CLI) keeps the
	// record: the backup is lost, not deleted, and still counts in its project's quota.
	// Before, it dropped the record and nothing more was said of the backup.
	if err := s.SyncBackups(adminCtx()); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Backup(member, b.ID); err != nil || got.ID != b.ID {
		t.Fatalf("the record of a backup whose manifest is lost, after a catch-up: %+v, %v; want it kept", got, err)
	}
	lostConcern := func() bool {
		t.Helper()
		return concerned(t, s, member, gateway.ConcernBackupDamaged, b.ID, "its manifest is missing")
	}
	if !lostConcern() {
		t.Error("the overview does not name the backup whose manifest is lost")
	}
	// A gateway whose index is not new and never had the record does not adopt the backup at
	// its catch-up, but a lookup by its id says what is wrong.
	if err := other.SyncBackups(adminCtx()); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Backup(member, b.ID); !errors.Is(err, repo.ErrLostManifest) || !errors.Is(err, repo.ErrCorrupt) ||
		!strings.Contains(err.Error(), "'cairn repo repair' stores the manifest again") {
		t.Fatalf("a lookup of a backup whose manifest is lost: %v; want the loss named, as damage", err)
	}
	if _, err := other.Backup(as("mallory", "p2", false), b.ID); !errors.Is(err, gateway.ErrNotFound) || strings.Contains(err.Error(), "manifest") {
		t.Fatalf("another project's member looks up the lost backup: %v; want not found, and nothing said of it", err)
	}
	rep, err := s.Repair(adminCtx(), gateway.RepairOptions{})
	if err != nil || rep.LostManifests != 1 || rep.Problems != 0 {
		t.Fatalf("repair: %+v, %v; want the lost manifest stored again and no problem left", rep, err)
	}
	got, err := s.Backup(member, b.ID)
	if err != nil || got.ID != b.ID || !got.Status.Committed() {
		t.Fatalf("the backup after repair: %+v, %v", got, err)
	}
	if lostConcern() {
		t.Error("the overview still names the backup after repair stored its manifest again")
	}
	out := filepath.Join(dir, "restored.img")
	if _, err := s.Restore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: out}); err != nil {
		t.Fatal(err)
	}
	if testutil.SHA256File(t, out) != testutil.SHA256File(t, filepath.Join(dir, "vm.img")) {
		t.Fatal("the backup whose manifest repair stored again does not restore byte-exact")
	}
}

// A new index (a new state dir, or one moved aside) adopts a backup whose manifest is lost from
// its intact copy at its first catch-up, and so does rebuild-index: deleting an index never
// hides a lost backup. The backup lists to its project (not to another's), is named in the
// overview, its restore is refused as a lost manifest, and after repair it restores
// byte-exact through the new index (docs/design.md, "A manifest lost, its copy left").
func TestANewIndexAdoptsALostBackup(t *testing.T) {
	s, dir := newService(t)
	repoDir := filepath.Join(dir, "repo")
	old := gatewayOn(t, repoDir, filepath.Join(dir, "state-old")) // bound before the backup
	b := backedUp(t, s, dir)
	if err := os.Remove(filepath.Join(repoDir, "manifests", b.ID)); err != nil {
		t.Fatal(err)
	}
	member := as("alice", gateway.DefaultProject, false)
	fresh := gatewayOn(t, repoDir, filepath.Join(dir, "state-fresh"))
	listed := func(g *gateway.Service, c context.Context) bool {
		t.Helper()
		bs, err := g.ListBackups(c, gateway.ListFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range bs {
			if x.ID == b.ID {
				return true
			}
		}
		return false
	}
	if !listed(fresh, member) {
		t.Fatal("a new index does not list the backup whose manifest is lost")
	}
	if listed(fresh, as("mallory", "p2", false)) {
		t.Fatal("another project's member sees the lost backup")
	}
	if !concerned(t, fresh, member, gateway.ConcernBackupDamaged, b.ID, "") {
		t.Error("the new index's overview does not name the lost backup")
	}
	if _, err := fresh.Restore(member, gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "early.img")}); !errors.Is(err, repo.ErrLostManifest) {
		t.Fatalf("a restore through the new index: %v; want it refused as a lost manifest", err)
	}
	// Its next catch-ups keep the record, as any gateway that has it.
	if err := fresh.SyncBackups(adminCtx()); err != nil || !listed(fresh, member) {
		t.Fatalf("after a second catch-up: %v, listed %v", err, listed(fresh, member))
	}
	// rebuild-index on an index that never had the record adopts it too.
	if listed(old, member) {
		t.Fatal("the old index had the record before its rebuild")
	}
	if _, err := old.RebuildIndex(adminCtx(), nil); err != nil || !listed(old, member) {
		t.Fatalf("rebuild-index: %v, listed %v; want the lost backup recorded", err, listed(old, member))
	}
	if rep, err := fresh.Repair(adminCtx(), gateway.RepairOptions{}); err != nil || rep.LostManifests != 1 {
		t.Fatalf("repair: %+v, %v", rep, err)
	}
	out := filepath.Join(dir, "restored.img")
	if _, err := fresh.Restore(member, gateway.RestoreRequest{Backup: b.ID, To: out}); err != nil {
		t.Fatal(err)
	}
	if testutil.SHA256File(t, out) != testutil.SHA256File(t, filepath.Join(dir, "vm.img")) {
		t.Fatal("the backup restored through the new index differs")
	}
}

// A volume's record and a project's quota record removed outside cairn (their second copies
// left) are learned from the copies by an index made anew, as the indexes that had them keep
// them: it lists the volume, holds the project to its limits and names both, and so does
// rebuild-index on an index that never had them. The volume's next backup stores its record
// again. Before, a new index had neither: the volume was gone and the limits were the defaults
// (docs/design.md, "A metadata object lost, its copy left").
func TestANewIndexLearnsLostVolumeAndQuotaRecords(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, _, v := managedOnA(t, dir) // b has not caught up since: it knows neither
	admin := adminCtx()
	one := int64(1)
	if _, err := a.QuotaUpdate(admin, gateway.DefaultProject, &one, nil); err != nil {
		t.Fatal(err)
	}
	volRec := filepath.Join(repoDir, "meta", "volumes", hex.EncodeToString([]byte(v.ID)))
	for _, p := range []string{volRec, filepath.Join(repoDir, "meta", "quotas", hex.EncodeToString([]byte(gateway.DefaultProject)))} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	learned := func(g *gateway.Service, how string) {
		t.Helper()
		if _, err := g.Volume(admin, "vm"); err != nil {
			t.Fatalf("%s: the volume whose record is lost: %v", how, err)
		}
		if u, err := g.QuotaUsage(admin, gateway.DefaultProject); err != nil || u.Backups.Limit != 1 {
			t.Fatalf("%s: the quota whose record is lost: %+v, %v; want a limit of 1", how, u, err)
		}
		if !concerned(t, g, admin, gateway.ConcernVolumeError, "vm", "second copy is left") {
			t.Errorf("%s: the overview does not name the volume whose record is missing", how)
		}
		if !concerned(t, g, admin, gateway.ConcernQuota, "", "quota record in the repository is missing") {
			t.Errorf("%s: the overview does not name the quota whose record is missing", how)
		}
	}
	fresh := gatewayOn(t, repoDir, filepath.Join(dir, "state-fresh"))
	learned(fresh, "a new index")
	if err := fresh.SyncBackups(admin); err != nil {
		t.Fatal(err)
	}
	learned(fresh, "a new index's second catch-up")
	if _, err := b.Volume(admin, "vm"); err == nil {
		t.Fatal("the other gateway knew the volume before its rebuild")
	}
	if _, err := b.RebuildIndex(admin, nil); err != nil {
		t.Fatal(err)
	}
	learned(b, "rebuild-index")
	if _, err := fresh.CreateBackup(admin, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(volRec); err != nil {
		t.Fatalf("the volume's backup through the new index did not store its record again: %v", err)
	}
}

// A protection whose manifest copy could not be stored fails, and a backup whose manifest is
// damaged is not deleted on its copy's word: a copy left older than its manifest (its
// protection not in it) stood in for the damaged manifest, the record turned unprotected and
// the delete went ahead (found by review).
func TestADeleteDoesNotTrustAManifestCopy(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol := image(t, dir, "vm.img", 256<<10)
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	f := faultyRepository(t, s)
	f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "manifest-copies/"})
	if _, err := s.ProtectBackup(ctx, b.ID, true); err == nil || !strings.Contains(err.Error(), "second copy") {
		t.Fatalf("protect whose manifest copy was not stored: %v, want it failed", err)
	}
	f.Reset()
	key := damageManifest(t, dir, b.ID)
	if _, err := s.DeleteBackup(ctx, b.ID, false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "repo repair") {
		t.Fatalf("delete of a backup whose manifest is damaged: %v, want it refused until a repair", err)
	}
	if _, err := os.Stat(key); err != nil {
		t.Fatalf("the manifest after the refused delete: %v", err)
	}
}

// A rewrite of a backup whose manifest is damaged and whose copy is older (a protection that
// is not in the copy: a crash between the two Puts, or an earlier cairn) keeps the protection
// the record shows: the rename below stored the copy's "unprotected" as a sound manifest, and
// the delete that followed took its word (found by review).
func TestARewriteFromAnOlderCopyKeepsTheProtection(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: image(t, dir, "vm.img", 256<<10)})
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "repo", "manifest-copies", b.ID)
	older, err := os.ReadFile(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ProtectBackup(ctx, b.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, older, 0o600); err != nil {
		t.Fatal(err)
	}
	damageManifest(t, dir, b.ID)
	name := "renamed"
	if _, err := s.UpdateBackup(ctx, b.ID, gateway.BackupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackup(ctx, b.ID, false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "protected") {
		t.Fatalf("delete of the protected backup after a rewrite from its older copy: %v, want it refused as protected", err)
	}
}

// damageManifest flips a bit in the middle of backup id's manifest in newService's repository
// under dir, its second copy left as it is, and returns the manifest's path.
func damageManifest(t *testing.T, dir, id string) string {
	t.Helper()
	key := filepath.Join(dir, "repo", "manifests", id)
	m, err := os.ReadFile(key)
	if err != nil {
		t.Fatal(err)
	}
	m[len(m)/2] ^= 0x10
	if err := os.WriteFile(key, m, 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}
