package repo_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// memSource is a volume held in memory, with holes where the bytes are zero runs that the
// test marks as holes. It stands beside blockio.Source (tested on real files and devices in
// blockio and tests/) to test the engine's logic quickly.
type memSource struct {
	data  []byte
	holes [][2]int64
}

func (m *memSource) Size() int64 { return int64(len(m.data)) }
func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m.data)) {
		return 0, io.EOF
	}
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
func (m *memSource) NextData(off int64) (int64, int64, error) {
	size := int64(len(m.data))
	for off < size {
		in := false
		for _, h := range m.holes {
			if off >= h[0] && off < h[1] {
				off, in = h[1], true
			}
		}
		if !in {
			end := size
			for _, h := range m.holes {
				if h[0] > off && h[0] < end {
					end = h[0]
				}
			}
			return off, end, nil
		}
	}
	return size, size, io.EOF
}

type memTarget struct{ data []byte }

func (t *memTarget) WriteAt(p []byte, off int64) (int, error) { return copy(t.data[off:], p), nil }
func (t *memTarget) Zero(off, n int64) error                  { clear(t.data[off : off+n]); return nil }

type fixture struct {
	r   *repo.Repository
	idx *index.Index
	dir string
}

func newFixture(t *testing.T, o repo.InitOptions) *fixture {
	t.Helper()
	return newFixtureWith(t, o, nil)
}

// newFixtureWith is newFixture with the repository opened on wrap(index) when wrap is set: a
// wrapper that stands beside the real index to steer timing.
func newFixtureWith(t *testing.T, o repo.InitOptions, wrap func(repo.Index) repo.Index) *fixture {
	t.Helper()
	dir := t.TempDir()
	be, err := local.Open(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := repo.Init(ctx, be, o); err != nil {
		t.Fatal(err)
	}
	idx, err := index.Open(filepath.Join(dir, "index"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idx.Close() })
	var ri repo.Index = idx
	if wrap != nil {
		ri = wrap(idx)
	}
	r, err := repo.Open(ctx, be, ri, repo.Options{Password: o.Password, ChunkCacheBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{r: r, idx: idx, dir: dir}
}

func (f *fixture) backup(t *testing.T, id string, src repo.Source, parent *repo.Manifest) *repo.Manifest {
	t.Helper()
	o := repo.WriteOptions{}
	if parent != nil {
		o.Parent = parent.Parent()
	}
	var m *repo.Manifest
	_, err := f.r.Write(context.Background(), src, o, func(res repo.WriteResult) error {
		m = &repo.Manifest{ID: id, VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
		return f.r.PutManifest(context.Background(), m)
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *fixture) restore(t *testing.T, m *repo.Manifest) []byte {
	t.Helper()
	tgt := &memTarget{data: bytes.Repeat([]byte{0xAA}, int(m.Size))}
	if err := f.r.Restore(context.Background(), m, tgt, repo.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	return tgt.data
}

func randomVolume(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, size)
	for i := 0; i < size; i += 4096 {
		switch rng.IntN(4) {
		case 0: // random
			for j := i; j < min(i+4096, size); j++ {
				b[j] = byte(rng.Uint32())
			}
		case 1: // text-like
			for j := i; j < min(i+4096, size); j++ {
				b[j] = "the quick brown fox "[j%20]
			}
		case 2: // zeros
		case 3: // a repeated block
			copy(b[i:min(i+4096, size)], bytes.Repeat([]byte("dup!"), 1024))
		}
	}
	return b
}

func TestRoundTripSizes(t *testing.T) {
	for _, enc := range []string{repo.EncryptionNone, repo.EncryptionAES} {
		for _, comp := range []repo.Compression{repo.CompressZstd, repo.CompressLZ4, repo.CompressNone} {
			f := newFixture(t, repo.InitOptions{Compression: comp, Encryption: enc, Password: "pw"})
			for _, size := range []int{0, 1, 4095, 16 << 10, 16<<10 + 1, 2<<20 + 12345} {
				src := &memSource{data: randomVolume(uint64(size), size)}
				m := f.backup(t, "b"+string(comp)+enc[:1]+itoa(size), src, nil)
				if got := f.restore(t, m); sha256.Sum256(got) != sha256.Sum256(src.data) {
					t.Fatalf("%s/%s size %d: restore differs", enc, comp, size)
				}
				im := f.r.Image(m)
				buf := make([]byte, 7777)
				for _, off := range []int64{0, 1, 16383, 16384, int64(size) / 2, int64(size) - 10} {
					if off < 0 || off >= int64(size) {
						continue
					}
					n, err := im.ReadAt(buf, off)
					if err != nil && !errors.Is(err, io.EOF) {
						t.Fatal(err)
					}
					if !bytes.Equal(buf[:n], src.data[off:off+int64(n)]) {
						t.Fatalf("size %d: ReadAt(%d) differs", size, off)
					}
				}
			}
		}
	}
}

func itoa(n int) string {
	return string(rune('a'+n%26)) + string(rune('a'+(n/26)%26)) + string(rune('a'+(n/676)%26)) + string(rune('a'+(n/17576)%26))
}

func TestIncrementalStoresOnlyChanges(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	size := 24 << 20
	src := &memSource{data: randomVolume(1, size)}
	full := f.backup(t, "full", src, nil)
	same := f.backup(t, "same", src, full)
	if same.Stats.NewBlobs != 0 || same.Root != full.Root {
		t.Fatalf("unchanged incremental stored %d blobs (root equal: %v)", same.Stats.NewBlobs, same.Root == full.Root)
	}
	rng := rand.New(rand.NewPCG(9, 9))
	changed := 0
	for range 16 {
		n := 4096 + rng.IntN(60<<10)
		off := rng.IntN(size - n)
		for j := off; j < off+n; j++ {
			src.data[j] = byte(rng.Uint32())
		}
		changed += n
	}
	inc := f.backup(t, "inc", src, same)
	if inc.Stats.NewPlainBytes > int64(3*changed) {
		t.Fatalf("incremental stored %d plain bytes for %d changed", inc.Stats.NewPlainBytes, changed)
	}
	if got := f.restore(t, inc); !bytes.Equal(got, src.data) {
		t.Fatal("incremental restore differs")
	}
	// full still restores its own point in time
	orig := randomVolume(1, size)
	if got := f.restore(t, full); !bytes.Equal(got, orig) {
		t.Fatal("full restore differs after incremental")
	}
}

func TestSparseHugeVolume(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	// A 1 TiB volume with two small data regions, described by holes: never read as data.
	const tib = int64(1) << 40
	src := &sparseSource{size: tib, data: map[int64][]byte{0: []byte("boot sector"), tib/2 + 7: []byte("middle")}}
	m := f.backup(t, "sparse", src, nil)
	if m.Stats.DataBlocks != 2 {
		t.Fatalf("data blocks = %d, want 2", m.Stats.DataBlocks)
	}
	im := f.r.Image(m)
	buf := make([]byte, 6)
	if _, err := im.ReadAt(buf, tib/2+7); err != nil || string(buf) != "middle" {
		t.Fatalf("read middle: %q %v", buf, err)
	}
	s, e, err := im.NextData(context.Background(), 16384)
	if err != nil || s != tib/2 || e != tib/2+16384 {
		t.Fatalf("NextData = %d %d %v", s, e, err)
	}
}

type sparseSource struct {
	size int64
	data map[int64][]byte
}

func (s *sparseSource) Size() int64 { return s.size }
func (s *sparseSource) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for o, d := range s.data {
		for i := range d {
			if x := o + int64(i) - off; x >= 0 && x < int64(len(p)) {
				p[x] = d[i]
			}
		}
	}
	return len(p), nil
}
func (s *sparseSource) NextData(off int64) (int64, int64, error) {
	best := int64(-1)
	for o := range s.data {
		start := o &^ 4095
		if start+4096 > off && (best < 0 || start < best) {
			best = start
		}
	}
	if best < 0 {
		return s.size, s.size, io.EOF
	}
	return max(best, off), best + 4096, nil
}

// packFiles returns the paths of the pack objects of the local repository in dir/repo.
func packFiles(dir string) []string {
	var packs []string
	_ = filepath.Walk(filepath.Join(dir, "repo", "packs"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			packs = append(packs, p)
		}
		return nil
	})
	return packs
}

func TestCorruptBlobDetected(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Compression: repo.CompressNone})
	src := &memSource{data: randomVolume(3, 1<<20)}
	m := f.backup(t, "b1", src, nil)
	// flip one byte in the middle of the (only) pack
	packs := packFiles(f.dir)
	packPath := packs[len(packs)-1]
	b, _ := os.ReadFile(packPath)
	b[len(b)/3] ^= 0x40
	os.WriteFile(packPath, b, 0o600)
	err := f.r.Restore(context.Background(), m, &memTarget{data: make([]byte, m.Size)}, repo.RestoreOptions{})
	if !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("restore of corrupt backup: %v", err)
	}
	rep, err := f.r.Check(context.Background(), repo.CheckOptions{ReadData: true})
	if err != nil || rep.OK() {
		t.Fatalf("check --read-data found nothing: %+v %v", rep, err)
	}
}

func TestExportURL(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	m := f.backup(t, "x", &memSource{data: randomVolume(7, 100000)}, nil)
	url, err := f.r.ExportURL(m)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := f.r.ParseExportURL(url)
	if err != nil || rec.Manifest.Root != m.Root {
		t.Fatalf("parse: %v", err)
	}
	bad := []byte(url)
	bad[len(bad)/2] ^= 1
	if _, err := f.r.ParseExportURL(string(bad)); !errors.Is(err, repo.ErrBadExport) {
		t.Fatalf("tampered url accepted: %v", err)
	}
	other := newFixture(t, repo.InitOptions{})
	if _, err := other.r.ParseExportURL(url); !errors.Is(err, repo.ErrBadExport) {
		t.Fatalf("url from another repository accepted: %v", err)
	}
}

// A volume whose last leaf is short and entirely a hole (its size is not a multiple of the
// 4 MiB a leaf covers): the planner used to loop on that leaf for ever (found by the crash
// trials). Several shapes of trailing and leading holes, each restored byte-exact.
func TestTrailingHoleInShortLastLeaf(t *testing.T) {
	const leaf = 4 << 20
	for _, tt := range []struct {
		size  int
		holes [][2]int64
	}{
		{leaf*2 + 512<<10, [][2]int64{{leaf * 2, leaf*2 + 512<<10}}},
		{leaf*2 + 512<<10, [][2]int64{{leaf + 4096, leaf*2 + 512<<10}}},
		{leaf + 100<<10, [][2]int64{{0, leaf + 100<<10}}},
		{3*leaf + 8192, [][2]int64{{0, leaf}, {2*leaf + 4096, 3*leaf + 8192}}},
	} {
		f := newFixture(t, repo.InitOptions{})
		data := randomVolume(uint64(tt.size), tt.size)
		for _, h := range tt.holes {
			clear(data[h[0]:h[1]])
		}
		src := &memSource{data: data, holes: tt.holes}
		done := make(chan *repo.Manifest, 1)
		go func() { done <- f.backup(t, "b", src, nil) }()
		select {
		case m := <-done:
			if got := f.restore(t, m); !bytes.Equal(got, data) {
				t.Fatalf("size %d holes %v: restore differs", tt.size, tt.holes)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("size %d holes %v: backup did not finish", tt.size, tt.holes)
		}
	}
}

// AskPassword is asked only for a repository that can be made: not for invalid settings, not
// where a repository exists, not for an unencrypted one; and its error is Init's.
func TestInitAsksPasswordLast(t *testing.T) {
	ctx := context.Background()
	be, err := local.Open(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	asked := 0
	ask := func(pw string, err error) func() (string, error) {
		return func() (string, error) { asked++; return pw, err }
	}
	refused := errors.New("no terminal")
	for _, tc := range []struct {
		name string
		o    repo.InitOptions
		want error
		asks int
	}{
		{"bad block size", repo.InitOptions{BlockSize: 3000, Encryption: repo.EncryptionAES, AskPassword: ask("pw", nil)}, repo.ErrInvalidOption, 0},
		{"refused", repo.InitOptions{Encryption: repo.EncryptionAES, AskPassword: ask("", refused)}, refused, 1},
		{"empty", repo.InitOptions{Encryption: repo.EncryptionAES, AskPassword: ask("", nil)}, repo.ErrPasswordRequired, 1},
		{"made", repo.InitOptions{Encryption: repo.EncryptionAES, AskPassword: ask("pw", nil)}, nil, 1},
		{"exists", repo.InitOptions{Encryption: repo.EncryptionAES, AskPassword: ask("pw", nil)}, repo.ErrExists, 0},
	} {
		asked = 0
		_, err := repo.Init(ctx, be, tc.o)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("%s: Init: %v, want %v", tc.name, err, tc.want)
		}
		if asked != tc.asks {
			t.Errorf("%s: asked for the passphrase %d times, want %d", tc.name, asked, tc.asks)
		}
	}
	plain, err := local.Open(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	asked = 0
	if _, err := repo.Init(ctx, plain, repo.InitOptions{Encryption: repo.EncryptionNone, AskPassword: ask("pw", nil)}); err != nil || asked != 0 {
		t.Errorf("unencrypted: Init %v, asked %d times, want nil and 0", err, asked)
	}
}

// failingSource reads as its inner source until failAt, then fails every read.
type failingSource struct {
	*memSource
	failAt int64
}

var errDiskGone = errors.New("disk gone")

func (f *failingSource) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.failAt {
		return 0, errDiskGone
	}
	return f.memSource.ReadAt(p, off)
}

// TestFailedBackupLeavesNoSpooledPack: on a local repository a backup writes its packs to
// spooled files (backend.Spooler). A backup whose source fails after some packs are stored
// and while another is being written leaves no temp file behind, and the earlier backup
// still restores.
func TestFailedBackupLeavesNoSpooledPack(t *testing.T) {
	f := newFixture(t, repo.InitOptions{Encryption: "none"})
	small := &memSource{data: randomVolume(1, 4<<20)}
	m := f.backup(t, "b1", small, nil)
	// Random data does not compress: the read at 88 MiB fails after the readers' lead (at
	// most about 40 MiB) and two full 16 MiB packs, with a third being written.
	big := &memSource{data: make([]byte, 96<<20)}
	rng := rand.New(rand.NewPCG(2, 2))
	for i := range big.data {
		big.data[i] = byte(rng.Uint32())
	}
	_, err := f.r.Write(context.Background(), &failingSource{memSource: big, failAt: 88 << 20}, repo.WriteOptions{},
		func(repo.WriteResult) error { t.Fatal("commit called for a failed backup"); return nil })
	if !errors.Is(err, errDiskGone) {
		t.Fatalf("Write = %v, want the source's error", err)
	}
	packs := 0
	err = filepath.WalkDir(filepath.Join(f.dir, "repo"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temp file left behind: %s", p)
		}
		if !d.IsDir() && strings.Contains(p, "/packs/") {
			packs++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if packs < 3 { // the first backup's pack and at least two of the failed one's
		t.Errorf("%d packs stored, want at least 3: the failure came before any pack was spooled", packs)
	}
	if got := f.restore(t, m); !bytes.Equal(got, small.data) {
		t.Fatal("the earlier backup does not restore after a failed one")
	}
}

// TestRestoreIncompressibleLeaves: a leaf of random data stores more than a restore worker's
// merged read may span (maxScratchSpan), so its blobs come in several reads into the
// worker's reused buffer, which grows for a blob at the end; the restore is byte-exact.
func TestRestoreIncompressibleLeaves(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	data := make([]byte, 12<<20+5<<10)
	rng := rand.New(rand.NewPCG(5, 5))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	src := &memSource{data: data}
	m := f.backup(t, "random", src, nil)
	if got := f.restore(t, m); !bytes.Equal(got, data) {
		t.Fatal("restore of incompressible leaves differs from the volume")
	}
	// An incremental over it, changing every other block: its leaves' blobs come from two
	// packs, interleaved.
	for off := 0; off < len(data); off += 32 << 10 {
		data[off] ^= 0xff
	}
	inc := f.backup(t, "inc", src, m)
	if got := f.restore(t, inc); !bytes.Equal(got, data) {
		t.Fatal("restore of the incremental differs from the volume")
	}
}
