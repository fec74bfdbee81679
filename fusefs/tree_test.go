//go:build linux

package fusefs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// memVolume is a volume in memory with no holes.
type memVolume []byte

func (m memVolume) Size() int64 { return int64(len(m)) }
func (m memVolume) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m memVolume) NextData(off int64) (int64, int64, error) {
	if off >= int64(len(m)) {
		return off, off, io.EOF
	}
	return off, int64(len(m)), nil
}

// treeFixture is a real repository (local backend, Badger index) mounted in this process.
// The tests only read regular files of the mount, never through a loop device.
type treeFixture struct {
	r   *repo.Repository
	ix  *index.Index
	fs  *FS
	mnt string
	t0  time.Time
}

func newTreeFixture(t *testing.T, o Options) *treeFixture {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testutil.Skip(t, "no /dev/fuse: %v", err)
	}
	testutil.RequireCommand(t, "fusermount3")
	dir := t.TempDir()
	ctx := context.Background()
	be, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(ctx, be, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ix, err := index.Open(filepath.Join(dir, "index"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	r, err := repo.Open(ctx, be, ix, repo.Options{ChunkCacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	f, err := Mount(mnt, r, ix, o)
	if err != nil {
		testutil.Skip(t, "cannot mount FUSE: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			_ = Detach(mnt)
		}
		f.Wait()
	})
	return &treeFixture{r: r, ix: ix, fs: f, mnt: mnt, t0: time.Date(2026, 11, 24, 10, 15, 0, 0, time.UTC)}
}

func (x *treeFixture) volume(t *testing.T, id, name, project string) {
	t.Helper()
	if err := x.ix.CreateVolume(&index.Volume{ID: id, Name: name, Path: "/dev/" + id, Project: project, Status: index.VolumeAvailable}); err != nil {
		t.Fatal(err)
	}
}

// backup stores data as an available backup of volume vol made at x.t0 + at.
func (x *treeFixture) backup(t *testing.T, id, vol, project string, at time.Duration, data []byte) {
	t.Helper()
	ctx := context.Background()
	res, err := x.r.Write(ctx, memVolume(data), repo.WriteOptions{}, func(res repo.WriteResult) error {
		// As a real backup does: the manifest is what the tree reads sizes and block maps from.
		return x.r.PutManifest(ctx, &repo.Manifest{ID: id, VolumeID: vol, Project: project, Size: int64(len(data)),
			Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats, CreatedAt: x.t0.Add(at)})
	})
	if err != nil {
		t.Fatal(err)
	}
	b := &index.Backup{ID: id, VolumeID: vol, Project: project, Status: index.BackupAvailable, Size: int64(len(data)),
		Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats, CreatedAt: x.t0.Add(at)}
	if err := x.ix.CreateBackup(b); err != nil {
		t.Fatal(err)
	}
}

func (x *treeFixture) names(t *testing.T, elem ...string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(append([]string{x.mnt}, elem...)...))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

// TestTreeRefresh: names are sanitised and disambiguated; backups that appear or go away
// show after Refresh (and not before: listings are cached), and latest follows.
func TestTreeRefresh(t *testing.T) {
	x := newTreeFixture(t, Options{})
	x.volume(t, "v1", "web/db\x01", "admin")
	x.volume(t, "v2aaaaaaaa", "dup", "admin")
	x.volume(t, "v3bbbbbbbb", "dup", "other")
	one, two := randomBytes(1, 100<<10), randomBytes(2, 70<<10+3)
	x.backup(t, "b1", "v1", "admin", 0, one)

	if got, want := x.names(t, "volumes"), []string{"dup-v2aaaaaa", "dup-v3bbbbbb", "web_db_"}; !slices.Equal(got, want) {
		t.Fatalf("volumes/ = %v, want %v", got, want)
	}
	if got, want := x.names(t, "volumes", "web_db_"), []string{"2026-11-24T101500Z", "latest"}; !slices.Equal(got, want) {
		t.Fatalf("volume dir = %v, want %v", got, want)
	}
	got, err := os.ReadFile(filepath.Join(x.mnt, "volumes", "web_db_", "latest", "disk.img"))
	if err != nil || !bytes.Equal(got, one) {
		t.Fatalf("latest/disk.img: %d bytes, %v; want the first backup", len(got), err)
	}

	// A second backup in the same second: both get their short id; latest moves.
	x.backup(t, "b2", "v1", "admin", 500*time.Millisecond, two)
	if got := x.names(t, "volumes", "web_db_"); len(got) != 2 {
		t.Fatalf("before Refresh the listing changed: %v", got)
	}
	x.fs.Refresh(context.Background())
	want := []string{"2026-11-24T101500Z-b1", "2026-11-24T101500Z-b2", "latest"}
	if got := x.names(t, "volumes", "web_db_"); !slices.Equal(got, want) {
		t.Fatalf("after Refresh: %v, want %v", got, want)
	}
	if target, err := os.Readlink(filepath.Join(x.mnt, "volumes", "web_db_", "latest")); err != nil || target != want[1] {
		t.Fatalf("latest -> %q %v, want %s", target, err, want[1])
	}
	got, err = os.ReadFile(filepath.Join(x.mnt, "backups", "b2", "disk.img"))
	if err != nil || !bytes.Equal(got, two) {
		t.Fatalf("backups/b2/disk.img: %d bytes, %v", len(got), err)
	}
	// The old name is gone from the kernel's cache too.
	if _, err := os.Stat(filepath.Join(x.mnt, "volumes", "web_db_", "2026-11-24T101500Z")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("renamed backup directory still resolves: %v", err)
	}

	// A backup being deleted leaves the tree.
	if _, err := x.ix.UpdateBackup("b2", func(b *index.Backup) error { b.Status = index.BackupDeleting; return nil }); err != nil {
		t.Fatal(err)
	}
	x.fs.Refresh(context.Background())
	if _, err := os.Stat(filepath.Join(x.mnt, "backups", "b2", "disk.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("backups/b2 after it left: %v", err)
	}
	if got := x.names(t, "backups"); !slices.Equal(got, []string{"b1"}) {
		t.Errorf("backups/ = %v, want [b1]", got)
	}
	if target, err := os.Readlink(filepath.Join(x.mnt, "volumes", "web_db_", "latest")); err != nil || target != "2026-11-24T101500Z" {
		t.Errorf("latest -> %q %v after the newest left", target, err)
	}
}

// TestTreeProjectAndModes: a project filter hides other projects; --allow-other opens modes.
func TestTreeProjectAndModes(t *testing.T) {
	x := newTreeFixture(t, Options{Project: "p1", AllowOther: true})
	x.volume(t, "va", "a", "p1")
	x.volume(t, "vb", "b", "p2")
	x.backup(t, "ba", "va", "p1", 0, randomBytes(3, 20<<10))
	x.backup(t, "bb", "vb", "p2", 0, randomBytes(4, 20<<10))
	if got := x.names(t, "volumes"); !slices.Equal(got, []string{"a"}) {
		t.Errorf("volumes/ = %v, want [a]", got)
	}
	if _, err := os.Stat(filepath.Join(x.mnt, "backups", "bb")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("another project's backup: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(x.mnt, "backups", "ba", "disk.img"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o444 || st.Size != 20<<10 || st.Blksize != maxIO {
		t.Errorf("disk.img with allow-other: mode %o size %d blksize %d", st.Mode&0o777, st.Size, st.Blksize)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"vm1": "vm1", "a/b": "a_b", "a\\b": "a_b", "tab\there": "tab_here", "": "_", ".": "_.", "..": "_..",
		"nul\x00": "nul_", "bad\xffutf8": "bad_utf8", "ünïcode": "ünïcode", strings.Repeat("x", 300): strings.Repeat("x", 245),
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	if got := sanitize(strings.Repeat("é", 200)); len(got) > 245 || !strings.HasPrefix(got, "é") || strings.ContainsRune(got, '\uFFFD') {
		t.Errorf("long name cut inside a rune: %q", got)
	}
}

func TestInodeNumbers(t *testing.T) {
	seen := map[uint64]string{}
	for _, k := range [][]string{{"disk", "b1"}, {"disk", "b2"}, {"record", "b1"}, {"volume", "b1"}, {"partition", "b1", "p1.img"}, {"partition", "b1p", "1.img"}} {
		n := ino(k[0], k[1:]...)
		if n < 2 || n >= 1<<63 {
			t.Errorf("ino%v = %d out of range", k, n)
		}
		if n != ino(k[0], k[1:]...) {
			t.Errorf("ino%v not stable", k)
		}
		if prev, ok := seen[n]; ok {
			t.Errorf("ino%v collides with %s", k, prev)
		}
		seen[n] = strings.Join(k, "/")
	}
}

// TestListingIgnoresInterrupt: the kernel interrupts a request whenever the waiting thread
// takes a signal (in a Go reader, the runtime's preemption signal), which cancels the
// request's context. A backup's listing reads its manifest from the backend; it must still
// complete, not fail the open with EIO (CI saw exactly that in TestFuseUnmount). So must a
// SEEK_DATA, which reads leaves.
func TestListingIgnoresInterrupt(t *testing.T) {
	x := newTreeFixture(t, Options{})
	x.volume(t, "vol-a", "a", "p1")
	x.backup(t, "bk-1", "vol-a", "p1", 0, randomBytes(1, 64<<10))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	step := func(d *dir, name string) *dir {
		t.Helper()
		e, err := d.find(ctx, name)
		if err != nil || e == nil {
			t.Fatalf("lookup %s under an interrupted request: %v, %v", name, e, err)
		}
		return e.node().(*dir)
	}
	b := step(step(x.fs.root, "backups"), "bk-1")
	es, err := b.load(ctx)
	if err != nil {
		t.Fatalf("listing a backup under an interrupted request: %v", err)
	}
	if len(es) == 0 || es[0].name != "backup.json" {
		t.Fatalf("listing a backup: %v, want backup.json first", es)
	}

	// lseek(2) has no EINTR (Go's Seek does not retry it; CI saw TestFuseSparseSeek fail so):
	// SEEK_DATA must answer under an interrupted request too, here from leaves not yet read.
	const mib = 1 << 20
	sparse := make([]byte, 80*mib)
	copy(sparse, randomBytes(2, 64<<10))
	copy(sparse[72*mib:], randomBytes(3, 64<<10))
	x.backup(t, "bk-2", "vol-a", "p1", time.Hour, sparse)
	x.fs.Refresh(context.Background())
	e2, err := step(x.fs.root, "backups").find(context.Background(), "bk-2")
	if err != nil || e2 == nil {
		t.Fatalf("lookup bk-2: %v, %v", e2, err)
	}
	es2, err := e2.node().(*dir).load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	seeks := 0
	for _, e := range es2 {
		if f, ok := e.node().(*imageFile); ok && e.name == "disk.img" {
			seeks++
			if off, errno := f.Lseek(ctx, nil, 20*mib, 3); errno != 0 || off != 72*mib {
				t.Errorf("SEEK_DATA under an interrupted request = %d, %v; want %d", off, errno, 72*mib)
			}
		}
	}
	if seeks != 1 {
		t.Fatalf("bk-2 lists %d disk.img, want 1", seeks)
	}
	if got := errno(fmt.Errorf("read: %w", context.Canceled)); got != syscall.EINTR {
		t.Errorf("an interrupted read answers %v, want EINTR", got)
	}
}

// TestTreeBackupNames: a named backup's directory is its time then its name, made safe for a
// path; the same second and name get short ids; ls order is time order; the time-only name
// of before still resolves without being listed; latest names the new form.
func TestTreeBackupNames(t *testing.T) {
	x := newTreeFixture(t, Options{})
	x.volume(t, "v1", "vm", "admin")
	data := map[string][]byte{}
	for i, b := range []struct {
		id, name string
		at       time.Duration
	}{
		{"b1", "", 0}, {"b2", " nightly run/1\x01", time.Hour}, {"b3", "nightly", 2 * time.Hour}, {"b4", "nightly", 2*time.Hour + 500*time.Millisecond},
	} {
		data[b.id] = randomBytes(uint64(10+i), 40<<10)
		x.backup(t, b.id, "v1", "admin", b.at, data[b.id])
		if _, err := x.ix.UpdateBackup(b.id, func(r *index.Backup) error { r.Name = b.name; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	x.fs.Refresh(context.Background())
	want := []string{"2026-11-24T101500Z", "2026-11-24T111500Z-nightly_run_1_", "2026-11-24T121500Z-nightly-b3",
		"2026-11-24T121500Z-nightly-b4", "latest"}
	if got := x.names(t, "volumes", "vm"); !slices.Equal(got, want) {
		t.Fatalf("volumes/vm = %v, want %v", got, want)
	}
	if target, err := os.Readlink(filepath.Join(x.mnt, "volumes", "vm", "latest")); err != nil || target != want[3] {
		t.Errorf("latest -> %q %v, want %s", target, err, want[3])
	}
	for name, id := range map[string]string{want[1]: "b2", want[2]: "b3",
		"2026-11-24T111500Z": "b2", "2026-11-24T121500Z-b3": "b3", "2026-11-24T121500Z-b4": "b4"} { // the last three: old names
		got, err := os.ReadFile(filepath.Join(x.mnt, "volumes", "vm", name, "disk.img"))
		if err != nil || !bytes.Equal(got, data[id]) {
			t.Errorf("volumes/vm/%s/disk.img: %d bytes, %v; want backup %s", name, len(got), err, id)
		}
	}
	if _, err := os.Stat(filepath.Join(x.mnt, "volumes", "vm", "2026-11-24T121500Z")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an ambiguous old name resolves: %v", err)
	}
}

func TestLabel(t *testing.T) {
	for in, want := range map[string]string{
		"nightly": "nightly", " two words ": "two_words", "a/b\\c": "a_b_c", "bell\x07": "bell_", "": "",
		"数据": "数据", strings.Repeat("é", 80): strings.Repeat("é", 50),
	} {
		if got := label(in); got != want {
			t.Errorf("label(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTreeShowsABackupBeingRestored: a restore only reads a backup, so the backup stays in the
// tree and latest stays on it while it is restored. Before (found by review), it left the
// tree and latest went back to the backup before it: older bytes under the same name.
func TestTreeShowsABackupBeingRestored(t *testing.T) {
	x := newTreeFixture(t, Options{})
	x.volume(t, "v1", "vm", "admin")
	one, two := randomBytes(3, 100<<10), randomBytes(4, 90<<10)
	x.backup(t, "b1", "v1", "admin", 0, one)
	x.backup(t, "b2", "v1", "admin", time.Hour, two)
	if _, err := x.ix.UpdateBackup("b2", func(b *index.Backup) error { b.Status = index.BackupRestoring; return nil }); err != nil {
		t.Fatal(err)
	}
	x.fs.Refresh(context.Background())
	for _, p := range []string{"volumes/vm/latest/disk.img", "backups/b2/disk.img"} {
		if got, err := os.ReadFile(filepath.Join(x.mnt, p)); err != nil || !bytes.Equal(got, two) {
			t.Errorf("%s while b2 is restored: %d bytes, %v; want b2's (b1's: %v)", p, len(got), err, bytes.Equal(got, one))
		}
	}
}

// TestTreeRecordFollowsTheIndex: backup.json is the backup's record as it is now. A backup
// renamed, described and protected (by this gateway or another) after its directory was
// first read shows its new record there, under its new directory name and under backups/.
func TestTreeRecordFollowsTheIndex(t *testing.T) {
	x := newTreeFixture(t, Options{})
	x.volume(t, "v1", "vm", "admin")
	x.backup(t, "b1", "v1", "admin", 0, randomBytes(5, 40<<10))
	read := func(p string) index.Backup {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join(x.mnt, p))
		if err != nil {
			t.Fatal(err)
		}
		var b index.Backup
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatalf("%s: %v: %q", p, err, raw)
		}
		return b
	}
	for _, p := range []string{"backups/b1/backup.json", "volumes/vm/2026-11-24T101500Z/backup.json"} {
		if b := read(p); b.ID != "b1" || b.Name != "" || b.Protected {
			t.Fatalf("%s = %+v", p, b)
		}
	}
	if _, err := x.ix.UpdateBackup("b1", func(b *index.Backup) error {
		b.Name, b.Description, b.Protected = "nightly", "kept for the audit", true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	x.fs.Refresh(context.Background())
	for _, p := range []string{"backups/b1/backup.json", "volumes/vm/2026-11-24T101500Z-nightly/backup.json"} {
		if b := read(p); b.Name != "nightly" || b.Description != "kept for the audit" || !b.Protected {
			t.Errorf("%s after a rename and protect = name %q, description %q, protected %v", p, b.Name, b.Description, b.Protected)
		}
	}
	time.Sleep(shortTimeout + 100*time.Millisecond) // the kernel asks again for what it had cached
	for _, p := range []string{"backups/b1/backup.json", "volumes/vm/2026-11-24T101500Z-nightly/backup.json"} {
		raw, _ := os.ReadFile(filepath.Join(x.mnt, p))
		if st, err := os.Stat(filepath.Join(x.mnt, p)); err != nil || st.Size() != int64(len(raw)) {
			t.Errorf("%s: stat %v, %v; the record is %d bytes", p, st, err, len(raw))
		}
	}
}

// TestMountListsTheBackupsOfADeletedVolume: the backups of a volume that is gone (deleted or
// unmanaged) are under volumes/<its id>, with latest, beside live volumes and only in their
// project; the same bytes as under backups/.
func TestMountListsTheBackupsOfADeletedVolume(t *testing.T) {
	x := newTreeFixture(t, Options{Project: "p1"})
	x.volume(t, "va", "a", "p1")
	x.backup(t, "ba", "va", "p1", 0, randomBytes(5, 20<<10))
	gone := randomBytes(6, 24<<10)
	x.backup(t, "bg1", "vgone", "p1", time.Hour, randomBytes(7, 24<<10))
	x.backup(t, "bg2", "vgone", "p1", 2*time.Hour, gone)
	x.backup(t, "bo", "vother", "p2", 0, randomBytes(8, 20<<10)) // another project's gone volume
	if got := x.names(t, "volumes"); !slices.Equal(got, []string{"a", "vgone"}) {
		t.Fatalf("volumes/ = %v, want [a vgone]", got)
	}
	if got := x.names(t, "volumes", "vgone"); len(got) != 3 || got[2] != "latest" {
		t.Fatalf("volumes/vgone = %v, want two backups and latest", got)
	}
	data, err := os.ReadFile(filepath.Join(x.mnt, "volumes", "vgone", "latest", "disk.img"))
	if err != nil || !bytes.Equal(data, gone) {
		t.Fatalf("volumes/vgone/latest/disk.img: %d bytes, %v; want the newest backup's %d", len(data), err, len(gone))
	}
}
