package gateway_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// An export URL carries the manifest as it was when exported. Imported through a gateway
// whose index does not know the backup while its manifest is still stored (renamed and
// protected since), the record must say what the stored manifest says, not what the URL
// does (docs/design.md, "Manifests and export URLs").
func TestImportOfAnOldURLTakesTheStoredManifest(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	admin := adminCtx()
	vol := image(t, dir, "vol.img", 256<<10)
	bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol, Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := a.ExportBackup(admin, bk.ID)
	if err != nil {
		t.Fatal(err)
	}
	name := "new"
	if _, err := a.UpdateBackup(admin, bk.ID, gateway.BackupUpdate{Name: &name}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ProtectBackup(admin, bk.ID, true); err != nil {
		t.Fatal(err)
	}
	// The changes are older than the backup log keeps (gc removes its objects after a day).
	dropLog(t, repoDir)
	if record(t, b, bk.ID) != nil {
		t.Fatal("b already knows the backup: the set-up is wrong")
	}
	got, err := b.ImportBackup(admin, exp.BackupService, exp.BackupURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []struct {
		what string
		name string
		prot bool
	}{{"import's answer", got.Name, got.Protected}, {"b's record", record(t, b, bk.ID).Name, record(t, b, bk.ID).Protected}} {
		if rec.name != name || !rec.prot {
			t.Errorf("%s: name %q protected %v, want %q and protected as the stored manifest says", rec.what, rec.name, rec.prot, name)
		}
	}
	catchUp(t, b)
	if rec := record(t, b, bk.ID); rec.Name != name || !rec.Protected {
		t.Errorf("after catch-up b's record: name %q protected %v, want %q and protected", rec.Name, rec.Protected, name)
	}
}

// stallingBackend stalls, once armed, at the Stat of a manifest (an import's look for the
// backup's manifest) until gate closes, and while stalled holds back every lock object call,
// so the lock refreshes too: a paused VM.
type stallingBackend struct {
	backend.Backend
	armed   atomic.Bool
	stalled atomic.Bool
	hit     chan struct{}
	gate    chan struct{}
}

func (b *stallingBackend) wait(ctx context.Context, key string) error {
	if !strings.HasPrefix(key, "locks/") || !b.stalled.Load() {
		return nil
	}
	select {
	case <-b.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *stallingBackend) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	if strings.HasPrefix(key, "manifests/") && b.armed.CompareAndSwap(true, false) {
		b.stalled.Store(true)
		close(b.hit)
		<-b.gate
	}
	if err := b.wait(ctx, key); err != nil {
		return backend.ObjectInfo{}, err
	}
	return b.Backend.Stat(ctx, key)
}

func (b *stallingBackend) Put(ctx context.Context, key string, data []byte) error {
	if err := b.wait(ctx, key); err != nil {
		return err
	}
	return b.Backend.Put(ctx, key, data)
}

// An import that stalls past --lock-stale after verifying a deleted backup's blocks has lost
// its lock: a gc elsewhere may have broken it and removed those blocks meanwhile. It must not
// store the manifest again, or the repository would hold a manifest (and the index an
// available backup) whose blocks are gone.
func TestImportStoresNothingOnceItsLockIsLost(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := newRepo(t, dir)
	cfg.Lock = repo.LockOptions{StaleAfter: time.Second}
	open := func(state string) *gateway.Service {
		c := cfg
		c.StateDir = filepath.Join(dir, state)
		s, err := gateway.Open(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open("state-a"), open("state-b")
	admin := adminCtx()
	bk, exp := exportedThenDeleted(t, a, dir)
	stall := &stallingBackend{hit: make(chan struct{}), gate: make(chan struct{})}
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend { stall.Backend = be; return stall })
	stall.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := a.ImportBackup(admin, exp.BackupService, exp.BackupURL)
		done <- err
	}()
	<-stall.hit
	// The backup's packs are older than the import's lock by more than the hour gc allows
	// for a broken lock's clock: gc keeps only what a broken lock's writer may have written.
	ageFiles(t, filepath.Join(cfg.Repo, "packs"), 3*time.Hour)
	st, err := b.GC(admin, repo.GCOptions{})
	close(stall.gate)
	if err != nil {
		t.Fatalf("gc through b while a's import stalled: %v", err)
	}
	if st.LocksBroken == 0 || st.PacksDeleted == 0 {
		t.Fatalf("gc broke %d locks and deleted %d packs: the set-up is wrong", st.LocksBroken, st.PacksDeleted)
	}
	err = <-done
	if !errors.Is(err, repo.ErrLockLost) {
		t.Errorf("import that lost its lock: %v, want it lost", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Repo, "manifests", bk.ID)); err == nil {
		t.Errorf("manifest of backup %s stored after gc removed its blocks", bk.ID)
	}
}

// An import whose lock object was removed while it verified (broken by a gc elsewhere, or by
// 'repo unlock --force') stores no manifest, though its lock was refreshed on time: the
// backup's blocks, unreachable until the manifest is stored, may be gone.
func TestImportStoresNothingOnceItsLockObjectIsGone(t *testing.T) {
	a, dir := newService(t)
	repoDir := filepath.Join(dir, "repo")
	bk, exp := exportedThenDeleted(t, a, dir)
	stall := &stallingBackend{hit: make(chan struct{}), gate: make(chan struct{})}
	gateway.WrapBackendForTest(t, a, func(be backend.Backend) backend.Backend { stall.Backend = be; return stall })
	stall.armed.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := a.ImportBackup(adminCtx(), exp.BackupService, exp.BackupURL)
		done <- err
	}()
	<-stall.hit
	locks, err := filepath.Glob(filepath.Join(repoDir, "locks", "*"))
	if err != nil || len(locks) == 0 {
		t.Fatalf("no lock object to remove (%v): the set-up is wrong", err)
	}
	for _, l := range locks {
		if err := os.Remove(l); err != nil {
			t.Fatal(err)
		}
	}
	close(stall.gate)
	if err := <-done; !errors.Is(err, repo.ErrLockLost) {
		t.Errorf("import whose lock object was removed: %v, want the lock lost", err)
	}
	if _, err := os.Stat(filepath.Join(repoDir, "manifests", bk.ID)); err == nil {
		t.Errorf("manifest of backup %s stored after its lock object was removed", bk.ID)
	}
}

// An import whose manifest Put landed but lost its answer, under a lock that held, is imported:
// the backup is available (under its quota) and restores. Before, the import failed and left
// the manifest stored, and the next catch-up adopted it past the quota; withdrawn instead, it
// could have been another gateway's import of the same backup. A Put that did not land
// stores nothing, and a catch-up adopts nothing.
func TestAnImportWhosePutLostItsAnswerIsImported(t *testing.T) {
	for _, landed := range []bool{true, false} {
		a, dir := newService(t)
		bk, exp := exportedThenDeleted(t, a, dir)
		effect := faulty.Fail
		if landed {
			effect = faulty.FailAfter
		}
		faultyManifests(t, a, faulty.Rule{Methods: faulty.Put, Effect: effect, Times: 1})
		b, err := a.ImportBackup(adminCtx(), exp.BackupService, exp.BackupURL)
		if landed {
			if err != nil || b.Status != index.BackupAvailable {
				t.Fatalf("import whose manifest Put landed and lost its answer: %+v, %v; want it imported", b, err)
			}
			if got, want := restoreSHA(t, a, adminCtx(), bk.ID), sha256File(t, filepath.Join(dir, "vol.img")); got != want {
				t.Errorf("the imported backup restores sha256 %s, want %s", got, want)
			}
			continue
		}
		if !errors.Is(err, backend.ErrUnavailable) {
			t.Fatalf("import whose manifest Put failed: %v, want it unavailable", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "repo", "manifests", bk.ID)); err == nil {
			t.Fatalf("manifest of the failed import stored")
		}
		if err := a.SyncBackups(adminCtx()); err != nil {
			t.Fatal(err)
		}
		if got, err := a.Index().Backup(bk.ID); !errors.Is(err, index.ErrNotFound) {
			t.Errorf("the failed import after a catch-up: %+v, %v; want no backup", got, err)
		}
		if _, err := a.ImportBackup(adminCtx(), exp.BackupService, exp.BackupURL); err != nil {
			t.Errorf("the import again, the store sound: %v", err)
		}
	}
}

// An import that cannot read the backup's block map because the store is down says so
// (unavailable: try again), not that the backup is not in the repository (invalid).
func TestImportDuringAnOutageSaysUnavailable(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	admin := adminCtx()
	_, exp := exportedThenDeleted(t, a, dir)
	gateway.WrapBackendForTest(t, b, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Get | faulty.GetRange, Prefix: "packs/"})
		return f
	})
	_, err := b.ImportBackup(admin, exp.BackupService, exp.BackupURL)
	if !errors.Is(err, backend.ErrUnavailable) || errors.Is(err, gateway.ErrInvalid) {
		t.Fatalf("import while the store fails every read of a pack: %v, want unavailable, not invalid", err)
	}
}

// exportedThenDeleted backs up a fresh image through s, exports the backup and deletes it:
// what an import brings back.
func exportedThenDeleted(t *testing.T, s *gateway.Service, dir string) (*index.Backup, *gateway.Export) {
	t.Helper()
	return exportThenDelete(t, s, image(t, dir, "vol.img", 256<<10))
}

// exportThenDelete backs up the volume vol through s, exports the backup and deletes it.
func exportThenDelete(t *testing.T, s *gateway.Service, vol string) (*index.Backup, *gateway.Export) {
	t.Helper()
	admin := adminCtx()
	bk, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := s.ExportBackup(admin, bk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackup(admin, bk.ID, false); err != nil {
		t.Fatal(err)
	}
	return bk, exp
}

// ageFiles sets back the modification time of every file under dir by d.
func ageFiles(t *testing.T, dir string, d time.Duration) {
	t.Helper()
	then := time.Now().Add(-d)
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		return os.Chtimes(path, then, then)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// An import of a backup some of whose packs are gone from the backend (lost, or removed by
// hand) is refused: an index that still lists the packs' blobs does not make the backup
// restorable, and it must never show as available.
func TestImportRefusesABackupWhosePackIsMissing(t *testing.T) {
	s, dir := newService(t)
	repoDir := filepath.Join(dir, "repo")
	admin := adminCtx()
	vol := image(t, dir, "vol.img", 256<<10)
	if _, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: vol}); err != nil {
		t.Fatal(err)
	}
	packsDir := filepath.Join(repoDir, "packs")
	first := filesUnder(t, packsDir)
	// One block changes: the second backup's block map and that block go to a new pack, the
	// other blocks stay in the first backup's pack.
	f, err := os.OpenFile(vol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	bk, exp := exportThenDelete(t, s, vol)
	if len(filesUnder(t, packsDir)) <= len(first) {
		t.Fatal("the second backup stored no pack of its own: the set-up is wrong")
	}
	for p := range first {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.ImportBackup(admin, exp.BackupService, exp.BackupURL)
	if !errors.Is(err, gateway.ErrInvalid) {
		t.Errorf("import of a backup whose pack is missing: %v, want it refused as invalid", err)
	}
	if rec := record(t, s, bk.ID); rec != nil && rec.Status == index.BackupAvailable {
		t.Errorf("backup %s is available after an import whose pack is missing", bk.ID)
	}
}

// filesUnder returns the files under dir.
func filesUnder(t *testing.T, dir string) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			m[p] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// An import adds a backup to its project, so it counts against that project's quota as a
// backup does (Cinder reserves backups and backup_gigabytes for an import): over the quota
// it is refused and stores nothing. Imports used to be let through, past any limit.
func TestImportHoldsToTheQuota(t *testing.T) {
	s, dir := newService(t)
	admin := adminCtx()
	limit := int64(1)
	if _, err := s.QuotaUpdate(admin, gateway.DefaultProject, &limit, nil); err != nil {
		t.Fatal(err)
	}
	bk, exp := exportedThenDeleted(t, s, dir)
	if _, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: image(t, dir, "other.img", 128<<10)}); err != nil {
		t.Fatal(err)
	}
	_, err := s.ImportBackup(admin, exp.BackupService, exp.BackupURL)
	if !errors.Is(err, gateway.ErrQuota) {
		t.Fatalf("import into a project at its quota: %v, want refused over quota", err)
	}
	if has, err := s.Repository().HasManifest(context.Background(), bk.ID); err != nil || has {
		t.Fatalf("a refused import stored the manifest (%v, %v)", has, err)
	}
	if u, err := s.QuotaUsage(admin, gateway.DefaultProject); err != nil || u.Backups.InUse != 1 || u.Backups.Reserved != 0 {
		t.Fatalf("usage after a refused import: %+v %v, want 1 in use", u, err)
	}
	// With room for it, the import goes through.
	limit = 2
	if _, err := s.QuotaUpdate(admin, gateway.DefaultProject, &limit, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportBackup(admin, exp.BackupService, exp.BackupURL); err != nil {
		t.Fatal(err)
	}
	if u, _ := s.QuotaUsage(admin, gateway.DefaultProject); u.Backups.InUse != 2 {
		t.Fatalf("usage after the import: %+v, want 2 in use", u)
	}
}

// catchUpAfterLog runs catchUp once, right after the first log object is stored: a
// heartbeat's catch-up that lands between a manifest's store and what its writer does next.
type catchUpAfterLog struct {
	backend.Backend
	done    atomic.Bool
	catchUp func()
}

func (c *catchUpAfterLog) Put(ctx context.Context, key string, data []byte) error {
	err := c.Backend.Put(ctx, key, data)
	if err == nil && strings.HasPrefix(key, "backuplog/") && c.done.CompareAndSwap(false, true) {
		c.catchUp()
	}
	return err
}

// An import stores the backup's manifest, then records it. A catch-up of the same gateway in
// between (its heartbeat's, every 10 s) adopts the backup first; the import then found the
// record there and failed ("already in the index") although the backup was imported.
func TestImportThatTheCatchUpAdoptsFirstSucceeds(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	admin := adminCtx()
	vol := image(t, dir, "vol.img", 128<<10)
	bk, err := a.CreateBackup(admin, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	exp, err := a.ExportBackup(admin, bk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteBackup(admin, bk.ID, false); err != nil {
		t.Fatal(err)
	}
	var cerr error
	gateway.WrapBackendForTest(t, b, func(be backend.Backend) backend.Backend {
		return &catchUpAfterLog{Backend: be, catchUp: func() { cerr = b.CatchUp(context.Background()) }}
	})
	got, err := b.ImportBackup(admin, exp.BackupService, exp.BackupURL)
	if cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatalf("an import the catch-up adopted first failed: %v", err)
	}
	if got.ID != bk.ID || got.Status != index.BackupAvailable {
		t.Fatalf("the import answered %+v", got)
	}
	if restoreSHA(t, b, admin, bk.ID) != sha256File(t, vol) {
		t.Fatal("the imported backup restores other bytes than its volume held")
	}
}

// A backup whose manifest Put lands only after its lock may have gone stale (the store did
// not answer the Put nor the lock's refreshes for longer than ¾ of --lock-stale: an outage
// its retries waited out, or a stall) withdraws the manifest and fails: a gc elsewhere may
// have broken the lock meanwhile and removed blocks the manifest needs. Before, the backup
// was recorded available. An import likewise.
func TestBackupWhoseManifestLandsLateIsWithdrawn(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := newRepo(t, dir)
	cfg.Lock = repo.LockOptions{StaleAfter: time.Second}
	s, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	img := image(t, dir, "vm.img", 256<<10)
	if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	_, exp := exportedThenDeleted(t, s, dir)
	lateManifests(t, s)
	b, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: "vm"})
	if !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("backup whose manifest landed after its lock went stale: %v (%+v), want the lock lost", err, b)
	}
	// An import stores a manifest the same way, and withdraws it the same way.
	if _, err := s.ImportBackup(adminCtx(), exp.BackupService, exp.BackupURL); !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("import whose manifest landed after its lock went stale: %v, want the lock lost", err)
	}
	if m, _ := filepath.Glob(filepath.Join(cfg.Repo, "manifests", "*")); len(m) != 0 {
		t.Errorf("the late manifests stayed: %v", m)
	}
	bs, err := s.ListBackups(adminCtx(), gateway.ListFilter{})
	if err != nil || len(bs) != 1 || bs[0].Status != "error" {
		t.Fatalf("backups after the late manifests: %+v %v; want one, error", bs, err)
	}
}

// lateManifests makes s's store answer each manifest Put only after 1.2 s, and answer no
// lock refresh meanwhile.
func lateManifests(t *testing.T, s *gateway.Service) {
	var outageUntil atomic.Int64 // unix nanoseconds
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		return gateway.BeforePutForTest(be, func(key string) {
			switch {
			case strings.HasPrefix(key, "manifests/"):
				// The store answers this Put only after 1.2 s, and no lock refresh meanwhile.
				outageUntil.Store(time.Now().Add(1200 * time.Millisecond).UnixNano())
				time.Sleep(1200 * time.Millisecond)
			case strings.HasPrefix(key, "locks/"):
				if d := time.Until(time.Unix(0, outageUntil.Load())); d > 0 {
					time.Sleep(d + 100*time.Millisecond)
				}
			}
		})
	})
}
