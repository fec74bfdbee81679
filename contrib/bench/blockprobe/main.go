// Command blockprobe measures, on one goroutine, what zstd costs on an image's distinct
// non-zero 16 KiB blocks at cairn's encoder settings, split between the blocks it shrinks and
// those stored raw, and what a test that would skip the encoder for incompressible blocks costs
// on every block: byte histograms (Shannon entropy, sum of squares, whole or sampled) and a
// trial compression of the first 2 KiB. It prints each test's time, the raw-stored blocks it
// finds and misses, and the bytes it would lose by storing a compressible block raw; then the
// encoder's time and stored size with other settings. docs/benchmarks.md quotes it.
//
//	blockprobe IMAGE
package main

import (
	"fmt"
	"math"
	"os"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/xxh3"
)

const blockSize = 16 << 10

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: blockprobe IMAGE")
		os.Exit(2)
	}
	img, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "blockprobe:", err)
		os.Exit(1)
	}
	blocks := distinctBlocks(img)
	base := []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
		zstd.WithZeroFrames(true), zstd.WithEncoderCRC(false)}
	enc, err := zstd.NewWriter(nil, base...)
	if err != nil {
		panic(err)
	}
	sizes := make([]int, len(blocks))
	var onRaw, onShrunk time.Duration
	var stored, raw int
	var dst []byte
	for i, b := range blocks {
		t := time.Now()
		dst = enc.EncodeAll(b, dst[:0])
		d := time.Since(t)
		sizes[i] = len(dst)
		if len(dst) >= len(b) {
			raw++
			onRaw += d
			stored += len(b)
		} else {
			onShrunk += d
			stored += len(dst)
		}
	}
	fmt.Printf("%d distinct non-zero blocks, %d stored raw; zstd: %v on those stored raw, %v on the others; stored %.1f MiB\n",
		len(blocks), raw, onRaw.Round(time.Millisecond), onShrunk.Round(time.Millisecond), mib(stored))

	var nlogn [blockSize + 1]float64
	for i := 1; i <= blockSize; i++ {
		nlogn[i] = float64(i) * math.Log2(float64(i))
	}
	hist := func(b []byte, step int) (h [256]int, n int) {
		for i := 0; i < len(b); i += step {
			h[b[i]]++
			n++
		}
		return h, n
	}
	shannon := func(b []byte, bits float64) bool {
		h, n := hist(b, 1)
		s := 0.0
		for _, c := range h {
			s += nlogn[c]
		}
		return math.Log2(float64(n))-s/float64(n) > bits
	}
	// The sum of squared counts of a uniform byte distribution is n²/256 (plus n).
	squares := func(b []byte, step int, slack float64) bool {
		h, n := hist(b, step)
		s := 0
		for _, c := range h {
			s += c * c
		}
		return float64(s) < slack*float64(n*n)/256+float64(n)
	}
	tests := []struct {
		name string
		raw  func([]byte) bool
	}{
		{"Shannon entropy > 7.9 bits/byte", func(b []byte) bool { return shannon(b, 7.9) }},
		{"sum of squares < 1.1 × uniform", func(b []byte) bool { return squares(b, 1, 1.1) }},
		{"the same, every 4th byte", func(b []byte) bool { return squares(b, 4, 1.1) }},
		{"trial compression of 2 KiB", func(b []byte) bool { return len(enc.EncodeAll(b[:2048], nil)) >= 2048 }},
	}
	for _, tt := range tests {
		flags := make([]bool, len(blocks))
		t := time.Now()
		for i, b := range blocks {
			flags[i] = tt.raw(b)
		}
		d := time.Since(t)
		var flagged, missed, lost int
		for i, b := range blocks {
			switch {
			case flags[i]:
				flagged++
				if sizes[i] < len(b) {
					lost += len(b) - sizes[i]
				}
			case sizes[i] >= len(b):
				missed++
			}
		}
		fmt.Printf("%-34s %8v on all blocks: %d flagged raw, %d stored raw missed, %.2f MiB lost\n",
			tt.name, d.Round(time.Millisecond), flagged, missed, mib(lost))
	}

	settings := []struct {
		name string
		opts []zstd.EOption
	}{
		{"fastest (cairn's)", nil},
		{"fastest, 16 KiB window", []zstd.EOption{zstd.WithWindowSize(16 << 10)}},
		{"fastest, lower memory", []zstd.EOption{zstd.WithLowerEncoderMem(true)}},
		{"fastest, no entropy coding", []zstd.EOption{zstd.WithNoEntropyCompression(true)}},
		{"default level", []zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault)}},
	}
	for _, st := range settings {
		e, err := zstd.NewWriter(nil, append(append([]zstd.EOption(nil), base...), st.opts...)...)
		if err != nil {
			panic(err)
		}
		total := 0
		t := time.Now()
		for _, b := range blocks {
			dst = e.EncodeAll(b, dst[:0])
			total += min(len(dst), len(b))
		}
		fmt.Printf("%-34s %8v, stored %.1f MiB\n", st.name, time.Since(t).Round(time.Millisecond), mib(total))
	}
}

// distinctBlocks returns the image's non-zero blocks, each once.
func distinctBlocks(img []byte) [][]byte {
	seen := map[xxh3.Uint128]bool{}
	zero := make([]byte, blockSize)
	var out [][]byte
	for off := 0; off+blockSize <= len(img); off += blockSize {
		b := img[off : off+blockSize]
		if string(b) == string(zero) {
			continue
		}
		if h := xxh3.Hash128(b); !seen[h] {
			seen[h] = true
			out = append(out, b)
		}
	}
	return out
}

func mib(n int) float64 { return float64(n) / (1 << 20) }
