package gateway

import (
	"strings"
	"testing"
)

// TestParseExportName: REF/lvm/VG/LV names a logical volume of a backup id or VOLUME/latest;
// everything else is a backup's reference as it is.
func TestParseExportName(t *testing.T) {
	for _, tc := range []struct{ name, ref, vg, lv string }{
		{"b1", "b1", "", ""},
		{"vm/latest", "vm/latest", "", ""},
		{"b1/lvm/vg0/lv1", "b1", "vg0", "lv1"},
		{"vm/latest/lvm/vg0/lv1", "vm/latest", "vg0", "lv1"},
		{"vol-id/latest/lvm/vg0-1a2b3c4d/root", "vol-id/latest", "vg0-1a2b3c4d", "root"},
		{"b1/lvm/lvm/lvm", "b1", "lvm", "lvm"},                   // a VG and an LV named lvm
		{"a/b/latest/lvm/vg/lv", "a/b/latest", "vg", "lv"},       // a volume name with a '/'
		{"b1/lvm/vg0", "b1/lvm/vg0", "", ""},                     // no LV
		{"b1/lvm/vg0/", "b1/lvm/vg0/", "", ""},                   // empty LV
		{"b1/lvm//lv1", "b1/lvm//lv1", "", ""},                   // empty VG
		{"/lvm/vg0/lv1", "/lvm/vg0/lv1", "", ""},                 // no backup
		{"b1/lvm/vg0/lv1/x", "b1/lvm/vg0/lv1/x", "", ""},         // too deep
		{"a/b/lvm/vg0/lv1", "a/b/lvm/vg0/lv1", "", ""},           // a '/' in something not VOLUME/latest
		{"b1/notlvm/vg0/lv1", "b1/notlvm/vg0/lv1", "", ""},       // not lvm/
		{"vm/latest/lvm/vg/latest", "vm/latest", "vg", "latest"}, // an LV named latest
	} {
		ref, vg, lv := parseExportName(tc.name)
		if ref != tc.ref || vg != tc.vg || lv != tc.lv {
			t.Errorf("parseExportName(%q) = %q, %q, %q; want %q, %q, %q", tc.name, ref, vg, lv, tc.ref, tc.vg, tc.lv)
		}
	}
}

// FuzzParseExportName: an export name comes from the network; whatever it is, the parts
// put back together are the name, and a logical volume's VG and LV hold no '/'.
func FuzzParseExportName(f *testing.F) {
	for _, s := range []string{"b1", "vm/latest/lvm/vg0/lv1", "b1/lvm/lvm/lvm", "a/b/lvm/vg/lv", "/lvm//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ref, vg, lv := parseExportName(name)
		if vg == "" && lv == "" {
			if ref != name {
				t.Fatalf("parseExportName(%q): ref %q without an LV", name, ref)
			}
			return
		}
		if vg == "" || lv == "" || strings.Contains(vg, "/") || strings.Contains(lv, "/") || ref == "" ||
			ref+"/lvm/"+vg+"/"+lv != name {
			t.Fatalf("parseExportName(%q) = %q, %q, %q", name, ref, vg, lv)
		}
	})
}
