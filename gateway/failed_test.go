package gateway_test

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// failedOnA backs up a small image through gateway a, then makes a second backup of it fail:
// its manifest's Put fails, with the faults of also. It returns the failed backup's id.
func failedOnA(t *testing.T, a *gateway.Service, dir string, also ...faulty.Rule) string {
	t.Helper()
	ctx := adminCtx()
	vol := image(t, dir, "vm.img", 64<<10)
	if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: vol}); err != nil {
		t.Fatal(err)
	}
	f := faultyRepository(t, a)
	f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "manifests/", Effect: faulty.Fail, Times: 1})
	for _, r := range also {
		f.Add(r)
	}
	if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: vol}); !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("backup whose manifest Put failed: %v, want the Put's error", err)
	}
	var id string
	for _, b := range backupsOf(t, a) {
		if b.Status == index.BackupError {
			id = b.ID
		}
	}
	if id == "" {
		t.Fatal("no failed backup on a")
	}
	return id
}

// backupsOf lists every backup s knows.
func backupsOf(t *testing.T, s *gateway.Service) []*index.Backup {
	t.Helper()
	bs, err := s.ListBackups(adminCtx(), gateway.ListFilter{AllProjects: true})
	if err != nil {
		t.Fatal(err)
	}
	return bs
}

// A backup that failed on one gateway shows, failed, on the others (Cinder's backup-list shows
// a failed backup on every API node until it is deleted), and so does `cairn status`'s
// "last backup failed". Before, its record was its gateway's index's alone.
func TestFailedBackupShowsOnEveryGateway(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	id := failedOnA(t, a, dir)
	catchUp(t, b)
	got := record(t, b, id)
	if got == nil || got.Status != index.BackupError || got.FailReason != record(t, a, id).FailReason {
		t.Fatalf("the failed backup on the other gateway: %+v, want it failed, with a's reason", got)
	}
	o, err := b.Overview(adminCtx(), gateway.OverviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Failed != 1 {
		t.Errorf("the other gateway's overview counts %d failed backups, want 1", o.Failed)
	}
}

// An index made anew (the old one deleted: it is a cache) still lists the failed backup.
func TestFailedBackupOutlivesANewIndex(t *testing.T) {
	dir := t.TempDir()
	var id, want string
	s := indexMadeAnew(t, dir, func(a *gateway.Service) {
		id = failedOnA(t, a, dir)
		want = record(t, a, id).FailReason
	})
	if got := record(t, s, id); got == nil || got.Status != index.BackupError || got.FailReason != want {
		t.Fatalf("the failed backup after the index was made anew: %+v, want it failed: %q", got, want)
	}
}

// A failed backup deleted through one gateway goes from the others at their next full
// catch-up, and never comes back: not on the gateway that deleted it, not on one that opens
// a new index afterwards. Either gateway may delete it.
func TestFailedBackupDeletedOnOneGatewayGoesFromTheOther(t *testing.T) {
	for _, deleter := range []string{"its own gateway", "another gateway"} {
		t.Run(deleter, func(t *testing.T) {
			dir := t.TempDir()
			a, b, repoDir := twoGateways(t, dir)
			gateway.SetFullCatchUpEveryForTest(t, 0)
			id := failedOnA(t, a, dir)
			catchUp(t, b)
			if record(t, b, id) == nil {
				t.Fatal("the other gateway does not know the failed backup")
			}
			del, other := a, b
			if deleter != "its own gateway" {
				del, other = b, a
			}
			if _, err := del.DeleteBackup(adminCtx(), id, false); err != nil {
				t.Fatal(err)
			}
			catchUp(t, del)
			catchUp(t, other)
			if got := record(t, other, id); got != nil {
				t.Errorf("the gateway that did not delete it still has the failed backup: %s", got.Status)
			}
			if got := record(t, del, id); got != nil {
				t.Errorf("the gateway that deleted it has the failed backup again: %s", got.Status)
			}
			if got := record(t, gatewayOn(t, repoDir, filepath.Join(dir, "state-c")), id); got != nil {
				t.Errorf("a new index has the deleted failed backup: %s", got.Status)
			}
		})
	}
}

// A failure whose record the repository did not take when the backup failed (it was down) is
// stored by the next full catch-up, and not forgotten meanwhile: until it is stored, its
// absence from the repository says nothing.
func TestFailureStoredWhenTheRepositoryIsBack(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	id := failedOnA(t, a, dir, faulty.Rule{Methods: faulty.Put, Prefix: "meta/failed/", Effect: faulty.Fail, Times: 1})
	if got := record(t, a, id); got == nil || got.Status != index.BackupError || got.FailureStored {
		t.Fatalf("the failed backup whose record was not stored: %+v, want it failed and not stored", got)
	}
	catchUp(t, b)
	if got := record(t, b, id); got != nil {
		t.Fatalf("the other gateway knows a failure the repository does not hold: %s", got.Status)
	}
	catchUp(t, a)
	if got := record(t, a, id); got == nil || got.Status != index.BackupError || !got.FailureStored {
		t.Fatalf("the failed backup after a full catch-up with the repository back: %+v, want it failed and stored", got)
	}
	catchUp(t, b)
	if got := record(t, b, id); got == nil || got.Status != index.BackupError {
		t.Errorf("the other gateway after the failure was stored: %+v, want it failed", got)
	}
}

// A failure stored by a gateway that died before it recorded the store: its next full
// catch-up finds the object and records it, so a delete through another gateway afterwards
// is taken for a delete (forgotten), not for a failed store (stored again, and back on every
// gateway).
func TestFailureStoredBeforeACrashIsNotStoredAgainAfterItsDelete(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	id := failedOnA(t, a, dir)
	if _, err := a.Index().UpdateBackup(id, func(r *index.Backup) error { r.FailureStored = false; return nil }); err != nil {
		t.Fatal(err)
	}
	catchUp(t, a)
	catchUp(t, b)
	if _, err := b.DeleteBackup(adminCtx(), id, false); err != nil {
		t.Fatal(err)
	}
	catchUp(t, a)
	catchUp(t, b)
	for name, s := range map[string]*gateway.Service{"a": a, "b": b} {
		if got := record(t, s, id); got != nil {
			t.Errorf("after its delete through b, %s has the failed backup again: %s", name, got.Status)
		}
	}
}

// A failed backup's record removed outside cairn (its copy left) is a loss, not a delete
// through another gateway: the catch-ups keep the failed backup (every delete of this cairn
// removes the copy first) (docs/design.md, "A metadata object lost, its copy left").
func TestALostFailedRecordIsKept(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	id := failedOnA(t, a, dir)
	catchUp(t, b)
	if err := os.Remove(filepath.Join(repoDir, "meta", "failed", hex.EncodeToString([]byte(id)))); err != nil {
		t.Fatal(err)
	}
	catchUp(t, a)
	catchUp(t, b)
	for _, g := range []*gateway.Service{a, b} {
		if got := record(t, g, id); got == nil || got.Status != index.BackupError {
			t.Fatalf("a gateway after the failed record was removed outside cairn: %+v, want the failed backup kept", got)
		}
	}
}
