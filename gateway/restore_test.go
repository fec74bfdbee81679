package gateway_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// backedUp makes a managed volume of 256 KiB in dir and one backup of it.
func backedUp(t *testing.T, s *gateway.Service, dir string) *index.Backup {
	t.Helper()
	return backedUpImage(t, s, image(t, dir, "vm.img", 256<<10))
}

// backedUpImage manages the image img as volume "vm" and backs it up once.
func backedUpImage(t *testing.T, s *gateway.Service, img string) *index.Backup {
	t.Helper()
	ctx := adminCtx()
	v, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: img, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A restore to a path that did not exist when it was accepted creates the file when its job
// runs: a file that appeared there meanwhile (the job was queued) is neither overwritten nor,
// when the restore fails or is cancelled, removed; the restore says so. Before (found by
// review), the job took it over without asking and removed it when it failed.
func TestRestoreLeavesAFileThatAppearedAfterItWasAccepted(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	target := filepath.Join(dir, "target.img")
	precious := bytes.Repeat([]byte("precious"), 1<<16) // larger than the backup
	for _, cancelled := range []bool{false, true} {
		os.Remove(target)
		_, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: target})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, precious, 0o600); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(adminCtx())
		if cancelled {
			cancel()
		}
		err = job(ctx)
		cancel()
		if err == nil || (!cancelled && !strings.Contains(err.Error(), "appeared after the restore was accepted")) {
			t.Fatalf("restore onto a file that appeared after it was accepted (cancelled: %v): %v", cancelled, err)
		}
		if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, precious) {
			t.Fatalf("the file that appeared at the target is gone or changed (cancelled: %v): %d bytes, %v", cancelled, len(got), err)
		}
	}
}

// A cancelled restore is recorded as cancelled, not failed: the record's kind, the error a
// command that waited for it gets, and the job's own error all say so (found by review).
func TestCancelledRestoreIsRecordedAsCancelled(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	_, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "target.img")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(adminCtx())
	cancel()
	if err := job(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("the cancelled restore's job error %v is not a cancel", err)
	}
	rec, err := s.Backup(adminCtx(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.LastRestore == nil || rec.LastRestore.Kind != "cancelled" {
		t.Fatalf("last restore %+v, want kind cancelled", rec.LastRestore)
	}
	if err := gateway.RestoreError(b.ID, rec.LastRestore); !errors.Is(err, context.Canceled) {
		t.Errorf("RestoreError = %v, want a cancel", err)
	}
}

// A restore that a crash interrupted does not read as running after the restart, nor as a
// success to a command that waits for it: its record says it failed, and why (found by
// review).
func TestRecoveryEndsARestoreACrashInterrupted(t *testing.T) {
	dir := t.TempDir()
	bg := context.Background()
	cfg := newRepo(t, dir)
	s, err := gateway.Open(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := backedUp(t, s, dir)
	target := filepath.Join(dir, "target.img")
	if _, _, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: target}); err != nil {
		t.Fatal(err)
	}
	s.Close() // the process dies: the job never ends
	if s, err = gateway.Open(bg, cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec, err := s.Backup(adminCtx(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != index.BackupAvailable || rec.LastRestore == nil || rec.LastRestore.Result != "failed" ||
		!strings.Contains(rec.LastRestore.Reason, "interrupted") {
		t.Fatalf("after the restart: %s, last restore %+v; want available, a failed restore that says it was interrupted", rec.Status, rec.LastRestore)
	}
	if err := gateway.RestoreError(b.ID, rec.LastRestore); err == nil {
		t.Error("RestoreError = nil: a command waiting for the interrupted restore would report success")
	}
	// The outcome is in the manifest too: an index made anew says the same.
	other := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-other"))
	got, err := other.Backup(adminCtx(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if lr := got.LastRestore; lr == nil || lr.Result != "failed" || !strings.Contains(lr.Reason, "interrupted") || lr.Target != target {
		t.Fatalf("an index made anew after the restart: last restore %+v; want the interrupted restore of %s, failed", lr, target)
	}
}

// A volume a restore was writing when the process died, and whose index was then lost (a
// crash can leave it damaged, and it is moved aside), is error like one recovery ends: its
// record in the repository said available all through the restore, so the new index showed
// half-written contents as an intact volume.
func TestLostIndexKeepsAVolumeARestoreWasWritingError(t *testing.T) {
	dir := t.TempDir()
	bg := context.Background()
	cfg := newRepo(t, dir)
	s, err := gateway.Open(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := backedUp(t, s, dir)
	if _, _, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	s.Close() // the process dies: the job never ends
	if err := os.RemoveAll(cfg.IndexDir()); err != nil {
		t.Fatal(err)
	}
	if s, err = gateway.Open(bg, cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	v, err := s.Volume(adminCtx(), "vm")
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != index.VolumeError || !strings.Contains(v.FailReason, "restore") {
		t.Fatalf("volume after the crash and a lost index: %s (%q); want error, saying a restore did not finish", v.Status, v.FailReason)
	}
}

// A restore onto a file checks that nothing uses it when its job runs, not only when it was
// accepted: a queued restore whose target was attached to a loop device meanwhile (and so may
// be mounted) refuses, and the file keeps its contents. Before (found by review), the job
// wrote the backup under the loop device's users.
func TestRestoreRefusesATargetAttachedAfterItWasAccepted(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	target := filepath.Join(dir, "target.img")
	precious := bytes.Repeat([]byte("precious"), 1<<16) // larger than the backup
	if err := os.WriteFile(target, precious, 0o600); err != nil {
		t.Fatal(err)
	}
	_, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: target})
	if err != nil {
		t.Fatal(err)
	}
	testutil.LoopDevice(t, target, false) // attached after the restore was accepted
	err = job(adminCtx())
	if !errors.Is(err, gateway.ErrInUse) {
		t.Errorf("restore onto a file attached to a loop device after it was accepted: %v, want in use", err)
	}
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, precious) {
		t.Fatalf("the file in use was changed: %d bytes (sha256 %x), %v", len(got), sha256.Sum256(got), err)
	}
}

// A restore onto an image volume larger than the backup that cannot run (cancelled while
// queued, its backup deleted elsewhere meanwhile, the repository's lock refused) leaves the
// file as it was, its size and every byte, and the volume's record its size; one that runs
// leaves the backup's bytes at the backup's size, which the record then says. Before (found by
// review), the file was cut to the backup's size when the job opened it, before the restore
// knew it could run: its tail was gone though nothing was written.
func TestRestoreThatCannotRunLeavesALargerFileWhole(t *testing.T) {
	// onLarger backs up the 256 KiB volume vm, manages a 1 MiB image as volume "big" and
	// accepts a restore of the backup onto it.
	onLarger := func(t *testing.T) (s *gateway.Service, dir string, b *index.Backup, big string, job gateway.Job) {
		s, dir = newService(t)
		b = backedUp(t, s, dir)
		big = image(t, dir, "big.img", 1<<20)
		if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: big, Name: "big"}); err != nil {
			t.Fatal(err)
		}
		_, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, Volume: "big"})
		if err != nil {
			t.Fatal(err)
		}
		return s, dir, b, big, job
	}
	for _, tc := range []struct {
		name string
		is   error // what the restore's error says
		// stop makes the accepted restore unable to run; it returns the job's context.
		stop func(t *testing.T, s *gateway.Service, dir string, b *index.Backup) context.Context
	}{
		{"cancelled while queued", context.Canceled, func(t *testing.T, _ *gateway.Service, _ string, _ *index.Backup) context.Context {
			ctx, cancel := context.WithCancel(adminCtx())
			cancel()
			return ctx
		}},
		{"backup deleted elsewhere", repo.ErrManifestDeleted, func(t *testing.T, _ *gateway.Service, dir string, b *index.Backup) context.Context {
			if err := os.Remove(filepath.Join(dir, "repo", "manifests", b.ID)); err != nil {
				t.Fatal(err)
			}
			return adminCtx()
		}},
		{"lock refused", os.ErrPermission, func(t *testing.T, s *gateway.Service, _ string, _ *index.Backup) context.Context {
			faultyRepository(t, s).Add(faulty.Rule{Methods: faulty.Put, Prefix: "locks/", Err: os.ErrPermission})
			return adminCtx()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, dir, b, big, job := onLarger(t)
			want := sha256File(t, big)
			if err := job(tc.stop(t, s, dir, b)); !errors.Is(err, tc.is) {
				t.Fatalf("restore: %v; want it to fail of %v", err, tc.is)
			}
			if size, sum := fileSizeSHA(t, big); size != 1<<20 || sum != want {
				t.Fatalf("the larger file after a restore that could not run: %d bytes, sha256 %s; want its 1 MiB unchanged, %s", size, sum, want)
			}
			if v, err := s.Volume(adminCtx(), "big"); err != nil || v.Size != 1<<20 {
				t.Fatalf("volume big after a restore that could not run: %+v, %v; want its size 1 MiB", v, err)
			}
		})
	}
	t.Run("runs", func(t *testing.T) {
		s, dir, _, big, job := onLarger(t)
		if err := job(adminCtx()); err != nil {
			t.Fatal(err)
		}
		want := sha256File(t, filepath.Join(dir, "vm.img"))
		if size, sum := fileSizeSHA(t, big); size != 256<<10 || sum != want {
			t.Fatalf("the larger file after the restore: %d bytes, sha256 %s; want the backup's 256 KiB, %s", size, sum, want)
		}
		if v, err := s.Volume(adminCtx(), "big"); err != nil || v.Size != 256<<10 || v.Status != index.VolumeAvailable {
			t.Fatalf("volume big after the restore: %+v, %v; want available, of the backup's size", v, err)
		}
	})
}

// fileSizeSHA returns the size of the file at path and its sha256.
func fileSizeSHA(t *testing.T, path string) (int64, string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size(), sha256File(t, path)
}

// A restore --to another name of a registered volume (a symbolic link, as /dev/disk/by-id/
// links are, or a hard link) is a restore onto that volume: it claims the volume, so no backup
// of it runs while the restore writes, and the volume's record says how it ended. Before
// (found by review), only the registered path was recognised: through another name the
// volume stayed available, a backup of it could read it half restored, and a failed restore
// left it looking intact.
func TestRestoreToAnotherNameOfAVolumeClaimsIt(t *testing.T) {
	for _, kind := range []string{"symlink", "hardlink"} {
		t.Run(kind, func(t *testing.T) {
			s, dir := newService(t)
			b := backedUp(t, s, dir)
			want := sha256.Sum256(imageBytes(256<<10, "vm.img"))
			if err := os.WriteFile(filepath.Join(dir, "vm.img"), bytes.Repeat([]byte("changed!"), 32<<10), 0o600); err != nil {
				t.Fatal(err)
			}
			alias := filepath.Join(dir, "alias.img")
			link := os.Symlink
			if kind == "hardlink" {
				link = os.Link
			}
			if err := link(filepath.Join(dir, "vm.img"), alias); err != nil {
				t.Fatal(err)
			}
			res, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: alias})
			if err != nil {
				t.Fatal(err)
			}
			if res.VolumeName != "vm" {
				t.Errorf("restore to %s, another name of volume vm: result names volume %q", alias, res.VolumeName)
			}
			v, err := s.Volume(adminCtx(), "vm")
			if err != nil {
				t.Fatal(err)
			}
			if v.Status != index.VolumeRestoringBackup {
				t.Errorf("volume vm is %s while a restore onto it (as %s) is under way", v.Status, alias)
			}
			if _, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: v.ID}); !errors.Is(err, gateway.ErrConflict) {
				t.Errorf("backup of volume vm while a restore onto it (as %s) is under way: %v, want a conflict", alias, err)
			}
			if err := job(adminCtx()); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(alias); err != nil || sha256.Sum256(got) != want {
				t.Fatalf("restored volume: sha256 %x, want %x (%v)", sha256.Sum256(got), want, err)
			}
		})
	}
}

// imageBytes is what image writes into a file of that name and size.
func imageBytes(size int, name string) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + len(name))
	}
	return b
}

// A pack cut short after the repository opened it is damage, as one found short when opened
// is: a restore fails as corrupt, and a salvage writes what survives and lists the rest as
// lost. Before (found by review), the local backend's short read was a plain EOF: the
// restore failed as "failed" and the salvage gave up.
func TestRestoreOfAPackCutShortAfterItWasOpened(t *testing.T) {
	s, dir := newService(t)
	const size = onePackSize
	src, b := onePackBackup(t, s, dir, 2)
	first := filepath.Join(dir, "first.img")
	if _, err := s.Restore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: first}); err != nil {
		t.Fatal(err) // the pack is open now
	}
	if got, _ := os.ReadFile(first); sha256.Sum256(got) != sha256.Sum256(src) {
		t.Fatal("the first restore differs from the volume")
	}
	packs, err := filepath.Glob(filepath.Join(dir, "repo", "packs", "*", "*"))
	if err != nil || len(packs) != 1 {
		t.Fatalf("packs %q, %v: want one", packs, err)
	}
	if err := os.Truncate(packs[0], size/2); err != nil { // damage: the tail's blocks are gone
		t.Fatal(err)
	}
	_, err = s.Restore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "second.img")})
	if !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("restore from a pack cut short: %v, want corrupt", err)
	}
	salvaged := filepath.Join(dir, "salvaged.img")
	res, err := s.Restore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: salvaged, Salvage: true})
	if err != nil {
		t.Fatalf("salvage of a backup whose pack was cut short: %v", err)
	}
	got, err := os.ReadFile(salvaged)
	if err != nil || len(got) != size || res.LostBytes == 0 || res.LostBytes == size {
		t.Fatalf("salvage: %d bytes, %v, lost %d of %d", len(got), err, res.LostBytes, size)
	}
	want := bytes.Clone(src)
	for _, r := range res.Lost {
		clear(want[r[0]:r[1]])
	}
	if sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("salvage differs from the volume outside the lost ranges %v", res.Lost)
	}
}

// A restore that cannot claim its backup (another restore took it since it was looked up)
// leaves the target volume as it found it: one marked error by an earlier restore that did
// not finish stays error, with its reason, and does not read as available with half a
// backup in it. Before (found by review), the volume was set available.
func TestRestoreThatLosesItsBackupLeavesTheVolumeAsItWas(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	tgt, before := leftErrorByARestore(t, s, dir, b)
	// The question is asked after the backup was found available; meanwhile another restore
	// of the same backup is accepted.
	ctx := gateway.WithConfirm(adminCtx(), func(string) error {
		_, _, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "other.img")})
		return err
	})
	if _, _, err := s.StartRestore(ctx, gateway.RestoreRequest{Backup: b.ID, Volume: "tgt"}); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("restore of a backup another restore claimed meanwhile: %v, want a conflict", err)
	}
	after, err := s.Volume(adminCtx(), tgt.ID)
	if err != nil || after.Status != index.VolumeError || after.FailReason != before.FailReason {
		t.Errorf("volume after a restore that could not start: %s (%q), want %s (%q)", after.Status, after.FailReason, before.Status, before.FailReason)
	}
}

// Restores of one backup to new volumes at the same time: one claims the backup, and the
// others leave no volume behind. Before (found by review), each that lost the claim left its
// new volume available, all zeros, named like a restored copy of the backup.
func TestRestoresToNewVolumesThatLoseTheBackupLeaveNoVolume(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	const n = 8
	var wg sync.WaitGroup
	started := make(chan string, n)
	for range n {
		wg.Go(func() {
			res, _, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID})
			if err == nil {
				started <- res.VolumeID
			} else if !errors.Is(err, gateway.ErrConflict) && !errors.Is(err, gateway.ErrExists) { // ErrExists: two took the same free name
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(started)
	var winners []string
	for id := range started {
		winners = append(winners, id)
	}
	if len(winners) != 1 {
		t.Fatalf("%d restores of one backup started, want 1", len(winners))
	}
	vols, err := s.ListVolumes(adminCtx(), true)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vols {
		if v.Name != "vm" && v.ID != winners[0] {
			t.Errorf("volume %s (%s) is left by a restore that did not start", v.Name, v.Status)
		}
	}
	if imgs, err := filepath.Glob(filepath.Join(dir, "repo", "volumes", "*.img")); err != nil || len(imgs) != 1 {
		t.Errorf("volume images %q, %v: want only the restore's that started", imgs, err)
	}
}

// A volume made for a restore that did not start, whose record the backend does not let go,
// stays, marked error, with its image. Before (found by review), the failure was only logged:
// the volume was dropped here and its image removed, and rebuild-index or another gateway
// brought it back from its record, an error volume without an image.
func TestVolumeOfARestoreThatDidNotStartStaysWhenItsRecordCannotBeDeleted(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	var job gateway.Job
	gateway.WrapBackendForTest(t, s, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Delete, Prefix: "meta/volumes/", Times: 1})
		// Another restore claims the backup while this one reads its manifest.
		return &beforeGet{Backend: f, key: "manifests/" + b.ID, before: func() {
			var err error
			if _, job, err = s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "first.img")}); err != nil {
				t.Error(err)
			}
		}}
	})
	if _, _, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, Name: "copy"}); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("restore of a backup another restore claimed meanwhile: %v, want a conflict", err)
	}
	if err := job(adminCtx()); err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"after the restore did not start", "after rebuild-index"} {
		v, err := s.Volume(adminCtx(), "copy")
		if err != nil || v.Status != index.VolumeError {
			t.Fatalf("%s: volume copy %+v, %v; want it kept, error", step, v, err)
		}
		if _, err := os.Stat(v.Path); err != nil {
			t.Fatalf("%s: the kept volume's image: %v", step, err)
		}
		if _, err := s.RebuildIndex(adminCtx(), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DeleteVolume(adminCtx(), "copy", false); err != nil {
		t.Fatalf("delete of the kept volume once the backend allows it: %v", err)
	}
}

// beforeGet calls before ahead of the first Get of key; a Get of key that before makes is
// passed through.
type beforeGet struct {
	backend.Backend
	key    string
	done   atomic.Bool
	before func()
}

func (b *beforeGet) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if key == b.key && !b.done.Swap(true) {
		b.before()
	}
	return b.Backend.Get(ctx, key)
}

// A restore cancelled by reset-state that ends after a second restore of the same backup was
// accepted does not end the second one's record: the backup stays restoring, and its last
// restore is the second's, still running, so a command waiting for the second does not take
// the first's end for its own. Before (found by review), the first set the backup available
// and its outcome over the second's: 'restore --wait' of the second returned at once with
// success, before anything was written.
func TestRestoreEndedByResetStateLeavesTheNextRestoreRecord(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	first, second := filepath.Join(dir, "first.img"), filepath.Join(dir, "second.img")
	_, job1, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: first})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResetBackupState(adminCtx(), b.ID, "available"); err != nil {
		t.Fatal(err)
	}
	_, job2, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: second})
	if err != nil {
		t.Fatal(err)
	}
	if err := job1(adminCtx()); !errors.Is(err, context.Canceled) { // queued until now
		t.Fatalf("restore cancelled by reset-state: %v, want cancelled", err)
	}
	rec, err := s.Backup(adminCtx(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != index.BackupRestoring || rec.LastRestore == nil || rec.LastRestore.Target != second || rec.LastRestore.Result != "running" {
		t.Errorf("while the second restore is pending: backup %s, last restore %+v; want restoring, the second's, running", rec.Status, rec.LastRestore)
	}
	if err := job2(adminCtx()); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(imageBytes(256<<10, "vm.img"))
	if got, err := os.ReadFile(second); err != nil || sha256.Sum256(got) != want {
		t.Fatalf("second restore: sha256 %x, want %x (%v)", sha256.Sum256(got), want, err)
	}
	if rec, err = s.Backup(adminCtx(), b.ID); err != nil || rec.Status != index.BackupAvailable || rec.LastRestore.Result != "succeeded" {
		t.Errorf("after the second restore: %+v, %v", rec, err)
	}
}

// A command that waits for a restore does not take it for a success when the wait ends with
// the restore still running: reset-state set the backup available while the job was queued
// or running. Before (found by review), RestoreError said nothing for a "running" outcome,
// and 'restore --wait' printed "restored" before anything was written.
func TestWaitForARestoreResetWhileItRanIsNoSuccess(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	_, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "out.img")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResetBackupState(adminCtx(), b.ID, "available"); err != nil {
		t.Fatal(err)
	}
	rec, err := s.WaitBackup(adminCtx(), b.ID) // as 'backup restore --wait' does
	if err != nil {
		t.Fatal(err)
	}
	if err := gateway.RestoreError(rec.ID, rec.LastRestore); err == nil {
		t.Errorf("a restore that has not ended (last restore %+v) reads as a success", rec.LastRestore)
	}
	if err := job(adminCtx()); !errors.Is(err, context.Canceled) {
		t.Errorf("the reset restore's job: %v, want cancelled", err)
	}
}

// A restore cancelled by reset-state that ends after a second restore of the same backup was
// accepted leaves the second one cancellable: reset-state of the backup then stops it.
// Before (found by review), the first's end unregistered the second's cancel (both under
// "restore/<backup id>"), and the second ran on, writing, with its backup reset.
func TestRestoreEndedByResetStateLeavesTheNextRestoreCancellable(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	_, job1, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: filepath.Join(dir, "first.img")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResetBackupState(adminCtx(), b.ID, "available"); err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(dir, "second.img")
	_, job2, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: second})
	if err != nil {
		t.Fatal(err)
	}
	if err := job1(adminCtx()); !errors.Is(err, context.Canceled) {
		t.Fatalf("first restore: %v, want cancelled", err)
	}
	if !s.Running(b.ID) {
		t.Error("the second restore, queued, is not known as running")
	}
	if _, err := s.ResetBackupState(adminCtx(), b.ID, "available"); err != nil {
		t.Fatal(err)
	}
	if err := job2(adminCtx()); !errors.Is(err, context.Canceled) {
		t.Errorf("second restore after reset-state: %v, want cancelled", err)
	}
	if _, err := os.Stat(second); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cancelled second restore left its target: %v", err)
	}
}

// Two restores onto one file are not both accepted while the first has not ended: run at the
// same time (two job workers) they interleave their writes, and the file holds one backup or
// a mix of both while both report success. (Found by review.)
func TestSecondRestoreOntoTheSameFileWaitsForTheFirst(t *testing.T) {
	s, dir := newService(t)
	b1 := backedUp(t, s, dir)
	v2, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: image(t, dir, "database.img", 256<<10), Name: "db"})
	if err != nil {
		t.Fatal(err)
	}
	b2, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: v2.ID})
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target.img")
	if err := os.WriteFile(target, bytes.Repeat([]byte("old data"), 32<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	_, job1, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b1.ID, To: target})
	if err != nil {
		t.Fatal(err)
	}
	_, job2, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b2.ID, To: target})
	if err == nil {
		var wg sync.WaitGroup
		var e1, e2 error
		wg.Go(func() { e1 = job1(adminCtx()) })
		wg.Go(func() { e2 = job2(adminCtx()) })
		wg.Wait()
		got, _ := os.ReadFile(target)
		t.Fatalf("a second restore onto %s was accepted while the first had not ended (jobs: %v, %v; the file is backup 1: %v, backup 2: %v)",
			target, e1, e2, bytes.Equal(got, imageBytes(256<<10, "vm.img")), bytes.Equal(got, imageBytes(256<<10, "database.img")))
	}
	if !errors.Is(err, gateway.ErrInUse) && !errors.Is(err, gateway.ErrConflict) {
		t.Errorf("second restore onto the same file: %v, want in use or a conflict", err)
	}
	if err := job1(adminCtx()); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(target); err != nil || sha256.Sum256(got) != sha256.Sum256(imageBytes(256<<10, "vm.img")) {
		t.Fatalf("first restore: %v", err)
	}
}

// A backup of a file that a restore is writing (named by its path, which registers it) waits
// for the restore: read half written, it would be neither the old contents nor the backup's.
// Before (found by review), a restore onto a path that was no volume claimed nothing a backup
// looked at.
func TestBackupOfAFileBeingRestoredIsRefused(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	target := filepath.Join(dir, "target.img")
	if err := os.WriteFile(target, bytes.Repeat([]byte("old data"), 32<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	_, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: target})
	if err != nil {
		t.Fatal(err)
	}
	if nb, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: target}); err == nil {
		t.Errorf("backup %s of %s while a restore onto it is accepted", nb.ID, target)
	} else if !errors.Is(err, gateway.ErrInUse) && !errors.Is(err, gateway.ErrConflict) {
		t.Errorf("backup of a file being restored: %v, want in use or a conflict", err)
	}
	if err := job(adminCtx()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: target}); err != nil {
		t.Errorf("backup of the file once the restore ended: %v", err)
	}
}

// onePackSize is the size of onePackBackup's volume.
const onePackSize = 256 << 10

// onePackBackup backs up a volume "vm" of onePackSize distinct, incompressible bytes (seed) in
// dir: one pack holds all of its blocks.
func onePackBackup(t *testing.T, s *gateway.Service, dir string, seed byte) ([]byte, *index.Backup) {
	t.Helper()
	src := make([]byte, onePackSize)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(src)
	vol := filepath.Join(dir, "vm.img")
	if err := os.WriteFile(vol, src, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: vol, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	return src, b
}

// A restore by a device volume's name writes only to the device it was registered as. Its
// path may name another disk by now (/dev/sdb after a disk swap or a renumbering, a by-id
// link moved): the restore is refused and that disk is left as it was. Before (found by
// review), it was overwritten: backups bring the record up to date, restores did not look.
func TestRestoreByVolumeRefusesAnotherDeviceAtItsPath(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	v, b, link, devA, devB := backedUpBehindALink(t, s, dir)
	want := sha256File(t, devA)
	pointLink(t, link, devB) // the name now leads to another device
	before := sha256File(t, devB)
	_, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, Volume: v.ID})
	if !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "another device") {
		t.Fatalf("restore onto a volume whose path names another device: %v, want a conflict that says so", err)
	}
	if got := sha256File(t, devB); got != before {
		t.Fatal("the other device was written")
	}
	if got, _ := s.Volume(ctx, v.ID); got.Status != index.VolumeAvailable {
		t.Errorf("the volume is %s after the refused restore, want available", got.Status)
	}
	// Named as a path, the other device is written, as asked, and the volume not claimed.
	wantB := sha256File(t, devA)
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, To: link}); err != nil {
		t.Fatalf("restore --to the path: %v", err)
	}
	if got := sha256File(t, devB); got != wantB {
		t.Fatalf("restore --to the path: the device holds sha256 %s, want the backup's %s", got, wantB)
	}
	pointLink(t, link, devA)                                                          // back at its device, the volume is restored, byte for byte
	if err := os.WriteFile(devA, bytes.Repeat([]byte{0xff}, 64<<10), 0); err != nil { // written since
		t.Fatal(err)
	}
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	if got := sha256File(t, devA); got != want {
		t.Fatalf("restore onto its own device: sha256 %s, want %s", got, want)
	}
}

// A backup of a volume whose path now leads to another device (a disk swapped, a link that
// leads elsewhere) is refused, and the volume keeps its identity: backed up, the other disk
// went into the volume's history as the volume, and the record took its identity, so that a
// restore of an earlier backup by the volume's name then wrote over that other disk.
func TestBackupRefusesAnotherDeviceAtTheVolumesPath(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	v, b, link, _, devB := backedUpBehindALink(t, s, dir)
	pointLink(t, link, devB)
	_, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "another device") {
		t.Fatalf("backup of a volume whose path names another device: %v, want a conflict that says so", err)
	}
	if bs, _ := s.ListBackups(ctx, gateway.ListFilter{Volume: v.ID}); len(bs) != 1 {
		t.Fatalf("%d backups of the volume, want the first alone", len(bs))
	}
	if got, _ := s.Volume(ctx, v.ID); got.Identity != v.Identity || got.Status != index.VolumeAvailable {
		t.Fatalf("the volume is %s with identity %s after the refused backup, want available with %s", got.Status, got.Identity, v.Identity)
	}
	before := sha256File(t, devB)
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, Volume: v.ID}); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("restore by the volume's name onto the other device: %v, want a conflict", err)
	}
	if got := sha256File(t, devB); got != before {
		t.Fatal("the other device was written")
	}
}

// A restore --to a symbolic link that leads to nothing is refused at once with what to do.
// Before (found by review), it was accepted, and its job then failed saying a file had
// appeared at the path after it was accepted, which the admin had not done.
func TestRestoreToADanglingLinkSaysSo(t *testing.T) {
	s, dir := newService(t)
	b := backedUp(t, s, dir)
	link := filepath.Join(dir, "restored.img")
	if err := os.Symlink(filepath.Join(dir, "nowhere", "vm.img"), link); err != nil {
		t.Fatal(err)
	}
	_, err := s.Restore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, To: link})
	if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "symbolic link") || strings.Contains(err.Error(), "appeared") {
		t.Fatalf("restore to a dangling link: %v, want an invalid target that names the link", err)
	}
	if got, err := os.Readlink(link); err != nil || got != filepath.Join(dir, "nowhere", "vm.img") {
		t.Fatalf("the link is %q, %v after the refused restore", got, err)
	}
}

// A volume an unfinished restore left error, whose backup a crash interrupted, is error again
// after the restart, with its reason. Before, recovery set every volume it found backing-up
// available: a half-restored volume read as intact.
func TestRecoveryKeepsAnErrorVolumeWhoseBackupACrashInterrupted(t *testing.T) {
	dir := t.TempDir()
	bg := context.Background()
	cfg := newRepo(t, dir)
	s, err := gateway.Open(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := backedUp(t, s, dir)
	tgt, before := leftErrorByARestore(t, s, dir, b)
	if _, _, err := s.StartBackup(adminCtx(), gateway.BackupRequest{Volume: "tgt"}); err != nil {
		t.Fatal(err)
	}
	s.Close() // the process dies: the backup's job never ends
	if s, err = gateway.Open(bg, cfg); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	after, err := s.Volume(adminCtx(), tgt.ID)
	if err != nil || after.Status != index.VolumeError || after.FailReason != before.FailReason {
		t.Errorf("volume after the restart: %s (%q), want %s (%q)", after.Status, after.FailReason, before.Status, before.FailReason)
	}
}

// leftErrorByARestore manages a volume "tgt" under dir and leaves it error, as a restore of b
// onto it that was cancelled leaves it; it returns the volume as registered and as left.
func leftErrorByARestore(t *testing.T, s *gateway.Service, dir string, b *index.Backup) (tgt, left *index.Volume) {
	t.Helper()
	tgt, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: image(t, dir, "tgt.img", 256<<10), Name: "tgt"})
	if err != nil {
		t.Fatal(err)
	}
	_, job, err := s.StartRestore(adminCtx(), gateway.RestoreRequest{Backup: b.ID, Volume: "tgt"})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(adminCtx())
	cancel()
	if err := job(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled restore: %v", err)
	}
	left, err = s.Volume(adminCtx(), tgt.ID)
	if err != nil || left.Status != index.VolumeError {
		t.Fatalf("volume after a cancelled restore onto it: %+v, %v; want error", left, err)
	}
	return tgt, left
}

// backedUpBehindALink manages, as volume "disk", a link under dir to a loop device over a
// 1 MiB image (as a /dev/disk/by-* name is), and backs it up; devB is a second loop device
// over other bytes, for the link to lead to instead.
func backedUpBehindALink(t *testing.T, s *gateway.Service, dir string) (v *index.Volume, b *index.Backup, link, devA, devB string) {
	t.Helper()
	const size = 1 << 20
	devA = testutil.LoopDevice(t, image(t, dir, "a.img", size), false)
	devB = testutil.LoopDevice(t, image(t, dir, "other.img", size), false)
	link = filepath.Join(dir, "disk")
	if err := os.Symlink(devA, link); err != nil {
		t.Fatal(err)
	}
	v, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: link, Name: "disk"})
	if err != nil {
		t.Fatal(err)
	}
	if b, err = s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	return v, b, link, devA, devB
}

// pointLink makes link lead to dev.
func pointLink(t *testing.T, link, dev string) {
	t.Helper()
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, link); err != nil {
		t.Fatal(err)
	}
}

// A restore --to a file in the repository's directory (a pack, the index's files, a new
// file among them) is refused, as is registering such a file as a volume, and the backups
// stored there still restore; a volume whose image lives in the volume directory is still a
// target. Before, a restore with --yes onto a pack (or onto a pack registered with 'volume
// manage') overwrote it, and every backup with blocks in it failed from then on.
func TestRestoreIntoTheRepositoryIsRefused(t *testing.T) {
	s, dir := newService(t)
	_, b := onePackBackup(t, s, dir, 3)
	small := image(t, dir, "small.img", 64<<10)
	if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: small, Name: "small"}); err != nil {
		t.Fatal(err)
	}
	b2, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: "small"})
	if err != nil {
		t.Fatal(err)
	}
	packs, err := filepath.Glob(filepath.Join(dir, "repo", "packs", "*", "*"))
	if err != nil || len(packs) == 0 {
		t.Fatalf("packs %q, %v", packs, err)
	}
	// The first backup's pack, the largest: large enough to take the second backup.
	slices.SortFunc(packs, func(a, b string) int {
		fa, _ := os.Stat(a)
		fb, _ := os.Stat(b)
		return cmp.Compare(fb.Size(), fa.Size())
	})
	link := filepath.Join(dir, "link.img")
	if err := os.Symlink(packs[0], link); err != nil {
		t.Fatal(err)
	}
	yes := gateway.WithConfirm(adminCtx(), func(string) error { return nil })
	for _, to := range []string{packs[0], link, filepath.Join(dir, "repo", "new.img"), filepath.Join(dir, "repo", "index", "new.img")} {
		if _, err := s.Restore(yes, gateway.RestoreRequest{Backup: b2.ID, To: to}); !errors.Is(err, gateway.ErrInvalid) {
			t.Errorf("restore --to %s: %v, want invalid", to, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "repo", "new.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused restore made a file in the repository: %v", err)
	}
	// Nor can a file there become a volume to restore onto.
	if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: packs[0], Name: "pack"}); !errors.Is(err, gateway.ErrInvalid) {
		t.Errorf("volume manage of a pack: %v, want invalid", err)
	}
	if got, want := restoreSHA(t, s, adminCtx(), b.ID), sha256File(t, filepath.Join(dir, "vm.img")); got != want {
		t.Errorf("the first backup after the refused restores: sha256 %s, want %s", got, want)
	}
	v, err := s.CreateVolume(adminCtx(), gateway.CreateVolumeRequest{Name: "scratch", Size: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(yes, gateway.RestoreRequest{Backup: b2.ID, To: v.Path}); err != nil {
		t.Errorf("restore --to a volume in the volume directory: %v", err)
	} else if got, want := sha256File(t, v.Path), sha256File(t, small); got != want {
		t.Errorf("restore onto the volume: sha256 %s, want %s", got, want)
	}
}

// A restore onto a registered volume too small for the backup names the volume as its owner
// knows it (a Cinder user never sees its path) and both sizes readably.
func TestRestoreOntoASmallVolumeNamesIt(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: image(t, dir, "big.img", 256<<10)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "small.img", 64<<10), Name: "small"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, Volume: "small"})
	if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "volume small is 64.0 KiB (65536 bytes), smaller than the backup (256.0 KiB, 262144 bytes)") {
		t.Fatalf("restore onto a too small volume: %v", err)
	}
}

// An admin's restore of one project's backup onto another project's volume is refused: its
// job and the backup's last restore would show the backup's project the other's volume (its
// name and path), and the volume's project a restore of its volume it cannot see (found by
// review). A new volume, or a path, is the way.
func TestRestoreOntoAnotherProjectsVolumeIsRefused(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "a.img", 256<<10), Name: "a", Project: "p1"}); err != nil {
		t.Fatal(err)
	}
	other, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "b.img", 256<<10), Name: "b", Project: "p2"})
	if err != nil {
		t.Fatal(err)
	}
	bk, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "a"})
	if err != nil {
		t.Fatal(err)
	}
	before := sha256File(t, other.Path)
	for _, req := range []gateway.RestoreRequest{{Backup: bk.ID, Volume: "b"}, {Backup: bk.ID, To: other.Path}} {
		if _, err := s.Restore(ctx, req); !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "project p2's") {
			t.Errorf("restore %+v of a p1 backup onto p2's volume: %v, want it refused", req, err)
		}
	}
	if sha256File(t, other.Path) != before {
		t.Fatal("p2's volume changed")
	}
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: bk.ID, To: filepath.Join(dir, "elsewhere.img")}); err != nil {
		t.Fatalf("restore to a path that is no volume: %v", err)
	}
}
