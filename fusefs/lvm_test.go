//go:build linux

package fusefs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/blockio/lvm"
)

// TestTreeLVMKinds backs up a whole-disk PV (the seed pv-kinds: a VG made by LVM with
// linear LVs, a thin pool and thin LV, a RAID1 LV and a snapshot) with random extents, and
// lists lvm/: the linear LVs are images of their extents, the others a .not-exposed file
// with the reason. OpenLogicalVolume finds the same volumes by the same names.
func TestTreeLVMKinds(t *testing.T) {
	x := newTreeFixture(t, Options{})
	seed, err := os.ReadFile("../blockio/lvm/testdata/pv-kinds.bin")
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := lvm.ReadLabel(bytes.NewReader(seed), int64(len(seed)))
	if err != nil {
		t.Fatal(err)
	}
	disk := randomBytes(7, int(hdr.DeviceSize))
	copy(disk[:36864], make([]byte, 36864)) // the PV's head: label and metadata area
	copy(disk, seed)
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
	const pe, es = 72 * 512, 1 << 20
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
	r, err := OpenLogicalVolume(context.Background(), x.r.Image(m), "vg2", "root")
	if err != nil || r.Size() != int64(len(wantRoot)) {
		t.Fatalf("OpenLogicalVolume vg2/root: %v", err)
	}
	buf := make([]byte, 4096)
	if _, err := r.ReadAt(buf, 2*es-2048); err != nil || !bytes.Equal(buf, wantRoot[2*es-2048:2*es+2048]) {
		t.Errorf("vg2/root across its segments: %v", err)
	}
	if _, err := OpenLogicalVolume(context.Background(), x.r.Image(m), "vg2", "thin1"); !errors.Is(err, lvm.ErrNotExposed) ||
		!strings.Contains(err.Error(), "thin volume") {
		t.Errorf("OpenLogicalVolume vg2/thin1: %v", err)
	}
	if _, err := OpenLogicalVolume(context.Background(), x.r.Image(m), "vg9", "root"); !errors.Is(err, ErrNoVolume) {
		t.Errorf("OpenLogicalVolume vg9/root: %v", err)
	}
}
