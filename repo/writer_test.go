package repo_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/cairn-backup/cairn/repo"
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
