package repo_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// A backup whose lock object was removed while it ran (broken by a gc elsewhere that judged
// it stale, or by 'repo unlock --force') has lost its lock, and commits nothing, even when
// the removal came after its last refresh: that gc may have removed the packs it wrote.
func TestBackupCommitsNothingOnceItsLockObjectIsGone(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	lk, err := f.r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock()
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Delete(ctx, "locks/"+lk.Info().ID); err != nil {
		t.Fatal(err)
	}
	committed := false
	_, err = f.r.Write(ctx, &memSource{data: randomVolume(7, 1<<20)}, repo.WriteOptions{Lock: lk}, func(res repo.WriteResult) error {
		committed = true
		return nil
	})
	if committed || !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("backup with its lock object gone: committed %v, %v; want nothing committed and the lock lost", committed, err)
	}
}
