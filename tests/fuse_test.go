package tests

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// fuseMount is a 'cairn mount' process serving a repository on dir.
type fuseMount struct {
	t      *testing.T
	dir    string
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
}

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// requireFuse skips without /dev/fuse or fusermount3.
func requireFuse(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: %v", err)
	}
	testutil.RequireCommand(t, "fusermount3")
}

// mountCairn runs 'cairn mount' on a new directory as a separate process (a process must
// never read its own mount through a loop device) and waits until the tree is there. When
// the test ends it stops the process with SIGTERM and checks that neither the process nor
// the mount is left behind.
func mountCairn(t *testing.T, r *cairnRepo, args ...string) *fuseMount {
	t.Helper()
	requireFuse(t)
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m := startMount(t, r, dir, args...)
	t.Cleanup(func() { m.stop(syscall.SIGTERM) })
	return m
}

func startMount(t *testing.T, r *cairnRepo, dir string, args ...string) *fuseMount {
	t.Helper()
	m := &fuseMount{t: t, dir: dir, stderr: &lockedBuffer{}, done: make(chan struct{})}
	m.cmd = exec.Command(cairnBin, append([]string{"mount", dir}, args...)...)
	m.cmd.Env = cairnEnv(r.Env)
	m.cmd.Stderr = m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start cairn mount: %v", err)
	}
	go func() { _ = m.cmd.Wait(); close(m.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The kernel may answer a stat of a dead mount from its cache: wait for the line
		// that says the new mount is up, then for the tree.
		if strings.Contains(m.stderr.String(), " mounted on ") {
			if _, err := os.ReadDir(dir); err == nil {
				return m
			}
		}
		select {
		case <-m.done:
			t.Fatalf("cairn mount exited with %v before mounting:\n%s", m.cmd.ProcessState, m.stderr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = m.cmd.Process.Kill()
			<-m.done
			fuseDetach(dir)
			t.Fatalf("cairn mount did not mount %s within 30s:\n%s", dir, m.stderr)
		}
	}
}

// stop signals the process, waits for it, and checks nothing is left behind. It is safe to
// call more than once.
func (m *fuseMount) stop(sig syscall.Signal) {
	m.t.Helper()
	select {
	case <-m.done:
	default:
		_ = m.cmd.Process.Signal(sig)
		select {
		case <-m.done:
		case <-time.After(30 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.done
			m.t.Errorf("cairn mount did not stop within 30s of %v:\n%s", sig, m.stderr)
		}
	}
	if mounted(m.t, m.dir) {
		m.t.Errorf("%s is still mounted after cairn mount stopped", m.dir)
		fuseDetach(m.dir)
	}
}

// mounted reports whether dir is a mount point now.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

func fuseDetach(dir string) { _ = exec.Command("fusermount3", "-u", "-z", dir).Run() }

func (m *fuseMount) path(elem ...string) string {
	return filepath.Join(append([]string{m.dir}, elem...)...)
}

// fuseBackupRecord is the part of backup.json the tests read.
type fuseBackupRecord struct {
	ID        string    `json:"id"`
	Size      int64     `json:"size"`
	CreatedAt time.Time `json:"created_at"`
}

func readRecord(t *testing.T, path string) fuseBackupRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rec fuseBackupRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rec
}

func sha256Section(t *testing.T, path string, off, n int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if got, err := io.Copy(h, io.NewSectionReader(f, off, n)); err != nil || got != n {
		t.Fatalf("hash %s [%d, +%d): %d bytes, %v", path, off, n, got, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestFusePointsInTime: every point of a chain (a full and three incrementals) reads back
// through the mount byte for byte, by id and by volume and time; latest is the newest;
// attributes are right and inode numbers stable; random unaligned reads across block
// boundaries and concurrent readers get the source's bytes.
func TestFusePointsInTime(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 24*mib, 31, testutil.Mixed)
	points := r.chain(vol, 3, 310)
	m := mountCairn(t, r)

	byID := map[string]string{}
	for i, p := range points {
		img := m.path("backups", p.backup.ID, "disk.img")
		if got := testutil.SHA256File(t, img); got != p.sha {
			t.Errorf("point %d: backups/%s/disk.img sha256 %s, want %s", i, p.backup.ID, got, p.sha)
		}
		byID[p.backup.ID] = p.sha
	}

	// volumes/vol.img: one directory per point, named by time, and latest.
	vdir := m.path("volumes", "vol.img")
	ents, err := os.ReadDir(vdir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != len(points)+1 || !slices.Contains(names, "latest") {
		t.Fatalf("volumes/vol.img has %v, want %d backups and latest", names, len(points))
	}
	for _, name := range names {
		if name == "latest" {
			continue
		}
		rec := readRecord(t, filepath.Join(vdir, name, "backup.json"))
		want, ok := byID[rec.ID]
		if !ok {
			t.Fatalf("volumes/vol.img/%s holds unknown backup %s", name, rec.ID)
		}
		if want := rec.CreatedAt.UTC().Format("2006-01-02T150405Z"); name != want && name != want+"-"+rec.ID[:8] {
			t.Errorf("directory %s for an unnamed backup made at %v", name, rec.CreatedAt)
		}
		img := filepath.Join(vdir, name, "disk.img")
		if got := testutil.SHA256File(t, img); got != want {
			t.Errorf("volumes/vol.img/%s/disk.img sha256 %s, want %s", name, got, want)
		}
		var st, st2 syscall.Stat_t
		if err := syscall.Stat(img, &st); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(m.path("backups", rec.ID, "disk.img"), &st2); err != nil {
			t.Fatal(err)
		}
		if st.Size != 24*mib || st.Mtim.Sec != rec.CreatedAt.Unix() || st.Mode&0o777 != 0o400 || st.Uid != 0 {
			t.Errorf("%s: size %d mtime %d mode %o uid %d; want %d, %d, 0400, 0", img, st.Size, st.Mtim.Sec, st.Mode&0o777, st.Uid, 24*mib, rec.CreatedAt.Unix())
		}
		if st.Blocks <= 0 || st.Blocks*512 > st.Size {
			t.Errorf("%s: %d blocks for a %d-byte image with holes", img, st.Blocks, st.Size)
		}
		if st.Ino != st2.Ino {
			t.Errorf("disk.img of backup %s: inode %d by volume, %d by id; want one file", rec.ID, st.Ino, st2.Ino)
		}
	}
	last := points[len(points)-1]
	target, err := os.Readlink(filepath.Join(vdir, "latest"))
	if err != nil {
		t.Fatal(err)
	}
	if rec := readRecord(t, filepath.Join(vdir, target, "backup.json")); rec.ID != last.backup.ID {
		t.Errorf("latest -> %s (backup %s), want the newest backup %s", target, rec.ID, last.backup.ID)
	}

	// The newest point equals the volume as it is now: random unaligned reads across blocks.
	latest := filepath.Join(vdir, "latest", "disk.img")
	src, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(latest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 300 {
		n := 1 + rng.IntN(100<<10)
		off := rng.Int64N(int64(len(src)) - int64(n) + 1)
		if i%3 == 0 { // straddle a 16 KiB block boundary
			off = max(0, (off>>14)<<14-int64(rng.IntN(100)))
		}
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil {
			t.Fatalf("read %d at %d: %v", n, off, err)
		}
		if !bytes.Equal(buf, src[off:off+int64(n)]) {
			t.Fatalf("read %d at %d: bytes differ from the volume", n, off)
		}
	}
	// Reading past the end gives what is there and EOF.
	buf := make([]byte, 100)
	if n, err := f.ReadAt(buf, int64(len(src))-30); n != 30 || !errors.Is(err, io.EOF) || !bytes.Equal(buf[:30], src[len(src)-30:]) {
		t.Errorf("read across the end: %d bytes, %v", n, err)
	}

	// Concurrent readers of all points at once.
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(points))
	for round := range 2 {
		for _, p := range points {
			wg.Go(func() {
				img := m.path("backups", p.backup.ID, "disk.img")
				if round == 1 {
					img = latest
				}
				g, err := os.Open(img)
				if err != nil {
					errs <- err
					return
				}
				defer g.Close()
				h := sha256.New()
				if _, err := io.CopyBuffer(h, g, make([]byte, 128<<10)); err != nil {
					errs <- err
					return
				}
				want := p.sha
				if round == 1 {
					want = last.sha
				}
				if got := hex.EncodeToString(h.Sum(nil)); got != want {
					errs <- fmt.Errorf("concurrent read of %s: sha256 %s, want %s", img, got, want)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// Writes are refused.
	if _, err := os.OpenFile(latest, os.O_WRONLY, 0); !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.EACCES) {
		t.Errorf("open for writing: %v, want EROFS or EACCES", err)
	}
	if err := os.Mkdir(m.path("volumes", "new"), 0o700); err == nil {
		t.Error("mkdir in the tree succeeded")
	}
}

// TestFuseExt4FileRecovery: an ext4 image made by mkfs.ext4 -d with known files, backed up,
// attached read-only through the mount with losetup -r and mounted ro,noload: a file reads
// back as it was.
func TestFuseExt4FileRecovery(t *testing.T) {
	requireFuse(t)
	testutil.RequireRoot(t)
	mkfs := testutil.RequireCommand(t, "mkfs.ext4")
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	if err := os.MkdirAll(filepath.Join(files, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	known := make([]byte, 3*mib+12345)
	_, _ = rand.NewChaCha8([32]byte{9}).Read(known)
	if err := os.WriteFile(filepath.Join(files, "etc", "known.bin"), known, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "etc", "fstab"), []byte("/dev/vda1 / ext4 defaults 0 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vol := filepath.Join(dir, "fs.img")
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", files, vol, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d: %v: %s", err, out)
	}
	r := newCairnRepo(t, nil)
	b := r.createBackup(vol)
	m := mountCairn(t, r)
	img := m.path("backups", b.ID, "disk.img")
	if got, want := testutil.SHA256File(t, img), testutil.SHA256File(t, vol); got != want {
		t.Fatalf("disk.img sha256 %s, want %s", got, want)
	}
	loop := testutil.LoopDevice(t, img, true)
	fsDir := testutil.Mount(t, loop, "ro", "noload")
	got, err := os.ReadFile(filepath.Join(fsDir, "etc", "known.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, known) {
		t.Fatal("etc/known.bin recovered through the mount differs from the original")
	}
	if fstab, err := os.ReadFile(filepath.Join(fsDir, "etc", "fstab")); err != nil || !strings.HasPrefix(string(fstab), "/dev/vda1") {
		t.Fatalf("etc/fstab: %q %v", fstab, err)
	}
}

// partitionedImage writes a 40 MiB image of random bytes with an ext4 file system holding
// known.bin in one partition, then lays a partition table over it with sfdisk. It returns
// the partitions' numbers and byte ranges as sfdisk reports them.
func partitionedImage(t *testing.T, path, script string, ext4Part int, known []byte) map[int][2]int64 {
	t.Helper()
	sfdisk := testutil.RequireCommand(t, "sfdisk")
	mkfs := testutil.RequireCommand(t, "mkfs.ext4")
	testutil.WriteImage(t, path, 40*mib, 41, testutil.Random)
	cmd := exec.Command(sfdisk, "-q", path)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	out, err := exec.Command(sfdisk, "-J", path).Output()
	if err != nil {
		t.Fatalf("sfdisk -J: %v", err)
	}
	var ref struct {
		PartitionTable struct {
			SectorSize int64 `json:"sectorsize"`
			Partitions []struct {
				Node        string `json:"node"`
				Start, Size int64
				Type        string
			} `json:"partitions"`
		} `json:"partitiontable"`
	}
	if err := json.Unmarshal(out, &ref); err != nil {
		t.Fatal(err)
	}
	parts := map[int][2]int64{}
	for _, p := range ref.PartitionTable.Partitions {
		if p.Type == "5" || p.Type == "f" {
			continue // the extended partition holds the logicals; it is not exposed
		}
		var n int
		if _, err := fmt.Sscanf(strings.TrimPrefix(p.Node, path), "%d", &n); err != nil {
			t.Fatalf("sfdisk node %q: %v", p.Node, err)
		}
		ss := ref.PartitionTable.SectorSize
		parts[n] = [2]int64{p.Start * ss, p.Size * ss}
	}
	// An ext4 file system with known.bin, copied into partition ext4Part.
	files := filepath.Join(t.TempDir(), "files")
	if err := os.Mkdir(files, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(files, "known.bin"), known, 0o644); err != nil {
		t.Fatal(err)
	}
	fsImg := filepath.Join(t.TempDir(), "part.img")
	if out, err := exec.Command(mkfs, "-q", "-F", "-d", files, fsImg, fmt.Sprint(parts[ext4Part][1]/1024)+"k").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	fsBytes, err := os.ReadFile(fsImg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(fsBytes, parts[ext4Part][0]); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return parts
}

// TestFusePartitions: MBR (with a logical partition) and GPT images expose partitions/pN.img,
// each the exact byte range of its partition, and one loop-mounts in one step.
func TestFusePartitions(t *testing.T) {
	requireFuse(t)
	testutil.RequireRoot(t)
	dir := t.TempDir()
	known := make([]byte, 2*mib+77)
	_, _ = rand.NewChaCha8([32]byte{4}).Read(known)
	tables := map[string]struct {
		script string
		ext4   int
	}{
		"mbr.img": {"label: dos\n,8M,83\n,,E\n,12M,83\n,8M,83\n", 5},
		"gpt.img": {"label: gpt\nsize=10M, type=L, name=root\nsize=6M, type=S\nsize=12M, type=L\n", 3},
	}
	r := newCairnRepo(t, nil)
	want := map[string]map[int][2]int64{}
	ids := map[string]string{}
	for name, tc := range tables {
		vol := filepath.Join(dir, name)
		want[name] = partitionedImage(t, vol, tc.script, tc.ext4, known)
		ids[name] = r.createBackup(vol).ID
	}
	m := mountCairn(t, r)
	for name, parts := range want {
		vol := filepath.Join(dir, name)
		pdir := m.path("volumes", name, "latest", "partitions")
		ents, err := os.ReadDir(pdir)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(ents) != len(parts) {
			t.Errorf("%s: partitions/ holds %d files, sfdisk made %d partitions", name, len(ents), len(parts))
		}
		for n, rng := range parts {
			p := filepath.Join(pdir, fmt.Sprintf("p%d.img", n))
			fi, err := os.Stat(p)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if fi.Size() != rng[1] {
				t.Errorf("%s: p%d.img is %d bytes, the partition %d", name, n, fi.Size(), rng[1])
			}
			if got, want := testutil.SHA256File(t, p), sha256Section(t, vol, rng[0], rng[1]); got != want {
				t.Errorf("%s: p%d.img sha256 %s, want the partition's %s", name, n, got, want)
			}
		}
		byID := m.path("backups", ids[name], "partitions", fmt.Sprintf("p%d.img", tables[name].ext4))
		fsDir := testutil.Mount(t, byID, "loop", "ro", "noload")
		got, err := os.ReadFile(filepath.Join(fsDir, "known.bin"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !bytes.Equal(got, known) {
			t.Errorf("%s: known.bin from the loop-mounted partition differs", name)
		}
	}
}

// TestFuseCorruptChunk: a flipped byte in a pack makes reads of that block fail with EIO and a
// log line naming the backup and offset; no read returns wrong bytes.
func TestFuseCorruptChunk(t *testing.T) {
	requireFuse(t)
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
	m := mountCairn(t, r)
	src, err := os.ReadFile(vol)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(m.path("backups", b.ID, "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	failed := 0
	buf := make([]byte, 64<<10)
	for off := int64(0); off < int64(len(src)); off += int64(len(buf)) {
		n, err := f.ReadAt(buf, off)
		if err != nil {
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("read at %d: %v, want EIO", off, err)
			}
			failed++
			continue
		}
		if !bytes.Equal(buf[:n], src[off:off+int64(n)]) {
			t.Fatalf("read at %d returned wrong bytes instead of failing", off)
		}
	}
	if failed == 0 {
		t.Fatal("no read failed although a block is corrupt")
	}
	log := m.stderr.String()
	if !strings.Contains(log, b.ID) || !strings.Contains(log, "offset=") {
		t.Errorf("the mount's log does not name backup %s and an offset:\n%s", b.ID, log)
	}
}

// TestFuseSparseSeek: SEEK_DATA and SEEK_HOLE follow the backup's block map (16 KiB blocks),
// and cp --sparse=always copies the image exactly.
func TestFuseSparseSeek(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	vol := filepath.Join(dir, "sparse.img")
	const size = 64 * mib
	f, err := os.Create(vol)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		off int64
		n   int
	}{{0, 100}, {20 * mib, 100 << 10}, {size - 1, 1}} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, w.n), w.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r := newCairnRepo(t, nil)
	b := r.createBackup(vol)
	m := mountCairn(t, r)
	img := m.path("backups", b.ID, "disk.img")
	g, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	const seekData, seekHole = 3, 4
	const bs = 16 << 10
	for _, tc := range []struct {
		whence int
		off    int64
		want   int64 // -1: ENXIO
	}{
		{seekData, 0, 0}, {seekHole, 0, bs}, {seekHole, 50, bs},
		{seekData, bs, 20 * mib}, {seekData, 20*mib + 5, 20*mib + 5},
		{seekHole, 20 * mib, 20*mib + 7*bs}, {seekHole, 30 * mib, 30 * mib},
		{seekData, 20*mib + 7*bs, size - bs}, {seekHole, size - bs, size},
		{seekData, size, -1}, {seekHole, size, -1},
	} {
		got, err := g.Seek(tc.off, tc.whence)
		if tc.want == -1 {
			if !errors.Is(err, syscall.ENXIO) {
				t.Errorf("seek(%d, %d) = %d, %v; want ENXIO", tc.off, tc.whence, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("seek(%d, %d) = %d, %v; want %d", tc.off, tc.whence, got, err, tc.want)
		}
	}
	cp := filepath.Join(dir, "copy.img")
	if out, err := exec.Command("cp", "--sparse=always", img, cp).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if got, want := testutil.SHA256File(t, cp), testutil.SHA256File(t, vol); got != want {
		t.Errorf("cp --sparse=always of disk.img: sha256 %s, want %s", got, want)
	}
}

// TestFuseUnmount: SIGINT and SIGTERM unmount and end the process; an external unmount ends
// it too; a mount left by a killed process is detected and cleared by the next mount.
func TestFuseUnmount(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 5, testutil.Mixed)
	b := r.createBackup(vol)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		m := mountCairn(t, r)
		if _, err := os.ReadFile(m.path("backups", b.ID, "backup.json")); err != nil {
			t.Fatalf("%v\n%s", err, m.stderr)
		}
		m.stop(sig)
		if code := m.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("cairn mount stopped by %v: exit %d, want 0\n%s", sig, code, m.stderr)
		}
	}

	m := mountCairn(t, r)
	if out, err := exec.Command("fusermount3", "-u", m.dir).CombinedOutput(); err != nil {
		t.Fatalf("fusermount3 -u: %v: %s", err, out)
	}
	select {
	case <-m.done:
	case <-time.After(20 * time.Second):
		t.Fatal("cairn mount still runs after fusermount3 -u")
	}

	// kill -9 leaves a dead mount behind: the next mount clears it and says so.
	m = mountCairn(t, r)
	_ = m.cmd.Process.Kill()
	<-m.done
	// The kernel may answer a stat from its cache; a listing always asks the dead server.
	if _, err := os.ReadDir(m.dir); !errors.Is(err, syscall.ENOTCONN) {
		fuseDetach(m.dir)
		t.Fatalf("after kill -9, listing the mountpoint: %v, want ENOTCONN", err)
	}
	m2 := startMount(t, r, m.dir)
	t.Cleanup(func() { m2.stop(syscall.SIGTERM) })
	if !strings.Contains(m2.stderr.String(), "stale mount") {
		t.Errorf("mount over a stale mount does not say it cleared it:\n%s", m2.stderr)
	}
	if _, err := os.Stat(m2.path("backups", b.ID, "disk.img")); err != nil {
		t.Errorf("after clearing a stale mount: %v", err)
	}
}

// TestFuseBadMountpoints: a missing, non-empty or non-directory mountpoint is one clear line
// and exit code 2.
func TestFuseBadMountpoints(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	full := filepath.Join(dir, "full")
	if err := os.MkdirAll(filepath.Join(full, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ dir, want string }{
		{filepath.Join(dir, "missing"), "does not exist"},
		{full, "not empty"},
		{file, "not a directory"},
	} {
		msg := r.mustFail([]int{2}, "mount", tc.dir)
		if !strings.Contains(msg, tc.want) || !strings.Contains(msg, tc.dir) {
			t.Errorf("mount %s: %q, want it to name the directory and say %q", tc.dir, msg, tc.want)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	if msg := r.mustFail([]int{2}, "mount", empty, "--cache-size", "lots"); !strings.Contains(msg, "--cache-size") {
		t.Errorf("mount --cache-size lots: %q, want it to name the flag", msg)
	}
	if mounted(t, empty) {
		t.Errorf("a refused mount left %s mounted", empty)
	}
}

// TestFuseProjectFilter: --project shows only that project's backups.
func TestFuseProjectFilter(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	testutil.WriteImage(t, a, 2*mib, 1, testutil.Mixed)
	testutil.WriteImage(t, b, 2*mib, 2, testutil.Mixed)
	ba := r.createBackup(a)
	bb := r.createBackup(b, "--project", "p2")
	m := mountCairn(t, r, "--project", "p2")
	if _, err := os.Stat(m.path("backups", bb.ID, "disk.img")); err != nil {
		t.Errorf("project p2's backup: %v", err)
	}
	if _, err := os.Stat(m.path("backups", ba.ID)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("another project's backup is visible: %v", err)
	}
	ents, err := os.ReadDir(m.path("backups"))
	if err != nil || len(ents) != 1 {
		t.Errorf("backups/ with --project p2: %v %v, want one backup", ents, err)
	}
	vols, err := os.ReadDir(m.path("volumes"))
	if err != nil || len(vols) != 1 || vols[0].Name() != "b.img" {
		t.Errorf("volumes/ with --project p2: %v %v, want only b.img", vols, err)
	}
}

// TestFuseNamedBackupFolder: through a real mount, a named backup's folder is its time then
// its name, made safe for a path, and the time alone still resolves; both read the backup.
func TestFuseNamedBackupFolder(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 33, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol, "--name", "nightly before upgrade")
	var rec struct {
		CreatedAt time.Time `json:"created_at"`
	}
	r.mustJSON(&rec, "backup", "show", b.ID)
	m := mountCairn(t, r)
	at := rec.CreatedAt.UTC().Format("2006-01-02T150405Z")
	ents, err := os.ReadDir(m.path("volumes", "vol.img"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := at + "-nightly_before_upgrade"
	if !slices.Equal(names, []string{want, "latest"}) {
		t.Fatalf("volumes/vol.img has %v, want [%s latest]", names, want)
	}
	for _, name := range []string{want, at} {
		if got := testutil.SHA256File(t, m.path("volumes", "vol.img", name, "disk.img")); got != sha {
			t.Errorf("volumes/vol.img/%s/disk.img sha256 %s, want %s", name, got, sha)
		}
	}
}

// TestMountServesCommands: while a plain 'cairn mount' runs, other commands on the repository
// work (the mount owns the index and serves them on the socket, as a gateway does), and a new
// backup shows in the mounted tree at once; a command that must open the index itself (a
// second mount) is refused with the holder named.
func TestMountServesCommands(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 34, testutil.Mixed)
	first := r.createBackup(vol, "--name", "before")
	m := mountCairn(t, r, "--refresh", "0") // no periodic refresh: only the change itself can show the new backup

	testutil.ScatterWrites(t, vol, 35, 0.02, 4<<10, 16<<10)
	sha := testutil.SHA256File(t, vol)
	second := r.createBackup(vol, "-i", "--name", "beside-the-mount")
	if !second.IsIncremental || second.ParentID != first.ID {
		t.Fatalf("backup beside the mount: %+v, want an incremental of %s", second, first.ID)
	}
	if got := testutil.SHA256File(t, m.path("backups", second.ID, "disk.img")); got != sha {
		t.Errorf("the new backup in the mount: sha256 %s, want %s", got, sha)
	}
	target, err := os.Readlink(m.path("volumes", "vol.img", "latest"))
	if err != nil || !strings.HasSuffix(target, "-beside-the-mount") {
		t.Errorf("latest -> %q %v, want the new backup's folder", target, err)
	}
	var list []backupJSON
	r.mustJSON(&list, "backup", "list")
	if len(list) != 2 {
		t.Errorf("backup list beside the mount: %d backups, want 2", len(list))
	}

	other := filepath.Join(t.TempDir(), "mnt2")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	res := r.run("mount", other)
	msg := checkFailure(t, res, []int{4}, []string{"mount", other})
	if want := fmt.Sprintf("pid %d (cairn mount %s", m.cmd.Process.Pid, m.dir); !strings.Contains(msg, want) {
		t.Errorf("second mount: %q does not name the holder (%s ...)", msg, want)
	}
}

// TestFuseFollowsAnotherProcess: a mount shows what another process with its own index
// (another gateway or host on the repository) stores and deletes, at its next refresh: a new
// backup appears with the source's bytes, and a deleted one leaves the tree.
func TestFuseFollowsAnotherProcess(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol1, vol2 := filepath.Join(dir, "vol1.img"), filepath.Join(dir, "vol2.img")
	testutil.WriteImage(t, vol1, 2*mib, 31, testutil.Mixed)
	testutil.WriteImage(t, vol2, 2*mib, 32, testutil.Mixed)
	b1 := r.createBackup(vol1)
	m := mountCairn(t, r, "--refresh", "200ms")
	if _, err := os.Stat(m.path("backups", b1.ID, "disk.img")); err != nil {
		t.Fatalf("%v\n%s", err, m.stderr)
	}
	other := r.elsewhere()
	b2 := other.createBackup(vol2)
	other.mustRun("backup", "delete", "--yes", b1.ID)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err1 := os.Stat(m.path("backups", b1.ID))
		_, err2 := os.Stat(m.path("backups", b2.ID, "disk.img"))
		if errors.Is(err1, os.ErrNotExist) && err2 == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after another process stored %s and deleted %s: stat of the new one %v, of the deleted one %v\n%s",
				b2.ID, b1.ID, err2, err1, m.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := testutil.SHA256File(t, m.path("backups", b2.ID, "disk.img")), testutil.SHA256File(t, vol2); got != want {
		t.Errorf("backups/%s/disk.img: sha256 %s, want the source's %s", b2.ID, got, want)
	}
}

// TestFuseReadsFollowAGCElsewhere: a mount reads a backup whose pack another process's gc
// repacked (its parent deleted there): the mount's index still names the old pack, and its
// reads, many at once, follow the blobs to their new pack and give the source's bytes.
func TestFuseReadsFollowAGCElsewhere(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 8*mib, 33, testutil.Random)
	first := r.createBackup(vol)
	// Most of the volume changes: the first backup's pack is mostly what only it needs, and
	// gc repacks the rest of it (shared with the second, a full that deduplicates against
	// it) once the first is gone.
	changed := filepath.Join(dir, "changed.img")
	testutil.WriteImage(t, changed, 6*mib, 34, testutil.Random)
	b, err := os.ReadFile(changed)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(vol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := testutil.SHA256File(t, vol)
	second := r.createBackup(vol)
	m := mountCairn(t, r, "--refresh", "0")
	img := m.path("backups", second.ID, "disk.img")
	if _, err := os.Stat(img); err != nil {
		t.Fatalf("%v\n%s", err, m.stderr)
	}

	other := r.elsewhere()
	other.mustRun("backup", "delete", "--yes", first.ID)
	var gc struct {
		PacksRepacked int `json:"packs_repacked"`
	}
	other.mustJSON(&gc, "repo", "gc")
	if gc.PacksRepacked == 0 {
		t.Fatalf("gc elsewhere repacked nothing: %+v", gc)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if got := testutil.SHA256File(t, img); got != want {
				t.Errorf("reader %d of backups/%s/disk.img after a gc elsewhere: sha256 %s, want the source's %s", i, second.ID, got, want)
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.Logf("cairn mount:\n%s", m.stderr)
	}
}

// TestFuseRecordFollowsAnotherProcess: a backup protected by another process shows so in
// the mount's backup.json at its next refresh, though the mount read the file before.
func TestFuseRecordFollowsAnotherProcess(t *testing.T) {
	requireFuse(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 35, testutil.Mixed)
	b := r.createBackup(vol)
	m := mountCairn(t, r, "--refresh", "200ms")
	type record struct {
		Protected bool `json:"protected"`
	}
	read := func() record {
		t.Helper()
		raw, err := os.ReadFile(m.path("backups", b.ID, "backup.json"))
		if err != nil {
			t.Fatalf("%v\n%s", err, m.stderr)
		}
		var rec record
		if err := json.Unmarshal(raw, &rec); err != nil {
			t.Fatalf("backup.json: %v: %q", err, raw)
		}
		return rec
	}
	if read().Protected {
		t.Fatal("backup.json says protected before anyone protected it")
	}
	r.elsewhere().mustRun("backup", "protect", b.ID)
	deadline := time.Now().Add(10 * time.Second)
	for !read().Protected {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after another process protected %s, backup.json still says it is not\n%s", b.ID, m.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
