//go:build linux

package blockio

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// renamedOver opens an image file whose bytes are all 0xa5, then renames a file of 0x5a
// bytes over its path, as a copy put in place of an image during a backup would be. It
// returns the open file and the path.
func renamedOver(t *testing.T) (*os.File, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "volume.img")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0xa5}, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := openNoAtime(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	other := filepath.Join(dir, "copy.img")
	if err := os.WriteFile(other, bytes.Repeat([]byte{0x5a}, 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	return f, path
}

// The O_DIRECT handle of a Source reads the file the Source opened, even when its path names
// another file by then. Before, it was opened by path and never compared with the first, and
// the aligned reads (most of a backup's) took the other file's bytes.
func TestDirectHandleReadsTheOpenFile(t *testing.T) {
	f, path := renamedOver(t)
	s, err := newSource(f, path)
	if err != nil {
		t.Fatal(err)
	}
	if s.direct = openDirect(f, path, os.O_RDONLY); s.direct == nil {
		testutil.Skip(t, "the filesystem of %s refuses O_DIRECT", path)
	}
	defer s.direct.Close()
	p := AlignedBuffer(64 << 10)
	if _, err := s.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, bytes.Repeat([]byte{0xa5}, len(p))) {
		t.Fatalf("an aligned read returned %#x..., the bytes of the file renamed over the path, not 0xa5", p[0])
	}
}

// Without /proc, the O_DIRECT handle is opened by path: it is kept only when it is the file
// already open, and refused when another file has been put in its place, for a Source's
// reads and a Target's writes alike.
func TestDirectHandleByPathIsComparedWithTheOpenFile(t *testing.T) {
	for _, mode := range []int{os.O_RDONLY, os.O_RDWR} {
		f, path := renamedOver(t)
		fi, err := f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		if d := openSame(fi, path, mode); d != nil {
			d.Close()
			t.Fatalf("openSame (mode %#x) kept an O_DIRECT handle on the file renamed over the path", mode)
		}

		g, err := openNoAtime(path) // the file now at the path
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		gi, err := g.Stat()
		if err != nil {
			t.Fatal(err)
		}
		d := openSame(gi, path, mode)
		if d == nil {
			testutil.Skip(t, "the filesystem of %s refuses O_DIRECT", path)
		}
		d.Close()
	}
}

// A restore's aligned writes land on the device the Target opened and checked (its size, that
// it is writable, the O_EXCL claim), even when the path, a udev symlink, has been moved to
// another device since. Before, the O_DIRECT handle was opened by path a second time and
// never compared with the first: the writes went to the other device.
func TestTargetDirectHandleWritesTheOpenDevice(t *testing.T) {
	const size = 4 << 20
	checked, _ := deviceTarget(t, size)
	other, _ := deviceTarget(t, size)
	otherBefore := readRange(t, other, 0, size)

	link := filepath.Join(t.TempDir(), "by-id")
	if err := os.Symlink(checked, link); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(link, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	moved := link + ".new" // udev replaces a link by renaming a new one over it
	if err := os.Symlink(other, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(moved, link); err != nil {
		t.Fatal(err)
	}
	tg, err := newDeviceTarget(f, link, size)
	if err != nil {
		f.Close()
		t.Fatal(err)
	}
	if tg.direct == nil {
		tg.Close()
		testutil.Skip(t, "loop device %s refuses O_DIRECT", checked)
	}
	p := AlignedBuffer(1 << 20)
	copy(p, randomBytes(len(p), 8))
	if _, err := tg.WriteAt(p, 0); err != nil {
		t.Fatal(err)
	}
	closeTarget(t, tg)
	if !bytes.Equal(readRange(t, other, 0, size), otherBefore) {
		t.Error("the aligned write changed the device the symlink was moved to")
	}
	if !bytes.Equal(readRange(t, checked, 0, len(p)), p) {
		t.Error("the device the Target opened does not hold the aligned write")
	}
}
