package gateway_test

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// A backup deleted on another gateway, and its blocks removed by a gc there, while this
// gateway's index still shows it available: a verification here fails (its manifest is not
// found) and records nothing: it never reports the gc's removals as damage. (A delete and gc
// between the manifest's read and the verification's lock is the restore's case, which
// Restore refuses once it holds its lock: repo's TestRestoreOfABackupDeletedElsewhereWritesNothing,
// with Lost set as a verification sets it.)
func TestVerifyOfABackupDeletedElsewhereIsNoDamage(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, filepath.Join(dir, "r"))
	if _, err := b.VerifyBackup(adminCtx(), bk.ID, nil); err != nil {
		t.Fatalf("verification on b before the delete: %v", err)
	}
	if _, err := a.DeleteBackup(adminCtx(), bk.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GC(adminCtx(), repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	before := record(t, b, bk.ID).LastVerify
	if before == nil || before.Result != "ok" {
		t.Fatalf("the first verification's record: %+v", before)
	}
	res, err := b.VerifyBackup(adminCtx(), bk.ID, nil)
	if err == nil || errors.Is(err, repo.ErrCorrupt) || res != nil {
		t.Fatalf("verification on b after a deleted it: %+v, %v; want an error that is not damage", res, err)
	}
	t.Logf("the verification said: %v", err)
	if after := record(t, b, bk.ID); after != nil && (after.LastVerify == nil || after.LastVerify.Result != "ok" || !after.LastVerify.At.Equal(before.At)) {
		t.Fatalf("the failed verification was recorded: %+v", after.LastVerify)
	}
}

// A verification's outcome is kept in the backup's manifest: another gateway shows it after its
// catch-up, and so does an index made anew; a later verification elsewhere replaces it, and a
// damaged one is shown as damaged everywhere. Kept in the index alone, a gateway that had
// found a backup damaged took that knowledge with it, and the others showed none.
func TestVerifyOutcomeIsInTheRepository(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, filepath.Join(dir, "r"))
	if _, err := a.VerifyBackup(adminCtx(), bk.ID, nil); err != nil {
		t.Fatal(err)
	}
	want := record(t, a, bk.ID).LastVerify
	shows := func(what string, g *gateway.Service, want *index.VerifyOutcome) {
		t.Helper()
		got := record(t, g, bk.ID).LastVerify
		if got == nil || got.Result != want.Result || got.LostBytes != want.LostBytes || !got.At.Equal(want.At) {
			t.Fatalf("%s: last verify %+v, want %+v", what, got, want)
		}
	}
	catchUp(t, b)
	shows("the other gateway after its catch-up", b, want)
	if got, ok := series(t, b, "cairn_backups_damaged")["cairn_backups_damaged admin"]; !ok || got != 0 {
		t.Errorf("cairn_backups_damaged{project=admin} after a sound verification: %v (%v), want 0", got, ok)
	}
	c := gatewayOn(t, repoDir, filepath.Join(dir, "state-c"))
	shows("an index made anew", c, want)

	// b finds the backup damaged: every read of a pack there comes back with a bit flipped.
	gateway.WrapBackendForTest(t, b, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.GetRange | faulty.Get, Prefix: "packs/", Effect: faulty.Corrupt})
		return f
	})
	if _, err := b.VerifyBackup(adminCtx(), bk.ID, nil); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("verification through corrupting reads: %v, want damage", err)
	}
	damaged := record(t, b, bk.ID).LastVerify
	if damaged.Result != "damaged" || damaged.LostBytes == 0 {
		t.Fatalf("b's outcome: %+v", damaged)
	}
	for _, g := range []*gateway.Service{a, c} {
		catchUp(t, g)
	}
	shows("the first gateway after b found damage", a, damaged)
	shows("the third gateway after b found damage", c, damaged)
	// So every gateway's /metrics counts it, for the alert CairnBackupDamaged.
	for i, g := range []*gateway.Service{a, b, c} {
		if got := series(t, g, "cairn_backups_damaged")["cairn_backups_damaged admin"]; got != 1 {
			t.Errorf("gateway %d: cairn_backups_damaged{project=admin} %v, want 1", i, got)
		}
	}
	// A verification that ended before b's, recorded on a after it, leaves b's in the
	// manifest, and a takes it back at its next catch-up.
	gateway.RecordVerifyForTest(a, bk.ID, want)
	d := gatewayOn(t, repoDir, filepath.Join(dir, "state-d"))
	shows("an index made anew after an older outcome was recorded", d, damaged)
	catchUp(t, a)
	shows("the gateway that recorded the older outcome, after its catch-up", a, damaged)
}

// A restore's outcome is kept in the backup's manifest once it ends: another gateway shows it
// after its catch-up, and so does an index made anew; a later restore elsewhere (here one that
// failed) replaces it everywhere, and an older outcome written after a newer one does not
// replace it. A copy does not carry it. Kept in the index alone, which restore came back, and
// where, was one gateway's knowledge.
func TestRestoreOutcomeIsInTheRepository(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, filepath.Join(dir, "r"))
	want := sha256File(t, filepath.Join(dir, "r", "vm.img"))
	if got := restoreSHA(t, a, adminCtx(), bk.ID); got != want {
		t.Fatalf("restore on a: sha256 %s, want %s", got, want)
	}
	ok := record(t, a, bk.ID).LastRestore
	if ok == nil || ok.Result != "succeeded" {
		t.Fatalf("a's outcome: %+v", ok)
	}
	shows := func(what string, g *gateway.Service, want *index.RestoreOutcome) {
		t.Helper()
		got := record(t, g, bk.ID).LastRestore
		if got == nil || got.Result != want.Result || got.Target != want.Target || !got.At.Equal(want.At) {
			t.Fatalf("%s: last restore %+v, want %+v", what, got, want)
		}
	}
	catchUp(t, b)
	shows("the other gateway after its catch-up", b, ok)
	c := gatewayOn(t, repoDir, filepath.Join(dir, "state-c"))
	shows("an index made anew", c, ok)

	// b's restore fails: every read of a pack comes back with a bit flipped.
	gateway.WrapBackendForTest(t, b, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.GetRange | faulty.Get, Prefix: "packs/", Effect: faulty.Corrupt})
		return f
	})
	if _, err := b.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, To: filepath.Join(dir, "bad.img")}); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("restore through corrupting reads: %v, want damage", err)
	}
	failed := record(t, b, bk.ID).LastRestore
	if failed.Result != "failed" || failed.Kind != "corrupt" {
		t.Fatalf("b's outcome: %+v", failed)
	}
	for _, g := range []*gateway.Service{a, c} {
		catchUp(t, g)
	}
	shows("the first gateway after b's restore failed", a, failed)
	shows("the third gateway after b's restore failed", c, failed)

	// a restore that ended before b's, recorded after it, leaves b's in the manifest.
	if err := gateway.RecordRestoreForTest(a, bk.ID, ok); err != nil {
		t.Fatal(err)
	}
	d := gatewayOn(t, repoDir, filepath.Join(dir, "state-d"))
	shows("an index made anew after an older outcome was recorded", d, failed)

	_, dst := otherRepo(t, t.TempDir())
	if _, err := c.CopyBackup(adminCtx(), bk.ID, dst, gateway.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := record(t, dst, bk.ID).LastRestore; got != nil {
		t.Errorf("the copy's last restore: %+v, want none", got)
	}
}

// A verification reads every block map node back from the store: a gateway that read the
// backup's leaf before (a restore, a mount, gc's mark: the process's node cache) and whose
// pack was damaged at that leaf since finds the damage. Before, it walked the cached leaf,
// read the data blocks it names (all sound) and recorded the backup verified, and a policy's
// verification of new backups let the prune that follows it remove older, sound ones.
func TestVerifyReadsTheBlockMapFromTheStore(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	vol, _ := distinctVolume(t, dir, "vm.img", 23)
	bk, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: bk.ID, To: filepath.Join(dir, "out.img")}); err != nil {
		t.Fatal(err) // reads the leaf through the node cache
	}
	damageLeaf(t, onlyPack(t, dir))
	res, err := s.VerifyBackup(ctx, bk.ID, nil)
	if !errors.Is(err, repo.ErrCorrupt) || res == nil || res.LostBytes == 0 {
		t.Fatalf("verify of a backup whose leaf was damaged after it was cached: %+v, %v; want it damaged", res, err)
	}
}

// damageLeaf flips a bit of the last blob of a pack of one backup of a 1 MiB volume: its one
// block map leaf, stored after the data blocks it names, right before the trailer.
func damageLeaf(t *testing.T, pack string) {
	t.Helper()
	p, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	trailer := int(binary.LittleEndian.Uint32(p[len(p)-8:]))
	p[len(p)-16-trailer-64] ^= 0x40
	if err := os.WriteFile(pack, p, 0o600); err != nil {
		t.Fatal(err)
	}
}
