package gateway_test

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// A restore onto a block device that shares blocks with a registered volume being backed up
// (the disk a partition volume is on, or a partition of a disk volume) is refused, naming the
// volume, until the backup ends; then it is accepted, a backup of the volume waits for it,
// and it restores byte for byte. Before (found by review), only the device itself was looked
// at: the backup read the partition without O_EXCL, so nothing stopped the restore, which
// overwrote the partition under the backup, and the backup was committed with a mix of old
// and restored blocks.
func TestRestoreOverlappingAVolumeBeingBackedUpIsRefused(t *testing.T) {
	for _, c := range []struct{ name, volume, target string }{
		{"onto the disk of a partition volume", "part", "disk"},
		{"onto a partition of a disk volume", "disk", "part"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, dir := newService(t)
			const size = 1 << 20 // the partition's size: the backup fits either target
			src, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: image(t, dir, "src.img", size), Name: "src"})
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: src.ID})
			if err != nil {
				t.Fatal(err)
			}
			devs := partitionedLoop(t, dir, size)
			if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: devs[c.volume], Name: "vol"}); err != nil {
				t.Fatal(err)
			}
			_, backup, err := s.StartBackup(adminCtx(), gateway.BackupRequest{Volume: "vol"}) // held: its job has not run
			if err != nil {
				t.Fatal(err)
			}
			yes := gateway.WithConfirm(adminCtx(), func(string) error { return nil })
			to := devs[c.target]
			if _, _, err := s.StartRestore(yes, gateway.RestoreRequest{Backup: b.ID, To: to}); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "volume vol ("+devs[c.volume]+")") {
				t.Fatalf("restore --to %s while volume vol (%s) is backed up: %v, want a conflict naming the volume", to, devs[c.volume], err)
			}
			// A member of another project, restoring its own backup onto its own volume on the
			// target device, reads nothing of the busy volume: not its name, nor its path.
			p1 := as("alice", "p1", false)
			if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: to, Name: "mine", Project: "p1"}); err != nil {
				t.Fatal(err)
			}
			mine, err := s.ManageVolume(p1, gateway.ManageRequest{Path: image(t, dir, "mine-src.img", size), Name: "mine-src"})
			if err != nil {
				t.Fatal(err)
			}
			mb, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: mine.ID})
			if err != nil {
				t.Fatal(err)
			}
			p1yes := gateway.WithConfirm(p1, func(string) error { return nil })
			if _, _, err := s.StartRestore(p1yes, gateway.RestoreRequest{Backup: mb.ID, Volume: "mine"}); !errors.Is(err, gateway.ErrConflict) ||
				regexp.MustCompile(`\bvol\b`).MatchString(err.Error()) || strings.Contains(err.Error(), devs[c.volume]) || strings.Contains(err.Error(), "/dev/") {
				t.Fatalf("a member's restore onto its volume beside another project's busy one: %v, want a conflict that names neither", err)
			}
			if _, err := s.UnmanageVolume(adminCtx(), "mine"); err != nil {
				t.Fatal(err)
			}
			if err := backup(adminCtx()); err != nil {
				t.Fatal(err)
			}
			_, restore, err := s.StartRestore(yes, gateway.RestoreRequest{Backup: b.ID, To: to})
			if err != nil {
				t.Fatalf("restore --to %s once the backup ended: %v", to, err)
			}
			if _, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: "vol"}); !errors.Is(err, gateway.ErrConflict) {
				t.Errorf("backup of volume vol (%s) while a restore --to %s is accepted: %v, want a conflict", devs[c.volume], to, err)
			}
			// The same device, another project's volume now: its member's backup is refused
			// without the id of a backup it does not see.
			if _, err := s.UnmanageVolume(adminCtx(), "vol"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: devs[c.volume], Name: "theirs", Project: "p1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CreateBackup(p1, gateway.BackupRequest{Volume: "theirs"}); !errors.Is(err, gateway.ErrConflict) || strings.Contains(err.Error(), b.ID) {
				t.Errorf("a member's backup of its volume (%s) while another project's restore --to %s is accepted: %v, want a conflict that does not name backup %s", devs[c.volume], to, err, b.ID)
			}
			if err := restore(adminCtx()); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(to)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h := sha256.New()
			if _, err := io.CopyN(h, f, size); err != nil {
				t.Fatal(err)
			}
			if got, want := [32]byte(h.Sum(nil)), sha256.Sum256(imageBytes(size, "src.img")); got != want {
				t.Errorf("restored %s: sha256 %x, want %x", to, got, want)
			}
		})
	}
}

// partitionedLoop attaches a loop device over a 4 MiB image under dir with one partition of
// size bytes at 1 MiB; it returns the devices as "disk" and "part".
func partitionedLoop(t *testing.T, dir string, size int64) map[string]string {
	t.Helper()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 4<<20); err != nil {
		t.Fatal(err)
	}
	disk, parts := testutil.PartitionedLoop(t, img, "label: dos\nstart=2048, size="+strconv.FormatInt(size/512, 10)+", type=83\n", 1)
	return map[string]string{"disk": disk, "part": parts[0]}
}
