package lvm

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func addSeeds(f *testing.F, glob string) {
	paths, err := filepath.Glob(filepath.Join("testdata", glob))
	if err != nil || len(paths) == 0 {
		f.Fatalf("no seeds %s: %v", glob, err)
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzScan treats the input as a device: label, PV header, metadata area header, the
// circular text buffer, the text and the VG built from it must fail cleanly on any bytes,
// and every LV they expose must map inside the device.
func FuzzScan(f *testing.F) {
	addSeeds(f, "pv-*.bin")
	f.Fuzz(func(t *testing.T, dev []byte) {
		vgs, _ := Scan(bytes.NewReader(dev), []Device{{Name: "disk", Size: int64(len(dev))}})
		for _, vg := range vgs {
			for _, lv := range vg.LVs {
				if !lv.Exposed() {
					continue
				}
				for _, off := range []int64{0, lv.Size / 2, lv.Size - 1} {
					at, n, ok := lv.Map(off)
					if !ok || at < 0 || n <= 0 || at+1 > int64(len(dev)) {
						t.Fatalf("lv %s: Map(%d) = %d, %d, %v outside a %d-byte device", lv.Name, off, at, n, ok, len(dev))
					}
				}
				r, err := lv.ReaderAt(bytes.NewReader(dev))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := r.ReadAt(make([]byte, 512), max(0, lv.Size-256)); err != io.EOF && lv.Size >= 256 {
					t.Fatalf("read over the end of lv %s: %v", lv.Name, err)
				}
			}
		}
	})
}

// FuzzParseVG feeds text to the config parser and the VG builder.
func FuzzParseVG(f *testing.F) {
	addSeeds(f, "*.meta")
	f.Fuzz(func(t *testing.T, text []byte) {
		if _, err := ParseText(text); err != nil {
			return
		}
		_, _ = ParseVG(text)
	})
}
