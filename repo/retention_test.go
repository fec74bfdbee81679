package repo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/stack"
	"github.com/cairn-backup/cairn/tests/testutil"
	"github.com/minio/minio-go/v7"
)

// lockedFixture is a repository with object lock on a versitygw bucket created with object
// lock enabled, reached through the same stack (retry, limit) as cairn's.
type lockedFixture struct {
	*fixture
	be     backend.Versioned
	period time.Duration
}

func newLockedFixture(t *testing.T, srv *testutil.S3Server, prefix string, period time.Duration) *lockedFixture {
	t.Helper()
	ctx := context.Background()
	be := openS3(t, srv, srv.Bucket, prefix)
	l := &repo.ObjectLock{Mode: backend.Governance, RetentionSeconds: int64(period / time.Second)}
	if _, err := repo.Init(ctx, be, repo.InitOptions{Compression: repo.CompressNone, ObjectLock: l}); err != nil {
		t.Fatal(err)
	}
	f := fixtureOn(t, be, t.TempDir(), "index", repo.Options{ChunkCacheBytes: 8 << 20})
	return &lockedFixture{fixture: f, be: be.(backend.Versioned), period: period}
}

func openS3(t *testing.T, srv *testutil.S3Server, bucket, prefix string) backend.Backend {
	t.Helper()
	be, err := stack.Open(context.Background(), stack.Config{URL: "s3://" + bucket + "/" + prefix, Endpoint: srv.Endpoint,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	return be
}

// versions returns every version under prefix, by key.
func (f *lockedFixture) versions(t *testing.T, prefix string) map[string][]backend.Version {
	t.Helper()
	out := map[string][]backend.Version{}
	if err := f.be.ListVersions(context.Background(), prefix, func(v backend.Version) error {
		out[v.Key] = append(out[v.Key], v)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// until returns the retain-until date of key's current version.
func (f *lockedFixture) until(t *testing.T, key string) time.Time {
	t.Helper()
	u, err := f.be.RetainUntil(context.Background(), key, "")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// packsOf returns the pack keys holding a backup's blocks alone (those another backup's
// listing did not have).
func packKeys(t *testing.T, f *lockedFixture) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for k := range f.versions(t, "packs/") {
		out[k] = true
	}
	return out
}

// TestObjectLockedGC: every object is locked when written (lock objects are not, and go
// whole); a deleted backup disappears at once but its packs stay, locked, through a gc;
// once their dates pass a gc removes every version of them and of its manifest, and extends
// the dates of what the remaining backup needs; the remaining backup restores and checks clean.
func TestObjectLockedGC(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	// Long enough that b's pack is still locked at the first gc on a loaded machine.
	const period = 6 * time.Second
	f := newLockedFixture(t, srv, "gc", period)
	ctx := context.Background()

	a := &memSource{data: randomVolume(21, 3<<20)}
	ma := f.backup(t, "a", a, nil)
	aPacks := packKeys(t, f)
	b := &memSource{data: randomVolume(22, 3<<20)}
	mb := f.backup(t, "b", b, nil)
	var bPacks []string
	for k := range packKeys(t, f) {
		if !aPacks[k] {
			bPacks = append(bPacks, k)
		}
	}
	if len(bPacks) == 0 {
		t.Fatal("backup b stored no pack of its own")
	}
	for key, vs := range f.versions(t, "") {
		u := f.until(t, key)
		switch {
		case strings.HasPrefix(key, "locks/"):
			t.Errorf("a lock object is left after its release: %s (%d versions)", key, len(vs))
		case strings.HasPrefix(key, "backuplog/"):
			if !u.IsZero() { // a hint, removed by gc after a day: never locked
				t.Errorf("backup log object %s is locked until %v", key, u)
			}
		case u.IsZero():
			t.Errorf("%s was written without a lock", key)
		case time.Until(u) > period+2*time.Second:
			t.Errorf("%s is locked until %v, more than the period from now", key, u)
		}
	}

	if err := f.r.DeleteManifest(ctx, mb.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.r.HasManifest(ctx, mb.ID); err != nil || ok {
		t.Fatalf("after the delete HasManifest = %v, %v; want false", ok, err)
	}
	st := f.gc(t)
	if st.PacksDeleted != 0 || st.PacksLocked < len(bPacks) {
		t.Fatalf("gc while b's packs are locked: %+v; want none deleted, %d kept locked", st, len(bPacks))
	}
	for _, k := range bPacks {
		v := f.versions(t, k)[k]
		if len(v) != 1 {
			t.Fatalf("pack %s: versions %+v after gc, want its one version", k, v)
		}
		if err := f.be.DeleteVersion(ctx, k, v[0].ID); !errors.Is(err, backend.ErrRetained) {
			t.Fatalf("removing the locked pack %s through S3 = %v, want ErrRetained", k, err)
		}
	}
	oldA := map[string]time.Time{}
	for k := range aPacks {
		oldA[k] = f.until(t, k)
	}

	time.Sleep(period + 1500*time.Millisecond)
	dry, err := f.r.GC(ctx, repo.GCOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if dry.PacksDeleted != len(bPacks) || dry.ObjectsExtended == 0 || dry.VersionsRemoved == 0 {
		t.Errorf("dry-run gc after the dates passed: %+v; want it to say what the next gc does", dry)
	}
	for _, k := range bPacks {
		if len(f.versions(t, k)[k]) != 1 {
			t.Fatalf("a dry-run gc removed pack %s", k)
		}
	}
	st = f.gc(t)
	t.Logf("gc after the dates passed: %+v", st)
	if st.PacksDeleted != len(bPacks) || st.PacksLocked != 0 {
		t.Fatalf("gc after the dates passed: %+v; want %d packs deleted", st, len(bPacks))
	}
	if st.ObjectsExtended == 0 || st.VersionsRemoved == 0 {
		t.Fatalf("gc after the dates passed: %+v; want a's objects extended and b's manifest's versions removed", st)
	}
	left := f.versions(t, "")
	for _, k := range bPacks {
		if len(left[k]) != 0 {
			t.Errorf("pack %s: versions %+v left after gc", k, left[k])
		}
	}
	if v := left["manifests/"+mb.ID]; len(v) != 0 {
		t.Errorf("b's manifest: versions %+v left after gc", v)
	}
	for k, before := range oldA {
		if after := f.until(t, k); !after.After(before) || time.Until(after) < period/2 {
			t.Errorf("pack %s of a: retain-until %v before gc, %v after; want it extended to about the period from now", k, before, after)
		}
	}
	if got := f.restore(t, ma); !bytes.Equal(got, a.data) {
		t.Fatal("a differs after gc")
	}
	f.mustCheck(t)
	// Right after, nothing needs extending.
	if st := f.gc(t); st.ObjectsExtended != 0 || st.PacksDeleted != 0 {
		t.Errorf("a second gc at once: %+v; want nothing extended or deleted", st)
	}
}

// TestObjectLockedGCLeavesTheBackupLogUnlocked: the backup log is exempt from object lock
// (a hint, removed by gc after a day), and gc's extend pass, which locks every object in use
// for another period, leaves it unlocked too.
func TestObjectLockedGCLeavesTheBackupLogUnlocked(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	// Long enough that nothing else is due for an extension at the gc, however loaded the machine.
	f := newLockedFixture(t, srv, "log", time.Minute)
	f.backup(t, "a", &memSource{data: randomVolume(41, 1<<20)}, nil)
	logs := f.versions(t, "backuplog/")
	if len(logs) == 0 {
		t.Fatal("the backup wrote no backup log object")
	}
	st := f.gc(t)
	if st.ObjectsExtended != 0 {
		t.Errorf("gc right after the backup extended %d objects, want none (the log is exempt, the rest locked for the period)", st.ObjectsExtended)
	}
	for key := range logs {
		if u := f.until(t, key); !u.IsZero() {
			t.Errorf("after gc, backup log object %s is locked until %v", key, u)
		}
	}
}

// TestObjectLockedRepackWaits: a mostly dead pack is repacked at once, but the old pack stays
// until its date, and a later gc removes it.
func TestObjectLockedRepackWaits(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	const period = 5 * time.Second
	f := newLockedFixture(t, srv, "repack", period)
	ctx := context.Background()
	base := randomVolume(31, 4<<20)
	mA := f.backup(t, "a", &memSource{data: base}, nil)
	changed := append([]byte(nil), base...)
	copy(changed[:3<<20], randomVolume(32, 3<<20))
	mB := f.backup(t, "b", &memSource{data: changed}, mA)
	if err := f.r.DeleteManifest(ctx, mA.ID); err != nil {
		t.Fatal(err)
	}
	before := packKeys(t, f)
	st := f.gc(t)
	if st.PacksRepacked == 0 || st.PacksDeleted != 0 || st.BytesFreed != 0 {
		t.Fatalf("gc with a mostly dead locked pack: %+v; want it repacked, nothing deleted yet", st)
	}
	for k := range before {
		if !packKeys(t, f)[k] {
			t.Fatalf("pack %s went while locked", k)
		}
	}
	if got := f.restore(t, mB); !bytes.Equal(got, changed) {
		t.Fatal("b differs after the repack")
	}
	time.Sleep(period + 1500*time.Millisecond)
	st = f.gc(t)
	if st.PacksDeleted == 0 || st.PacksRepacked != 0 {
		t.Fatalf("gc after the old pack's date: %+v; want it deleted, nothing repacked again", st)
	}
	if got := f.restore(t, mB); !bytes.Equal(got, changed) {
		t.Fatal("b differs after gc")
	}
	f.mustCheck(t)
}

// TestObjectLockInit: object lock is refused, with one line, where the store cannot lock; a
// locked repository's config says so (a newer version, so an older cairn refuses it), and
// one without keeps the old format byte for byte.
func TestObjectLockInit(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	srv.CreateBucket("plain")
	ctx := context.Background()
	l := &repo.ObjectLock{Mode: backend.Compliance, RetentionSeconds: 60}

	dir, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, be := range map[string]backend.Backend{"directory": dir, "plain bucket": openS3(t, srv, "plain", "p")} {
		_, err := repo.Init(ctx, be, repo.InitOptions{ObjectLock: l})
		if !errors.Is(err, repo.ErrNoObjectLock) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Init with object lock = %v, want ErrNoObjectLock in one line", name, err)
		}
		if _, serr := be.Stat(ctx, "config"); !errors.Is(serr, backend.ErrNotFound) {
			t.Errorf("%s: a refused Init wrote a config (%v)", name, serr)
		}
	}
	for _, bad := range []repo.ObjectLock{{Mode: "forever", RetentionSeconds: 60}, {Mode: backend.Governance}} {
		if _, err := repo.Init(ctx, openS3(t, srv, srv.Bucket, "bad"), repo.InitOptions{ObjectLock: &bad}); !errors.Is(err, repo.ErrInvalidOption) {
			t.Errorf("Init with %+v = %v, want ErrInvalidOption", bad, err)
		}
	}

	config := func(be backend.Backend) map[string]any {
		rc, err := be.Get(ctx, "config")
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		var m map[string]any
		if err := json.NewDecoder(rc).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	locked := openS3(t, srv, srv.Bucket, "locked")
	cfg, err := repo.Init(ctx, locked, repo.InitOptions{ObjectLock: l})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Version != repo.LockedConfigVersion || cfg.ObjectLock == nil || *cfg.ObjectLock != *l {
		t.Errorf("locked config %+v", cfg)
	}
	if m := config(locked); m["version"] != float64(repo.LockedConfigVersion) || m["object_lock"] == nil {
		t.Errorf("stored locked config: version %v, object_lock %v", m["version"], m["object_lock"])
	}
	plain := openS3(t, srv, srv.Bucket, "unlocked")
	if _, err := repo.Init(ctx, plain, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if m := config(plain); m["version"] != float64(repo.FormatVersion) || m["object_lock"] != nil {
		t.Errorf("stored config without object lock: version %v, object_lock %v", m["version"], m["object_lock"])
	}
	// Opening a locked repository through a store that cannot lock is refused for writing,
	// allowed read-only.
	idx, err := index.Open(filepath.Join(t.TempDir(), "index"))
	if err != nil {
		t.Fatal(err)
	}
	defer idx.Close()
	unlockedView, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rc, err := locked.Get(ctx, "config")
	if err != nil {
		t.Fatal(err)
	}
	var raw bytes.Buffer
	_, _ = raw.ReadFrom(rc)
	rc.Close()
	if err := unlockedView.Put(ctx, "config", raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Open(ctx, unlockedView, idx, repo.Options{}); !errors.Is(err, repo.ErrNoObjectLock) {
		t.Errorf("Open of a locked repository's copy in a directory = %v, want ErrNoObjectLock", err)
	}
	if _, err := repo.Open(ctx, unlockedView, idx, repo.Options{ReadOnly: true}); err != nil {
		t.Errorf("read-only Open of a locked repository's copy in a directory: %v", err)
	}
}

// TestObjectLockedSweep: once their dates pass, gc removes superseded versions and hidden
// objects cairn hid, but a current version never, and a pack someone else hid stays for the
// admin.
func TestObjectLockedSweep(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	const period = 3 * time.Second
	f := newLockedFixture(t, srv, "sweep", period)
	ctx := context.Background()
	a := &memSource{data: randomVolume(41, 1<<20)}
	ma := f.backup(t, "a", a, nil)
	aPacks := packKeys(t, f)
	f.backup(t, "b", &memSource{data: randomVolume(42, 1<<20)}, nil)
	var bPack string
	for k := range packKeys(t, f) {
		if !aPacks[k] {
			bPack = k
		}
	}
	if err := f.r.DeleteManifest(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	// Someone hides b's pack behind a delete marker.
	if err := f.be.Delete(ctx, bPack); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := f.r.PutMeta(ctx, "volumes", "x", i); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.r.PutMeta(ctx, "volumes", "y", 1); err != nil {
		t.Fatal(err)
	}
	if err := f.r.DeleteMeta(ctx, "volumes", "y"); err != nil {
		t.Fatal(err)
	}
	// Another's object beside the repository, overwritten once: its history is not cairn's.
	for _, text := range []string{"first", "second"} {
		if err := f.be.Put(ctx, "notes/todo.txt", []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(period + 1500*time.Millisecond)
	st := f.gc(t)
	t.Logf("gc: %+v", st)
	vs := f.versions(t, "")
	if n := len(vs["notes/todo.txt"]); n != 2 {
		t.Errorf("another's object: %d versions after gc, want both kept", n)
	}
	for k := range vs { // what gc leaves alone as another's must be exactly that
		if top, _, _ := strings.Cut(k, "/"); !repo.OwnsName(top) && k != "notes/todo.txt" {
			t.Errorf("%s: cairn wrote it, but repo.OwnsName(%q) is false, so gc would neither extend nor sweep it", k, top)
		}
	}
	count := func(prefix string) (data, markers int) {
		for k, kv := range vs {
			if strings.HasPrefix(k, prefix) {
				for _, v := range kv {
					if v.DeleteMarker {
						markers++
					} else {
						data++
					}
				}
			}
		}
		return data, markers
	}
	if d, m := count("manifests/b"); d+m != 0 {
		t.Errorf("b's manifest: %d versions and %d markers left", d, m)
	}
	if d, m := count(bPack); d != 1 || m != 1 {
		t.Errorf("the pack someone hid: %d versions and %d markers, want it kept as it is (1, 1)", d, m)
	}
	var x int
	if err := f.r.GetMeta(ctx, "volumes", "x", &x); err != nil || x != 1 {
		t.Errorf("meta x = %d, %v; want its current value 1", x, err)
	}
	if err := f.r.GetMeta(ctx, "volumes", "y", &x); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("meta y came back: %v", err)
	}
	for k, kv := range vs {
		if (strings.HasPrefix(k, "meta/") || strings.HasPrefix(k, "meta-copies/")) && (len(kv) != 1 || kv[0].DeleteMarker) {
			t.Errorf("%s: versions %+v after the sweep, want only x's current one (and its second copy's)", k, kv)
		}
	}
	if xs := metaVersions(vs, "meta-copies/volumes/"); xs != 1 {
		t.Errorf("second copies of volume records after the sweep: %d, want x's alone", xs)
	}
	if got := f.restore(t, ma); !bytes.Equal(got, a.data) {
		t.Fatal("a differs after gc")
	}
}

// stallingVersions stalls at its first DeleteVersion of a repository object as a paused host
// does: for stall, with every lock write refused meanwhile. It counts the removals of
// repository objects (not lock objects) that come after the stall.
type stallingVersions struct {
	backend.Versioned
	stall    time.Duration
	stalling atomic.Bool
	stalled  atomic.Bool
	after    atomic.Int32
}

func (b *stallingVersions) Put(ctx context.Context, key string, data []byte) error {
	if b.stalling.Load() && strings.HasPrefix(key, "locks/") {
		return fmt.Errorf("put %s: the process stalls: %w", key, backend.ErrUnavailable)
	}
	return b.Versioned.Put(ctx, key, data)
}

func (b *stallingVersions) DeleteVersion(ctx context.Context, key, version string) error {
	if strings.HasPrefix(key, "locks/") {
		// a lock object's versions go when it is released
	} else if b.stalled.Swap(true) {
		b.after.Add(1)
	} else {
		b.stalling.Store(true)
		time.Sleep(b.stall)
		b.stalling.Store(false)
	}
	return b.Versioned.DeleteVersion(ctx, key, version)
}

// TestObjectLockedSweepStopsWhenItsLockIsLost: gc checks its lock before each version it
// removes for good, as before each pack and index object. One that stalls past --lock-stale
// while it removes versions removes no other and stops with its lock lost; the next gc
// finishes the sweep.
func TestObjectLockedSweepStopsWhenItsLockIsLost(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	const period = 2 * time.Second
	ctx := context.Background()
	s3 := openS3(t, srv, srv.Bucket, "stall")
	l := &repo.ObjectLock{Mode: backend.Governance, RetentionSeconds: int64(period / time.Second)}
	if _, err := repo.Init(ctx, s3, repo.InitOptions{Compression: repo.CompressNone, ObjectLock: l}); err != nil {
		t.Fatal(err)
	}
	be := &stallingVersions{Versioned: s3.(backend.Versioned), stall: 1500 * time.Millisecond}
	f := fixtureOn(t, be, t.TempDir(), "index", repo.Options{ChunkCacheBytes: 8 << 20, Lock: repo.LockOptions{StaleAfter: time.Second}})
	for i := range 4 { // three superseded versions for the sweep
		if err := f.r.PutMeta(ctx, "volumes", "x", i); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(period + 1500*time.Millisecond)
	if _, err := f.r.GC(ctx, repo.GCOptions{}); !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("gc that stalled 1.5 s at its first version removal with --lock-stale 1s: %v, want its lock lost", err)
	}
	if n := be.after.Load(); n != 0 {
		t.Fatalf("gc removed %d more versions after it stalled past --lock-stale", n)
	}
	be.stall = 0
	st := f.gc(t)
	if st.VersionsRemoved == 0 {
		t.Fatalf("the next gc removed no version: %+v", st)
	}
	var x int
	if err := f.r.GetMeta(ctx, "volumes", "x", &x); err != nil || x != 3 {
		t.Fatalf("meta x = %d, %v; want its current value 3", x, err)
	}
}

// On a bucket that keeps versions, without object lock, a Delete only hides an object: gc says
// so beside its bytes_freed, which would otherwise read as space given back. A bucket that
// keeps none says nothing.
func TestGCSaysABucketKeepsWhatItDeletes(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	ctx := context.Background()
	srv.CreateBucket("versioned")
	if err := srv.Client().SetBucketVersioning(ctx, "versioned", minio.BucketVersioningConfiguration{Status: "Enabled"}); err != nil {
		t.Fatal(err)
	}
	srv.CreateBucket("plain")
	for _, tt := range []struct {
		bucket string
		kept   bool
	}{{"versioned", true}, {"plain", false}} {
		t.Run(tt.bucket, func(t *testing.T) {
			be := openS3(t, srv, tt.bucket, "r")
			if _, err := repo.Init(ctx, be, repo.InitOptions{Compression: repo.CompressNone}); err != nil {
				t.Fatal(err)
			}
			f := fixtureOn(t, be, t.TempDir(), "index", repo.Options{ChunkCacheBytes: 8 << 20})
			m := f.backup(t, "a", &memSource{data: randomVolume(41, 2<<20)}, nil)
			if err := f.r.DeleteManifest(ctx, m.ID); err != nil {
				t.Fatal(err)
			}
			st := f.gc(t)
			if st.PacksDeleted == 0 || st.BytesFreed == 0 {
				t.Fatalf("gc deleted nothing: %+v", st)
			}
			if st.VersionsKept != tt.kept {
				t.Fatalf("versions_kept = %v, want %v", st.VersionsKept, tt.kept)
			}
			hidden := 0
			if err := be.(backend.Versioned).ListVersions(ctx, "packs/", func(v backend.Version) error {
				if !v.DeleteMarker {
					hidden++
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if (hidden > 0) != tt.kept {
				t.Fatalf("%d pack versions are still stored; versions_kept = %v", hidden, st.VersionsKept)
			}
		})
	}
}

// metaVersions counts the keys under prefix with a version left.
func metaVersions(vs map[string][]backend.Version, prefix string) int {
	n := 0
	for k, kv := range vs {
		if strings.HasPrefix(k, prefix) && len(kv) > 0 {
			n++
		}
	}
	return n
}

// A gc that stops before its own extension of the locks' dates (here: a manifest and its copy
// overwritten with junk, new versions the lock allows anyone with the credentials to write, so
// every gc stops at its mark) extends the dates of every locked object all the same. gc was
// the only thing that extended them: one such object stopped every run, and every backup's
// lock lapsed within a period.
func TestAFailedGCStillExtendsTheLocks(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	const period = 6 * time.Second
	f := newLockedFixture(t, srv, "failedgc", period)
	ctx := context.Background()
	f.backup(t, "a", &memSource{data: randomVolume(31, 1<<20)}, nil)
	f.backup(t, "b", &memSource{data: randomVolume(32, 1<<20)}, nil)
	before := map[string]time.Time{}
	for k := range packKeys(t, f) {
		before[k] = f.until(t, k)
	}
	for _, key := range []string{"manifests/b", "manifest-copies/b"} {
		if err := f.be.Put(ctx, key, []byte("junk")); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(period/2 + time.Second) // gc extends a date with less than half a period left
	st, err := f.r.GC(ctx, repo.GCOptions{})
	if err == nil {
		t.Fatal("gc with a junk manifest succeeded: the set-up is wrong")
	}
	if st.ObjectsExtended == 0 {
		t.Errorf("gc that failed (%v) extended nothing", err)
	}
	for k, u := range before {
		if got := f.until(t, k); !got.After(u) {
			t.Errorf("pack %s still locked until %v after the failed gc, as before", k, got)
		}
	}
}
