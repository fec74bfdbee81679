package testutil

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
)

// Pattern chooses what WriteImage puts in an image.
type Pattern int

const (
	// Mixed divides the image into regions of 64 KiB to 2 MiB, each random (incompressible),
	// text-like (compressible), repeated (one 64 KiB block over and over, so fixed-size chunks
	// deduplicate), written zeros (allocated) or a hole (never written).
	Mixed Pattern = iota
	// Random fills the whole image with incompressible bytes; no holes.
	Random
	// Sparse leaves the image almost all hole, with a random 64 KiB region every 16 MiB or so.
	Sparse
)

const regionUnit = 64 << 10

// WriteImage creates (or replaces) the image file at path with size bytes laid out by pattern.
// The same seed always gives the same bytes and the same holes.
func WriteImage(t testing.TB, path string, size, seed int64, pattern Pattern) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("create image: %v", err)
	}
	w := imageWriter{t: t, f: f, rnd: newRand(seed), bytes: newBytes(seed)}
	switch pattern {
	case Mixed:
		w.mixed(size)
	case Random:
		w.fill(0, size, w.random)
	case Sparse:
		w.sparse(size)
	default:
		t.Fatalf("WriteImage: unknown pattern %d", pattern)
	}
	// Truncate last: a hole at the end is still part of the image.
	if err := f.Truncate(size); err != nil {
		t.Fatalf("size image %s: %v", path, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close image %s: %v", path, err)
	}
}

// imageWriter lays out one image. rnd decides the layout, bytes makes the content, so a
// change in one never shifts the other.
type imageWriter struct {
	t     testing.TB
	f     *os.File
	rnd   *rand.Rand
	bytes *rand.ChaCha8
	dup   []byte // the repeated block, made once
}

func (w *imageWriter) mixed(size int64) {
	kinds := []func([]byte){w.random, w.text, w.repeated, zeros, nil} // nil: a hole
	for off := int64(0); off < size; {
		n := min(int64(1+w.rnd.IntN(32))*regionUnit, size-off)
		if kind := kinds[w.rnd.IntN(len(kinds))]; kind != nil {
			w.fill(off, n, kind)
		}
		off += n
	}
}

func (w *imageWriter) sparse(size int64) {
	for off := int64(w.rnd.IntN(16)) * regionUnit; off < size; off += 16 << 20 {
		w.fill(off, min(regionUnit, size-off), w.random)
	}
}

// fill writes n bytes at off, made by kind a megabyte at a time.
func (w *imageWriter) fill(off, n int64, kind func([]byte)) {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		p := buf[:min(n, int64(len(buf)))]
		kind(p)
		if _, err := w.f.WriteAt(p, off); err != nil {
			w.t.Fatalf("write image at %d: %v", off, err)
		}
		off, n = off+int64(len(p)), n-int64(len(p))
	}
}

func (w *imageWriter) random(p []byte) { _, _ = w.bytes.Read(p) }

var words = []string{"volume", "backup", "snapshot", "restore", "block", "chunk", "the", "a",
	"of", "incremental", "parent", "project", "quota", "service", "export", "import", "data"}

// text fills p with lines of words, compressible like logs or source files are.
func (w *imageWriter) text(p []byte) {
	i := 0
	for i < len(p) {
		word := words[w.rnd.IntN(len(words))]
		i += copy(p[i:], word)
		if i < len(p) {
			sep := byte(' ')
			if w.rnd.IntN(12) == 0 {
				sep = '\n'
			}
			p[i] = sep
			i++
		}
	}
}

// repeated fills p with copies of one 64 KiB block, aligned to the region unit, so the same
// chunk content appears at many offsets.
func (w *imageWriter) repeated(p []byte) {
	if w.dup == nil {
		w.dup = make([]byte, regionUnit)
		w.random(w.dup)
	}
	for i := 0; i < len(p); i += len(w.dup) {
		copy(p[i:], w.dup)
	}
}

func zeros(p []byte) { clear(p) }

// ScatterWrites overwrites about fraction of the file or device at path with random bytes,
// in writes of minSize to maxSize bytes at random offsets: the changes between a full and
// an incremental backup. The same seed gives the same writes. It returns the bytes written,
// counting a byte written twice once.
func ScatterWrites(t testing.TB, path string, seed int64, fraction float64, minSize, maxSize int) int64 {
	t.Helper()
	if minSize <= 0 || maxSize < minSize {
		t.Fatalf("ScatterWrites: want 0 < minSize <= maxSize, got %d, %d", minSize, maxSize)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	size, err := f.Seek(0, io.SeekEnd) // works for devices too, where stat says 0
	if err != nil {
		t.Fatalf("size of %s: %v", path, err)
	}
	rnd, bytes := newRand(seed), newBytes(seed)
	buf := make([]byte, maxSize)
	var written [][2]int64
	for left := int64(fraction * float64(size)); left > 0 && size > 0; {
		n := min(int64(minSize+rnd.IntN(maxSize-minSize+1)), size, left)
		off := rnd.Int64N(size - n + 1)
		_, _ = bytes.Read(buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			t.Fatalf("write %s at %d: %v", path, off, err)
		}
		written = append(written, [2]int64{off, off + n})
		left -= n
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close %s: %v", path, err)
	}
	sort.Slice(written, func(i, j int) bool { return written[i][0] < written[j][0] })
	var union, end int64
	for _, w := range written {
		if w[0] > end {
			union += w[1] - w[0]
		} else if w[1] > end {
			union += w[1] - end
		}
		end = max(end, w[1])
	}
	return union
}

// SHA256File returns the hex sha256 of the whole file at path.
func SHA256File(t testing.TB, path string) string {
	t.Helper()
	return SHA256Range(t, path, -1)
}

// SHA256Range returns the hex sha256 of the first size bytes of path, so a volume restored to
// a larger device can be compared with its source; size < 0 hashes everything. Fewer than size
// bytes fails the test.
func SHA256Range(t testing.TB, path string, size int64) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close() // read-only
	var r io.Reader = f
	if size >= 0 {
		r = io.LimitReader(f, size)
	}
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if size >= 0 && n != size {
		t.Fatalf("hash %s: want %d bytes, it has %d", path, size, n)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func newRand(seed int64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x636169726e)) // "cairn"
}

func newBytes(seed int64) *rand.ChaCha8 {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], uint64(seed))
	return rand.NewChaCha8(key)
}
