package index_test

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// An open that fails on a full file system says so (ErrNoResources, and the errno), though
// Badger formats the cause into its message instead of wrapping it; the index is untouched
// and opens with its contents once there is space.
func TestOpenOnAFullFileSystemIsNotDamage(t *testing.T) {
	dir := filepath.Join(testutil.MountTmpfs(t, 8<<20), "index")
	ix, err := index.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.SetMeta("probe", "kept"); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	free := testutil.FillFS(t, filepath.Dir(dir), 0)
	_, err = index.Open(dir)
	if !errors.Is(err, index.ErrNoResources) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("open on a full file system: %v; want ErrNoResources and ENOSPC", err)
	}
	free()
	ix, err = index.Open(dir)
	if err != nil {
		t.Fatalf("open once there is space: %v", err)
	}
	defer ix.Close()
	if v, err := ix.Meta("probe"); err != nil || v != "kept" {
		t.Fatalf("the index after the full file system: probe = %q, %v", v, err)
	}
}
