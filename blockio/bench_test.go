package blockio

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

const benchSize = 64 << 20

// BenchmarkSourceReadAt reads an image file in 4 MiB chunks, the way a backup does.
func BenchmarkSourceReadAt(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.img")
	testutil.WriteImage(b, path, benchSize, 1, testutil.Random)
	s, err := OpenSource(path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	buf := AlignedBuffer(4 << 20)
	b.SetBytes(benchSize)
	for b.Loop() {
		for off := int64(0); off < benchSize; off += int64(len(buf)) {
			if _, err := s.ReadAt(buf, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkTargetWriteAt writes an image file in 4 MiB chunks, the way a restore does.
func BenchmarkTargetWriteAt(b *testing.B) {
	tg, err := OpenTarget(filepath.Join(b.TempDir(), "bench.img"), benchSize)
	if err != nil {
		b.Fatal(err)
	}
	defer tg.Close()
	buf := AlignedBuffer(4 << 20)
	b.SetBytes(benchSize)
	for b.Loop() {
		for off := int64(0); off < benchSize; off += int64(len(buf)) {
			if _, err := tg.WriteAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
}
