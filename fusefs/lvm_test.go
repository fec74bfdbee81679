//go:build linux

package fusefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/blockio/lvm"
	"golang.org/x/sys/unix"
)

// TestTreeLVMKinds backs up a whole-disk PV (the seed pv-kinds: a VG made by LVM with
// linear LVs, a thin pool and thin LV, a RAID1 LV and a snapshot) with random extents, and
// lists lvm/: the linear LVs are images of their extents, the others a .not-exposed file
// with the reason. lvm.OpenVolume finds the same volumes by the same names.
func TestTreeLVMKinds(t *testing.T) {
	x := newTreeFixture(t, Options{})
	disk := pvKindsDisk(t, 7)
	// Zeros, which the repository keeps as holes of whole blocks: all of swap (extent 2),
	// and 64 KiB in the middle of root's first extent, aligned in the image.
	const pe, es, hole = 72 * 512, 1 << 20, 64 << 10
	const h0 = (pe+es/2+hole-1)/hole*hole - pe // the hole's start in root
	clear(disk[pe+2*es : pe+3*es])
	clear(disk[pe+h0 : pe+h0+hole])
	x.volume(t, "v1", "vm-disk", "")
	x.backup(t, "b1", "v1", "", 0, disk)
	x.fs.Refresh(context.Background())

	if got := x.names(t, "backups", "b1"); !slices.Contains(got, "lvm") || slices.Contains(got, "partitions") {
		t.Fatalf("backups/b1 lists %v, want lvm and no partitions", got)
	}
	want := []string{"data.img", "pool.not-exposed", "r1.not-exposed", "root.img", "snap1.not-exposed", "swap.img", "thin1.not-exposed"}
	if got := x.names(t, "backups", "b1", "lvm", "vg2"); !slices.Equal(got, want) {
		t.Fatalf("lvm/vg2 lists %v, want %v", got, want)
	}
	reason, err := os.ReadFile(filepath.Join(x.mnt, "backups", "b1", "lvm", "vg2", "thin1.not-exposed"))
	if err != nil || !strings.HasPrefix(string(reason), "thin volume: ") || !strings.HasSuffix(string(reason), "\n") {
		t.Errorf("thin1.not-exposed: %q, %v", reason, err)
	}
	// root: extents 0-1 and 3 of 1 MiB from pe_start (72 sectors); swap: extent 2.
	wantRoot := slices.Concat(disk[pe:pe+2*es], disk[pe+3*es:pe+4*es])
	got, err := os.ReadFile(filepath.Join(x.mnt, "volumes", "vm-disk", "latest", "lvm", "vg2", "root.img"))
	if err != nil || !bytes.Equal(got, wantRoot) {
		t.Errorf("root.img: %d bytes, %v; differs from its extents", len(got), err)
	}
	got, err = os.ReadFile(filepath.Join(x.mnt, "backups", "b1", "lvm", "vg2", "swap.img"))
	if err != nil || !bytes.Equal(got, disk[pe+2*es:pe+3*es]) {
		t.Errorf("swap.img: %d bytes, %v; differs from its extent", len(got), err)
	}

	m, err := x.r.GetManifest(context.Background(), "b1")
	if err != nil {
		t.Fatal(err)
	}
	r, err := lvm.OpenVolume(context.Background(), x.r.Image(m), "vg2", "root")
	if err != nil || r.Size() != int64(len(wantRoot)) {
		t.Fatalf("lvm.OpenVolume vg2/root: %v", err)
	}
	buf := make([]byte, 4096)
	if _, err := r.ReadAt(buf, 2*es-2048); err != nil || !bytes.Equal(buf, wantRoot[2*es-2048:2*es+2048]) {
		t.Errorf("vg2/root across its segments: %v", err)
	}
	// Holes follow the mapping: root's data runs from after its hole across the image's
	// hole (swap, between root's segments) to its end. swap is a hole but for its first
	// and last bytes, which share a block of the image with root's data.
	swap, err := lvm.OpenVolume(context.Background(), x.r.Image(m), "vg2", "swap")
	if err != nil {
		t.Fatal(err)
	}
	bs := int64(x.r.Config().BlockSize)
	if hole%bs != 0 || (pe+2*es)%bs == 0 {
		t.Fatalf("block size %d: the holes below are not where this test expects them", bs)
	}
	swapHead := (pe+2*es+bs-1)/bs*bs - (pe + 2*es)
	swapTail := (pe+3*es)/bs*bs - (pe + 2*es)
	for _, tc := range []struct {
		v               *lvm.Volume
		off, start, end int64
	}{
		{r, 0, 0, h0},
		{r, h0, h0 + hole, 3 * es},
		{r, 2*es + 5, 2*es + 5, 3 * es},
		{swap, 0, 0, swapHead},
		{swap, swapHead, swapTail, es},
	} {
		if start, end, err := tc.v.NextData(context.Background(), tc.off); err != nil || start != tc.start || end != tc.end {
			t.Errorf("%s NextData(%d) = %d, %d, %v; want %d, %d", tc.v.LV.Name, tc.off, start, end, err, tc.start, tc.end)
		}
	}
	rootImg, err := os.Open(filepath.Join(x.mnt, "backups", "b1", "lvm", "vg2", "root.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer rootImg.Close()
	if h, err := unix.Seek(int(rootImg.Fd()), 0, unix.SEEK_HOLE); err != nil || h != h0 {
		t.Errorf("root.img SEEK_HOLE 0: %d, %v; want %d", h, err, h0)
	}
	if d, err := unix.Seek(int(rootImg.Fd()), h0, unix.SEEK_DATA); err != nil || d != h0+hole {
		t.Errorf("root.img SEEK_DATA %d: %d, %v; want %d", h0, d, err, h0+hole)
	}
	if _, _, err := swap.NextData(context.Background(), es-1); err != nil {
		t.Errorf("swap NextData at its last byte: %v", err)
	}
	if _, _, err := r.NextData(context.Background(), r.Size()); err != io.EOF {
		t.Errorf("root NextData at its end: %v, want io.EOF", err)
	}
	if _, err := lvm.OpenVolume(context.Background(), x.r.Image(m), "vg2", "thin1"); !errors.Is(err, lvm.ErrNotExposed) ||
		!strings.Contains(err.Error(), "thin volume") {
		t.Errorf("lvm.OpenVolume vg2/thin1: %v", err)
	}
	if _, err := lvm.OpenVolume(context.Background(), x.r.Image(m), "vg9", "root"); !errors.Is(err, lvm.ErrNoVolume) {
		t.Errorf("lvm.OpenVolume vg9/root: %v", err)
	}
}

// Two volumes of one group whose metadata gives them one id (or none: an image's metadata may
// hold anything) get inode numbers of their own: go-fuse takes two entries of one number for
// one node, and a read of the second volume returned the first one's bytes.
func TestLVsOfOneIDAreFilesOfTheirOwn(t *testing.T) {
	x := newTreeFixture(t, Options{})
	disk := pvKindsDisk(t, 8)
	x.volume(t, "v1", "vm-disk", "")
	x.backup(t, "b1", "v1", "", 0, disk)
	ctx := context.Background()
	m, err := x.r.GetManifest(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := x.ix.Backup("b1")
	if err != nil {
		t.Fatal(err)
	}
	vgs, err := lvm.ImageVGs(ctx, x.r.Image(m))
	if err != nil {
		t.Fatal(err)
	}
	vg := vgs["vg2"]
	if vg == nil || len(vg.LVs) < 4 {
		t.Fatalf("the seed's vg2: %+v", vg)
	}
	for _, lv := range vg.LVs {
		lv.UUID = "" // exposed and not exposed ones alike
	}
	seen := map[uint64]string{}
	for _, e := range x.fs.listVG(b, m, "vg2", vg) {
		if other, ok := seen[e.attr.Ino]; ok {
			t.Errorf("%s and %s share inode %d", other, e.name, e.attr.Ino)
		}
		seen[e.attr.Ino] = e.name
	}
	if len(seen) != len(vg.LVs) {
		t.Fatalf("%d entries of distinct inodes, want %d", len(seen), len(vg.LVs))
	}
}

// pvKindsDisk is a whole-disk PV of the seed pv-kinds (LVM's own metadata) with random extents
// from seed.
func pvKindsDisk(t *testing.T, seed uint64) []byte {
	t.Helper()
	head, err := os.ReadFile("../blockio/lvm/testdata/pv-kinds.bin")
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := lvm.ReadLabel(bytes.NewReader(head), int64(len(head)))
	if err != nil {
		t.Fatal(err)
	}
	disk := randomBytes(seed, int(hdr.DeviceSize))
	copy(disk[:36864], make([]byte, 36864)) // the PV's head: label and metadata area
	copy(disk, head)
	return disk
}
