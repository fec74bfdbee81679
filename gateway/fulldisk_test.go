package gateway_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// An index that cannot be opened because its file system is full is not damaged: the open
// fails in one line that says to free space, the index stays where it is, and once there is
// space it opens with everything in it. Before, the full disk was taken for damage: the index
// was moved aside to be built again on the same full disk, and each attempt moved another
// copy aside (two in one run, the second failing on its name).
func TestFullDiskLeavesTheIndex(t *testing.T) {
	dir := t.TempDir()
	fs := testutil.MountTmpfs(t, 16<<20)
	cfg, s := openedRepo(t, fs)
	admin := adminCtx()
	img := image(t, dir, "vm.img", 512<<10)
	if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	free := testutil.FillFS(t, fs)
	_, err = gateway.Open(context.Background(), cfg)
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
