package gateway_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// markObjects lists the repository's mark objects of damaged copies (under dir/repo).
func markObjects(t *testing.T, dir string) []string { return repoFiles(t, dir, "meta", "damaged", "*") }

// indexMadeAnew opens a gateway on a new repository in dir, runs before with it, closes it and
// deletes its index (a cache), and returns a gateway opened on the same state directory.
func indexMadeAnew(t *testing.T, dir string, before func(a *gateway.Service)) *gateway.Service {
	t.Helper()
	cfg := newRepo(t, dir)
	a, err := gateway.Open(adminCtx(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	before(a)
	a.Close()
	if err := os.RemoveAll(cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	return gatewayOn(t, cfg.Repo, cfg.StateDir)
}

// concernsOf counts the concerns of kind in s's overview for the admin.
func concernsOf(t *testing.T, s *gateway.Service, kind string) int {
	t.Helper()
	o, err := s.Overview(adminCtx(), gateway.OverviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range o.Concerns {
		if c.Kind == kind {
			n++
		}
	}
	return n
}

// damagedOnA backs up a 1 MiB volume of distinct blocks through gateway a, damages one block
// of its pack and verifies it through a, which finds the damage. It returns the volume's
// sha256 and the backup.
func damagedOnA(t *testing.T, a *gateway.Service, dir string) (string, string) {
	t.Helper()
	ctx := adminCtx()
	vol, want := distinctVolume(t, dir, "vm.img", 17)
	full, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	damagePack(t, onlyPack(t, dir))
	if res, err := a.VerifyBackup(ctx, full.ID, nil); !errors.Is(err, repo.ErrCorrupt) || res == nil || res.LostBytes != 16<<10 {
		t.Fatalf("verify of the damaged backup: %+v, %v; want 16 KiB lost", res, err)
	}
	if ms := markObjects(t, dir); len(ms) != 1 {
		t.Fatalf("mark objects after the verification: %v; want one", ms)
	}
	return want, full.ID
}

// Any backup on another gateway stores the block again once its full catch-up learned the
// marks: one of another volume that holds the same data.
func TestDamageFoundOnOneGatewayIsNotReusedByAnotherVolume(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	damagedOnA(t, a, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	catchUp(t, b)
	if n := storedBy(t, b, copyOf(t, filepath.Join(dir, "vm.img"), dir, "same.img")); n < 16<<10 || n > 2*16<<10 {
		t.Fatalf("gateway b's backup of the same data stored %d bytes, want the damaged block again (16 KiB and its seal)", n)
	}
}

// storedBy backs up path through s and returns the bytes the backup stored.
func storedBy(t *testing.T, s *gateway.Service, path string) int64 {
	t.Helper()
	bk, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: path})
	if err != nil {
		t.Fatal(err)
	}
	return bk.Stats.NewBytes
}

// copyOf copies the file at path to dir/name (another volume with the same data).
func copyOf(t *testing.T, path, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A copy one gateway found damaged is not reused by another gateway on the same repository:
// its next backup of the same data stores the block again, and that mends the damaged backup
// for both. Before, the mark was the finder's index's alone, and the other gateway's backup
// deduplicated against the damaged copy and was committed available, and damaged.
func TestDamageFoundOnOneGatewayIsStoredAgainByAnother(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	ctx := adminCtx()
	want, id := damagedOnA(t, a, dir)
	// Within a minute of its last full catch-up, b learns of the verification (the backup
	// log) and not of the marks, until an incremental on the damaged backup, which is a full
	// backup, learns them before it reads.
	catchUp(t, b)
	bk, err := b.CreateBackup(ctx, gateway.BackupRequest{Volume: filepath.Join(dir, "vm.img"), Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := bk.Stats.NewBytes; bk.ParentID != "" || n < 16<<10 || n > 2*16<<10 {
		t.Fatalf("gateway b's incremental on the damaged backup: parent %q, stored %d bytes; want a full backup that stores the damaged block again (16 KiB and its seal)", bk.ParentID, n)
	}
	catchUp(t, a)
	for name, s := range map[string]*gateway.Service{"a": a, "b": b} {
		if res, err := s.VerifyBackup(ctx, id, nil); err != nil || res.Result != repo.VerifyOK {
			t.Errorf("verify through %s of the backup b mended: %+v, %v; want ok", name, res, err)
		}
		if got := restoreSHA(t, s, ctx, id); got != want {
			t.Errorf("restore through %s of the backup b mended: sha256 %s, want %s", name, got, want)
		}
	}
}

// An index made anew (the old one deleted: it is a cache) keeps the marks: the first backup
// after it stores the damaged block again.
func TestNewIndexKeepsTheMarksOfDamagedCopies(t *testing.T) {
	dir := t.TempDir()
	var want, id string
	s := indexMadeAnew(t, dir, func(a *gateway.Service) { want, id = damagedOnA(t, a, dir) })
	if n := storedBy(t, s, filepath.Join(dir, "vm.img")); n < 16<<10 || n > 2*16<<10 {
		t.Fatalf("the first backup after the index was made anew stored %d bytes, want the damaged block again", n)
	}
	if got := restoreSHA(t, s, adminCtx(), id); got != want {
		t.Errorf("restore of the mended backup: sha256 %s, want %s", got, want)
	}
}

// gc keeps the mark object of a copy whose pack is still stored (some index may read it
// there) and deletes it once gc deleted the pack.
func TestGCDeletesTheMarksOfDeletedPacks(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	_, id := damagedOnA(t, s, dir)
	if _, err := s.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if ms := markObjects(t, dir); len(ms) != 1 {
		t.Fatalf("mark objects after a gc that kept the pack: %v; want the one", ms)
	}
	if _, err := s.DeleteBackup(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if st, err := s.GC(ctx, repo.GCOptions{}); err != nil || st.PacksDeleted != 1 {
		t.Fatalf("gc after the delete: %+v, %v; want the pack deleted", st, err)
	}
	if ms := markObjects(t, dir); len(ms) != 0 {
		t.Errorf("mark objects after gc deleted their pack: %v; want none", ms)
	}
}

// Once a later backup stored the block a verification lost, the damaged backup is recorded
// mended (a verification ok) at the next full catch-up, on every gateway, and `cairn status`
// no longer lists it: before, it stayed damaged, and its alert firing, until someone verified
// it again or ran repair. One whose lost block was not stored again stays damaged.
func TestDamagedBackupMendedByALaterBackupSaysSo(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	ctx := adminCtx()
	want, id := damagedOnA(t, a, dir)
	lv := record(t, a, id).LastVerify
	if lv == nil || len(lv.LostBlocks) != 1 {
		t.Fatalf("the damaged backup's last verification: %+v, want its one lost block", lv)
	}
	damaged := func(s *gateway.Service) int { return concernsOf(t, s, gateway.ConcernBackupDamaged) }
	// Nothing stored it again yet: the catch-ups leave it damaged, also on b, which knows no
	// mark of the copy (its object was not stored) and reads it to find it damaged.
	for _, m := range markObjects(t, dir) {
		if err := os.Remove(m); err != nil {
			t.Fatal(err)
		}
	}
	catchUp(t, a)
	catchUp(t, b) // learns the backup, damaged
	catchUp(t, b) // looks whether it was mended
	for name, s := range map[string]*gateway.Service{"a": a, "b": b} {
		if got := record(t, s, id).LastVerify; !got.Damaged() || damaged(s) != 1 {
			t.Fatalf("before any backup stored the lost block again, %s records %+v (%d damage concerns), want it damaged", name, got, damaged(s))
		}
	}
	if n := storedBy(t, a, filepath.Join(dir, "vm.img")); n < 16<<10 {
		t.Fatalf("the backup after the verification stored %d bytes, want the damaged block again", n)
	}
	catchUp(t, a)
	catchUp(t, b)
	for name, s := range map[string]*gateway.Service{"a": a, "b": b} {
		got := record(t, s, id).LastVerify
		if got == nil || got.Result != repo.VerifyOK || !got.Mended || damaged(s) != 0 {
			t.Errorf("after a backup stored the lost block again, %s records %+v (%d damage concerns), want ok, mended", name, got, damaged(s))
		}
	}
	if got := restoreSHA(t, a, ctx, id); got != want {
		t.Errorf("restore of the mended backup: sha256 %s, want %s", got, want)
	}
}

// A verification recorded after the catch-up read the records, which found other damage,
// stays: the look replaces only the outcome it judged.
func TestMendedLooksOnlyAtTheOutcomeItJudged(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	_, id := damagedOnA(t, s, dir)
	first := onlyPack(t, dir)
	if n := storedBy(t, s, filepath.Join(dir, "vm.img")); n < 16<<10 {
		t.Fatalf("the backup after the verification stored %d bytes, want the damaged block again", n)
	}
	stale, err := s.Index().Backups()
	if err != nil {
		t.Fatal(err)
	}
	// Another block of the first pack is damaged now, and a verification finds it.
	p, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	p[len(p)/2] ^= 0x40
	if err := os.WriteFile(first, p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyBackup(ctx, id, nil); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("verify with a second block damaged: %v, want damage found", err)
	}
	gateway.RecordMendedForTest(s, stale)
	if got := record(t, s, id).LastVerify; !got.Damaged() {
		t.Errorf("after the look over records read before the second verification: %+v, want that verification's damage", got)
	}
}
