package blockio

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseThinDelta(t *testing.T) {
	const blk = 128 * 512 // data_block_size="128" sectors
	mixed, err := os.ReadFile("testdata/thindelta/mixed.xml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   string
		size int64
		want Changes
		err  string
	}{
		// thin_delta's own output (testdata: made with thin_restore and thin_delta):
		// different 1, left_only 2, right_only 5-6; "same" 0 is skipped.
		{"real output", string(mixed), 100 * blk, Changes{{1 * blk, 3 * blk}, {5 * blk, 7 * blk}}, ""},
		{"clipped to the volume", string(mixed), 6*blk - 4096, Changes{{1 * blk, 3 * blk}, {5 * blk, 6*blk - 4096}}, ""},
		{"nothing changed", `<superblock data_block_size="128"><diff left="1" right="1"><same begin="0" length="9"/></diff></superblock>`, 9 * blk, nil, ""},
		{"unsorted and touching", `<superblock data_block_size="8"><diff><right_only begin="4" length="2"/><different begin="0" length="4"/></diff></superblock>`, 1 << 20, Changes{{0, 6 * 4096}}, ""},
		{"beyond the volume", `<superblock data_block_size="8"><diff><different begin="1000" length="2"/></diff></superblock>`, 4096, nil, ""},
		{"no superblock", `<diff><different begin="1" length="1"/></diff>`, 1 << 20, nil, "before <superblock>"},
		{"empty", ``, 1 << 20, nil, "no <superblock>"},
		{"bad block size", `<superblock data_block_size="0"/>`, 1 << 20, nil, "data_block_size"},
		{"bad number", `<superblock data_block_size="8"><different begin="x" length="1"/></superblock>`, 1 << 20, nil, "not a number"},
		{"negative", `<superblock data_block_size="8"><different begin="-1" length="1"/></superblock>`, 1 << 20, nil, "range"},
		{"not XML", `<superblock data_block_size="8"><different`, 1 << 20, nil, "thin_delta output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseThinDelta(strings.NewReader(tt.in), tt.size)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// thin_delta's output is read from another program: no input may panic, and what is returned
// is sorted, disjoint and inside the volume.
func FuzzParseThinDelta(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/thindelta/*.xml")
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(b), int64(1<<30))
	}
	f.Add(`<superblock data_block_size="8"><diff><right_only begin="4" length="2"/><different begin="0" length="4"/></diff></superblock>`, int64(4096))
	f.Fuzz(func(t *testing.T, in string, size int64) {
		if size < 0 {
			return
		}
		c, err := ParseThinDelta(strings.NewReader(in), size)
		if err != nil {
			return
		}
		var prev int64 = -1
		for _, e := range c {
			if e.Start <= prev || e.End <= e.Start || e.End > size {
				t.Fatalf("bad extent %v in %v (size %d)", e, c, size)
			}
			prev = e.End
		}
	})
}
