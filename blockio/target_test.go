package blockio

import (
	"bytes"
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// allocated returns the bytes a file takes on disk (st_blocks).
func allocated(t *testing.T, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

// readRange reads n bytes at off from path through a fresh descriptor.
func readRange(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := make([]byte, n)
	if _, err := f.ReadAt(p, off); err != nil {
		t.Fatal(err)
	}
	return p
}

func closeTarget(t *testing.T, tg *Target) {
	t.Helper()
	if err := tg.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := tg.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenTargetCreatesSparseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "restored.img")
	const size = 10<<20 + 123
	tg, err := OpenTarget(path, size)
	if err != nil {
		t.Fatal(err)
	}
	if tg.IsDevice() || !tg.Empty() || tg.Size() != size || tg.Path() != path {
		t.Errorf("IsDevice, Empty, Size, Path = %v, %v, %d, %s", tg.IsDevice(), tg.Empty(), tg.Size(), tg.Path())
	}
	data := []byte("volume data")
	if _, err := tg.WriteAt(data, size-int64(len(data))); err != nil {
		t.Fatal(err)
	}
	closeTarget(t, tg)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored file: size %d, mode %v; want %d, 0600", fi.Size(), fi.Mode().Perm(), size)
	}
	if a := allocated(t, path); a > 64<<10 {
		t.Errorf("restored file takes %d bytes on disk; want it sparse", a)
	}
}

// A file smaller than the volume is grown when opened; a larger one keeps its tail until Trim,
// so a restore that fails before it writes leaves it whole. Before, OpenTarget cut it at once.
func TestOpenTargetResizesFile(t *testing.T) {
	for _, size := range []int64{4096, 3 << 20} {
		t.Run(strconv.FormatInt(size, 10), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "old.img")
			old := randomBytes(1<<20, 1)
			if err := os.WriteFile(path, old, 0o644); err != nil {
				t.Fatal(err)
			}
			tg, err := OpenTarget(path, size)
			if err != nil {
				t.Fatal(err)
			}
			if tg.Empty() {
				t.Error("Empty() = true for an existing file with content")
			}
			if err := tg.Sync(); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(path); err != nil || int64(len(got)) != max(size, int64(len(old))) || !bytes.Equal(got[:len(old)], old) {
				t.Fatalf("file opened as a target, before Trim: %d bytes (want %d, the old ones kept), %v", len(got), max(size, int64(len(old))), err)
			}
			if err := tg.Trim(); err != nil {
				t.Fatal(err)
			}
			closeTarget(t, tg)
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			keep := min(size, int64(len(old)))
			if int64(len(got)) != size || !bytes.Equal(got[:keep], old[:keep]) {
				t.Errorf("resized file: %d bytes (want %d), first %d bytes kept: %v", len(got), size, keep, bytes.Equal(got[:keep], old[:keep]))
			}
		})
	}
}

// An empty file is grown to the size and reads as zeros, as a created one: Empty says so.
func TestOpenTargetEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(path, 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	if !tg.Empty() {
		t.Error("Empty() = false for a file that was empty")
	}
	closeTarget(t, tg)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3<<20 || !bytes.Equal(got, make([]byte, 3<<20)) {
		t.Errorf("an empty file opened as a target: %d bytes, all zero %v", len(got), bytes.Equal(got, make([]byte, len(got))))
	}
}

func TestOpenTargetErrors(t *testing.T) {
	dir := t.TempDir()
	noDir := filepath.Join(dir, "no", "such", "dir")
	tests := []struct {
		path    string
		size    int64
		wantIs  error
		wantMsg string
	}{
		{filepath.Join(noDir, "x.img"), 1 << 20, fs.ErrNotExist, "directory " + noDir + " does not exist"},
		{dir, 1 << 20, ErrNotVolume, "restore target " + dir + ": not a block device or regular file"},
		{"/dev/null", 1 << 20, ErrNotVolume, "not a block device or regular file"},
		{filepath.Join(dir, "negative.img"), -1, nil, "negative size"},
	}
	for _, tt := range tests {
		tg, err := OpenTarget(tt.path, tt.size)
		if err == nil {
			tg.Close()
			t.Errorf("OpenTarget(%s, %d) succeeded", tt.path, tt.size)
			continue
		}
		if (tt.wantIs != nil && !errors.Is(err, tt.wantIs)) || !strings.Contains(err.Error(), tt.wantMsg) {
			t.Errorf("OpenTarget(%s) = %q, want %q (errors.Is %v)", tt.path, err, tt.wantMsg, tt.wantIs)
		}
	}
}

func TestTargetRangeChecks(t *testing.T) {
	tg, err := OpenTarget(filepath.Join(t.TempDir(), "v.img"), 8192)
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if _, err := tg.WriteAt(make([]byte, 4096), 8192-100); err == nil {
		t.Error("WriteAt past the volume's end succeeded")
	}
	if _, err := tg.WriteAt(make([]byte, 1), -1); err == nil {
		t.Error("WriteAt at a negative offset succeeded")
	}
	if err := tg.Zero(4096, 8192); err == nil {
		t.Error("Zero past the volume's end succeeded")
	}
	if err := tg.Zero(0, 0); err != nil {
		t.Errorf("Zero of nothing: %v", err)
	}
}

// Zero on a file punches a hole: the range reads as zeros and no longer takes space.
func TestZeroFilePunchesHole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.img")
	const size = 8 << 20
	data := randomBytes(size, 2)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	before := allocated(t, path)
	tg, err := OpenTarget(path, size)
	if err != nil {
		t.Fatal(err)
	}
	zeroed := []struct{ off, n int64 }{{1 << 20, 4 << 20}, {6<<20 + 1000, 5000}}
	for _, z := range zeroed {
		if err := tg.Zero(z.off, z.n); err != nil {
			t.Fatal(err)
		}
		clear(data[z.off : z.off+z.n])
	}
	closeTarget(t, tg)
	if after := allocated(t, path); before-after < 4<<20 {
		t.Errorf("allocated %d bytes before Zero, %d after; want at least 4 MiB freed", before, after)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("after Zero the file does not read as zeros in the range and unchanged elsewhere")
	}
}

// deviceTarget attaches a fresh image of size bytes to a loop device, filled with garbage.
func deviceTarget(t *testing.T, size int64) (dev, image string) {
	t.Helper()
	image = filepath.Join(t.TempDir(), "device.img")
	testutil.WriteImage(t, image, size, 3, testutil.Random)
	return testutil.LoopDevice(t, image, false), image
}

func TestOpenTargetDeviceTooSmall(t *testing.T) {
	dev, _ := deviceTarget(t, 4<<20)
	tg, err := OpenTarget(dev, 8<<20)
	if err == nil {
		tg.Close()
		t.Fatal("OpenTarget of a 4 MiB device for an 8 MiB volume succeeded")
	}
	if !errors.Is(err, ErrTooSmall) || !strings.Contains(err.Error(), "4194304") || !strings.Contains(err.Error(), "8388608") {
		t.Errorf("err = %q, want ErrTooSmall naming both sizes", err)
	}
}

func TestOpenTargetDeviceReadOnly(t *testing.T) {
	image := filepath.Join(t.TempDir(), "ro.img")
	testutil.WriteImage(t, image, 4<<20, 7, testutil.Sparse)
	dev := testutil.LoopDevice(t, image, true)
	tg, err := OpenTarget(dev, 4<<20)
	if err == nil {
		tg.Close()
		t.Fatal("OpenTarget of a read-only device succeeded")
	}
	if want := "restore target " + dev + ": the device is read-only"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
}

// A restore to a device writes aligned buffers with O_DIRECT and others through the page
// cache, zeroes ranges for real (garbage in, zeros out), and leaves the device's bytes past
// the volume alone.
func TestTargetDevice(t *testing.T) {
	const devSize, size = 16 << 20, 12<<20 + 512
	dev, _ := deviceTarget(t, devSize)
	want := readRange(t, dev, 0, devSize)

	tg, err := OpenTarget(dev, size)
	if err != nil {
		t.Fatal(err)
	}
	if !tg.IsDevice() || tg.Empty() || tg.Size() != size {
		t.Errorf("IsDevice, Empty, Size = %v, %v, %d", tg.IsDevice(), tg.Empty(), tg.Size())
	}
	if tg.direct == nil {
		t.Error("no O_DIRECT descriptor for a loop device")
	}
	aligned := AlignedBuffer(1 << 20)
	copy(aligned, randomBytes(len(aligned), 4))
	unaligned := randomBytes(3000, 5)
	writes := []struct {
		p   []byte
		off int64
	}{{aligned, 2 << 20}, {unaligned, 5<<20 + 77}, {aligned[:4096], size - 4096 - 512}}
	for _, w := range writes {
		if n, err := tg.WriteAt(w.p, w.off); err != nil || n != len(w.p) {
			t.Fatalf("WriteAt(%d bytes, %d) = %d, %v", len(w.p), w.off, n, err)
		}
		copy(want[w.off:], w.p)
	}
	zeroed := []struct{ off, n int64 }{
		{0, 1 << 20},               // aligned: BLKZEROOUT only
		{3<<20 + 100, 2<<20 + 333}, // unaligned head and tail
		{6<<20 + 10, 100},          // inside one block
		{size - 512, 512},          // the volume's last sector
	}
	for _, z := range zeroed {
		if err := tg.Zero(z.off, z.n); err != nil {
			t.Fatal(err)
		}
		clear(want[z.off : z.off+z.n])
	}
	closeTarget(t, tg)
	if got := readRange(t, dev, 0, devSize); !bytes.Equal(got, want) {
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("device differs from what was written and zeroed, first at offset %d", i)
			}
		}
	}
}

// A mounted device is refused with ErrInUse and says where it is mounted.
func TestOpenTargetDeviceInUse(t *testing.T) {
	image := filepath.Join(t.TempDir(), "fs.img")
	testutil.WriteImage(t, image, 32<<20, 6, testutil.Sparse)
	testutil.MakeExt4(t, image)
	dev := testutil.LoopDevice(t, image, false)
	mnt := testutil.Mount(t, dev)

	tg, err := OpenTarget(dev, 1<<20)
	if err == nil {
		tg.Close()
		t.Fatal("OpenTarget of a mounted device succeeded")
	}
	want := "restore target " + dev + ": in use (mounted at " + mnt + ")"
	if !errors.Is(err, ErrInUse) || err.Error() != want {
		t.Errorf("err = %q, want %q (ErrInUse)", err, want)
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{1, 512, 4096, 1<<20 + 3} {
		p := AlignedBuffer(n)
		if len(p) != n || cap(p) != n {
			t.Errorf("AlignedBuffer(%d): len %d, cap %d", n, len(p), cap(p))
		}
		if addr := uintptr(unsafe.Pointer(&p[0])); addr%Alignment != 0 {
			t.Errorf("AlignedBuffer(%d) starts at %#x, not on a %d boundary", n, addr, Alignment)
		}
	}
	if p := AlignedBuffer(0); len(p) != 0 {
		t.Errorf("AlignedBuffer(0) has length %d", len(p))
	}
}

// A new target gets its name only once it has its size (an unnamed file, linked): nothing
// else is left in the directory, and a name that exists by then is not taken over.
func TestCreateSizedLinksOnceSized(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "new.img")
	f, err := createSized(path, 5<<20)
	if errors.Is(err, errNoTmpfile) {
		testutil.Skip(t, "the temporary directory's file system makes no unnamed files (O_TMPFILE)")
	}
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != 5<<20 || len(ents) != 1 {
		t.Fatalf("after createSized: %v, %d entries in the directory; want one file of 5 MiB", err, len(ents))
	}
	if _, err := createSized(path, 1<<20); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("createSized over an existing file: %v, want it to exist already", err)
	}
	if fi, _ := os.Stat(path); fi.Size() != 5<<20 {
		t.Fatalf("the existing file was changed: %d bytes", fi.Size())
	}
}
