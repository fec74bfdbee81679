package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The seeds under testdata were made by LVM 2.03 on loop devices. *.meta are the
// vgcfgbackup of a VG. pv-*.bin are the head of a PV (label and metadata area) compacted
// for the fuzzer: the newest metadata text, byte for byte LVM's, moved to the start of an
// area just large enough (in pv-wrapped, placed so that it wraps round the area's end),
// with the area's size and the checksums rewritten to match. pv-kinds holds a thin pool and thin LV, a RAID1 LV and a snapshot,
// written with vgcfgrestore and listed by `lvs -a` as such.

// paddedPV is a seed PV grown (with zeros, as a sparse file) to the size its label
// records, so that its extents are inside the device.
func paddedPV(t *testing.T, name string) (*os.File, int64) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := ReadLabel(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(hdr.DeviceSize)); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, int64(hdr.DeviceSize)
}

func TestKindsNotExposed(t *testing.T) {
	f, size := paddedPV(t, "pv-kinds.bin")
	vgs, err := Scan(f, []Device{{Name: "disk", Size: size}})
	if err != nil || len(vgs) != 1 {
		t.Fatalf("scan: %v, %d vgs", err, len(vgs))
	}
	want := map[string]string{
		"root":  "",
		"swap":  "",
		"data":  "",
		"pool":  "thin pool: it holds the blocks of thin volumes, not a file system",
		"thin1": "thin volume: its blocks are placed by the thin pool's own metadata, which cairn does not read",
		"r1":    "segment type raid1 is not exposed: cairn maps only linear and striped volumes",
		"snap1": "snapshot of data: its contents are data's blocks merged with a copy-on-write store, which cairn does not do; read data for the volume as it is now",
	}
	got := map[string]string{}
	for _, lv := range vgs[0].LVs {
		got[lv.Name] = lv.Reason
	}
	if len(got) != len(want) {
		t.Errorf("lvs %v, want the visible ones %v", got, want)
	}
	for name, reason := range want {
		if r, ok := got[name]; !ok || r != reason {
			t.Errorf("lv %s: reason %q, want %q", name, r, reason)
		}
	}
}

func TestLabelAndWrappedMetadata(t *testing.T) {
	b, err := os.ReadFile("testdata/pv-wrapped.bin")
	if err != nil {
		t.Fatal(err)
	}
	r := bytes.NewReader(b)
	hdr, err := ReadLabel(r, int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if hdr.LabelSector != 1 || len(hdr.UUID) != 38 || len(hdr.Data) != 1 || len(hdr.Metadata) != 1 ||
		hdr.Metadata[0] != (Area{Offset: 4096, Size: uint64(len(b)) - 4096}) {
		t.Fatalf("pv header %+v", hdr)
	}
	le := binary.LittleEndian
	if off, n := le.Uint64(b[4096+40:]), le.Uint64(b[4096+48:]); off+n <= uint64(len(b))-4096 {
		t.Fatalf("seed metadata at %d+%d does not wrap", off, n)
	}
	text, ok, err := ReadMetadata(r, int64(len(b)), hdr.Metadata[0])
	if err != nil || !ok {
		t.Fatalf("read wrapped metadata: %v %v", ok, err)
	}
	vg, err := ParseVG(text)
	if err != nil {
		t.Fatal(err)
	}
	if vg.Name != "vg1" || len(vg.LVs) != 18 {
		t.Fatalf("vg %s with %d lvs", vg.Name, len(vg.LVs))
	}

	// Damage: a flipped byte in the text fails its checksum; in the label, the label is gone.
	bad := bytes.Clone(b)
	bad[4096+int(le.Uint64(b[4096+40:]))+10] ^= 1
	if _, _, err := ReadMetadata(bytes.NewReader(bad), int64(len(bad)), hdr.Metadata[0]); err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Errorf("damaged text: %v", err)
	}
	vgs, err := Scan(bytes.NewReader(bad), []Device{{Name: "p1", Size: int64(len(bad))}})
	if len(vgs) != 0 || err == nil || !strings.HasPrefix(err.Error(), "p1: ") {
		t.Errorf("scan of damaged metadata: %d vgs, %v", len(vgs), err)
	}
	bad = bytes.Clone(b)
	bad[512+100] ^= 1
	if _, err := ReadLabel(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrNoLabel) {
		t.Errorf("damaged label: %v", err)
	}
}

// TestStripedMap checks dm-stripe's placement on the striped LV of a real VG: 64 KiB
// chunks alternate between the two PVs.
func TestStripedMap(t *testing.T) {
	text, err := os.ReadFile("testdata/vg0-striped.meta")
	if err != nil {
		t.Fatal(err)
	}
	vg, err := ParseVG(text)
	if err != nil {
		t.Fatal(err)
	}
	for _, lv := range vg.LVs {
		if lv.Exposed() || !strings.HasSuffix(lv.Reason, "is not in this image") {
			t.Errorf("lv %s with no pv located: %q", lv.Name, lv.Reason)
		}
	}
	const mib = 1 << 20
	vg.PVs[0].Found, vg.PVs[0].Offset, vg.PVs[0].Size = true, 1*mib, 24*mib
	vg.PVs[1].Found, vg.PVs[1].Offset, vg.PVs[1].Size = true, 25*mib, 24*mib
	vg.resolve()
	var lv3, lv1 *LV
	for _, lv := range vg.LVs {
		switch lv.Name {
		case "lv1":
			lv1 = lv
		case "lv3":
			lv3 = lv
		}
	}
	const es, chunk = 4 * mib, 64 << 10
	for _, tc := range []struct {
		lv          *LV
		off, at, n  int64
		description string
	}{
		{lv3, 0, 1*mib + mib + 4*es, chunk, "first chunk on pv0 extent 4"},
		{lv3, chunk + 5, 25*mib + mib + 5, chunk - 5, "second chunk on pv1 extent 0"},
		{lv3, 2 * chunk, 1*mib + mib + 4*es + chunk, chunk, "third chunk on pv0 after the first"},
		{lv1, 0, 1*mib + mib, 2 * es, "segment 1 of lv1"},
		{lv1, 2*es + 7, 1*mib + mib + 3*es + 7, es - 7, "segment 2 of lv1, after lv2's extent"},
	} {
		at, n, ok := tc.lv.Map(tc.off)
		if !ok || at != tc.at || n != tc.n {
			t.Errorf("%s: Map(%d) = %d, %d, %v; want %d, %d", tc.description, tc.off, at, n, ok, tc.at, tc.n)
		}
	}
	if _, _, ok := lv3.Map(lv3.Size); ok {
		t.Error("Map past the end")
	}
}

func TestParseText(t *testing.T) {
	top, err := ParseText([]byte(`# comment
a = 1 # trailing
s = "x \"q\" \\ y"
f = 1.5
neg = -3
arr = [ "A", 2, "B",
  3, ]
empty = []
sec {
	inner { k = "v" }
}
`))
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := top.Int("a"); v != 1 {
		t.Errorf("a = %d", v)
	}
	if v, _ := top.String("s"); v != `x "q" \ y` {
		t.Errorf("s = %q", v)
	}
	if v, _ := top.Int("neg"); v != -3 {
		t.Errorf("neg = %d", v)
	}
	if v, _ := top.Get("f"); v.Kind != KindFloat || v.Str != "1.5" {
		t.Errorf("f = %+v", v)
	}
	if v, _ := top.Get("arr"); len(v.Array) != 4 || v.Array[3].Int != 3 {
		t.Errorf("arr = %+v", v)
	}
	if v, _ := top.Sub("sec").Sub("inner").String("k"); v != "v" {
		t.Errorf("sec/inner/k = %q", v)
	}
	for _, bad := range []string{
		`a = "open`, `s { a = 1`, `}`, `a = [1, 2`, `a =`, `a 1`, `a = [[1]]`, `a = 1x`, `= 1`,
		strings.Repeat("s {", maxDepth+2) + strings.Repeat("}", maxDepth+2),
	} {
		if _, err := ParseText([]byte(bad)); err == nil || !strings.HasPrefix(err.Error(), "lvm metadata line ") {
			t.Errorf("ParseText(%.40q): %v", bad, err)
		}
	}
}

// TestHostileMetadata: metadata that lies about its layout fails with an error, never a
// panic or a huge allocation.
func TestHostileMetadata(t *testing.T) {
	text, err := os.ReadFile("testdata/vg0-striped.meta")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ from, to, want string }{
		{"extent_size = 8192", "extent_size = 0", "bad extent_size"},
		{`"pv0", 4,`, `"pv9", 4,`, `unknown pv "pv9"`},
		{`"pv0", 3`, `"pv0", 5`, "beyond the end of pv pv0"},
		{"start_extent = 2", "start_extent = 3", "gap or overlap"},
		{"stripe_count = 2", "stripe_count = 3", "do not match stripe_count"},
		{"stripe_size = 128", "stripe_size = 100", "bad stripe_size"},
		{"extent_count = 1\t# 4", "extent_count = 1099511627777\t# 4", "bad start_extent"},
	} {
		s := strings.Replace(string(text), tc.from, tc.to, 1)
		if s == string(text) {
			t.Fatalf("%q is not in the seed", tc.from)
		}
		if _, err := ParseVG([]byte(s)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: %v, want %q", tc.from, tc.to, err, tc.want)
		}
	}
	// A segment on another LV (as during pvmove) makes that LV not exposed, not the VG
	// unreadable.
	s := strings.Replace(string(text), `"pv0", 2`, `"lv3", 0`, 1)
	vg, err := ParseVG([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	for _, lv := range vg.LVs {
		if lv.Name == "lv2" && !strings.HasPrefix(lv.Reason, "its extents are on logical volume lv3 (a pvmove") {
			t.Errorf("lv2 on lv3: %q", lv.Reason)
		}
	}
	// A metadata area whose raw location claims more than cairn reads.
	b, _ := os.ReadFile("testdata/pv-small.bin")
	hdr, err := ReadLabel(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint64(b[4096+48:], 1<<40)
	binary.LittleEndian.PutUint32(b[4096:], crc(initialCRC, b[4096+4:4096+512]))
	if _, _, err := ReadMetadata(bytes.NewReader(b), int64(len(b)), hdr.Metadata[0]); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("huge raw location: %v", err)
	}
}

// TestBounds: more values, LVs or segments than cairn reads fail with an error naming the
// bound.
func TestBounds(t *testing.T) {
	if _, err := ParseText([]byte("a = [" + strings.Repeat("1,", maxValues+1) + "]")); err == nil ||
		!strings.Contains(err.Error(), "more than 524288 values") {
		t.Errorf("too many values: %v", err)
	}
	var b strings.Builder
	b.WriteString("vg { extent_size = 8192\nlogical_volumes {\n")
	for i := range maxLVs + 1 {
		fmt.Fprintf(&b, "l%d {}\n", i)
	}
	b.WriteString("}\n}\n")
	if _, err := ParseVG([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "more than 16384 logical volumes") {
		t.Errorf("too many lvs: %v", err)
	}
	b.Reset()
	b.WriteString("vg { extent_size = 8192\nphysical_volumes { pv0 { pe_count = 1000000 } }\nlogical_volumes {\n")
	for i := range 8 {
		fmt.Fprintf(&b, "l%d {\n", i)
		for j := range maxSegments/8 + 1 {
			fmt.Fprintf(&b, "segment%d { start_extent = %d\nextent_count = 1\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 0] }\n", j, j)
		}
		b.WriteString("}\n")
	}
	b.WriteString("}\n}\n")
	if _, err := ParseVG([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "more than 32768 segments") {
		t.Errorf("too many segments: %v", err)
	}
}

// A PV whose label is on two devices of the image (a partition copied with dd keeps the PV's
// and VG's uuids) is placed on neither: the newest metadata may be the copy's while the first
// device is the original, and its LVs would read one device's blocks through the other's
// layout, every block verifying. Its LVs are not exposed, and say why.
func TestDuplicatePVIsNotPlaced(t *testing.T) {
	seed, err := os.ReadFile(filepath.Join("testdata", "pv-kinds.bin"))
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := ReadLabel(bytes.NewReader(seed), int64(len(seed)))
	if err != nil {
		t.Fatal(err)
	}
	n := int64(hdr.DeviceSize)
	img := make([]byte, 2*n)
	copy(img, seed)
	copy(img[n:], seed)
	scan := func(devs []Device) *VG {
		t.Helper()
		vgs, err := Scan(bytes.NewReader(img), devs)
		if err != nil || len(vgs) != 1 {
			t.Fatalf("scan of %d devices: %d groups, %v", len(devs), len(vgs), err)
		}
		return vgs[0]
	}
	one := scan([]Device{{Name: "p1", Offset: 0, Size: n}})
	exposed := 0
	for _, lv := range one.LVs {
		if lv.Exposed() {
			exposed++
		}
	}
	if exposed == 0 {
		t.Fatal("no LV of the seed is exposed on one device: nothing to compare with")
	}
	// A partition table that lists the same bytes twice is one PV, not a copy.
	for _, lv := range scan([]Device{{Name: "p1", Offset: 0, Size: n}, {Name: "p1again", Offset: 0, Size: n}}).LVs {
		if lv.Exposed() != slices.ContainsFunc(one.LVs, func(o *LV) bool { return o.Name == lv.Name && o.Exposed() }) {
			t.Errorf("LV %s on one device listed twice: exposed %v, not as on one device", lv.Name, lv.Exposed())
		}
	}
	two := scan([]Device{{Name: "p1", Offset: 0, Size: n}, {Name: "p2", Offset: n, Size: n}})
	for _, lv := range two.LVs {
		if lv.Exposed() {
			t.Errorf("LV %s is exposed with its PV on two devices", lv.Name)
		} else if lv.kindReason == "" && !strings.Contains(lv.Reason, "on 2 devices of this image (p1, p2)") {
			t.Errorf("LV %s: %q, want the two devices named", lv.Name, lv.Reason)
		}
	}
}
