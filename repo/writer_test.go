package repo_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// shrunkSource is a volume that ended early after its size was taken (an image file
// truncated during the backup, an LV whose mapping stops short of its size): it reports
// data up to its size, and its reads stop short at the end of what it still holds, with
// io.EOF, as io.ReaderAt allows.
type shrunkSource struct {
	*memSource
	size int64
}

func (s *shrunkSource) Size() int64 { return s.size }
func (s *shrunkSource) NextData(off int64) (int64, int64, error) {
	return off, s.size, nil
}

// TestBackupOfAVolumeThatEndsEarlyFails: a read that stops short of the range asked for,
// within the volume's size, left the rest of the reused leaf buffer as it was, and the
// backup stored it: bytes of an earlier backup (of any volume, any project) at offsets where
// this volume never had them. Now the backup fails, says why, and commits nothing; the
// earlier backup still restores.
func TestBackupOfAVolumeThatEndsEarlyFails(t *testing.T) {
	f := newFixture(t, repo.InitOptions{})
	other := &memSource{data: randomVolume(5, 16<<20)}
	m := f.backup(t, "other", other, nil) // its leaf buffers go back warm, full of its bytes
	src := &shrunkSource{memSource: &memSource{data: randomVolume(6, 6<<20)}, size: 8 << 20}
	_, err := f.r.Write(context.Background(), src, repo.WriteOptions{}, func(res repo.WriteResult) error {
		t.Error("a backup of a volume that ended 2 MiB before its size was committed")
		shrunk := &repo.Manifest{ID: "shrunk", VolumeID: "vol", Size: src.Size(), Root: res.Root, RootLevel: res.RootLevel, Stats: res.Stats}
		if err := f.r.PutManifest(context.Background(), shrunk); err != nil {
			return err
		}
		got := f.restore(t, shrunk)
		if !bytes.Equal(got[:6<<20], src.data) {
			t.Error("restore differs from the volume in its first 6 MiB")
		}
		if !bytes.Equal(got[6<<20:], make([]byte, 2<<20)) {
			t.Error("the backup holds bytes the volume never had past its end")
		}
		return nil
	})
	if err == nil {
		t.Fatal("Write succeeded")
	}
	t.Log(err)
	if got := f.restore(t, m); !bytes.Equal(got, other.data) {
		t.Fatal("the earlier backup does not restore")
	}
}

// cuttingSource is an image file that is cut to cut bytes while it is backed up: just before
// the backup asks where its data is for the second time, so the first extent was found in
// the file as it was opened and the rest is looked for in the shorter one.
type cuttingSource struct {
	*blockio.Source
	cut    int64
	asked  int
	cutErr error
}

// NextData is called by the one goroutine that plans the leaves; Write's return orders it
// before the test reads asked and cutErr.
func (c *cuttingSource) NextData(off int64) (int64, int64, error) {
	if c.asked++; c.asked == 2 {
		c.cutErr = os.Truncate(c.Path(), c.cut)
	}
	return c.Source.NextData(off)
}

// A backup of an image file cut short while it runs fails, wherever the cut lands, and
// commits nothing. Before, the file's data ended early as SEEK_DATA and SEEK_HOLE saw it,
// the rest of the volume was taken for holes, and the backup was committed holding zeros
// for bytes the file had when it was opened.
func TestBackupOfAFileCutShortFails(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name string
		cut  int64
	}{
		{"in a hole", 3 * mib},
		{"in a data extent", 10 * mib},
	} {
		t.Run(c.name, func(t *testing.T) {
			// Data at [1, 2) and [8, 12) MiB of 12 MiB, three leaves: the cut leaves the
			// first extent and takes all or part of the second.
			path := filepath.Join(t.TempDir(), "vol.img")
			vol := randomVolume(81, 12*mib)
			clear(vol[:1*mib])
			clear(vol[2*mib : 8*mib])
			fh, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range [][2]int{{1 * mib, 2 * mib}, {8 * mib, 12 * mib}} {
				if _, err := fh.WriteAt(vol[e[0]:e[1]], int64(e[0])); err != nil {
					t.Fatal(err)
				}
			}
			if err := fh.Close(); err != nil {
				t.Fatal(err)
			}
			src, err := blockio.OpenSource(path)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if start, _, err := src.NextData(0); err != nil || start != 1*mib {
				testutil.Skip(t, "the filesystem of %s does not report holes (SEEK_DATA): %d, %v", path, start, err)
			}

			f := newFixture(t, repo.InitOptions{})
			cs := &cuttingSource{Source: src, cut: c.cut}
			_, err = f.r.Write(context.Background(), cs, repo.WriteOptions{}, func(repo.WriteResult) error {
				t.Errorf("a backup of a file cut from %d to %d bytes was committed", src.Size(), c.cut)
				return nil
			})
			if cs.cutErr != nil {
				t.Fatal(cs.cutErr)
			}
			if cs.asked < 2 {
				t.Fatal("the backup asked for data once only; the file was never cut")
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("Write = %v, want an error wrapping io.ErrUnexpectedEOF", err)
			}
			t.Log(err)
		})
	}
}
