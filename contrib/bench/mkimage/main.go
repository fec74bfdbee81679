// Command mkimage makes the benchmark's deterministic inputs: the directory tree that
// `mkfs.ext4 -d` turns into the volume image, and the scattered writes applied to the image
// before the incremental backup. The same seed and size always give the same bytes, so
// `make bench` is comparable between runs and machines.
//
//	mkimage tree    -dir DIR -size BYTES -seed N
//	mkimage scatter -image FILE -seed N -fraction 0.01 -min 4096 -max 65536
//
// tree fills about 58% of BYTES: pseudo-English text files (compressible), random files
// (incompressible), copies of some of both (duplicates) and many small configuration-like
// files; the rest of the file system stays free. Every file and directory gets a fixed mtime.
//
// scatter writes random bytes at 4 KiB-aligned offsets (as a file system on the volume would)
// until fraction of the image is written, and prints one JSON line: the number of writes, the
// bytes written and the bytes changed (the union of the written ranges).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// epoch is every generated file's mtime and atime.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: mkimage tree|scatter|fill [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "tree":
		err = treeCmd(os.Args[2:])
	case "scatter":
		err = scatterCmd(os.Args[2:])
	case "fill":
		err = fillCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: use tree, scatter or fill", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func treeCmd(args []string) error {
	fs := flag.NewFlagSet("tree", flag.ExitOnError)
	dir := fs.String("dir", "", "directory to fill (must not exist)")
	size := fs.Int64("size", 1<<30, "size of the volume the tree is for, in bytes")
	seed := fs.Uint64("seed", 1, "generator seed")
	_ = fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("tree: -dir is required")
	}
	if err := os.Mkdir(*dir, 0o755); err != nil {
		return err
	}
	g := newGen(*seed)
	if err := g.tree(*dir, *size); err != nil {
		return err
	}
	return fixTimes(*dir)
}

// gen holds the generators: rnd decides structure and text, bytes fills random files.
type gen struct {
	rnd   *rand.Rand
	bytes *rand.ChaCha8
	words []string
	zipf  *rand.Zipf
	files []string // regular files written so far, candidates for duplicates
}

func newGen(seed uint64) *gen {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	g := &gen{rnd: rand.New(rand.NewPCG(seed, 0x6361_6972_6e62_656e)), bytes: rand.NewChaCha8(key)}
	const letters = "etaoinshrdlcumwfgypbvkjxqz"
	for range 4096 {
		n := 2 + g.rnd.IntN(9)
		w := make([]byte, n)
		for i := range w {
			// skewed towards frequent letters, like a natural language
			w[i] = letters[min(g.rnd.IntN(len(letters)), g.rnd.IntN(len(letters)))]
		}
		g.words = append(g.words, string(w))
	}
	g.zipf = rand.NewZipf(g.rnd, 1.1, 2, uint64(len(g.words)-1))
	return g
}

// tree writes the content for a volume of size bytes under dir.
func (g *gen) tree(dir string, size int64) error {
	text, random, dup, small := size*22/100, size*22/100, size*12/100, size*2/100
	if err := g.fill(filepath.Join(dir, "text"), text, 16<<10, 4<<20, g.writeText); err != nil {
		return err
	}
	if err := g.fill(filepath.Join(dir, "data"), random, 64<<10, 16<<20, g.writeRandom); err != nil {
		return err
	}
	if err := g.fill(filepath.Join(dir, "etc"), small, 100, 8<<10, g.writeSmall); err != nil {
		return err
	}
	return g.duplicates(filepath.Join(dir, "copies"), dup)
}

// fill writes files of sizes in [lo, hi] into numbered subdirectories of dir until total
// bytes are written.
func (g *gen) fill(dir string, total int64, lo, hi int, write func(w io.Writer, n int) error) error {
	for i, left := 0, total; left > 0; i++ {
		n := int(min(int64(lo+g.rnd.IntN(hi-lo+1)), left))
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i/64))
		if i%64 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		path := filepath.Join(sub, fmt.Sprintf("f%05d", i))
		if err := writeFile(path, n, write); err != nil {
			return err
		}
		g.files = append(g.files, path)
		left -= int64(n)
	}
	return nil
}

func writeFile(path string, n int, write func(w io.Writer, n int) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := write(bw, n); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeText writes n bytes of lines of Zipf-distributed words, some with numbers, like logs
// and documents: zstd compresses it about threefold.
func (g *gen) writeText(w io.Writer, n int) error {
	line := make([]byte, 0, 256)
	for n > 0 {
		line = line[:0]
		if g.rnd.IntN(4) == 0 {
			line = fmt.Appendf(line, "2026-01-%02d %02d:%02d:%02d [%d] ", 1+g.rnd.IntN(28),
				g.rnd.IntN(24), g.rnd.IntN(60), g.rnd.IntN(60), g.rnd.IntN(100000))
		}
		for words := 4 + g.rnd.IntN(14); words > 0; words-- {
			line = append(line, g.words[g.zipf.Uint64()]...)
			line = append(line, ' ')
		}
		line[len(line)-1] = '\n'
		if len(line) > n {
			line = line[:n]
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		n -= len(line)
	}
	return nil
}

// writeRandom writes n incompressible bytes.
func (g *gen) writeRandom(w io.Writer, n int) error {
	buf := make([]byte, 64<<10)
	for n > 0 {
		c := min(n, len(buf))
		_, _ = g.bytes.Read(buf[:c])
		if _, err := w.Write(buf[:c]); err != nil {
			return err
		}
		n -= c
	}
	return nil
}

// writeSmall writes a small configuration-like file: key = value lines.
func (g *gen) writeSmall(w io.Writer, n int) error {
	for n > 0 {
		line := fmt.Appendf(nil, "%s.%s = %d\n", g.words[g.zipf.Uint64()], g.words[g.rnd.IntN(len(g.words))], g.rnd.IntN(1<<20))
		if len(line) > n {
			line = line[:n]
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
		n -= len(line)
	}
	return nil
}

// duplicates copies randomly chosen large files into dir until total bytes are copied.
func (g *gen) duplicates(dir string, total int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var big []string
	for _, p := range g.files {
		if st, err := os.Stat(p); err == nil && st.Size() >= 64<<10 {
			big = append(big, p)
		}
	}
	for i, left := 0, total; left > 0 && len(big) > 0; i++ {
		src := big[g.rnd.IntN(len(big))]
		n, err := copyFile(filepath.Join(dir, fmt.Sprintf("c%04d", i)), src, left)
		if err != nil {
			return err
		}
		left -= n
	}
	return nil
}

func copyFile(dst, src string, limit int64) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, io.LimitReader(in, limit))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// fixTimes gives every file and directory the same atime and mtime, deepest first so that
// setting a directory's times is not undone by touching its children.
func fixTimes(root string) error {
	var paths []string
	if err := filepath.WalkDir(root, func(p string, _ os.DirEntry, err error) error {
		paths = append(paths, p)
		return err
	}); err != nil {
		return err
	}
	for _, p := range slices.Backward(paths) {
		if err := os.Chtimes(p, epoch, epoch); err != nil {
			return err
		}
	}
	return nil
}

func scatterCmd(args []string) error {
	fs := flag.NewFlagSet("scatter", flag.ExitOnError)
	image := fs.String("image", "", "image file to change in place")
	seed := fs.Uint64("seed", 2, "generator seed")
	fraction := fs.Float64("fraction", 0.01, "fraction of the image to write")
	lo := fs.Int("min", 4<<10, "smallest write, bytes (rounded up to 4 KiB)")
	hi := fs.Int("max", 64<<10, "largest write, bytes (rounded down to 4 KiB)")
	list := fs.String("list", "", "also write each write's offset and length, one 'OFF LEN' line each, to this file")
	_ = fs.Parse(args)
	const align = 4 << 10
	lo4, hi4 := (*lo+align-1)/align, *hi/align
	if *image == "" || lo4 <= 0 || hi4 < lo4 {
		return fmt.Errorf("scatter: need -image and 4096 <= -min <= -max")
	}
	f, err := os.OpenFile(*image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return err
	}
	g := newGen(*seed)
	buf := make([]byte, hi4*align)
	var ranges [][2]int64
	var written int64
	for left := int64(*fraction * float64(size)); left > 0 && size >= int64(hi4*align); {
		n := int64(lo4+g.rnd.IntN(hi4-lo4+1)) * align
		off := g.rnd.Int64N((size-n)/align+1) * align
		_, _ = g.bytes.Read(buf[:n])
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			f.Close()
			return err
		}
		ranges = append(ranges, [2]int64{off, off + n})
		written += n
		left -= n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if *list != "" {
		var b []byte
		for _, r := range ranges {
			b = fmt.Appendf(b, "%d %d\n", r[0], r[1]-r[0])
		}
		if err := os.WriteFile(*list, b, 0o644); err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]int64{
		"writes": int64(len(ranges)), "bytes_written": written, "bytes_changed": union(ranges)})
}

// union returns the number of bytes covered by at least one range.
func union(ranges [][2]int64) int64 {
	slices.SortFunc(ranges, func(a, b [2]int64) int { return int(min(max(a[0]-b[0], -1), 1)) })
	var total, end int64
	for _, r := range ranges {
		if r[1] <= end {
			continue
		}
		total += r[1] - max(r[0], end)
		end = r[1]
	}
	return total
}

// fillCmd writes a non-sparse image of -size bytes: 1 MiB regions, alternately random bytes
// (incompressible) and text (zstd about 3:1), every byte written, so the file system holds
// it all and nothing is a hole. The same seed gives the same bytes.
func fillCmd(args []string) error {
	fs := flag.NewFlagSet("fill", flag.ExitOnError)
	image := fs.String("image", "", "image file to create")
	size := fs.Int64("size", 0, "size in bytes (a multiple of 1 MiB)")
	seed := fs.Uint64("seed", 1, "generator seed")
	_ = fs.Parse(args)
	const region = 1 << 20
	if *image == "" || *size <= 0 || *size%region != 0 {
		return fmt.Errorf("fill: need -image and a -size that is a positive multiple of 1 MiB")
	}
	g := newGen(*seed)
	text := make([]byte, 0, 2*region)
	for len(text) < 2*region {
		text = append(text, g.words[g.zipf.Uint64()]...)
		text = append(text, ' ')
	}
	f, err := os.OpenFile(*image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 4<<20)
	buf := make([]byte, region)
	for off := int64(0); off < *size; off += region {
		if g.rnd.IntN(2) == 0 {
			_, _ = g.bytes.Read(buf)
		} else {
			at := g.rnd.IntN(region) // a different cut of the text each time: no two blocks alike
			copy(buf, text[at:at+region])
		}
		if _, err := w.Write(buf); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
