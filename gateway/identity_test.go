package gateway_test

import (
	"context"
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

// A forgotten volume stays forgotten when the index is lost: its backups come back from their
// manifests, the volume does not (it came back at its old path, in the project of whichever
// backup was adopted first, where an admin's backup into another project put it in that
// project), and managing it again still finds its backups.
func TestLostIndexBringsNoForgottenVolumeBack(t *testing.T) {
	dir := t.TempDir()
	cfg, s := openedRepo(t, dir)
	ctx, admin := context.Background(), adminCtx()
	var err error
	path := image(t, dir, "vm.img", 512<<10)
	v, err := s.ManageVolume(admin, gateway.ManageRequest{Path: path, Name: "vm", Project: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	// An admin's backup of p1's volume into p2, then p1's own.
	if _, err := s.CreateBackup(as("admin", "p2", true), gateway.BackupRequest{Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(as("u1", "p1", false), gateway.BackupRequest{Volume: "vm"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UnmanageVolume(admin, v.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfg.IndexDir()); err != nil {
		t.Fatal(err)
	}

	s, err = gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if bs, err := s.ListBackups(admin, gateway.ListFilter{AllProjects: true}); err != nil || len(bs) != 2 {
		t.Fatalf("backups after the index was lost: %d, %v; want 2", len(bs), err)
	}
	if vs, err := s.ListVolumes(admin, true); err != nil || len(vs) != 0 {
		for _, v := range vs {
			t.Errorf("volume %s (%s) in project %s came back", v.Name, v.Path, v.Project)
		}
		t.Fatalf("volumes after the index was lost: %d, %v; want none", len(vs), err)
	}
	again, err := s.ManageVolume(as("u1", "p1", false), gateway.ManageRequest{Path: path, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != v.ID {
		t.Errorf("managed again after the index was lost: id %s, want the earlier %s", again.ID, v.ID)
	}
}
