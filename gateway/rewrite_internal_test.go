package gateway

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// beforePut runs before each Put it passes on.
type beforePut struct {
	backend.Backend
	before func(key string)
}

func (h *beforePut) Put(ctx context.Context, key string, data []byte) error {
	h.before(key)
	return h.Backend.Put(ctx, key, data)
}

// A protect on gateway A (any manifest rewrite: backup-update, prune's re-link) reads the
// manifest and stores it whole again; gateway B deletes the backup in between. B's delete
// must win: A's protect fails saying so, the manifest stays gone, and neither gateway knows
// the backup after its catch-up. Before tombstones, A's store brought the deleted backup back,
// protected, on both (found by review; docs/design.md, "Manifest rewrites and deletes").
func TestProtectOnOneGatewayLosesToADeleteOnAnother(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := Config{Repo: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state-a")}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	open := func(c Config) *Service {
		s, err := Open(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a := open(cfg)
	cfg.StateDir = filepath.Join(dir, "state-b")
	b := open(cfg)
	admin := WithCaller(ctx, Caller{User: "admin", Project: DefaultProject, Admin: true})
	img := filepath.Join(dir, "vol.img")
	if err := os.WriteFile(img, []byte("not zeros, not zeros, not zeros"), 0o600); err != nil {
		t.Fatal(err)
	}
	bk, err := a.CreateBackup(admin, BackupRequest{Volume: img})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	// A's repository, over a backend that lets B delete the backup just before A stores the
	// manifest it read.
	var once sync.Once
	var delErr error
	be := &beforePut{Backend: a.be, before: func(key string) {
		if key == "manifests/"+bk.ID {
			once.Do(func() { _, delErr = b.DeleteBackup(admin, bk.ID, false) })
		}
	}}
	u, err := repo.Unlock(ctx, be, a.cfg.Password)
	if err != nil {
		t.Fatal(err)
	}
	if a.repo, err = repo.OpenUnlocked(ctx, be, a.idx, u, repo.Options{}); err != nil {
		t.Fatal(err)
	}
	_, err = a.ProtectBackup(admin, bk.ID, true)
	if delErr != nil {
		t.Fatalf("delete on b: %v", delErr)
	}
	if err == nil {
		t.Error("protect on a succeeded across b's delete")
	}
	if has, _ := a.repo.HasManifest(ctx, bk.ID); has {
		t.Fatalf("b deleted backup %s, and a's protect stored its manifest again", bk.ID)
	}
	for _, s := range []*Service{a, b} {
		if err := s.SyncBackups(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := s.idx.Backup(bk.ID); err == nil {
			t.Errorf("the deleted backup is back in an index: %s, protected %v", got.Status, got.Protected)
		}
	}
}
