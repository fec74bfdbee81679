package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

const mib = 1 << 20

// pointInTime is one backup and the sha256 of the volume when it was taken.
type pointInTime struct {
	backup backupJSON
	sha    string
}

// chain takes a full backup of volume and then incrementals after scattered writes to it (each
// seeded by seed+i), and returns every point in time. volume may be an image file or a device.
func (r *cairnRepo) chain(volume string, incrementals int, seed int64) []pointInTime {
	r.t.Helper()
	points := []pointInTime{{sha: testutil.SHA256File(r.t, volume)}}
	points[0].backup = r.createBackup(volume)
	for i := 1; i <= incrementals; i++ {
		testutil.ScatterWrites(r.t, volume, seed+int64(i), 0.005, 4<<10, 64<<10)
		p := pointInTime{sha: testutil.SHA256File(r.t, volume)}
		if p.sha == points[i-1].sha {
			r.t.Fatalf("scattered writes left %s unchanged", volume)
		}
		p.backup = r.createBackup(volume, "--incremental")
		if !p.backup.IsIncremental || p.backup.ParentID != points[i-1].backup.ID {
			r.t.Fatalf("incremental %d: is_incremental=%v parent_id=%q, want true and %s", i,
				p.backup.IsIncremental, p.backup.ParentID, points[i-1].backup.ID)
		}
		points = append(points, p)
	}
	return points
}

// checkRestoresToFiles restores every point to a new file in dir and compares it by sha256.
func (r *cairnRepo) checkRestoresToFiles(points []pointInTime, dir string) {
	r.t.Helper()
	for i, p := range points {
		out := filepath.Join(dir, fmt.Sprintf("restore-%s.img", p.backup.ID))
		r.restoreTo(p.backup.ID, out)
		if got := testutil.SHA256File(r.t, out); got != p.sha {
			r.t.Errorf("point %d (backup %s) restored to a file: sha256 %s, want %s", i, p.backup.ID, got, p.sha)
		}
		if err := os.Remove(out); err != nil {
			r.t.Fatal(err)
		}
	}
}

// repoStats is the part of 'repo stats --format json' the tests read.
type repoStats struct {
	Backups   int   `json:"backups"`
	PackBytes int64 `json:"pack_bytes"`
	Packs     int   `json:"packs"`
}

func (r *cairnRepo) stats() repoStats {
	r.t.Helper()
	var st repoStats
	r.mustJSON(&st, "repo", "stats")
	return st
}

// checkClean runs 'repo check --read-data' and fails on any problem.
func (r *cairnRepo) checkClean() {
	r.t.Helper()
	if out := r.mustRun("repo", "check", "--read-data"); !checkFoundNothing(out) {
		r.t.Fatalf("repo check --read-data:\n%s", out)
	}
}

// checkFoundNothing reports whether the output of 'repo check' names no problem.
func checkFoundNothing(out string) bool {
	return !strings.Contains(out, "problem:") && strings.Contains(out, "no problems found")
}

// Scenario 1: a full and three incrementals of an image file, every point in time restored to
// a file and to a loop device; the incrementals store far less than the full.
func TestEngineChainImageFile(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	const size = 40 * mib
	testutil.WriteImage(t, vol, size, 1, testutil.Mixed)
	points := r.chain(vol, 3, 100)

	full := points[0].backup.Stats.NewBytes
	for i, p := range points[1:] {
		inc := p.backup.Stats.NewBytes
		t.Logf("incremental %d stored %d bytes, the full %d", i+1, inc, full)
		if inc <= 0 || inc > full/5 {
			t.Errorf("incremental %d stored %d bytes; want > 0 and far less than the full's %d", i+1, inc, full)
		}
		// Cross-check the JSON 'backup show' gives with what 'backup create' printed.
		if shown := r.showBackup(p.backup.ID); shown.Stats.NewBytes != inc || shown.Status != "available" {
			t.Errorf("backup show %s: %+v, want new_bytes %d and available", p.backup.ID, shown, inc)
		}
	}
	r.checkRestoresToFiles(points, dir)

	// One existing file, newest point first: each restore must replace every byte of the
	// previous one, holes included.
	same := filepath.Join(dir, "same.img")
	for i := len(points) - 1; i >= 0; i-- {
		r.restoreTo(points[i].backup.ID, same)
		if got := testutil.SHA256File(t, same); got != points[i].sha {
			t.Errorf("point %d restored over an earlier restore in %s: sha256 %s, want %s", i, same, got, points[i].sha)
		}
	}

	// A device larger than the volume, full of old random data: restoring must leave no old
	// byte behind in the first size bytes (zero blocks become real zeros on devices). Newest
	// first, so each older point has to overwrite what the newer one wrote.
	target := filepath.Join(dir, "target.img")
	testutil.WriteImage(t, target, size+8*mib, 2, testutil.Random)
	dev := testutil.LoopDevice(t, target, false)
	for i := len(points) - 1; i >= 0; i-- {
		r.restoreTo(points[i].backup.ID, dev)
		if got := testutil.SHA256Range(t, dev, size); got != points[i].sha {
			t.Errorf("point %d restored to %s: sha256 %s, want %s", i, dev, got, points[i].sha)
		}
	}
}

// Scenario 2: the source is a loop block device.
func TestEngineChainBlockDevice(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "src.img")
	testutil.WriteImage(t, img, 24*mib, 3, testutil.Mixed)
	dev := testutil.LoopDevice(t, img, false)
	points := r.chain(dev, 3, 200)
	for _, p := range points {
		if p.backup.Size != 24*mib {
			t.Errorf("backup %s of %s has size %d, want %d", p.backup.ID, dev, p.backup.Size, 24*mib)
		}
	}
	r.checkRestoresToFiles(points, dir)
}

// Scenario 3: only the latest backup of a chain can be deleted; gc reclaims the space of the
// deleted ones and what remains still restores.
func TestEngineDeleteRules(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 16*mib, 4, testutil.Mixed)
	points := r.chain(vol, 3, 300)
	id := func(i int) string { return points[i].backup.ID }

	msg := r.mustFail([]int{4}, "backup", "delete", "--yes", id(0))
	if !strings.Contains(msg, id(1)) {
		t.Errorf("deleting the full: %q does not name its dependant %s", msg, id(1))
	}
	msg = r.mustFail([]int{4}, "backup", "delete", "--yes", id(1))
	if !strings.Contains(msg, id(2)) {
		t.Errorf("deleting a middle incremental: %q does not name its dependant %s", msg, id(2))
	}
	if got := len(r.listBackups()); got != 4 {
		t.Fatalf("after refused deletes %d backups are listed, want 4", got)
	}

	before := r.stats()
	r.mustRun("backup", "delete", "--yes", id(3))
	r.mustRun("backup", "delete", "--yes", id(2))
	if got := r.listBackups(); len(got) != 2 {
		t.Fatalf("after deleting two, %d backups are listed, want 2: %+v", len(got), got)
	}
	r.mustFail([]int{3}, "backup", "show", id(3))
	r.mustRun("--quiet", "repo", "gc")
	after := r.stats()
	t.Logf("pack bytes before gc %d, after %d", before.PackBytes, after.PackBytes)
	if after.PackBytes >= before.PackBytes {
		t.Errorf("repo gc reclaimed nothing: pack_bytes %d before, %d after", before.PackBytes, after.PackBytes)
	}
	r.checkClean()
	r.checkRestoresToFiles(points[:2], dir)
}

// exportJSON is 'backup export --format json'.
type exportJSON struct {
	Service string `json:"backup_service"`
	URL     string `json:"backup_url"`
}

// Scenario 4: export, wipe the index, import, restore; bad imports are refused.
func TestEngineExportImport(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 12*mib, 5, testutil.Mixed)
	points := r.chain(vol, 1, 400)
	exports := make([]exportJSON, len(points))
	for i, p := range points {
		r.mustJSON(&exports[i], "backup", "export", p.backup.ID)
		if exports[i].Service == "" || exports[i].URL == "" {
			t.Fatalf("backup export %s: %+v", p.backup.ID, exports[i])
		}
	}

	// The index is a cache: wiped, it comes back from the repository by itself.
	if err := os.RemoveAll(filepath.Join(r.Dir, "index")); err != nil {
		t.Fatal(err)
	}
	if got := r.listBackups(); len(got) != 2 {
		t.Fatalf("after wiping the index 'backup list' shows %d backups, want both", len(got))
	}
	r.checkRestoresToFiles(points, dir)

	// Import brings back backups whose manifests are gone, as long as gc has not run.
	r.mustRun("backup", "delete", "--yes", points[1].backup.ID)
	r.mustRun("backup", "delete", "--yes", points[0].backup.ID)
	if got := r.listBackups(); len(got) != 0 {
		t.Fatalf("after deleting both 'backup list' shows %d backups", len(got))
	}
	// The incremental alone: self-contained.
	inc := exports[1]
	r.mustRun("backup", "import", inc.Service, inc.URL)
	r.checkRestoresToFiles(points[1:], dir)
	full := exports[0]
	r.mustRun("backup", "import", full.Service, full.URL)
	if got := len(r.listBackups()); got != 2 {
		t.Fatalf("after two imports %d backups are listed, want 2", got)
	}
	r.checkRestoresToFiles(points, dir)
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
	r.checkRestoresToFiles(points, dir)

	// A backup that exists is not imported twice.
	r.mustFail([]int{4}, "backup", "import", full.Service, full.URL)
	r.mustFail([]int{2}, "backup", "import", full.Service, "not a backup url")
	r.mustFail([]int{2}, "backup", "import", full.Service, "cairn1.")
	r.mustFail([]int{2}, "backup", "import", "cairn.backup.drivers.nfs", full.URL)
	mid := len(inc.URL) / 2
	flip := byte('A')
	if inc.URL[mid] == 'A' {
		flip = 'B'
	}
	tampered := inc.URL[:mid] + string(flip) + inc.URL[mid+1:]
	r.mustFail([]int{2}, "backup", "import", inc.Service, tampered)
	if got := len(r.listBackups()); got != 2 {
		t.Fatalf("after refused imports %d backups are listed, want 2", got)
	}

	// A deleted and garbage-collected backup cannot come back.
	r.mustRun("backup", "delete", "--yes", points[1].backup.ID)
	r.mustRun("--quiet", "repo", "gc")
	if msg := r.mustFail([]int{2}, "backup", "import", inc.Service, inc.URL); !strings.Contains(msg, "garbage-collected") {
		t.Errorf("import of a collected backup: %q", msg)
	}

	// Another repository's export does not fit this one.
	other := newCairnRepo(t, nil)
	other.mustFail([]int{2}, "backup", "import", full.Service, full.URL)
	if got := len(other.listBackups()); got != 0 {
		t.Errorf("a refused import into another repository left %d backups", got)
	}
}

// volumeJSON is the part of 'volume list --format json' the tests read.
type volumeJSON struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Path         string `json:"path"`
	Size         int64  `json:"size"`
	TrackChanges bool   `json:"track_changes"`
}

// Scenario 5: the index rebuilt from the backend alone has every backup, volume and chain.
func TestEngineRebuildIndex(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	testutil.WriteImage(t, a, 12*mib, 6, testutil.Mixed)
	testutil.WriteImage(t, b, 6*mib+4321, 7, testutil.Mixed)
	points := append(r.chain(a, 2, 500), r.chain(b, 1, 600)...)

	type chainLink struct {
		ID, VolumeID, ParentID, Status string
		Incremental                    bool
		Size                           int64
	}
	links := func() []chainLink {
		var out []chainLink
		for _, b := range r.listBackups() {
			out = append(out, chainLink{b.ID, b.VolumeID, b.ParentID, b.Status, b.IsIncremental, b.Size})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		return out
	}
	volumes := func() []volumeJSON {
		var vs []volumeJSON
		r.mustJSON(&vs, "volume", "list")
		sort.Slice(vs, func(i, j int) bool { return vs[i].ID < vs[j].ID })
		return vs
	}
	wantLinks, wantVolumes := links(), volumes()
	if len(wantLinks) != 5 || len(wantVolumes) != 2 {
		t.Fatalf("before the rebuild: %d backups, %d volumes; want 5 and 2", len(wantLinks), len(wantVolumes))
	}

	if err := os.RemoveAll(filepath.Join(r.Dir, "index")); err != nil {
		t.Fatal(err)
	}
	r.mustRun("--quiet", "repo", "rebuild-index")
	if got := links(); fmt.Sprint(got) != fmt.Sprint(wantLinks) {
		t.Errorf("backups after rebuild-index:\n%+v\nwant\n%+v", got, wantLinks)
	}
	gotVolumes := volumes()
	if len(gotVolumes) != len(wantVolumes) {
		t.Fatalf("volumes after rebuild-index: %+v, want %+v", gotVolumes, wantVolumes)
	}
	for i, v := range gotVolumes {
		w := wantVolumes[i]
		if v.ID != w.ID || v.Name != w.Name || v.Path != w.Path {
			t.Errorf("volume after rebuild-index: %+v, want %+v", v, w)
		}
	}
	r.checkRestoresToFiles(points, dir)
	r.checkClean()

	// The rebuilt index carries on: an incremental finds its parent, and gc after deleting
	// the newest two of a's chain keeps everything the rest needs.
	testutil.ScatterWrites(t, a, 550, 0.01, 4<<10, 64<<10)
	next := r.createBackup(a, "-i")
	if next.ParentID != points[2].backup.ID {
		t.Errorf("incremental after rebuild-index: parent %s, want %s", next.ParentID, points[2].backup.ID)
	}
	r.mustRun("backup", "delete", "--yes", next.ID)
	r.mustRun("backup", "delete", "--yes", points[2].backup.ID)
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
	r.checkRestoresToFiles(append(points[:2:2], points[3:]...), dir)
}

// packFiles lists the pack files of a local repository.
// waitForNewPack waits up to 30 s for the repository in repoDir to hold more than before pack
// files: a backup started meanwhile has stored data, and killing it now interrupts it.
func waitForNewPack(t *testing.T, repoDir string, before int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for len(packFiles(t, repoDir)) == before {
		if time.Now().After(deadline) {
			t.Fatal("no pack appeared within 30s of starting the backup")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func packFiles(t *testing.T, repoDir string) []string {
	t.Helper()
	var packs []string
	err := filepath.WalkDir(filepath.Join(repoDir, "packs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".") {
			packs = append(packs, path)
		}
		if os.IsNotExist(err) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return packs
}

// flipByte inverts the bits of the byte at off in path.
func flipByte(t *testing.T, path string, off int64) { xorAt(t, path, off, 0xff) }

// xorAt changes the byte at off of the file at path by mask, as bit rot does: in place, and
// with the file's modification time kept (the time a store says it wrote the object).
func xorAt(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= mask
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
}

// Scenario 6: a flipped byte in a pack is found by check and stops a restore naming the backup
// and an offset.
func TestEngineCorruption(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 8*mib, 8, testutil.Random)
	b := r.createBackup(vol)
	packs := []string{onlyPack(t, r)}
	fi, err := os.Stat(packs[0])
	if err != nil {
		t.Fatal(err)
	}
	flipByte(t, packs[0], fi.Size()/2)

	res := r.run("repo", "check", "--read-data")
	if res.Code != 8 {
		t.Fatalf("repo check --read-data on a flipped byte: exit %d, want 8\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	if packID := filepath.Base(packs[0]); !strings.Contains(res.Stdout+res.Stderr, packID) {
		t.Errorf("repo check does not name the damaged pack %s:\n%s%s", packID, res.Stdout, res.Stderr)
	}

	out := filepath.Join(dir, "restored.img")
	res = r.run("--quiet", "backup", "restore", "--yes", b.ID, "--to", out)
	msg := checkFailure(t, res, []int{8}, []string{"backup", "restore", "--yes", b.ID, "--to", out})
	if !strings.Contains(msg, b.ID) || !strings.Contains(msg, "offset") {
		t.Errorf("restore of a damaged backup: %q should name backup %s and an offset", msg, b.ID)
	}
	if strings.Contains(res.Stdout, out) {
		t.Errorf("a failed restore reported its target as done:\n%s", res.Stdout)
	}

	// A restore to a new volume must leave that volume marked as failed, not available.
	res = r.run("--quiet", "backup", "restore", "--yes", b.ID, "--name", "from-damaged")
	checkFailure(t, res, []int{8}, []string{"backup", "restore", "--yes", b.ID, "--name", "from-damaged"})
	var vols []struct {
		Name, Status string
	}
	r.mustJSON(&vols, "volume", "list")
	for _, v := range vols {
		if v.Name == "from-damaged" && v.Status == "available" {
			t.Errorf("volume %s restored from a damaged backup is listed as available", v.Name)
		}
	}
}

// A flipped byte in a backup's manifest and in its second copy is found by check and stops
// its restore (one intact copy restores: TestCorruptionMatrix).
func TestEngineCorruptManifest(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 12, testutil.Mixed)
	points := r.chain(vol, 0, 0)
	other := filepath.Join(dir, "other.img")
	testutil.WriteImage(t, other, 2*mib, 13, testutil.Mixed)
	intact := r.chain(other, 0, 0)
	r.checkClean()

	b := points[0].backup
	for _, sub := range []string{"manifests", "manifest-copies"} {
		manifest := filepath.Join(r.Dir, sub, b.ID)
		fi, err := os.Stat(manifest)
		if err != nil {
			t.Fatalf("manifest of backup %s: %v", b.ID, err)
		}
		flipByte(t, manifest, fi.Size()/2)
	}

	res := r.run("repo", "check")
	if res.Code != 8 || !strings.Contains(res.Stdout, b.ID) {
		t.Errorf("repo check with a damaged manifest: exit %d, want 8 naming backup %s\nstdout: %s\nstderr: %s", res.Code, b.ID, res.Stdout, res.Stderr)
	}
	if strings.Contains(res.Stdout, intact[0].backup.ID) {
		t.Errorf("repo check blames the intact backup %s too:\n%s", intact[0].backup.ID, res.Stdout)
	}
	msg := r.mustFail([]int{8}, "--quiet", "backup", "restore", "--yes", b.ID, "--to", filepath.Join(dir, "r.img"))
	if !strings.Contains(msg, b.ID) {
		t.Errorf("restore with a damaged manifest: %q does not name backup %s", msg, b.ID)
	}
	r.checkRestoresToFiles(intact, dir)
}

// Scenario 7: odd sizes restore byte-exact; a sparse 1 TiB image backs up in seconds.
func TestEngineVolumeSizes(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)

	odd := filepath.Join(dir, "odd.img")
	testutil.WriteImage(t, odd, 10*mib+12345, 9, testutil.Mixed)
	one := filepath.Join(dir, "one.img")
	if err := os.WriteFile(one, []byte{'x'}, 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.img")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, vol := range []string{odd, one, empty} {
		fi, err := os.Stat(vol)
		if err != nil {
			t.Fatal(err)
		}
		points := r.chain(vol, 0, 0)
		if points[0].backup.Size != fi.Size() {
			t.Errorf("backup of %s: size %d, want %d", vol, points[0].backup.Size, fi.Size())
		}
		if vol == odd { // the partial last block changes too
			testutil.ScatterWrites(t, odd, 700, 0.01, 4<<10, 64<<10)
			f, err := os.OpenFile(odd, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte("the last bytes changed"), fi.Size()-22); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			p := pointInTime{sha: testutil.SHA256File(t, odd), backup: r.createBackup(odd, "-i")}
			points = append(points, p)
		}
		r.checkRestoresToFiles(points, dir)
	}

	// 1 TiB, two small written regions; everything else a hole.
	huge := filepath.Join(dir, "huge.img")
	const hugeSize = 1 << 40
	regions := []struct {
		off  int64
		data []byte
	}{{3*mib + 777, make([]byte, 100<<10)}, {hugeSize - 300<<10, make([]byte, 200<<10)}}
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	for _, reg := range regions {
		_, _ = rand.Read(reg.data)
		if _, err := f.WriteAt(reg.data, reg.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(hugeSize); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b := r.createBackup(huge)
	took := time.Since(start)
	t.Logf("backup of a sparse 1 TiB image took %v", took)
	if took > 15*time.Second {
		t.Errorf("backup of a sparse 1 TiB image took %v; holes should be skipped (SEEK_DATA)", took)
	}
	if b.Size != hugeSize {
		t.Errorf("backup of the 1 TiB image has size %d", b.Size)
	}
	// An incremental of the unchanged image adds well under 1 MiB.
	if inc := r.createBackup(huge, "-i"); inc.Stats.NewBytes >= mib {
		t.Errorf("incremental of an unchanged sparse 1 TiB image stored %d bytes, want < 1 MiB", inc.Stats.NewBytes)
	}
	out := filepath.Join(dir, "huge-restored.img")
	start = time.Now()
	r.restoreTo(b.ID, out)
	t.Logf("restore of the sparse 1 TiB image took %v", time.Since(start))
	rf, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	st, err := rf.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != hugeSize {
		t.Fatalf("restored 1 TiB image has %d bytes", st.Size())
	}
	if blocks := st.Sys().(*syscall.Stat_t).Blocks; blocks*512 > 64*mib {
		t.Errorf("restored 1 TiB image allocates %d bytes; want it sparse", blocks*512)
	}
	for _, reg := range regions {
		got := make([]byte, len(reg.data)+2*4096)
		if _, err := rf.ReadAt(got, reg.off-4096); err != nil && reg.off+int64(len(reg.data)) < hugeSize {
			t.Fatal(err)
		}
		want := append(append(make([]byte, 4096), reg.data...), make([]byte, 4096)...)
		if reg.off+int64(len(reg.data))+4096 > hugeSize {
			got, want = got[:len(reg.data)+4096], want[:len(reg.data)+4096]
		}
		if !bytes.Equal(got, want) {
			t.Errorf("restored 1 TiB image differs around offset %d", reg.off)
		}
	}
}

// Scenario 8: a backup killed with SIGKILL never shows as available; earlier backups restore
// and gc + check come out clean.
func TestEngineKilledBackup(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	small := filepath.Join(dir, "small.img")
	testutil.WriteImage(t, small, 8*mib, 10, testutil.Mixed)
	earlier := r.chain(small, 1, 800)

	big := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, big, 300*mib, 11, testutil.Random)
	packsBefore, statsBefore := len(packFiles(t, r.Dir)), r.stats()
	cmd := startCairn(t, r.Env, "--quiet", "backup", "create", big, "--name", "killed")
	waitForNewPack(t, r.Dir, packsBefore)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the backup finished before it could be killed (%v); make the volume larger", err)
	}

	var killed *backupJSON
	bs := r.listBackups()
	for i := range bs {
		if bs[i].Name == "killed" {
			killed = &bs[i]
		}
	}
	if killed == nil {
		t.Fatalf("the killed backup is not listed: %+v", bs)
	}
	if killed.Status != "error" {
		t.Errorf("killed backup %s has status %q, want error", killed.ID, killed.Status)
	}
	r.checkRestoresToFiles(earlier, dir)
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
	// Whatever the killed backup wrote is garbage: gc takes the repository back to its size
	// before the kill.
	if after := r.stats(); after.PackBytes > statsBefore.PackBytes || len(packFiles(t, r.Dir)) > packsBefore {
		t.Errorf("after gc: %d pack bytes in %d pack files; before the killed backup %d in %d",
			after.PackBytes, len(packFiles(t, r.Dir)), statsBefore.PackBytes, packsBefore)
	}
	r.checkRestoresToFiles(earlier, dir)
}

// grepTree returns the files under root (skipping the directory skip) that contain needle.
func grepTree(t *testing.T, root, skip string, needle []byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == skip {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// Scenario 11: an encrypted repository keeps names and data unreadable, refuses a wrong
// passphrase and changes its passphrase.
func TestEngineEncryptedRepository(t *testing.T) {
	dir := t.TempDir()
	const volName = "zanzibar-secret-volume"
	marker := []byte("CAIRN-PLAINTEXT-MARKER-5f3e9a")
	vol := filepath.Join(dir, volName+".img")
	// Random bytes keep the compressor from hiding the marker, so the unencrypted control
	// repository below does show it.
	data := make([]byte, 2*mib)
	_, _ = rand.Read(data)
	for off := 0; off+len(marker) < len(data); off += 16 << 10 {
		copy(data[off+100:], marker)
	}
	if err := os.WriteFile(vol, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sha := testutil.SHA256File(t, vol)

	plain := newCairnRepo(t, nil)
	plain.createBackup(vol)
	if hits := grepTree(t, plain.Dir, filepath.Join(plain.Dir, "index"), marker); len(hits) == 0 {
		t.Fatal("control: the marker is not found in an unencrypted repository, so the grep proves nothing")
	}

	// A new repository is encrypted unless asked otherwise; without a passphrase and a
	// terminal to ask on, init refuses in one line naming every way out and leaves nothing.
	bare := filepath.Join(dir, "bare-repo")
	msg := checkFailure(t, runCairn(t, []string{"CAIRN_REPO=" + bare}, "repo", "init"), []int{2}, []string{"repo", "init"})
	for _, want := range []string{"--password-file", "CAIRN_PASSWORD", "--encryption none"} {
		if !strings.Contains(msg, want) {
			t.Errorf("repo init without a passphrase: %q does not suggest %s", msg, want)
		}
	}
	if _, err := os.Stat(bare); !os.IsNotExist(err) {
		t.Errorf("a refused repo init left %s behind (%v)", bare, err)
	}

	const pw1, pw2 = "first passphrase", "second passphrase"
	r := newCairnRepo(t, []string{"CAIRN_PASSWORD=" + pw1}) // encrypted: the default
	var cfg struct{ Encryption string }
	r.mustJSON(&cfg, "repo", "stats")
	if cfg.Encryption != "aes-256-gcm" {
		t.Fatalf("repo init with a passphrase and no --encryption: encryption %q, want aes-256-gcm", cfg.Encryption)
	}
	b := r.createBackup(vol, "--name", "zanzibar-backup")
	points := []pointInTime{{backup: b, sha: sha}}
	r.checkRestoresToFiles(points, dir)
	for _, needle := range [][]byte{marker, []byte(volName), []byte("zanzibar-backup")} {
		if hits := grepTree(t, r.Dir, filepath.Join(r.Dir, "index"), needle); len(hits) > 0 {
			t.Errorf("plaintext %q found in %v", needle, hits)
		}
	}

	wrong := []string{"CAIRN_REPO=" + r.Dir, "CAIRN_PASSWORD=not the passphrase"}
	checkFailure(t, runCairn(t, wrong, "backup", "list"), []int{6}, []string{"backup", "list"})
	// No passphrase and no terminal to ask on.
	msg = checkFailure(t, runCairn(t, []string{"CAIRN_REPO=" + r.Dir}, "backup", "list"), []int{2}, []string{"backup", "list"})
	if !strings.Contains(msg, "CAIRN_PASSWORD") {
		t.Errorf("without a passphrase: %q should say how to give one", msg)
	}
	// --password-file works like the variable.
	pwFile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwFile, []byte(pw1+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if res := runCairn(t, []string{"CAIRN_REPO=" + r.Dir}, "--password-file", pwFile, "backup", "show", b.ID); res.Code != 0 {
		t.Errorf("--password-file: exit %d: %s", res.Code, res.Stderr)
	}
	// An empty one is named, not taken for no passphrase given.
	empty := filepath.Join(dir, "empty-pw")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	msg = checkFailure(t, runCairn(t, []string{"CAIRN_REPO=" + r.Dir}, "--password-file", empty, "backup", "list"), []int{2}, []string{"backup", "list", "(empty password file)"})
	if !strings.Contains(msg, empty+" is empty") {
		t.Errorf("empty password file: %q should name it", msg)
	}

	// No new passphrase and no terminal to ask on: a clear refusal, nothing changed.
	r.mustFail([]int{2}, "repo", "passwd")
	r.Env = append(r.Env, "CAIRN_NEW_PASSWORD="+pw2)
	r.mustRun("repo", "passwd")
	checkFailure(t, runCairn(t, []string{"CAIRN_REPO=" + r.Dir, "CAIRN_PASSWORD=" + pw1}, "backup", "list"),
		[]int{6}, []string{"backup", "list", "(old passphrase)"})
	r.Env = []string{"CAIRN_REPO=" + r.Dir, "CAIRN_PASSWORD=" + pw2}
	r.checkRestoresToFiles(points, dir)
	r.checkClean()
}

// A pack lost from the backend is found by check, and a restore that needs it fails as damage.
func TestEngineMissingPack(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 14, testutil.Random)
	b := r.createBackup(vol)
	packs := []string{onlyPack(t, r)}
	if err := os.Remove(packs[0]); err != nil {
		t.Fatal(err)
	}
	res := r.run("repo", "check")
	if res.Code != 8 || !strings.Contains(res.Stdout, filepath.Base(packs[0])) {
		t.Errorf("repo check without a pack: exit %d, want 8 naming the pack\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	msg := r.mustFail([]int{8}, "--quiet", "backup", "restore", "--yes", b.ID, "--to", filepath.Join(dir, "r.img"))
	if !strings.Contains(msg, b.ID) {
		t.Errorf("restore without its pack: %q does not name backup %s", msg, b.ID)
	}
	// The failed restore created r.img: it removes it rather than leave wrong bytes behind.
	if _, err := os.Stat(filepath.Join(dir, "r.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed restore left the file it created: %v", err)
	}
}

// allocated returns the bytes the file at path occupies on disk.
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

// Zero blocks, written or holes, restore as holes in a file, also over a file full of old data.
func TestEngineRestoreHoles(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	f, err := os.Create(vol)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 2*mib)
	_, _ = rand.Read(data)
	if _, err := f.WriteAt(data, 3*mib); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4*mib), 8*mib); err != nil { // written zeros
		t.Fatal(err)
	}
	if err := f.Truncate(20 * mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	points := r.chain(vol, 0, 0)
	old := filepath.Join(dir, "old.img")
	testutil.WriteImage(t, old, 20*mib, 15, testutil.Random)
	for _, out := range []string{filepath.Join(dir, "new.img"), old} {
		r.restoreTo(points[0].backup.ID, out)
		if got := testutil.SHA256File(t, out); got != points[0].sha {
			t.Errorf("restore to %s: sha256 %s, want %s", out, got, points[0].sha)
		}
		if got := allocated(t, out); got > 2*mib+256<<10 {
			t.Errorf("restore to %s allocates %d bytes; only the 2 MiB of data should be", out, got)
		}
	}
}

// A volume whose size is not a multiple of the block size, nor of the device's sector size,
// restores onto a larger loop device byte-exact (the partial last block cannot go O_DIRECT).
func TestEngineOddSizeToDevice(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "odd.img")
	const size = 10*mib + 12345
	testutil.WriteImage(t, vol, size, 16, testutil.Random)
	points := r.chain(vol, 1, 1600)
	target := filepath.Join(dir, "target.img")
	testutil.WriteImage(t, target, 12*mib, 17, testutil.Random)
	dev := testutil.LoopDevice(t, target, false)
	for i := len(points) - 1; i >= 0; i-- {
		r.restoreTo(points[i].backup.ID, dev)
		if got := testutil.SHA256Range(t, dev, size); got != points[i].sha {
			t.Errorf("point %d restored to %s: sha256 %s, want %s", i, dev, got, points[i].sha)
		}
	}
}

// A manifest is authenticated in an unencrypted repository too: a changed size is damage,
// found by check and refused by restore, never restored as wrong bytes.
func TestEngineTamperedManifest(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 15, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)
	tamper := func(sub string) {
		t.Helper()
		path := filepath.Join(r.Dir, sub, b.ID)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tampered := bytes.Replace(raw, []byte(fmt.Sprintf(`"size":%d`, 4*mib)), []byte(`"size":3000000`), 1)
		if bytes.Equal(tampered, raw) {
			t.Fatalf("%s does not hold the size in clear: %q", path, raw)
		}
		if err := os.WriteFile(path, tampered, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tamper("manifests")
	res := r.run("repo", "check", "--read-data")
	if res.Code != 8 || !strings.Contains(res.Stdout, b.ID) || !strings.Contains(res.Stdout, "manifest") {
		t.Errorf("check of a tampered manifest: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	// Its second copy stands in, not the tampered size: the restore is the volume's 4 MiB.
	out := filepath.Join(dir, "out.img")
	r.mustRun("--quiet", "backup", "restore", "--yes", b.ID, "--to", out)
	if got := testutil.SHA256File(t, out); got != sha {
		t.Fatalf("restore through the second copy: sha256 %s, want %s", got, sha)
	}
	os.Remove(out)
	tamper("manifests") // the restore's end rewrote the manifest whole
	tamper("manifest-copies")
	r.mustFail([]int{8}, "--quiet", "backup", "restore", "--yes", b.ID, "--to", out)
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused restore left %s: %v", out, err)
	}
}

// A damaged index is a cache, not a dead end: it is moved aside and a new one catches up
// from the repository, with every backup restorable.
func TestEngineDamagedIndexMovedAside(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 16, testutil.Mixed)
	points := r.chain(vol, 1, 500)
	r.mustRun("volume", "create", "--size", "1M", "--name", "spare", "--description", "no backups")
	ssts, _ := filepath.Glob(filepath.Join(r.Dir, "index", "*.sst"))
	vlogs, _ := filepath.Glob(filepath.Join(r.Dir, "index", "MANIFEST"))
	damaged := append(ssts, vlogs...)
	if len(damaged) == 0 {
		t.Fatal("no index files to damage")
	}
	for _, f := range damaged {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 64 && i < len(b); i++ {
			b[(i*7919)%len(b)] ^= 0xA5
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	res := r.run("--format", "json", "backup", "list")
	if res.Code != 0 {
		t.Fatalf("backup list with a damaged index: exit %d: %s", res.Code, res.Stderr)
	}
	var bs []backupJSON
	if err := json.Unmarshal([]byte(res.Stdout), &bs); err != nil || len(bs) != len(points) {
		t.Fatalf("after moving the damaged index aside: %v, %d backups, want %d", err, len(bs), len(points))
	}
	if m, _ := filepath.Glob(filepath.Join(r.Dir, "index.damaged-*")); len(m) != 1 {
		t.Errorf("the damaged index was not kept aside: %v", m)
	}
	r.checkRestoresToFiles(points, dir)
	var vs []volumeJSON
	r.mustJSON(&vs, "volume", "list")
	found := false
	for _, v := range vs {
		found = found || v.Name == "spare"
	}
	if !found {
		t.Errorf("the volume without backups did not come back: %+v", vs)
	}
	r.checkClean()
}

// A damaged config says so, once, instead of showing up as damage in every blob. Its second
// copy stands in: check reports the config, repair writes it again, and every backup restores.
// With the copy damaged too, every command says so.
func TestEngineDamagedConfig(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 17, testutil.Random)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)
	damage := func(name string) {
		t.Helper()
		path := filepath.Join(r.Dir, name)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(raw, []byte(`"master_key": "`)) + len(`"master_key": "`) + 5
		orig := raw[i]
		raw[i] = 'A'
		if orig == 'A' {
			raw[i] = 'B'
		}
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	damage("config")
	res := r.run("repo", "check")
	if res.Code != 8 || !strings.Contains(res.Stdout, "config is damaged") || !strings.Contains(res.Stdout, "second copy is intact") {
		t.Errorf("check with a damaged config: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	r.restoreMatches(b.ID, sha, dir)
	if out := r.mustRun("repo", "repair"); !strings.Contains(out, "wrote the config again from its second copy") {
		t.Errorf("repair of a damaged config: %s", out)
	}
	r.checkClean()
	r.restoreMatches(b.ID, sha, dir)

	damage("config")
	damage("config-copy")
	msg := r.mustFail([]int{8}, "repo", "check")
	if !strings.Contains(msg, "config") || !strings.Contains(msg, "damaged too") {
		t.Errorf("check with a damaged config and copy: %q", msg)
	}
}

// An encrypted repository with one passphrase, its key object damaged: the key's second copy
// opens it, every backup restores, check says which key object, and repair writes it again.
// With the copy damaged too, nothing opens (exit 8), as before the copy.
func TestEngineDamagedKeyObject(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, []string{"CAIRN_PASSWORD=only one"})
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 27, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)
	keys, err := filepath.Glob(filepath.Join(r.Dir, "keys", "*"))
	if err != nil || len(keys) != 1 {
		t.Fatalf("key objects: %v, %v; want one", keys, err)
	}
	id := filepath.Base(keys[0])
	copyPath := filepath.Join(r.Dir, "key-copies", id)
	flipByte(t, keys[0], 40)
	r.restoreMatches(b.ID, sha, dir)
	if out := r.mustRun("repo", "key", "list"); !strings.Contains(out, "second copy is intact") {
		t.Errorf("key list with a damaged key object:\n%s", out)
	}
	res := r.run("repo", "check")
	if res.Code != 8 || !strings.Contains(res.Stdout, "key object "+id+" is damaged") {
		t.Errorf("check with a damaged key object: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if out := r.mustRun("repo", "repair"); !strings.Contains(out, "mended 1 key objects") {
		t.Errorf("repair of a damaged key object:\n%s", out)
	}
	r.checkClean()
	r.restoreMatches(b.ID, sha, dir)

	flipByte(t, keys[0], 40)
	flipByte(t, copyPath, 40)
	if msg := r.mustFail([]int{8}, "backup", "list"); !strings.Contains(msg, "damaged") {
		t.Errorf("a key object and its copy damaged: %q", msg)
	}

	// The key object removed outside cairn, its copy left: until 2026-12-07 (later that day)
	// the repository no longer opened ("has no key objects", exit 1) and nothing named the
	// copy. Now every command names it and 'repo key restore' writes the key object again.
	flipByte(t, copyPath, 40) // the copy intact again (a flip is its own undo)
	if err := os.Remove(keys[0]); err != nil {
		t.Fatal(err)
	}
	if msg := r.mustFail([]int{8}, "backup", "list"); !strings.Contains(msg, "key-copies/"+id+" is its intact second copy") ||
		!strings.Contains(msg, "'cairn repo key restore'") {
		t.Errorf("the only key object removed: %q", msg)
	}
	if out := r.mustRun("repo", "key", "restore"); out != "key "+id+" written again from its second copy: this passphrase opens the repository again\n" {
		t.Errorf("key restore printed %q", out)
	}
	r.mustFail([]int{4}, "repo", "key", "restore") // nothing to restore
	r.checkClean()
	r.restoreMatches(b.ID, sha, dir)
}

// A truncated pack: check names the backup and the byte range it costs (here the block map's
// node at the pack's end: the whole volume) and goes on to the others; restore exits 8
// (damage), not 1.
func TestEngineTruncatedPack(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	damaged := filepath.Join(dir, "a.img")
	testutil.WriteImage(t, damaged, 3*mib, 18, testutil.Random)
	a := r.createBackup(damaged)
	pack := onlyPack(t, r)
	intact := filepath.Join(dir, "b.img")
	testutil.WriteImage(t, intact, 3*mib, 19, testutil.Random)
	sha := testutil.SHA256File(t, intact)
	b := r.createBackup(intact)
	fi, err := os.Stat(pack)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(pack, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	res := r.run("repo", "check", "--read-data")
	if res.Code != 8 {
		t.Fatalf("check of a truncated pack: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	lines := 0
	for _, l := range strings.Split(res.Stdout, "\n") {
		if strings.HasPrefix(l, "problem: damaged data: backup "+a.ID+": bytes ") {
			lines++
		}
		if strings.Contains(l, b.ID) {
			t.Errorf("check blames the intact backup: %s", l)
		}
	}
	if lines < 1 {
		t.Errorf("check lists no damaged range of backup %s:\n%s", a.ID, res.Stdout)
	}
	r.mustFail([]int{8}, "--quiet", "backup", "restore", "--yes", a.ID, "--to", filepath.Join(dir, "a-out.img"))
	r.restoreTo(b.ID, filepath.Join(dir, "b-out.img"))
	if got := testutil.SHA256File(t, filepath.Join(dir, "b-out.img")); got != sha {
		t.Errorf("the intact backup restored differs")
	}
}

// A repository on read-only media (here a read-only bind mount) restores: list, show, export,
// check and restore work with the index built in a temporary place; writes are refused with
// one clear line; and --read-only on a writable repository writes nothing at all.
func TestEngineReadOnlyRepository(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 6*mib, 20, testutil.Mixed)
	points := r.chain(vol, 1, 600)

	ro := bindReadOnly(t, r.Dir, filepath.Join(dir, "ro"))
	rr := &cairnRepo{t: t, Dir: ro, Env: []string{"CAIRN_REPO=" + ro}}
	if got := rr.listBackups(); len(got) != len(points) {
		t.Fatalf("read-only repository lists %d backups, want %d", len(got), len(points))
	}
	rr.showBackup(points[1].backup.ID)
	rr.mustRun("backup", "export", points[0].backup.ID)
	rr.checkClean()
	rr.checkRestoresToFiles(points, dir)
	msg := rr.mustFail([]int{6}, "--quiet", "backup", "create", vol)
	if !strings.Contains(msg, "read-only") {
		t.Errorf("backup to a read-only repository: %q", msg)
	}
	rr.mustFail([]int{6}, "--quiet", "repo", "gc")
	// The FUSE tree of the read-only repository: every point in time byte-exact.
	m := mountCairn(t, rr)
	for _, p := range points {
		img := m.path("backups", p.backup.ID, "disk.img")
		if got := testutil.SHA256File(t, img); got != p.sha {
			t.Errorf("read-only mount: %s: sha256 %s, want %s", img, got, p.sha)
		}
	}
	m.stop(syscall.SIGTERM)

	// --read-only on the writable repository: the same reads, and not one byte written.
	before := treeListing(t, r.Dir)
	r.mustRun("--read-only", "backup", "list")
	r.mustFail([]int{6}, "--read-only", "--quiet", "backup", "create", vol)
	out := filepath.Join(dir, "ro-restore.img")
	r.mustRun("--read-only", "--quiet", "backup", "restore", "--yes", points[1].backup.ID, "--to", out)
	if got := testutil.SHA256File(t, out); got != points[1].sha {
		t.Errorf("restore with --read-only: sha256 %s, want %s", got, points[1].sha)
	}
	if after := treeListing(t, r.Dir); after != before {
		t.Errorf("--read-only changed the repository:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// A read-only repository's temporary index goes when the command ends, and also when the
// command cannot open the repository at all (here: a wrong passphrase, found while the index
// was being opened beside the key derivation).
func TestReadOnlyRepositoryLeavesNoTemporaryIndex(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, []string{"CAIRN_PASSWORD=right horse"})
	ro := bindReadOnly(t, r.Dir, filepath.Join(dir, "ro"))
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	left := func(when string) {
		t.Helper()
		entries, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("%s: %s left in the temporary directory", when, e.Name())
		}
	}
	env := []string{"CAIRN_REPO=" + ro, "TMPDIR=" + tmp}
	runCairnOK(t, append(env, "CAIRN_PASSWORD=right horse"), "backup", "list")
	left("after backup list")
	res := runCairn(t, append(env, "CAIRN_PASSWORD=wrong horse"), "backup", "list")
	if line := checkFailure(t, res, []int{6}, []string{"backup", "list", "(wrong passphrase)"}); !strings.Contains(line, "passphrase") {
		t.Errorf("wrong passphrase: %q should say so", line)
	}
	left("after a wrong passphrase")
}

// bindReadOnly bind-mounts src read-only at dst (made here, unmounted when the test ends),
// the way read-only media look to cairn, and returns dst.
func bindReadOnly(t *testing.T, src, dst string) string {
	t.Helper()
	if err := os.Mkdir(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", "-o", "ro", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("mount --bind -o ro: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dst).Run() })
	// Older util-linux ignores ro on the first bind: remount.
	_ = exec.Command("mount", "-o", "remount,bind,ro", dst).Run()
	if err := os.WriteFile(filepath.Join(dst, "probe"), nil, 0o600); err == nil {
		t.Fatal("the bind mount is writable")
	}
	return dst
}

// treeListing lists every file under dir with its size and modification time, except the
// index (a cache the read-only commands do not use either way).
func treeListing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if fi.Mode().IsRegular() && !strings.HasPrefix(rel, "index"+string(filepath.Separator)) {
			fmt.Fprintf(&b, "%s %d %d\n", rel, fi.Size(), fi.ModTime().UnixNano())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// A damaged backup (its manifest and the manifest's second copy) stops gc (what it needs is
// unknown); repo repair lists it with what it lost, forgets it when asked, and gc runs again
// without touching the other backups.
func TestEngineRepairForgetsADamagedBackup(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	a := filepath.Join(dir, "a.img")
	testutil.WriteImage(t, a, 3*mib, 21, testutil.Random)
	ba := r.createBackup(a)
	b := filepath.Join(dir, "b.img")
	testutil.WriteImage(t, b, 3*mib, 22, testutil.Random)
	sha := testutil.SHA256File(t, b)
	bb := r.createBackup(b)
	gone := r.createBackup(a, "--incremental") // deleted: garbage for gc
	r.mustRun("backup", "delete", "--yes", gone.ID)
	for _, sub := range []string{"manifests", "manifest-copies"} { // one intact copy would save it
		path := filepath.Join(r.Dir, sub, ba.ID)
		flipByte(t, path, fileSize(t, path)/2)
	}
	if msg := r.mustFail([]int{8}, "--quiet", "repo", "gc"); !strings.Contains(msg, ba.ID) || !strings.Contains(msg, "nothing was deleted") {
		t.Errorf("gc with a damaged manifest: %q", msg)
	}
	res := r.run("repo", "repair")
	if res.Code != 8 || !strings.Contains(res.Stdout, ba.ID) || strings.Contains(res.Stdout, bb.ID) {
		t.Errorf("repair: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	r.mustFail([]int{2}, "repo", "repair", "--forget", bb.ID) // not damaged: refused
	r.mustRun("repo", "repair", "--forget", ba.ID)
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
	r.restoreMatches(bb.ID, sha, dir)
}

// restore --salvage writes what survives of a damaged backup, zeros for what does not, and
// lists the lost ranges; every byte outside them matches the source.
func TestEngineRestoreSalvage(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, []string{}, "--compression", "none")
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 23, testutil.Random)
	b := r.createBackup(vol)
	pack := onlyPack(t, r)
	f, err := os.OpenFile(pack, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{100000, 1500000, 3000000} { // inside data blobs (the tree is at the end)
		if _, err := f.WriteAt([]byte{0xde, 0xad}, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	out := filepath.Join(dir, "out.img")
	r.mustFail([]int{8}, "--quiet", "backup", "restore", "--yes", b.ID, "--to", out)
	var res struct {
		Lost      [][2]int64 `json:"lost"`
		LostBytes int64      `json:"lost_bytes"`
	}
	r.mustJSON(&res, "--quiet", "backup", "restore", "--yes", b.ID, "--to", out, "--salvage")
	if len(res.Lost) != 3 || res.LostBytes != 3*16384 {
		t.Fatalf("salvage lost %+v, want three 16 KiB blocks", res)
	}
	src, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil || len(got) != len(src) {
		t.Fatalf("salvaged file: %v, %d bytes", err, len(got))
	}
	for _, l := range res.Lost {
		if !bytes.Equal(got[l[0]:l[1]], make([]byte, l[1]-l[0])) {
			t.Errorf("lost range %v is not zeros", l)
		}
		copy(got[l[0]:l[1]], src[l[0]:l[1]])
	}
	if !bytes.Equal(got, src) {
		t.Error("bytes outside the lost ranges differ from the source")
	}
	var shown struct {
		LastRestore struct{ Result string } `json:"last_restore"`
	}
	r.mustJSON(&shown, "backup", "show", b.ID)
	if shown.LastRestore.Result != "salvaged" {
		t.Errorf("last_restore after a salvage: %+v", shown.LastRestore)
	}
}

// backup verify reads every block of a backup and checks it, writing nothing: a sound backup
// is ok, a damaged one fails with the corrupt exit code and lists the ranges a restore would
// lose (the same as a salvage's), and verifying several goes on past the damaged one.
func TestEngineVerifyBackup(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, []string{}, "--compression", "none")
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 29, testutil.Random)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)
	type verified struct {
		BackupID  string     `json:"backup_id"`
		Result    string     `json:"result"`
		Lost      [][2]int64 `json:"lost"`
		LostBytes int64      `json:"lost_bytes"`
	}
	var ok []verified
	r.mustJSON(&ok, "--quiet", "backup", "verify", b.ID)
	if len(ok) != 1 || ok[0].Result != "ok" || ok[0].LostBytes != 0 || ok[0].BackupID != b.ID {
		t.Fatalf("verify of a sound backup: %+v", ok)
	}
	r.restoreMatches(b.ID, sha, dir)
	var shown struct {
		LastVerify struct {
			Result    string `json:"result"`
			LostBytes int64  `json:"lost_bytes"`
		} `json:"last_verify"`
	}
	r.mustJSON(&shown, "backup", "show", b.ID)
	if shown.LastVerify.Result != "ok" {
		t.Errorf("last_verify after a sound verification: %+v", shown.LastVerify)
	}

	other := filepath.Join(dir, "other.img")
	testutil.WriteImage(t, other, 1*mib, 30, testutil.Mixed)
	pack := onlyPack(t, r) // the second backup's blocks go to a pack of their own
	ob := r.createBackup(other)
	f, err := os.OpenFile(pack, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{100000, 1500000, 3000000} { // inside data blobs
		if _, err := f.WriteAt([]byte{0xde, 0xad}, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	line := r.mustFail([]int{8}, "--quiet", "backup", "verify", b.ID)
	if !strings.Contains(line, "49152 bytes in 3 ranges cannot be restored") {
		t.Errorf("verify of the damaged backup said %q", line)
	}
	res := r.run("--quiet", "--format", "json", "backup", "verify", ob.ID, b.ID)
	var got []verified
	if err := json.Unmarshal([]byte(res.Stdout), &got); err != nil || res.Code != 8 || len(got) != 2 {
		t.Fatalf("verify of both: exit %d, %v\n%s%s", res.Code, err, res.Stdout, res.Stderr)
	}
	if got[0].Result != "ok" || got[1].Result != "damaged" || got[1].LostBytes != 3*16384 || len(got[1].Lost) != 3 {
		t.Fatalf("verify of both: %+v", got)
	}
	if !strings.Contains(res.Stderr, "1 of 2 backups failed verification ("+b.ID+")") {
		t.Errorf("verify of both: stderr %q", res.Stderr)
	}
	var salvage struct {
		Lost [][2]int64 `json:"lost"`
	}
	r.mustJSON(&salvage, "--quiet", "backup", "restore", "--yes", b.ID, "--to", filepath.Join(dir, "out.img"), "--salvage")
	if fmt.Sprint(salvage.Lost) != fmt.Sprint(got[1].Lost) {
		t.Errorf("verify lost %v, the salvage %v", got[1].Lost, salvage.Lost)
	}
	r.mustJSON(&shown, "backup", "show", b.ID)
	if shown.LastVerify.Result != "damaged" || shown.LastVerify.LostBytes != 3*16384 {
		t.Errorf("last_verify after finding damage: %+v", shown.LastVerify)
	}
}

// repo repair stores lost blocks again from a registered volume that still holds them (the
// same bytes hash to the same address): the damaged backup restores byte-exact again.
func TestEngineRepairHealsFromVolume(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil, "--compression", "none")
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 24, testutil.Random)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)
	pack := onlyPack(t, r)
	f, err := os.OpenFile(pack, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{200000, 2500000} {
		if _, err := f.WriteAt([]byte{0xbe, 0xef}, off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	res := r.run("repo", "check", "--read-data")
	if res.Code != 8 || !strings.Contains(res.Stdout, "backup "+b.ID+": bytes ") {
		t.Fatalf("check before repair: exit %d\n%s", res.Code, res.Stdout)
	}
	out := r.mustRun("repo", "repair")
	if !strings.Contains(out, "stored again 2 lost blocks") || !strings.Contains(out, "no damaged backups") {
		t.Errorf("repair:\n%s", out)
	}
	r.restoreMatches(b.ID, sha, dir)
	// The damaged copies are garbage now: gc repacks them away and check is clean.
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
	r.restoreMatches(b.ID, sha, dir)
}

// Every pack of a backup damaged, block map nodes and all, while its volume still holds the
// data: repair builds the lost nodes again from the volume's blocks (their keyed addresses
// prove them the same), stores again the blocks the nodes then show lost, and the backup
// restores byte-exact, with nothing left damaged. Before (found by hand, 2026-12-07), a lost
// node stayed lost: repair stored the blocks it could see and exited 8, the backup 12 MiB short.
func TestEngineRepairBuildsLostBlockMapNodesAgain(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil, "--compression", "none")
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 24*mib, 26, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)
	for _, pack := range packFiles(t, r.Dir) {
		st, err := os.Stat(pack)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(1000); off < st.Size()-4096; off += 8 << 10 {
			flipAt(t, pack, off)
		}
	}
	if res := r.run("backup", "verify", b.ID); res.Code != 8 {
		t.Fatalf("verify of the damaged backup: exit %d, want 8: %s%s", res.Code, res.Stdout, res.Stderr)
	}
	out := r.mustRun("repo", "repair")
	if !strings.Contains(out, "lost block map nodes found in volumes") || !strings.Contains(out, "no damaged backups") {
		t.Fatalf("repair of a backup whose block map is lost too:\n%s", out)
	}
	r.restoreMatches(b.ID, sha, dir)
	var shown struct {
		LastVerify struct {
			Result string `json:"result"`
		} `json:"last_verify"`
	}
	r.mustJSON(&shown, "backup", "show", b.ID)
	if shown.LastVerify.Result != "ok" {
		t.Errorf("last_verify after repair: %+v, want ok", shown.LastVerify)
	}
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
	r.restoreMatches(b.ID, sha, dir)
}

// A lost block that no registered volume holds: repair makes the index forget its damaged
// copy, and the next full backup of a volume that holds the data stores it again, after which
// the damaged backup restores byte-exact (as Proxmox re-uploads a chunk its verify marked bad).
func TestEngineNextBackupStoresALostBlockAgain(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil, "--compression", "none")
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 25, testutil.Random)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)
	flipAt(t, onlyPack(t, r), 1234567)
	r.mustRun("volume", "unmanage", vol)
	res := r.run("repo", "repair")
	if res.Code != 8 || !strings.Contains(res.Stdout, "1 lost blocks are in no volume here") {
		t.Fatalf("repair without the volume: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	again := r.createBackup(vol) // a full backup: it meets the lost block and stores it again
	if again.Stats.NewBytes == 0 {
		t.Fatal("the full backup stored nothing: it reused the damaged copy")
	}
	r.restoreMatches(b.ID, sha, dir)
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
}

// A damaged policy object: its second copy stands in, so the policy still lists, shows and
// runs (before 2026-12-07 it vanished from 'policy list' and from every scheduler, and its
// backups silently stopped); check names it, repair writes it again. With both copies
// damaged, 'policy show' exits 8.
// withNightlyPolicy makes a repository with volume web (a 2 MiB image of seed) and policy
// nightly over it, and returns the repository, the policy object's hex name and the paths of
// the object and its second copy.
func withNightlyPolicy(t *testing.T, seed int64) (r *cairnRepo, name, obj, cp string) {
	t.Helper()
	r = newCairnRepo(t, nil)
	vol := filepath.Join(t.TempDir(), "vol.img")
	testutil.WriteImage(t, vol, 2*mib, seed, testutil.Mixed)
	r.mustRun("volume", "manage", vol, "--name", "web")
	r.mustRun("policy", "create", "nightly", "--volume", "web", "--schedule", "daily", "--keep-last", "3")
	name = hex.EncodeToString([]byte("nightly"))
	return r, name, filepath.Join(r.Dir, "meta", "policies", name), filepath.Join(r.Dir, "meta-copies", "policies", name)
}

func TestEngineDamagedPolicyObject(t *testing.T) {
	r, name, obj, cp := withNightlyPolicy(t, 28)
	flipByte(t, obj, 40)
	if out := r.mustRun("policy", "list"); !strings.Contains(out, "nightly") {
		t.Errorf("policy list with a damaged policy object:\n%s", out)
	}
	if out := r.mustRun("policy", "show", "nightly"); !strings.Contains(out, "last 3") {
		t.Errorf("policy show with a damaged policy object:\n%s", out)
	}
	r.mustRun("policy", "run", "nightly")
	res := r.run("repo", "check")
	if res.Code != 8 || !strings.Contains(res.Stdout, "meta/policies/"+name) || !strings.Contains(res.Stdout, "stands in") {
		t.Errorf("check with a damaged policy object: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if out := r.mustRun("repo", "repair"); !strings.Contains(out, "wrote 1 damaged metadata objects again") {
		t.Errorf("repair of a damaged policy object:\n%s", out)
	}
	r.checkClean()

	flipByte(t, obj, 40)
	flipByte(t, cp, 40)
	if msg := r.mustFail([]int{8}, "policy", "show", "nightly"); !strings.Contains(msg, "damaged too") {
		t.Errorf("a policy object and its copy damaged: %q", msg)
	}
	// Both damaged: listed as damaged and in status's concerns, never silently gone; repair
	// names it and exits 8 until --forget-damaged removes it; then it can be created again.
	if out := r.mustRun("policy", "list"); !regexp.MustCompile(`nightly .*damaged`).MatchString(out) {
		t.Errorf("policy list with a lost policy:\n%s", out)
	}
	if out := r.mustRun("status"); !strings.Contains(out, "policy nightly is damaged") {
		t.Errorf("status with a lost policy:\n%s", out)
	}
	res = r.run("repo", "repair")
	if res.Code != 8 || !strings.Contains(res.Stdout, "metadata object policies/nightly is lost") {
		t.Errorf("repair with a lost policy: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if out := r.mustRun("repo", "repair", "--forget-damaged"); !strings.Contains(out, "policies/nightly is lost (damaged, and its second copy too): forgotten") {
		t.Errorf("repair --forget-damaged with a lost policy:\n%s", out)
	}
	r.checkClean()
	r.mustRun("policy", "create", "nightly", "--volume", "web", "--schedule", "daily", "--keep-last", "3")
}

// A policy object removed outside cairn (its copy intact) is a problem check names and repair
// keeps, never guessing: --restore-meta stores it again from its copy, --forget-damaged removes
// the copy (docs/design.md, "A metadata object lost, its copy left"). Before, repair removed
// the copy and the policy was gone for good.
func TestEngineLostPolicyObject(t *testing.T) {
	r, name, obj, cp := withNightlyPolicy(t, 29)
	lose := func() {
		t.Helper()
		if err := os.Remove(obj); err != nil {
			t.Fatal(err)
		}
	}
	lose()
	// Before any check: status names the policy that no longer runs, and policy list shows it.
	if out := r.mustRun("status"); !strings.Contains(out, "policy nightly does not run: its object is missing") {
		t.Errorf("status with a lost policy object:\n%s", out)
	}
	if out := r.mustRun("policy", "list"); !regexp.MustCompile(`nightly .*missing`).MatchString(out) {
		t.Errorf("policy list with a lost policy object:\n%s", out)
	}
	res := r.run("repo", "check")
	if res.Code != 8 || !strings.Contains(res.Stdout, "meta/policies/"+name+" is missing while its second copy is intact") {
		t.Errorf("check with a lost policy object: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if out := r.mustRun("status"); !strings.Contains(out, "the last check found 1 problems") {
		t.Errorf("status after that check:\n%s", out)
	}
	res = r.run("repo", "repair")
	if res.Code != 8 || !strings.Contains(res.Stdout, "metadata object policies/nightly is missing while its second copy is left") || !strings.Contains(res.Stderr, "--restore-meta") {
		t.Errorf("repair with a lost policy object: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	if _, err := os.Stat(cp); err != nil {
		t.Fatalf("repair removed the copy of a lost policy object: %v", err)
	}
	if out := r.mustRun("repo", "repair", "--restore-meta"); !strings.Contains(out, "policies/nightly is missing while its second copy is left (removed outside cairn, or by a cairn from before 2026-12-07): stored again from its second copy") {
		t.Errorf("repair --restore-meta:\n%s", out)
	}
	if out := r.mustRun("policy", "show", "nightly"); !strings.Contains(out, "last 3") {
		t.Errorf("policy show after the restore:\n%s", out)
	}
	r.checkClean()

	lose()
	if out := r.mustRun("repo", "repair", "--forget-damaged"); !strings.Contains(out, "policies/nightly is missing while its second copy is left (removed outside cairn, or by a cairn from before 2026-12-07): its second copy removed") {
		t.Errorf("repair --forget-damaged:\n%s", out)
	}
	if _, err := os.Stat(cp); !os.IsNotExist(err) {
		t.Fatalf("the copy after --forget-damaged: %v", err)
	}
	r.checkClean()
	r.mustRun("policy", "create", "nightly", "--volume", "web", "--schedule", "daily", "--keep-last", "3")
}
