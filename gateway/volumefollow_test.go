package gateway_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// A restore to a new volume through gateway a, which b learned while the restore ran (its
// record then says what a crash would leave: error, restore interrupted), shows available
// on b once it ended there: b's full catch-up follows the newer record. Before, b showed the
// volume in error for good, while a showed it available. A volume b is busy with keeps its
// status here until b's own job ends.
func TestVolumeStatusFollowsARestoreThroughAnotherGateway(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	res, job, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "restored"})
	if err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if v, err := b.Index().Volume(res.VolumeID); err != nil || v.Status != index.VolumeError {
		t.Fatalf("b learned the volume a is restoring as %+v %v, want its stored form: error", v, err)
	}
	if err := job(context.Background()); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	v, err := b.Index().Volume(res.VolumeID)
	if err != nil || v.Status != index.VolumeAvailable || v.FailReason != "" {
		t.Fatalf("b after the restore through a ended: %+v %v, want available", v, err)
	}
	if sum, want := sha256File(t, v.Path), sha256File(t, bk.VolumePath); sum != want {
		t.Fatalf("restored volume: sha256 %s, want %s", sum, want)
	}

	// A restore through a onto it that fails leaves it in error on a, and so on b; the next,
	// which succeeds, available on both.
	f := faultyRepository(t, a)
	f.Add(faulty.Rule{Methods: faulty.Get | faulty.GetRange, Prefix: "packs/", Effect: faulty.Fail})
	if _, err := a.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Volume: res.VolumeID}); err == nil {
		t.Fatal("a restore whose reads fail succeeded")
	}
	f.Reset()
	va, err := a.Index().Volume(res.VolumeID)
	if err != nil || va.Status != index.VolumeError {
		t.Fatalf("a after its restore failed: %+v %v", va, err)
	}
	catchUp(t, b)
	if v, err := b.Index().Volume(res.VolumeID); err != nil || v.Status != index.VolumeError || v.FailReason != va.FailReason {
		t.Fatalf("b after a restore through a failed: %+v %v, want error: %s", v, err, va.FailReason)
	}
	if _, err := a.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Volume: res.VolumeID}); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	if v, err := b.Index().Volume(res.VolumeID); err != nil || v.Status != index.VolumeAvailable || v.FailReason != "" {
		t.Fatalf("b after a restore through a succeeded: %+v %v, want available", v, err)
	}
}

// A restore through gateway a shows on gateway b while it runs: the backup restoring, with
// where and through which host, and its target volume restoring-backup, also when b learns
// the new volume on a show of its id (cinder show behind a load balancer). Once it ended, b
// shows both available. A restore whose gateway stopped reporting shows as its records
// stand: the volume in error, as a crash leaves it.
func TestRestoreThroughAnotherGatewayShowsOnEveryGateway(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir, bk := backedUpOnA(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	host, _ := os.Hostname()
	res, job, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "restored"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := b.VolumeByID(adminCtx(), res.VolumeID)
	if err != nil || v.Status != index.VolumeRestoringBackup {
		t.Fatalf("show through b of the volume a is restoring to: %+v %v, want restoring-backup", v, err)
	}
	got, err := b.Backup(adminCtx(), bk.ID)
	if err != nil || got.Status != index.BackupRestoring || !got.LastRestore.Running() || !strings.Contains(got.LastRestore.Target, host) {
		t.Fatalf("b shows the backup a is restoring as %+v %v, want restoring through %s", got, err, host)
	}
	catchUp(t, b)
	vols, err := b.ListVolumes(adminCtx(), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.ID == res.VolumeID && v.Status != index.VolumeRestoringBackup {
			t.Fatalf("b lists the volume a is restoring to as %s", v.Status)
		}
	}
	if l := listed(t, b, bk.ID); l == nil || l.Status != index.BackupRestoring {
		t.Fatalf("b lists the backup a is restoring as %+v", l)
	}
	if _, err := b.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, To: filepath.Join(dir, "x.img")}); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("restore through b of a backup a is restoring: %v, want a conflict", err)
	}
	if err := job(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := creatingObjects(t, repoDir, "restoring"); len(left) != 0 {
		t.Fatalf("restoring objects left after the restore: %v", left)
	}
	catchUp(t, b)
	if v, err := b.VolumeByID(adminCtx(), res.VolumeID); err != nil || v.Status != index.VolumeAvailable {
		t.Fatalf("b after the restore through a ended: %+v %v, want available", v, err)
	}
	if got, err := b.Backup(adminCtx(), bk.ID); err != nil || got.Status != index.BackupAvailable {
		t.Fatalf("b shows the backup after its restore through a as %+v %v, want available", got, err)
	}

	// a stops reporting in the middle of another restore.
	gateway.SetCreatingTimesForTest(t, time.Hour, 50*time.Millisecond, time.Hour)
	res2, _, err := a.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, Name: "abandoned"})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	catchUp(t, b)
	if v, err := b.VolumeByID(adminCtx(), res2.VolumeID); err != nil || v.Status != index.VolumeError {
		t.Fatalf("b shows the volume of a restore whose gateway stopped reporting as %+v %v, want error", v, err)
	}
	if got, err := b.Backup(adminCtx(), bk.ID); err != nil || got.Status != index.BackupAvailable {
		t.Fatalf("b shows the backup of a restore whose gateway stopped reporting as %+v %v, want available", got, err)
	}
}

// A restore whose object could not be removed as it ended (the store refused the delete)
// leaves it behind; the gateway that ran it takes it for its own leftover, removes it at its
// next catch-up and restores the backup again, where it took it for another gateway's
// restore and refused its own next restore of the backup for ten minutes (found by the S3
// outage test). A backup cancelled the same way is not shown as one being created elsewhere.
func TestOwnLeftoversAreNotAnotherGatewaysJobs(t *testing.T) {
	dir := t.TempDir()
	a, _, repoDir, bk := backedUpOnA(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	f := faultyRepository(t, a)
	f.Add(faulty.Rule{Methods: faulty.Delete, Prefix: "meta/restoring/", Effect: faulty.Fail})
	f.Add(faulty.Rule{Methods: faulty.Delete, Prefix: "meta/creating/", Effect: faulty.Fail})
	out := filepath.Join(dir, "out.img")
	if _, err := a.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, To: out}); err != nil {
		t.Fatal(err)
	}
	cancelled, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: bk.VolumePath})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteBackup(adminCtx(), cancelled.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := job(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled backup: %v", err)
	}
	if len(creatingObjects(t, repoDir, "restoring")) != 1 || len(creatingObjects(t, repoDir, "creating")) != 1 {
		t.Fatal("the failing deletes left no objects: the test shows nothing")
	}
	f.Reset()
	catchUp(t, a)
	if got, err := a.Backup(adminCtx(), bk.ID); err != nil || got.Status != index.BackupAvailable {
		t.Fatalf("a shows its backup after its own restore ended as %+v %v, want available", got, err)
	}
	if _, err := a.Backup(adminCtx(), cancelled.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("a shows the backup it cancelled: %v, want not found", err)
	}
	if sum, want := restoreSHA(t, a, adminCtx(), bk.ID), sha256File(t, bk.VolumePath); sum != want {
		t.Fatalf("restore again: sha256 %s, want %s", sum, want)
	}
	for _, kind := range []string{"restoring", "creating"} {
		if left := creatingObjects(t, repoDir, kind); len(left) != 0 {
			t.Fatalf("%s leftovers still there after a's catch-up: %v", kind, left)
		}
	}
}
