package repo_test

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

// A manifest rewrite (protect, backup-update, prune's re-link) reads the manifest and stores it
// whole again. A delete by another process between the two must win: the rewrite finds the
// delete's tombstone after its store, deletes the manifest again and says so. A rewrite with
// no delete stores its change; an import stores a deleted manifest again on purpose; gc drops
// tombstones a day old by the store's clock and keeps newer ones (docs/design.md, "Manifest
// rewrites and deletes").
func TestRewriteLosesToADelete(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	other := f.peer(t, "b", repo.LockOptions{})
	m := f.backup(t, "victim", &memSource{data: randomVolume(41, 1<<20)}, nil)
	kept := f.backup(t, "kept", &memSource{data: randomVolume(42, 1<<20)}, nil)

	rewrite := func(id string, name string) error {
		lk, err := f.r.Lock(ctx, repo.LockShared, "update")
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Unlock()
		cur, err := f.r.GetManifest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		cur.Name = name
		if id == m.ID {
			// Another process deletes the backup between this read and the store.
			if err := other.r.DeleteManifest(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		return f.r.RewriteManifest(ctx, lk, cur)
	}
	if err := rewrite(m.ID, "renamed"); !errors.Is(err, repo.ErrManifestDeleted) {
		t.Fatalf("rewrite across a delete = %v, want ErrManifestDeleted", err)
	}
	if has, err := f.r.HasManifest(ctx, m.ID); err != nil || has {
		t.Fatalf("after a rewrite across its delete, the manifest exists: %v (%v)", has, err)
	}
	if err := rewrite(kept.ID, "renamed"); err != nil {
		t.Fatal(err)
	}
	if got, err := f.r.GetManifest(ctx, kept.ID); err != nil || got.Name != "renamed" {
		t.Fatalf("rewrite without a delete: %+v, %v", got, err)
	}

	// An import stores the deleted manifest again; later rewrites of it stand.
	if err := f.r.Undelete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if err := f.r.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	lk, err := f.r.Lock(ctx, repo.LockShared, "update")
	if err != nil {
		t.Fatal(err)
	}
	m.Name = "imported"
	if err := f.r.RewriteManifest(ctx, lk, m); err != nil {
		t.Fatalf("rewrite of an imported backup: %v", err)
	}
	lk.Unlock()

	// gc drops a tombstone a day old and keeps a new one.
	if err := other.r.DeleteManifest(ctx, kept.ID); err != nil {
		t.Fatal(err)
	}
	tomb := func(id string) string {
		return filepath.Join(f.dir, "repo", "meta", "tombstones", hex.EncodeToString([]byte(id)))
	}
	old := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(tomb(kept.ID), old, old); err != nil {
		t.Fatal(err)
	}
	if err := f.r.DeleteManifest(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	f.gc(t)
	if _, err := os.Stat(tomb(kept.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("gc kept a tombstone 25 hours old: %v", err)
	}
	if _, err := os.Stat(tomb(m.ID)); err != nil {
		t.Errorf("gc removed a new tombstone: %v", err)
	}
}

// refuseManifestDelete is a backend whose manifest deletes fail.
type refuseManifestDelete struct{ *stopGC }

func (b refuseManifestDelete) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, "manifests/") {
		return errors.New("delete refused by the test")
	}
	return b.stopGC.Delete(ctx, key)
}

// unfinishedDelete backs up "a" on a backend that refuses manifest deletes and deletes it: its
// tombstone, dated a day and an hour back, stays beside its manifest.
func unfinishedDelete(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := fixtureOn(t, refuseManifestDelete{newStopGC(t, dir, repo.InitOptions{})}, dir, "index", repo.Options{ChunkCacheBytes: 8 << 20})
	f.backup(t, "a", &memSource{data: randomVolume(3, 1<<20)}, nil)
	if err := f.r.DeleteManifest(context.Background(), "a"); err == nil {
		t.Fatal("the manifest delete did not fail")
	}
	old := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "repo", "meta", "tombstones", hex.EncodeToString([]byte("a"))), old, old); err != nil {
		t.Fatal(err)
	}
	return f
}

// A delete whose manifest delete failed leaves its tombstone beside the manifest: a delete
// that did not finish, which adoption refuses. gc must not drop that tombstone when it is a
// day old, or the backup would be adopted again (found by review).
func TestGCKeepsTheTombstoneOfAnUnfinishedDelete(t *testing.T) {
	ctx := context.Background()
	f := unfinishedDelete(t)
	f.gc(t)
	if deleted, err := f.r.Deleted(ctx, "a"); err != nil || !deleted {
		t.Fatalf("gc removed the tombstone of a delete whose manifest is still stored (%v)", err)
	}
}

// The same unfinished delete, its deleter gone for good: gc finishes it once its tombstone is
// a day old. The first gc deletes the manifest and keeps the tombstone (and the backup's data,
// which it marked); the next removes the tombstone and reclaims the data. Before, the manifest
// and its tombstone stayed for ever, and so did the backup's data.
func TestGCFinishesADeleteThatDidNotFinish(t *testing.T) {
	ctx := context.Background()
	f := unfinishedDelete(t)
	g := f.peer(t, "gc", repo.LockOptions{}) // its backend deletes manifests
	if st := g.gc(t); st.PacksDeleted != 0 {
		t.Fatalf("the gc that finished the delete deleted %d packs; the backup's data waits for the next", st.PacksDeleted)
	}
	if has, err := g.r.HasManifest(ctx, "a"); err != nil || has {
		t.Fatalf("manifest of the unfinished delete after gc: %v %v; want it gone", has, err)
	}
	if deleted, err := g.r.Deleted(ctx, "a"); err != nil || !deleted {
		t.Fatalf("gc removed the tombstone with the manifest (%v); want it kept until the next run", err)
	}
	if st := g.gc(t); st.PacksDeleted == 0 {
		t.Fatalf("the next gc: %+v; want the backup's data reclaimed", st)
	}
	if deleted, err := g.r.Deleted(ctx, "a"); err != nil || deleted {
		t.Fatalf("tombstone after the next gc: %v %v; want it gone", deleted, err)
	}
}
