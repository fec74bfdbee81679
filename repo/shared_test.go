package repo_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// gateBackend holds every pack's index object back until the test opens the gate (so no
// other session learns the pack before it is indexed), and can make the first one held fail,
// as a lost upload: the first backup's, held before the second starts.
type gateBackend struct {
	backend.Backend
	gate      chan struct{}
	held      atomic.Int64
	failFirst atomic.Bool
}

var errLostUpload = errors.New("injected: the upload was lost")

func (x *gateBackend) Put(ctx context.Context, key string, data []byte) error {
	if strings.HasPrefix(key, "packindex/") {
		n := x.held.Add(1)
		<-x.gate
		if n == 1 && x.failFirst.Load() {
			return errLostUpload
		}
	}
	return x.Backend.Put(ctx, key, data)
}

// sharedRun backs up vol twice at once on one repository: a first, its one pack held at the
// index; then b, which finds a's blocks in that pack. When b waits for a's upload, between
// (if set) runs and the gate opens. It returns both backups' results and errors.
func sharedRun(t *testing.T, x *gateBackend, f *fixture, vol []byte, srcB *memSource, between func()) (res [2]repo.WriteResult, errs [2]error) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	write := func(k int, src repo.Source) {
		wg.Go(func() {
			res[k], errs[k] = f.r.Write(ctx, src, repo.WriteOptions{}, func(res repo.WriteResult) error {
				return f.r.PutManifest(ctx, &repo.Manifest{ID: string(rune('a' + k)), VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats})
			})
		})
	}
	waitFor := func(what string, cond func() bool) {
		for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				close(x.gate)
				wg.Wait()
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	write(0, &memSource{data: vol})
	waitFor("a's pack index object", func() bool { return x.held.Load() == 1 })
	write(1, srcB)
	waitFor("b to wait for a's pack", func() bool { return repo.SharedWaitingForTest(f.r) == 1 })
	if between != nil {
		between()
	}
	close(x.gate)
	wg.Wait()
	return res, errs
}

func newGateFixture(t *testing.T) (*gateBackend, *fixture) {
	t.Helper()
	dir := t.TempDir()
	be, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(context.Background(), be, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	x := &gateBackend{Backend: be, gate: make(chan struct{})}
	return x, fixtureOn(t, x, dir, "index", repo.Options{ChunkCacheBytes: 8 << 20})
}

// Two backups of one volume running at once in one process (clones of one image, backed up
// together by a gateway): the second stores none of the data blocks the first is storing; it
// waits for the first's pack to be indexed and commits with blocks in it.
func TestConcurrentBackupsShareWhatTheyPack(t *testing.T) {
	x, f := newGateFixture(t)
	vol := randomBytes(51, 2*repo.LeafFanout*16<<10)
	res, errs := sharedRun(t, x, f, vol, &memSource{data: vol}, nil)
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("backups: %v, %v", errs[0], errs[1])
	}
	blocks := int64(len(vol) / (16 << 10))
	if a, b := res[0].Stats, res[1].Stats; a.NewBlobs < blocks || b.SharedBlobs != blocks || b.NewBlobs > 3 {
		t.Fatalf("a stored %d blobs, b %d and shared %d; want b to share all %d data blocks", a.NewBlobs, b.NewBlobs, b.SharedBlobs, blocks)
	}
	for _, id := range []string{"a", "b"} {
		m, err := f.r.GetManifest(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.restore(t, m); !bytes.Equal(got, vol) {
			t.Fatalf("backup %s differs", id)
		}
	}
	f.mustCheck(t)
	// The only copies are b's tree nodes (not shared: built, not read), with their trailer
	// entries.
	b := res[1].Stats
	if st, err := f.r.GC(context.Background(), repo.GCOptions{DryRun: true}); err != nil || st.CopyBytes > b.NewBytes+45*b.NewBlobs {
		t.Fatalf("gc dry run: %+v, %v; want no copies beyond b's %d tree nodes", st, err, b.NewBlobs)
	}
}

// The first backup's pack is lost (its upload fails): the second reads the blocks it left to
// that pack again from its own volume, stores them, and restores.
func TestConcurrentBackupStoresWhatALostPackHeld(t *testing.T) {
	x, f := newGateFixture(t)
	vol := randomBytes(52, 2*repo.LeafFanout*16<<10)
	x.failFirst.Store(true)
	res, errs := sharedRun(t, x, f, vol, &memSource{data: vol}, nil)
	if !errors.Is(errs[0], errLostUpload) || errs[1] != nil {
		t.Fatalf("backups: %v, %v; want the first to fail with its lost upload, the second to succeed", errs[0], errs[1])
	}
	blocks := int64(len(vol) / (16 << 10))
	if b := res[1].Stats; b.SharedBlobs != 0 || b.NewBlobs < blocks || b.ReadBytes != 2*int64(len(vol)) {
		t.Fatalf("b: %+v; want every data block stored, and read twice", b)
	}
	m, err := f.r.GetManifest(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if got := f.restore(t, m); !bytes.Equal(got, vol) {
		t.Fatal("backup b differs")
	}
	f.mustCheck(t)
}

// A volume that changes before a block is read again (no snapshot) fails the backup, saying
// so, instead of committing a block map that names a block it cannot store.
func TestConcurrentBackupFailsWhenItsVolumeChanged(t *testing.T) {
	x, f := newGateFixture(t)
	vol := randomBytes(53, 2*repo.LeafFanout*16<<10)
	x.failFirst.Store(true)
	srcB := &memSource{data: append([]byte(nil), vol...)}
	_, errs := sharedRun(t, x, f, vol, srcB, func() { srcB.data[100] ^= 0xff })
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "the volume changed while it was backed up") {
		t.Fatalf("second backup: %v", errs[1])
	}
	if _, err := f.r.GetManifest(context.Background(), "b"); err == nil {
		t.Fatal("the failed backup stored a manifest")
	}
}

// stallSource is a memSource whose reads at or past stallAt wait until release is closed.
type stallSource struct {
	memSource
	stallAt int64
	release chan struct{}
	stalled atomic.Bool
}

func (s *stallSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.stallAt {
		s.stalled.Store(true)
		<-s.release
	}
	return s.memSource.ReadAt(p, off)
}

// A backup that meets blocks another one packed into a pack still filling asks for that pack,
// and when the other backup is stuck (on a slow read) does not wait past sharedFlushWait: it
// reads the blocks again and stores them itself, and commits while the other still runs.
func TestConcurrentBackupDoesNotWaitForAStuckPack(t *testing.T) {
	repo.SetSharedFlushWaitForTest(t, 200*time.Millisecond)
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	const leaf = repo.LeafFanout * 16 << 10
	shared := randomBytes(54, leaf)
	slow := &stallSource{memSource: memSource{data: append(append([]byte(nil), shared...), randomBytes(55, leaf)...)}, stallAt: leaf, release: make(chan struct{})}
	done := make(chan error, 1)
	// How far the slow backup has collected: past a leaf, it has also passed that leaf's look
	// for a session waiting on its pack (after which it flushes), so its next look is after
	// the stalled second leaf.
	var collected atomic.Int64
	progress := func(done, _ int64) { collected.Store(done) }
	go func() {
		_, err := f.r.Write(ctx, slow, repo.WriteOptions{Progress: progress}, func(repo.WriteResult) error { return nil })
		done <- err
	}()
	defer func() {
		close(slow.release)
		if err := <-done; err != nil {
			t.Errorf("the slow backup: %v", err)
		}
	}()
	// The slow backup has packed its first leaf, passed its look for waiting sessions, and
	// waits to read its second. Without the last condition the fast backup could ask for the
	// pack before that look, on a loaded machine, and the slow backup flushed it in time (a
	// CI run of 2026-12-07 found that).
	for deadline := time.Now().Add(10 * time.Second); !slow.stalled.Load() || repo.SharedBlobsForTest(f.r) < repo.LeafFanout || collected.Load() < leaf; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the slow backup never packed its first leaf")
		}
	}
	m := f.backup(t, "fast", &memSource{data: shared}, nil)
	if st := m.Stats; st.SharedBlobs != 0 || st.NewBlobs < repo.LeafFanout || st.ReadBytes != 2*leaf {
		t.Fatalf("the fast backup: %+v; want its blocks read again and stored", st)
	}
	if got := f.restore(t, m); !bytes.Equal(got, shared) {
		t.Fatal("the fast backup differs")
	}
}

// Backups of one volume started together (clones of one image, a policy's run) share what
// they pack: each flushes its last pack before it settles what it left to others, and asks
// for a pack another is still filling, so none reads its blocks twice and together they store
// the volume's data about once.
func TestConcurrentBackupsStartedTogetherShare(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	vol := randomVolume(56, 48<<20)
	var wg sync.WaitGroup
	stats := make([]repo.Stats, 4)
	for k := range stats {
		wg.Go(func() {
			res, err := f.r.Write(context.Background(), &memSource{data: vol}, repo.WriteOptions{}, func(repo.WriteResult) error { return nil })
			if err != nil {
				t.Error(err)
			}
			stats[k] = res.Stats
		})
	}
	wg.Wait()
	var stored, shared, read int64
	for _, st := range stats {
		stored += st.NewPlainBytes
		shared += st.SharedBlobs
		read += st.ReadBytes
	}
	data := int64(len(vol)) // what one backup reads: the whole volume (a memSource has no holes)
	if shared == 0 || stored > 2*int64(len(vol)) || read != 4*data {
		t.Fatalf("four backups at once: %d bytes stored (the volume is %d), %d blocks shared, %d read (want %d): %+v", stored, len(vol), shared, read, 4*data, stats)
	}
}

// lateIndex holds the first backup after its dedup check until the second backup's check has
// run (and missed the blocks), and that check until the first backup has returned: the first
// backup's pack is stored, indexed, and its blobs have left the shared registry, between the
// second's check and its packing.
//
// The first backup waits before it packs anything, not only before it indexes its pack: the
// second backup's lock syncs the index from the bucket, and a pack stored by then is indexed
// by that sync (a CI run of 2026-12-07 under -cpu 1 hung when the hold was on AddPack: the
// sync's AddPack waited for a check that comes after it).
type lateIndex struct {
	repo.Index
	calls   atomic.Int64
	aLooked chan struct{} // the first backup's check ran
	bLooked chan struct{} // the second's ran
	aDone   chan struct{} // the first backup returned
}

func (x *lateIndex) LookupBatch(addrs []repo.Address, locs []repo.Location, found []bool) error {
	if err := x.Index.LookupBatch(addrs, locs, found); err != nil {
		return err
	}
	switch x.calls.Add(1) {
	case 1:
		close(x.aLooked)
		select { // bounded, so a change that breaks the order fails the test instead of hanging it
		case <-x.bLooked:
		case <-time.After(30 * time.Second):
		}
	case 2:
		close(x.bLooked)
		select {
		case <-x.aDone:
		case <-time.After(30 * time.Second):
		}
	}
	return nil
}

// A backup whose dedup check missed blocks another backup running at once indexed just after
// (its pack left the shared registry before this one packed them) finds them in the index
// then and does not store them again. Before, the gateway's four clones stored half an image
// twice in some runs.
func TestConcurrentBackupFindsWhatWasIndexedAfterItsCheck(t *testing.T) {
	x := &lateIndex{aLooked: make(chan struct{}), bLooked: make(chan struct{}), aDone: make(chan struct{})}
	f := newFixtureWith(t, repo.InitOptions{}, func(idx repo.Index) repo.Index {
		x.Index = idx
		return x
	})
	ctx := context.Background()
	vol := randomBytes(57, repo.LeafFanout*16<<10) // one leaf: one dedup check per backup
	var res [2]repo.WriteResult
	var errs [2]error
	var wg sync.WaitGroup
	write := func(k int) {
		wg.Go(func() {
			res[k], errs[k] = f.r.Write(ctx, &memSource{data: vol}, repo.WriteOptions{}, func(res repo.WriteResult) error {
				return f.r.PutManifest(ctx, &repo.Manifest{ID: string(rune('a' + k)), VolumeID: "vol", Size: int64(len(vol)), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats})
			})
			if k == 0 {
				close(x.aDone)
			}
		})
	}
	write(0)
	select {
	case <-x.aLooked:
	case <-time.After(10 * time.Second):
		t.Fatal("the first backup never checked its blocks")
	}
	write(1)
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("backups: %v, %v", errs[0], errs[1])
	}
	blocks := int64(repo.LeafFanout)
	if a, b := res[0].Stats, res[1].Stats; a.NewBlobs < blocks || b.SharedBlobs != blocks || b.NewBlobs > 3 {
		t.Fatalf("a stored %d blobs, b %d and shared %d; want b to store none of the %d data blocks", a.NewBlobs, b.NewBlobs, b.SharedBlobs, blocks)
	}
	for _, id := range []string{"a", "b"} {
		m, err := f.r.GetManifest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.restore(t, m); !bytes.Equal(got, vol) {
			t.Fatalf("backup %s differs", id)
		}
	}
	f.mustCheck(t)
}

// A backup that meets blocks of two other backups' packs still filling, both stuck on slow
// reads, waits sharedFlushWait in all, not for ever for the second: the one timer's tick was
// taken by the wait for the first pack, and the wait for the second had none left.
func TestConcurrentBackupDoesNotWaitForTwoStuckPacks(t *testing.T) {
	repo.SetSharedFlushWaitForTest(t, 200*time.Millisecond)
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	const leaf = repo.LeafFanout * 16 << 10
	shared := randomBytes(58, 2*leaf)
	type slowDone struct {
		m    *repo.Manifest
		data []byte
		err  error
	}
	var slows []*stallSource
	done := make(chan slowDone, 2)
	defer func() {
		for _, s := range slows {
			close(s.release)
		}
		for range slows {
			d := <-done
			if d.err != nil {
				t.Errorf("a slow backup: %v", d.err)
			} else if got := f.restore(t, d.m); !bytes.Equal(got, d.data) {
				t.Errorf("slow backup %s differs", d.m.ID)
			}
		}
	}()
	for k := range 2 {
		// Each slow backup packs one leaf of shared, then is stuck reading its second leaf.
		data := append(append([]byte(nil), shared[k*leaf:(k+1)*leaf]...), randomBytes(uint64(60+k), leaf)...)
		s := &stallSource{memSource: memSource{data: data}, stallAt: leaf, release: make(chan struct{})}
		slows = append(slows, s)
		// As in TestConcurrentBackupDoesNotWaitForAStuckPack: past its first leaf, the slow
		// backup has passed that leaf's look for sessions waiting on its pack.
		var collected atomic.Int64
		progress := func(done, _ int64) { collected.Store(done) }
		go func() {
			var m *repo.Manifest
			_, err := f.r.Write(ctx, s, repo.WriteOptions{Progress: progress}, func(res repo.WriteResult) error {
				m = &repo.Manifest{ID: "slow" + itoa(k), VolumeID: "vol", Size: s.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
				return f.r.PutManifest(ctx, m)
			})
			done <- slowDone{m, data, err}
		}()
		// Without the last condition a loaded CI run under -cpu 1 (2026-12-07) let the fast
		// backup ask before that look, and the pack was flushed in time.
		for deadline := time.Now().Add(10 * time.Second); !s.stalled.Load() || repo.SharedBlobsForTest(f.r) < (k+1)*repo.LeafFanout || collected.Load() < leaf; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("slow backup %d never packed its first leaf", k)
			}
		}
	}
	fast := make(chan *repo.Manifest, 1)
	go func() {
		var m *repo.Manifest
		_, err := f.r.Write(ctx, &memSource{data: shared}, repo.WriteOptions{}, func(res repo.WriteResult) error {
			m = &repo.Manifest{ID: "fast", VolumeID: "vol", Size: int64(len(shared)), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
			return f.r.PutManifest(ctx, m)
		})
		if err != nil {
			t.Error(err)
		}
		fast <- m
	}()
	select {
	case m := <-fast:
		if m == nil {
			t.FailNow()
		}
		if st := m.Stats; st.SharedBlobs != 0 || st.ReadBytes != 2*int64(len(shared)) {
			t.Fatalf("the fast backup: %+v; want its blocks read again and stored", st)
		}
		if got := f.restore(t, m); !bytes.Equal(got, shared) {
			t.Fatal("the fast backup differs")
		}
	case <-time.After(10 * time.Second):
		t.Error("the fast backup still waits for the second stuck backup's pack after 10 s (sharedFlushWait is 200 ms)")
		for _, s := range slows {
			close(s.release)
		}
		slows = nil
		for range 2 {
			if d := <-done; d.err == nil {
				if got := f.restore(t, d.m); !bytes.Equal(got, d.data) {
					t.Errorf("slow backup %s differs", d.m.ID)
				}
			}
		}
		<-fast
	}
}
