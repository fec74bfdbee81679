package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tests/testutil"
	"golang.org/x/sys/unix"
)

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// trackedSize is the size of trackedImage's images.
const trackedSize = 64 << 20

// trackedImage makes an image of random data (seed) on a fresh XFS with reflinks and manages
// it in s: a volume tracked by default.
func trackedImage(t *testing.T, s *gateway.Service, seed int64) (xfs, vol string, v *index.Volume) {
	t.Helper()
	xfs = testutil.XFSReflinkDir(t, 1<<30)
	vol = filepath.Join(xfs, "vm.img")
	testutil.WriteImage(t, vol, trackedSize, seed, testutil.Random)
	v, err := s.ManageVolume(adminCtx(), gateway.ManageRequest{Path: vol, Name: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if !v.TrackChanges {
		t.Fatal("an image on XFS with reflinks is not tracked")
	}
	return xfs, vol, v
}

// An incremental of a tracked image that is not in use brings its parent's base forward in
// place: the same file, no clone of the whole image. One that fails after that leaves the
// base with the record of the ranges it took from the image, so the next incremental reads
// them as well as what changed since, restores byte-exact and leaves a base that holds
// exactly what it backed up (docs/design.md, "Bringing a base forward in place").
func TestBaseBroughtForwardInPlace(t *testing.T) {
	s, _ := newService(t)
	ctx := adminCtx()
	xfs, vol, v := trackedImage(t, s, 31)
	const size = trackedSize
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(xfs, ".cairn-cbt", v.ID)
	ino := inode(t, filepath.Join(dir, full.ID+".base"))

	// The first incremental fails while it writes, after the base was brought forward.
	testutil.ScatterWrites(t, vol, 32, 0.02, 4096, 65536)
	fail(t, s, v.ID)
	if _, err := os.Stat(filepath.Join(dir, full.ID+".dirty")); err != nil {
		t.Fatalf("the failed incremental left no record of what it took into the base: %v", err)
	}
	if got := inode(t, filepath.Join(dir, full.ID+".base")); got != ino {
		t.Fatalf("the failed incremental replaced the base (inode %d, was %d)", got, ino)
	}

	// More writes, then an incremental that commits: it must read the failed one's ranges too,
	// though the base now shares them with the image.
	testutil.ScatterWrites(t, vol, 33, 0.02, 4096, 65536)
	inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if inc.ReadMode != gateway.ReadReflinkDiff || inc.ReadFallback != "" {
		t.Fatalf("incremental read %q (%s), want %q", inc.ReadMode, inc.ReadFallback, gateway.ReadReflinkDiff)
	}
	if inc.Stats.ReadBytes >= size/4 {
		t.Errorf("incremental read %d bytes of %d after 4%% of writes", inc.Stats.ReadBytes, size)
	}
	want := sha256File(t, vol)
	if got := restoreSHA(t, s, ctx, inc.ID); got != want {
		t.Fatalf("incremental restores sha256 %s, the volume has %s", got, want)
	}
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0].Name() != inc.ID+".base" {
		t.Fatalf("after the incremental the base directory holds %v, want only %s.base", names, inc.ID)
	}
	base := filepath.Join(dir, inc.ID+".base")
	if got := inode(t, base); got != ino {
		t.Errorf("the base was replaced (inode %d, was %d), not brought forward in place", got, ino)
	}
	if got := sha256File(t, base); got != want {
		t.Errorf("the base holds sha256 %s, the backup it is named after %s", got, want)
	}

	// Nothing changed: the next one reads nothing.
	same, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if same.ReadMode != gateway.ReadReflinkDiff || same.Stats.ReadBytes != 0 {
		t.Errorf("incremental of an unchanged volume: read %q, %d bytes", same.ReadMode, same.Stats.ReadBytes)
	}

	// Another incremental fails after bringing the base forward; then the volume comes into use
	// between the next one's request and its job: that job clones the whole image (a point in
	// time), and its comparison with the base must still read the failed one's ranges.
	testutil.ScatterWrites(t, vol, 35, 0.02, 4096, 65536)
	fail(t, s, v.ID)
	if _, err := os.Stat(filepath.Join(dir, same.ID+".dirty")); err != nil {
		t.Fatalf("the second failed incremental left no record: %v", err)
	}
	testutil.ScatterWrites(t, vol, 36, 0.01, 4096, 65536)
	b, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	testutil.LoopDevice(t, vol, false) // in use from now on
	if err := job(ctx); err != nil {
		t.Fatal(err)
	}
	cloned, err := s.Index().Backup(b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if cloned.ReadMode != gateway.ReadReflinkDiff || cloned.Stats.ReadBytes >= size/4 {
		t.Errorf("incremental of a volume that came into use: read %q (%s), %d bytes", cloned.ReadMode, cloned.ReadFallback, cloned.Stats.ReadBytes)
	}
	want = sha256File(t, vol)
	if got := restoreSHA(t, s, ctx, cloned.ID); got != want {
		t.Fatalf("incremental of a volume that came into use restores sha256 %s, the volume has %s", got, want)
	}
	if got := inode(t, filepath.Join(dir, cloned.ID+".base")); got == ino {
		t.Error("the volume came into use and its base was still brought forward in place")
	}

	// A record that cannot be read: the base is not trusted; the whole volume is read.
	if err := os.WriteFile(filepath.Join(dir, cloned.ID+".dirty"), []byte(`{"base":`), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.ScatterWrites(t, vol, 34, 0.01, 4096, 65536)
	torn, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if torn.ReadMode != gateway.ReadFull || !strings.Contains(torn.ReadFallback, "unreadable") || torn.Stats.ReadBytes != size {
		t.Errorf("incremental with a torn record: read %q (%s), %d bytes; want everything", torn.ReadMode, torn.ReadFallback, torn.Stats.ReadBytes)
	}
	if got := restoreSHA(t, s, ctx, torn.ID); got != sha256File(t, vol) {
		t.Fatal("incremental with a torn record restores other bytes than the volume's")
	}
}

// fail runs an incremental of volume id that is cancelled while it writes, after its base was
// brought forward, and checks that it failed and shows as no available backup.
func fail(t *testing.T, s *gateway.Service, id string) {
	t.Helper()
	ctx := adminCtx()
	jobCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	b, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: id, Incremental: true, Progress: func(int64, int64) { cancel() }})
	if err != nil {
		t.Fatal(err)
	}
	if err := job(jobCtx); err == nil {
		t.Fatal("the cancelled incremental succeeded")
	}
	if got, err := s.Index().Backup(b.ID); err == nil && got.Status == "available" {
		t.Fatalf("the cancelled incremental shows as available: %+v", got)
	}
}

// A tracked incremental whose image grew while the job waited reads in full and says the size
// changed; it was compared by size alone, brought the base forward to the image's first bytes
// and said it read only what changed. The next incremental, asked after the growth, backs up
// the whole grown volume.
func TestAQueuedTrackedIncrementalSeesTheVolumeGrow(t *testing.T) {
	s, _ := newService(t)
	ctx := adminCtx()
	_, vol, v := trackedImage(t, s, 71)
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	testutil.ScatterWrites(t, vol, 72, 0.02, 4096, 65536)
	b, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(vol, trackedSize+1<<20); err != nil {
		t.Fatal(err)
	}
	writeAt(t, vol, trackedSize, 64<<10, 7)
	if err := job(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := s.Index().Backup(b.ID)
	if err != nil || got.ReadMode == gateway.ReadReflinkDiff || !strings.Contains(got.ReadFallback, "size changed") {
		t.Fatalf("the incremental whose volume grew while it waited: %+v, %v; want a full read that says the size changed", got, err)
	}
	if got, want := restoreSHA(t, s, ctx, b.ID), testutil.SHA256Range(t, vol, trackedSize); got != want {
		t.Errorf("it restores sha256 %s, the volume's first %d bytes are %s", got, trackedSize, want)
	}
	next, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if next.Size != trackedSize+1<<20 {
		t.Errorf("the incremental after the growth has %d bytes, the volume %d", next.Size, trackedSize+1<<20)
	}
	if got, want := restoreSHA(t, s, ctx, next.ID), sha256File(t, vol); got != want {
		t.Errorf("it restores sha256 %s, the volume has %s", got, want)
	}
}

// writeAt overwrites n bytes of the file at path at off with bytes from seed.
func writeAt(t *testing.T, path string, off int64, n int, seed byte) {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// Two gateways on one repository know the same volume (by its id) and keep its base in the
// same directory beside the image. One brings the base forward in place while the other's
// incremental of the volume runs: the second must not bring the same base forward meanwhile.
// It did: the first then kept, under its own backup's name, a base holding writes its backup
// never read, and the next incremental took them for unchanged and restored older bytes.
func TestTwoGatewaysDoNotBringOneBaseForwardAtOnce(t *testing.T) {
	dir := t.TempDir()
	ctx := adminCtx()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.Init(context.Background(), cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	open := func(state string) *gateway.Service {
		c := cfg
		c.StateDir = filepath.Join(dir, state)
		s, err := gateway.Open(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s1 := open("state-1")
	_, vol, v := trackedImage(t, s1, 41)
	if _, err := s1.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	s2 := open("state-2") // a new index: it learns the volume from the repository
	if err := s2.SyncBackups(context.Background()); err != nil {
		t.Fatal(err)
	}

	// The first gateway's incremental brings the base forward and stops while it reads.
	writeAt(t, vol, 1<<20, 64<<10, 1)
	paused, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b1, job1, err := s1.StartBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true,
		Progress: func(int64, int64) { once.Do(func() { close(paused); <-resume }) }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- job1(ctx) }()
	<-paused

	// Meanwhile the volume is written far from that, and the second gateway's incremental of
	// it runs (and fails after it has done what it does to the base).
	writeAt(t, vol, 40<<20, 64<<10, 2)
	jobCtx, cancel := context.WithCancel(ctx)
	_, job2, err := s2.StartBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true, Progress: func(int64, int64) { cancel() }})
	if err != nil {
		t.Fatal(err)
	}
	_ = job2(jobCtx)
	cancel()
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := restoreSHA(t, s1, ctx, b1.ID); got == sha256File(t, vol) {
		t.Fatal("test set-up: the first incremental read the write made after it began")
	}

	// The next incremental on the first gateway: its parent is the first incremental.
	inc, err := s1.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := restoreSHA(t, s1, ctx, inc.ID), sha256File(t, vol); got != want {
		t.Fatalf("incremental (read %q, %d bytes) restores sha256 %s, the volume has %s", inc.ReadMode, inc.Stats.ReadBytes, got, want)
	}

	// Again, and this time the second gateway's incremental commits: it finds the base in use,
	// leaves it alone and reads in full; each backup restores what it read.
	writeAt(t, vol, 2<<20, 64<<10, 3)
	before := sha256File(t, vol)
	paused, resume = make(chan struct{}), make(chan struct{})
	once = sync.Once{}
	b3, job3, err := s1.StartBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true,
		Progress: func(int64, int64) { once.Do(func() { close(paused); <-resume }) }})
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- job3(ctx) }()
	<-paused
	writeAt(t, vol, 50<<20, 64<<10, 4)
	b4, err := s2.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if b4.ReadMode != gateway.ReadFull || !strings.Contains(b4.ReadFallback, "another backup") {
		t.Errorf("incremental while the other gateway's used the base: read %q (%s)", b4.ReadMode, b4.ReadFallback)
	}
	if got, want := restoreSHA(t, s2, ctx, b4.ID), sha256File(t, vol); got != want {
		t.Fatalf("the second gateway's incremental restores sha256 %s, the volume had %s", got, want)
	}
	close(resume)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := restoreSHA(t, s1, ctx, b3.ID); got != before {
		t.Fatalf("the first gateway's incremental restores sha256 %s, the volume had %s when it began", got, before)
	}
	for i, s := range []*gateway.Service{s1, s2} {
		if err := s.SyncBackups(context.Background()); err != nil {
			t.Fatal(err)
		}
		writeAt(t, vol, int64(10+i)<<20, 64<<10, byte(5+i))
		inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := restoreSHA(t, s, ctx, inc.ID), sha256File(t, vol); got != want {
			t.Fatalf("gateway %d: incremental (read %q, %d bytes) restores sha256 %s, the volume has %s", i+1, inc.ReadMode, inc.Stats.ReadBytes, got, want)
		}
	}
}

// Zeros come to an image file without data writes too: a punched hole, a zeroed range (left
// unwritten), a truncate and extend back. An incremental that brings the base forward in
// place reads them as the zeros they are, not the base's old bytes.
func TestBaseBroughtForwardOverHolesAndZeroedRanges(t *testing.T) {
	s, _ := newService(t)
	ctx := adminCtx()
	_, vol, v := trackedImage(t, s, 51)
	const size = trackedSize
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		change func(f *os.File) error
	}{
		{"punched hole", func(f *os.File) error {
			return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 3<<20, 1<<20)
		}},
		{"zeroed range", func(f *os.File) error {
			return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, 9<<20, 1<<20)
		}},
		{"preallocated after a hole", func(f *os.File) error {
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 20<<20, 1<<20); err != nil {
				return err
			}
			return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 20<<20, 1<<20)
		}},
		{"truncated and extended", func(f *os.File) error {
			if err := f.Truncate(size - 5<<20); err != nil {
				return err
			}
			return f.Truncate(size)
		}},
	}
	for _, st := range steps {
		f, err := os.OpenFile(vol, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = st.change(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := restoreSHA(t, s, ctx, inc.ID), sha256File(t, vol); got != want {
			t.Fatalf("after a %s the incremental (read %q, %d bytes) restores sha256 %s, the volume has %s", st.name, inc.ReadMode, inc.Stats.ReadBytes, got, want)
		}
		t.Logf("%s: read %q (%s), %d bytes", st.name, inc.ReadMode, inc.ReadFallback, inc.Stats.ReadBytes)
	}
}

// An incremental that brought the base forward and committed, but could not rename the base
// after itself, leaves it with its record under the parent's name. When that incremental is
// deleted (the latest may be) the parent is the parent again, and the next incremental
// compares with that base: it must read the recorded ranges too.
func TestBaseKeptUnderTheParentsNameAfterTheLatestIsDeleted(t *testing.T) {
	if _, err := exec.LookPath("chattr"); err != nil {
		testutil.Skip(t, "chattr not installed")
	}
	s, _ := newService(t)
	ctx := adminCtx()
	xfs, vol, v := trackedImage(t, s, 61)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(xfs, ".cairn-cbt", v.ID)
	chattr := func(flag string) {
		if out, err := exec.Command("chattr", flag, dir).CombinedOutput(); err != nil {
			t.Fatalf("chattr %s %s: %v: %s", flag, dir, err, out)
		}
	}
	t.Cleanup(func() { _ = exec.Command("chattr", "-i", dir).Run() })
	testutil.ScatterWrites(t, vol, 62, 0.02, 4096, 65536)
	var once sync.Once
	inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true,
		Progress: func(int64, int64) { once.Do(func() { chattr("+i") }) }}) // the rename will fail
	if err != nil {
		t.Fatal(err)
	}
	chattr("-i")
	if _, err := os.Stat(filepath.Join(dir, full.ID+".dirty")); err != nil {
		t.Fatalf("test set-up: the base was kept after all: %v", err)
	}
	if got := restoreSHA(t, s, ctx, inc.ID); got != sha256File(t, vol) {
		t.Fatal("the incremental restores other bytes than the volume's")
	}
	if _, err := s.DeleteBackup(ctx, inc.ID, false); err != nil {
		t.Fatal(err)
	}
	testutil.ScatterWrites(t, vol, 63, 0.01, 4096, 65536)
	next, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if next.ParentID != full.ID || next.ReadMode != gateway.ReadReflinkDiff {
		t.Errorf("next incremental: parent %s, read %q (%s); want parent %s by reflink-diff", next.ParentID, next.ReadMode, next.ReadFallback, full.ID)
	}
	if got, want := restoreSHA(t, s, ctx, next.ID), sha256File(t, vol); got != want {
		t.Fatalf("incremental on the parent's base (read %q, %d bytes) restores sha256 %s, the volume has %s", next.ReadMode, next.Stats.ReadBytes, got, want)
	}
}

// Changed-block tracking turned off for a tracked image (volume update --no-track-changes)
// gives back its base at once, and its next incremental reads in full and keeps none; turned
// on again, the backup after it keeps a base and the one after that reads only what changed.
// Another gateway on the repository takes the change at its catch-up, and one that cannot
// track (an image on a file system without reflinks) is refused.
func TestTrackingTurnedOffAndOnAgain(t *testing.T) {
	dir := t.TempDir()
	a, b, _ := twoGateways(t, dir)
	gateway.SetVolumeRecordGraceForTest(t, 0)
	ctx := adminCtx()
	xfs, vol, v := trackedImage(t, a, 41)
	store := filepath.Join(xfs, ".cairn-cbt", v.ID)
	if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Volume(ctx, v.ID); err != nil || !got.TrackChanges {
		t.Fatalf("the other gateway's volume before: %+v, %v; want it tracked", got, err)
	}
	off, on := false, true
	if got, err := a.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{TrackChanges: &off}); err != nil || got.TrackChanges {
		t.Fatalf("tracking turned off: %+v, %v", got, err)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("the base store after tracking was turned off: %v, want it gone", err)
	}
	if err := b.SyncBackups(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Volume(ctx, v.ID); err != nil || got.TrackChanges {
		t.Fatalf("the other gateway's volume after its catch-up: %+v, %v; want it untracked", got, err)
	}
	testutil.ScatterWrites(t, vol, 42, 0.01, 4096, 65536)
	inc, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if inc.ReadMode != gateway.ReadFull {
		t.Errorf("an incremental of an untracked volume read %q, want in full", inc.ReadMode)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("an incremental of an untracked volume kept a base: %v", err)
	}
	if got, err := a.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{TrackChanges: &on}); err != nil || !got.TrackChanges {
		t.Fatalf("tracking turned on again: %+v, %v", got, err)
	}
	testutil.ScatterWrites(t, vol, 43, 0.01, 4096, 65536)
	if _, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true}); err != nil {
		t.Fatal(err)
	}
	testutil.ScatterWrites(t, vol, 44, 0.01, 4096, 65536)
	last, err := a.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if last.ReadMode != gateway.ReadReflinkDiff {
		t.Errorf("the second incremental after tracking was turned on read %q (%s), want %q", last.ReadMode, last.ReadFallback, gateway.ReadReflinkDiff)
	}
	if restoreSHA(t, a, ctx, last.ID) != sha256File(t, vol) {
		t.Fatal("the incremental read by reflink-diff restores to other bytes than the volume")
	}
	plain, err := a.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, testutil.MountTmpfs(t, 8<<20), "plain.img", 64<<10), Name: "plain"})
	if err != nil || plain.TrackChanges {
		t.Fatalf("an image on tmpfs: %+v, %v; want it untracked", plain, err)
	}
	if _, err := a.UpdateVolume(ctx, "plain", gateway.VolumeUpdate{TrackChanges: &on}); !errors.Is(err, gateway.ErrInvalid) {
		t.Fatalf("tracking turned on where the file system cannot: %v, want invalid", err)
	}
}

// Tracking turned off after a backup made its read plan (a clone in the base store, as a
// backup with hooks takes) and before it claimed the volume: the update gives the base back,
// and the backup is refused as a conflict rather than keep a base for a volume no longer
// tracked. The next backup reads in full and keeps none.
func TestTrackingTurnedOffWhileABackupBegins(t *testing.T) {
	s, _ := newService(t)
	ctx := adminCtx()
	xfs, vol, v := trackedImage(t, s, 51)
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID}); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(xfs, ".cairn-cbt", v.ID)
	sync := t.TempDir()
	started, proceed := filepath.Join(sync, "started"), filepath.Join(sync, "go")
	// The post-hook runs after the read plan and before the claim: it holds the backup there.
	post := fmt.Sprintf("touch %s; while [ ! -e %s ]; do sleep 0.01; done", started, proceed)
	done := make(chan error, 1)
	go func() {
		_, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true, Hooks: gateway.Hooks{Post: post}})
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for _, err := os.Stat(started); err != nil; _, err = os.Stat(started) {
		if time.Now().After(deadline) {
			t.Fatal("the backup's post-hook did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	off := false
	if _, err := s.UpdateVolume(ctx, v.ID, gateway.VolumeUpdate{TrackChanges: &off}); err != nil {
		t.Fatalf("tracking turned off before the backup's claim: %v", err)
	}
	if err := os.WriteFile(proceed, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("the backup that began with tracking on: %v, want a conflict", err)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("the base store after the refused backup: %v, want it gone", err)
	}
	next, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v.ID, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if next.ReadMode != gateway.ReadFull {
		t.Errorf("the next incremental read %q, want in full", next.ReadMode)
	}
	if _, err := os.Stat(store); !os.IsNotExist(err) {
		t.Fatalf("the next backup kept a base: %v", err)
	}
	if restoreSHA(t, s, ctx, next.ID) != sha256File(t, vol) {
		t.Fatal("the next incremental restores to other bytes than the volume")
	}
}
