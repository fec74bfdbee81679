package repo_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/cairn-backup/cairn/repo"
)

// A backup whose block map root and one of its leaves are lost (their copies damaged) is built
// again from the volume that still holds its blocks: each round of check and HealNodes stores
// the nodes the check can see (the root first; the leaf below it once the root reads again),
// and the backup restores byte-exact. The volume has a hole the size of a leaf, zero blocks
// inside a data extent, and a short last block, so every rule of how a backup builds its map
// is met. A volume changed since builds other nodes and stores nothing.
func TestHealNodesBuildsLostBlockMapNodesAgain(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	ctx := context.Background()
	const leaf = repo.LeafFanout * 16 << 10 // the bytes one leaf covers at the default block size
	data := randomVolume(41, 3*leaf+5000)
	clear(data[leaf : 2*leaf])          // a hole: the root's second child is zero
	clear(data[leaf/2 : leaf/2+64<<10]) // zero blocks in a data extent
	src := &memSource{data: data, holes: [][2]int64{{leaf, 2 * leaf}}}
	m := f.backup(t, "a", src, nil)
	if m.RootLevel != 1 {
		t.Fatalf("root level %d, want 1 (four leaves)", m.RootLevel)
	}
	changed := &memSource{data: bytes.Clone(data)}
	changed.data[len(data)-1] ^= 1 // the last leaf, so the root, differ

	leafLoc := leafOf(t, f, m)
	rootLoc, ok, err := f.idx.Lookup(m.Root)
	if err != nil || !ok {
		t.Fatalf("the root is not indexed: %v %v", ok, err)
	}
	f.damage(t, rootLoc)
	f.damage(t, leafLoc)

	// The first check only walks the block maps (a node that does not open); the later ones
	// read every pack first (a blob found damaged there, then met by the walk).
	readData := false
	lostNodes := func() map[repo.Address]repo.LostNode {
		t.Helper()
		defer func() { readData = true }()
		rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: readData})
		if err != nil {
			t.Fatal(err)
		}
		return rep.LostNodes()
	}
	lost := lostNodes()
	if ln, ok := lost[m.Root]; len(lost) != 1 || !ok || ln.Level != 1 || ln.FirstLeaf != 0 || ln.Size != int64(len(data)) {
		t.Fatalf("lost nodes %+v, want only the root at level 1 over the whole volume", lost)
	}
	if healed, err := f.r.HealNodes(ctx, changed, lost); err != nil || len(healed) != 0 {
		t.Fatalf("a changed volume healed %v (%v), want nothing", healed, err)
	}
	for round := 1; len(lost) > 0; round++ {
		if round > 2 {
			t.Fatalf("lost nodes left after two rounds: %+v", lost)
		}
		n := len(lost)
		healed, err := f.r.HealNodes(ctx, src, lost)
		if err != nil || len(healed) != n || len(lost) != 0 {
			t.Fatalf("round %d healed %d of %d nodes (%v), %d left", round, len(healed), n, err, len(lost))
		}
		lost = lostNodes()
	}
	f.mustCheck(t)
	if got := f.restore(t, m); !bytes.Equal(got, data) {
		t.Fatal("the healed backup does not restore the volume")
	}
}
