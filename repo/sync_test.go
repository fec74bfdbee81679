package repo_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

// packsOf returns the packs f's index knows.
func packsOf(t *testing.T, f *fixture) map[repo.PackID]bool {
	t.Helper()
	out := map[repo.PackID]bool{}
	if err := f.idx.Packs(func(id repo.PackID, _ int64) error {
		out[id] = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// newPacks returns the packs f's index knows that were not in before.
func newPacks(t *testing.T, f *fixture, before map[repo.PackID]bool) []repo.PackID {
	t.Helper()
	var out []repo.PackID
	for id := range packsOf(t, f) {
		if !before[id] {
			out = append(out, id)
		}
	}
	return out
}

// wantKnown fails unless b's index knows each of ids (want) or none of them (!want).
func wantKnown(t *testing.T, b *fixture, ids []repo.PackID, want bool, what string) {
	t.Helper()
	for _, id := range ids {
		if known, err := b.idx.HasPack(id); err != nil {
			t.Fatal(err)
		} else if known != want {
			t.Fatalf("%s: pack %s known to the other index: %v, want %v", what, id, known, want)
		}
	}
}

// One writer whose clock is an hour ahead names a pack index object an hour in the future. The
// reader's cursor must not follow it there: then every reader would list only keys after the
// future less syncMargin, and never again the index objects that writers with right clocks
// store (their backups could then not be adopted by another gateway, whose catch-up needs a
// backup's root located).
func TestSyncCursorIgnoresAClockAhead(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	b := f.peer(t, "b", repo.LockOptions{})
	f.backup(t, "first", &memSource{data: randomVolume(31, 1<<20)}, nil)
	for id := range packsOf(t, f) {
		if err := repo.ReindexPackForTest(f.r, time.Now().Add(time.Hour), id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.r.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	before := packsOf(t, f)
	f.backup(t, "second", &memSource{data: randomVolume(32, 1<<20)}, nil)
	ids := newPacks(t, f, before)
	if len(ids) == 0 {
		t.Fatal("the second backup stored no pack")
	}
	if _, err := b.r.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	wantKnown(t, b, ids, true, "after an index object from a clock an hour ahead")
}

// A writer whose clock is more than syncMargin behind names its index objects before the
// reader's window: the incremental sync misses them (only deduplication would suffer), and
// Rescan, which reads every index object, learns them.
func TestRescanLearnsTheIndexObjectsOfAWriterBehind(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	b := f.peer(t, "b", repo.LockOptions{})
	f.backup(t, "first", &memSource{data: randomVolume(33, 1<<20)}, nil)
	if _, err := b.r.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	before := packsOf(t, f)
	f.backup(t, "second", &memSource{data: randomVolume(34, 1<<20)}, nil)
	ids := newPacks(t, f, before)
	for _, id := range ids {
		objs, _ := filepath.Glob(filepath.Join(f.dir, "repo", "packindex", "*-"+id.String()))
		for _, p := range objs {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		if err := repo.ReindexPackForTest(f.r, time.Now().Add(-20*time.Minute), id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.r.Sync(ctx, false); err != nil {
		t.Fatal(err)
	}
	wantKnown(t, b, ids, false, "the incremental sync, 20 minutes behind its window")
	st, err := b.r.Rescan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Packs != len(ids) {
		t.Errorf("Rescan learned %d packs, want %d", st.Packs, len(ids))
	}
	wantKnown(t, b, ids, true, "after Rescan")
}
