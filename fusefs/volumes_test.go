package fusefs

import (
	"slices"
	"testing"

	"github.com/cairn-backup/cairn/blockio/lvm"
)

// TestVGNames: VGs are named by their name; two with the same name (two disks' VGs
// restored into one image, or a clone) both get the start of their uuid.
func TestVGNames(t *testing.T) {
	got := vgNames([]*lvm.VG{
		{Name: "vg0", UUID: "aaaaaaaa-1"},
		{Name: "data", UUID: "cccccccc-3"},
		{Name: "vg0", UUID: "bbbbbbbb-2"},
		{Name: "..", UUID: "dddddddd-4"},
	})
	var names []string
	for n, vg := range got {
		names = append(names, n+"="+vg.UUID)
	}
	slices.Sort(names)
	want := []string{"_..=dddddddd-4", "data=cccccccc-3", "vg0-aaaaaaaa=aaaaaaaa-1", "vg0-bbbbbbbb=bbbbbbbb-2"}
	if !slices.Equal(names, want) {
		t.Errorf("vg names %v, want %v", names, want)
	}
}
