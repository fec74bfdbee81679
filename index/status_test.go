package index

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestBackupTransitions(t *testing.T) {
	for _, tt := range []struct {
		from, to BackupStatus
		ok       bool
	}{
		{BackupCreating, BackupAvailable, true},
		{BackupCreating, BackupError, true},
		{BackupCreating, BackupRestoring, false},
		{BackupAvailable, BackupRestoring, true},
		{BackupAvailable, BackupCreating, false},
		{BackupRestoring, BackupAvailable, true},
		{BackupError, BackupAvailable, true},     // reset-state, when its manifest is stored
		{BackupDeleting, BackupAvailable, false}, // UndoDelete alone, for a delete that never began
		{BackupDeleting, BackupCreating, false},
		{BackupDeleting, BackupError, true},
		{BackupError, BackupError, true},
	} {
		if got := tt.from.CanBecome(tt.to); got != tt.ok {
			t.Errorf("%s → %s allowed = %v, want %v", tt.from, tt.to, got, tt.ok)
		}
	}
	if !BackupAvailable.Committed() || !BackupRestoring.Committed() || BackupError.Committed() || BackupCreating.Committed() {
		t.Error("Committed is wrong")
	}
}

// Every status change goes through the table: UpdateBackup and UpdateVolume refuse others.
func TestUpdatesFollowTheTable(t *testing.T) {
	ix, err := Open(filepath.Join(t.TempDir(), "ix"))
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	now := time.Now()
	if err := ix.CreateVolume(&Volume{ID: "v", Name: "v", Path: "/v", Project: "p", Status: VolumeAvailable, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := ix.CreateBackup(&Backup{ID: "b", VolumeID: "v", Project: "p", Status: BackupCreating, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	_, err = ix.UpdateBackup("b", func(b *Backup) error { b.Status = BackupRestoring; return nil })
	if !errors.Is(err, ErrTransition) {
		t.Fatalf("creating → restoring: %v", err)
	}
	if b, _ := ix.Backup("b"); b.Status != BackupCreating {
		t.Fatalf("a refused change was stored: %s", b.Status)
	}
	if _, err := ix.UpdateBackup("b", func(b *Backup) error { b.Status = BackupAvailable; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.UpdateVolume("v", func(v *Volume) error { v.Status = VolumeCreating; return nil }); !errors.Is(err, ErrTransition) {
		t.Fatalf("available → creating: %v", err)
	}
}

// UndoDelete alone takes a backup from deleting to available, and only from deleting.
func TestUndoDelete(t *testing.T) {
	ix, err := Open(filepath.Join(t.TempDir(), "index"))
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	b := &Backup{ID: "b1", VolumeID: "v1", Status: BackupAvailable, CreatedAt: time.Now()}
	if err := ix.CreateBackup(b); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.UndoDelete("b1", func(*Backup) {}); !errors.Is(err, ErrTransition) {
		t.Fatalf("undo of a delete that is not under way: %v, want ErrTransition", err)
	}
	if _, err := ix.UpdateBackup("b1", func(b *Backup) error { b.Status = BackupDeleting; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.UpdateBackup("b1", func(b *Backup) error { b.Status = BackupAvailable; return nil }); !errors.Is(err, ErrTransition) {
		t.Fatalf("deleting → available through UpdateBackup: %v, want ErrTransition", err)
	}
	got, err := ix.UndoDelete("b1", func(b *Backup) { b.Protected = true })
	if err != nil || got.Status != BackupAvailable || !got.Protected {
		t.Fatalf("undo of a delete: %+v, %v; want available, with fn's change", got, err)
	}
	if got, err := ix.Backup("b1"); err != nil || got.Status != BackupAvailable || !got.Protected {
		t.Fatalf("the record after the undo: %+v, %v", got, err)
	}
}
