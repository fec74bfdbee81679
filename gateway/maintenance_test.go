package gateway_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// A full backup and an incremental of an unchanged volume share their whole block map. With a
// data block of it damaged and the volume gone (nothing to heal from), repair lists both as
// damaged, with the same bytes lost, and forgets the incremental when the admin names it.
// Before, check walked the shared block map for the full backup only, so repair listed only
// the full one and refused to forget the incremental as "not damaged" (found by review).
func TestRepairForgetsEveryBackupOfASharedDamagedBlock(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol, _ := distinctVolume(t, dir, "vm.img", 5)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	damagePack(t, onlyPack(t, dir)) // the full backup's
	if err := os.Remove(vol); err != nil {
		t.Fatal(err)
	}

	rep, err := s.Repair(ctx, gateway.RepairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Backups) != 2 || rep.Backups[0].Forgotten || rep.Backups[1].Forgotten {
		t.Fatalf("repair lists %+v as damaged, want both backups, kept", rep.Backups)
	}
	lost := map[string][][2]int64{}
	for _, rb := range rep.Backups {
		lost[rb.ID] = rb.Lost
	}
	if l := lost[full.ID]; len(l) != 1 || l[0][1]-l[0][0] != 16<<10 || !reflect.DeepEqual(lost[inc.ID], l) {
		t.Fatalf("repair says the full backup lost %v and the incremental %v, want the same one block", l, lost[inc.ID])
	}

	rep, err = s.Repair(ctx, gateway.RepairOptions{Forget: []string{inc.ID}})
	if err != nil {
		t.Fatalf("repair --forget of the incremental: %v", err)
	}
	for _, rb := range rep.Backups {
		if rb.Forgotten != (rb.ID == inc.ID) {
			t.Fatalf("repair --forget %s: %+v", inc.ID, rep.Backups)
		}
	}
	if _, err := s.Backup(ctx, inc.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("the forgotten incremental: %v, want not found", err)
	}
	if _, err := s.Backup(ctx, full.ID); err != nil {
		t.Fatalf("the full backup, not named: %v", err)
	}
}

// TestForgetDamagedKeepsABackupMadeWholeSinceTheCheck: repair --forget-damaged forgets the
// backups its last check found damaged; a backup that a backup running beside the repair made
// whole again since (ForgetDamaged had forgotten the lost block, so that backup stored it
// again) is kept and restores byte for byte. Before, it was forgotten from the check's list.
func TestForgetDamagedKeepsABackupMadeWholeSinceTheCheck(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol, sum := distinctVolume(t, dir, "vm.img", 9)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	damagePack(t, onlyPack(t, dir))
	orig, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	// The volume changes: nothing to heal the damaged block from.
	if err := os.WriteFile(vol, make([]byte, len(orig)), 0o600); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	gateway.AfterForgetDamagedForTest(t, func() {
		once.Do(func() {
			// The volume as it was, backed up beside the repair: its lost block is stored again.
			if err := os.WriteFile(vol, orig, 0o600); err != nil {
				t.Error(err)
				return
			}
			if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol}); err != nil {
				t.Errorf("the backup beside the repair: %v", err)
			}
		})
	})
	rep, err := s.Repair(ctx, gateway.RepairOptions{ForgetDamaged: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, rb := range rep.Backups {
		if rb.ID == full.ID {
			t.Fatalf("repair --forget-damaged: %+v; want backup %s kept, whole again", rep.Backups, full.ID)
		}
	}
	if !slices.Contains(rep.WholeAgain, full.ID) {
		t.Errorf("repair's report: whole again %v; want %s", rep.WholeAgain, full.ID)
	}
	if got := restoreSHA(t, s, ctx, full.ID); got != sum {
		t.Fatalf("backup %s after the repair: sha256 %s, want %s", full.ID, got, sum)
	}
}

// Repair's last check reads every blob of every backup, as a verification would, so what it
// finds is recorded: a backup a verification found damaged and repair healed is ok from then
// on, and a damaged one nobody had verified is damaged. Before, the healed backup stayed
// "damaged" in cairn status, the console and cairn_attention (its alert firing) until someone
// verified it again, right after repair had said "no damaged backups" (found by use).
func TestRepairRecordsWhatItsCheckFound(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	backUp := func(name string, seed uint64) (string, string) {
		t.Helper()
		vol, _ := distinctVolume(t, dir, name, seed)
		before := packs(t, dir)
		bk, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
		if err != nil {
			t.Fatal(err)
		}
		after := packs(t, dir)
		if len(after) != len(before)+1 {
			t.Fatalf("backup of %s stored %d packs, want one", name, len(after)-len(before))
		}
		for _, p := range after {
			if !slices.Contains(before, p) {
				return bk.ID, p
			}
		}
		panic("unreachable")
	}
	healed, healedPack := backUp("healed.img", 7)
	lost, lostPack := backUp("lost.img", 8)
	damagePack(t, healedPack)
	damagePack(t, lostPack)
	if err := os.Remove(filepath.Join(dir, "lost.img")); err != nil { // nothing to heal it from
		t.Fatal(err)
	}
	if res, err := s.VerifyBackup(ctx, healed, nil); !errors.Is(err, repo.ErrCorrupt) || res == nil || res.Result != repo.VerifyDamaged {
		t.Fatalf("verify of the damaged backup: %+v, %v", res, err)
	}
	// A check that reads no data says what the verification found, instead of only "no
	// problems found".
	crep, err := s.Check(ctx, repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(crep.Notes) != 1 || !strings.Contains(crep.Notes[0], healed) || !strings.Contains(crep.Notes[0], "repo repair") {
		t.Errorf("check without --read-data after a verification found damage: notes %q, want one naming %s", crep.Notes, healed)
	}

	rep, err := s.Repair(ctx, gateway.RepairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Healed != 1 || len(rep.Backups) != 1 || rep.Backups[0].ID != lost {
		t.Fatalf("repair: healed %d blocks, damaged %+v; want one healed, %s damaged", rep.Healed, rep.Backups, lost)
	}
	for id, want := range map[string]string{healed: repo.VerifyOK, lost: repo.VerifyDamaged} {
		b, err := s.Backup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.Repository().GetManifest(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		for where, v := range map[string]*repo.Verification{"record": b.LastVerify, "manifest": m.Verified} {
			if v == nil || v.Result != want || (want == repo.VerifyDamaged) != (v.LostBytes == 16<<10) {
				t.Errorf("backup %s after repair: its %s's verification %+v, want %s", id, where, v, want)
			}
		}
	}
	o, err := s.Overview(ctx, gateway.OverviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var damagedNow []string
	for _, c := range o.Concerns {
		if c.Kind == gateway.ConcernBackupDamaged {
			damagedNow = append(damagedNow, c.Subject)
		}
	}
	if !slices.Equal(damagedNow, []string{lost}) {
		t.Errorf("damaged backups in the overview after repair: %v, want only %s", damagedNow, lost)
	}
}

// A block a verification finds damaged is stored again by the next backup of the same data,
// which mends every backup that needs it: the index marks the damaged copy once a second read
// of it fails too, and backups no longer reuse it. Before, every later backup deduplicated
// against the damaged copy and was committed available, and damaged, until repo repair ran
// (found by use: two policy runs with --verify-new failed on the same block, and a new full
// backup was damaged as well). A read that went wrong once, on the way, is read again and
// marks nothing: the copy is good.
func TestVerificationThatFindsDamageLetsTheNextBackupStoreItAgain(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol, want := distinctVolume(t, dir, "vm.img", 9)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}

	// One read of the pack comes back with a bit flipped; the copy on disk is good.
	f := faultyRepository(t, s)
	// The first round's bad read is of the block map, the next ones' of the data (the block
	// map is cached by then), for a verification and for a restore.
	for round := range 3 {
		f.Add(faulty.Rule{Methods: faulty.GetRange, Prefix: "packs/", Effect: faulty.Corrupt, Times: 1})
		if res, err := s.VerifyBackup(ctx, full.ID, nil); err != nil || res.Result != repo.VerifyOK {
			t.Fatalf("round %d: verify through one bad read: %+v, %v; want ok (the copy is read again)", round, res, err)
		}
		f.Add(faulty.Rule{Methods: faulty.GetRange, Prefix: "packs/", Effect: faulty.Corrupt, Times: 1})
		if got := restoreSHA(t, s, ctx, full.ID); got != want {
			t.Fatalf("round %d: restore through one bad read: sha256 %s, want %s", round, got, want)
		}
	}
	if f.Calls(faulty.GetRange) == 0 {
		t.Fatal("the verification read nothing through the faulty backend")
	}
	// A check that reads the data: one bad read of any of its reads (a block map node, the
	// pack's trailer, the pack) is no damage either.
	before := f.Calls(faulty.GetRange)
	if rep, err := s.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || !rep.OK() {
		t.Fatalf("check: %v, %v", rep, err)
	}
	reads := f.Calls(faulty.GetRange) - before
	if reads < 3 {
		t.Fatalf("a check read %d ranges of packs, want at least a node, a trailer and a pack", reads)
	}
	for n := 1; n <= reads; n++ {
		f.Add(faulty.Rule{Methods: faulty.GetRange, Prefix: "packs/", Effect: faulty.Corrupt, Nth: n, Times: 1})
		if rep, err := s.Check(ctx, repo.CheckOptions{ReadData: true}); err != nil || !rep.OK() || rep.PacksRead != 1 {
			t.Errorf("check through one bad read (its read %d of %d): %v, %v; want no problems", n, reads, rep.Problems, err)
		}
		f.Reset()
	}
	if n := storedBy(t, s, vol); n != 0 {
		t.Errorf("a backup after one bad read stored %d bytes again, want 0: the index forgot a good copy", n)
	}
	if got := restoreSHA(t, s, ctx, full.ID); got != want {
		t.Fatalf("restore after one bad read: sha256 %s, want %s", got, want)
	}

	// Now the copy on disk is damaged.
	damagePack(t, onlyPack(t, dir))
	if res, err := s.VerifyBackup(ctx, full.ID, nil); !errors.Is(err, repo.ErrCorrupt) || res == nil || res.LostBytes != 16<<10 {
		t.Fatalf("verify of the damaged backup: %+v, %v; want 16 KiB lost", res, err)
	}
	if n := storedBy(t, s, vol); n < 16<<10 || n > 2*16<<10 {
		t.Errorf("the backup after the verification stored %d bytes, want the damaged block again (16 KiB and its seal)", n)
	}
	if res, err := s.VerifyBackup(ctx, full.ID, nil); err != nil || res.Result != repo.VerifyOK {
		t.Errorf("the damaged backup after the next backup stored its block again: %+v, %v; want ok", res, err)
	}
	if got := restoreSHA(t, s, ctx, full.ID); got != want {
		t.Errorf("restore of the mended backup: sha256 %s, want %s", got, want)
	}
}

// An incremental asked for on a parent that a verification found damaged is a full backup, and
// says why: an incremental keeps its parent's unchanged blocks without reading them, so it was
// damaged the same way, every run of a policy with --verify-new after the first (found by use:
// two runs in a row failed on the same 16 KiB). The full backup stores the lost block again,
// which mends the parent too; the next incremental is one again.
func TestIncrementalOnADamagedParentIsAFullBackup(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol, want := distinctVolume(t, dir, "vm.img", 11)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	damagePack(t, onlyPack(t, dir))
	if _, err := s.VerifyBackup(ctx, full.ID, nil); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("verify of the damaged backup: %v", err)
	}

	next, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if next.IsIncremental || next.ParentID != "" || !strings.Contains(next.ReadFallback, "parent backup "+full.ID+" was found damaged") {
		t.Errorf("an incremental on the damaged backup: incremental %v, parent %q, read_fallback %q; want a full backup saying why",
			next.IsIncremental, next.ParentID, next.ReadFallback)
	}
	if next.Stats.NewBytes < 16<<10 {
		t.Errorf("it stored %d bytes, want the damaged block again", next.Stats.NewBytes)
	}
	for _, id := range []string{next.ID, full.ID} {
		if res, err := s.VerifyBackup(ctx, id, nil); err != nil || res.Result != repo.VerifyOK {
			t.Errorf("verify %s after the full backup: %+v, %v; want ok", id, res, err)
		}
		if got := restoreSHA(t, s, ctx, id); got != want {
			t.Errorf("restore %s: sha256 %s, want %s", id, got, want)
		}
	}
	inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if !inc.IsIncremental || inc.ParentID != next.ID || inc.ReadFallback != "" {
		t.Errorf("the incremental after it: incremental %v, parent %q, read_fallback %q; want an incremental of %s", inc.IsIncremental, inc.ParentID, inc.ReadFallback, next.ID)
	}
}

// An incremental that waited in the queue while a verification found its parent damaged is a
// full backup all the same, and one whose parent an admin reset to error meanwhile fails:
// the parent is read again under the backup's lock. Both were built on the parent's record as
// it was at acceptance, and the first committed as available on the damaged parent's blocks.
func TestAQueuedIncrementalLooksAtItsParentAgain(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol, want := distinctVolume(t, dir, "vm.img", 17)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	b, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil || !b.IsIncremental || b.ParentID != full.ID {
		t.Fatalf("incremental accepted: %+v, %v", b, err)
	}
	damagePack(t, onlyPack(t, dir))
	if _, err := s.VerifyBackup(ctx, full.ID, nil); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("verify of the damaged backup: %v", err)
	}
	if err := s.Submit(ctx, "backup", b.ID, job); err != nil {
		t.Fatal(err)
	}
	next, err := s.Index().Backup(b.ID)
	if err != nil || next.Status != index.BackupAvailable || next.IsIncremental || next.ParentID != "" ||
		!strings.Contains(next.ReadFallback, "parent backup "+full.ID+" was found damaged") {
		t.Fatalf("the queued incremental: %+v, %v; want an available full backup saying why", next, err)
	}
	if res, err := s.VerifyBackup(ctx, next.ID, nil); err != nil || res.Result != repo.VerifyOK {
		t.Errorf("verify of the full backup made instead: %+v, %v; want ok", res, err)
	}
	if got := restoreSHA(t, s, ctx, next.ID); got != want {
		t.Errorf("restore: sha256 %s, want %s", got, want)
	}

	b2, job2, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil || b2.ParentID != next.ID {
		t.Fatalf("second incremental accepted: %+v, %v", b2, err)
	}
	if _, err := s.ResetBackupState(ctx, next.ID, "error"); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(ctx, "backup", b2.ID, job2); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "reset to error while it waited") {
		t.Fatalf("an incremental whose parent was reset to error while it waited: %v, want a conflict saying so", err)
	}
	if got, err := s.Index().Backup(b2.ID); err != nil || got.Status != index.BackupError {
		t.Errorf("its record: %+v, %v; want error", got, err)
	}
}

// Reads that go wrong on the way for a while (a faulty link: every read corrupted) make a
// verification find damage and the index mark the copies, but the copies stay readable: once
// the link is good, the backup restores whole, and the next backup stores the marked blocks
// again instead of reusing them, which costs space and loses nothing. An index that forgot
// them instead failed every restore that needed them until a rebuild.
func TestCopiesMarkedDamagedByAFaultyLinkStayReadable(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol, want := distinctVolume(t, dir, "vm.img", 13)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	f := faultyRepository(t, s)
	f.Add(faulty.Rule{Methods: faulty.GetRange | faulty.Get, Prefix: "packs/", Effect: faulty.Corrupt})
	if _, err := s.VerifyBackup(ctx, full.ID, nil); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("verify through a link that corrupts every read: %v, want damage", err)
	}
	f.Reset()
	if got := restoreSHA(t, s, ctx, full.ID); got != want {
		t.Fatalf("restore once the link is good: sha256 %s, want %s", got, want)
	}
	next, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	if next.Stats.NewBytes == 0 {
		t.Error("the backup after the verification reused the copies it found damaged")
	}
	for _, id := range []string{full.ID, next.ID} {
		if got := restoreSHA(t, s, ctx, id); got != want {
			t.Errorf("restore %s: sha256 %s, want %s", id, got, want)
		}
	}
}

// distinctVolume writes a 1 MiB volume named name in dir whose blocks are all distinct (from
// seed), so damage to one stored block costs one of them, and returns its path and sha256.
func distinctVolume(t *testing.T, dir, name string, seed uint64) (string, string) {
	t.Helper()
	vol := filepath.Join(dir, name)
	b := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	if err := os.WriteFile(vol, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return vol, sha256File(t, vol)
}

// packs lists the repository's pack files (newService's repository, under dir).
func packs(t *testing.T, dir string) []string { return repoFiles(t, dir, "packs", "*", "*") }

// repoFiles lists the files of the local repository under dir (newService's) that match the
// pattern whose path elements are elem.
func repoFiles(t *testing.T, dir string, elem ...string) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(append([]string{dir, "repo"}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// onlyPack is the repository's one pack.
func onlyPack(t *testing.T, dir string) string {
	t.Helper()
	ps := packs(t, dir)
	if len(ps) != 1 {
		t.Fatalf("packs: %v; want one", ps)
	}
	return ps[0]
}

// damagePack flips a bit of a data block of the pack file: a third of the way in, far before
// the block map and the trailer.
func damagePack(t *testing.T, pack string) {
	t.Helper()
	p, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	p[len(p)/3] ^= 0x40
	if err := os.WriteFile(pack, p, 0o600); err != nil {
		t.Fatal(err)
	}
}

// faultyRepository makes s read and write its repository through a faulty backend for the
// rest of the test.
func faultyRepository(t *testing.T, s *gateway.Service) *faulty.Faulty {
	t.Helper()
	var f *faulty.Faulty
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f = faulty.New(be, 1)
		return f
	})
	return f
}
