package repo_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// A manifest has a second copy (docs/design.md, "A manifest's second copy"). A damaged
// manifest no longer loses its backup: its copy stands in for restore and gc's mark, check
// reports the damage without a lost byte, and MendManifests writes the manifest again. A
// damaged, missing or older copy is reported and written again from the manifest. Neither a
// missing manifest nor a copy without one brings a deleted backup back, and gc removes such a
// copy.
func TestManifestCopyStandsInForADamagedManifest(t *testing.T) {
	for _, enc := range []bool{false, true} {
		name := "plain"
		o := repo.InitOptions{}
		if enc {
			name, o = "encrypted", repo.InitOptions{Encryption: "aes-256-gcm", Password: "pw"}
		}
		t.Run(name, func(t *testing.T) { testManifestCopy(t, o) })
	}
}

func testManifestCopy(t *testing.T, o repo.InitOptions) {
	ctx := context.Background()
	f := newFixture(t, o)
	volA := randomVolume(71, 3<<20)
	a := f.backup(t, "a", &memSource{data: volA}, nil)
	volB := append([]byte(nil), volA...)
	copy(volB[1<<20:], randomVolume(72, 64<<10))
	b := f.backup(t, "b", &memSource{data: volB}, a)
	files := f.objectFiles(t)
	check := func(wantProblems int, wantNote string) *repo.CheckReport {
		t.Helper()
		rep, err := f.r.Check(ctx, repo.CheckOptions{ReadData: true})
		if err != nil {
			t.Fatal(err)
		}
		notes := strings.Join(rep.Notes, "\n")
		if len(rep.Problems) != wantProblems || len(rep.Lost) != 0 || (wantNote == "") != !strings.Contains(notes, "second copy") ||
			wantNote != "" && !strings.Contains(notes, wantNote) || len(rep.LostData())+len(rep.LostNodes()) != 0 {
			t.Fatalf("check: want %d problems and note %q, nothing lost: %+v", wantProblems, wantNote, rep)
		}
		return rep
	}
	mend := func(rep *repo.CheckReport, wantManifests, wantCopies int) {
		t.Helper()
		n, err := f.r.MendManifests(ctx, rep)
		if err != nil || n != (repo.ManifestsMended{Damaged: wantManifests, Copies: wantCopies}) {
			t.Fatalf("mend: %+v, %v; want %d manifests, %d copies", n, err, wantManifests, wantCopies)
		}
	}
	restores := func(m *repo.Manifest, vol []byte) {
		t.Helper()
		got, err := f.r.GetManifest(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Root != m.Root || got.Size != m.Size {
			t.Fatalf("backup %s reads as %+v, want %+v", m.ID, got, m)
		}
		if !bytes.Equal(f.restore(t, got), vol) {
			t.Fatalf("backup %s does not restore byte-exact", m.ID)
		}
	}
	if _, err := os.Stat(files.path("manifest-copies/a")); err != nil {
		t.Fatalf("a backup's commit stored no second copy of its manifest: %v", err)
	}
	check(0, "")

	// The manifest damaged: its copy stands in everywhere, and nothing is lost.
	files.flip("manifests/a")
	restores(a, volA)
	rep := check(1, "")
	if !strings.Contains(rep.Problems[0], "backup a: its manifest") || !strings.Contains(rep.Problems[0], "second copy is intact") {
		t.Fatalf("check: %q", rep.Problems)
	}
	st := f.gc(t) // stopped at the damaged manifest before
	if st.Backups != 2 {
		t.Fatalf("gc marked from %d backups, want 2", st.Backups)
	}
	restores(a, volA)
	restores(b, volB)
	mend(rep, 1, 0)
	f.mustCheck(t)
	restores(a, volA)

	// Both damaged: the backup is lost whole, as before the copy.
	good := files.read("manifests/a")
	goodCopy := files.read("manifest-copies/a")
	files.flip("manifests/a")
	files.flip("manifest-copies/a")
	if _, err := f.r.GetManifest(ctx, "a"); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("both copies damaged: %v", err)
	}
	rep, err := f.r.Check(ctx, repo.CheckOptions{})
	if err != nil || len(rep.Lost["a"]) != 1 || rep.Lost["a"][0] != [2]int64{0, -1} {
		t.Fatalf("both copies damaged: %v %+v", err, rep)
	}
	files.write("manifests/a", good)
	files.write("manifest-copies/a", goodCopy)

	// The copy damaged, and one missing: repair writes both from their manifests.
	files.flip("manifest-copies/b")
	files.remove("manifest-copies/a")
	rep = check(1, "1 backups' manifests have no second copy")
	if !strings.Contains(rep.Problems[0], "manifest-copies/b") {
		t.Fatalf("check: %q", rep.Problems)
	}
	mend(rep, 0, 2)
	f.mustCheck(t)
	if rep := check(0, ""); len(rep.Notes) != 0 {
		t.Fatalf("notes after repair: %q", rep.Notes)
	}

	// A rewrite that stopped between the manifest and its copy leaves the copy older.
	older, olderManifest := files.read("manifest-copies/a"), files.read("manifests/a")
	lk, err := f.r.Lock(ctx, repo.LockShared, "update")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := f.r.GetManifest(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	cur.Name, cur.UpdatedAt = "renamed", time.Now().UTC()
	if err := f.r.RewriteManifest(ctx, lk, cur); err != nil {
		t.Fatal(err)
	}
	lk.Unlock()
	newer := files.read("manifests/a")
	if bytes.Equal(files.read("manifest-copies/a"), older) {
		t.Fatal("a rewrite did not store the copy")
	}
	// A copy newer than its manifest is a rewrite between check's two reads: not stale.
	files.write("manifests/a", olderManifest)
	check(0, "")
	files.write("manifests/a", newer)
	files.write("manifest-copies/a", older)
	rep = check(0, "1 backups' manifests have a second copy older than themselves")
	mend(rep, 0, 1)
	if rep := check(0, ""); len(rep.Notes) != 0 {
		t.Fatalf("notes after repair: %q", rep.Notes)
	}
	// The copy repair wrote stands in with the rewrite's name.
	files.flip("manifests/a")
	if got, err := f.r.GetManifest(ctx, "a"); err != nil || got.Name != "renamed" {
		t.Fatalf("the copy repair wrote: %+v, %v", got, err)
	}
	files.write("manifests/a", files.read("manifest-copies/a")) // a copy is never read as the manifest
	if _, err := f.r.GetManifest(ctx, "a"); err != nil {
		t.Fatal(err) // the copy stands in again
	}
	rep = check(1, "")
	mend(rep, 1, 0)
	f.mustCheck(t)

	// A delete removes both; a copy without its manifest brings nothing back, and gc removes it.
	copyB := files.read("manifest-copies/b")
	if err := f.r.DeleteManifest(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(files.path("manifest-copies/b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a delete left the copy: %v", err)
	}
	files.write("manifest-copies/b", copyB) // as a delete that stopped between the two leaves it
	if _, err := f.r.GetManifest(ctx, "b"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("a deleted backup with a copy left: %v", err)
	}
	if rep := check(0, ""); rep.Backups != 1 {
		t.Fatalf("check counts %d backups, want 1", rep.Backups)
	}
	f.gc(t)
	if _, err := os.Stat(files.path("manifest-copies/b")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("gc left the copy of a deleted backup: %v", err)
	}
	if _, err := os.Stat(files.path("manifest-copies/a")); err != nil {
		t.Fatalf("gc removed the copy of a stored backup: %v", err)
	}
	restores(a, volA)
	f.mustCheck(t)
}

// storesAfterCopyListing stores a manifest right after gc lists manifest-copies/: a writer
// that stored a backup's manifest again between gc's listing of manifests/ and its removal of
// the copies it found without one.
type storesAfterCopyListing struct {
	backend.Backend
	key  string
	data []byte
}

func (s *storesAfterCopyListing) ListKeys(ctx context.Context, prefix string, fn func(string) error) error {
	if err := s.Backend.ListKeys(ctx, prefix, fn); err != nil {
		return err
	}
	if prefix == "manifest-copies/" && s.data != nil {
		data := s.data
		s.data = nil
		return s.Backend.Put(ctx, s.key, data)
	}
	return nil
}

// gc looks for each copy's manifest again just before it removes the copy: one stored since
// its listing keeps its copy.
func TestGCKeepsTheCopyOfAManifestStoredSinceItsListing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{})
	vol := randomVolume(73, 2<<20)
	f.backup(t, "a", &memSource{data: vol}, nil)
	c := f.backup(t, "c", &memSource{data: vol}, nil) // all its blocks are a's too
	dir := filepath.Join(f.dir, "repo")
	manifest, err := os.ReadFile(filepath.Join(dir, "manifests", "c"))
	if err != nil {
		t.Fatal(err)
	}
	copyC, err := os.ReadFile(filepath.Join(dir, "manifest-copies", "c"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.r.DeleteManifest(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest-copies", "c"), copyC, 0o600); err != nil {
		t.Fatal(err)
	}
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	g := fixtureOn(t, &storesAfterCopyListing{Backend: be, key: "manifests/c", data: manifest}, f.dir, "index-g", repo.Options{ChunkCacheBytes: 8 << 20})
	g.gc(t)
	if _, err := os.Stat(filepath.Join(dir, "manifest-copies", "c")); err != nil {
		t.Fatalf("gc removed the copy of a manifest stored since its listing: %v", err)
	}
	got, err := f.r.GetManifest(ctx, "c")
	if err != nil || got.Root != c.Root {
		t.Fatalf("backup c: %+v, %v", got, err)
	}
	if !bytes.Equal(f.restore(t, got), vol) {
		t.Fatal("backup c does not restore byte-exact")
	}
}

// deletesOnCopyRead is another gateway deleting a backup while repair mends its manifest: its
// first read (or look for) the backup's manifest copy deletes the backup through other.
type deletesOnCopyRead struct {
	backend.Backend
	t     *testing.T
	id    string
	other *repo.Repository
	done  bool
}

func (d *deletesOnCopyRead) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := d.Backend.Get(ctx, key)
	if key == "manifest-copies/"+d.id && !d.done {
		d.done = true
		if derr := d.other.DeleteManifest(ctx, d.id); derr != nil {
			d.t.Error(derr)
		}
	}
	return rc, err
}

// Repair writes a damaged manifest again from its copy as a rewrite: a delete that comes
// between its read of the copy and its store wins, and neither the manifest nor its copy is
// left (the interleaving of repair and another gateway's delete).
func TestMendingAManifestLosesToADelete(t *testing.T) {
	ctx := context.Background()
	f, g, rep := mendDuringADelete(t, 74, func(files objectFiles) { files.flip("manifests/a") })
	dir := filepath.Join(f.dir, "repo")
	if len(rep.Problems) != 1 {
		t.Fatalf("check: %+v", rep)
	}
	if n, err := g.r.MendManifests(ctx, rep); err != nil || n != (repo.ManifestsMended{}) {
		t.Fatalf("mend during a delete: %+v, %v; want nothing stored", n, err)
	}
	for _, sub := range []string{"manifests", "manifest-copies"} {
		if _, err := os.Stat(filepath.Join(dir, sub, "a")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s/a after a delete that came during the mend: %v", sub, err)
		}
	}
	if _, err := f.r.GetManifest(ctx, "a"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("the deleted backup: %v", err)
	}
}

// Repair stores a missing copy of a manifest it read; a delete between that read and the store
// leaves the copy without its manifest. Nothing reads it (the backup stays deleted), and the
// next gc removes it.
func TestACopyStoredAfterADeleteIsNeverReadAndGCRemovesIt(t *testing.T) {
	ctx := context.Background()
	f, g, rep := mendDuringADelete(t, 75, func(files objectFiles) { files.remove("manifest-copies/a") })
	files := f.objectFiles(t)
	if !rep.OK() {
		t.Fatalf("check: %+v", rep)
	}
	if n, err := g.r.MendManifests(ctx, rep); err != nil || n != (repo.ManifestsMended{Copies: 1}) {
		t.Fatalf("mend during a delete: %+v, %v; want the copy stored", n, err)
	}
	if !files.exists("manifest-copies/a") || files.exists("manifests/a") {
		t.Fatal("want the copy left without its manifest")
	}
	if _, err := f.r.GetManifest(ctx, "a"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("the deleted backup with a copy left: %v", err)
	}
	f.gc(t)
	if files.exists("manifest-copies/a") {
		t.Fatal("gc left the copy of a deleted backup")
	}
	f.mustCheck(t)
}

// mendDuringADelete backs up "a" in a new fixture f, lets damage harm its objects, and checks
// it: it returns f, the check's report, and another index g of f's repository whose first read
// of a's manifest copy is followed by a delete of a through a third one (deletesOnCopyRead):
// repair's mend racing another gateway's delete.
func mendDuringADelete(t *testing.T, seed uint64, damage func(objectFiles)) (f, g *fixture, rep *repo.CheckReport) {
	t.Helper()
	f = newFixture(t, repo.InitOptions{})
	f.backup(t, "a", &memSource{data: randomVolume(seed, 1<<20)}, nil)
	other := f.peer(t, "other", repo.LockOptions{})
	damage(f.objectFiles(t))
	rep, err := f.r.Check(context.Background(), repo.CheckOptions{})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	g = f.wrapped(t, "index-g", repo.Options{ChunkCacheBytes: 8 << 20}, func(be backend.Backend) backend.Backend {
		return &deletesOnCopyRead{Backend: be, t: t, id: "a", other: other.r}
	})
	return f, g, rep
}

// objectFiles are the objects of a fixture's local repository as files, by key: for tests
// that damage them.
type objectFiles struct {
	t   *testing.T
	dir string
}

func (f *fixture) objectFiles(t *testing.T) objectFiles {
	return objectFiles{t: t, dir: filepath.Join(f.dir, "repo")}
}

func (o objectFiles) path(key string) string { return filepath.Join(o.dir, filepath.FromSlash(key)) }

func (o objectFiles) read(key string) []byte {
	o.t.Helper()
	data, err := os.ReadFile(o.path(key))
	if err != nil {
		o.t.Fatal(err)
	}
	return data
}

func (o objectFiles) write(key string, data []byte) {
	o.t.Helper()
	if err := os.WriteFile(o.path(key), data, 0o600); err != nil {
		o.t.Fatal(err)
	}
}

// flip changes one bit in the middle of the object, as bit rot does: the file's modification
// time (the time the store says it wrote the object) is kept.
func (o objectFiles) flip(key string) {
	o.t.Helper()
	at := o.modTime(key)
	data := o.read(key)
	data[len(data)/2] ^= 0x10
	o.write(key, data)
	o.setModTime(key, at)
}

// remove removes the object, as a removal outside cairn does.
func (o objectFiles) remove(key string) {
	o.t.Helper()
	if err := os.Remove(o.path(key)); err != nil {
		o.t.Fatal(err)
	}
}

func (o objectFiles) modTime(key string) time.Time {
	o.t.Helper()
	fi, err := os.Stat(o.path(key))
	if err != nil {
		o.t.Fatal(err)
	}
	return fi.ModTime()
}

func (o objectFiles) setModTime(key string, at time.Time) {
	o.t.Helper()
	if err := os.Chtimes(o.path(key), at, at); err != nil {
		o.t.Fatal(err)
	}
}

// keys returns the keys of the objects under prefix (a directory of the repository).
func (o objectFiles) keys(prefix string) []string {
	paths, _ := filepath.Glob(filepath.Join(o.path(prefix), "*"))
	keys := make([]string, len(paths))
	for i, p := range paths {
		keys[i] = prefix + "/" + filepath.Base(p)
	}
	return keys
}

func (o objectFiles) exists(key string) bool {
	_, err := os.Stat(o.path(key))
	return err == nil
}
