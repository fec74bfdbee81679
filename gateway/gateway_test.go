package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

func newService(t testing.TB) (*gateway.Service, string) {
	t.Helper()
	dir := t.TempDir()
	_, s := openedRepo(t, dir)
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// as returns a context whose caller is user in project, an admin or not.
func as(user, project string, admin bool) context.Context {
	return gateway.WithCaller(context.Background(), gateway.Caller{User: user, Project: project, Admin: admin})
}

// adminCtx is the embedded CLI's caller: the admin of the default project.
func adminCtx() context.Context { return as("admin", gateway.DefaultProject, true) }

func image(t testing.TB, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + len(name))
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Concurrent creates cannot overshoot a quota: the reservation is taken under one lock.
func TestQuotaReservationsUnderConcurrency(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	limit := int64(3)
	if _, err := s.QuotaUpdate(ctx, gateway.DefaultProject, &limit, nil); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var vols []string
	for i := range n {
		vols = append(vols, image(t, dir, "v"+string(rune('a'+i))+".img", 64<<10))
	}
	var mu sync.Mutex
	var accepted []gateway.Job
	var refused int
	var wg sync.WaitGroup
	for _, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: v})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted = append(accepted, job)
			case errors.Is(err, gateway.ErrQuota):
				refused++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if int64(len(accepted)) != limit || refused != n-int(limit) {
		t.Fatalf("%d accepted, %d refused; want %d and %d", len(accepted), refused, limit, n-int(limit))
	}
	u, err := s.QuotaUsage(ctx, gateway.DefaultProject)
	if err != nil || u.Backups.Reserved != limit || u.Backups.InUse != 0 {
		t.Fatalf("usage while creating: %+v %v", u, err)
	}
	for _, job := range accepted {
		if err := job(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if u, _ := s.QuotaUsage(ctx, gateway.DefaultProject); u.Backups.InUse != limit || u.Backups.Reserved != 0 {
		t.Fatalf("usage after the jobs: %+v", u)
	}
	// A refused create wrote nothing.
	bs, _ := s.ListBackups(ctx, gateway.ListFilter{})
	if int64(len(bs)) != limit {
		t.Fatalf("%d backups recorded, want %d", len(bs), limit)
	}
}

// An admin's reset of a backup to error keeps its manifest and data, and it still counts against
// the project's quota: it freed its unit, a new backup took it, and the reset back to
// available left the project over its limit.
func TestAResetToErrorDoesNotFreeQuota(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	limit := int64(2)
	if _, err := s.QuotaUpdate(ctx, gateway.DefaultProject, &limit, nil); err != nil {
		t.Fatal(err)
	}
	var made []*index.Backup
	for i := range 2 {
		b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: image(t, dir, fmt.Sprintf("v%d.img", i), 64<<10)})
		if err != nil {
			t.Fatal(err)
		}
		made = append(made, b)
	}
	if _, err := s.ResetBackupState(ctx, made[0].ID, "error"); err != nil {
		t.Fatal(err)
	}
	third := image(t, dir, "v2.img", 64<<10)
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: third}); !errors.Is(err, gateway.ErrQuota) {
		t.Fatalf("a third backup while one of two is reset to error: %v, want the quota exceeded", err)
	}
	if u, err := s.QuotaUsage(ctx, gateway.DefaultProject); err != nil || u.Backups.InUse != 2 {
		t.Fatalf("usage with one backup reset to error: %+v, %v; want both in use", u, err)
	}
}

// A quota change the repository does not take is reported failed and not made here either:
// the index kept it, so this gateway enforced limits that rebuild-index and every other
// gateway did not know (a reset here, the old limits back after rebuild-index).
func TestQuotaChangeTheRepositoryRefusesIsNotMade(t *testing.T) {
	s, _ := newService(t)
	ctx := adminCtx()
	limit := int64(3)
	if _, err := s.QuotaUpdate(ctx, "p1", &limit, nil); err != nil {
		t.Fatal(err)
	}
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Delete | faulty.Put, Prefix: "meta/quotas/"})
		return f
	})
	if err := s.QuotaReset(ctx, "p1"); !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("quota reset the repository refuses: %v, want the backend's error", err)
	}
	if q, err := s.QuotaShow(ctx, "p1"); err != nil || q.Backups != limit {
		t.Errorf("quota of p1 after a reset that failed: %+v, %v; want %d backups", q, err, limit)
	}
	other := int64(7)
	if _, err := s.QuotaUpdate(ctx, "p1", &other, nil); !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("quota update the repository refuses: %v, want the backend's error", err)
	}
	if q, err := s.QuotaShow(ctx, "p1"); err != nil || q.Backups != limit {
		t.Errorf("quota of p1 after an update that failed: %+v, %v; want %d backups", q, err, limit)
	}
	// A Put that landed though it was reported failed: rebuild-index does not bring the
	// change back either.
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta/quotas/", Effect: faulty.FailAfter, Times: 1})
		return f
	})
	if _, err := s.QuotaUpdate(ctx, "p1", &other, nil); !errors.Is(err, backend.ErrUnavailable) {
		t.Errorf("quota update whose store is reported failed: %v, want the backend's error", err)
	}
	if _, err := s.RebuildIndex(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if q, err := s.QuotaShow(ctx, "p1"); err != nil || q.Backups != limit {
		t.Errorf("quota of p1 after an update that failed, after rebuild-index: %+v, %v; want %d backups", q, err, limit)
	}
}

// Only the latest backup of a chain can be deleted, and the error names the dependants.
func TestDeleteOnlyLatestOfChain(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	v := image(t, dir, "vm.img", 256<<10)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackup(ctx, full.ID, false); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("delete of a parent: %v", err)
	}
	if _, err := s.DeleteBackup(ctx, inc.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackup(ctx, full.ID, false); err != nil {
		t.Fatal(err)
	}
	// Non-admins cannot force-delete, and do not see other projects' backups.
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v})
	if err != nil {
		t.Fatal(err)
	}
	user := gateway.WithCaller(ctx, gateway.Caller{User: "u", Project: "other"})
	if _, err := s.Backup(user, b.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("another project's backup: %v, want not found", err)
	}
	if _, err := s.DeleteBackup(user, b.ID, true); !errors.Is(err, gateway.ErrNotFound) && !errors.Is(err, gateway.ErrDenied) {
		t.Fatalf("non-admin force delete: %v", err)
	}
}

// An incremental that failed before it made a block map (here: interrupted by a stop of the
// gateway) does not keep its parent: the parent can be deleted, and is not shown as having
// dependants (Cinder's has_dependent_backups). Prune already let it go; a delete refused it
// as having "dependent incremental backups".
func TestAFailedIncrementalDoesNotKeepItsParent(t *testing.T) {
	ctx := adminCtx()
	s, _, full, failed := interruptedIncremental(t, func(s *gateway.Service, full *index.Backup) {
		if parents, err := s.Parents(); err != nil || !parents[full.ID] {
			t.Fatalf("parents while the incremental is being created: %v, %v; want the full backup among them", parents, err)
		}
	})
	if parents, err := s.Parents(); err != nil || parents[full.ID] {
		t.Errorf("parents: %v, %v; the full backup has no dependent backup that needs it", parents, err)
	}
	if _, err := s.DeleteBackup(ctx, full.ID, false); err != nil {
		t.Errorf("delete of the failed incremental's parent: %v", err)
	}
	if _, err := s.DeleteBackup(ctx, failed.ID, false); err != nil {
		t.Errorf("delete of the failed incremental: %v", err)
	}
}

// An incremental chains only onto a backup of its own project. The admin's incremental of
// p1's volume does not take p1's hidden backup as its parent, so p1 can still delete it.
func TestIncrementalParentInOwnProject(t *testing.T) {
	s, dir := newService(t)
	admin, p1 := adminCtx(), as("alice", "p1", false)
	img := image(t, dir, "vm.img", 256<<10)
	v, err := s.ManageVolume(p1, gateway.ManageRequest{Path: img, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	full1, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	sum0 := sha256File(t, img)
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed after p1's backup"), 128<<10); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	sum1 := sha256File(t, img)

	// p1's backup is the volume's newest, but the admin's project and p2 have none.
	for _, project := range []string{"", "p2"} {
		_, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: v.ID, Project: project, Incremental: true})
		if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "no available backup") {
			t.Fatalf("incremental for project %q with only p1's backup: %v, want no available backup", project, err)
		}
	}
	if bs, _ := s.ListBackups(admin, gateway.ListFilter{AllProjects: true}); len(bs) != 1 {
		t.Fatalf("a refused incremental wrote something: %d backups, want 1", len(bs))
	}

	// The admin's own chain: full, then an incremental on it.
	fullA, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	incA, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if incA.Project != gateway.DefaultProject || incA.ParentID != fullA.ID {
		t.Fatalf("admin's incremental: project %s parent %s, want %s and %s", incA.Project, incA.ParentID, gateway.DefaultProject, fullA.ID)
	}
	// p1's incremental chains onto p1's full, not onto the admin's newer backups.
	incP1, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm", Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if incP1.Project != "p1" || incP1.ParentID != full1.ID {
		t.Fatalf("p1's incremental: project %s parent %s, want p1 and %s", incP1.Project, incP1.ParentID, full1.ID)
	}

	for _, c := range []struct {
		ctx  context.Context
		id   string
		want string
	}{{p1, full1.ID, sum0}, {p1, incP1.ID, sum1}, {admin, fullA.ID, sum1}, {admin, incA.ID, sum1}} {
		if got := restoreSHA(t, s, c.ctx, c.id); got != c.want {
			t.Fatalf("backup %s restores to sha256 %s, want %s", c.id, got, c.want)
		}
	}

	// p1 deletes its whole chain: nothing of another project hangs on it.
	for _, id := range []string{incP1.ID, full1.ID} {
		if _, err := s.DeleteBackup(p1, id, false); err != nil {
			t.Fatalf("p1 deletes its backup %s: %v", id, err)
		}
	}
	if bs, _ := s.ListBackups(p1, gateway.ListFilter{}); len(bs) != 0 {
		t.Fatalf("p1 still has %d backups", len(bs))
	}
	if got := restoreSHA(t, s, admin, incA.ID); got != sum1 {
		t.Fatalf("admin's incremental after p1's deletes restores to %s, want %s", got, sum1)
	}
}

// A check's options are the caller's input: a share of packs outside (0, 100], or a sample
// without reading the data, is invalid (exit 2, HTTP 400), not a failure.
func TestCheckRejectsBadSample(t *testing.T) {
	s, _ := newService(t)
	for _, o := range []repo.CheckOptions{
		{ReadData: true, SamplePercent: -5},
		{ReadData: true, SamplePercent: 100.5},
		{SamplePercent: 10},
	} {
		if _, err := s.Check(adminCtx(), o); !errors.Is(err, gateway.ErrInvalid) {
			t.Errorf("check %+v: %v, want ErrInvalid", o, err)
		}
	}
	rep, err := s.Check(adminCtx(), repo.CheckOptions{ReadData: true, SamplePercent: 2.5})
	if err != nil || !rep.OK() || rep.SamplePercent != 2.5 {
		t.Fatalf("check of a 2.5 %% sample of an empty repository: %v %+v", err, rep)
	}
}

// rebuild-index takes what never changes after a commit (project, volume, block map, size)
// from the manifest when a known backup's record disagrees: it kept the record as it was, so
// the backup stayed shown to another project however often the admin rebuilt the index.
func TestRebuildIndexTakesABackupsProjectFromItsManifest(t *testing.T) {
	s, dir := newService(t)
	p1, p2 := as("alice", "p1", false), as("bob", "p2", false)
	if _, err := s.ManageVolume(p1, gateway.ManageRequest{Path: image(t, dir, "vm.img", 128<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	bk, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Index().UpdateBackup(bk.ID, func(b *index.Backup) error { b.Project, b.Size = "p2", b.Size+1; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Backup(p2, bk.ID); err != nil {
		t.Fatalf("the set-up is wrong: p2 does not see the record made to say p2: %v", err)
	}
	res, err := s.RebuildIndex(adminCtx(), t.Logf)
	if err != nil || res.Corrected != 1 {
		t.Fatalf("rebuild-index: %+v, %v; want one record corrected", res, err)
	}
	if _, err := s.Backup(p2, bk.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("p2 after rebuild-index: %v, want the backup not found", err)
	}
	if got, err := s.Backup(p1, bk.ID); err != nil || got.Size != bk.Size {
		t.Errorf("p1 after rebuild-index: %+v, %v; want its backup of %d bytes", got, err, bk.Size)
	}
	if rep, err := s.Check(adminCtx(), repo.CheckOptions{}); err != nil || !rep.OK() {
		t.Errorf("check after rebuild-index: %+v, %v", rep, err)
	}
	if res, err := s.RebuildIndex(adminCtx(), t.Logf); err != nil || res.Corrected != 0 {
		t.Errorf("rebuild-index again: %+v, %v; want nothing to correct", res, err)
	}
}

// An index record that says a backup belongs to another project or volume than its manifest
// does (a damaged index entry) shows the backup to the wrong project: check must report it,
// not call the index clean.
func TestCheckFindsARecordWhoseProjectDisagreesWithItsManifest(t *testing.T) {
	s, dir := newService(t)
	p1 := as("alice", "p1", false)
	if _, err := s.ManageVolume(p1, gateway.ManageRequest{Path: image(t, dir, "vm.img", 128<<10), Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	bk, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	damages := []func(b *index.Backup){
		func(b *index.Backup) { b.Project = "p2" },
		func(b *index.Backup) { b.VolumeID = "another-volume" },
	}
	// An admin's reset to error keeps the backup committed (its manifest stays, and reset-state
	// can make it available again), so check holds its record to its manifest too.
	for i := range 4 {
		if i == 2 {
			if _, err := s.ResetBackupState(adminCtx(), bk.ID, "error"); err != nil {
				t.Fatal(err)
			}
		}
		damage := damages[i%2]
		rec, err := s.Index().Backup(bk.ID)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Index().UpdateBackup(bk.ID, func(b *index.Backup) error { damage(b); return nil }); err != nil {
			t.Fatal(err)
		}
		rep, err := s.Check(adminCtx(), repo.CheckOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.OK() {
			t.Errorf("check of an index whose record of backup %s (%s) disagrees with its manifest (project %q, volume %s) is clean", bk.ID, rec.Status, rec.Project, rec.VolumeID)
		}
		if _, err := s.Index().UpdateBackup(bk.ID, func(b *index.Backup) error { *b = *rec; return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

// A --repo that names a file (or a path under one) is refused as bad input that says so,
// not as "open local backend ...: object not found".
func TestOpenRepoThatIsAFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "vm1.img")
	if err := os.WriteFile(file, []byte("not a repository"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{file, filepath.Join(file, "sub")} {
		_, err := gateway.Open(context.Background(), gateway.Config{Repo: p})
		if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "not a directory") {
			t.Errorf("open %s: %v, want invalid input saying it is not a directory", p, err)
		}
	}
}

// A delete refused because the repository is read-only leaves the backup as it was: before,
// its record stayed "deleting" (the backup vanished from the list), and the next writable
// open's recovery finished the delete the user had been told was refused.
func TestDeleteRefusedReadOnlyKeepsTheBackup(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	bg, ctx := context.Background(), adminCtx()
	if _, err := gateway.Init(bg, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	open := func(readOnly bool) *gateway.Service {
		t.Helper()
		c := cfg
		c.ReadOnly = readOnly
		s, err := gateway.Open(bg, c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open(false)
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: image(t, dir, "vm.img", 256<<10)})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	s = open(true)
	if _, err := s.DeleteBackup(ctx, b.ID, false); !errors.Is(err, backend.ErrReadOnly) {
		t.Errorf("delete on a read-only repository: %v, want read-only", err)
	}
	if got, err := s.Backup(ctx, b.ID); err != nil || got.Status != index.BackupAvailable {
		t.Errorf("after a refused delete: %+v, %v; want it available", got, err)
	}
	s.Close()
	s = open(false)
	defer s.Close()
	if got, err := s.Backup(ctx, b.ID); err != nil || got.Status != index.BackupAvailable {
		t.Errorf("after a refused delete, opened writable: %+v, %v; want it available", got, err)
	}
}

// A backup on a read-only repository is refused before anything is read or recorded; it used
// to read the whole volume, fail at its manifest and leave a backup in error in the list.
func TestBackupRefusedReadOnlyLeavesNoRecord(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	bg, ctx := context.Background(), adminCtx()
	if _, err := gateway.Init(bg, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vm.img", 256<<10), Name: "vm"})
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg.ReadOnly = true
	if s, err = gateway.Open(bg, cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.Name}); !errors.Is(err, backend.ErrReadOnly) {
		t.Errorf("backup on a read-only repository: %v, want read-only", err)
	}
	if bs, err := s.ListBackups(ctx, gateway.ListFilter{}); err != nil || len(bs) != 0 {
		t.Errorf("a refused backup left %d backups (%v)", len(bs), err)
	}
}

// noDeletes refuses, while refuse is set, every Delete of an object under prefix, as a key
// that may write but not delete (an append-only policy) does.
type noDeletes struct {
	backend.Backend
	prefix string
	refuse *atomic.Bool
}

func (b *noDeletes) Delete(ctx context.Context, key string) error {
	if b.refuse.Load() && strings.HasPrefix(key, b.prefix) {
		return fmt.Errorf("delete %s: %w", key, backend.ErrPermission)
	}
	return b.Backend.Delete(ctx, key)
}

// A backup whose delete the backend refused stays deleting, and the next start does not fail
// for it: recovery's attempt to finish the delete failed the start, and with it every
// command, for as long as the backend refused. Once the backend allows it, a start finishes
// the delete.
func TestOpenWhileADeleteCannotFinish(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	cfg := newRepo(t, dir)
	var refuse atomic.Bool
	refuse.Store(true)
	gateway.WrapBackendAtOpenForTest(t, func(be backend.Backend) backend.Backend {
		return &noDeletes{Backend: be, prefix: "manifests/", refuse: &refuse}
	})
	s, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := backedUp(t, s, dir)
	if _, err := s.DeleteBackup(adminCtx(), b.ID, false); !errors.Is(err, backend.ErrPermission) {
		t.Fatalf("delete the backend refuses: %v", err)
	}
	s.Close()
	s, err = gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open with a delete the backend still refuses: %v", err)
	}
	s.Close()
	refuse.Store(false)
	if s, err = gateway.Open(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(filepath.Join(cfg.Repo, "manifests", b.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the start the backend allowed did not finish the delete: %v", err)
	}
	if _, err := s.Backup(adminCtx(), b.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("the deleted backup: %v, want not found", err)
	}
}

// A repository is not made where its state directory already holds an index (one
// CAIRN_STATE_DIR for every repository): that index is another repository's, so the new one
// was made and then failed to open, exit 4, or failed because the process serving the other
// repository held the index. A repository that is there already still says so.
func TestInitRefusesAStateDirOfAnotherRepository(t *testing.T) {
	bg := context.Background()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	a := gateway.Config{Repo: filepath.Join(dir, "a"), StateDir: state}
	if _, err := gateway.Init(bg, a, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(bg, a)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	b := gateway.Config{Repo: filepath.Join(dir, "b"), StateDir: state}
	_, err = gateway.Init(bg, b, repo.InitOptions{})
	if !errors.Is(err, gateway.ErrExists) || !strings.Contains(fmt.Sprint(err), "already holds the index of another repository") {
		t.Fatalf("init with another repository's state directory: %v, want exists naming the index", err)
	}
	if _, err := os.Stat(filepath.Join(b.Repo, "config")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused init made a repository: %v", err)
	}
	if _, err := gateway.Init(bg, a, repo.InitOptions{}); !errors.Is(err, gateway.ErrExists) || strings.Contains(fmt.Sprint(err), "index") {
		t.Errorf("init of the repository that is there: %v, want exists, saying so", err)
	}
	b.StateDir = filepath.Join(dir, "state-b")
	if _, err := gateway.Init(bg, b, repo.InitOptions{}); err != nil {
		t.Errorf("init with a state directory of its own: %v", err)
	}
}

// Two locations name one repository when they are the same directory (after symbolic links,
// a trailing slash) or the same bucket and prefix.
func TestSameRepository(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink(dir, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{dir + "/r", dir + "/link/r/", true},
		{dir + "/r", "file://" + dir + "/r", true},
		{dir + "/r", dir + "/s", false},
		{"s3://bucket/cairn", "s3://bucket/cairn/", true},
		{"s3://bucket/cairn", "s3://bucket/other", false},
		{"s3://bucket/cairn", "s3://other/cairn", false},
		{"s3://bucket/cairn", dir + "/r", false},
		{"", dir + "/r", false},
	} {
		if got := gateway.SameRepository(c.a, c.b); got != c.same {
			t.Errorf("SameRepository(%q, %q) = %v, want %v", c.a, c.b, got, c.same)
		}
	}
}

// A local repository is not made in a directory of other files (`--repo ~` by mistake): its
// objects and the index would sit among them. An empty directory, one holding only a new file
// system's lost+found, and one where an init was interrupted are the repository's to take.
func TestInitRefusesADirectoryOfOtherFiles(t *testing.T) {
	bg := context.Background()
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "notes.txt"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := gateway.Init(bg, gateway.Config{Repo: home}, repo.InitOptions{})
	if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(fmt.Sprint(err), "holds notes.txt") {
		t.Fatalf("init among other files: %v, want invalid input naming notes.txt", err)
	}
	if entries, _ := os.ReadDir(home); len(entries) != 1 {
		t.Errorf("a refused init left %d entries in the directory, want only notes.txt", len(entries))
	}
	// The repository's directory is what counts, wherever the state directory is.
	_, err = gateway.Init(bg, gateway.Config{Repo: home, StateDir: t.TempDir()}, repo.InitOptions{})
	if !errors.Is(err, gateway.ErrInvalid) {
		t.Fatalf("init among other files, the state elsewhere: %v, want invalid input", err)
	}

	mnt := t.TempDir() // a file system's root, as mkfs leaves it
	if err := os.Mkdir(filepath.Join(mnt, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.Init(bg, gateway.Config{Repo: mnt}, repo.InitOptions{}); err != nil {
		t.Fatalf("init beside lost+found: %v", err)
	}
	// The repository there now: the answer is that one exists, not that the directory is full.
	if _, err := gateway.Init(bg, gateway.Config{Repo: mnt}, repo.InitOptions{}); !errors.Is(err, gateway.ErrExists) {
		t.Errorf("init again: %v, want exists", err)
	}
	s, err := gateway.Open(bg, gateway.Config{Repo: mnt})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Nor are the index Open made beside it and the names of an init that did not finish (it
	// stores the config's copy after the config).
	for _, name := range []string{"config", "config-copy"} {
		if err := os.Remove(filepath.Join(mnt, name)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gateway.Init(bg, gateway.Config{Repo: mnt}, repo.InitOptions{}); err != nil {
		t.Errorf("init where an init left its key and the index: %v", err)
	}
}
