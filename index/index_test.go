package index

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

func openTest(t *testing.T) *Index {
	t.Helper()
	ix, err := Open(filepath.Join(t.TempDir(), "index"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	return ix
}

func addr(i int) repo.Address {
	var a repo.Address
	copy(a[:], fmt.Sprintf("addr-%08d", i))
	return a
}

func TestPacksAndDrop(t *testing.T) {
	ix := openTest(t)
	p1, p2 := repo.PackID{1}, repo.PackID{2}
	e := func(i int, p repo.PackID) repo.PackEntry {
		return repo.PackEntry{Addr: addr(i), Location: repo.Location{Pack: p, Offset: uint32(i), Length: 10, PlainLen: 20, Type: repo.BlobData}}
	}
	if err := ix.AddPack(p1, 100, []repo.PackEntry{e(1, p1), e(2, p1)}); err != nil {
		t.Fatal(err)
	}
	// blob 2 is repacked into p2: p1's drop must not forget it
	if err := ix.AddPack(p2, 50, []repo.PackEntry{e(2, p2)}); err != nil {
		t.Fatal(err)
	}
	if err := ix.DropPack(p1, []repo.Address{addr(1), addr(2)}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ix.Lookup(addr(1)); ok {
		t.Error("blob of a dropped pack still indexed")
	}
	if loc, ok, _ := ix.Lookup(addr(2)); !ok || loc.Pack != p2 {
		t.Errorf("repacked blob: %v %v", loc, ok)
	}
	var packs []repo.PackID
	ix.Packs(func(id repo.PackID, _ int64) error { packs = append(packs, id); return nil })
	if len(packs) != 1 || packs[0] != p2 {
		t.Errorf("packs after drop: %v", packs)
	}
	if has, _ := ix.HasPack(p1); has {
		t.Error("HasPack of a dropped pack")
	}
}

// A copy marked damaged is reported at its own location only, across a reopen, until the
// block is stored again elsewhere: a backup then reuses the new copy. Reads still find the
// marked copy (a copy judged by reads that went wrong on the way must stay readable).
func TestDamagedMarks(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	ix, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ix.Close() }()
	p1, p2 := repo.PackID{1}, repo.PackID{2}
	e := func(i int, p repo.PackID, off uint32) repo.PackEntry {
		return repo.PackEntry{Addr: addr(i), Location: repo.Location{Pack: p, Offset: off, Length: 10, PlainLen: 20, Type: repo.BlobData}}
	}
	if err := ix.AddPack(p1, 100, []repo.PackEntry{e(1, p1, 0), e(2, p1, 10)}); err != nil {
		t.Fatal(err)
	}
	loc1, _, _ := ix.Lookup(addr(1))
	if ix.Damaged(addr(1), loc1) {
		t.Fatal("a copy never marked is damaged")
	}
	if err := ix.MarkDamaged(addr(1), loc1); err != nil {
		t.Fatal(err)
	}
	if !ix.Damaged(addr(1), loc1) || ix.Damaged(addr(1), repo.Location{Pack: p1, Offset: 10}) || ix.Damaged(addr(2), loc1) {
		t.Error("the mark is not of that copy alone")
	}
	if got, ok, _ := ix.Lookup(addr(1)); !ok || got != loc1 {
		t.Errorf("a marked copy's lookup: %v %v, want it still found at %v", got, ok, loc1)
	}
	ix.Close()
	if ix, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	if !ix.Damaged(addr(1), loc1) {
		t.Error("the mark is gone after a reopen")
	}
	// Stored again elsewhere (a backup, or repair's heal): the new copy is not marked, nor is
	// the mark kept.
	if err := ix.AddPack(p2, 50, []repo.PackEntry{e(1, p2, 0)}); err != nil {
		t.Fatal(err)
	}
	loc2, _, _ := ix.Lookup(addr(1))
	if loc2.Pack != p2 || ix.Damaged(addr(1), loc2) || ix.Damaged(addr(1), loc1) {
		t.Errorf("after the block was stored again at %v: damaged there %v, at the old copy %v; want neither", loc2, ix.Damaged(addr(1), loc2), ix.Damaged(addr(1), loc1))
	}
	n := 0
	if err := ix.scan(damagedPrefix, false, func([]byte, []byte) error { n++; return nil }); err != nil || n != 0 {
		t.Errorf("marks left in the index: %d (%v)", n, err)
	}
}

// A reader marks a copy damaged while a backup of the same process stores the block again
// elsewhere, in either order or at once: the new copy is never taken for damaged (a backup would
// store it yet again, and nothing is lost either way, but a mark must judge only the copy it
// was made for). A mark made after the new copy landed stays for the old location only, as after
// a crash between AddPack's write and its clearing of the marks.
func TestDamagedMarkAndAStoreElsewhereAtOnce(t *testing.T) {
	ix := openTest(t)
	e := func(i int, p repo.PackID) repo.PackEntry {
		return repo.PackEntry{Addr: addr(i), Location: repo.Location{Pack: p, Offset: 0, Length: 10, PlainLen: 20, Type: repo.BlobData}}
	}
	for i := range 200 {
		old, fresh := repo.PackID{1, byte(i), byte(i >> 8)}, repo.PackID{2, byte(i), byte(i >> 8)}
		if err := ix.AddPack(old, 100, []repo.PackEntry{e(i, old)}); err != nil {
			t.Fatal(err)
		}
		damaged, _, _ := ix.Lookup(addr(i))
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			if err := ix.MarkDamaged(addr(i), damaged); err != nil {
				t.Error(err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := ix.AddPack(fresh, 100, []repo.PackEntry{e(i, fresh)}); err != nil {
				t.Error(err)
			}
		}()
		wg.Wait()
		now, ok, _ := ix.Lookup(addr(i))
		if !ok || now.Pack != fresh {
			t.Fatalf("round %d: the block is at %v, want the new copy", i, now)
		}
		if ix.Damaged(addr(i), now) {
			t.Fatalf("round %d: the new copy is taken for damaged", i)
		}
	}
}

// LookupBatch answers each address as Lookup does, in order: a stored blob, a repacked one,
// one whose pack was dropped, one never stored.
func TestLookupBatch(t *testing.T) {
	ix := openTest(t)
	p1, p2 := repo.PackID{1}, repo.PackID{2}
	e := func(i int, p repo.PackID) repo.PackEntry {
		return repo.PackEntry{Addr: addr(i), Location: repo.Location{Pack: p, Offset: uint32(i), Length: 10, PlainLen: 20, Type: repo.BlobData}}
	}
	if err := ix.AddPack(p1, 100, []repo.PackEntry{e(1, p1), e(2, p1), e(3, p1)}); err != nil {
		t.Fatal(err)
	}
	if err := ix.AddPack(p2, 50, []repo.PackEntry{e(2, p2), e(4, p2)}); err != nil {
		t.Fatal(err)
	}
	if err := ix.DropPack(p1, []repo.Address{addr(1)}); err != nil {
		t.Fatal(err)
	}
	addrs := []repo.Address{addr(4), addr(1), addr(2), addr(9), addr(3), addr(4)}
	locs, found := make([]repo.Location, len(addrs)), make([]bool, len(addrs))
	if err := ix.LookupBatch(addrs, locs, found); err != nil {
		t.Fatal(err)
	}
	for i, a := range addrs {
		loc, ok, err := ix.Lookup(a)
		if err != nil {
			t.Fatal(err)
		}
		if found[i] != ok || locs[i] != loc {
			t.Errorf("address %d: batch says %v %+v, Lookup %v %+v", i, found[i], locs[i], ok, loc)
		}
	}
	if want := []bool{true, false, true, false, false, true}; fmt.Sprint(found) != fmt.Sprint(want) {
		t.Errorf("found %v, want %v", found, want)
	}
	if locs[2].Pack != p2 || locs[0].Offset != 4 {
		t.Errorf("locations %+v", locs)
	}
	if err := ix.LookupBatch(addrs, locs[:2], found); err == nil {
		t.Error("LookupBatch with too little room for its answers: no error")
	}
}

func TestRecords(t *testing.T) {
	ix := openTest(t)
	v := &Volume{ID: "v1", Name: "vm1", Path: "/dev/vm1", Project: "p", Status: VolumeAvailable}
	if err := ix.CreateVolume(v); err != nil {
		t.Fatal(err)
	}
	dup := *v
	dup.ID = "v2"
	if err := ix.CreateVolume(&dup); !errors.Is(err, ErrExists) {
		t.Fatalf("same name and path: %v", err)
	}
	if got, err := ix.VolumeByName("p", "vm1"); err != nil || got.ID != "v1" {
		t.Fatalf("by name: %v %v", got, err)
	}
	if _, err := ix.UpdateVolume("v1", func(v *Volume) error { v.Name = "renamed"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.VolumeByName("p", "vm1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old name still resolves: %v", err)
	}
	// A volume the repository records under a name another volume has is learned; the name
	// then names both, and each rename or delete takes only its own id from the name.
	other := &Volume{ID: "v3", Name: "renamed", Path: "/dev/vm3", Project: "p", Status: VolumeAvailable}
	if err := ix.CreateVolume(other); !errors.Is(err, ErrExists) {
		t.Fatalf("create under a taken name: %v", err)
	}
	if _, err := ix.UpdateVolume("v1", func(v *Volume) error { v.Name = "x"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.UpdateVolumeAsRecorded("v1", func(v *Volume) error { v.Name = "renamed"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := ix.LearnVolume(other); err != nil {
		t.Fatalf("learn under a taken name: %v", err)
	}
	if vs, err := ix.VolumesByName("p", "renamed"); err != nil || len(vs) != 2 || vs[0].ID != "v1" || vs[1].ID != "v3" {
		t.Fatalf("volumes of one name: %v %v", vs, err)
	}
	if _, err := ix.VolumeByName("p", "renamed"); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("by a name two volumes have: %v, want ErrAmbiguous", err)
	}
	if _, err := ix.UpdateVolume("v3", func(v *Volume) error { v.Name = "x"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.UpdateVolume("v3", func(v *Volume) error { v.Name = "renamed"; return nil }); !errors.Is(err, ErrExists) {
		t.Fatalf("rename to a taken name: %v", err)
	}
	if _, err := ix.UpdateVolumeAsRecorded("v3", func(v *Volume) error { v.Name = "renamed"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := ix.DeleteVolume("v3"); err != nil {
		t.Fatal(err)
	}
	if got, err := ix.VolumeByName("p", "renamed"); err != nil || got.ID != "v1" {
		t.Fatalf("by name after the other of that name went: %v %v", got, err)
	}
	if _, err := ix.VolumeByName("p", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a name nothing has now: %v", err)
	}
	// So is one at a path another volume has.
	there := &Volume{ID: "v4", Name: "elsewhere", Path: "/dev/vm1", Project: "q", Status: VolumeAvailable}
	if err := ix.CreateVolume(there); !errors.Is(err, ErrExists) {
		t.Fatalf("create at a taken path: %v", err)
	}
	if err := ix.LearnVolume(there); err != nil {
		t.Fatalf("learn at a taken path: %v", err)
	}
	if vs, err := ix.VolumesByPath("/dev/vm1"); err != nil || len(vs) != 2 {
		t.Fatalf("volumes at one path: %v %v", vs, err)
	}
	if _, err := ix.VolumeByPath("/dev/vm1"); !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("by a path two volumes have: %v, want ErrAmbiguous", err)
	}
	if err := ix.DeleteVolume("v4"); err != nil {
		t.Fatal(err)
	}
	if got, err := ix.VolumeByPath("/dev/vm1"); err != nil || got.ID != "v1" {
		t.Fatalf("by path after the other there went: %v %v", got, err)
	}
	base := time.Now()
	for i, id := range []string{"b2", "b1", "b3"} {
		if err := ix.CreateBackup(&Backup{ID: id, VolumeID: "v1", CreatedAt: base.Add(time.Duration([]int{2, 1, 3}[i]) * time.Second)}); err != nil {
			t.Fatal(err)
		}
	}
	bs, _ := ix.VolumeBackups("v1")
	if len(bs) != 3 || bs[0].ID != "b1" || bs[2].ID != "b3" {
		t.Fatalf("volume backups not in creation order: %v", ids(bs))
	}
	if err := ix.DeleteBackup("b1"); err != nil {
		t.Fatal(err)
	}
	if bs, _ := ix.VolumeBackups("v1"); len(bs) != 2 {
		t.Fatalf("after delete: %v", ids(bs))
	}
	if err := ix.DeleteVolume("v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.VolumeByPath("/dev/vm1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("path of a deleted volume resolves: %v", err)
	}
}

// DeleteBackupIf decides on the record as it is in its transaction: a refusal leaves the
// record (and the cached list) as it was, and the refusal is the error.
func TestDeleteBackupIf(t *testing.T) {
	ix := openTest(t)
	if err := ix.CreateBackup(&Backup{ID: "b1", VolumeID: "v1", Status: BackupCreating, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Backups(); err != nil { // load the cache, which a refusal must leave intact
		t.Fatal(err)
	}
	if _, err := ix.UpdateBackup("b1", func(b *Backup) error { b.Status = BackupAvailable; return nil }); err != nil {
		t.Fatal(err)
	}
	errCommitted := errors.New("committed")
	onlyCreating := func(b *Backup) error {
		if b.Status != BackupCreating {
			return errCommitted
		}
		return nil
	}
	if err := ix.DeleteBackupIf("b1", onlyCreating); !errors.Is(err, errCommitted) {
		t.Fatalf("conditional delete of an available record: %v, want the refusal", err)
	}
	if all, err := ix.Backups(); err != nil || len(all) != 1 || all[0].Status != BackupAvailable {
		t.Fatalf("after a refused delete: %v %v", ids(all), err)
	}
	if bs, _ := ix.VolumeBackups("v1"); len(bs) != 1 {
		t.Fatalf("a refused delete dropped the volume's entry: %v", ids(bs))
	}
	if err := ix.DeleteBackupIf("b1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Backup("b1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after an allowed delete: %v", err)
	}
	if err := ix.DeleteBackupIf("b1", onlyCreating); !errors.Is(err, ErrNotFound) {
		t.Fatalf("conditional delete of a missing record: %v", err)
	}
}

func ids(bs []*Backup) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func TestOneProcessAtATime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	ix, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if _, err := Open(dir); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

// A job that outlives its gateway's shutdown may sync the index after it closed: that is an
// error, not a panic in Badger (whose Sync dereferences what its Close released) that takes
// the process down mid-shutdown (found by review).
func TestSyncAfterCloseIsAnError(t *testing.T) {
	ix, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if err := ix.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sync after Close: %v, want ErrClosed", err)
	}
	if err := ix.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// GoneVolumes finds the volumes without a record that have backups, each with the backups the
// filter keeps, oldest first; a volume with a record is never one.
func TestGoneVolumes(t *testing.T) {
	ix := openTest(t)
	if err := ix.CreateVolume(&Volume{ID: "live", Name: "live", Status: VolumeAvailable}); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	for i, b := range []Backup{{ID: "b1", VolumeID: "live"}, {ID: "b2", VolumeID: "gone", Project: "p1"},
		{ID: "b3", VolumeID: "gone", Project: "p2"}, {ID: "b4", VolumeID: "gone", Project: "p1"}} {
		b.CreatedAt = base.Add(time.Duration(4-i) * time.Hour)
		if err := ix.CreateBackup(&b); err != nil {
			t.Fatal(err)
		}
	}
	gone, err := ix.GoneVolumes(func(b *Backup) bool { return b.Project == "p1" })
	if err != nil || len(gone) != 1 || gone[0].ID != "gone" || len(gone[0].Backups) != 2 ||
		gone[0].Backups[0].ID != "b4" || gone[0].Backups[1].ID != "b2" {
		t.Fatalf("GoneVolumes(p1) = %+v, %v; want volume gone with b4, b2", gone, err)
	}
	if gone, err := ix.GoneVolumes(func(b *Backup) bool { return b.Project == "p3" }); err != nil || len(gone) != 0 {
		t.Fatalf("GoneVolumes(p3) = %+v, %v; want none", gone, err)
	}
}

// DeleteSnapshotIf removes a record only when may allows it on the record as it is in the
// transaction, and says when there is none.
func TestDeleteSnapshotIf(t *testing.T) {
	ix := openTest(t)
	sn := &Snapshot{ID: "s1", VolumeID: "v1", Status: SnapshotAvailable}
	if err := ix.CreateSnapshot(sn); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.UpdateSnapshot("s1", func(s *Snapshot) error { s.Status = SnapshotBackingUp; return nil }); err != nil {
		t.Fatal(err)
	}
	busy := errors.New("busy")
	onlyAvailable := func(s *Snapshot) error {
		if s.Status != SnapshotAvailable {
			return busy
		}
		return nil
	}
	if err := ix.DeleteSnapshotIf("s1", onlyAvailable); !errors.Is(err, busy) {
		t.Fatalf("delete of a snapshot being backed up: %v, want may's error", err)
	}
	if _, err := ix.Snapshot("s1"); err != nil {
		t.Fatalf("the snapshot may refused to delete: %v", err)
	}
	if _, err := ix.UpdateSnapshot("s1", func(s *Snapshot) error { s.Status = SnapshotAvailable; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := ix.DeleteSnapshotIf("s1", onlyAvailable); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Snapshot("s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the deleted snapshot: %v, want not found", err)
	}
	if err := ix.DeleteSnapshotIf("s1", onlyAvailable); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete of no snapshot: %v, want not found", err)
	}
}
