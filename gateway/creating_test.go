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
)

// creatingObjects lists the names of repoDir's objects under meta/<kind>/.
func creatingObjects(t *testing.T, repoDir, kind string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repoDir, "meta", kind))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// listed returns backup id as s lists it to an admin of every project, or nil.
func listed(t *testing.T, s *gateway.Service, id string) *index.Backup {
	t.Helper()
	for _, b := range backupsOf(t, s) {
		if b.ID == id {
			return b
		}
	}
	return nil
}

// A backup accepted through gateway a shows on gateway b as creating from the moment the
// create returns: a show of its id through b (cinder backup-show behind a load balancer)
// finds it without waiting for a catch-up, b's list shows it after its catch-up, a member of
// another project sees nothing, and what needs its data is refused naming a's host; b learns
// its volume (managed through a a moment before) with it, and never takes the backup into
// its index. Once it commits, b shows the committed backup and no creating object is left; a
// failed backup leaves none either. Before, b answered 404 until the commit and its catch-up.
func TestBackupBeingCreatedShowsOnEveryGateway(t *testing.T) {
	dir := t.TempDir()
	a, b, repoDir := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	vol := image(t, dir, "vm.img", 256<<10)
	host, _ := os.Hostname()

	bk, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: vol, Name: "nightly"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Backup(adminCtx(), bk.ID)
	if err != nil {
		t.Fatalf("show through b of the backup a just accepted: %v", err)
	}
	if got.Status != index.BackupCreating || got.RunBy != host || got.Name != "nightly" || got.VolumeID != bk.VolumeID {
		t.Fatalf("b shows %+v, want creating through the gateway on %s", got, host)
	}
	if record(t, b, bk.ID) != nil {
		t.Fatal("b took a backup another gateway is creating into its index")
	}
	if v, err := b.Index().Volume(bk.VolumeID); err != nil || v.Path != vol {
		t.Fatalf("b does not know the volume a manages and backs up: %+v %v", v, err)
	}
	if _, err := b.Backup(as("eve", "other", false), bk.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("a member of another project asked b for the backup: %v, want not found", err)
	}
	c := gatewayOn(t, repoDir, filepath.Join(dir, "state-c")) // a third, whose first catch-up lists it
	catchUp(t, b)
	for name, g := range map[string]*gateway.Service{"b": b, "c": c} {
		if l := listed(t, g, bk.ID); l == nil || l.Status != index.BackupCreating || l.RunBy != host {
			t.Fatalf("%s lists %+v, want the backup being created through a", name, l)
		}
	}
	_, err = b.Restore(adminCtx(), gateway.RestoreRequest{Backup: bk.ID, To: filepath.Join(dir, "out.img")})
	if !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), host) {
		t.Fatalf("restore through b of a backup being created through a: %v, want a conflict naming %s", err, host)
	}
	if _, err := b.DeleteBackup(adminCtx(), bk.ID, false); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("delete without force through b of a backup being created through a: %v, want a conflict", err)
	}

	objects := creatingObjects(t, repoDir, "creating")
	if len(objects) != 1 {
		t.Fatalf("creating objects while one backup is being created: %v", objects)
	}
	leftover, err := os.ReadFile(filepath.Join(repoDir, "meta", "creating", objects[0]))
	if err != nil {
		t.Fatal(err)
	}
	if err := job(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := creatingObjects(t, repoDir, "creating"); len(left) != 0 {
		t.Fatalf("creating objects left after the commit: %v", left)
	}
	// Its gateway died between the commit and the object's removal: the object is left, and
	// the next full catch-up, which lists the manifest, removes it.
	if err := os.WriteFile(filepath.Join(repoDir, "meta", "creating", objects[0]), leftover, 0o600); err != nil {
		t.Fatal(err)
	}
	catchUp(t, b)
	got, err = b.Backup(adminCtx(), bk.ID)
	if err != nil || got.Status != index.BackupAvailable || got.RunBy != "" {
		t.Fatalf("b after the commit: %+v %v, want its own record, available", got, err)
	}
	if sum, want := restoreSHA(t, b, adminCtx(), bk.ID), sha256File(t, vol); sum != want {
		t.Fatalf("restore through b: sha256 %s, want %s", sum, want)
	}
	if left := creatingObjects(t, repoDir, "creating"); len(left) != 0 {
		t.Fatalf("creating object of a committed backup left after a full catch-up: %v", left)
	}
	failed := failedOnA(t, a, dir)
	if left := creatingObjects(t, repoDir, "creating"); len(left) != 0 {
		t.Fatalf("creating objects left after backup %s failed: %v", failed, left)
	}
	catchUp(t, b)
	if l := listed(t, b, failed); l == nil || l.Status != index.BackupError || l.RunBy != "" {
		t.Fatalf("b lists the failed backup as %+v, want its failure", l)
	}
}

// A show through b of a backup that a committed a moment ago finds it, before b's catch-up:
// the id a create returned is never unknown to a gateway on the same repository.
func TestBackupCommittedElsewhereIsFoundBeforeTheCatchUp(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	catchUp(t, b)
	vol := image(t, dir, "vm.img", 256<<10)
	bk, err := a.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.Backup(adminCtx(), bk.ID)
	if err != nil || got.Status != index.BackupAvailable {
		t.Fatalf("show through b of a backup a committed since b's catch-up: %+v %v, want it available", got, err)
	}
	if _, err := b.Backup(adminCtx(), "9a4b0e4e-0d57-4f39-9a2d-6e7f0e7f0e7f"); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("show of an id no gateway made: %v, want not found", err)
	}
}

// A gateway that dies while it creates a backup leaves its creating object, which no one
// rewrites: the others show the backup as error, interrupted, naming its host, never as
// creating for ever. A delete through another gateway requests the cancel, which the dead
// gateway acts on when it starts again (the backup goes, its objects too); a backup without
// such a request is recorded failed at that start, and every gateway shows that failure.
func TestBackupBeingCreatedByAGatewayThatDiedShowsInterrupted(t *testing.T) {
	dir := t.TempDir()
	cfg := newRepo(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	gateway.SetCreatingTimesForTest(t, time.Hour, 50*time.Millisecond, time.Hour)
	stateA := filepath.Join(dir, "state-a")
	a, err := gateway.Open(context.Background(), gateway.Config{Repo: cfg.Repo, StateDir: stateA})
	if err != nil {
		t.Fatal(err)
	}
	b := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-b"))
	host, _ := os.Hostname()
	cancelled, _, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "one.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	interrupted, _, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "two.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	a.Close() // dies: the jobs never run, and nothing rewrites their objects
	time.Sleep(100 * time.Millisecond)
	catchUp(t, b)
	for _, id := range []string{cancelled.ID, interrupted.ID} {
		l := listed(t, b, id)
		if l == nil || l.Status != index.BackupError || !strings.Contains(l.FailReason, host) || !strings.Contains(l.FailReason, "stopped reporting") {
			t.Fatalf("b lists the backup of the dead gateway as %+v, want error, interrupted on %s", l, host)
		}
	}
	d, err := b.DeleteBackup(adminCtx(), cancelled.ID, false)
	if err != nil || d.Status != index.BackupDeleting {
		t.Fatalf("delete through b of the dead gateway's interrupted backup: %+v %v, want a cancel request", d, err)
	}
	catchUp(t, b)
	if l := listed(t, b, cancelled.ID); l == nil || l.Status != index.BackupDeleting {
		t.Fatalf("b lists the backup whose cancel it requested as %+v, want deleting", l)
	}

	a = gatewayOn(t, cfg.Repo, stateA) // starts again
	if r := record(t, a, cancelled.ID); r != nil {
		t.Fatalf("a kept the backup cancelled through b while it was down: %s %s", r.Status, r.FailReason)
	}
	if r := record(t, a, interrupted.ID); r == nil || r.Status != index.BackupError || !strings.Contains(r.FailReason, "interrupted") {
		t.Fatalf("a's record of the backup the crash interrupted: %+v, want error, interrupted", r)
	}
	catchUp(t, a)
	catchUp(t, b)
	if l := listed(t, b, cancelled.ID); l != nil {
		t.Fatalf("b still lists the cancelled backup: %+v", l)
	}
	if l := listed(t, b, interrupted.ID); l == nil || l.Status != index.BackupError || l.RunBy != "" || !strings.Contains(l.FailReason, "cairn stopped") {
		t.Fatalf("b lists the interrupted backup as %+v, want the failure a recorded", l)
	}
	for _, kind := range []string{"creating", "cancel"} {
		if left := creatingObjects(t, cfg.Repo, kind); len(left) != 0 {
			t.Fatalf("%s objects left once the dead gateway started again: %v", kind, left)
		}
	}
}

// A force delete (cinder's cancel, seed 3.3) through b of a backup a is creating stores a
// request that a acts on: a queued backup stops as it begins, a running one within
// cancelLook or at its commit, whichever comes first; each is removed, as a force delete through a removes it, and leaves no
// objects behind. A request that comes after the commit leaves the backup whole.
func TestForceDeleteCancelsABackupBeingCreatedThroughAnotherGateway(t *testing.T) {
	dir := t.TempDir()
	cfg := newRepo(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	gateway.SetCreatingTimesForTest(t, time.Hour, time.Hour, 20*time.Millisecond)
	// a reads volumes at 64 KiB/s: a 4 MiB backup runs for a minute unless cancelled.
	a, err := gateway.Open(context.Background(), gateway.Config{Repo: cfg.Repo, StateDir: filepath.Join(dir, "state-a"), VolumeReadRate: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-b"))

	queued, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "one.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteBackup(adminCtx(), queued.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := job(context.Background()); !errors.Is(err, context.Canceled) {
		t.Fatalf("the job of a backup cancelled through b while queued: %v, want cancelled", err)
	}
	if r := record(t, a, queued.ID); r != nil {
		t.Fatalf("a kept the backup cancelled through b: %s", r.Status)
	}

	running, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "two.img", 4<<20)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- job(context.Background()) }()
	time.Sleep(200 * time.Millisecond) // running
	if _, err := b.DeleteBackup(as("bob", gateway.DefaultProject, false), running.ID, true); !errors.Is(err, gateway.ErrDenied) {
		t.Fatalf("force delete by a member: %v, want denied", err)
	}
	if _, err := b.DeleteBackup(adminCtx(), running.ID, true); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("the running backup cancelled through b: %v, want cancelled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the running backup did not stop within 30 s of its cancel through b")
	}
	if r := record(t, a, running.ID); r != nil {
		t.Fatalf("a kept the running backup cancelled through b: %s", r.Status)
	}
	catchUp(t, b)
	for _, id := range []string{queued.ID, running.ID} {
		if l := listed(t, b, id); l != nil {
			t.Fatalf("b still lists cancelled backup %s: %+v", id, l)
		}
	}
	for _, kind := range []string{"creating", "cancel"} {
		if left := creatingObjects(t, cfg.Repo, kind); len(left) != 0 {
			t.Fatalf("%s objects left after the cancels: %v", kind, left)
		}
	}

	// The request lands while it runs and the gateway does not look before the commit: the
	// commit looks, and it is cancelled all the same.
	gateway.SetCreatingTimesForTest(t, time.Hour, time.Hour, time.Hour)
	late, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "four.img", 96<<10)})
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- job(context.Background()) }()
	time.Sleep(200 * time.Millisecond)
	if _, err := b.DeleteBackup(adminCtx(), late.ID, true); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a backup whose cancel through b came before its commit: %v, want cancelled", err)
	}
	if has, err := a.Repository().HasManifest(context.Background(), late.ID); err != nil || has || record(t, a, late.ID) != nil {
		t.Fatalf("the backup cancelled at its commit left its manifest (%v %v) or its record", has, err)
	}
	for _, kind := range []string{"creating", "cancel"} {
		if left := creatingObjects(t, cfg.Repo, kind); len(left) != 0 {
			t.Fatalf("%s objects left after the cancel at the commit: %v", kind, left)
		}
	}

	// The request lands after the last look, as the manifest is stored: the backup commits,
	// and is then deleted, as the force delete asked. Before, the request went unread with the
	// creating object, and the backup stayed.
	gone := func(id, when string) {
		t.Helper()
		if has, err := a.Repository().HasManifest(context.Background(), id); err != nil || has || record(t, a, id) != nil {
			t.Fatalf("the backup whose force delete came %s: manifest %v (%v) or record left on a", when, has, err)
		}
		catchUp(t, b)
		if l := listed(t, b, id); l != nil {
			t.Fatalf("b still lists the backup whose force delete came %s: %+v", when, l)
		}
		if left := creatingObjects(t, cfg.Repo, "cancel"); len(left) != 0 {
			t.Fatalf("a cancel request that came %s was left: %v", when, left)
		}
	}
	gateway.SetAfterLastCancelLookForTest(t, func(id string) {
		if _, err := b.DeleteBackup(adminCtx(), id, true); err != nil {
			t.Errorf("force delete through b as a commits: %v", err)
		}
	})
	window, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "five.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if err := job(context.Background()); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "deleted as it committed") {
		t.Fatalf("the job of a backup force-deleted through b as it committed: %v, want cancelled", err)
	}
	gateway.SetAfterLastCancelLookForTest(t, func(string) {})
	gone(window.ID, "as it committed")

	// The request lands after the job ended (b had not caught up): the next full catch-up
	// deletes the backup.
	kept, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "three.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Backup(adminCtx(), kept.ID); err != nil {
		t.Fatal(err)
	}
	ctx := gateway.WithConfirm(adminCtx(), func(string) error { return job(context.Background()) })
	if _, err := b.DeleteBackup(ctx, kept.ID, true); err != nil {
		t.Fatal(err)
	}
	catchUp(t, a)
	gone(kept.ID, "after its job ended")

	// A protected backup stays, and the request goes.
	protected, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "six.img", 64<<10), Protected: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Backup(adminCtx(), protected.ID); err != nil {
		t.Fatal(err)
	}
	ctx = gateway.WithConfirm(adminCtx(), func(string) error { return job(context.Background()) })
	if _, err := b.DeleteBackup(ctx, protected.ID, true); err != nil {
		t.Fatal(err)
	}
	catchUp(t, a)
	if r := record(t, a, protected.ID); r == nil || r.Status != index.BackupAvailable {
		t.Fatalf("a's protected backup after a force delete through b that came after its commit: %+v, want it available", r)
	}
	catchUp(t, b)
	if left := creatingObjects(t, cfg.Repo, "cancel"); len(left) != 0 {
		t.Fatalf("the request for a protected backup was left: %v", left)
	}
}

// A member's plain delete of a backup shown interrupted (its gateway was only slow to report)
// that then commits deletes it with the member's rights: the repository's minimum age keeps
// it. Before, the request was acted on as an admin's force delete, which passes the minimum
// age, a protection only an admin may override.
func TestDeleteRequestThatComesAsTheBackupCommitsKeepsItsCallersRights(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetFullCatchUpEveryForTest(t, 0)
	gateway.SetCreatingTimesForTest(t, time.Hour, time.Millisecond, time.Hour) // shown interrupted at once
	if _, err := a.UpdateSettings(adminCtx(), func(st *gateway.Settings) error {
		st.MinAge = gateway.Duration(time.Hour)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	member := as("bob", gateway.DefaultProject, false)
	gateway.SetAfterLastCancelLookForTest(t, func(id string) {
		catchUp(t, b)
		time.Sleep(5 * time.Millisecond)
		if d, err := b.DeleteBackup(member, id, false); err != nil || d.Status != index.BackupDeleting {
			t.Errorf("a member's delete through b of a backup shown interrupted: %+v %v, want a cancel request", d, err)
		}
	})
	bk, job, err := a.StartBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "vm.img", 64<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if err := job(context.Background()); err != nil {
		t.Fatalf("the backup a member asked to delete as it committed, younger than the minimum age: %v, want it kept", err)
	}
	gateway.SetAfterLastCancelLookForTest(t, func(string) {})
	if r := record(t, a, bk.ID); r == nil || r.Status != index.BackupAvailable {
		t.Fatalf("a's backup after a member's delete request that came as it committed: %+v, want it available", r)
	}
	if sum, want := restoreSHA(t, a, adminCtx(), bk.ID), sha256File(t, filepath.Join(dir, "vm.img")); sum != want {
		t.Fatalf("the kept backup restored: sha256 %s, want %s", sum, want)
	}
}
