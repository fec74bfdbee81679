package gateway_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// A reset-state through gateway b of a backup gateway a is restoring cancels a's restore, as
// one through a does (cinder backup-reset-state behind a load balancer): queued, it never
// starts; running, it stops; either way its volume is left in error and the backup as the
// reset set it, on both gateways. Before, b changed the backup's status and a's restore went
// on writing. A request b made from a stale view (the restore it saw had ended) cancels no
// later restore, and a full catch-up removes it; a request that cannot be stored refuses the
// reset, which changes nothing.
func TestResetStateThroughAnotherGatewayCancelsItsRestore(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	gateway.SetCreatingTimesForTest(t, time.Hour, time.Hour, 20*time.Millisecond)
	catchUp(t, b) // the catch-ups below follow the backup log; SyncBackups is the full one
	ctx := context.Background()
	status := func(s *gateway.Service, want index.BackupStatus) {
		t.Helper()
		if got, err := s.Backup(adminCtx(), bk.ID); err != nil || got.Status != want {
			t.Fatalf("backup shown as %+v %v, want %s", got, err, want)
		}
	}
	volumeError := func(s *gateway.Service, id string) {
		t.Helper()
		if v, err := s.VolumeByID(adminCtx(), id); err != nil || v.Status != index.VolumeError {
			t.Fatalf("volume of the cancelled restore: %+v %v, want error", v, err)
		}
	}
	noObjects := func() {
		t.Helper()
		for _, kind := range []string{"restoring", "restore-cancel"} {
			if left := creatingObjects(t, repoDir, kind); len(left) != 0 {
				t.Fatalf("%s objects left: %v", kind, left)
			}
		}
	}

	// Queued: reset to error through b before a's job begins.
	res, job, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "queued"})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	status(b, index.BackupRestoring)
	if got, err := b.ResetBackupState(adminCtx(), bk.ID, "error"); err != nil || got.Status != index.BackupError {
		t.Fatalf("reset to error through b: %+v %v", got, err)
	}
	if reqs := creatingObjects(t, repoDir, "restore-cancel"); len(reqs) != 1 {
		t.Fatalf("requests to cancel the restore stored: %v, want one", reqs)
	}
	status(b, index.BackupError)
	if err := job(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("a's restore after a reset through b: %v, want cancelled", err)
	}
	volumeError(a, res.VolumeID)
	noObjects()
	catchUp(t, a)
	status(a, index.BackupError)
	catchUp(t, b)
	volumeError(b, res.VolumeID)
	if _, err := a.ResetBackupState(adminCtx(), bk.ID, "available"); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	status(b, index.BackupAvailable)

	// Running: reset to available through b while a's restore runs. Its first progress report
	// waits until a cancelled it, so the leaves after it are never read: more than its
	// workers and their queue hold (two of each a core).
	leaves := 4*runtime.GOMAXPROCS(0) + 4
	big, err := a.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "big.img", leaves<<22)})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	started := make(chan struct{})
	var once sync.Once
	progress := func(done, total int64) {
		once.Do(func() {
			close(started)
			for end := time.Now().Add(time.Minute); time.Now().Before(end) && !gateway.RestoreCancelledForTest(a, big.ID); {
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	res2, job2, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: big.ID, Name: "running", Progress: progress})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- job2(ctx) }()
	<-started
	catchUp(t, b)
	if got, err := b.ResetBackupState(adminCtx(), big.ID, "available"); err != nil || got.Status != index.BackupAvailable {
		t.Fatalf("reset to available through b: %+v %v", got, err)
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("a's running restore after a reset through b: %v, want cancelled", err)
	}
	volumeError(a, res2.VolumeID)
	noObjects()
	catchUp(t, b)
	volumeError(b, res2.VolumeID)
	if got, err := b.Backup(adminCtx(), big.ID); err != nil || got.Status != index.BackupAvailable {
		t.Fatalf("b shows the backup after the cancelled restore as %+v %v, want available", got, err)
	}

	// A stale view: the restore b saw ended before b's reset. Its request cancels no later
	// restore, and a full catch-up removes it.
	resetAfterItEnded := func(name string) {
		t.Helper()
		_, job, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: name})
		if err != nil {
			t.Fatal(err)
		}
		catchUp(t, b)
		if err := job(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ResetBackupState(adminCtx(), bk.ID, "available"); err != nil {
			t.Fatal(err)
		}
		if reqs := creatingObjects(t, repoDir, "restore-cancel"); len(reqs) != 1 {
			t.Fatalf("requests stored from b's stale view: %v, want one", reqs)
		}
	}
	resetAfterItEnded("ended")
	res4, err := a.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "later"})
	if err != nil {
		t.Fatalf("a restore after a request for an earlier one: %v", err)
	}
	v4, err := a.Index().Volume(res4.VolumeID)
	if err != nil || v4.Status != index.VolumeAvailable {
		t.Fatalf("volume of the later restore: %+v %v", v4, err)
	}
	if sum, want := sha256File(t, v4.Path), sha256File(t, bk.VolumePath); sum != want {
		t.Fatalf("later restore: sha256 %s, want %s", sum, want)
	}
	noObjects() // the later restore's end removed the earlier request with its own objects
	resetAfterItEnded("leftover")
	catchUp(t, b) // the 10-second one leaves it
	if reqs := creatingObjects(t, repoDir, "restore-cancel"); len(reqs) != 1 {
		t.Fatalf("requests left before a full catch-up: %v, want one", reqs)
	}
	if err := b.SyncBackups(ctx); err != nil { // the full catch-up
		t.Fatal(err)
	}
	noObjects()

	// A request that cannot be stored refuses the reset, and changes nothing.
	_, job6, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "unstored"})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	f := faultyRepository(t, b)
	f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta/restore-cancel/", Effect: faulty.Fail})
	if _, err := b.ResetBackupState(adminCtx(), bk.ID, "error"); err == nil || !strings.Contains(err.Error(), "nothing was reset") {
		t.Fatalf("reset through b whose request cannot be stored: %v, want refused", err)
	}
	f.Reset()
	status(b, index.BackupRestoring)
	if err := job6(ctx); err != nil {
		t.Fatalf("restore after a reset that was refused: %v", err)
	}
	catchUp(t, b)
	status(b, index.BackupAvailable)
	noObjects()
}
