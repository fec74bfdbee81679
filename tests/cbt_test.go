package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// expectRead fails the test unless b was read the way want says, with a fallback reason
// containing because (or none when because is empty).
func expectRead(t *testing.T, b backupJSON, want, because string) {
	t.Helper()
	if b.ReadMode != want || (because == "") != (b.ReadFallback == "") || !strings.Contains(b.ReadFallback, because) {
		t.Fatalf("backup %s: read_mode %q, read_fallback %q; want %q with a reason containing %q", b.ID, b.ReadMode, b.ReadFallback, want, because)
	}
}

// restoredSHA restores backup id to a new file and returns its sha256.
func restoredSHA(t *testing.T, r *cairnRepo, id string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "restored.img")
	r.restoreTo(id, out)
	return testutil.SHA256File(t, out)
}

// trackedVM makes a size-byte random image vm.img (seed) on a fresh XFS with reflinks and a
// repository that manages it as volume vm, which must be tracked by default.
func trackedVM(t *testing.T, size, seed int64) (xfs, vol string, r *cairnRepo, v volumeJSON) {
	t.Helper()
	xfs = testutil.XFSReflinkDir(t, 1<<30)
	vol = filepath.Join(xfs, "vm.img")
	testutil.WriteImage(t, vol, size, seed, testutil.Random)
	r = newCairnRepo(t, nil)
	r.mustJSON(&v, "volume", "manage", vol, "--name", "vm")
	if !v.TrackChanges {
		t.Fatal("an image file on XFS with reflinks is not tracked by default")
	}
	return xfs, vol, r, v
}

// An image file on XFS with reflinks, tracked by default: after 1 % of scattered writes an
// incremental reads at most 3x the bytes written and restores byte-exact; without its base it
// reads everything and says why; the next one is tracked again; a size change reads in full.
func TestTrackedIncrementalOnXFS(t *testing.T) {
	const size = 256 << 20
	xfs, vol, r, v := trackedVM(t, size, 21)
	full := r.createBackup("vm")
	expectRead(t, full, "full", "")
	if full.ReadBytes != size {
		t.Errorf("full backup read %d bytes of a %d-byte non-sparse volume", full.ReadBytes, size)
	}
	bases, _ := filepath.Glob(filepath.Join(xfs, ".cairn-cbt", v.ID, "*.base"))
	if len(bases) != 1 || filepath.Base(bases[0]) != full.ID+".base" {
		t.Fatalf("after the full backup the bases are %v, want %s.base", bases, full.ID)
	}

	changed := testutil.ScatterWrites(t, vol, 22, 0.01, 4096, 65536)
	inc := r.createBackup("vm", "--incremental")
	expectRead(t, inc, "reflink-diff", "")
	t.Logf("1%% scattered writes: %d bytes written, the tracked incremental read %d (%.2fx), stored %d",
		changed, inc.ReadBytes, float64(inc.ReadBytes)/float64(changed), inc.Stats.NewBytes)
	if inc.ReadBytes > 3*changed || inc.ReadBytes < changed {
		t.Errorf("tracked incremental read %d bytes for %d written; want between 1x and 3x", inc.ReadBytes, changed)
	}
	if got, want := restoredSHA(t, r, inc.ID), testutil.SHA256File(t, vol); got != want {
		t.Fatalf("tracked incremental restores sha256 %s, the volume has %s", got, want)
	}
	if got := restoredSHA(t, r, full.ID); got == testutil.SHA256File(t, vol) {
		t.Fatal("the full backup restores the changed volume")
	}

	// The base gone: everything is read, and the record says why.
	for _, b := range must(filepath.Glob(filepath.Join(xfs, ".cairn-cbt", v.ID, "*.base"))) {
		if err := os.Remove(b); err != nil {
			t.Fatal(err)
		}
	}
	testutil.ScatterWrites(t, vol, 23, 0.01, 4096, 65536)
	noBase := r.createBackup("vm", "--incremental")
	expectRead(t, noBase, "full", "no change-tracking base")
	if noBase.ReadBytes != size {
		t.Errorf("incremental without a base read %d bytes of %d", noBase.ReadBytes, size)
	}
	shown := r.mustRun("backup", "show", noBase.ID)
	if !strings.Contains(shown, "read_mode") || !strings.Contains(shown, "full (no change-tracking base") {
		t.Errorf("backup show does not say the backup was read in full and why:\n%s", shown)
	}
	if got, want := restoredSHA(t, r, noBase.ID), testutil.SHA256File(t, vol); got != want {
		t.Fatalf("incremental without a base restores sha256 %s, the volume has %s", got, want)
	}

	// That backup left a base again: the next incremental is tracked, and reads nothing when
	// nothing changed.
	same := r.createBackup("vm", "--incremental")
	expectRead(t, same, "reflink-diff", "")
	if same.ReadBytes != 0 || same.Stats.NewBytes != 0 {
		t.Errorf("tracked incremental of an unchanged volume read %d and stored %d bytes", same.ReadBytes, same.Stats.NewBytes)
	}

	// A grown volume: the base no longer fits; read in full.
	if err := os.Truncate(vol, size+1<<20); err != nil {
		t.Fatal(err)
	}
	grown := r.createBackup("vm", "--incremental")
	expectRead(t, grown, "full", "size changed")
	if got, want := restoredSHA(t, r, grown.ID), testutil.SHA256File(t, vol); got != want {
		t.Fatal("incremental of the grown volume restores other bytes")
	}

	// Unmanaging the volume gives the base's space back.
	r.mustRun("volume", "unmanage", "vm")
	if _, err := os.Stat(filepath.Join(xfs, ".cairn-cbt")); !os.IsNotExist(err) {
		t.Errorf("unmanage left the change-tracking directory: %v", err)
	}
}

// A tracked incremental killed (SIGKILL) after it began to bring its base forward in place
// never shows as available, and the next incremental, though the base now shares the killed
// one's ranges with the image, reads them (the base's .dirty record) and restores byte-exact.
func TestTrackedIncrementalKilledAfterAdvance(t *testing.T) {
	const size = 256 << 20
	xfs, vol, r, v := trackedVM(t, size, 41)
	full := r.createBackup("vm")
	dirty := filepath.Join(xfs, ".cairn-cbt", v.ID, full.ID+".dirty")
	base := filepath.Join(xfs, ".cairn-cbt", v.ID, full.ID+".base")
	before := must(os.Stat(base)).ModTime()

	// A fifth of the volume in small writes: thousands of ranges to clone, then 50 MiB to read.
	testutil.ScatterWrites(t, vol, 42, 0.2, 4096, 16384)
	cmd := startCairn(t, r.Env, "--quiet", "backup", "create", "vm", "--incremental", "--name", "killed")
	// Killed once the record is there and the first ranges are cloned (the base's mtime moves).
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := os.Stat(dirty)
		if fi, serr := os.Stat(base); err == nil && serr == nil && !fi.ModTime().Equal(before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the incremental cloned no ranges into its base within 30 s")
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the incremental finished before it could be killed (%v); make the change larger", err)
	}
	for _, b := range r.listBackups() {
		if b.Name == "killed" && b.Status == "available" {
			t.Fatalf("the killed incremental shows as available: %+v", b)
		}
	}

	testutil.ScatterWrites(t, vol, 43, 0.01, 4096, 65536)
	inc := r.createBackup("vm", "--incremental")
	expectRead(t, inc, "reflink-diff", "")
	if got, want := restoredSHA(t, r, inc.ID), testutil.SHA256File(t, vol); got != want {
		t.Fatalf("the incremental after a killed one restores sha256 %s, the volume has %s", got, want)
	}
	if got := restoredSHA(t, r, full.ID); got == testutil.SHA256File(t, vol) {
		t.Fatal("the full backup restores the changed volume")
	}
}

// extents counts the extents of path as FIEMAP reports them (xfs_io), holes not counted.
func extents(t *testing.T, xfsIO, path string) int {
	t.Helper()
	out, err := exec.Command(xfsIO, "-c", "fiemap", path).CombinedOutput()
	if err != nil {
		t.Fatalf("xfs_io fiemap %s: %v: %s", path, err, out)
	}
	n := 0
	for _, l := range strings.Split(string(out), "\n")[1:] {
		if strings.Contains(l, ":") && !strings.Contains(l, "hole") {
			n++
		}
	}
	return n
}

// defragment runs xfs_fsr on path and fails the test unless it left fewer extents than it
// found (so the file's blocks really moved) and the same bytes.
func defragment(t *testing.T, fsr, xfsIO, path string) {
	t.Helper()
	before, sum := extents(t, xfsIO, path), testutil.SHA256File(t, path)
	if out, err := exec.Command(fsr, path).CombinedOutput(); err != nil {
		t.Fatalf("xfs_fsr %s: %v: %s", path, err, out)
	}
	if after := extents(t, xfsIO, path); after >= before {
		t.Fatalf("xfs_fsr left %s with %d extents (%d before): nothing moved", path, after, before)
	}
	if testutil.SHA256File(t, path) != sum {
		t.Fatalf("xfs_fsr changed the bytes of %s", path)
	}
}

// Defragmenting moves a file's blocks: after xfs_fsr of the change-tracking base, and again
// after xfs_fsr of the image, the image and the base share no blocks with each other, so the
// next tracked incremental reads the whole volume (never takes a moved range from its parent)
// and restores byte-exact, even when reflink copies elsewhere (a cloned VM image, a copy of
// the file system) leave every extent of both files flagged shared; the one after that is
// cheap again.
func TestTrackedIncrementalAfterDefragmentation(t *testing.T) {
	fsr, xfsIO := testutil.RequireCommand(t, "xfs_fsr"), testutil.RequireCommand(t, "xfs_io")
	const size = 64 << 20
	xfs, vol, r, v := trackedVM(t, size, 51)
	r.createBackup("vm")
	// Small scattered writes, and an incremental that clones them into the base: both files
	// are now in thousands of extents.
	testutil.ScatterWrites(t, vol, 52, 0.05, 4096, 16384)
	inc := r.createBackup("vm", "--incremental")
	expectRead(t, inc, "reflink-diff", "")
	base := filepath.Join(xfs, ".cairn-cbt", v.ID, inc.ID+".base")

	defragment(t, fsr, xfsIO, base)
	testutil.ScatterWrites(t, vol, 53, 0.01, 4096, 65536)
	// Copies after the writes: the written ranges are shared too now (with the copy).
	for _, f := range []string{base, vol} {
		if out, err := exec.Command("cp", "--reflink=always", f, filepath.Join(xfs, filepath.Base(f)+".copy")).CombinedOutput(); err != nil {
			t.Fatalf("cp --reflink=always %s: %v: %s", f, err, out)
		}
	}
	// A tracked incremental that reads all of the volume and restores it byte-exact.
	readsAll := func(after string) {
		t.Helper()
		b := r.createBackup("vm", "--incremental")
		expectRead(t, b, "reflink-diff", "")
		if b.ReadBytes != size {
			t.Errorf("incremental after %s read %d of %d bytes; want all of them", after, b.ReadBytes, size)
		}
		if got, want := restoredSHA(t, r, b.ID), testutil.SHA256File(t, vol); got != want {
			t.Fatalf("incremental after %s restores sha256 %s, the volume has %s", after, got, want)
		}
	}
	readsAll("the base was defragmented")
	defragment(t, fsr, xfsIO, vol)
	readsAll("the image was defragmented")

	changed := testutil.ScatterWrites(t, vol, 54, 0.01, 4096, 65536)
	again := r.createBackup("vm", "--incremental")
	expectRead(t, again, "reflink-diff", "")
	if again.ReadBytes > 3*changed {
		t.Errorf("the incremental after that read %d bytes for %d written; want at most 3x", again.ReadBytes, changed)
	}
	if got, want := restoredSHA(t, r, again.ID), testutil.SHA256File(t, vol); got != want {
		t.Fatalf("the incremental after that restores sha256 %s, the volume has %s", got, want)
	}
}

// On a file system without reflinks a volume is not tracked unless asked, and asking is
// refused with the reason.
func TestTrackChangesNeedsReflinks(t *testing.T) {
	dir := t.TempDir()
	vol := filepath.Join(dir, "v.img")
	testutil.WriteImage(t, vol, 4<<20, 1, testutil.Mixed)
	if err := exec.Command("cp", "--reflink=always", vol, vol+".probe").Run(); err == nil {
		testutil.Skip(t, "the file system of %s makes reflinks; this test needs one that does not", dir)
	}
	r := newCairnRepo(t, nil)
	line := r.mustFail([]int{2}, "volume", "manage", vol, "--track-changes")
	if !strings.Contains(line, "without reflinks") || !strings.Contains(line, "XFS") {
		t.Fatalf("--track-changes without reflinks: %q", line)
	}
	var v struct {
		TrackChanges bool `json:"track_changes"`
	}
	r.mustJSON(&v, "volume", "manage", vol, "--name", "v")
	if v.TrackChanges {
		t.Fatal("a volume without reflinks is tracked")
	}
	// Asked for later, it is refused the same way, and the volume stays untracked.
	line = r.mustFail([]int{2}, "volume", "update", "v", "--track-changes")
	if !strings.Contains(line, "without reflinks") || !strings.Contains(line, "XFS") {
		t.Fatalf("volume update --track-changes without reflinks: %q", line)
	}
	if r.mustJSON(&v, "volume", "show", "v"); v.TrackChanges {
		t.Fatal("a refused volume update left the volume tracked")
	}
	b := r.createBackup("v")
	expectRead(t, b, "full", "")
	line = r.mustFail([]int{2}, "backup", "create", "v", "--incremental", "--bitmap", "b0")
	if !strings.Contains(line, "NBD") {
		t.Fatalf("--bitmap on an image file: %q", line)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// qemuIO writes to the qcow2 image at img through qemu-io, one command per write.
func qemuIO(t *testing.T, img string, cmds ...string) {
	t.Helper()
	args := []string{"-f", "qcow2"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	testutil.Qemu(t, "qemu-io", append(args, img)...)
}

// rawSHA is the sha256 of the qcow2 image's guest view (qemu-img convert -O raw).
func rawSHA(t *testing.T, img string) string {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "guest.raw")
	testutil.Qemu(t, "qemu-img", "convert", "-O", "raw", img, raw)
	defer os.Remove(raw)
	return testutil.SHA256File(t, raw)
}

// Ranges that read as zeros now but held data in the parent changed, whatever the dirty
// bitmap says, and the spot check cannot see them (it samples blocks that hold data): zeros
// written while the bitmap was disabled, and an export shrunk and grown back to its size
// (qemu-img resize keeps the bitmap, and the cut tail reads as zeros). Both bitmap
// incrementals must restore what qemu-img convert reads; before, they restored the parent's
// old data there with read_mode nbd-bitmap (found by review).
func TestNBDBitmapIncrementalSeesZeroedRanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, img string)
	}{
		{"zeros written with the bitmap disabled", func(t *testing.T, img string) {
			testutil.Qemu(t, "qemu-img", "bitmap", "--clear", img, "b0")
			testutil.Qemu(t, "qemu-img", "bitmap", "--disable", img, "b0")
			qemuIO(t, img, "write -z 0 120M")
		}},
		{"shrunk and grown back", func(t *testing.T, img string) {
			testutil.Qemu(t, "qemu-img", "resize", "--shrink", img, "16M")
			testutil.Qemu(t, "qemu-img", "resize", img, "128M")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "vm.qcow2")
			seedRaw := filepath.Join(dir, "seed.raw")
			testutil.WriteImage(t, seedRaw, 128<<20, 33, testutil.Random)
			testutil.Qemu(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", seedRaw, img)
			os.Remove(seedRaw)
			testutil.Qemu(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
			srv := testutil.StartQemuNBD(t, filepath.Join(dir, "nbd.sock"), img, "-f", "qcow2", "-B", "b0")
			r := newCairnRepo(t, nil)
			r.mustRun("volume", "manage", srv.URI(), "--name", "vm")
			r.createBackup("vm")
			srv.Stop()
			tc.change(t, img)
			srv.Start("-f", "qcow2", "-B", "b0")
			inc := r.createBackup("vm", "--incremental", "--bitmap", "b0")
			if got, want := restoredSHA(t, r, inc.ID), rawSHA(t, img); got != want {
				t.Fatalf("bitmap incremental (read_mode %q, %q, read %d bytes) restores sha256 %s, qemu-img convert gives %s",
					inc.ReadMode, inc.ReadFallback, inc.ReadBytes, got, want)
			}
			// Read as zeros, the ranges cost no data: the bitmap path is still taken.
			expectRead(t, inc, "nbd-bitmap", "")
		})
	}
}

// A qcow2 image with a persistent dirty bitmap, exported by qemu-nbd -B: the full backup skips
// what base:allocation reports as zeros, bitmap incrementals read only the dirty extents, and
// every backup restores what qemu-img convert reads; a missing bitmap, and one disabled while
// the image was written, read in full and say so.
func TestNBDBitmapIncrementals(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.qcow2")
	seedRaw := filepath.Join(dir, "seed.raw")
	const size = 128 << 20
	testutil.WriteImage(t, seedRaw, size, 31, testutil.Mixed)
	testutil.Qemu(t, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", seedRaw, img)
	os.Remove(seedRaw)
	testutil.Qemu(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
	sock := filepath.Join(dir, "nbd.sock")
	srv := testutil.StartQemuNBD(t, sock, img, "-f", "qcow2", "-B", "b0")
	uri := srv.URI()

	r := newCairnRepo(t, nil)
	var v struct {
		Kind string `json:"kind"`
		Size int64  `json:"size"`
	}
	r.mustJSON(&v, "volume", "manage", uri, "--name", "vm")
	if v.Kind != "nbd" || v.Size != size {
		t.Fatalf("NBD volume: kind %q, size %d; want nbd, %d", v.Kind, v.Size, size)
	}
	line := r.mustFail([]int{2}, "backup", "create", "vm", "--bitmap", "b0")
	if !strings.Contains(line, "--incremental") {
		t.Fatalf("--bitmap without --incremental: %q", line)
	}
	full := r.createBackup("vm")
	expectRead(t, full, "full", "")
	if full.ReadBytes >= size || full.ReadBytes == 0 {
		t.Errorf("full backup of a sparse qcow2 read %d of %d bytes: base:allocation unused", full.ReadBytes, size)
	}
	if got, want := restoredSHA(t, r, full.ID), rawSHA(t, img); got != want {
		t.Fatalf("full backup of the NBD export restores sha256 %s, qemu-img convert gives %s", got, want)
	}

	// Scattered writes while qemu-nbd is down (it holds the image), then a bitmap incremental.
	writes := []string{"write -P 0x5a 1M 4k", "write -P 0x5b 7M 60k", "write -P 0x5c 33M 16k", "write -P 0x5d 90M 200k", "write -P 0x5e 127M 1M", "write -z 50M 64k"}
	srv.Stop()
	qemuIO(t, img, writes...)
	srv.Start("-f", "qcow2", "-B", "b0")
	inc := r.createBackup("vm", "--incremental", "--bitmap", "b0")
	expectRead(t, inc, "nbd-bitmap", "")
	// Dirty bytes in b0's 64 KiB granularity: 4k→64k, 60k→128k at most, 16k→64k, 200k→320k,
	// 1M→1M+64k, 64k→128k: under 2 MiB; the spot check reads 32 blocks of 16 KiB.
	if inc.ReadBytes > 2<<20+32*16<<10 {
		t.Errorf("bitmap incremental read %d bytes for about 1.3 MiB written", inc.ReadBytes)
	}
	t.Logf("bitmap incremental read %d bytes, stored %d", inc.ReadBytes, inc.Stats.NewBytes)
	if got, want := restoredSHA(t, r, inc.ID), rawSHA(t, img); got != want {
		t.Fatalf("bitmap incremental restores sha256 %s, qemu-img convert gives %s", got, want)
	}

	// The next period: the bitmap is cleared as the backup is taken (here: after it), and the
	// next incremental reads what was written since.
	srv.Stop()
	testutil.Qemu(t, "qemu-img", "bitmap", "--clear", img, "b0")
	qemuIO(t, img, "write -P 0x71 2M 8k", "write -P 0x72 64M 64k")
	srv.Start("-f", "qcow2", "-B", "b0")
	inc2 := r.createBackup("vm", "--incremental", "--bitmap", "b0")
	expectRead(t, inc2, "nbd-bitmap", "")
	if got, want := restoredSHA(t, r, inc2.ID), rawSHA(t, img); got != want {
		t.Fatalf("second bitmap incremental restores sha256 %s, qemu-img convert gives %s", got, want)
	}

	// A bitmap the export does not have: read in full, and the record says so.
	missing := r.createBackup("vm", "--incremental", "--bitmap", "nope")
	expectRead(t, missing, "full", "offers no dirty bitmap nope")
	if got, want := restoredSHA(t, r, missing.ID), rawSHA(t, img); got != want {
		t.Fatal("incremental with a missing bitmap restores other bytes")
	}

	// A bitmap disabled while most of the data was rewritten: the spot check of blocks it
	// calls clean finds them changed; read in full.
	srv.Stop()
	testutil.Qemu(t, "qemu-img", "bitmap", "--clear", img, "b0")
	testutil.Qemu(t, "qemu-img", "bitmap", "--disable", img, "b0")
	qemuIO(t, img, "write -P 0x33 0 120M")
	srv.Start("-f", "qcow2", "-B", "b0")
	disabled := r.createBackup("vm", "--incremental", "--bitmap", "b0")
	expectRead(t, disabled, "full", "missed changes")
	if got, want := restoredSHA(t, r, disabled.ID), rawSHA(t, img); got != want {
		t.Fatal("incremental with a disabled bitmap restores other bytes")
	}
	// Restoring onto the NBD volume itself is refused: cairn does not write exports.
	line = r.mustFail([]int{2}, "backup", "restore", full.ID, "--volume", "vm")
	if !strings.Contains(line, "NBD") {
		t.Fatalf("restore onto an NBD volume: %q", line)
	}
}

// Writes a bitmap missed may lie in blocks that held no data in the parent and hold some now,
// not a whole block of it (4 KiB written into every 16 KiB block of a part of the export that
// was empty). The spot check must sample such blocks too: they hold data. Before, it sampled
// only blocks wholly inside a run of data; a bitmap disabled while the empty half of the
// export was written was then never checked where it missed writes, and the incremental
// restored the parent's zeros there with read_mode nbd-bitmap.
func TestNBDBitmapSpotCheckSamplesBlocksPartlyData(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "vm.qcow2")
	const size = 8 << 20
	testutil.Qemu(t, "qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4096", img, "8M")
	qemuIO(t, img, "write -P 0x11 0 4M")
	testutil.Qemu(t, "qemu-img", "bitmap", "--add", "--enable", img, "b0")
	srv := testutil.StartQemuNBD(t, filepath.Join(dir, "nbd.sock"), img, "-f", "qcow2", "-B", "b0")
	r := newCairnRepo(t, nil)
	r.mustRun("volume", "manage", srv.URI(), "--name", "vm")
	full := r.createBackup("vm")
	if got, want := restoredSHA(t, r, full.ID), rawSHA(t, img); got != want {
		t.Fatalf("full backup restores sha256 %s, qemu-img convert gives %s", got, want)
	}

	// The bitmap is disabled, and 4 KiB written at the start of every 16 KiB of the empty half.
	srv.Stop()
	testutil.Qemu(t, "qemu-img", "bitmap", "--disable", img, "b0")
	var writes []string
	for off := 4 << 20; off < size; off += 16 << 10 {
		writes = append(writes, fmt.Sprintf("write -P 0x22 %d 4k", off))
	}
	qemuIO(t, img, writes...)
	srv.Start("-f", "qcow2", "-B", "b0")
	inc := r.createBackup("vm", "--incremental", "--bitmap", "b0")
	if got, want := restoredSHA(t, r, inc.ID), rawSHA(t, img); got != want {
		t.Fatalf("bitmap incremental (read_mode %q, %q, read %d bytes) restores sha256 %s, qemu-img convert gives %s",
			inc.ReadMode, inc.ReadFallback, inc.ReadBytes, got, want)
	}
	expectRead(t, inc, "full", "missed changes")
}
