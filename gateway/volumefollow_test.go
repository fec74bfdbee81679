package gateway_test

import (
	"context"
	"testing"

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
