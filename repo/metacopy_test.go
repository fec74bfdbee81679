package repo_test

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

type testPolicy struct {
	Name     string `json:"name"`
	KeepLast int    `json:"keep_last"`
}

func metaKeys(kind, name string) (obj, cp string) {
	h := hex.EncodeToString([]byte(name))
	return "meta/" + kind + "/" + h, "meta-copies/" + kind + "/" + h
}

// mendMeta checks, then mends what the check found, and returns the counts.
func (f *fixture) mendMeta(t *testing.T) (objects, copies int, rep *repo.CheckReport) {
	t.Helper()
	rep, err := f.r.Check(context.Background(), repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	objects, copies, err = f.r.MendMeta(context.Background(), rep)
	if err != nil {
		t.Fatal(err)
	}
	return objects, copies, rep
}

// putPolicy stores policy name with keep as its rule through f (t.Error on failure, so a
// hook on another goroutine may call it too).
func (f *fixture) putPolicy(t *testing.T, name string, keep int) {
	t.Helper()
	if err := f.r.PutMeta(context.Background(), "policies", name, testPolicy{Name: name, KeepLast: keep}); err != nil {
		t.Error(err)
	}
}

func (f *fixture) policyIs(t *testing.T, name string, keep int) {
	t.Helper()
	var p testPolicy
	if err := f.r.GetMeta(context.Background(), "policies", name, &p); err != nil || p.KeepLast != keep {
		t.Fatalf("policy %s: %+v, %v; want keep_last %d", name, p, err, keep)
	}
	listed := map[string]bool{}
	err := f.r.ListMeta(context.Background(), "policies", func(n string, _ []byte) error { listed[n] = true; return nil },
		func(key string, err error) { t.Errorf("listing: %s reported damaged: %v", key, err) })
	if err != nil || !listed[name] {
		t.Fatalf("listing of policies: %v, %v; want %s in it", listed, err, name)
	}
}

func hasText(list []string, s string) bool {
	for _, l := range list {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// A metadata object of a kind that records what stays (here a policy, whose loss stopped its
// backups silently) has a second copy that stands in when the object is damaged; check
// reports each state of the pair and repair mends it (docs/design.md, "A metadata object's
// second copy").
func TestMetaCopyStandsInForADamagedObject(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[enc], func(t *testing.T) {
			o := repo.InitOptions{}
			if enc {
				o.Password = "pw"
			}
			f := newFixture(t, o)
			ctx := context.Background()
			files := f.objectFiles(t)
			obj, cp := metaKeys("policies", "nightly")
			put := func(keep int) {
				t.Helper()
				f.putPolicy(t, "nightly", keep)
			}
			put(3)
			if !files.exists(cp) {
				t.Fatalf("no second copy %s after PutMeta", cp)
			}
			f.mustCheck(t)

			// The object damaged: the copy stands in, check reports it, repair mends it.
			files.flip(obj)
			f.policyIs(t, "nightly", 3)
			objects, copies, rep := f.mendMeta(t)
			if rep.OK() || !hasText(rep.Problems, "stands in") || objects != 1 || copies != 1 {
				t.Fatalf("damaged object: problems %q, mended %d/%d; want a problem, the object written and then its copy (no older than it)", rep.Problems, objects, copies)
			}
			f.mustCheck(t)
			f.policyIs(t, "nightly", 3)
			files.flip(obj) // the copy repair wrote again stands in again
			f.policyIs(t, "nightly", 3)
			f.mendMeta(t)
			f.mustCheck(t)

			// A copy older than its object (a cairn that keeps no copies wrote the object
			// since) is a note while the object is intact, and never stands in for it.
			older, olderAt := files.read(cp), files.modTime(cp)
			put(6)
			files.write(cp, older)
			files.setModTime(cp, olderAt)
			if _, copies, rep = f.mendMeta(t); !rep.OK() || !hasText(rep.Notes, "is older") || copies != 1 {
				t.Fatalf("older copy: problems %q, notes %q, copies written %d", rep.Problems, rep.Notes, copies)
			}
			files.write(cp, older)
			files.setModTime(cp, olderAt)
			files.flip(obj)
			var p testPolicy
			if err := f.r.GetMeta(ctx, "policies", "nightly", &p); !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "older than it") {
				t.Fatalf("a damaged object with an older copy: %+v, %v; want ErrCorrupt naming the older copy", p, err)
			}
			objects, copies, rep = f.mendMeta(t)
			if len(rep.LostMeta()) != 1 || objects+copies != 0 {
				t.Fatalf("a damaged object with an older copy: lost %v, mended %d/%d; want it lost and nothing written", rep.LostMeta(), objects, copies)
			}
			put(3)
			f.mustCheck(t)

			// Both damaged: nothing stands in, the listing reports it, repair leaves it.
			files.flip(obj)
			files.flip(cp)
			if err := f.r.GetMeta(ctx, "policies", "nightly", &p); !errors.Is(err, repo.ErrCorrupt) {
				t.Fatalf("both damaged: %v, want ErrCorrupt", err)
			}
			bad := 0
			if err := f.r.ListMeta(ctx, "policies", func(string, []byte) error { return nil }, func(string, error) { bad++ }); err != nil || bad != 1 {
				t.Fatalf("listing with both damaged: %v, %d reported; want one", err, bad)
			}
			objects, copies, rep = f.mendMeta(t)
			if !hasText(rep.Problems, "damaged too") || objects+copies != 0 {
				t.Fatalf("both damaged: problems %q, mended %d/%d; want a loss and nothing written", rep.Problems, objects, copies)
			}
			if lost := rep.LostMeta(); len(lost) != 1 || lost[0] != (repo.MetaObject{Kind: "policies", Name: "nightly"}) {
				t.Fatalf("lost metadata objects: %v, want policies/nightly", lost)
			}
			if err := f.r.ForgetMeta(ctx, rep.LostMeta()[0]); err != nil || files.exists(obj) || files.exists(cp) {
				t.Fatalf("forget a lost policy: %v; object there %v, copy there %v", err, files.exists(obj), files.exists(cp))
			}
			put(4) // a new write stores both
			if err := f.r.ForgetMeta(ctx, repo.MetaObject{Kind: "policies", Name: "nightly"}); !errors.Is(err, repo.ErrNotLost) || !files.exists(obj) {
				t.Fatalf("forget an intact policy: %v, want ErrNotLost and the object kept", err)
			}
			files.flip(obj)
			if err := f.r.ForgetMeta(ctx, repo.MetaObject{Kind: "policies", Name: "nightly"}); !errors.Is(err, repo.ErrNotLost) || !files.exists(obj) {
				t.Fatalf("forget a damaged policy whose copy stands in: %v, want ErrNotLost and the object kept", err)
			}
			f.mendMeta(t)
			f.mustCheck(t)

			// A damaged copy: a problem; repair writes it from the object.
			files.flip(cp)
			f.policyIs(t, "nightly", 4)
			if objects, copies, rep = f.mendMeta(t); rep.OK() || objects != 0 || copies != 1 {
				t.Fatalf("damaged copy: problems %q, mended %d/%d", rep.Problems, objects, copies)
			}
			f.mustCheck(t)

			// A missing copy, and one that differs (an older write's): notes; repair writes
			// each from the object, and then the copy stands in with the object's JSON.
			files.remove(cp)
			if _, copies, rep = f.mendMeta(t); !rep.OK() || !hasText(rep.Notes, "no second copy") || copies != 1 {
				t.Fatalf("missing copy: problems %q, notes %q, copies written %d", rep.Problems, rep.Notes, copies)
			}
			stale := files.read(cp)
			put(5)
			files.write(cp, stale)
			if _, copies, rep = f.mendMeta(t); !rep.OK() || !hasText(rep.Notes, "differs") || copies != 1 {
				t.Fatalf("differing copy: problems %q, notes %q, copies written %d", rep.Problems, rep.Notes, copies)
			}
			files.flip(obj)
			f.policyIs(t, "nightly", 5)
			f.mendMeta(t)
			f.mustCheck(t)

			// A delete removes both; a copy left without its object is never read, and repair
			// keeps it: that is the admin's to decide (TestALostMetadataObjectIsKeptUntilAnAdminDecides).
			left := files.read(cp)
			if err := f.r.DeleteMeta(ctx, "policies", "nightly"); err != nil {
				t.Fatal(err)
			}
			if files.exists(obj) || files.exists(cp) {
				t.Fatal("DeleteMeta left the object or its copy")
			}
			files.write(cp, left)
			if err := f.r.GetMeta(ctx, "policies", "nightly", &p); !errors.Is(err, backend.ErrNotFound) {
				t.Fatalf("a copy without its object: %v, want not found", err)
			}
			if _, _, rep = f.mendMeta(t); rep.OK() || !hasText(rep.Problems, "is missing while its second copy is intact") || !files.exists(cp) {
				t.Fatalf("copy without object: problems %q, still there %v; want a problem and the copy kept", rep.Problems, files.exists(cp))
			}
			if err := f.r.ForgetMeta(ctx, repo.MetaObject{Kind: "policies", Name: "nightly"}); err != nil || files.exists(cp) {
				t.Fatalf("forget the copy: %v, still there %v", err, files.exists(cp))
			}

			// Kinds that say what runs now have no copy.
			if err := f.r.PutMeta(ctx, repo.MetaCreating, "b1", map[string]string{"host": "h"}); err != nil {
				t.Fatal(err)
			}
			if _, cp := metaKeys(repo.MetaCreating, "b1"); files.exists(cp) {
				t.Fatalf("a %s object got a second copy", repo.MetaCreating)
			}
			f.mustCheck(t)
		})
	}
}

// A write whose copy fails to store is not acknowledged: the caller hears of it, so a copy
// that stands in never holds less than the last acknowledged write.
func TestMetaWriteFailsWhenItsCopyIsNotStored(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	if err := f.r.PutMeta(ctx, "settings", "repository", map[string]string{"min_age": "1h"}); err != nil {
		t.Fatal(err)
	}
	be, err := local.Open(f.dir + "/repo")
	if err != nil {
		t.Fatal(err)
	}
	fb := faulty.New(be, 1)
	g := fixtureOn(t, fb, f.dir, "index-g", repo.Options{})
	fb.Add(faulty.Rule{Methods: faulty.Put, Prefix: "meta-copies/settings/", Effect: faulty.Fail})
	err = g.r.PutMeta(ctx, "settings", "repository", map[string]string{"min_age": "7d"})
	if err == nil || !strings.Contains(err.Error(), "second copy") {
		t.Fatalf("a write whose copy failed: %v, want it to fail naming the copy", err)
	}
}

// racingBackend runs hook once, just before the first Put of key: another writer's store that
// lands between repair's read and its own store.
type racingBackend struct {
	backend.Backend
	key  string
	once sync.Once
	hook func()
}

func (b *racingBackend) Put(ctx context.Context, key string, data []byte) error {
	if key == b.key {
		b.once.Do(b.hook)
	}
	return b.Backend.Put(ctx, key, data)
}

// Repair writes a stale copy from its object; a write of the object that lands whole between
// repair's read and its store of the copy has its copy overwritten with the older JSON, and
// the next round (repair reads both again) writes the copy from the newer object: repair
// never leaves a copy older than an acknowledged write.
func TestMetaCopyMendRacingAWrite(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	files := f.objectFiles(t)
	obj, cp := metaKeys("policies", "nightly")
	f.putPolicy(t, "nightly", 3)
	files.flip(cp)
	other := f.peer(t, "other", repo.LockOptions{})
	be, err := local.Open(f.dir + "/repo")
	if err != nil {
		t.Fatal(err)
	}
	rb := &racingBackend{Backend: be, key: cp}
	rb.hook = func() {
		other.putPolicy(t, "nightly", 9)
	}
	g := fixtureOn(t, rb, f.dir, "index-g", repo.Options{})
	rep, err := g.r.Check(ctx, repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, copies, err := g.r.MendMeta(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	if copies != 2 {
		t.Errorf("copies written: %d, want 2 (the stale one, then the racing write's again)", copies)
	}
	f.mustCheck(t)
	files.flip(obj)
	f.policyIs(t, "nightly", 9)
}

// A tombstone is read for its existence alone, which damage does not change: one damaged with
// its copy is reported but never listed as lost, and ForgetMeta refuses it, so a delete that
// did not finish (its manifest still stored) stays a delete (docs/design.md, "A metadata
// object's second copy").
func TestDamagedTombstoneIsNeverForgotten(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	files := f.objectFiles(t)
	f.backup(t, "a", &memSource{data: randomVolume(75, 256<<10)}, nil)
	manifest, mcopy := files.read("manifests/a"), files.read("manifest-copies/a")
	if err := f.r.DeleteManifest(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	files.write("manifests/a", manifest) // the delete did not finish
	files.write("manifest-copies/a", mcopy)
	obj, cp := metaKeys("tombstones", "a")
	files.flip(obj)
	files.flip(cp)
	rep, err := f.r.Check(ctx, repo.CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasText(rep.Problems, "still marks its backup deleted") || len(rep.LostMeta()) != 0 {
		t.Fatalf("a damaged tombstone: problems %q, lost %v; want it reported and not lost", rep.Problems, rep.LostMeta())
	}
	if err := f.r.ForgetMeta(ctx, repo.MetaObject{Kind: "tombstones", Name: "a"}); !errors.Is(err, repo.ErrNotLost) || !files.exists(obj) {
		t.Fatalf("forget a damaged tombstone: %v, still there %v; want ErrNotLost and it kept", err, files.exists(obj))
	}
	if deleted, err := f.r.Deleted(ctx, "a"); err != nil || !deleted {
		t.Fatalf("backup a after its tombstone was damaged: deleted %v, %v; want its delete still marked", deleted, err)
	}
}
