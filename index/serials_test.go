package index

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/repo"
	"github.com/dgraph-io/badger/v4"
)

func TestBlobValue(t *testing.T) {
	for _, c := range []struct {
		serial uint32
		loc    repo.Location
		max    int // longest value allowed: a block's stays at 14 bytes up to 2^21 packs
	}{
		{1, repo.Location{Offset: 0, Length: 9000, PlainLen: 16384, Type: repo.BlobData}, 8},
		{70_000, repo.Location{Offset: 16 << 20, Length: 16384, PlainLen: 16384, Type: repo.BlobData}, 14},
		{1_000_000, repo.Location{Offset: 15 << 20, Length: 4000, PlainLen: 65536, Type: repo.BlobTree}, 13},
		{math.MaxUint32, repo.Location{Offset: math.MaxUint32, Length: math.MaxUint32, PlainLen: math.MaxUint32, Type: repo.BlobTree}, maxBlobValue},
	} {
		b := encodeBlob(c.serial, c.loc)
		if len(b) > c.max {
			t.Errorf("serial %d %+v: %d bytes, want at most %d", c.serial, c.loc, len(b), c.max)
		}
		serial, loc, ok := decodeBlob(b)
		if !ok || serial != c.serial || loc != c.loc {
			t.Errorf("serial %d %+v: decoded %v %d %+v", c.serial, c.loc, ok, serial, loc)
		}
	}
	// A schema-2 value (pack id, u32s, type) does not decode as one of schema 3 by chance
	// here: Open refuses schema 2 before any value is read.
	for _, bad := range [][]byte{nil, {1}, {0, 0, 0, 0, 1}, {1, 0, 0, 0, 1, 2}, {0xff, 0xff, 0xff, 0xff, 0x10, 0, 0, 0, 1}} {
		if _, _, ok := decodeBlob(bad); ok {
			t.Errorf("%x decoded", bad)
		}
	}
}

func FuzzDecodeBlob(f *testing.F) {
	f.Add(encodeBlob(1, repo.Location{Length: 9000, PlainLen: 16384, Type: repo.BlobData}))
	f.Add(encodeBlob(math.MaxUint32, repo.Location{Offset: math.MaxUint32, Length: 1, PlainLen: 2, Type: repo.BlobTree}))
	f.Add(make([]byte, 29))
	f.Fuzz(func(t *testing.T, b []byte) {
		serial, loc, ok := decodeBlob(b)
		if !ok {
			return
		}
		s2, loc2, ok2 := decodeBlob(encodeBlob(serial, loc))
		if !ok2 || s2 != serial || loc2 != loc {
			t.Fatalf("%x: %d %+v does not survive encoding: %v %d %+v", b, serial, loc, ok2, s2, loc2)
		}
	})
}

func entry(i int, p repo.PackID) repo.PackEntry {
	return repo.PackEntry{Addr: addr(i), Location: repo.Location{Pack: p, Offset: uint32(i), Length: 10, PlainLen: 20, Type: repo.BlobData}}
}

// Packs added from many goroutines at once, some of them twice (an upload and a sync learning
// the same pack), get one serial each and no serial twice; every blob resolves to its pack.
func TestSerialsUnderConcurrency(t *testing.T) {
	ix := openTest(t)
	const packs, perPack = 64, 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*packs)
	for p := range packs {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := repo.PackID{byte(p), 0xaa}
				var es []repo.PackEntry
				for i := range perPack {
					es = append(es, entry(p*perPack+i, id))
				}
				errs <- ix.AddPack(id, int64(p), es)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint32]repo.PackID{}
	for p := range packs {
		id := repo.PackID{byte(p), 0xaa}
		s, ok, err := ix.serialOf(id)
		if err != nil || !ok {
			t.Fatalf("pack %d: serial %v %v", p, ok, err)
		}
		if other, dup := seen[s]; dup {
			t.Fatalf("serial %d given to %s and %s", s, other, id)
		}
		seen[s] = id
	}
	if len(seen) != packs || ix.lastSerial != packs {
		t.Fatalf("%d serials, counter at %d; want %d each", len(seen), ix.lastSerial, packs)
	}
	ix.packs = newPackCache() // resolve through pn/, not the cache
	for i := range packs * perPack {
		want := repo.PackID{byte(i / perPack), 0xaa}
		if loc, ok, err := ix.Lookup(addr(i)); err != nil || !ok || loc != entry(i, want).Location {
			t.Fatalf("blob %d: %+v %v %v", i, loc, ok, err)
		}
	}
	n := 0
	if err := ix.Blobs(func(e repo.PackEntry) error {
		n++
		if e.Pack[1] != 0xaa {
			t.Errorf("blob %x: pack %s", e.Addr[:8], e.Pack)
		}
		return nil
	}); err != nil || n != packs*perPack {
		t.Fatalf("Blobs: %d, %v", n, err)
	}
}

// A dropped pack's serial goes with it and is never given again, also after a reopen; a blob
// entry the drop left behind reads as absent, not as a blob of another pack.
func TestDroppedSerialNotReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	ix, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	p1, p2, p3 := repo.PackID{1}, repo.PackID{2}, repo.PackID{3}
	if err := ix.AddPack(p1, 100, []repo.PackEntry{entry(1, p1), entry(2, p1)}); err != nil {
		t.Fatal(err)
	}
	s1, _, _ := ix.serialOf(p1)
	// blob 2 is left out of the drop: its entry stays behind, naming p1's serial.
	if err := ix.DropPack(p1, []repo.Address{addr(1)}); err != nil {
		t.Fatal(err)
	}
	if err := ix.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(serialKey(s1))
		return err
	}); !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("pn/ of a dropped pack: %v", err)
	}
	if _, ok, err := ix.Lookup(addr(2)); ok || err != nil {
		t.Fatalf("blob left by a dropped pack: found %v, %v", ok, err)
	}
	var left []repo.PackEntry
	_ = ix.Blobs(func(e repo.PackEntry) error { left = append(left, e); return nil })
	if len(left) != 1 || left[0].Pack != (repo.PackID{}) || left[0].Offset != 2 {
		t.Fatalf("Blobs after the drop: %+v", left)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}
	if ix, err = Open(dir); err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	for _, p := range []repo.PackID{p2, p3} {
		if err := ix.AddPack(p, 1, []repo.PackEntry{entry(int(p[0])+10, p)}); err != nil {
			t.Fatal(err)
		}
		if s, _, _ := ix.serialOf(p); s <= s1 {
			t.Fatalf("pack %s got serial %d after %d was dropped", p, s, s1)
		}
	}
	if _, ok, _ := ix.Lookup(addr(2)); ok {
		t.Fatal("blob left by a dropped pack resolves after new packs")
	}
	// A pack learned again keeps its serial: its blobs from before stay valid.
	s2, _, _ := ix.serialOf(p2)
	if err := ix.AddPack(p2, 7, []repo.PackEntry{entry(50, p2)}); err != nil {
		t.Fatal(err)
	}
	if s, _, _ := ix.serialOf(p2); s != s2 {
		t.Fatalf("pack added again: serial %d, was %d", s, s2)
	}
	for _, i := range []int{12, 50} {
		if loc, ok, _ := ix.Lookup(addr(i)); !ok || loc.Pack != p2 {
			t.Fatalf("blob %d of a pack added twice: %+v %v", i, loc, ok)
		}
	}
}

// Two packs whose serials share a cache slot both resolve, whichever is asked first.
func TestPackCacheSlotShared(t *testing.T) {
	ix := openTest(t)
	a, b := repo.PackID{0xa}, repo.PackID{0xb}
	ix.lastSerial = 10
	if err := ix.AddPack(a, 1, []repo.PackEntry{entry(1, a)}); err != nil {
		t.Fatal(err)
	}
	ix.lastSerial = 10 + maxPackCacheSlots
	if err := ix.AddPack(b, 1, []repo.PackEntry{entry(2, b)}); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		for i, want := range []repo.PackID{a, b} {
			if loc, ok, err := ix.Lookup(addr(i + 1)); err != nil || !ok || loc.Pack != want {
				t.Fatalf("blob %d: %+v %v %v", i+1, loc, ok, err)
			}
		}
	}
}

// The cache grows with the serials and keeps what it held.
func TestPackCacheGrows(t *testing.T) {
	ix := openTest(t)
	if n := len(ix.packs.slots); n != minPackCacheSlots {
		t.Fatalf("a new index's cache: %d slots, want %d", n, minPackCacheSlots)
	}
	ix.lastSerial = minPackCacheSlots - 3
	for i := range 6 {
		p := repo.PackID{byte(i), 0xcc}
		if err := ix.AddPack(p, 1, []repo.PackEntry{entry(i, p)}); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(ix.packs.slots); n != 2*minPackCacheSlots {
		t.Fatalf("cache after serial %d: %d slots, want %d", ix.lastSerial, n, 2*minPackCacheSlots)
	}
	for i := range 6 {
		if id, ok := ix.packs.get(minPackCacheSlots - 2 + uint32(i)); !ok || id != (repo.PackID{byte(i), 0xcc}) {
			t.Fatalf("serial %d after growing: %s %v", minPackCacheSlots-2+i, id, ok)
		}
	}
}

// AddPack refuses an entry of another pack rather than index it under the wrong one.
func TestAddPackOtherPacksEntry(t *testing.T) {
	ix := openTest(t)
	if err := ix.AddPack(repo.PackID{1}, 1, []repo.PackEntry{entry(1, repo.PackID{2})}); err == nil {
		t.Fatal("entry of another pack accepted")
	}
}

// An index of schema 2 (pack ids in blob entries) is refused with a *SchemaError, not read.
func TestSchemaTwoRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "index")
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	loc := append(bytes.Repeat([]byte{7}, 16), make([]byte, 13)...)
	if err := db.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("m/schema"), []byte("2")); err != nil {
			return err
		}
		a := addr(1)
		return txn.Set(blobKey(a), loc)
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err = Open(dir)
	var se *SchemaError
	if !errors.Is(err, ErrSchema) || !errors.As(err, &se) || se.Found != "2" || se.Want != schemaVersion {
		t.Fatalf("open of a schema-2 index: %v", err)
	}
	// Refused, the index is closed again: it can be opened (here by Badger) at once.
	db, err = badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(fmt.Errorf("the refused index is still held: %w", err))
	}
	db.Close()
}
