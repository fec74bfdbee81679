package repo_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// A metadata object removed outside cairn (by hand, a lifecycle rule) while its second copy is
// intact is absent to readers, a problem to check, and kept by repair, which never guesses
// whether it was lost or removed on purpose by a cairn from before the copies: the admin's
// RestoreMeta stores it again from the copy, or ForgetMeta removes the copy (docs/design.md, "A
// metadata object lost, its copy left"). Before, repair removed the copy: one rm lost a policy
// for good.
func TestALostMetadataObjectIsKeptUntilAnAdminDecides(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "encrypted"}[enc], func(t *testing.T) {
			var o repo.InitOptions
			if enc {
				o.Password = "secret"
			}
			f := newFixture(t, o)
			ctx := context.Background()
			files := f.objectFiles(t)
			nightly := repo.MetaObject{Kind: "policies", Name: "nightly"}
			obj, cp := metaKeys("policies", "nightly")
			f.putPolicy(t, "nightly", 3)
			lose := func() {
				t.Helper()
				files.remove(obj)
			}
			lose()
			var p testPolicy
			if err := f.r.GetMeta(ctx, "policies", "nightly", &p); !errors.Is(err, backend.ErrNotFound) {
				t.Fatalf("a lost object: %v, want not found (reads never fall back to a copy for a missing object)", err)
			}
			objects, copies, rep := f.mendMeta(t)
			if rep.OK() || !hasText(rep.Problems, "is missing while its second copy is intact") || rep.Classes[repo.ProblemMissing] != 1 {
				t.Fatalf("a lost object: problems %q, classes %v; want one missing-class problem", rep.Problems, rep.Classes)
			}
			if m := rep.MissingMeta(); len(m) != 1 || m[0] != nightly || len(rep.LostMeta()) != 0 {
				t.Fatalf("missing %v, lost %v; want the policy missing", m, rep.LostMeta())
			}
			if objects+copies != 0 || !files.exists(cp) || files.exists(obj) {
				t.Fatalf("repair wrote %d/%d, copy there %v, object there %v: want the copy kept and nothing written", objects, copies, files.exists(cp), files.exists(obj))
			}
			f.gc(t)
			if !files.exists(cp) {
				t.Fatal("gc removed the copy of a lost object")
			}
			if err := f.r.RestoreMeta(ctx, nightly); err != nil {
				t.Fatal(err)
			}
			f.policyIs(t, "nightly", 3)
			// The copy is stored again too: no older than the object, it can stand in.
			if _, copies, rep := f.mendMeta(t); !rep.OK() || len(rep.Notes) != 0 || copies != 0 {
				t.Fatalf("after the restore: problems %q, notes %q, copies written %d; want nothing to mend", rep.Problems, rep.Notes, copies)
			}
			if err := f.r.RestoreMeta(ctx, nightly); !errors.Is(err, repo.ErrNotMissing) {
				t.Fatalf("restore of an object that is there: %v, want ErrNotMissing", err)
			}

			// Lost with its copy damaged: nothing to restore, only the copy to forget.
			lose()
			files.flip(cp)
			if _, _, rep = f.mendMeta(t); !hasText(rep.Problems, "its second copy is damaged") || len(rep.MissingMeta()) != 1 {
				t.Fatalf("lost, copy damaged: problems %q", rep.Problems)
			}
			if err := f.r.RestoreMeta(ctx, nightly); !errors.Is(err, repo.ErrNotMissing) || files.exists(obj) {
				t.Fatalf("restore from a damaged copy: %v, object there %v; want ErrNotMissing and nothing stored", err, files.exists(obj))
			}
			if err := f.r.ForgetMeta(ctx, nightly); err != nil || files.exists(cp) {
				t.Fatalf("forget: %v, copy there %v", err, files.exists(cp))
			}
			f.mustCheck(t)
		})
	}
}

// A removal takes the copy first: one that fails there removes nothing and says so, and one
// that fails at the object leaves the object (a removal that did not happen), never a copy
// without its object.
func TestMetaRemovalTakesTheCopyFirst(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	files := f.objectFiles(t)
	obj, cp := metaKeys("policies", "nightly")
	f.putPolicy(t, "nightly", 3)
	var fb *faulty.Faulty
	g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { fb = faulty.New(be, 1); return fb })
	fb.Add(faulty.Rule{Methods: faulty.Delete, Prefix: "meta-copies/policies/", Effect: faulty.Fail, Times: 1})
	if err := g.r.DeleteMeta(ctx, "policies", "nightly"); err == nil || !files.exists(obj) || !files.exists(cp) {
		t.Fatalf("a removal whose copy's removal failed: %v, object there %v, copy there %v; want an error and both kept", err, files.exists(obj), files.exists(cp))
	}
	f.policyIs(t, "nightly", 3)
	fb.Add(faulty.Rule{Methods: faulty.Delete, Prefix: "meta/policies/", Effect: faulty.Fail, Times: 1})
	if err := g.r.DeleteMeta(ctx, "policies", "nightly"); err == nil || !files.exists(obj) || files.exists(cp) {
		t.Fatalf("a removal whose object's removal failed: %v, object there %v, copy there %v; want an error, the object kept and its copy gone", err, files.exists(obj), files.exists(cp))
	}
	f.policyIs(t, "nightly", 3)
	if _, copies, rep := f.mendMeta(t); !rep.OK() || copies != 1 {
		t.Fatalf("the object without its copy: problems %q, copies written %d; want a note and the copy stored again", rep.Problems, copies)
	}
	f.mustCheck(t)
	if err := g.r.DeleteMeta(ctx, "policies", "nightly"); err != nil || files.exists(obj) || files.exists(cp) {
		t.Fatalf("a removal: %v, object there %v, copy there %v", err, files.exists(obj), files.exists(cp))
	}
	f.mustCheck(t)
}

// RestoreMeta reads the copy again after its store: a removal that took the copy meanwhile
// wins (the object goes again), and a write that changed it meanwhile is what the object holds.
func TestRestoreMetaLosesToADelete(t *testing.T) {
	for _, race := range []string{"delete", "write"} {
		t.Run(race, func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{})
			ctx := context.Background()
			files := f.objectFiles(t)
			nightly := repo.MetaObject{Kind: "policies", Name: "nightly"}
			obj, cp := metaKeys("policies", "nightly")
			f.putPolicy(t, "nightly", 3)
			files.remove(obj)
			other := f.peer(t, "other", repo.LockOptions{})
			// The other writer lands between RestoreMeta's read of the pair and its store.
			rb := &racingBackend{key: obj}
			rb.hook = func() {
				var err error
				if race == "delete" {
					if err = other.r.DeleteMeta(ctx, "policies", "nightly"); errors.Is(err, backend.ErrNotFound) {
						err = nil // the object was missing: only its copy went
					}
				} else {
					err = other.r.PutMeta(ctx, "policies", "nightly", testPolicy{Name: "nightly", KeepLast: 9})
				}
				if err != nil {
					t.Error(err)
				}
			}
			g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { rb.Backend = be; return rb })
			err := g.r.RestoreMeta(ctx, nightly)
			if race == "delete" {
				if !errors.Is(err, repo.ErrNotMissing) || files.exists(obj) || files.exists(cp) {
					t.Fatalf("restore racing a delete: %v, object there %v, copy there %v; want the delete to win", err, files.exists(obj), files.exists(cp))
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				f.policyIs(t, "nightly", 9)
			}
			f.mustCheck(t)
		})
	}
}

// afterListing runs hook once, right after the first listing (List or ListKeys) of prefix: a
// writer of another process that lands between two listings of a reader.
type afterListing struct {
	backend.Backend
	prefix string
	hook   func()
}

func (a *afterListing) fire(prefix string) {
	if prefix == a.prefix && a.hook != nil {
		hook := a.hook
		a.hook = nil
		hook()
	}
}

func (a *afterListing) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if err := a.Backend.List(ctx, prefix, fn); err != nil {
		return err
	}
	a.fire(prefix)
	return nil
}

func (a *afterListing) ListKeys(ctx context.Context, prefix string, fn func(string) error) error {
	if err := a.Backend.ListKeys(ctx, prefix, fn); err != nil {
		return err
	}
	a.fire(prefix)
	return nil
}

// wrapped opens f's repository again as a fixture named name, through the backend wrap makes
// of its local backend: a second process whose requests a test shapes.
func (f *fixture) wrapped(t *testing.T, name string, o repo.Options, wrap func(backend.Backend) backend.Backend) *fixture {
	t.Helper()
	be, err := local.Open(f.dir + "/repo")
	if err != nil {
		t.Fatal(err)
	}
	return fixtureOn(t, wrap(be), f.dir, name, o)
}

// A metadata object stored between check's listing of meta/ and its listing of meta-copies/
// has a copy the first listing did not match: check reads the pair again and finds the object,
// so the new policy is not taken for a lost one.
func TestAWriteDuringCheckIsNotALostMetadataObject(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	other := f.peer(t, "other", repo.LockOptions{})
	w := &afterListing{prefix: "meta/", hook: func() {
		other.putPolicy(t, "nightly", 2)
	}}
	g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { w.Backend = be; return w })
	rep, err := g.r.Check(ctx, repo.CheckOptions{})
	if err != nil || !rep.OK() || len(rep.MissingMeta()) != 0 {
		t.Fatalf("check with a policy stored during it: %v %+v; want no problem", err, rep)
	}
	if w.hook != nil {
		t.Fatal("the write did not run during the check")
	}
	f.policyIs(t, "nightly", 2)
	f.mustCheck(t)
}

// MissingMetaNames names the objects missing while their copies are left, and not one stored
// between its listing of the objects and its listing of the copies.
func TestMissingMetaNames(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	ctx := context.Background()
	files := f.objectFiles(t)
	for _, name := range []string{"daily", "nightly"} {
		f.putPolicy(t, name, 1)
	}
	obj, _ := metaKeys("policies", "nightly")
	files.remove(obj)
	other := f.peer(t, "other", repo.LockOptions{})
	w := &afterListing{prefix: "meta/policies/", hook: func() {
		other.putPolicy(t, "weekly", 2)
	}}
	g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { w.Backend = be; return w })
	names, err := g.r.MissingMetaNames(ctx, "policies")
	if err != nil || len(names) != 1 || names[0] != "nightly" {
		t.Fatalf("missing policies: %q, %v; want nightly alone", names, err)
	}
	if w.hook != nil {
		t.Fatal("the store did not run between the listings")
	}
	if _, err := g.r.MissingMetaNames(ctx, repo.MetaCreating); err == nil {
		t.Fatal("MissingMetaNames of a kind without copies: no error")
	}
}

// A tombstone is never stored again beside a stored manifest: gc would finish that delete a
// day later, and the tombstone's copy may be what an older cairn left when an import removed
// the tombstone on purpose. Stored beforehand, or by an import racing the restore (it lands
// between the restore's first look and its store), the manifest wins and the backup stays.
// Without one, the tombstone is stored again (it only guards a delete that began).
func TestRestoreMetaNeverStoresATombstoneBesideAStoredManifest(t *testing.T) {
	for _, c := range []string{"no manifest", "manifest stored", "import racing"} {
		t.Run(c, func(t *testing.T) {
			f := newFixture(t, repo.InitOptions{})
			ctx := context.Background()
			files := f.objectFiles(t)
			m := f.backup(t, "a", &memSource{data: randomVolume(88, 1<<20)}, nil)
			manifest := files.read("manifests/a")
			if err := f.r.DeleteManifest(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			obj, _ := metaKeys("tombstones", "a")
			if err := os.Remove(files.path(obj)); err != nil { // lost, or an older cairn's import removed it
				t.Fatal(err)
			}
			tombstone := repo.MetaObject{Kind: "tombstones", Name: "a"}
			var rb *racingBackend
			g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend {
				rb = &racingBackend{Backend: be, key: obj, hook: func() {}}
				return rb
			})
			switch c {
			case "manifest stored":
				files.write("manifests/a", manifest)
			case "import racing":
				rb.hook = func() { files.write("manifests/a", manifest) }
			}
			err := g.r.RestoreMeta(ctx, tombstone)
			deleted, derr := f.r.Deleted(ctx, "a")
			if derr != nil {
				t.Fatal(derr)
			}
			if c == "no manifest" {
				if err != nil || !deleted {
					t.Fatalf("restore of a tombstone without its manifest: %v, deleted %v; want it stored again", err, deleted)
				}
				return
			}
			if !errors.Is(err, repo.ErrBackupStored) || deleted {
				t.Fatalf("restore of a tombstone beside a stored manifest: %v, deleted %v; want it refused and no tombstone", err, deleted)
			}
			if got := f.restore(t, m); !bytes.Equal(got, randomVolume(88, 1<<20)) {
				t.Fatal("the backup differs")
			}
		})
	}
}
