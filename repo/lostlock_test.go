package repo_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// putHooks calls before and after around every Put, and logs the keys whose Put began.
type putHooks struct {
	backend.Backend
	mu            sync.Mutex
	began         []string
	before, after func(key string)
	// failAfter, when it says so, makes a Put that landed return an error all the same: a
	// lost acknowledgement.
	failAfter func(key string) bool
}

func (h *putHooks) Put(ctx context.Context, key string, data []byte) error {
	if h.before != nil {
		h.before(key)
	}
	h.mu.Lock()
	h.began = append(h.began, key)
	h.mu.Unlock()
	err := h.Backend.Put(ctx, key, data)
	if h.after != nil {
		h.after(key)
	}
	if err == nil && h.failAfter != nil && h.failAfter(key) {
		err = fmt.Errorf("put %s: injected: the acknowledgement was lost: %w", key, backend.ErrUnavailable)
	}
	return err
}

func (h *putHooks) keys() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.began...)
}

// lostLockFixture opens f's repository again through hooks, and takes a shared lock there.
func lostLockFixture(t *testing.T) (*fixture, *putHooks, *repo.Lock) {
	t.Helper()
	f := newFixture(t, repo.InitOptions{})
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	h := &putHooks{Backend: be}
	g := fixtureOn(t, h, f.dir, "index-hooked", repo.Options{ChunkCacheBytes: 8 << 20})
	lk, err := g.r.Lock(context.Background(), repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(lk.Unlock)
	return g, h, lk
}

func writeWithLock(t *testing.T, f *fixture, lk *repo.Lock, vol []byte) error {
	t.Helper()
	_, err := f.r.Write(context.Background(), &memSource{data: vol}, repo.WriteOptions{Lock: lk}, func(repo.WriteResult) error {
		t.Error("a backup whose lock was lost committed")
		return nil
	})
	return err
}

// A backup whose lock is lost while it runs (it stalled past --lock-stale, a paused VM)
// stores no pack and no index object from then on: with no lock object of its own, a gc may
// run meanwhile, and an index object that lands after that gc listed them could name a pack
// it deleted (docs/design.md, "A writer stalls past --lock-stale").
func TestWriterStoresNothingOnceItsLockIsLost(t *testing.T) {
	f, h, lk := lostLockFixture(t)
	var once sync.Once
	stalledAt := -1
	h.before = func(key string) {
		if strings.HasPrefix(key, "packs/") {
			once.Do(func() {
				repo.StallLockForTest(lk, time.Hour)
				stalledAt = len(h.keys()) // this pack's Put began before the stall was seen
			})
		}
	}
	vol := make([]byte, 40<<20) // incompressible: more than one pack of 16 MiB
	rand.NewChaCha8([32]byte{31}).Read(vol)
	err := writeWithLock(t, f, lk, vol)
	if !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("backup after its lock was lost: %v, want ErrLockLost", err)
	}
	if stalledAt < 0 {
		t.Fatal("no pack was stored")
	}
	for _, k := range h.keys()[stalledAt+1:] {
		if strings.HasPrefix(k, "packs/") || strings.HasPrefix(k, "packindex/") {
			t.Errorf("stored %s after the lock was lost", k)
		}
	}
}

// An index object whose Put returns after the lock was lost (it waited out an outage while
// a gc elsewhere broke the lock) is removed again, and its pack is not indexed: the pack is
// left to every gc to learn from its trailer.
func TestIndexObjectStoredAfterTheLockWasLostIsRemoved(t *testing.T) {
	for _, lostAck := range []bool{false, true} {
		t.Run(fmt.Sprintf("put failed after landing %v", lostAck), func(t *testing.T) {
			indexObjectAfterLoss(t, lostAck)
		})
	}
}

func indexObjectAfterLoss(t *testing.T, lostAck bool) {
	f, h, lk := lostLockFixture(t)
	h.after = func(key string) {
		if strings.HasPrefix(key, "packindex/") {
			repo.StallLockForTest(lk, time.Hour)
		}
	}
	h.failAfter = func(key string) bool { return lostAck && strings.HasPrefix(key, "packindex/") }
	err := writeWithLock(t, f, lk, randomVolume(32, 2<<20))
	if !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("backup whose index object landed after the lock was lost: %v, want ErrLockLost", err)
	}
	var packs, indexes int
	ctx := context.Background()
	if err := h.Backend.List(ctx, "packs/", func(backend.ObjectInfo) error { packs++; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := h.Backend.List(ctx, "packindex/", func(backend.ObjectInfo) error { indexes++; return nil }); err != nil {
		t.Fatal(err)
	}
	if packs != 1 || indexes != 0 {
		t.Fatalf("%d packs and %d index objects left, want the pack and no index object", packs, indexes)
	}
	n := 0
	if err := f.idx.Packs(func(repo.PackID, int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("the index records %d packs, want none: the pack's index object is gone", n)
	}
}

// A rewrite whose second copy fails to store still looks for a delete that came between the
// caller's read and its store: its manifest is stored, and would bring the deleted backup
// back until a gc finished the delete (found by review).
func TestARewriteWhoseCopyFailedLosesToADelete(t *testing.T) {
	f, h, lk := lostLockFixture(t)
	m := f.backup(t, "a", &memSource{data: randomVolume(33, 1<<20)}, nil)
	ctx := context.Background()
	if err := f.r.DeleteManifest(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	h.failAfter = func(key string) bool { return strings.HasPrefix(key, "manifest-copies/") }
	m.Name = "renamed"
	if err := f.r.RewriteManifest(ctx, lk, m); !errors.Is(err, repo.ErrManifestDeleted) {
		t.Fatalf("rewrite after a delete, its copy failing: %v, want ErrManifestDeleted", err)
	}
	if has, err := f.r.HasManifest(ctx, m.ID); err != nil || has {
		t.Fatalf("the deleted backup's manifest after the rewrite: %v (%v), want it gone", has, err)
	}
}

// TestALockThatOneReadCallsMissingStillKeepsGCOut: a lock object listed in locks/ whose read
// says "not found" while it is still there (a proxy's 404 page, a lagging replica) is a lock
// gc cannot read, so it counts as a damaged, exclusive one and keeps gc out. It was taken for
// released while gc listed, and gc went on to delete the packs of the backup that held it. A
// lock truly released is still passed over: its object is gone when looked at again.
func TestALockThatOneReadCallsMissingStillKeepsGCOut(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	var fb *faulty.Faulty
	g := f.wrapped(t, "index-g", repo.Options{Lock: repo.LockOptions{Wait: 300 * time.Millisecond}},
		func(be backend.Backend) backend.Backend { fb = faulty.New(be, 1); return fb })
	lk, err := f.r.Lock(ctx, repo.LockShared, "backup")
	if err != nil {
		t.Fatal(err)
	}
	fb.Add(faulty.Rule{Methods: faulty.Get, Prefix: "locks/", Err: fmt.Errorf("not found (404 page of a proxy): %w", backend.ErrNotFound)})
	locks, err := g.r.Locks(ctx)
	if err != nil || len(locks) != 1 || !locks[0].Damaged || locks[0].Kind != repo.LockExclusive {
		t.Fatalf("locks seen through the lying reads: %+v, %v; want the backup's lock, damaged", locks, err)
	}
	if _, err := g.r.GC(ctx, repo.GCOptions{}); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("gc while a backup holds a lock its read calls missing: %v, want ErrLocked", err)
	}
	lk.Unlock()
	if _, err := g.r.GC(ctx, repo.GCOptions{}); err != nil {
		t.Fatalf("gc once the lock is released: %v", err)
	}
}

// laggingLocks is a store whose listings of locks/ lag its writes: they show nothing.
type laggingLocks struct{ backend.Backend }

func (l *laggingLocks) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if prefix == "locks/" {
		return nil
	}
	return l.Backend.List(ctx, prefix, fn)
}

// TestALockIsNotTakenOnAListingThatLagsItsOwnWrite: a locker whose listing does not show the
// lock object it has just written is on a store whose listings lag its writes, where another
// locker's object may be missing from the listing too: it takes no lock, and says why. Before,
// an exclusive lock was taken on such a listing, and a gc could run beside a backup it did not
// see.
func TestALockIsNotTakenOnAListingThatLagsItsOwnWrite(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	g := f.wrapped(t, "lagging", repo.Options{}, func(be backend.Backend) backend.Backend { return &laggingLocks{be} })
	for _, kind := range []repo.LockKind{repo.LockExclusive, repo.LockShared} {
		lk, err := g.r.Lock(context.Background(), kind, "test")
		if err == nil {
			lk.Unlock()
			t.Fatalf("a %v lock was taken on a listing that does not show its own object", kind)
		}
		if !strings.Contains(err.Error(), "listings lag its writes") {
			t.Fatalf("a %v lock on a lagging listing: %v; want it refused, saying why", kind, err)
		}
	}
}
