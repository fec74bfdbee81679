package gateway_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
)

// A volume managed again after it was forgotten (unmanaged, or deleted with its backups kept)
// is the same volume: same id, its backups its own, an incremental based on them. A copy put
// in its place is a new volume.
func TestVolumeIdentitySurvivesForgetting(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	path := image(t, dir, "vm.img", 512<<10)
	v, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Identity == "" {
		t.Fatal("a managed file has no identity")
	}
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if full.VolumePath != path || full.VolumeIdentity != v.Identity {
		t.Errorf("backup records volume %q %q, want %q %q", full.VolumePath, full.VolumeIdentity, path, v.Identity)
	}

	for _, forget := range []string{"unmanage", "delete"} {
		var err error
		if forget == "unmanage" {
			_, err = s.UnmanageVolume(ctx, "vm")
		} else {
			_, err = s.DeleteVolume(ctx, "vm", true)
		}
		if err != nil {
			t.Fatalf("%s: %v", forget, err)
		}
		again, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: "vm"})
		if err != nil {
			t.Fatal(err)
		}
		if again.ID != v.ID {
			t.Errorf("managed again after %s: id %s, want the earlier %s", forget, again.ID, v.ID)
		}
		inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Incremental: true})
		if err != nil {
			t.Fatalf("incremental after %s and manage: %v", forget, err)
		}
		if !inc.IsIncremental || inc.VolumeID != v.ID {
			t.Errorf("after %s: backup %+v, want an incremental of volume %s", forget, inc, v.ID)
		}
	}

	// The same bytes in a new file at the path: another volume.
	if _, err := s.UnmanageVolume(ctx, "vm"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "copy.img")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	replaced, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: path, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if replaced.ID == v.ID {
		t.Error("a copy put in place of the volume's file was taken for the volume")
	}
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Incremental: true}); err == nil {
		t.Error("an incremental of a new volume found a parent")
	}
}
