//go:build linux

package lvm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// devices are the whole image and each of its partitions, as a caller of Scan passes them.
func devices(im *testutil.LVMImage) []Device {
	devs := []Device{{Name: "disk", Offset: 0, Size: im.Size}}
	for i, p := range im.Parts {
		devs = append(devs, Device{Name: "p" + string(rune('1'+i)), Offset: p.Offset, Size: p.Size})
	}
	return devs
}

func randomFile(t *testing.T, dir, name string, size int64, seed uint64) string {
	t.Helper()
	b := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha(t *testing.T, r io.Reader) [32]byte {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestScanAgreesWithLVMTools makes a VG over two GPT partitions with the lvm tools (a
// linear LV in two segments with another LV between them, a second linear LV, a striped
// LV over both PVs), writes random bytes into each LV where `lvs --segments` says its
// extents are, and checks that Scan finds the same layout and reads every LV back
// byte-identical.
func TestScanAgreesWithLVMTools(t *testing.T) {
	dir := t.TempDir()
	im := testutil.MakeLVMImage(t, filepath.Join(dir, "disk.img"), 64<<20, []int64{24 << 20, 24 << 20},
		func(lvm func(...string) string, pvs []string) {
			lvm("vgcreate", "-q", "vg0", pvs[0], pvs[1])
			lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", "lv1", "-L", "8M", "vg0", pvs[0])
			lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", "lv2", "-L", "4M", "vg0", pvs[0])
			lvm("lvextend", "-q", "-L", "+4M", "vg0/lv1", pvs[0])
			lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-i", "2", "-I", "64k", "-n", "lv3", "-L", "8M", "vg0")
		})
	if n := len(im.LVs["lv1"].Segments); n != 2 {
		t.Fatalf("lvs reports %d segments of lv1, want 2", n)
	}
	want := map[string][32]byte{}
	for i, name := range []string{"lv1", "lv2", "lv3"} {
		src := randomFile(t, dir, name, im.LVs[name].Size, uint64(i+1))
		im.WriteLV(t, name, src)
		f, _ := os.Open(src)
		want[name] = sha(t, f)
		f.Close()
	}
	img, err := os.Open(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	vgs, err := Scan(img, devices(im))
	if err != nil {
		t.Fatal(err)
	}
	if len(vgs) != 1 || vgs[0].Name != "vg0" || vgs[0].ExtentSize != im.ExtentSize || len(vgs[0].LVs) != 3 {
		t.Fatalf("scan found %+v, want vg0 with 3 lvs and extents of %d", vgs, im.ExtentSize)
	}
	for _, lv := range vgs[0].LVs {
		ref := im.LVs[lv.Name]
		if !lv.Exposed() || lv.Size != ref.Size || len(lv.Segments) != len(ref.Segments) {
			t.Fatalf("lv %s: exposed %v (%s), %d bytes in %d segments; lvs says %d bytes in %d", lv.Name,
				lv.Exposed(), lv.Reason, lv.Size, len(lv.Segments), ref.Size, len(ref.Segments))
		}
		for i, seg := range lv.Segments {
			rs := ref.Segments[i]
			if seg.Start != rs.StartPE || seg.Count != rs.SizePE || seg.StripeSize != rs.StripeSize || len(seg.Stripes) != len(rs.Stripes) {
				t.Fatalf("lv %s segment %d: %+v, lvs says %+v", lv.Name, i, seg, rs)
			}
			for j, st := range seg.Stripes {
				if st.PV.UUID != rs.Stripes[j].UUID || st.Start != rs.Stripes[j].StartPE || st.PV.PEStart != rs.Stripes[j].PEStart ||
					st.PV.Offset != im.Parts[rs.Stripes[j].Part].Offset {
					t.Fatalf("lv %s segment %d stripe %d: on %+v at %d, lvs says %+v", lv.Name, i, j, st.PV, st.Start, rs.Stripes[j])
				}
			}
		}
		r, err := lv.ReaderAt(img)
		if err != nil {
			t.Fatal(err)
		}
		if got := sha(t, io.NewSectionReader(r, 0, r.Size())); got != want[lv.Name] {
			t.Errorf("lv %s reads back different bytes", lv.Name)
		}
	}

	// Without the second partition the striped LV has a PV missing; the others stay.
	vgs, err = Scan(img, devices(im)[:2])
	if err != nil {
		t.Fatal(err)
	}
	for _, lv := range vgs[0].LVs {
		missing := "pv " + im.LVs["lv3"].Segments[0].Stripes[1].UUID + " is not in this image"
		if lv.Name == "lv3" && lv.Reason != missing {
			t.Errorf("lv3 without its second pv: reason %q, want %q", lv.Reason, missing)
		}
		if lv.Name != "lv3" && !lv.Exposed() {
			t.Errorf("lv %s not exposed: %s", lv.Name, lv.Reason)
		}
		if _, err := lv.ReaderAt(img); lv.Name == "lv3" && !errors.Is(err, ErrNotExposed) {
			t.Errorf("ReaderAt of lv3 without its pv: %v", err)
		}
	}
}

// TestMetadataWraps fills a small metadata area until LVM's circular buffer wraps, then
// reads the newest metadata across the wrap.
func TestMetadataWraps(t *testing.T) {
	dir := t.TempDir()
	var lvs int
	im := testutil.MakeLVMImage(t, filepath.Join(dir, "disk.img"), 48<<20, []int64{40 << 20},
		func(lvm func(...string) string, pvs []string) {
			lvm("pvremove", "-q", pvs[0])
			lvm("pvcreate", "-q", "--metadatasize", "32k", "--dataalignment", "4k", pvs[0])
			lvm("vgcreate", "-q", "-s", "1m", "vg-wrap", pvs[0])
			// Add LVs until the newest copy runs past the end of the area.
			for !wrapped(t, pvs[0]) {
				if lvs++; lvs > 64 {
					t.Fatal("the metadata area never wrapped")
				}
				lvm("lvcreate", "-q", "--activate", "n", "--zero", "n", "-n", fmt.Sprintf("l%d", lvs), "-L", "1M", "vg-wrap")
			}
		})
	img, err := os.Open(im.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	part := io.NewSectionReader(img, im.Parts[0].Offset, im.Parts[0].Size)
	hdr, err := ReadLabel(part, im.Parts[0].Size)
	if err != nil || len(hdr.Metadata) != 1 {
		t.Fatalf("label: %+v, %v", hdr, err)
	}
	a := hdr.Metadata[0]
	vgs, err := Scan(img, devices(im))
	if err != nil {
		t.Fatal(err)
	}
	if len(vgs) != 1 || vgs[0].Name != "vg-wrap" || len(vgs[0].LVs) != lvs || vgs[0].Seqno != int64(lvs+1) {
		t.Fatalf("scan across the wrap: %+v, want vg-wrap with %d lvs at seqno %d", vgs, lvs, lvs+1)
	}
	// Keep a real metadata text as a seed for the fuzzers.
	text, _, err := ReadMetadata(part, im.Parts[0].Size, a)
	if err != nil || !bytes.Contains(text, []byte("vg-wrap {")) || !strings.Contains(string(text), fmt.Sprintf("seqno = %d", lvs+1)) {
		t.Fatalf("metadata text: %v: %.200s", err, text)
	}
}

// wrapped says whether the newest metadata copy on the device runs past the end of its
// area (the first one, at 4 KiB), so that it continues after the area's header.
func wrapped(t testing.TB, dev string) bool {
	t.Helper()
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mh := make([]byte, 512)
	if _, err := f.ReadAt(mh, 4096); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	return le.Uint64(mh[40:])+le.Uint64(mh[48:]) > le.Uint64(mh[32:])
}
