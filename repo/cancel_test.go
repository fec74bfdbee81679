package repo_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// holdBlob holds every read of one stored blob (its pack and offset) until release is closed
// or the reader's context ends, which then fails the read as a cancelled S3 request does;
// reached is closed when the first read arrives. It hides the local backend's RangeReader, so
// every read is a GetRange.
type holdBlob struct {
	backend.Backend
	loc              repo.Location
	once             sync.Once
	reached, release chan struct{}
}

func (h *holdBlob) GetRange(ctx context.Context, key string, off, n int64) ([]byte, error) {
	if key == h.loc.Pack.Key() && off == int64(h.loc.Offset) {
		h.once.Do(func() { close(h.reached) })
		select {
		case <-h.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return h.Backend.GetRange(ctx, key, off, n)
}

// holdOn opens the repository of f a second time (caches empty, an index of its own) on a
// backend that holds the reads of the blob addr.
func holdOn(t *testing.T, f *fixture, addr repo.Address) (*fixture, *holdBlob) {
	t.Helper()
	loc, ok, err := f.idx.Lookup(addr)
	if err != nil || !ok {
		t.Fatalf("blob %s not in the index (%v, %v)", addr.Short(), ok, err)
	}
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	h := &holdBlob{Backend: be, loc: loc, reached: make(chan struct{}), release: make(chan struct{})}
	return fixtureOn(t, h, f.dir, "index-held", repo.Options{ChunkCacheBytes: 8 << 20}), h
}

// imageFile writes a volume of random bytes to an image file and returns its path.
func imageFile(t *testing.T, seed uint64, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "vol.img")
	if err := os.WriteFile(path, randomVolume(seed, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// backupFile backs up the image file at path as backup id, incremental to parent when it is
// not nil, through r.
func backupFile(ctx context.Context, r *repo.Repository, id, path string, parent *repo.Manifest) (*repo.Manifest, error) {
	src, err := blockio.OpenSource(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	o := repo.WriteOptions{}
	if parent != nil {
		o.Parent = parent.Parent()
	}
	var m *repo.Manifest
	_, err = r.Write(ctx, src, o, func(res repo.WriteResult) error {
		m = &repo.Manifest{ID: id, VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
		return r.PutManifest(ctx, m)
	})
	return m, err
}

// waitInside waits until n goroutines are in a call whose stack holds every one of frames
// (function names as a goroutine dump prints them). With a blob's load held in the backend, a
// reader inside a cache's get for that blob is waiting for that load; nothing else the reader
// does tells the test it has arrived.
func waitInside(t *testing.T, n int, frames ...string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		l := runtime.Stack(buf, true)
		if l == len(buf) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		in := 0
		for _, g := range strings.Split(string(buf[:l]), "\n\n") {
			all := true
			for _, f := range frames {
				all = all && strings.Contains(g, f)
			}
			if all {
				in++
			}
		}
		if in >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines in %v after 30 s, want %d", in, frames, n)
		}
	}
}

// within returns what ch gives, failing the test after 30 s.
func within[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: nothing after 30 s", what)
		panic("unreachable")
	}
}

// A restore that is cancelled while it loads a tree node of a backup (here its root) must not
// fail an incremental backup of the same volume that needs the same node and waits for that
// load: the incremental's context is alive, so it loads the node itself. Before, the node
// cache handed every waiter the cancelled load's error, and the incremental failed with
// "read parent block map: context canceled".
func TestCancelledRestoreDoesNotFailAnIncrementalOfTheSameVolume(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	path := imageFile(t, 41, 8<<20) // two leaves under an interior root
	m, err := backupFile(context.Background(), f.r, "a", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.RootLevel == 0 {
		t.Fatal("the backup's block map is a single leaf; the test wants an interior root")
	}
	vol, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	copy(vol[5<<20:], randomVolume(42, 64<<10)) // the volume changes before its next backup
	if err := os.WriteFile(path, vol, 0o600); err != nil {
		t.Fatal(err)
	}

	g, h := holdOn(t, f, m.Root)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	restored := make(chan error, 1)
	go func() { restored <- g.r.Restore(ctx, m, &memTarget{data: make([]byte, m.Size)}, repo.RestoreOptions{}) }()
	within(t, h.reached, "the restore's load of the root")

	type result struct {
		m   *repo.Manifest
		err error
	}
	backedUp := make(chan result, 1)
	go func() {
		mb, err := backupFile(context.Background(), g.r, "b", path, m)
		backedUp <- result{mb, err}
	}()
	waitInside(t, 1, "repo.(*cache[...]).get(", "repo.(*writeSession).readLeaf(")

	cancel()
	if err := within(t, restored, "the cancelled restore"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled restore: %v, want context canceled", err)
	}
	close(h.release)
	res := within(t, backedUp, "the incremental")
	if res.err != nil {
		t.Fatalf("incremental backup while a restore of its parent was cancelled: %v", res.err)
	}
	if got := f.restore(t, res.m); sha256.Sum256(got) != sha256.Sum256(vol) {
		t.Fatal("the incremental does not restore to the volume it read")
	}
}

// A reader of a backup's image (a mount, an NBD export) that is cancelled while it loads a
// block must not fail another reader of the same block that waits for that load: the other's
// context is alive, so it loads the block itself and gets the block's bytes. Before, the chunk
// cache handed every waiter the cancelled load's error.
func TestCancelledReaderDoesNotFailAnotherReaderOfTheSameBlock(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	path := imageFile(t, 43, 4<<20)
	m, err := backupFile(context.Background(), f.r, "a", path, nil)
	if err != nil {
		t.Fatal(err)
	}
	vol, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := f.firstDataBlock(t, m) // block 0's: the walk goes in order, and no block is a hole

	g, h := holdOn(t, f, first)
	im := g.r.Image(m)
	if _, _, err := im.NextData(context.Background(), 0); err != nil { // the block map cached
		t.Fatal(err)
	}
	const bs = repo.DefaultBlockSize
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cancelled := make(chan error, 1)
	go func() {
		_, err := im.ReadAtContext(ctx, make([]byte, bs), 0)
		cancelled <- err
	}()
	within(t, h.reached, "the first reader's load of block 0")

	p := make([]byte, bs)
	read := make(chan error, 1)
	go func() {
		_, err := im.ReadAtContext(context.Background(), p, 0)
		read <- err
	}()
	waitInside(t, 2, "repo.(*chunkCache).get(")

	cancel()
	if err := within(t, cancelled, "the cancelled reader"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader: %v, want context canceled", err)
	}
	close(h.release)
	if err := within(t, read, "the other reader"); err != nil {
		t.Fatalf("a reader of block 0 while another reader of it was cancelled: %v", err)
	}
	if sha256.Sum256(p) != sha256.Sum256(vol[:bs]) {
		t.Fatal("the other reader got wrong bytes for block 0")
	}
}
