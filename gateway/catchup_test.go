package gateway_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// newRepo makes a new local repository in dir/repo and returns the config of a gateway on it
// with its state in dir/state.
func newRepo(t testing.TB, dir string) gateway.Config {
	t.Helper()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state")}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.Init(context.Background(), cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// twoGateways opens two services, each with its own index, on one new local repository, and
// returns them with the repository's directory.
func twoGateways(t testing.TB, dir string) (a, b *gateway.Service, repoDir string) {
	t.Helper()
	cfg := newRepo(t, dir)
	return gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-a")), gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-b")), cfg.Repo
}

// gatewayOn opens a service on the repository in repoDir with its index in stateDir (a new
// one: another gateway, or an index made anew), closed when the test ends.
func gatewayOn(t testing.TB, repoDir, stateDir string) *gateway.Service {
	t.Helper()
	s, err := gateway.Open(context.Background(), gateway.Config{Repo: repoDir, StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// backedUpOnA opens two gateways on a new repository in dir (twoGateways), backs up a small
// image on a and catches b up: both know the backup bk.
func backedUpOnA(t *testing.T, dir string) (a, b *gateway.Service, repoDir string, bk *index.Backup) {
	t.Helper()
	a, b, repoDir = twoGateways(t, dir)
	bk, err := a.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "vm.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	return a, b, repoDir, bk
}

// managedOnA opens two gateways on one repository in dir (twoGateways), with no grace for new
// volume records, and manages image vm.img of dir as volume vm through a.
func managedOnA(t *testing.T, dir string) (a, b *gateway.Service, repoDir, path string, v *index.Volume) {
	t.Helper()
	a, b, repoDir = twoGateways(t, dir)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	path = image(t, dir, "vm.img", 64<<10)
	v, err := a.ManageVolume(adminCtx(), gateway.ManageRequest{Path: path, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	return a, b, repoDir, path, v
}

// managedOnBoth is managedOnA, and b's full catch-up then: both gateways know volume vm.
func managedOnBoth(t *testing.T, dir string) (a, b *gateway.Service, repoDir, path string, v *index.Volume) {
	t.Helper()
	a, b, repoDir, path, v = managedOnA(t, dir)
	if err := b.SyncBackups(adminCtx()); err != nil {
		t.Fatal(err)
	}
	return a, b, repoDir, path, v
}

// record returns backup id's record in s's index, or nil when s does not know it.
func record(t *testing.T, s *gateway.Service, id string) *index.Backup {
	t.Helper()
	b, err := s.Index().Backup(id)
	if errors.Is(err, index.ErrNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// catchUp runs g's heartbeat catch-up, which must succeed.
func catchUp(t *testing.T, g *gateway.Service) {
	t.Helper()
	if err := g.CatchUp(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// dropLog removes every backup log object, as a writer that crashed right after its manifest
// would have left none.
func dropLog(t *testing.T, repoDir string) {
	t.Helper()
	if err := os.RemoveAll(filepath.Join(repoDir, "backuplog")); err != nil {
		t.Fatal(err)
	}
}

// Between full catch-ups a gateway follows the backup log: it learns another gateway's new
// backups (and restores them byte-exact), their changed name, metadata and protection, and
// their deletion, without listing the manifests. The log path is the one taken: with the
// log objects removed, the same catch-up learns nothing (docs/design.md, "Catch-up: the
// backup log").
func TestCatchUpFollowsTheLog(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	admin := adminCtx()
	vol := image(t, dir, "vol.img", 256<<10)
	want := map[string]string{} // backup id: the sha256 of the volume it holds
	full, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol, Name: "first"})
	if err != nil {
		t.Fatal(err)
	}
	want[full.ID] = sha256File(t, vol)
	f, err := os.OpenFile(vol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed since the full backup"), 100<<10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	inc, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	want[inc.ID] = sha256File(t, vol)
	if record(t, b, full.ID) != nil {
		t.Fatal("the second gateway knows the backups before any catch-up")
	}
	catchUp(t, b)
	for _, id := range []string{full.ID, inc.ID} {
		got := record(t, b, id)
		if got == nil || got.Status != index.BackupAvailable {
			t.Fatalf("after its catch-up the second gateway has %+v for backup %s, want it available", got, id)
		}
		if restoreSHA(t, b, admin, id) != want[id] {
			t.Fatalf("backup %s, restored through the gateway that learned it, differs from its volume", id)
		}
	}
	if got := record(t, b, inc.ID); got.ParentID != full.ID || !got.IsIncremental {
		t.Fatalf("the incremental learned with parent %q (incremental %v), want %s", got.ParentID, got.IsIncremental, full.ID)
	}

	name := "renamed"
	if _, err := a.UpdateBackup(admin, full.ID, gateway.BackupUpdate{Name: &name, Metadata: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ProtectBackup(admin, full.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteBackup(admin, inc.ID, false); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if got := record(t, b, full.ID); got.Name != name || got.Metadata["k"] != "v" || !got.Protected {
		t.Fatalf("after the update the second gateway has name %q, metadata %v, protected %v", got.Name, got.Metadata, got.Protected)
	}
	if got := record(t, b, inc.ID); got != nil {
		t.Fatalf("the deleted incremental is still known to the second gateway: %+v", got)
	}

	// Without its log object, a new backup is not learned between full catch-ups...
	vol2 := image(t, dir, "vol2.img", 128<<10)
	other, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol2})
	if err != nil {
		t.Fatal(err)
	}
	dropLog(t, repoDir)
	catchUp(t, b)
	if record(t, b, other.ID) != nil {
		t.Fatal("a backup without a log object was learned between full catch-ups: the catch-up did not follow the log")
	}
	// ...and is at the full catch-up, which runs when the last one is fullCatchUpEvery old.
	gateway.SetFullCatchUpEveryForTest(t, 0)
	catchUp(t, b)
	if got := record(t, b, other.ID); got == nil || got.Status != index.BackupAvailable {
		t.Fatalf("the full catch-up did not learn the backup whose log object was missing: %+v", got)
	}
}

// A deletion whose log object is missing is learned at the full catch-up too, and until then
// the backup stays known (the log is a hint, not the truth, in both directions).
func TestCatchUpWithoutItsLogObject(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	admin := adminCtx()
	if record(t, b, bk.ID) == nil {
		t.Fatal("the second gateway did not learn the backup from the log")
	}
	if _, err := a.DeleteBackup(admin, bk.ID, false); err != nil {
		t.Fatal(err)
	}
	dropLog(t, repoDir)
	catchUp(t, b)
	if record(t, b, bk.ID) == nil {
		t.Fatal("a deletion without a log object was learned between full catch-ups")
	}
	gateway.SetFullCatchUpEveryForTest(t, 0)
	catchUp(t, b)
	if got := record(t, b, bk.ID); got != nil {
		t.Fatalf("the full catch-up did not forget the deleted backup: %+v", got)
	}
}

// A backup this gateway is itself deleting is its own: a log catch-up that meets its key
// leaves the record alone, whatever the manifest says (docs/design.md, "Catch-up: the backup
// log": the record is read before the manifest). One it restores is left alone only when its
// manifest is gone [TestCatchUpDuringARestoreTakesTheChangesMadeElsewhere].
func TestCatchUpLeavesThisGatewaysOwnWorkAlone(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	admin := adminCtx()
	// b starts deleting it (its record says so) while a deletes it too.
	if _, err := b.Index().UpdateBackup(bk.ID, func(r *index.Backup) error {
		r.Status = index.BackupDeleting
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteBackup(admin, bk.ID, false); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if got := record(t, b, bk.ID); got == nil || got.Status != index.BackupDeleting {
		t.Fatalf("a log catch-up changed the record of a backup this gateway is deleting: %+v", got)
	}
}

// indexObjects returns the names of the repository's pack index objects.
func indexObjects(t *testing.T, repoDir string) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repoDir, "packindex"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range ents {
		out[e.Name()] = true
	}
	return out
}

// backdate renames the pack index objects not in before (packindex/<t>-<pack id>) to the
// names a writer whose clock was skew behind would have given them. The copies no longer
// authenticate under their new names, so a reader learns their packs from the packs'
// trailers, as it does for any damaged index object.
func backdate(t *testing.T, repoDir string, before map[string]bool, skew time.Duration) {
	t.Helper()
	dir := filepath.Join(repoDir, "packindex")
	for name := range indexObjects(t, repoDir) {
		if before[name] {
			continue
		}
		ts, pack, _ := strings.Cut(name, "-")
		n, err := strconv.ParseUint(ts, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, fmt.Sprintf("%016x-%s", n-uint64(skew), pack))); err != nil {
			t.Fatal(err)
		}
	}
}

// A writer whose clock is more than repo.SyncMargin behind names its pack index objects
// before another gateway's sync window: that gateway's index does not locate the new backup's
// blocks, and a backup is adopted only with its root located. The full catch-up rescans the
// whole pack index for it and adopts it, and it restores byte-exact there (docs/design.md,
// "Garbage collection and locks: the deletion protocol", Sync).
func TestCatchUpAdoptsTheBackupOfAWriterWhoseClockIsBehind(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	admin := adminCtx()
	gateway.SetFullCatchUpEveryForTest(t, 0)
	first, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "first.img", 128<<10)})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b) // b's window now starts 15 minutes before now
	if record(t, b, first.ID) == nil {
		t.Fatal("the second gateway did not learn the first backup")
	}
	before := indexObjects(t, repoDir)
	vol := image(t, dir, "second.img", 128<<10)
	bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	backdate(t, repoDir, before, 20*time.Minute)
	catchUp(t, b)
	if got := record(t, b, bk.ID); got == nil || got.Status != index.BackupAvailable {
		t.Fatalf("after a full catch-up the second gateway has %+v for backup %s, stored by a writer 20 minutes behind; want it available", got, bk.ID)
	}
	if restoreSHA(t, b, admin, bk.ID) != sha256File(t, vol) {
		t.Fatalf("backup %s, restored through the gateway that adopted it, differs from its volume", bk.ID)
	}
}

// onlyBackup returns the id of the one backup s knows (a failed CreateBackup returns none).
func onlyBackup(t *testing.T, s *gateway.Service) string {
	t.Helper()
	all, err := s.Index().Backups()
	if err != nil || len(all) != 1 {
		t.Fatalf("%d backup records (%v), want one", len(all), err)
	}
	return all[0].ID
}

// faultyManifests reopens g's repository over a backend that applies rules to the calls on
// manifests/.
func faultyManifests(t *testing.T, g *gateway.Service, rules ...faulty.Rule) *faulty.Faulty {
	t.Helper()
	var f *faulty.Faulty
	gateway.WrapBackendForTest(t, g, func(be backend.Backend) backend.Backend {
		f = faulty.New(be, 1)
		for _, r := range rules {
			r.Prefix = "manifests/"
			f.Add(r)
		}
		return f
	})
	return f
}

// A manifest Put the client saw fail (a timeout, a lost reply, a shutdown) may have been
// stored all the same. The commit then deletes the manifest before the backup is recorded
// error, so no other gateway adopts as available what its own gateway says failed
// (docs/design.md, "The gateway").
func TestFailedManifestPutThatLandedIsWithdrawn(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	faultyManifests(t, a, faulty.Rule{Methods: faulty.Put, Effect: faulty.FailAfter, Times: 1})
	if _, err := a.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "vol.img", 128<<10)}); !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("backup whose manifest Put failed: %v, want the Put's error", err)
	}
	id := onlyBackup(t, a)
	if has, err := a.Repository().HasManifest(context.Background(), id); err != nil || has {
		t.Fatalf("the failed backup's manifest is stored (%v, %v)", has, err)
	}
	catchUp(t, b)
	catchUp(t, a)
	if got := record(t, a, id); got == nil || got.Status != index.BackupError || got.ManifestInDoubt {
		t.Errorf("the failed backup on its own gateway: %+v, want error", got)
	}
	// It may know the failure (stored in the repository), never an available backup.
	if got := record(t, b, id); got != nil && got.Status != index.BackupError {
		t.Errorf("the other gateway knows the failed backup as %s", got.Status)
	}
}

// When the failed commit's manifest can be neither deleted nor seen to be absent, the backup
// is recorded error with a mark that its manifest may be stored, and the fail reason says
// so. Another gateway does not adopt a manifest whose delete began (its tombstone is
// stored). The next full catch-up of the backup's own gateway finishes the withdrawal: the
// manifest goes, the backup stays error as it was reported, and the mark goes. A backup an
// admin reset to error keeps its manifest but no mark, and stays error.
func TestManifestInDoubtSettledByTheCatchUp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		put    faulty.Effect
		stored bool
	}{
		{"stored", faulty.FailAfter, true},
		{"not stored", faulty.Fail, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b, _ := twoGateways(t, dir)
			admin := adminCtx()
			gateway.SetFullCatchUpEveryForTest(t, 0)
			vol := image(t, dir, "vol.img", 128<<10)
			f := faultyManifests(t, a, faulty.Rule{Methods: faulty.Put, Effect: tc.put, Times: 1},
				faulty.Rule{Methods: faulty.Delete | faulty.Stat, Times: 2})
			if _, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol}); err == nil {
				t.Fatal("backup whose manifest Put failed succeeded")
			} else if strings.Contains(err.Error(), "backup available") {
				t.Errorf("the failed backup's error promises what the catch-up does not do (it withdraws the manifest): %v", err)
			}
			id := onlyBackup(t, a)
			got := record(t, a, id)
			if got.Status != index.BackupError || !got.ManifestInDoubt || !strings.Contains(got.FailReason, "may be stored") {
				t.Fatalf("failed backup whose manifest could not be deleted: %s, in doubt %v, reason %q", got.Status, got.ManifestInDoubt, got.FailReason)
			}
			f.Reset()
			// Its delete began (the tombstone is stored), so the other gateway does not adopt
			// the manifest that may still be there.
			catchUp(t, b)
			if onB := record(t, b, id); onB != nil && onB.Status != index.BackupError {
				t.Fatalf("the other gateway adopted a backup whose delete began: %s", onB.Status)
			}
			catchUp(t, a)
			got = record(t, a, id)
			switch {
			case got.ManifestInDoubt || strings.Contains(got.FailReason, "may be stored"):
				t.Fatalf("after a full catch-up the backup is still in doubt: %s, reason %q", got.Status, got.FailReason)
			case got.Status != index.BackupError || got.FailReason == "":
				t.Fatalf("backup reported failed, after a full catch-up: %s, reason %q, want error with the Put's", got.Status, got.FailReason)
			}
			if has, err := a.Repository().HasManifest(context.Background(), id); err != nil || has {
				t.Fatalf("after the full catch-up of the gateway that withdrew it, the manifest is stored: %v (%v)", has, err)
			}
			catchUp(t, b)
			if onB := record(t, b, id); onB != nil && (onB.Status != index.BackupError || onB.ManifestInDoubt) {
				t.Fatalf("the other gateway still has the withdrawn backup: %s", onB.Status)
			}

			reset, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := a.ResetBackupState(admin, reset.ID, "error"); err != nil {
				t.Fatal(err)
			}
			catchUp(t, a)
			if got := record(t, a, reset.ID); got.Status != index.BackupError {
				t.Fatalf("a backup an admin reset to error is %s after a full catch-up", got.Status)
			}
		})
	}
}

// backedUpAlone opens a gateway on a new repository in dir, for the caller to close, and
// backs up a small image on it.
func backedUpAlone(t *testing.T, dir string) (gateway.Config, *gateway.Service, *index.Backup) {
	t.Helper()
	cfg := newRepo(t, dir)
	s, err := gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	bk, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "vol.img", 128<<10)})
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	return cfg, s, bk
}

// markCreating makes backup id's record say creating again, as a crash between its
// manifest's store and its record's update leaves it.
func markCreating(t *testing.T, s *gateway.Service, id string) {
	t.Helper()
	rec := record(t, s, id)
	rec.Status = index.BackupCreating
	if err := s.Index().DeleteBackup(id); err != nil {
		t.Fatal(err)
	}
	if err := s.Index().CreateBackup(rec); err != nil {
		t.Fatal(err)
	}
}

// A gateway that crashed while it withdrew a failed commit's manifest (its tombstone stored,
// the manifest not yet deleted; the record still creating) finishes the delete when it opens
// again: the backup is error, not available, and its manifest is gone.
func TestRecoveryFinishesAWithdrawalACrashInterrupted(t *testing.T) {
	ctx := context.Background()
	cfg, s, bk := backedUpAlone(t, t.TempDir())
	// The withdrawal's tombstone lands, its manifest delete does not; then the crash.
	faultyManifests(t, s, faulty.Rule{Methods: faulty.Delete})
	if err := s.Repository().DeleteManifest(ctx, bk.ID); err == nil {
		t.Fatal("the manifest delete did not fail")
	}
	markCreating(t, s, bk.ID)
	s.Close()
	s, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := record(t, s, bk.ID); got == nil || got.Status != index.BackupError {
		t.Fatalf("after recovery the backup whose withdrawal a crash interrupted is %+v, want error", got)
	}
	if has, err := s.Repository().HasManifest(ctx, bk.ID); err != nil || has {
		t.Fatalf("after recovery its manifest is stored: %v (%v)", has, err)
	}
}

// A backup a crash interrupted whose manifest is stored but damaged does not keep its gateway
// from starting: recovery failed on it, so every start failed, and with it every command
// (repair too), for good. It is recorded error, saying why, and the gateway opens.
func TestRecoveryOfABackupWithADamagedManifest(t *testing.T) {
	ctx := context.Background()
	cfg, s, bk := backedUpAlone(t, t.TempDir())
	// The crash came between the manifest's store and its second copy's, and the stored
	// manifest does not read back.
	markCreating(t, s, bk.ID)
	s.Close()
	if err := os.WriteFile(filepath.Join(cfg.Repo, "manifests", bk.ID), []byte("not a manifest"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(cfg.Repo, "manifest-copies", bk.ID)); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("the gateway does not open over a damaged manifest: %v", err)
	}
	defer s.Close()
	if got := record(t, s, bk.ID); got == nil || got.Status != index.BackupError || !strings.Contains(got.FailReason, "damaged") {
		t.Fatalf("after recovery the backup whose manifest is damaged is %+v, want error saying so", got)
	}
}

// A delete on one gateway that died between its tombstone and its manifest's delete leaves
// both stored: a delete that did not finish, which its gateway finishes when it starts
// again. Another gateway's full catch-up stops showing the backup at once, so the two never
// disagree on it (found by the two-gateway crash trials on S3, seed 1796381440294245619).
func TestCatchUpForgetsABackupWhoseDeleteBegan(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	faultyManifests(t, b, faulty.Rule{Methods: faulty.Delete})
	if _, err := b.DeleteBackup(adminCtx(), bk.ID, false); err == nil {
		t.Fatal("the delete whose manifest delete fails succeeded")
	}
	if has, _ := a.Repository().HasManifest(context.Background(), bk.ID); !has {
		t.Fatal("the manifest is gone: the delete was not left half done")
	}
	catchUp(t, a)
	if got := record(t, a, bk.ID); got != nil {
		t.Fatalf("after its full catch-up the other gateway still shows a backup whose delete began: %s", got.Status)
	}
}

// A delete whose manifest delete failed once (a timeout, the backend down for a moment) can
// be asked again, by its owner too, while the gateway runs: the record said deleting, and a
// second delete was refused with "wait for it to finish", though nothing but the next start
// of the process would ever finish it.
func TestAFailedDeleteCanBeAskedAgain(t *testing.T) {
	dir := t.TempDir()
	s, _ := newService(t)
	owner := as("alice", "p1", false)
	if _, err := s.ManageVolume(owner, gateway.ManageRequest{Path: image(t, dir, "vm.img", 128<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	bk, err := s.CreateBackup(owner, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	faultyManifests(t, s, faulty.Rule{Methods: faulty.Delete, Times: 1})
	if _, err := s.DeleteBackup(owner, bk.ID, false); !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("the delete whose manifest delete fails: %v", err)
	}
	if _, err := s.DeleteBackup(owner, bk.ID, false); err != nil {
		t.Fatalf("the delete asked again: %v", err)
	}
	if has, err := s.Repository().HasManifest(context.Background(), bk.ID); err != nil || has {
		t.Errorf("after the second delete its manifest is stored: %v (%v)", has, err)
	}
	if _, err := s.Backup(owner, bk.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("the deleted backup: %v, want not found", err)
	}
}

// A backup stored by a writer whose clock is behind, whose packs this index has not learned
// yet (its last rescan ran less than the rescan interval ago), is intact: repair
// --forget-damaged, which forgets what check reports lost, must not delete it.
func TestRepairKeepsTheBackupOfAWriterWhoseClockIsBehind(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	admin := adminCtx()
	gateway.SetFullCatchUpEveryForTest(t, 0)
	// b's sync cursor an hour ahead: every pack index object a writes now sorts before b's
	// window, as those of a writer whose clock is an hour behind do.
	ahead := func() {
		if err := b.Index().SetMeta("sync/index", fmt.Sprintf("%016x", time.Now().Add(time.Hour).UnixNano())); err != nil {
			t.Fatal(err)
		}
	}
	first, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "first.img", 128<<10)})
	if err != nil {
		t.Fatal(err)
	}
	ahead()
	catchUp(t, b) // b rescans the pack index for the first backup: the next rescan is minutes away
	if record(t, b, first.ID) == nil {
		t.Fatal("the second gateway did not learn the first backup")
	}
	vol := image(t, dir, "second.img", 128<<10)
	bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	ahead()
	rep, err := b.Repair(admin, gateway.RepairOptions{ForgetDamaged: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, rb := range rep.Backups {
		if rb.ID == bk.ID {
			t.Errorf("repair found the intact backup %s damaged (forgotten: %v)", bk.ID, rb.Forgotten)
		}
	}
	if _, err := os.Stat(filepath.Join(repoDir, "manifests", bk.ID)); err != nil {
		t.Fatalf("manifest of the intact backup %s after repair --forget-damaged: %v", bk.ID, err)
	}
	if restoreSHA(t, a, admin, bk.ID) != sha256File(t, vol) {
		t.Fatalf("backup %s differs from its volume after repair", bk.ID)
	}
}

// A volume unmanaged through one gateway is forgotten by another that learned it (with its
// backup) at that one's next full catch-up. Kept there, its next backup of the volume stored
// the volume's record again, and the volume came back on every gateway and to every rebuilt
// index.
func TestVolumeForgottenOnOneGatewayIsForgottenOnAnother(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	ctx := adminCtx()
	path := image(t, dir, "vm.img", 64<<10)
	if _, err := a.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if _, err := b.Volume(ctx, "vm"); err != nil {
		t.Fatalf("the other gateway did not learn the volume with its backup: %v", err)
	}
	if _, err := a.UnmanageVolume(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Volume(ctx, "vm"); err == nil {
		t.Fatalf("the other gateway still has volume %s, unmanaged through the first", v.ID)
	}
	// Its backups stay, and no rebuilt index brings the volume back.
	c := gatewayOn(t, repoDir, filepath.Join(dir, "state-c"))
	if v, err := c.Volume(ctx, "vm"); err == nil {
		t.Fatalf("a new index has volume %s, unmanaged through the first gateway", v.ID)
	}
	if bs, err := c.ListBackups(ctx, gateway.ListFilter{}); err != nil || len(bs) != 1 {
		t.Fatalf("backups after the volume was forgotten: %d, %v", len(bs), err)
	}
}

// duringUnmanage makes g call run, once, right before g's removal of the repository record of
// volume id (after its index forgot the volume and the record's copy went, with volumeRecMu
// held), and lets the removal go on when run returns, or after a second if run waits for the
// lock (runBriefly). It returns a wait for run's error.
func duringUnmanage(t *testing.T, g *gateway.Service, id string, run func() error) (wait func() error) {
	t.Helper()
	var once sync.Once
	var ran chan error
	gateway.WrapBackendForTest(t, g, func(be backend.Backend) backend.Backend {
		return &beforeDelete{Backend: be, before: func(key string) {
			if key != "meta/volumes/"+hex.EncodeToString([]byte(id)) {
				return
			}
			once.Do(func() { ran = runBriefly(run) })
		}}
	})
	return func() error {
		if ran == nil {
			return errors.New("the unmanage removed no volume record")
		}
		return <-ran
	}
}

// runBriefly starts run and waits for it to end, or for a second if it waits on something its
// caller holds; its error arrives on the channel it returns.
func runBriefly(run func() error) chan error {
	ran := make(chan error, 1)
	go func() { ran <- run() }()
	select {
	case err := <-ran:
		ran <- err
	case <-time.After(time.Second):
	}
	return ran
}

// managedHere opens one gateway on a new repository in dir and manages image vm.img of dir
// through it as volume vm.
func managedHere(t *testing.T, dir string) (cfg gateway.Config, s *gateway.Service, v *index.Volume) {
	t.Helper()
	cfg = newRepo(t, dir)
	s = gatewayOn(t, cfg.Repo, cfg.StateDir)
	v, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: image(t, dir, "vm.img", 64<<10), Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, s, v
}

// noVolume fails the test if g, or a new index on the repository in repoDir, lists a volume.
func noVolume(t *testing.T, g *gateway.Service, repoDir, newState, why string) {
	t.Helper()
	if vs, _ := g.ListVolumes(adminCtx(), false); len(vs) != 0 {
		t.Fatalf("%s: the gateway lists volume %s (%s)", why, vs[0].Name, vs[0].Status)
	}
	if vs, _ := gatewayOn(t, repoDir, newState).ListVolumes(adminCtx(), false); len(vs) != 0 {
		t.Fatalf("%s: a new index learns volume %s from the repository: its record was stored again", why, vs[0].Name)
	}
}

// A backup or restore that claims a volume after an unmanage's look at its status and before
// the index's delete keeps the volume: the look and the delete are one transaction
// (index.DeleteVolumeIf) since 2026-12-07. Before, the unmanage forgot the volume under the
// job (and a delete removed its image while a restore wrote it).
func TestVolumeClaimedAsItIsForgottenStays(t *testing.T) {
	dir := t.TempDir()
	cfg, s, v := managedHere(t, dir)
	ctx := adminCtx()
	// The claim a backup makes (claimVolume), right after the unmanage looked.
	gateway.BeforeVolumeForgetForTest(t, func(id string) {
		if _, err := s.Index().UpdateVolume(id, func(rec *index.Volume) error {
			rec.Status = index.VolumeBackingUp
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
	if _, err := s.UnmanageVolume(ctx, "vm"); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("unmanage of a volume a backup claimed as it was forgotten: %v, want a conflict", err)
	}
	if got, err := s.Volume(ctx, "vm"); err != nil || got.ID != v.ID {
		t.Fatalf("the volume a backup claimed is gone from the index (%v)", err)
	}
	if got, err := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-new")).Volume(ctx, "vm"); err != nil || got.ID != v.ID {
		t.Fatalf("a new index lacks the volume a backup claimed: its record is gone from the repository (%v)", err)
	}
}

// A catch-up that adopts another gateway's backup of a volume this one is unmanaging does not
// learn the volume back: its learn (ensureVolume) read the record without volumeRecMu until
// 2026-12-07, and one between the forget's removal of the index's record and of the
// repository's brought the volume back, listed with no record (docs/design.md, "A write of a
// volume's record never brings one back either").
func TestCatchUpDuringAnUnmanageDoesNotBringTheVolumeBack(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, _, v := managedOnBoth(t, dir)
	ctx := adminCtx()
	if _, err := b.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	// a's catch-up within a minute of its last full one follows the backup log.
	wait := duringUnmanage(t, a, v.ID, func() error { return a.CatchUp(ctx) })
	if _, err := a.UnmanageVolume(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	if err := wait(); err != nil {
		t.Fatalf("the catch-up: %v", err)
	}
	noVolume(t, a, repoDir, filepath.Join(dir, "state-new"), "after the unmanage and a catch-up that adopted a backup of the volume")
}

// The end of a backup that reads the index just before an unmanage here does not store the
// volume's record after the unmanage removed it: every write of the record holds volumeRecMu
// since 2026-12-07 (docs/design.md, "A write of a volume's record never brings one back
// either").
func TestJobEndDuringAnUnmanageDoesNotBringTheVolumeBack(t *testing.T) {
	dir := t.TempDir()
	cfg, s, v := managedHere(t, dir)
	ctx := adminCtx()
	// Before the backup's end stores the record (the volume available again in the index), an
	// unmanage runs; the store goes on when it ends, or after a second if it waits.
	var once sync.Once
	unmanaged := make(chan chan error, 1) // the hook runs in the backup's job
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		return gateway.BeforePutForTest(be, func(key string) {
			if key != "meta/volumes/"+hex.EncodeToString([]byte(v.ID)) {
				return
			}
			if got, err := s.Volume(ctx, "vm"); err != nil || got.Status != index.VolumeAvailable {
				return // the backup's start
			}
			once.Do(func() {
				unmanaged <- runBriefly(func() error { _, err := s.UnmanageVolume(ctx, "vm"); return err })
			})
		})
	})
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ran := <-unmanaged:
		if err := <-ran; err != nil {
			t.Fatalf("the unmanage: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no unmanage ran at the backup's end: the backup stored no volume record there")
	}
	noVolume(t, s, cfg.Repo, filepath.Join(dir, "state-new"), "after an unmanage at a backup's end")
}

// A backup running on one gateway while the volume is unmanaged through another does not store
// the volume's record again at its end: the other gateway cannot tell the volume is busy here,
// and until 2026-12-07 the end's write brought the unmanaged volume back on every gateway. The
// write at a job's end stores the record only while the repository holds it or its copy.
func TestJobOnOneGatewayDoesNotBringBackAVolumeUnmanagedOnAnother(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, _, _ := managedOnBoth(t, dir)
	ctx := adminCtx()
	var once sync.Once
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
		return gateway.BeforePutForTest(be, func(key string) {
			if strings.HasPrefix(key, "manifests/") {
				once.Do(func() {
					if _, err := b.UnmanageVolume(ctx, "vm"); err != nil {
						t.Errorf("unmanage through the other gateway while the backup runs: %v", err)
					}
				})
			}
		})
	})
	if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	noVolume(t, b, repoDir, filepath.Join(dir, "state-new"), "after a backup through one gateway that another unmanaged the volume during")
	// The gateway that ran the backup forgets the volume at its next full catch-up; the
	// backup stays.
	if err := a.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	noVolume(t, a, repoDir, filepath.Join(dir, "state-new2"), "after the backing-up gateway's full catch-up")
	if bs, err := a.ListBackups(ctx, gateway.ListFilter{}); err != nil || len(bs) != 1 {
		t.Fatalf("backups after the volume was forgotten: %d, %v", len(bs), err)
	}
}

// A volume managed through one gateway is listed by another at that one's next full catch-up,
// before any backup of it, and backed up through it (a forget through the first reaches the
// other as in TestVolumeForgottenOnOneGatewayIsForgottenOnAnother). Before, the other gateway knew it only once a backup of it was adopted: a volume
// managed on one gateway was missing from the other's volume list, cinder list and console, and
// a backup request there found no such volume.
func TestVolumeManagedOnOneGatewayIsListedOnAnother(t *testing.T) {
	dir := t.TempDir()
	a, b, _, path, v := managedOnA(t, dir)
	ctx := adminCtx()
	if _, err := b.Volume(ctx, "vm"); err == nil {
		t.Fatal("the other gateway knew the volume before its catch-up")
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := b.Volume(ctx, "vm")
	if err != nil {
		t.Fatalf("the other gateway does not list the volume managed through the first after its catch-up: %v", err)
	}
	if got.ID != v.ID || got.Path != path {
		t.Fatalf("the other gateway learned volume %s at %s, want %s at %s", got.ID, got.Path, v.ID, path)
	}
	bk, err := b.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatalf("backup through the other gateway of the volume it learned: %v", err)
	}
	if bk.VolumeID != v.ID {
		t.Fatalf("the backup through the other gateway is of volume %s, want %s", bk.VolumeID, v.ID)
	}
	if restoreSHA(t, b, ctx, bk.ID) != sha256File(t, path) {
		t.Fatal("the backup through the other gateway differs from the volume")
	}
	catchUp(t, a)
	if bs, err := a.ListBackups(ctx, gateway.ListFilter{}); err != nil || len(bs) != 1 || bs[0].VolumeID != v.ID {
		t.Fatalf("the first gateway's backups of its volume after the other's backup: %v, %v", bs, err)
	}
	// A volume being forgotten here is not learned again from its record, whose delete is
	// still on the way, by a catch-up meanwhile: the forget holds the lock the learn takes.
	// Without it the catch-up, run here between the index's delete and the record's, learned
	// the volume back, and it stayed.
	v2, err := b.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm2.img", 64<<10), Name: "vm2"})
	if err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	var once sync.Once
	gateway.WrapBackendForTest(t, b, func(be backend.Backend) backend.Backend {
		return &beforeDelete{Backend: be, before: func(key string) {
			if key != "meta/volumes/"+hex.EncodeToString([]byte(v2.ID)) {
				return
			}
			once.Do(func() {
				go func() { synced <- b.SyncBackups(ctx) }()
				select { // done at once without the lock; with it, waiting for this delete
				case err := <-synced:
					synced <- err
				case <-time.After(2 * time.Second):
				}
			})
		}}
	})
	if _, err := b.UnmanageVolume(ctx, "vm2"); err != nil {
		t.Fatal(err)
	}
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if _, err := b.Volume(ctx, "vm2"); err == nil {
		t.Fatal("a catch-up during the unmanage learned the volume back from its record")
	}
}

// beforeDelete runs before ahead of every Delete, with the key.
type beforeDelete struct {
	backend.Backend
	before func(key string)
}

func (d *beforeDelete) Delete(ctx context.Context, key string) error {
	d.before(key)
	return d.Backend.Delete(ctx, key)
}

// An admin's reset of a committed backup to error is the repository's word: another gateway
// shows it error after its catch-up, and so does an index made anew; reset to available, it is
// available everywhere again. Kept in the index alone, the backup came back available
// (restorable, and the parent of the next incremental) after an index loss and on every other
// gateway.
func TestResetToErrorOutlivesTheIndex(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	ctx := adminCtx()
	if _, err := a.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 64<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	bk, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	status := func(g *gateway.Service) index.BackupStatus {
		t.Helper()
		rec, err := g.Backup(ctx, bk.ID)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Status
	}
	if _, err := a.ResetBackupState(ctx, bk.ID, "error"); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if st := status(b); st != index.BackupError {
		t.Fatalf("the other gateway shows the backup reset to error as %s", st)
	}
	if st := status(gatewayOn(t, repoDir, filepath.Join(dir, "state-c"))); st != index.BackupError {
		t.Fatalf("a new index shows the backup reset to error as %s", st)
	}
	if _, err := b.ResetBackupState(ctx, bk.ID, "available"); err != nil {
		t.Fatal(err)
	}
	catchUp(t, a)
	if st := status(a); st != index.BackupAvailable {
		t.Fatalf("the first gateway shows the backup reset to available elsewhere as %s", st)
	}
	if st := status(gatewayOn(t, repoDir, filepath.Join(dir, "state-d"))); st != index.BackupAvailable {
		t.Fatalf("a new index shows the backup reset to available as %s", st)
	}
}

// A reset to error of a backup being restored (its restore is cancelled by the reset) is the
// repository's word too: kept in the index alone, because the record still said restoring
// when the reset looked, the backup was available on every other gateway and after an index
// loss.
func TestResetToErrorOfABackupBeingRestoredOutlivesTheIndex(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	ctx := adminCtx()
	// a restores it (its record says so) when the admin resets it to error.
	if _, err := a.Index().UpdateBackup(bk.ID, func(r *index.Backup) error {
		r.Status = index.BackupRestoring
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ResetBackupState(ctx, bk.ID, "error"); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if got := record(t, b, bk.ID); got == nil || got.Status != index.BackupError {
		t.Fatalf("the other gateway shows the backup reset to error while it was restored as %+v", got)
	}
	if got := record(t, gatewayOn(t, repoDir, filepath.Join(dir, "state-c")), bk.ID); got == nil || got.Status != index.BackupError {
		t.Fatalf("a new index shows the backup reset to error while it was restored as %+v", got)
	}
}

// A backup this gateway is restoring still takes what another gateway changes in its
// manifest meanwhile (name, protection, an admin's reset to error): the log catch-up that
// met its key while the record said restoring marked the key examined and changed nothing,
// and the full catch-up reads only manifests it does not know, so the restored backup showed
// its old name and protection, and stayed available and restorable, for good.
func TestCatchUpDuringARestoreTakesTheChangesMadeElsewhere(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	ctx := adminCtx()
	setStatus := func(from, to index.BackupStatus) {
		t.Helper()
		if _, err := b.Index().UpdateBackup(bk.ID, func(r *index.Backup) error {
			if r.Status == from {
				r.Status = to
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	setStatus(index.BackupAvailable, index.BackupRestoring) // b restores it...
	name := "renamed"
	if _, err := a.UpdateBackup(ctx, bk.ID, gateway.BackupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ProtectBackup(ctx, bk.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ResetBackupState(ctx, bk.ID, "error"); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	setStatus(index.BackupRestoring, index.BackupAvailable) // ...and its restore ends, as runRestore's does
	gateway.SetFullCatchUpEveryForTest(t, 0)
	catchUp(t, b)
	got := record(t, b, bk.ID)
	if got == nil || got.Name != name || !got.Protected || got.Status != index.BackupError {
		t.Fatalf("after a restore here, the changes made elsewhere meanwhile are not taken: %+v", got)
	}
}

// A change to a manifest whose log object is missing (its writer crashed right after the
// manifest, or the log's store failed) is learned by rebuild-index, as docs/design.md says
// ("Catch-up: the backup log"): the full catch-up reads only manifests it does not know, and
// rebuild-index kept every known record as it was, so a backup reset to error and protected
// elsewhere stayed available and unprotected here for good.
func TestRebuildIndexTakesAChangeWhoseLogObjectIsMissing(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	ctx := adminCtx()
	if _, err := a.ProtectBackup(ctx, bk.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ResetBackupState(ctx, bk.ID, "error"); err != nil {
		t.Fatal(err)
	}
	dropLog(t, repoDir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	catchUp(t, b)
	if _, err := b.RebuildIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := record(t, b, bk.ID); got == nil || got.Status != index.BackupError || !got.Protected {
		t.Fatalf("after rebuild-index the backup reset to error and protected elsewhere is %+v", got)
	}
}

// A protect on one gateway and a rename on another at the same moment both stay in the
// manifest. Before (found by review), each gateway read the manifest, changed its field and
// stored it whole: here A's protect, which read the manifest before B's rename and stored
// after it, undid the rename; the other way round, a rename undid a protect that its gateway
// had answered, and a prune or delete on any gateway could then remove the backup.
func TestTwoRewritesOnTwoGatewaysKeepBothChanges(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	bk := backedUp(t, a, dir)
	catchUp(t, b)
	name := "renamed"
	renamed := make(chan error, 1)
	var once sync.Once
	// Just before A stores the manifest it read, B's rename runs; it has a second to finish
	// before A goes on.
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend {
		return gateway.BeforePutForTest(be, func(key string) {
			if key != "manifests/"+bk.ID {
				return
			}
			once.Do(func() {
				go func() {
					_, err := b.UpdateBackup(adminCtx(), bk.ID, gateway.BackupUpdate{Name: &name})
					renamed <- err
				}()
				select {
				case err := <-renamed:
					renamed <- err
				case <-time.After(time.Second):
				}
			})
		})
	})
	if _, err := a.ProtectBackup(adminCtx(), bk.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := <-renamed; err != nil {
		t.Fatal(err)
	}
	got := record(t, gatewayOn(t, repoDir, filepath.Join(dir, "state-new")), bk.ID)
	if got == nil {
		t.Fatal("a new index does not know the backup")
	}
	if !got.Protected || got.Name != name {
		t.Fatalf("the repository's manifest after a protect on A and a rename on B: protected %v, named %q; want protected and named %q", got.Protected, got.Name, name)
	}
}

// A backup this gateway began restoring while its catch-up examined it keeps its record when
// the catch-up then finds its manifest deleted elsewhere: the restore owns the record until it
// ends (it finds the backup gone and writes nothing), and the full catch-up forgets it after.
// Before (found by review), the catch-up, which had read the record as available just before,
// dropped it under the running restore; a delete begun here in that gap lost its record the
// same way and then failed on it.
func TestCatchUpLeavesARecordThatARestoreHereTookMeanwhile(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	ctx := adminCtx()
	name := "renamed" // a change for b's catch-up to examine
	if _, err := a.UpdateBackup(ctx, bk.ID, gateway.BackupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	var job gateway.Job
	gateway.WrapBackendForTest(t, b, func(be backend.Backend) backend.Backend {
		// Between the catch-up's read of the record and its read of the manifest, b starts a
		// restore and a deletes the backup.
		return &beforeGet{Backend: be, key: "manifests/" + bk.ID, before: func() {
			var err error
			if _, job, err = b.StartRestore(ctx, gateway.RestoreRequest{Backup: bk.ID, To: filepath.Join(dir, "copy.img")}); err != nil {
				t.Error(err)
			}
			if _, err := a.DeleteBackup(ctx, bk.ID, false); err != nil {
				t.Error(err)
			}
		}}
	})
	catchUp(t, b)
	if job == nil {
		t.Fatal("the catch-up did not read the changed backup's manifest")
	}
	if got := record(t, b, bk.ID); got == nil || got.Status != index.BackupRestoring {
		t.Fatalf("the record of a backup being restored here, deleted elsewhere meanwhile: %+v, want it kept, restoring", got)
	}
	if err := job(ctx); err == nil {
		t.Error("the restore of a backup deleted elsewhere succeeded")
	}
	gateway.SetFullCatchUpEveryForTest(t, 0)
	catchUp(t, b)
	if got := record(t, b, bk.ID); got != nil {
		t.Fatalf("after its restore ended, the backup deleted elsewhere is still known: %+v", got)
	}
}

// A change to a committed backup (here its protection) is stamped in its manifest, and that
// time is the backup's updated_at on the gateway that made it, on another that catches up,
// and in an index rebuilt. Before (found by hand, 2026-12-07), each index stamped its own
// write: B showed when it caught up, and a rebuilt index the backup's commit.
func TestUpdatedAtIsTheManifestsOnEveryGateway(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	catchUp(t, b)
	time.Sleep(10 * time.Millisecond) // so that the change's time differs from the commit's
	protected, err := a.ProtectBackup(adminCtx(), bk.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if !protected.UpdatedAt.After(bk.UpdatedAt) {
		t.Fatalf("A's record after the protect: updated_at %v, not after the commit's %v", protected.UpdatedAt, bk.UpdatedAt)
	}
	time.Sleep(10 * time.Millisecond) // so that B's catch-up comes later than the change
	catchUp(t, b)
	for name, g := range map[string]*gateway.Service{"B": b, "a new index": gatewayOn(t, repoDir, filepath.Join(dir, "state-new"))} {
		got := record(t, g, bk.ID)
		if got == nil || !got.Protected || !got.UpdatedAt.Equal(protected.UpdatedAt) {
			t.Errorf("%s shows the protected backup as %+v; want protected, updated_at %v as on A", name, got, protected.UpdatedAt)
		}
	}
}

// A volume record removed outside cairn (its copy left) is a loss, not another gateway's
// forget: the catch-up keeps the volume (every forget of this cairn removes the copy first),
// the overview names it, and the volume's next backup stores its record again, which ends it
// (docs/design.md, "A metadata object lost, its copy left"). Before, every gateway forgot the
// volume at its next catch-up, silently.
func TestALostVolumeRecordIsKeptByTheCatchUp(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, _, v := managedOnBoth(t, dir)
	ctx := adminCtx()
	if _, err := b.Volume(ctx, "vm"); err != nil {
		t.Fatalf("the other gateway did not learn the volume: %v", err)
	}
	obj := filepath.Join(repoDir, "meta", "volumes", hex.EncodeToString([]byte(v.ID)))
	if err := os.Remove(obj); err != nil {
		t.Fatal(err)
	}
	named := func(g *gateway.Service) bool {
		t.Helper()
		return concerned(t, g, ctx, gateway.ConcernVolumeError, "vm", "second copy is left")
	}
	for _, g := range []*gateway.Service{a, b} {
		if err := g.SyncBackups(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Volume(ctx, "vm"); err != nil {
			t.Fatalf("a catch-up forgot the volume whose record was removed outside cairn: %v", err)
		}
		if !named(g) {
			t.Error("the overview does not name the volume whose record is missing")
		}
	}
	if _, err := b.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(obj); err != nil {
		t.Fatalf("the volume's backup did not store its record again: %v", err)
	}
	if named(b) {
		t.Error("the overview still names the volume after its record was stored again")
	}
	if c, err := b.Check(ctx, repo.CheckOptions{}); err != nil || !c.OK() {
		t.Fatalf("check after: %+v, %v", c, err)
	}
}

// TestAGatewayAwayLearnsWhatChangedElsewhere: a gateway (or the embedded CLI's index) closed
// while another reset one of the backups it knows to error and protected another learns both
// when it opens again: from the backup log since its last look, or, with no look recorded (an
// index from before, or one whose log gc may have pruned), from every known manifest. Before,
// its open ran the full catch-up only, which reads no manifest it knows, and its first look at
// the log began at the open: a change more than 15 minutes old stayed unseen until a
// rebuild-index, and the reset backup was restored and taken as an incremental's parent.
func TestAGatewayAwayLearnsWhatChangedElsewhere(t *testing.T) {
	for _, c := range []struct {
		name string
		look func(now time.Time) string // b's recorded last look
	}{
		{"from the log", func(now time.Time) string { return now.Add(-2 * time.Hour).UTC().Format(time.RFC3339Nano) }},
		{"from every manifest", func(time.Time) string { return "" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := newRepo(t, dir)
			a := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-a"))
			bCfg := gateway.Config{Repo: cfg.Repo, StateDir: filepath.Join(dir, "state-b")}
			b, err := gateway.Open(context.Background(), bCfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := adminCtx()
			var ids []string
			for i := range 2 {
				bk, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: image(t, dir, fmt.Sprintf("vm%d.img", i), 64<<10)})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, bk.ID)
			}
			catchUp(t, b)
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			logged := map[string]bool{}
			for _, p := range repoFiles(t, dir, "backuplog", "*") {
				logged[p] = true
			}
			if _, err := a.ResetBackupState(ctx, ids[0], "error"); err != nil {
				t.Fatal(err)
			}
			if _, err := a.ProtectBackup(ctx, ids[1], true); err != nil {
				t.Fatal(err)
			}
			// The changes are an hour old: their log objects are moved back by an hour (or
			// gone, where b reads every manifest), and b last looked two hours ago.
			now := time.Now()
			moved := 0
			for _, p := range repoFiles(t, dir, "backuplog", "*") {
				if logged[p] {
					continue
				}
				moved++
				if c.look(now) == "" {
					if err := os.Remove(p); err != nil {
						t.Fatal(err)
					}
					continue
				}
				stamp, rest, _ := strings.Cut(filepath.Base(p), "-")
				n, err := strconv.ParseUint(stamp, 16, 64)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(p, filepath.Join(filepath.Dir(p), fmt.Sprintf("%016x-%s", n-uint64(time.Hour), rest))); err != nil {
					t.Fatal(err)
				}
			}
			if moved < 2 {
				t.Fatalf("%d log objects for the two changes; want two at least", moved)
			}
			idx, err := index.Open(bCfg.IndexDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := idx.SetMeta("catch-up/last-look", c.look(now)); err != nil {
				t.Fatal(err)
			}
			if err := idx.Close(); err != nil {
				t.Fatal(err)
			}

			b = gatewayOn(t, cfg.Repo, bCfg.StateDir)
			if got, err := b.Backup(ctx, ids[0]); err != nil || got.Status != index.BackupError {
				t.Errorf("backup %s, reset to error elsewhere while b was closed: %v; want error", ids[0], err)
			}
			if got, err := b.Backup(ctx, ids[1]); err != nil || !got.Protected {
				t.Errorf("backup %s, protected elsewhere while b was closed: %v; want protected", ids[1], err)
			}
		})
	}
}

// TestAResetBackupProtectedElsewhereIsNotDeleted: a backup protected through one gateway and
// reset to error through another that had not learned the protection yet is protected on
// both, and its delete is refused. Before, the reset kept the record's word (unprotected), and
// delete read protection from the manifest only for an available backup: the protected backup
// was deleted.
func TestAResetBackupProtectedElsewhereIsNotDeleted(t *testing.T) {
	a, b, _, bk := backedUpOnA(t, t.TempDir())
	ctx := adminCtx()
	if _, err := a.ProtectBackup(ctx, bk.ID, true); err != nil {
		t.Fatal(err)
	}
	got, err := b.ResetBackupState(ctx, bk.ID, "error")
	if err != nil {
		t.Fatal(err)
	}
	if !got.Protected {
		t.Errorf("backup %s after its reset on b: unprotected; want the protection set on a", bk.ID)
	}
	if _, err := b.DeleteBackup(ctx, bk.ID, false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "protected") {
		t.Fatalf("delete on b of a backup protected on a and reset to error on b: %v; want it refused as protected", err)
	}
	if _, err := a.Backup(ctx, bk.ID); err != nil {
		t.Fatalf("backup %s after the refused delete: %v", bk.ID, err)
	}
	// Reset first, then protected through a gateway that still shows it available: the delete
	// reads the protection from the manifest.
	bk2, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: image(t, t.TempDir(), "vm2.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if _, err := b.ResetBackupState(ctx, bk2.ID, "error"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ProtectBackup(ctx, bk2.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteBackup(ctx, bk2.ID, false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "protected") {
		t.Fatalf("delete on b of a backup reset to error on b, then protected on a: %v; want it refused as protected", err)
	}
}

// TestAnOlderManifestPutBackDoesNotUnprotect: the sealed bytes of a backup's manifest from
// before its protect, put back under its name by someone with write access to the bucket,
// authenticate; neither the gateway that protected it nor another that learned the protection
// takes them to lower it, and both refuse the delete. Before, delete read the older manifest's
// "unprotected" and removed the backup.
func TestAnOlderManifestPutBackDoesNotUnprotect(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	ctx := adminCtx()
	path := filepath.Join(repoDir, "manifests", bk.ID)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // the protect's stamp is later than the commit's
	if _, err := a.ProtectBackup(ctx, bk.ID, true); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if got := record(t, b, bk.ID); got == nil || !got.Protected {
		t.Fatalf("b after its catch-up: %+v; want the backup protected", got)
	}
	if err := os.WriteFile(path, before, 0o600); err != nil {
		t.Fatal(err)
	}
	// A rewrite of the manifest on a (a rename) stores the protection a knows, not the older
	// manifest's, and b's catch-up learns it from there.
	name := "renamed"
	if _, err := a.UpdateBackup(ctx, bk.ID, gateway.BackupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	for name, g := range map[string]*gateway.Service{"a": a, "b": b} {
		if _, err := g.DeleteBackup(ctx, bk.ID, false); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "protected") {
			t.Fatalf("delete on %s of a protected backup whose older manifest was put back: %v; want it refused as protected", name, err)
		}
	}
	if got, err := a.Backup(ctx, bk.ID); err != nil || !got.Protected {
		t.Fatalf("the backup after the refused deletes: %+v, %v; want it there, protected", got, err)
	}
}

// TestAnOpenDoesNotExamineAgainWhatTheLastOneDid: an index opened again reads the backup log
// from its last look and skips the keys its last open examined, as a running gateway's next
// catch-up does: only the changes since cost a read of their manifests. Before, every embedded
// command read the manifest of every backup changed in the 15 minutes before its look again.
func TestAnOpenDoesNotExamineAgainWhatTheLastOneDid(t *testing.T) {
	dir := t.TempDir()
	cfg, a := backupsOnA(t, dir, 5)
	ctx := adminCtx()
	bCfg := gateway.Config{Repo: cfg.Repo, StateDir: filepath.Join(dir, "state-b")}
	gets := func() int {
		t.Helper()
		var f *faulty.Faulty
		gateway.WrapBackendAtOpenForTest(t, func(be backend.Backend) backend.Backend { f = faulty.New(be, 1); return f })
		s, err := gateway.Open(context.Background(), bCfg)
		if err != nil {
			t.Fatal(err)
		}
		n := f.Calls(faulty.Get)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		return n
	}
	gets() // b's index is made: every manifest is read
	// A change to each backup: the log names all five.
	for _, b := range backupIDs(t, a) {
		if _, err := a.ProtectBackup(ctx, b, true); err != nil {
			t.Fatal(err)
		}
	}
	first, second := gets(), gets()
	if first-second < 5 {
		t.Fatalf("an open after five changes read %d objects, the next open %d; want the five manifests read once", first, second)
	}
}

// backupIDs lists the ids of the backups s shows the admin.
func backupIDs(t *testing.T, s *gateway.Service) []string {
	t.Helper()
	bs, err := s.ListBackups(adminCtx(), gateway.ListFilter{AllProjects: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range bs {
		ids = append(ids, b.ID)
	}
	return ids
}

// TestAnOpenAfterADayReadsTheLogWhileGCLeftIt: an index whose last look is more than a day old
// (a command cron runs once a day) reads the backup log from there while gc has not pruned the
// log past it (its oldest object is older), and only the backups changed since cost a read of
// their manifests; it reads every known manifest only when the log may be gone. Before, every
// such open read every manifest.
func TestAnOpenAfterADayReadsTheLogWhileGCLeftIt(t *testing.T) {
	dir := t.TempDir()
	cfg, a := backupsOnA(t, dir, 6)
	ctx := adminCtx()
	bCfg := gateway.Config{Repo: cfg.Repo, StateDir: filepath.Join(dir, "state-b")}
	open := func(look string) (int, *gateway.Service) {
		t.Helper()
		idx, err := index.Open(bCfg.IndexDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := idx.SetMeta("catch-up/last-look", look); err != nil {
			t.Fatal(err)
		}
		if err := idx.Close(); err != nil {
			t.Fatal(err)
		}
		var f *faulty.Faulty
		gateway.WrapBackendAtOpenForTest(t, func(be backend.Backend) backend.Backend { f = faulty.New(be, 1); return f })
		s, err := gateway.Open(context.Background(), bCfg)
		if err != nil {
			t.Fatal(err)
		}
		return f.Calls(faulty.Get), s
	}
	b, err := gateway.Open(context.Background(), bCfg) // b's index is made
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	// The backups were made 40 hours ago, and one of them was protected an hour ago; b last
	// looked 30 hours ago.
	now := time.Now()
	ids := backupIDs(t, a)
	older := repoFiles(t, dir, "backuplog", "*")
	if _, err := a.ProtectBackup(ctx, ids[0], true); err != nil {
		t.Fatal(err)
	}
	for _, p := range repoFiles(t, dir, "backuplog", "*") {
		back := time.Hour
		if slices.Contains(older, p) {
			back = 40 * time.Hour
		}
		stamp, rest, _ := strings.Cut(filepath.Base(p), "-")
		n, err := strconv.ParseUint(stamp, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p, filepath.Join(filepath.Dir(p), fmt.Sprintf("%016x-%s", n-uint64(back), rest))); err != nil {
			t.Fatal(err)
		}
	}
	logReads, b := open(now.Add(-30 * time.Hour).UTC().Format(time.RFC3339Nano))
	if got := record(t, b, ids[0]); got == nil || !got.Protected {
		t.Fatalf("backup %s, protected while b was closed: %+v; want it protected", ids[0], got)
	}
	b.Close()
	allReads, b := open("")
	b.Close()
	if allReads-logReads < 4 {
		t.Fatalf("an open reading the log read %d objects, one reading every manifest %d; want the log's to read the five unchanged manifests fewer", logReads, allReads)
	}
}

// backupsOnA opens gateway a on a new repository in dir and backs up n small images through
// it; it returns the repository's config (for a second gateway) and a.
func backupsOnA(t *testing.T, dir string, n int) (gateway.Config, *gateway.Service) {
	t.Helper()
	cfg := newRepo(t, dir)
	a := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-a"))
	for i := range n {
		if _, err := a.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, fmt.Sprintf("vm%d.img", i), 64<<10)}); err != nil {
			t.Fatal(err)
		}
	}
	return cfg, a
}
