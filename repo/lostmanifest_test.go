package repo_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// A manifest removed outside cairn, its copy left and no delete begun, is a lost manifest
// (docs/design.md, "A manifest lost, its copy left"). Before, the backup was gone silently:
// check found nothing, and gc removed the copy and swept the blocks only it used. Now gc marks
// through the copy, check reports it, and repair stores the manifest again, after which the
// backup restores byte-exact. A lost manifest whose copy is damaged too is the backup lost
// whole: gc stops at it until it is forgotten.
func TestALostManifestIsStoredAgainFromItsCopy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{Encryption: "aes-256-gcm", Password: "pw"})
	volA, volB := randomVolume(81, 2<<20), randomVolume(82, 2<<20)
	a := f.backup(t, "a", &memSource{data: volA}, nil)
	b := f.backup(t, "b", &memSource{data: volB}, nil) // no block in common with a
	files := f.objectFiles(t)
	files.remove("manifests/b")
	if _, err := f.r.GetManifest(ctx, "b"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("a read of a lost manifest: %v; reads never fall back to a copy without its manifest", err)
	}
	check := func() *repo.CheckReport {
		t.Helper()
		rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := check()
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "backup b: its manifest is missing though no delete of it began") ||
		rep.Classes[repo.ProblemMissing] != 1 || len(rep.Lost) != 0 || rep.Backups != 2 || hasText(rep.Notes, "hold nothing") {
		t.Fatalf("check of a lost manifest: %+v", rep)
	}
	if st := f.gc(t); st.Backups != 2 || st.PacksDeleted != 0 {
		t.Fatalf("gc with a lost manifest: %+v; want it marked through its copy and nothing deleted", st)
	}
	if !files.exists("manifest-copies/b") {
		t.Fatal("gc removed the copy of a lost manifest")
	}
	rep = check() // the same, after gc: its blocks are all there
	if len(rep.Problems) != 1 || len(rep.Lost) != 0 {
		t.Fatalf("check after gc: %+v", rep)
	}
	if n, err := f.r.MendManifests(ctx, rep); err != nil || n != (repo.ManifestsMended{Lost: 1}) {
		t.Fatalf("mend: %+v, %v; want the lost manifest stored", n, err)
	}
	got, err := f.r.GetManifest(ctx, "b")
	if err != nil || got.Root != b.Root {
		t.Fatalf("backup b after repair: %+v, %v", got, err)
	}
	if !bytes.Equal(f.restore(t, got), volB) {
		t.Fatal("backup b does not restore byte-exact after its manifest was stored again")
	}
	f.mustCheck(t)

	// Both gone: the manifest missing, its copy damaged. The backup is lost whole, and gc,
	// which cannot tell what it needs, deletes nothing until it is forgotten.
	files.remove("manifests/b")
	files.flip("manifest-copies/b")
	rep = check()
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "backup b: its manifest is missing") ||
		len(rep.Lost["b"]) != 1 || rep.Lost["b"][0] != [2]int64{0, -1} {
		t.Fatalf("check of a lost manifest with a damaged copy: %+v", rep)
	}
	if _, err := f.r.GC(ctx, repo.GCOptions{TempDir: t.TempDir()}); !errors.Is(err, repo.ErrUnreadableBackup) {
		t.Fatalf("gc with a lost manifest whose copy is damaged: %v; want it stopped", err)
	}
	if err := f.r.DeleteManifest(ctx, "b"); err != nil { // what repair --forget-damaged does
		t.Fatal(err)
	}
	if st := f.gc(t); st.PacksDeleted == 0 {
		t.Fatalf("gc after the lost backup was forgotten: %+v; want its blocks reclaimed", st)
	}
	f.mustCheck(t)
	if !bytes.Equal(f.restore(t, a), volA) {
		t.Fatal("backup a does not restore byte-exact")
	}
}

// A delete whose copy removal failed leaves the copy beside its tombstone: not a lost
// manifest. When gc prunes the day-old tombstone it removes the copy first, so the copy never
// outlives the tombstone and never reads as lost (invariant T). Before, the tombstone went and
// the copy stayed: the deleted backup would have read as a lost manifest, and repair would have
// brought it back.
func TestAnOldTombstoneGoesOnlyAfterItsCopy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	f.backup(t, "a", &memSource{data: randomVolume(83, 1<<20)}, nil)
	files := f.objectFiles(t)
	copyA := files.read("manifest-copies/a")
	if err := f.r.DeleteManifest(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	files.write("manifest-copies/a", copyA) // as a delete that stopped before the copy leaves it
	f.mustCheck(t)                          // its tombstone says it was deleted
	tomb, tombCopy := metaKeys("tombstones", "a")
	old := time.Now().Add(-48 * time.Hour)
	files.setModTime(tomb, old)
	files.setModTime(tombCopy, old)
	f.gc(t)
	if files.exists("manifest-copies/a") || files.exists(tomb) {
		t.Fatalf("after gc: copy left %v, tombstone left %v; want both gone", files.exists("manifest-copies/a"), files.exists(tomb))
	}
	f.mustCheck(t)
}

// Repair stores a lost manifest again as a rewrite: a delete by another gateway between its
// read of the copy and its store wins, and neither the manifest nor its copy is left.
func TestStoringALostManifestLosesToADelete(t *testing.T) {
	ctx := context.Background()
	f, g, rep := mendDuringADelete(t, 84, func(files objectFiles) { files.remove("manifests/a") })
	files := f.objectFiles(t)
	if len(rep.Problems) != 1 {
		t.Fatalf("check: %+v", rep)
	}
	if n, err := g.r.MendManifests(ctx, rep); err != nil || n != (repo.ManifestsMended{}) {
		t.Fatalf("mend during a delete: %+v, %v; want nothing stored", n, err)
	}
	if files.exists("manifests/a") || files.exists("manifest-copies/a") {
		t.Fatalf("after a delete that came during the mend: manifest %v, copy %v; want neither", files.exists("manifests/a"), files.exists("manifest-copies/a"))
	}
	f.mustCheck(t)
}

// A manifest check listed that is gone when it reads it, without a delete, is reported as
// lost, as gc marks through its copy [TestGCSkipsAManifestDeletedAfterItsListing]: before, the
// check took it for deleted and said nothing.
func TestCheckSeesAManifestLostAfterItsListing(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	f.backup(t, "a", &memSource{data: randomVolume(85, 1<<20)}, nil)
	g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend {
		return &deletesAfterListing{Backend: be, victim: "a"}
	})
	rep, err := g.r.Check(context.Background(), repo.CheckOptions{})
	if err != nil || len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "backup a: its manifest is missing though no delete of it began") {
		t.Fatalf("check with a's manifest lost after its listing: %v %+v", err, rep)
	}
}

// A backup committed between check's listing of manifests/ and its listing of their copies has
// a copy the first listing did not match: check looks for its manifest before its tombstone
// and finds it, so the new backup is not taken for a lost one (the interleaving of a writer on
// another process and check, which runs under a shared lock beside backups).
func TestACommitDuringCheckIsNotALostManifest(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	f.backup(t, "a", &memSource{data: randomVolume(86, 1<<20)}, nil)
	other := f.peer(t, "other", repo.LockOptions{})
	w := &afterListing{prefix: "manifests/", hook: func() { other.backup(t, "b", &memSource{data: randomVolume(87, 1<<20)}, nil) }}
	g := f.wrapped(t, "index-g", repo.Options{}, func(be backend.Backend) backend.Backend { w.Backend = be; return w })
	rep, err := g.r.Check(context.Background(), repo.CheckOptions{})
	if err != nil || !rep.OK() {
		t.Fatalf("check with a backup committed during it: %v %+v; want no problem", err, rep)
	}
	if !f.objectFiles(t).exists("manifests/b") {
		t.Fatal("the backup did not commit during the check")
	}
	f.mustCheck(t)
}
