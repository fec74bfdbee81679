package lvm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
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

// memImage is an image in memory whose holes are its all-zero blocks, as a backup's image
// keeps them.
type memImage struct {
	data  []byte
	block int64
}

func (m *memImage) Size() int64 { return int64(len(m.data)) }

func (m *memImage) ReadAtContext(_ context.Context, p []byte, off int64) (int, error) {
	return bytes.NewReader(m.data).ReadAt(p, off)
}

func (m *memImage) zero(b int64) bool {
	return allZero(m.data[b*m.block : min((b+1)*m.block, m.Size())])
}

func (m *memImage) NextData(_ context.Context, off int64) (start, end int64, err error) {
	n := (m.Size() + m.block - 1) / m.block
	b := off / m.block
	for b < n && m.zero(b) {
		b++
	}
	if b >= n {
		return m.Size(), m.Size(), io.EOF
	}
	e := b
	for e < n && !m.zero(e) {
		e++
	}
	return max(off, b*m.block), min(e*m.block, m.Size()), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// TestOpenVolume: the seed pv-kinds as a whole-disk image with random extents; root (in
// two segments around swap) reads as its extents, NextData follows the mapping across the
// image's holes, and unknown or unexposed LVs are refused with the matching error.
func TestOpenVolume(t *testing.T) {
	seed, err := os.ReadFile("testdata/pv-kinds.bin")
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := ReadLabel(bytes.NewReader(seed), int64(len(seed)))
	if err != nil {
		t.Fatal(err)
	}
	const pe, es, block = 72 * 512, 1 << 20, 4096
	disk := make([]byte, hdr.DeviceSize)
	_, _ = rand.NewChaCha8([32]byte{9}).Read(disk[pe:])
	copy(disk, seed)
	clear(disk[pe+2*es : pe+3*es]) // swap: all a hole (pe is block-aligned)
	const h0, hole = 3 * block * 16, 8 * block
	clear(disk[pe+h0 : pe+h0+hole]) // pe+h0 is block-aligned: 36864 + 196608
	img := &memImage{data: disk, block: block}
	ctx := context.Background()

	root, err := OpenVolume(ctx, img, "vg2", "root")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Concat(disk[pe:pe+2*es], disk[pe+3*es:pe+4*es])
	got := make([]byte, root.Size())
	if n, err := root.ReadAtContext(ctx, got, 0); err != nil || n != len(want) || !bytes.Equal(got, want) {
		t.Fatalf("root: %d bytes, %v; differs from its extents", n, err)
	}
	for _, tc := range []struct {
		lv              string
		off, start, end int64
	}{
		{"root", 0, 0, h0},
		{"root", h0, h0 + hole, 3 * es}, // across the hole of swap between root's segments
	} {
		v, err := OpenVolume(ctx, img, "vg2", tc.lv)
		if err != nil {
			t.Fatal(err)
		}
		if start, end, err := v.NextData(ctx, tc.off); err != nil || start != tc.start || end != tc.end {
			t.Errorf("%s NextData(%d) = %d, %d, %v; want %d, %d", tc.lv, tc.off, start, end, err, tc.start, tc.end)
		}
	}
	swap, err := OpenVolume(ctx, img, "vg2", "swap")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := swap.NextData(ctx, 0); err != io.EOF {
		t.Errorf("swap NextData(0): %v, want io.EOF (it is all hole)", err)
	}
	if _, _, err := root.NextData(ctx, root.Size()); err != io.EOF {
		t.Errorf("root NextData at its end: %v, want io.EOF", err)
	}
	if _, err := OpenVolume(ctx, img, "vg2", "thin1"); !errors.Is(err, ErrNotExposed) || !strings.Contains(err.Error(), "thin volume") {
		t.Errorf("vg2/thin1: %v, want not exposed: thin volume", err)
	}
	for _, name := range [][2]string{{"vg9", "root"}, {"vg2", "nope"}} {
		if _, err := OpenVolume(ctx, img, name[0], name[1]); !errors.Is(err, ErrNoVolume) {
			t.Errorf("%s/%s: %v, want ErrNoVolume", name[0], name[1], err)
		}
	}
}
