package gateway_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// otherRepo makes and opens a repository in dir with its own passphrase and 4 KiB blocks:
// everything a copy writes there is sealed and addressed anew.
func otherRepo(t *testing.T, dir string) (gateway.Config, *gateway.Service) {
	t.Helper()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state"), Password: "offsite"}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.Init(context.Background(), cfg, repo.InitOptions{BlockSize: 4 << 10, Encryption: repo.EncryptionAES, Password: cfg.Password}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return cfg, s
}

// zeroAt writes n zero bytes into the file at path at off.
func zeroAt(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// A chain copied to another repository (other passphrase, other block size) restores there
// byte for byte, each incremental read only where its block map differs from its parent's
// and built on the copy of that parent; a copy made again does nothing, the copies survive
// the loss of the destination's index, and a backup whose parent was not copied is read in
// full and restores all the same.
func TestCopyBackupsToAnotherRepository(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	vol := image(t, dir, "vol.img", 4<<20)
	if err := os.Truncate(vol, 6<<20); err != nil { // 2 MiB of hole at the end
		t.Fatal(err)
	}
	var ids, sums []string
	backup := func(incremental bool) {
		b, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Name: "n", Incremental: incremental, Metadata: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		ids, sums = append(ids, b.ID), append(sums, sha256File(t, vol))
	}
	backup(false)
	writeAt(t, vol, 100<<10, 12, 1)
	writeAt(t, vol, 5<<20, 13, 2) // into the hole
	zeroAt(t, vol, 1<<20, 64<<10) // zeros where data was
	backup(true)
	writeAt(t, vol, 3<<20+7, 13, 3)
	backup(true)

	dcfg, dst := otherRepo(t, t.TempDir())
	for i, id := range ids {
		res, err := src.CopyBackup(ctx, id, dst, nil)
		if err != nil {
			t.Fatalf("copy %s: %v", id, err)
		}
		if !res.Copied || res.Backup.ID != id || res.Backup.Status != index.BackupAvailable {
			t.Fatalf("copy %d: %+v, want backup %s copied and available", i, res, id)
		}
		if i == 0 {
			if res.Base != "" || res.Backup.ReadMode != gateway.ReadCopy {
				t.Errorf("full backup's copy: base %q, read mode %q, want none and %q", res.Base, res.Backup.ReadMode, gateway.ReadCopy)
			}
			continue
		}
		if res.Base != ids[i-1] || !res.Backup.IsIncremental || res.Backup.ParentID != ids[i-1] || res.Backup.ReadMode != gateway.ReadCopyDiff {
			t.Errorf("copy of incremental %d: base %q parent %q incremental %v mode %q, want built on the copy of %s", i, res.Base, res.Backup.ParentID, res.Backup.IsIncremental, res.Backup.ReadMode, ids[i-1])
		}
		// The changes touch at most five 16 KiB source blocks, four of them whole.
		if rb := res.Backup.Stats.ReadBytes; rb == 0 || rb > 6*16<<10 {
			t.Errorf("copy of incremental %d read %d bytes, want only the changed blocks (at most 96 KiB of 6 MiB)", i, rb)
		}
	}
	for i, id := range ids {
		if got := restoreSHA(t, dst, ctx, id); got != sums[i] {
			t.Errorf("copy of backup %d restores to %s, want %s (the volume then)", i, got, sums[i])
		}
		b, err := dst.Backup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Name != "n" || b.Metadata["k"] != "v" || b.VolumeName != "vol.img" && b.VolumeName == "" {
			t.Errorf("copy of backup %d: name %q metadata %v volume %q: not what the backup was", i, b.Name, b.Metadata, b.VolumeName)
		}
	}
	again, err := src.CopyBackup(ctx, ids[2], dst, nil)
	if err != nil || again.Copied {
		t.Errorf("second copy of %s: %+v, %v; want nothing done", ids[2], again, err)
	}

	// The copies are the destination's: its index goes, and a new one finds them.
	dst.Close()
	if err := os.RemoveAll(dcfg.StateDir); err != nil {
		t.Fatal(err)
	}
	dst, err = gateway.Open(context.Background(), dcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for i, id := range ids {
		if got := restoreSHA(t, dst, ctx, id); got != sums[i] {
			t.Errorf("after the destination's index was lost, copy of backup %d restores to %s, want %s", i, got, sums[i])
		}
	}

	// Only the last incremental, to a third repository: read in full, restores the same.
	_, third := otherRepo(t, t.TempDir())
	res, err := src.CopyBackup(ctx, ids[2], third, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Base != "" || res.Backup.ReadMode != gateway.ReadCopy || res.Backup.Stats.ReadBytes < 4<<20-64<<10 {
		t.Errorf("copy without its parent's: base %q mode %q read %d, want a full read of its 4 MiB of data less 64 KiB of zeros", res.Base, res.Backup.ReadMode, res.Backup.Stats.ReadBytes)
	}
	if got := restoreSHA(t, third, ctx, ids[2]); got != sums[2] {
		t.Errorf("copy without its parent's restores to %s, want %s", got, sums[2])
	}
}

// Copies are for admins, and never into the same repository.
func TestCopyRefusals(t *testing.T) {
	src, dir := newService(t)
	vol := image(t, dir, "vol.img", 256<<10)
	b, err := src.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	_, dst := otherRepo(t, t.TempDir())
	if _, err := src.CopyBackup(as("u", gateway.DefaultProject, false), b.ID, dst, nil); !errors.Is(err, gateway.ErrDenied) {
		t.Errorf("a member's copy: %v, want denied", err)
	}
	if _, err := src.CopyBackup(adminCtx(), b.ID, src, nil); !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "this repository") {
		t.Errorf("a copy into the same repository: %v, want invalid", err)
	}
	if list, err := dst.ListBackups(adminCtx(), gateway.ListFilter{AllProjects: true}); err != nil || len(list) != 0 {
		t.Errorf("the destination lists %d backups (%v) after refused copies, want none", len(list), err)
	}
}

// A copy is built on the destination's copy of its parent only when a sample of the blocks
// said unchanged reads there as it does in the source: one that does not (a fake: another
// backup's image stands for the source) is read in full, and says why.
func TestCopyChecksTheParentsCopy(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	vol := image(t, dir, "vol.img", 1<<20)
	p, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	other := image(t, dir, "other-name.img", 1<<20) // other bytes, same size
	o, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: other})
	if err != nil {
		t.Fatal(err)
	}
	_, dst := otherRepo(t, t.TempDir())
	if _, err := src.CopyBackup(ctx, p.ID, dst, nil); err != nil {
		t.Fatal(err)
	}
	copyOfP, err := dst.Backup(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if base, fallback := gateway.CopyBaseForTest(dst, copyOfP, gateway.ImageSourceForTest(t, src, p.ID)); base != p.ID || fallback != "" {
		t.Errorf("the parent's own image: base %q (%s), want %s", base, fallback, p.ID)
	}
	base, fallback := gateway.CopyBaseForTest(dst, copyOfP, gateway.ImageSourceForTest(t, src, o.ID))
	if base != "" || !strings.Contains(fallback, "differs from it") {
		t.Errorf("another image: base %q, fallback %q; want a full read because the copy of the parent differs", base, fallback)
	}
}
