package blockio

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

type extent struct{ start, end int64 }

// sparseFile makes a file of size bytes that holds data only in the given extents.
func sparseFile(t *testing.T, size int64, data ...extent) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "volume.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range data {
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, int(e.end-e.start)), e.start); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Truncate(size); err != nil {
		if errors.Is(err, syscall.EFBIG) {
			testutil.Skip(t, "the filesystem of %s cannot hold a %d-byte file", path, size)
		}
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// dataExtents collects what NextData reports from offset 0 to the end.
func dataExtents(t *testing.T, s *Source) []extent {
	t.Helper()
	var got []extent
	for off := int64(0); ; {
		start, end, err := s.NextData(off)
		if err == io.EOF {
			if start != s.Size() || end != s.Size() {
				t.Fatalf("NextData at the end = [%d, %d), want [%d, %d)", start, end, s.Size(), s.Size())
			}
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if start < off || end <= start || end > s.Size() {
			t.Fatalf("NextData(%d) = [%d, %d): out of order or out of range", off, start, end)
		}
		got = append(got, extent{start, end})
		off = end
	}
}

// requireHoles skips when the filesystem holding path reports no holes (all data), where
// NextData correctly falls back to "everything is data".
func requireHoles(t *testing.T, s *Source) {
	t.Helper()
	if start, _, err := s.NextData(0); err == nil && start == 0 {
		testutil.Skip(t, "the filesystem of %s does not report holes (SEEK_DATA)", s.Path())
	}
}

func TestNextDataSkipsHoles(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		size int64
		data []extent
	}{
		{"all hole", 16 * mib, nil},
		{"two regions", 16 * mib, []extent{{1 * mib, 1*mib + 64<<10}, {5 * mib, 5*mib + 128<<10}}},
		{"data at the end", 16 * mib, []extent{{2 * mib, 3 * mib}, {16*mib - 4096, 16 * mib}}},
		{"unaligned size", 16*mib + 100, []extent{{4 * mib, 4*mib + 4096}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := OpenSource(sparseFile(t, tt.size, tt.data...))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.IsDevice() || s.Size() != tt.size {
				t.Fatalf("IsDevice, Size = %v, %d; want false, %d", s.IsDevice(), s.Size(), tt.size)
			}
			requireHoles(t, s)
			got := dataExtents(t, s)
			if len(got) != len(tt.data) {
				t.Fatalf("extents = %v, want %v", got, tt.data)
			}
			for i := range got {
				if got[i] != tt.data[i] {
					t.Errorf("extent %d = %v, want %v", i, got[i], tt.data[i])
				}
			}
		})
	}
}

// A 1 TiB image with two small data regions is scanned without reading its holes.
func TestNextDataTebibyteSparse(t *testing.T) {
	const tib = 1 << 40
	want := []extent{{0, 4096}, {tib / 2, tib/2 + 1<<20}}
	s, err := OpenSource(sparseFile(t, tib, want...))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	begin := time.Now()
	got := dataExtents(t, s)
	if elapsed := time.Since(begin); elapsed > 2*time.Second {
		t.Errorf("scanning a sparse 1 TiB file took %v; holes were read", elapsed)
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		if len(got) == 1 && got[0] == (extent{0, tib}) {
			testutil.Skip(t, "the filesystem of %s does not report holes (SEEK_DATA)", s.Path())
		}
		t.Fatalf("extents = %v, want %v", got, want)
	}
}

func TestSourceReadAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "volume.img")
	content := []byte("0123456789abcdef")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		off     int64
		n       int
		want    string
		wantErr error
	}{
		{0, 16, "0123456789abcdef", nil},
		{4, 4, "4567", nil},
		{12, 8, "cdef", io.EOF},
		{16, 4, "", io.EOF},
		{100, 4, "", io.EOF},
	}
	for _, tt := range tests {
		p := make([]byte, tt.n)
		n, err := s.ReadAt(p, tt.off)
		if string(p[:n]) != tt.want || err != tt.wantErr {
			t.Errorf("ReadAt(%d bytes, %d) = %q, %v; want %q, %v", tt.n, tt.off, p[:n], err, tt.want, tt.wantErr)
		}
	}
	if _, err := s.ReadAt(make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative offset succeeded")
	}
}

// A volume that shrinks during a backup is an error, not a short volume.
func TestSourceReadAtShrunk(t *testing.T) {
	path := sparseFile(t, 1<<20, extent{0, 1 << 20})
	s, err := OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := os.Truncate(path, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReadAt(make([]byte, 8192), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadAt of a shrunk file: err = %v, want io.ErrUnexpectedEOF", err)
	}
}

// A file cut short during a backup is an error to NextData too, wherever the cut lands: the
// bytes it lost are not holes. Before, SEEK_DATA's ENXIO past the new end read as "only holes
// remain" and SEEK_HOLE at the new end as the end of an extent, so a backup stored zeros for
// the lost bytes and was committed as available.
func TestNextDataShrunk(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name string
		cut  int64 // the file's size after the cut
		off  int64 // where NextData is asked next
	}{
		{"in a hole, asked past the cut", 3 * mib, 4 * mib},
		{"in a hole, asked before it", 3 * mib, 2 * mib},
		{"in the last extent", 10 * mib, 2 * mib},
		{"in the last extent, asked from its start", 10 * mib, 8 * mib},
		{"in the first extent", 1*mib + 512<<10, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := sparseFile(t, 12*mib, extent{1 * mib, 2 * mib}, extent{8 * mib, 12 * mib})
			s, err := OpenSource(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			requireHoles(t, s)
			if err := os.Truncate(path, tt.cut); err != nil {
				t.Fatal(err)
			}
			// As a backup asks: from where the last extent ended, until the end or an error.
			off := tt.off
			var start, end int64
			for range 4 {
				if start, end, err = s.NextData(off); err != nil {
					break
				}
				off = end
			}
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("NextData from %d of a file cut from %d to %d bytes: last [%d, %d), %v; want io.ErrUnexpectedEOF",
					tt.off, s.Size(), tt.cut, start, end, err)
			}
		})
	}
}

func TestOpenSourceErrors(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.img")
	tests := []struct {
		path    string
		wantIs  error
		wantMsg string
	}{
		{missing, fs.ErrNotExist, "volume " + missing + ": no such file or directory"},
		{dir, ErrNotVolume, "volume " + dir + ": not a block device or regular file"},
		{fifo, ErrNotVolume, "volume " + fifo + ": not a block device or regular file"},
		{"/dev/null", ErrNotVolume, "volume /dev/null: not a block device or regular file"},
	}
	if os.Geteuid() != 0 { // root reads anything
		locked := filepath.Join(dir, "locked.img")
		if err := os.WriteFile(locked, nil, 0); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct {
			path    string
			wantIs  error
			wantMsg string
		}{locked, fs.ErrPermission, "volume " + locked + ": permission denied; run as root"})
	}
	for _, tt := range tests {
		s, err := OpenSource(tt.path)
		if err == nil {
			s.Close()
			t.Errorf("OpenSource(%s) succeeded", tt.path)
			continue
		}
		if !errors.Is(err, tt.wantIs) || !strings.HasPrefix(err.Error(), tt.wantMsg) {
			t.Errorf("OpenSource(%s) = %q, want %q (errors.Is %v)", tt.path, err, tt.wantMsg, tt.wantIs)
		}
	}
}

// A loop device reads as its image: size from BLKGETSIZE64, the same bytes, all data.
func TestSourceDevice(t *testing.T) {
	image := filepath.Join(t.TempDir(), "volume.img")
	const size = 24<<20 + 4096
	testutil.WriteImage(t, image, size, 1, testutil.Mixed)
	dev := testutil.LoopDevice(t, image, true)

	s, err := OpenSource(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.IsDevice() || s.Size() != size || s.Path() != dev {
		t.Fatalf("IsDevice, Size, Path = %v, %d, %s; want true, %d, %s", s.IsDevice(), s.Size(), s.Path(), size, dev)
	}
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n, err := DeviceSize(f); err != nil || n != size {
		t.Errorf("DeviceSize = %d, %v; want %d", n, err, size)
	}
	if got := dataExtents(t, s); len(got) != 1 || got[0] != (extent{0, size}) {
		t.Errorf("device extents = %v, want all data", got)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(s, 0, s.Size())); err != nil {
		t.Fatal(err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), testutil.SHA256File(t, image); got != want {
		t.Errorf("device reads sha256 %s, image has %s", got, want)
	}
	if err := s.DropCache(0, s.Size()); err != nil {
		t.Error(err)
	}
}

// Readers share a Source: concurrent ReadAt and NextData see the same bytes and extents.
func TestSourceConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "volume.img")
	const size = 16 << 20
	testutil.WriteImage(t, path, size, 9, testutil.Mixed)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenSource(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	errs := make(chan error, 4)
	for w := range 4 {
		go func() {
			p := make([]byte, 1<<20)
			for off := int64(w) << 20; off < size; off += 4 << 20 {
				if _, _, err := s.NextData(off); err != nil && err != io.EOF {
					errs <- err
					return
				}
				if _, err := s.ReadAt(p, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, want[off:off+1<<20]) {
					errs <- errors.New("concurrent ReadAt returned other bytes than the file holds")
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
