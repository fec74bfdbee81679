package testutil

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteImageDeterministic(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []Pattern{Mixed, Random, Sparse} {
		a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
		WriteImage(t, a, 20<<20+100, 7, p)
		WriteImage(t, b, 20<<20+100, 7, p)
		WriteImage(t, c, 20<<20+100, 8, p)
		ha, hb, hc := SHA256File(t, a), SHA256File(t, b), SHA256File(t, c)
		if ha != hb {
			t.Errorf("pattern %d: same seed, different images", p)
		}
		if ha == hc {
			t.Errorf("pattern %d: different seeds, same image", p)
		}
	}
}

// A Mixed image has holes, allocated data, and 64 KiB blocks that repeat.
func TestWriteImageMixed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mixed.img")
	const size = 64 << 20
	WriteImage(t, path, size, 1, Mixed)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Size != size || st.Blocks*512 >= size*95/100 || st.Blocks == 0 {
		t.Errorf("size %d, allocated %d: want %d bytes with holes", st.Size, st.Blocks*512, size)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[[32]byte]int{}
	zero := [regionUnit]byte{}
	for off := 0; off < len(data); off += regionUnit {
		block := data[off : off+regionUnit]
		if !bytes.Equal(block, zero[:]) {
			seen[sha256.Sum256(block)]++
		}
	}
	repeats := 0
	for _, n := range seen {
		repeats = max(repeats, n)
	}
	if repeats < 2 {
		t.Error("no 64 KiB block repeats in a Mixed image")
	}
}

func TestScatterWrites(t *testing.T) {
	dir := t.TempDir()
	orig, changed := filepath.Join(dir, "orig"), filepath.Join(dir, "changed")
	const size = 16 << 20
	WriteImage(t, orig, size, 2, Random)
	WriteImage(t, changed, size, 2, Random)
	ScatterWrites(t, changed, 3, 0.1, 4096, 64<<10)
	a, _ := os.ReadFile(orig)
	b, _ := os.ReadFile(changed)
	if len(b) != size {
		t.Fatalf("ScatterWrites changed the size to %d", len(b))
	}
	diff := 0
	for i := range a {
		if a[i] != b[i] {
			diff++
		}
	}
	// Writes may overlap, and a random byte equals the old one 1 time in 256.
	if diff < size*7/100 || diff > size*11/100 {
		t.Errorf("ScatterWrites(0.1) changed %d of %d bytes", diff, size)
	}
}

func TestSHA256Range(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("abcdef"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("abc"))
	if got := SHA256Range(t, path, 3); got != hex.EncodeToString(sum[:]) {
		t.Errorf("SHA256Range(3) = %s", got)
	}
	sum = sha256.Sum256([]byte("abcdef"))
	if got := SHA256File(t, path); got != hex.EncodeToString(sum[:]) {
		t.Errorf("SHA256File = %s", got)
	}
}
