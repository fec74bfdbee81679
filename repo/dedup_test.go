package repo_test

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

// racingIndex makes a backup's dedup check of a repeated block run just before the pack that
// holds the block's first copy is indexed, and return only once it is: the block is new to
// the index when the leaf is checked, and no longer in a pack waiting to be indexed when the
// leaf is packed. It holds every pack back until the check of a leaf that has one address
// twice (the repeat), and holds that check until a pack with the repeated address is indexed.
type racingIndex struct {
	repo.Index
	mu       sync.Mutex
	repeat   repo.Address // found by the check that has it twice
	looked   chan struct{}
	indexed  chan struct{}
	once     sync.Once
	timedOut bool
}

func (x *racingIndex) LookupBatch(addrs []repo.Address, locs []repo.Location, found []bool) error {
	if err := x.Index.LookupBatch(addrs, locs, found); err != nil {
		return err
	}
	seen := map[repo.Address]bool{}
	for i, a := range addrs {
		if !seen[a] {
			seen[a] = true
			continue
		}
		if found[i] {
			return nil // not the race: the pack was indexed already
		}
		x.mu.Lock()
		x.repeat = a
		x.mu.Unlock()
		close(x.looked)
		x.wait(x.indexed)
		time.Sleep(50 * time.Millisecond) // and the writer has heard of it
		return nil
	}
	return nil
}

func (x *racingIndex) AddPack(id repo.PackID, size int64, entries []repo.PackEntry) error {
	x.wait(x.looked)
	if err := x.Index.AddPack(id, size, entries); err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, e := range entries {
		if e.Addr == x.repeat {
			x.once.Do(func() { close(x.indexed) })
		}
	}
	return nil
}

func (x *racingIndex) wait(c chan struct{}) {
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		x.mu.Lock()
		x.timedOut = true
		x.mu.Unlock()
	}
}

// TestRepeatedBlockPackedOnceWhileItsPackIsIndexed: a block that repeats in a later leaf is
// packed once even when its first copy's pack is indexed between that leaf's dedup check and
// its packing. Before, the session forgot the pack's blobs once it was indexed, and make
// bench's full backup stored 6 to 340 blocks twice in some runs.
func TestRepeatedBlockPackedOnceWhileItsPackIsIndexed(t *testing.T) {
	x := &racingIndex{looked: make(chan struct{}), indexed: make(chan struct{})}
	f := newFixtureWith(t, repo.InitOptions{Encryption: "aes-256-gcm", Password: "pw"}, func(idx repo.Index) repo.Index {
		x.Index = idx
		return x
	})
	r, ctx := f.r, context.Background()

	// Six leaves of random blocks (a 16 MiB pack fills in the fourth); the first block comes
	// back twice in the sixth leaf.
	const bs, leaf = 16 << 10, repo.LeafFanout * 16 << 10
	data := randomBytes(7, 6*leaf)
	copy(data[5*leaf+10*bs:], data[:bs])
	copy(data[5*leaf+20*bs:], data[:bs])
	src := &memSource{data: data}
	var m *repo.Manifest
	res, err := r.Write(ctx, src, repo.WriteOptions{Workers: 2, Uploads: 2}, func(res repo.WriteResult) error {
		m = &repo.Manifest{ID: "b", VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
		return r.PutManifest(ctx, m)
	})
	if err != nil {
		t.Fatal(err)
	}
	if x.timedOut {
		t.Fatal("the dedup check of the repeated block did not run before its pack was indexed: the test set nothing up")
	}

	copies := 0
	if err := r.ListPacks(ctx, func(id repo.PackID, size int64) error {
		entries, err := r.PackEntries(ctx, id, size)
		for _, e := range entries {
			if e.Addr == x.repeat {
				copies++
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if copies != 1 {
		t.Errorf("the repeated block is in %d packs, want 1", copies)
	}
	if want := int64(len(data)/bs - 2); res.Stats.NewBlobs-treeBlobs(t, r, m) != want {
		t.Errorf("%d new data blobs, want %d (one per distinct block)", res.Stats.NewBlobs-treeBlobs(t, r, m), want)
	}
	tgt := &memTarget{data: make([]byte, len(data))}
	if err := r.Restore(ctx, m, tgt, repo.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tgt.data, data) {
		t.Fatal("restore differs from the volume")
	}
}

// treeBlobs counts the block map's nodes of m.
func treeBlobs(t *testing.T, r *repo.Repository, m *repo.Manifest) int64 {
	t.Helper()
	var n int64
	if err := r.Walk(context.Background(), m.Root, m.RootLevel, map[repo.Address]struct{}{}, func(_ repo.Address, bt repo.BlobType) error {
		if bt == repo.BlobTree {
			n++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
