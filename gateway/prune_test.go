package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/gateway/retention"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// TestPruneProjectsAndPermissions: one project's prune never removes, or counts, another
// project's backups of the same volume; only an admin may force past the minimum age; a
// protected backup stays; a prune with no rules is refused.
func TestPruneProjectsAndPermissions(t *testing.T) {
	s, dir := newService(t)
	admin, p1 := adminCtx(), as("alice", "p1", false)
	img := image(t, dir, "vm.img", 256<<10)
	v, err := s.ManageVolume(p1, gateway.ManageRequest{Path: img, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	var mine []string
	for range 3 {
		b, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm", Incremental: len(mine) > 0})
		if err != nil {
			t.Fatal(err)
		}
		mine = append(mine, b.ID)
	}
	adminB, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prune(p1, gateway.PruneRequest{Volumes: []string{"vm"}}); !errors.Is(err, gateway.ErrInvalid) {
		t.Fatalf("prune without rules: %v, want invalid", err)
	}
	if _, err := s.Prune(p1, gateway.PruneRequest{Volumes: []string{"vm"}, Rules: retention.Rules{Last: 1}, Force: true}); !errors.Is(err, gateway.ErrDenied) {
		t.Fatalf("non-admin prune --force: %v, want denied", err)
	}
	if _, err := s.ProtectBackup(p1, mine[0], true); err != nil {
		t.Fatal(err)
	}
	res, err := s.Prune(p1, gateway.PruneRequest{Volumes: []string{"vm"}, Rules: retention.Rules{Last: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 1 || res.Kept != 2 || len(res.Backups) != 3 {
		t.Fatalf("p1's prune: %+v, want its middle backup removed, its protected full and newest kept, nothing of the admin's", res)
	}
	if _, err := s.Backup(admin, adminB.ID); err != nil {
		t.Fatalf("the admin's backup after p1's prune: %v", err)
	}
	newest, err := s.Backup(p1, mine[2])
	if err != nil {
		t.Fatal(err)
	}
	if newest.ParentID != mine[0] || !newest.IsIncremental {
		t.Fatalf("p1's newest: parent %q incremental %v, want %s", newest.ParentID, newest.IsIncremental, mine[0])
	}
	if _, err := s.DeleteBackup(p1, mine[0], false); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("delete of a protected backup with a dependant: %v, want conflict", err)
	}
	if _, err := s.UpdateSettings(p1, func(st *gateway.Settings) error { return nil }); !errors.Is(err, gateway.ErrDenied) {
		t.Fatalf("non-admin settings change: %v, want denied", err)
	}
}

// A protect or unprotect decides from the manifest, not from the record: through a gateway
// whose index has not yet learned that another gateway changed the backup's protection, it
// still writes the manifest. So a prune elsewhere keeps what the caller was told is
// protected, and a delete elsewhere may remove what the caller was told is unprotected
// (docs/design.md, "Protection and the minimum age").
func TestProtectThroughAStaleRecord(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	admin := adminCtx()
	vol := image(t, dir, "vol.img", 256<<10)
	var ids []string
	for i := range 3 {
		bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol, Incremental: i > 0})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, bk.ID)
	}
	full := ids[0]
	protect := func(g *gateway.Service, on bool) {
		t.Helper()
		if rec, err := g.ProtectBackup(admin, full, on); err != nil || rec.Protected != on {
			t.Fatalf("protect %v: %+v %v", on, rec, err)
		}
	}

	// b learns the protection, then a clears it: b's record says protected, the manifest not.
	protect(a, true)
	catchUp(t, b)
	protect(a, false)
	if !record(t, b, full).Protected {
		t.Fatal("b's record does not say protected: the set-up is wrong")
	}
	protect(b, true)
	if _, err := a.Prune(admin, gateway.PruneRequest{Volumes: []string{vol}, Rules: retention.Rules{Last: 1}}); err != nil {
		t.Fatal(err)
	}
	if record(t, a, full) == nil {
		t.Fatalf("backup %s, protected through b with success, was pruned through a", full)
	}

	// The other way round: a's record says unprotected, the manifest protected.
	protect(a, false)
	catchUp(t, b)
	protect(b, true)
	if record(t, a, full).Protected {
		t.Fatal("a's record says protected: the set-up is wrong")
	}
	protect(a, false)
	if _, err := b.DeleteBackup(admin, full, false); err != nil {
		t.Fatalf("delete through b of backup %s, unprotected through a with success: %v", full, err)
	}
}

// A prune removes a backup only if no backup names it as parent when it removes it, not only
// when it decided: a backup may gain a dependant in between. Here, while the prune asks, the
// newest full backup (the one the rules keep) is deleted and an incremental is made; its parent
// is the backup the prune decided to remove, which must then stay, or the new incremental
// names a parent that exists nowhere.
func TestPruneKeepsABackupThatGainedADependant(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 256<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, incr := range []bool{false, true, false} {
		b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Incremental: incr})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	var incr *index.Backup
	asking := gateway.WithConfirm(ctx, func(string) error {
		if _, err := s.DeleteBackup(ctx, ids[2], false); err != nil {
			return err
		}
		var err error
		incr, err = s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Incremental: true})
		return err
	})
	if _, err := s.Prune(asking, gateway.PruneRequest{Volumes: []string{"vm"}, Rules: retention.Rules{Last: 1}}); err != nil {
		t.Fatal(err)
	}
	if incr.ParentID != ids[1] {
		t.Fatalf("the incremental made during the prune has parent %q, want %s", incr.ParentID, ids[1])
	}
	for _, id := range []string{ids[1], ids[0]} {
		if _, err := s.Backup(ctx, id); err != nil {
			t.Errorf("backup %s, an ancestor of the incremental made during the prune: %v", id, err)
		}
	}
}

// A backup that failed (here: interrupted by a stop of the gateway) stores no manifest, so
// the parent its record names is no dependency: it must not keep that parent from its prune.
// It did, and with the parent every older backup of its chain, for as long as nobody deleted
// the failed backup by hand: one interrupted backup stopped the volume's retention.
func TestPruneIsNotStoppedByAFailedIncremental(t *testing.T) {
	s, vol, _, _ := interruptedIncremental(t, nil)
	ctx := adminCtx()
	for range 2 {
		if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := s.Prune(ctx, gateway.PruneRequest{Volumes: []string{vol}, Rules: retention.Rules{Last: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 2 || res.Failed != 0 {
		t.Fatalf("prune --keep-last 1 of a full and two incrementals beside a failed incremental: %+v, want the two older removed", res)
	}
}

// interruptedIncremental backs up a new image in full on a gateway of a new repository, accepts
// an incremental of it and stops the gateway before that runs; the gateway opened again has
// recovered it as failed, with no block map and the full backup as its parent. while, when
// not nil, looks at the first gateway while the incremental is accepted.
func interruptedIncremental(t *testing.T, while func(s *gateway.Service, full *index.Backup)) (s *gateway.Service, vol string, full, failed *index.Backup) {
	t.Helper()
	dir := t.TempDir()
	ctx := adminCtx()
	cfg, s, full := backedUpAlone(t, dir)
	vol = filepath.Join(dir, "vol.img")
	var err error
	if failed, _, err = s.StartBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true}); err != nil {
		t.Fatal(err)
	}
	if while != nil {
		while(s, full)
	}
	s.Close()
	if s, err = gateway.Open(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if got := record(t, s, failed.ID); got == nil || got.Status != index.BackupError || got.ParentID != full.ID || !got.Root.IsZero() {
		t.Fatalf("the interrupted incremental: %+v, want error, no block map, parent %s", got, full.ID)
	}
	return s, vol, full, failed
}

// A backup is dated after every earlier backup of its volume, whatever the clock says: after
// the clock went back an hour (here: the earlier backup dated an hour ahead, as a clock that
// ran ahead would have), the new backup was dated before the one it follows, and a prune
// keeping the last one removed the newest data.
func TestABackupIsDatedAfterTheVolumesEarlierBackups(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 256<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	old, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	ahead := old.CreatedAt.Add(time.Hour)
	if _, err := s.Index().UpdateBackup(old.ID, func(b *index.Backup) error { b.CreatedAt = ahead; return nil }); err != nil {
		t.Fatal(err)
	}
	newest, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if !newest.CreatedAt.After(ahead) {
		t.Fatalf("the newest backup is dated %v, before the earlier one's %v", newest.CreatedAt, ahead)
	}
	if _, err := s.Prune(ctx, gateway.PruneRequest{Volumes: []string{"vm"}, Rules: retention.Rules{Last: 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(ctx, newest.ID); err != nil {
		t.Fatalf("the newest backup after a prune keeping the last one: %v", err)
	}
}

// A deleted volume's backups stay, and are pruned by the volume's id, as they are listed
// (backup list, the FUSE tree, NBD, the console); the newest kept restores byte-exact, and
// another project's prune by that id finds no volume.
func TestPruneTheBackupsOfADeletedVolumeByItsID(t *testing.T) {
	s, dir := newService(t)
	p1 := as("alice", "p1", false)
	img := image(t, dir, "vm.img", 256<<10)
	v, err := s.ManageVolume(p1, gateway.ManageRequest{Path: img, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		writeAt(t, img, int64(i)*64<<10, 4096, byte(i+1))
		if _, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm", Incremental: i > 0}); err != nil {
			t.Fatal(err)
		}
	}
	want := fileSHA(t, img)
	if _, err := s.DeleteVolume(p1, "vm", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prune(as("bob", "p2", false), gateway.PruneRequest{Volumes: []string{v.ID}, Rules: retention.Rules{Last: 1}}); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("another project's prune of p1's deleted volume: %v, want not found", err)
	}
	res, err := s.Prune(p1, gateway.PruneRequest{Volumes: []string{v.ID}, Rules: retention.Rules{Last: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 2 || res.Kept != 1 {
		t.Fatalf("prune of the deleted volume's backups by its id: %+v, want 2 removed, 1 kept", res)
	}
	bs, err := s.ListBackups(p1, gateway.ListFilter{})
	if err != nil || len(bs) != 1 || bs[0].VolumeName != "vm" {
		t.Fatalf("backups after the prune: %v %v; want one, recording its gone volume's name", bs, err)
	}
	out := filepath.Join(dir, "out.img")
	if _, err := s.Restore(p1, gateway.RestoreRequest{Backup: bs[0].ID, To: out}); err != nil {
		t.Fatal(err)
	}
	if got := fileSHA(t, out); got != want {
		t.Fatalf("the kept backup restores with sha256 %x, want %x", got[:4], want[:4])
	}
}

// Backups of volumes that are gone (deleted with their backups kept, or copied here from
// another repository, which has no volume records at all) are pruned by the name they were
// taken under, and by --all, like any volume's. Before, --all left them out and their name
// was "not found": a repository of offsite copies could not be pruned at all.
func TestPruneGoneVolumes(t *testing.T) {
	s, dir := newService(t)
	p1 := as("alice", "p1", false)
	files := 0
	backups := func(name string, n int) {
		t.Helper()
		files++
		img := image(t, dir, fmt.Sprintf("%s-%d.img", name, files), 256<<10)
		if _, err := s.ManageVolume(p1, gateway.ManageRequest{Path: img, Name: name}); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			writeAt(t, img, int64(i)*64<<10, 4096, byte(i+1))
			if _, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: name, Incremental: i > 0}); err != nil {
				t.Fatal(err)
			}
		}
	}
	backups("old", 4)
	if _, err := s.DeleteVolume(p1, "old", true); err != nil {
		t.Fatal(err)
	}
	backups("live", 3)
	count := func(what string, want int) {
		t.Helper()
		if bs, err := s.ListBackups(p1, gateway.ListFilter{Volume: what}); err != nil || len(bs) != want {
			t.Fatalf("backups of %s: %d (%v), want %d", what, len(bs), err, want)
		}
	}
	res, err := s.Prune(p1, gateway.PruneRequest{Volumes: []string{"old"}, Rules: retention.Rules{Last: 3}})
	if err != nil || res.Removed != 1 || res.Kept != 3 {
		t.Fatalf("prune of the gone volume by its name: %+v, %v; want 1 removed, 3 kept", res, err)
	}
	if res.Backups[0].VolumeName != "old" {
		t.Errorf("the gone volume's decisions name volume %q, want its name", res.Backups[0].VolumeName)
	}
	count("old", 3)
	if _, err := s.Prune(as("bob", "p2", false), gateway.PruneRequest{Volumes: []string{"old"}, Rules: retention.Rules{Last: 1}}); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("another project's prune of p1's gone volume by name: %v, want not found", err)
	}
	res, err = s.Prune(p1, gateway.PruneRequest{All: true, Rules: retention.Rules{Last: 2}})
	if err != nil || res.Removed != 2 || res.Kept != 4 {
		t.Fatalf("prune --all: %+v, %v; want one removed of each volume, two kept of each", res, err)
	}
	count("old", 2)
	count("live", 2)

	// A second gone volume of the same name: the name is ambiguous, the ids are not.
	backups("old", 1)
	if _, err := s.DeleteVolume(p1, "old", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prune(p1, gateway.PruneRequest{Volumes: []string{"old"}, Rules: retention.Rules{Last: 1}}); !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "prune by volume id") {
		t.Errorf("prune by a name two gone volumes had: %v, want invalid, saying to use the id", err)
	}
}

// A prune removes nothing of a volume once a backup its rules keep is gone since it decided
// (deleted by hand, through the API, or through another gateway): carried out, the plan below
// removed the older full backup after the newer one it kept was deleted, and left the volume
// without a backup (found by review).
func TestPruneRemovesNothingOnceABackupItKeepsIsGone(t *testing.T) {
	s, ids := fullBackupsOfVM(t, 2)
	ctx := adminCtx()
	asking := gateway.WithConfirm(ctx, func(string) error {
		_, err := s.DeleteBackup(ctx, ids[1], false)
		return err
	})
	res, err := s.Prune(asking, gateway.PruneRequest{Volumes: []string{"vm"}, Rules: retention.Rules{Last: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 0 || res.Failed != 1 {
		t.Errorf("prune whose kept backup was deleted meanwhile: %d removed, %d failed; want none removed, one failed", res.Removed, res.Failed)
	}
	if _, err := s.Backup(ctx, ids[0]); err != nil {
		t.Fatalf("the volume's one backup left after the prune: %v", err)
	}
}

// A backup a verification found damaged takes no slot of the rules: with the last two kept,
// the sound older backup stays beside the newest, and the damaged one stays too, said so.
// Counted, it made the prune remove the sound one to keep the damaged one (found by review).
func TestPruneGivesADamagedBackupNoSlot(t *testing.T) {
	s, ids := fullBackupsOfVM(t, 3)
	ctx := adminCtx()
	if _, err := s.Index().UpdateBackup(ids[1], func(rec *index.Backup) error {
		rec.LastVerify = &index.VerifyOutcome{Result: repo.VerifyDamaged, LostBytes: 16 << 10, At: time.Now()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Prune(ctx, gateway.PruneRequest{Volumes: []string{"vm"}, Rules: retention.Rules{Last: 2}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{ids[0]: "last", ids[1]: "damaged", ids[2]: "last"}
	for _, d := range res.Backups {
		if d.Action != gateway.PruneKeep || len(d.Reasons) == 0 || !strings.HasPrefix(d.Reasons[0], want[d.ID]) {
			t.Errorf("backup %s: %s %v, want kept (%s)", d.ID, d.Action, d.Reasons, want[d.ID])
		}
	}
	if len(res.Backups) != 3 || res.Removed != 0 {
		t.Fatalf("prune: %d decisions, %d removed; want three kept", len(res.Backups), res.Removed)
	}
}

// A backup another gateway is restoring stays whatever the rules say, as one restored here
// does: the prune read the index's records, not what the gateway shows, and removed it under
// the other gateway's restore (found by review).
func TestPruneKeepsABackupRestoringThroughAnotherGateway(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	ctx := adminCtx()
	newer, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: bk.VolumeID})
	if err != nil {
		t.Fatal(err)
	}
	_, job, err := a.StartRestore(ctx, gateway.RestoreRequest{Backup: bk.ID, To: filepath.Join(dir, "out.img")})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	res, err := b.Prune(ctx, gateway.PruneRequest{Volumes: []string{bk.VolumeID}, Rules: retention.Rules{Last: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Removed != 0 {
		t.Errorf("prune through b removed %d backups, want none: a restores the older one", res.Removed)
	}
	for _, d := range res.Backups {
		if d.ID == bk.ID && (d.Action != gateway.PruneKeep || len(d.Reasons) == 0 || d.Reasons[0] != "in-use") {
			t.Errorf("the backup a restores: %s %v, want kept in-use", d.Action, d.Reasons)
		}
	}
	if err := job(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Backup(ctx, newer.ID); err != nil {
		t.Fatal(err)
	}
}

// A delete that failed before it began in the repository (its tombstone not stored) leaves
// the record deleting on its gateway, while the others still show the backup available; one
// protected there since is not removed when that gateway starts again, nor when the delete is
// asked again: its record is available again, protected (found by review).
func TestAnUnfinishedDeleteSparesABackupProtectedElsewhere(t *testing.T) {
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("gateway started again %v", restart), func(t *testing.T) {
			dir := t.TempDir()
			a, b, repoDir, bk := backedUpOnA(t, dir)
			ctx := adminCtx()
			f := faultyRepository(t, a)
			f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta/tombstones/"})
			if _, err := a.DeleteBackup(ctx, bk.ID, false); err == nil {
				t.Fatal("the delete whose tombstone cannot be stored succeeded")
			}
			if rec := record(t, a, bk.ID); rec == nil || rec.Status != index.BackupDeleting {
				t.Fatalf("a's record after the failed delete: %+v, want deleting", rec)
			}
			if _, err := b.ProtectBackup(ctx, bk.ID, true); err != nil {
				t.Fatal(err)
			}
			f.Reset()
			if restart {
				a.Close()
				a = gatewayOn(t, repoDir, filepath.Join(dir, "state-a"))
			} else if _, err := a.DeleteBackup(ctx, bk.ID, false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "protected through another gateway") {
				t.Fatalf("the delete asked again: %v, want it refused: protected elsewhere", err)
			}
			if rec := record(t, a, bk.ID); rec == nil || rec.Status != index.BackupAvailable || !rec.Protected {
				t.Fatalf("a's record: %+v, want available and protected", rec)
			}
			if has, err := a.Repository().HasManifest(context.Background(), bk.ID); err != nil || !has {
				t.Fatalf("the protected backup's manifest: %v (%v)", has, err)
			}
		})
	}
}

// fullBackupsOfVM manages an image as volume vm of a new service and takes n full backups of
// it, oldest first.
func fullBackupsOfVM(t *testing.T, n int) (*gateway.Service, []string) {
	t.Helper()
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 256<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range n {
		b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	return s, ids
}
