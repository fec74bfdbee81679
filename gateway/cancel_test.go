package gateway_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// A backup its starter cancels is removed, record and all, and its volume is free again; one
// the gateway's shutdown stops stays as error ("interrupted").
func TestCancelledBackupIsRemoved(t *testing.T) {
	s, dir := newService(t)
	vol := image(t, dir, "vol.img", 1<<20)
	ctx, cancel := context.WithCancel(adminCtx())
	b, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: vol, Name: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	err = s.Submit(ctx, "backup", b.ID, job)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("cancelled backup: %v, want a cancellation saying it is removed", err)
	}
	if _, err := s.Index().Backup(b.ID); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("the cancelled backup's record is still there: %v", err)
	}
	if v, err := s.Volume(adminCtx(), vol); err != nil || v.Status != index.VolumeAvailable {
		t.Errorf("volume after the cancelled backup: %+v %v", v, err)
	}

	// The gateway stops with a backup queued: it ends as error, interrupted.
	s.StartWorkers(1)
	b2, job2, err := s.StartBackup(adminCtx(), gateway.BackupRequest{Volume: vol, Name: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	if err := s.Submit(adminCtx(), "test", "blocker", func(ctx context.Context) error { <-ctx.Done(); close(block); return ctx.Err() }); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(adminCtx(), "backup", b2.ID, job2); err != nil {
		t.Fatal(err)
	}
	stopCtx, done := context.WithTimeout(context.Background(), 30*time.Second)
	defer done()
	if err := s.StopWorkers(stopCtx); err != nil {
		t.Fatal(err)
	}
	<-block
	got, err := s.Index().Backup(b2.ID)
	if err != nil || got.Status != index.BackupError || !strings.Contains(got.FailReason, "interrupted") {
		t.Errorf("backup stopped by the gateway's shutdown: %+v %v, want error, interrupted", got, err)
	}
}

// backup delete --force of a backup it read as creating cancels it, and the commit, if it
// comes after, finds the record gone and stores no manifest. But the backup may commit before
// the cancel reaches it (here: while the question is asked). The delete then deletes it as
// the committed backup it became, manifest and all, so it does not come back at this
// gateway's next full catch-up nor appear on another gateway; one that became protected is
// refused, and stays whole (docs/design.md, "The gateway").
func TestForceDeleteOfABackupThatCommitsMeanwhile(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	vol := image(t, dir, "vol.img", 128<<10)
	hasManifest := func(id string) bool {
		t.Helper()
		has, err := a.Repository().HasManifest(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return has
	}

	cancelled, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteBackup(adminCtx(), cancelled.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := job(context.Background()); err == nil {
		t.Fatal("the job of a backup cancelled before it ran succeeded")
	}
	if hasManifest(cancelled.ID) || record(t, a, cancelled.ID) != nil {
		t.Fatalf("a backup cancelled before its commit left its manifest (%v) or its record", hasManifest(cancelled.ID))
	}

	committed, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	ctx := gateway.WithConfirm(adminCtx(), func(string) error { return job(context.Background()) })
	if _, err := a.DeleteBackup(ctx, committed.ID, true); err != nil {
		t.Fatalf("force delete of a backup that committed while it was asked: %v", err)
	}
	if hasManifest(committed.ID) {
		t.Errorf("delete --force reported backup %s deleted, but its manifest is still stored", committed.ID)
	}
	catchUp(t, a)
	catchUp(t, b)
	if got := record(t, a, committed.ID); got != nil {
		t.Errorf("the deleted backup is back on the gateway that deleted it: %s", got.Status)
	}
	if got := record(t, b, committed.ID); got != nil {
		t.Errorf("the deleted backup is known to the other gateway: %s", got.Status)
	}

	protected, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: vol, Protected: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx = gateway.WithConfirm(adminCtx(), func(string) error { return job(context.Background()) })
	_, err = a.DeleteBackup(ctx, protected.ID, true)
	if !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "protected") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("force delete of a protected backup that committed while it was asked: %v, want a one-line conflict naming the protection", err)
	}
	if got := record(t, a, protected.ID); got == nil || got.Status != index.BackupAvailable || !hasManifest(protected.ID) {
		t.Fatalf("the protected backup the delete refused: %+v, manifest %v", got, hasManifest(protected.ID))
	}
}

// A backup cancelled (force delete) while it is queued behind another job frees its volume at
// once, and a restore cancelled (reset-state) while queued marks its target error at once:
// neither waits for a worker to be free. Before, the cancelled job waited for a worker's place
// to end, and until the job ahead of it finished (hours, for a large backup) the volume of a
// backup that was no longer listed stayed backing-up, refusing every backup, restore and
// delete of it, and the restore's target stayed restoring-backup.
func TestJobsCancelledWhileQueuedEndAtOnce(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	other := image(t, dir, "other.img", 1<<20)
	s.StartWorkers(1)
	release := make(chan struct{})
	if err := s.Submit(adminCtx(), "test", "blocker", func(context.Context) error { <-release; return nil }); err != nil {
		t.Fatal(err)
	}
	defer func() {
		close(release)
		if err := s.StopWorkers(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	queued, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: other, Name: "queued"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Restore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, Name: "target"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackup(adminCtx(), queued.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResetBackupState(adminCtx(), b.ID, "error"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, err := s.Volume(adminCtx(), other)
		if err != nil {
			t.Fatal(err)
		}
		target, err := s.Volume(adminCtx(), res.VolumeID)
		if err != nil {
			t.Fatal(err)
		}
		if v.Status == index.VolumeAvailable && target.Status == index.VolumeError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after their jobs were cancelled in the queue: the backed-up volume is %s (want available), the restore target %s (want error)",
				v.Status, target.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Index().Backup(queued.ID); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("the cancelled backup's record: %v, want gone", err)
	}
}

// A restore that reset-state cancelled while queued, followed by a second restore of the same
// backup, ends as its own job: the jobs list shows the first cancelled and the second queued,
// then succeeded. Both jobs are "restore/<backup id>"; before, the first's end finished the
// second's entry (the list showed the queued restore cancelled, with the first's error), and
// the second's real end found no entry and was never shown.
func TestRestoreCancelledWhileQueuedEndsOnlyItsOwnJob(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	s.StartWorkers(1)
	release := make(chan struct{})
	if err := s.Submit(adminCtx(), "test", "blocker", func(context.Context) error { <-release; return nil }); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.StopWorkers(context.Background()); err != nil {
			t.Error(err)
		}
	}()
	// The first restore, as Restore accepts it, but its job ends only when gate opens: after
	// the second restore was accepted.
	_, job1, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "first.img")})
	if err != nil {
		t.Fatal(err)
	}
	gate := make(chan struct{})
	if err := s.Submit(adminCtx(), "restore", b.ID, func(ctx context.Context) error { <-gate; return job1(ctx) }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResetBackupState(adminCtx(), b.ID, "available"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "second.img")}); err != nil {
		t.Fatal(err)
	}
	close(gate)
	jobID := "restore/" + b.ID
	states := func() (live, ended []string) {
		running, recent, err := s.Jobs(adminCtx())
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range running {
			if j.ID == jobID {
				live = append(live, j.State)
			}
		}
		for _, j := range recent {
			if j.ID == jobID {
				ended = append(ended, j.State)
			}
		}
		return live, ended
	}
	wait := func(what string, done func(live, ended []string) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			live, ended := states()
			if done(live, ended) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: live %v, ended %v", what, live, ended)
			}
		}
	}
	wait("the first restore's end", func(_, ended []string) bool { return len(ended) > 0 })
	if live, ended := states(); !slices.Equal(live, []string{gateway.JobQueued}) || !slices.Equal(ended, []string{gateway.JobCancelled}) {
		t.Errorf("after the cancelled restore ended: live %v, ended %v; want the second queued, the first cancelled", live, ended)
	}
	close(release)
	wait("the second restore's end", func(live, ended []string) bool { return len(live) == 0 && len(ended) == 2 })
	if _, ended := states(); !slices.Equal(ended, []string{gateway.JobSucceeded, gateway.JobCancelled}) {
		t.Errorf("after both restores ended: %v, want the second succeeded, the first cancelled", ended)
	}
}

// A backup of a volume that a cancelled restore left error (its contents are incomplete; seed
// 3.5.3: "the destination volume is useless") leaves it error, with its reason. Before, the
// backup's end set every volume it read available, reason and all: the next backup of it (a
// policy's, say) made a half-restored volume look intact.
func TestBackupOfAVolumeACancelledRestoreLeftErrorKeepsItError(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	tgt, before := leftErrorByARestore(t, s, dir, b)
	if _, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: "tgt"}); err != nil {
		t.Fatal(err)
	}
	after, err := s.Volume(adminCtx(), tgt.ID)
	if err != nil || after.Status != index.VolumeError || after.FailReason != before.FailReason {
		t.Errorf("volume after a backup of it: %s (%q), want %s (%q)", after.Status, after.FailReason, before.Status, before.FailReason)
	}
}
