package repo_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/repo"
)

// A backup whose block map root, one of its leaves and one data block under that leaf are lost
// (their copies damaged) is built again from the volume that still holds its blocks, and
// restores byte-exact. The volume has a hole the size of a leaf, zero blocks inside a data
// extent, and a short last block, so every rule of how a backup builds its map is met. A volume
// changed since builds other nodes and stores nothing.
//
// A check that reads every pack first marks every damaged copy, so one round heals it all: the
// root, the leaf below it that the check could not see (marked damaged), and, through Heal, the
// data block below that. A check that only walks the block maps sees the root alone; the leaf
// below, never read, is not known lost, and a second round (a check that reads the packs) heals
// the rest. A pack that is gone (the backup's only one here) loses them all at once: no read
// marks its copies, and one round heals everything all the same, the blobs below the root
// being in a pack the backend lacks.
func TestHealNodesBuildsLostBlockMapNodesAgain(t *testing.T) {
	for _, c := range []struct {
		name     string
		readData bool
		gone     bool
		rounds   int
	}{{"a check that reads the packs", true, false, 1}, {"a check that walks the maps", false, false, 2}, {"a pack gone", true, true, 1}} {
		t.Run(c.name, func(t *testing.T) {
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
			if c.gone && len(packFiles(f.dir)) != 1 {
				t.Fatalf("the backup is in %d packs, want 1", len(packFiles(f.dir)))
			}
			changed := &memSource{data: bytes.Clone(data)}
			changed.data[len(data)-1] ^= 1 // the last leaf, so the root, differ

			leafLoc := leafOf(t, f, m)
			rootLoc, ok, err := f.idx.Lookup(m.Root)
			if err != nil || !ok {
				t.Fatalf("the root is not indexed: %v %v", ok, err)
			}
			_, blocks := blobsOf(t, f, m)
			block := blocks[0] // a data block of the first leaf, leafOf's
			blockLoc, ok, err := f.idx.Lookup(block)
			if err != nil || !ok {
				t.Fatalf("the data block is not indexed: %v %v", ok, err)
			}
			if c.gone {
				if rootLoc.Pack != leafLoc.Pack || rootLoc.Pack != blockLoc.Pack {
					t.Fatal("the backup's root, leaf and block are in different packs")
				}
				if err := os.Remove(filepath.Join(f.dir, "repo", filepath.FromSlash(rootLoc.Pack.Key()))); err != nil {
					t.Fatal(err)
				}
			} else {
				f.damage(t, rootLoc)
				f.damage(t, leafLoc)
				f.damage(t, blockLoc)
			}

			check := func() *repo.CheckReport {
				t.Helper()
				rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: c.readData})
				if err != nil {
					t.Fatal(err)
				}
				c.readData = true // the later checks read the packs
				return rep
			}
			rep := check()
			lost := rep.LostNodes()
			if ln, ok := lost[m.Root]; len(lost) != 1 || !ok || ln.Level != 1 || ln.FirstLeaf != 0 || ln.Size != int64(len(data)) {
				t.Fatalf("lost nodes %+v, want only the root at level 1 over the whole volume", lost)
			}
			n := len(rep.LostData()) // the read of the packs saw the damaged block; the walk did not
			if healed, err := f.r.HealNodes(ctx, changed, lost, rep.LostData()); err != nil || len(healed) != 0 || len(rep.LostData()) != n {
				t.Fatalf("a changed volume healed %v (%v) and found %d more data blocks lost, want nothing", healed, err, len(rep.LostData())-n)
			}
			rounds := 0
			for ; len(rep.LostNodes())+len(rep.LostData()) > 0; rounds++ {
				if rounds == 3 {
					t.Fatalf("left after three rounds: nodes %+v, data %d", rep.LostNodes(), len(rep.LostData()))
				}
				lostData := rep.LostData()
				if _, err := f.r.HealNodes(ctx, src, rep.LostNodes(), lostData); err != nil || len(rep.LostNodes()) != 0 {
					t.Fatalf("round %d: %v, %d nodes left", rounds+1, err, len(rep.LostNodes()))
				}
				if _, err := f.r.Heal(ctx, src, lostData); err != nil || len(lostData) != 0 {
					t.Fatalf("round %d: %v, %d data blocks left", rounds+1, err, len(lostData))
				}
				rep = check()
			}
			if rounds != c.rounds {
				t.Errorf("healed in %d rounds, want %d", rounds, c.rounds)
			}
			if c.gone { // the index still names the pack that is gone, until a sync forgets it
				if len(rep.Lost) != 0 {
					t.Fatalf("after healing, the check still finds lost ranges: %+v", rep)
				}
			} else {
				f.mustCheck(t)
			}
			if got := f.restore(t, m); !bytes.Equal(got, data) {
				t.Fatal("the healed backup does not restore the volume")
			}
		})
	}
}

// A lost block map node that no volume builds is forgotten by the index (repair's
// ForgetDamaged), so that the next backup that builds it stores it again. gc must not take
// that for "unreachable": a committed manifest still reaches the node, so gc refuses and
// deletes nothing, not even the packs only a deleted backup used, until the node is back;
// once HealNodes stores it from the volume, gc runs, reclaims those, and the backup restores.
func TestGCAfterRepairForgotALostNodeDeletesNothing(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	ctx := context.Background()
	src := &memSource{data: randomVolume(43, 8<<20)}
	m := f.backup(t, "a", src, nil)
	gone := f.backup(t, "b", &memSource{data: randomVolume(44, 4<<20)}, nil)
	if err := f.r.DeleteManifest(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	rootLoc, ok, err := f.idx.Lookup(m.Root)
	if err != nil || !ok {
		t.Fatalf("the root is not indexed: %v %v", ok, err)
	}
	f.damage(t, rootLoc)
	rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	lost := map[repo.Address]struct{}{}
	for a := range rep.LostNodes() {
		lost[a] = struct{}{}
	}
	if _, ok := lost[m.Root]; !ok {
		t.Fatalf("the check does not name the lost root: %+v", rep.LostNodes())
	}
	if _, _, err := f.r.ForgetDamaged(ctx, lost); err != nil {
		t.Fatal(err)
	}
	before := len(packFiles(f.dir))
	if _, err := f.r.GC(ctx, repo.GCOptions{}); !errors.Is(err, repo.ErrUnreadableBackup) {
		t.Fatalf("gc with a committed backup's root forgotten: %v, want ErrUnreadableBackup", err)
	}
	if after := len(packFiles(f.dir)); after != before {
		t.Fatalf("gc deleted %d packs while a backup's root was forgotten", before-after)
	}
	rep, err = f.r.Check(ctx, repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if healed, err := f.r.HealNodes(ctx, src, rep.LostNodes(), rep.LostData()); err != nil || len(healed) == 0 {
		t.Fatalf("HealNodes after the forget: %v %v", healed, err)
	}
	st, err := f.r.GC(ctx, repo.GCOptions{})
	if err != nil || st.PacksDeleted == 0 {
		t.Fatalf("gc once the root is back: %+v %v, want the deleted backup's pack reclaimed", st, err)
	}
	if got := f.restore(t, m); !bytes.Equal(got, src.data) {
		t.Fatal("the backup does not restore after the heal and gc")
	}
}

// Lost block map nodes at one place of one geometry (the roots of two backups of one volume,
// damaged at once as when the pack holding them goes) are built once from a volume, not once
// each: HealNodes reads the volume once and stores the root the volume still builds. And a
// lost node a build meets below a top the volume no longer builds (a leaf a changed volume
// still holds) is stored all the same, its address saying it is that node, without a read of
// its own. Before, HealNodes read the whole volume once per lost root, and again for the leaf.
func TestHealNodesBuildsEachPlaceOnce(t *testing.T) {
	for _, c := range []string{"two roots", "a leaf under a changed root"} {
		t.Run(c, func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
			ctx := context.Background()
			const leaf = repo.LeafFanout * 16 << 10
			old := randomVolume(42, 3*leaf)
			a := f.backup(t, "a", &memSource{data: old}, nil)
			now := bytes.Clone(old)
			now[len(now)-1] ^= 1 // the last leaf, so the root, differ; the first leaf is shared
			b := f.backup(t, "b", &memSource{data: now}, nil)
			if a.Root == b.Root || a.RootLevel != 1 {
				t.Fatalf("roots %v and %v at level %d: want two roots at level 1", a.Root, b.Root, a.RootLevel)
			}
			leafLoc := leafOf(t, f, a) // before a's root is damaged
			damaged := []repo.Address{a.Root, b.Root}
			if c != "two roots" {
				damaged = damaged[:1]
				f.damage(t, leafLoc) // b's root still reaches it: the check sees it lost
			}
			for _, root := range damaged {
				loc, ok, err := f.idx.Lookup(root)
				if err != nil || !ok {
					t.Fatalf("a root is not indexed: %v %v", ok, err)
				}
				f.damage(t, loc)
			}
			rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			lost := rep.LostNodes()
			if _, ok := lost[a.Root]; !ok || len(lost) != 2 {
				t.Fatalf("lost nodes %+v, want a's root and one more", lost)
			}
			src := &countingSource{memSource: &memSource{data: now}}
			if _, err := f.r.HealNodes(ctx, src, lost, rep.LostData()); err != nil {
				t.Fatal(err)
			}
			if src.read.Load() > int64(len(now)) {
				t.Errorf("HealNodes read %d bytes of a %d-byte volume: want one read of it", src.read.Load(), len(now))
			}
			if _, ok := lost[a.Root]; !ok || len(lost) != 1 {
				t.Fatalf("left lost %+v: want a's root alone (the volume changed since a)", lost)
			}
			if got := f.restore(t, b); !bytes.Equal(got, now) {
				t.Fatal("b does not restore after the heal")
			}
			rep, err = f.r.Check(ctx, repo.CheckOptions{ReadData: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := rep.LostNodes()[a.Root]; !ok || len(rep.LostNodes()) != 1 {
				t.Fatalf("lost after the heal: %+v, want a's root alone", rep.LostNodes())
			}
		})
	}
}

// A damaged copy a check found, whose data a backup stored again after the check (it met the
// mark), is not forgotten by the repair that acts on that check: the index reads the new,
// sound copy, and forgetting it lost the block for every backup that needs it.
func TestForgetDamagedKeepsACopyStoredAgain(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	vol := randomVolume(45, 1<<20)
	m := f.backup(t, "a", &memSource{data: vol}, nil)
	addr := f.firstDataBlock(t, m)
	f.damage(t, lookup(t, f, addr))
	rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rep.LostData()[addr]; !ok {
		t.Fatalf("the check does not name the damaged block: %+v", rep)
	}
	f.backup(t, "b", &memSource{data: vol}, nil) // stores the marked block again
	if n, _, err := f.r.ForgetDamaged(ctx, rep.LostData()); err != nil || n != 0 {
		t.Fatalf("ForgetDamaged after the block was stored again: %d forgotten, %v; want none", n, err)
	}
	if got := f.restore(t, m); !bytes.Equal(got, vol) {
		t.Fatal("backup a does not restore from the copy stored again")
	}
	// Without the new copy it is forgotten.
	f.damage(t, lookup(t, f, addr))
	rep, err = f.r.Check(ctx, repo.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := f.r.ForgetDamaged(ctx, rep.LostData()); err != nil || n != 1 {
		t.Fatalf("ForgetDamaged of a damaged copy: %d forgotten, %v; want it", n, err)
	}
}
