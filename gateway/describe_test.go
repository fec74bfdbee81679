package gateway_test

import (
	"context"
	"maps"
	"os"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
)

// What backup-update changes is in the manifest: an index built again from the repository
// keeps it, for a backup updated when available and for one updated while it was creating.
func TestUpdateBackupSurvivesARebuiltIndex(t *testing.T) {
	dir := t.TempDir()
	cfg, s := openedRepo(t, dir)
	ctx, admin := context.Background(), adminCtx()
	vol := image(t, dir, "vol.img", 256<<10)
	done, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: vol, Name: "a", Metadata: map[string]string{"k": "v"}})
	if err != nil {
		t.Fatal(err)
	}
	name, desc := "renamed", "described"
	if _, err := s.UpdateBackup(admin, done.ID, gateway.BackupUpdate{Name: &name, Description: &desc, Metadata: map[string]string{"owner": "ops"}}); err != nil {
		t.Fatal(err)
	}
	// Updated while creating: its commit writes the update into the manifest.
	creating, job, err := s.StartBackup(admin, gateway.BackupRequest{Volume: vol, Name: "b", Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	late := "named while creating"
	if _, err := s.UpdateBackup(admin, creating.ID, gateway.BackupUpdate{Name: &late, Metadata: map[string]string{"when": "creating"}}); err != nil {
		t.Fatal(err)
	}
	if err := job(ctx); err != nil {
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
	if _, err := s.RebuildIndex(admin, nil); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		id, name, desc string
		md             map[string]string
	}{
		{done.ID, name, desc, map[string]string{"owner": "ops"}},
		{creating.ID, late, "", map[string]string{"when": "creating"}},
	} {
		b, err := s.Backup(admin, want.id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Name != want.name || b.Description != want.desc || !maps.Equal(b.Metadata, want.md) || b.UserID != "admin" {
			t.Errorf("backup %s from a rebuilt index: name %q description %q metadata %v user %q; want %q %q %v admin",
				want.id, b.Name, b.Description, b.Metadata, b.UserID, want.name, want.desc, want.md)
		}
	}
}
