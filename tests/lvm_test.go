package tests

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
	"golang.org/x/sys/unix"
)

// TestFuseLVM: a disk image with a GPT of two partitions holding one volume group, made by
// the lvm tools without device-mapper: lv1 in two segments (lv2 sits between them), lv2,
// and lv3 striped over both partitions. Each LV holds an ext4 file system with a known
// file, written where `lvs --segments` says the LV's extents are. Backed up and mounted,
// lvm/vg0/<lv>.img is byte-identical to the file system written into each LV, the known
// file comes out of each (loop-mounted ro,noload, or dumped with debugfs), and
// SEEK_DATA/SEEK_HOLE on an LV skip only zeros.
func TestFuseLVM(t *testing.T) {
	requireFuse(t)
	testutil.RequireRoot(t)
	mkfs := testutil.RequireCommand(t, "mkfs.ext4")
	debugfs := testutil.RequireCommand(t, "debugfs")
	dir := t.TempDir()
	vol := filepath.Join(dir, "disk.img")
	im := testutil.MakeLVMImage(t, vol, 64*mib, []int64{24 * mib, 24 * mib}, func(lvm func(...string) string, pvs []string) {
		lvm("vgcreate", "-q", "vg0", pvs[0], pvs[1])
		lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", "lv1", "-L", "8M", "vg0", pvs[0])
		lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", "lv2", "-L", "4M", "vg0", pvs[0])
		lvm("lvextend", "-q", "-L", "+4M", "vg0/lv1", pvs[0])
		lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-i", "2", "-I", "64k", "-n", "lv3", "-L", "8M", "vg0")
	})
	if n := len(im.LVs["lv1"].Segments); n != 2 {
		t.Fatalf("lvs reports %d segments of lv1, want 2", n)
	}
	lvs := []string{"lv1", "lv2", "lv3"}
	fsSHA, known := map[string]string{}, map[string]string{}
	for i, name := range lvs {
		files := filepath.Join(dir, name+"-files")
		if err := os.MkdirAll(filepath.Join(files, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, 1*mib+int64(i)*4099)
		_, _ = rand.NewChaCha8([32]byte{byte(i + 20)}).Read(data)
		if err := os.WriteFile(filepath.Join(files, "etc", "known.bin"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		known[name] = hex.EncodeToString(sum[:])
		fsImg := filepath.Join(dir, name+".ext4")
		if out, err := exec.Command(mkfs, "-q", "-F", "-d", files, fsImg, fmt.Sprint(im.LVs[name].Size/1024)+"k").CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4 -d: %v: %s", err, out)
		}
		im.WriteLV(t, name, fsImg)
		fsSHA[name] = testutil.SHA256File(t, fsImg)
	}

	r := newCairnRepo(t, nil)
	b := r.createBackup(vol)
	m := mountCairn(t, r)
	vgDir := m.path("backups", b.ID, "lvm", "vg0")
	ents, err := os.ReadDir(vgDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "lv1.img lv2.img lv3.img" {
		t.Fatalf("lvm/vg0 lists %v, want lv1.img lv2.img lv3.img", names)
	}
	for _, name := range lvs {
		p := filepath.Join(vgDir, name+".img")
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != im.LVs[name].Size {
			t.Errorf("%s.img is %d bytes, lvs says %d", name, fi.Size(), im.LVs[name].Size)
		}
		if got := testutil.SHA256File(t, p); got != fsSHA[name] {
			t.Errorf("%s.img sha256 %s, want the file system written into it, %s", name, got, fsSHA[name])
		}
		if got := sparseSHA256(t, p); got != fsSHA[name] {
			t.Errorf("%s.img read by SEEK_DATA/SEEK_HOLE (holes as zeros): sha256 %s, want %s", name, got, fsSHA[name])
		}
	}
	// One step from a volume's latest backup: mount the LV's image.
	for _, name := range []string{"lv1", "lv3"} {
		fsDir := testutil.Mount(t, m.path("volumes", "disk.img", "latest", "lvm", "vg0", name+".img"), "loop", "ro", "noload")
		if got := testutil.SHA256File(t, filepath.Join(fsDir, "etc", "known.bin")); got != known[name] {
			t.Errorf("%s: etc/known.bin from the loop-mounted LV: sha256 %s, want %s", name, got, known[name])
		}
	}
	out := filepath.Join(dir, "lv2-known.bin")
	if o, err := exec.Command(debugfs, "-R", "dump /etc/known.bin "+out, filepath.Join(vgDir, "lv2.img")).CombinedOutput(); err != nil {
		t.Fatalf("debugfs dump: %v: %s", err, o)
	}
	if got := testutil.SHA256File(t, out); got != known["lv2"] {
		t.Errorf("lv2: etc/known.bin dumped by debugfs: sha256 %s, want %s", got, known["lv2"])
	}
}

// sparseSHA256 hashes a file reading only what SEEK_DATA/SEEK_HOLE call data, zeros for
// the holes: equal to the full read's hash only if no data hides in a reported hole.
func sparseSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	h := sha256.New()
	var pos int64
	zeros := func(n int64) {
		if _, err := io.CopyN(h, zeroReader{}, n); err != nil {
			t.Fatal(err)
		}
	}
	for pos < size {
		data, err := unix.Seek(int(f.Fd()), pos, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			t.Fatalf("SEEK_DATA %d: %v", pos, err)
		}
		hole, err := unix.Seek(int(f.Fd()), data, unix.SEEK_HOLE)
		if err != nil || hole <= data {
			t.Fatalf("SEEK_HOLE %d: %d, %v", data, hole, err)
		}
		zeros(data - pos)
		if _, err := io.Copy(h, io.NewSectionReader(f, data, hole-data)); err != nil {
			t.Fatal(err)
		}
		pos = hole
	}
	zeros(size - pos)
	return hex.EncodeToString(h.Sum(nil))
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }
