package repo

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zeebo/xxh3"
)

// Blob encode and decode per block, and the two hashes every block goes through: the
// per-block costs under the write, restore and FUSE read paths (bench_test.go measures those
// end to end). In package repo because the codec is not exported.

func benchBlocks() map[string][]byte {
	rng := rand.New(rand.NewPCG(5, 6))
	random := make([]byte, DefaultBlockSize)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	text := make([]byte, 0, DefaultBlockSize)
	words := []string{"volume ", "backup ", "restore ", "snapshot ", "block ", "incremental ", "2026-01-01 "}
	for len(text) < DefaultBlockSize {
		text = append(text, words[rng.IntN(len(words))]...)
	}
	return map[string][]byte{"random": random, "text": text[:DefaultBlockSize]}
}

func benchKeys(b *testing.B, encrypted bool) *keys {
	b.Helper()
	k, err := deriveKeys(make([]byte, masterKeyLen), encrypted)
	if err != nil {
		b.Fatal(err)
	}
	return k
}

func BenchmarkBlobEncode(b *testing.B) {
	for _, enc := range []bool{false, true} {
		k := benchKeys(b, enc)
		for _, c := range []Compression{CompressZstd, CompressLZ4, CompressNone} {
			for name, blk := range benchBlocks() {
				b.Run(fmt.Sprintf("%s/aes=%v/%s", c, enc, name), func(b *testing.B) {
					addr := k.address(BlobData, blk)
					var dst, scratch []byte
					b.SetBytes(int64(len(blk)))
					for b.Loop() {
						dst, scratch = k.encodeBlob(dst[:0], scratch, blk, c, addr)
					}
					b.ReportMetric(float64(len(dst))/float64(len(blk)), "stored/plain")
				})
			}
		}
	}
}

func BenchmarkBlobDecode(b *testing.B) {
	for _, enc := range []bool{false, true} {
		k := benchKeys(b, enc)
		for _, c := range []Compression{CompressZstd, CompressLZ4, CompressNone} {
			for name, blk := range benchBlocks() {
				b.Run(fmt.Sprintf("%s/aes=%v/%s", c, enc, name), func(b *testing.B) {
					addr := k.address(BlobData, blk)
					stored, _ := k.encodeBlob(nil, nil, blk, c, addr)
					dst := make([]byte, 0, len(blk))
					var scratch []byte
					var err error
					b.SetBytes(int64(len(blk)))
					for b.Loop() {
						dst, scratch, err = k.decodeBlob(dst[:0], scratch, stored, BlobData, addr)
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkBlockHash: xxh3-128 (the change fingerprint, every block of every backup) and keyed
// BLAKE3 (the address, every changed block and every block restored or read).
func BenchmarkBlockHash(b *testing.B) {
	blk := benchBlocks()["random"]
	k := benchKeys(b, false)
	b.Run("xxh3-128", func(b *testing.B) {
		b.SetBytes(int64(len(blk)))
		for b.Loop() {
			_ = xxh3.Hash128(blk)
		}
	})
	b.Run("blake3-keyed", func(b *testing.B) {
		b.SetBytes(int64(len(blk)))
		for b.Loop() {
			_ = k.address(BlobData, blk)
		}
	})
}

// BenchmarkBlobEncodeParallel encodes from GOMAXPROCS goroutines at once, as the backup's
// workers do: the throughput should scale with the cores.
func BenchmarkBlobEncodeParallel(b *testing.B) {
	k := benchKeys(b, true)
	for _, c := range []Compression{CompressZstd, CompressLZ4} {
		for name, blk := range benchBlocks() {
			b.Run(fmt.Sprintf("%s/%s", c, name), func(b *testing.B) {
				addr := k.address(BlobData, blk)
				b.SetBytes(int64(len(blk)))
				b.RunParallel(func(pb *testing.PB) {
					var dst, scratch []byte
					for pb.Next() {
						dst, scratch = k.encodeBlob(dst[:0], scratch, blk, c, addr)
					}
				})
			})
		}
	}
}
