package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// An index that cannot be opened because its file system is full is not damaged: the open
// fails in one line that says to free space, the index stays where it is, and once there is
// space it opens with everything in it. Before, the full disk was taken for damage: the index
// was moved aside to be built again on the same full disk, and each attempt moved another
// copy aside (two in one run, the second failing on its name).
func TestFullDiskLeavesTheIndex(t *testing.T) {
	dir := t.TempDir()
	fs := testutil.MountTmpfs(t, 128<<20)
	cfg, s := openedRepo(t, fs)
	admin := adminCtx()
	img := image(t, dir, "vm.img", 512<<10)
	b := backedUpImage(t, s, img)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	free := testutil.FillFS(t, fs, 0)
	_, err := gateway.Open(context.Background(), cfg)
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "free space on the file system that holds "+cfg.IndexDir()) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("open on a full file system: %v; want one line that says to free space where the index is", err)
	}
	if aside, _ := filepath.Glob(cfg.IndexDir() + ".damaged-*"); len(aside) != 0 {
		t.Fatalf("a full file system moved the index aside: %v", aside)
	}
	free()
	s, err = gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open once there is space again: %v", err)
	}
	defer s.Close()
	if aside, _ := filepath.Glob(cfg.IndexDir() + ".damaged-*"); len(aside) != 0 {
		t.Fatalf("the index was moved aside: %v", aside)
	}
	if got := restoreSHA(t, s, admin, b.ID); got != sha256File(t, img) {
		t.Fatalf("backup %s restores to sha256 %s, want the volume's", b.ID, got)
	}
}

// gatewayOnTmpfs opens a gateway (closed when the test ends) on a new repository on a tmpfs of
// size bytes, and returns a directory on another file system for the test's volumes, the
// tmpfs's mount point and the gateway.
func gatewayOnTmpfs(t *testing.T, size int64) (dir, fs string, s *gateway.Service) {
	t.Helper()
	dir, fs = t.TempDir(), testutil.MountTmpfs(t, size)
	_, s = openedRepo(t, fs)
	t.Cleanup(func() { s.Close() })
	return dir, fs, s
}

// randomImage writes size random (incompressible) bytes to dir/name.
func randomImage(t *testing.T, dir, name string, size int) string {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A backup that would fill the file system of a local repository fails with what to do, and
// the gateway goes on: its index lives there too, and Badger writes through memory maps of
// sparse files, where a full disk is a SIGBUS. Before, the backup wrote packs until the disk
// was full and failed on the bare ENOSPC, and a gateway's next index write could die in Badger
// (found by hand: 'cairn serve' on a filled tmpfs died; in this test it happens not to).
// Now a pack must leave local.Reserve free; the earlier backup restores byte-exact, and the
// gateway still takes backups that fit.
func TestFullRepositoryFailsTheBackupNotTheGateway(t *testing.T) {
	dir, fs, s := gatewayOnTmpfs(t, 320<<20)
	admin := adminCtx()
	small := randomImage(t, dir, "small.img", 24<<20)
	big := randomImage(t, dir, "big.img", 160<<20)
	for name, p := range map[string]string{"small": small, "big": big} {
		if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: p, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.FillFS(t, fs, 140<<20)
	b1, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "small"})
	if err != nil {
		t.Fatalf("a backup that fits: %v", err)
	}
	_, err = s.CreateBackup(admin, gateway.BackupRequest{Volume: "big"})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "free space there") {
		t.Fatalf("a backup larger than the room left: %v; want refused, saying to free space", err)
	}
	if got := restoreSHA(t, s, admin, b1.ID); got != sha256File(t, small) {
		t.Fatalf("the earlier backup restores to sha256 %s, want the volume's", got)
	}
	b3, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "small", Incremental: true})
	if err != nil {
		t.Fatalf("an incremental that fits, after the refused backup: %v", err)
	}
	if got := restoreSHA(t, s, admin, b3.ID); got != sha256File(t, small) {
		t.Fatalf("the incremental restores to sha256 %s, want the volume's", got)
	}
}

// A restore to a new volume whose data would not fit beside the index's reserve is refused
// before anything is made: no volume, no image, and a message that says what to do. Once
// there is room it restores byte-exact. Before, it filled the disk and left a half-written
// volume in error (and the gateway open to Badger's SIGBUS).
func TestRestoreToANewVolumeThatCannotFitIsRefused(t *testing.T) {
	dir, fs, s := gatewayOnTmpfs(t, 320<<20)
	admin := adminCtx()
	img := randomImage(t, dir, "vm.img", 24<<20)
	b := backedUpImage(t, s, img)
	free := testutil.FillFS(t, fs, 80<<20) // 24 MiB of data and the 64 MiB reserve do not fit
	_, err := s.Restore(admin, gateway.RestoreRequest{Backup: b.ID})
	if !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "does not fit") || !strings.Contains(err.Error(), "--volume") {
		t.Fatalf("restore to a new volume that cannot fit: %v; want refused, saying what to do", err)
	}
	vols, err := s.ListVolumes(admin, true)
	if err != nil || len(vols) != 1 {
		t.Fatalf("volumes after the refused restore: %d, %v; want only the managed one", len(vols), err)
	}
	if imgs, _ := filepath.Glob(filepath.Join(fs, "repo", "volumes", "*")); len(imgs) != 0 {
		t.Fatalf("the refused restore left images: %v", imgs)
	}
	free()
	res, err := s.Restore(admin, gateway.RestoreRequest{Backup: b.ID})
	if err != nil {
		t.Fatalf("restore to a new volume once there is room: %v", err)
	}
	if got := sha256File(t, res.Path); got != sha256File(t, img) {
		t.Fatalf("the new volume has sha256 %s, want the backup's volume's", got)
	}
}

// A restore onto a volume cairn made, a sparse image beside the index of any size its creator
// asked, takes its room as a restore to a new volume does: a member's 1 PiB volume whose
// restore would not fit beside the index's reserve is refused in one line that says what to
// do, and the image is left as it was; once there is room it restores byte-exact. Before
// (found by review), such a restore was never looked at, and a member could fill the disk
// that holds the index.
func TestRestoreOntoAVolumeThatCannotFitIsRefused(t *testing.T) {
	dir, fs, s := gatewayOnTmpfs(t, 320<<20)
	member := as("ann", gateway.DefaultProject, false)
	img := randomImage(t, dir, "vm.img", 24<<20)
	b := backedUpImage(t, s, img)
	v, err := s.CreateVolume(member, gateway.CreateVolumeRequest{Name: "huge", Size: 1 << 50})
	if err != nil {
		t.Fatal(err)
	}
	free := testutil.FillFS(t, fs, 80<<20) // 24 MiB of data and the 64 MiB reserve do not fit
	_, err = s.Restore(member, gateway.RestoreRequest{Backup: b.ID, Volume: "huge"})
	if !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "does not fit") || !strings.Contains(err.Error(), "free space") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("restore onto a volume it cannot fit in: %v; want refused in one line, saying what to do", err)
	}
	if strings.Contains(err.Error(), "--to") {
		t.Errorf("a member is told to restore --to a device, which only an admin may: %v", err)
	}
	t.Logf("the refusal: %v", err)
	if fi, err := os.Stat(v.Path); err != nil || fi.Size() != 1<<50 || fi.Sys().(*syscall.Stat_t).Blocks != 0 {
		t.Fatalf("the refused restore's volume image: %v; want it as it was, 1 PiB and nothing allocated", err)
	}
	if after, err := s.Volume(member, "huge"); err != nil || after.Status != "available" {
		t.Fatalf("volume huge after the refused restore: %+v, %v; want it available", after, err)
	}
	free()
	if _, err := s.Restore(member, gateway.RestoreRequest{Backup: b.ID, Volume: "huge"}); err != nil {
		t.Fatalf("restore onto the volume once there is room: %v", err)
	}
	if got := sha256File(t, v.Path); got != sha256File(t, img) {
		t.Fatalf("volume huge has sha256 %s, want the backup's volume's", got)
	}
	// A volume whose image is allocated whole: the restore writes over it in place and needs
	// no room, however little is free.
	full, err := s.CreateVolume(member, gateway.CreateVolumeRequest{Name: "full", Size: 24 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full.Path, bytes.Repeat([]byte{7}, 24<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.FillFS(t, fs, 80<<20)
	if _, err := s.Restore(member, gateway.RestoreRequest{Backup: b.ID, Volume: "full"}); err != nil {
		t.Fatalf("restore onto a volume allocated whole: %v", err)
	}
	if got := sha256File(t, full.Path); got != sha256File(t, img) {
		t.Fatalf("volume full has sha256 %s, want the backup's volume's", got)
	}
}

// Restores onto images cairn makes count what those accepted before and not ended are still
// to write: of two that each fit alone but not together, the second is refused while the
// first has not ended, whether onto a volume or to a new one; a first that ends, cancelled or
// restored, gives its room back. Before (found by review), each compared the same free space
// and both were accepted, together filling the disk that holds the index.
func TestRestoresThatFitOnlyOneAtATimeAreAcceptedOneAtATime(t *testing.T) {
	dir, fs, s := gatewayOnTmpfs(t, 320<<20)
	admin := adminCtx()
	img := randomImage(t, dir, "vm.img", 24<<20)
	b1 := backedUpImage(t, s, img)
	b2, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm"}) // a backup restores once at a time
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		if _, err := s.CreateVolume(admin, gateway.CreateVolumeRequest{Name: name, Size: 1 << 30}); err != nil {
			t.Fatal(err)
		}
	}
	testutil.FillFS(t, fs, 100<<20) // one restore (24 MiB and the 64 MiB reserve) fits, two do not
	start := func(b *index.Backup, volume string) (gateway.Job, error) {
		_, job, err := s.StartRestore(admin, gateway.RestoreRequest{Backup: b.ID, Volume: volume})
		return job, err
	}
	first, err := start(b1, "a")
	if err != nil {
		t.Fatalf("the first restore: %v", err)
	}
	if _, err := start(b2, "b"); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "restores under way") {
		t.Fatalf("a second restore onto a volume while the first has not ended: %v; want refused, saying the first takes the room", err)
	}
	if _, _, err := s.StartRestore(admin, gateway.RestoreRequest{Backup: b2.ID}); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "restores under way") {
		t.Fatalf("a restore to a new volume while the first has not ended: %v; want refused, saying the first takes the room", err)
	}
	cancelled, cancel := context.WithCancel(admin)
	cancel()
	if err := first(cancelled); !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled first restore: %v", err)
	}
	second, err := start(b2, "b")
	if err != nil {
		t.Fatalf("the second restore once the first was cancelled: %v", err)
	}
	if err := second(admin); err != nil {
		t.Fatal(err)
	}
	// Volume b's image holds the restored data now; without it there is room for one again.
	if _, err := s.DeleteVolume(admin, "b", false); err != nil {
		t.Fatal(err)
	}
	third, err := start(b1, "a")
	if err != nil {
		t.Fatalf("a restore once the second one ended and its volume was deleted: %v", err)
	}
	if err := third(admin); err != nil {
		t.Fatal(err)
	}
	a, err := s.Volume(admin, "a")
	if err != nil {
		t.Fatal(err)
	}
	if got := sha256File(t, a.Path); got != sha256File(t, img) {
		t.Fatalf("volume a has sha256 %s, want the backup's volume's", got)
	}
}

// A gateway does not catch up with the repository while its index's file system is under the
// reserve (each catch-up writes to the index, where Badger dies of a SIGBUS on a full disk):
// the catch-up says why, and once there is room it adopts what another gateway stored.
func TestCatchUpWaitsWhileTheIndexHasNoRoom(t *testing.T) {
	dir := t.TempDir()
	cfg := newRepo(t, dir)
	fs := testutil.MountTmpfs(t, 128<<20)
	a := gatewayOn(t, cfg.Repo, filepath.Join(fs, "state-a"))
	b := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-b"))
	bk := backedUpImage(t, b, image(t, dir, "vm.img", 256<<10))
	free := testutil.FillFS(t, fs, 40<<20)
	if err := a.CatchUp(context.Background()); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "holds the index") {
		t.Fatalf("catch-up while the index has no room: %v; want it refused, saying why", err)
	}
	if record(t, a, bk.ID) != nil {
		t.Fatal("the catch-up wrote to an index under the reserve")
	}
	free()
	catchUp(t, a)
	if rec := record(t, a, bk.ID); rec == nil || rec.Status != "available" {
		t.Fatalf("after space was freed, the catch-up left %+v; want the other gateway's backup adopted", rec)
	}
}

// A member refused a backup or a restore to a new volume for want of room reads how much
// room there is, not where: the index and the volume directory are in the state directory.
// An admin reads the directories. Before, a member read both.
func TestNoRoomNamesNoDirectoryToMembers(t *testing.T) {
	dir, fs, s := gatewayOnTmpfs(t, 160<<20)
	member, admin := as("alice", "p1", false), as("admin", "p1", true)
	v, err := s.ManageVolume(admin, gateway.ManageRequest{Path: randomImage(t, dir, "vm.img", 1<<20), Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(member, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	testutil.FillFS(t, fs, 40<<20) // under the index's reserve
	for _, op := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"backup", func(ctx context.Context) error {
			_, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
			return err
		}},
		{"restore to a new volume", func(ctx context.Context) error {
			_, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID})
			return err
		}},
	} {
		if err := op.call(member); !errors.Is(err, gateway.ErrConflict) || strings.Contains(err.Error(), fs) || !strings.Contains(err.Error(), "free") {
			t.Errorf("%s with no room, as a member: %v; want refused, saying how much is free but not where", op.name, err)
		}
		if err := op.call(admin); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), fs) {
			t.Errorf("%s with no room, as an admin: %v; want refused, naming the directory in %s", op.name, err, fs)
		}
	}
}
