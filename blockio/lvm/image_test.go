package lvm

import (
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestVGNames: VGs are named by their name; two with the same name (two disks' VGs
// restored into one image, or a clone) both get the start of their uuid.
func TestVGNames(t *testing.T) {
	got := Names([]*VG{
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

// TestPathName: hostile VG or LV names become one safe path component.
func TestPathName(t *testing.T) {
	for in, want := range map[string]string{
		"vg0": "vg0", "": "_", ".": "_.", "..": "_..", "a/b": "a_b", "a\\b": "a_b", "a\nb": "a_b",
	} {
		if got := PathName(in); got != want {
			t.Errorf("PathName(%q) = %q, want %q", in, got, want)
		}
	}
	long := PathName(strings.Repeat("é", 200))
	if len(long) > maxPathName || !strings.HasPrefix(long, "é") || !utf8.ValidString(long) {
		t.Errorf("PathName of a long name: %d bytes, %q", len(long), long)
	}
}
