package lvm

import (
	"bytes"
	"encoding/binary"
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
// and every LV they expose must map inside the device. Each input is scanned as it is and
// with its checksums made right again, so that mutations get past them to the text.
func FuzzScan(f *testing.F) {
	addSeeds(f, "pv-*.bin")
	f.Fuzz(func(t *testing.T, dev []byte) {
		scanOK(t, dev)
		scanOK(t, fixChecksums(bytes.Clone(dev)))
	})
}

// fixChecksums recomputes the label's, the metadata area header's and the metadata text's
// checksums of a device image.
func fixChecksums(dev []byte) []byte {
	le := binary.LittleEndian
	for s := 0; s < labelSectors && (s+1)*sectorSize <= len(dev); s++ {
		sec := dev[s*sectorSize : (s+1)*sectorSize]
		if string(sec[:8]) != "LABELONE" {
			continue
		}
		le.PutUint32(sec[16:], crc(initialCRC, sec[20:]))
		h, ok := parseLabel(sec, s)
		if !ok {
			return dev
		}
		for _, a := range h.Metadata {
			if a.Offset > uint64(len(dev)) || a.Size < 2*mdaHeaderSize || a.Size > uint64(len(dev))-a.Offset {
				continue
			}
			area := dev[a.Offset : a.Offset+a.Size]
			off, n := le.Uint64(area[40:]), le.Uint64(area[48:])
			if off >= mdaHeaderSize && off < a.Size && n <= a.Size-mdaHeaderSize {
				first := min(n, a.Size-off)
				sum := crc(initialCRC, area[off:off+first])
				sum = crc(sum, area[mdaHeaderSize:mdaHeaderSize+n-first])
				le.PutUint32(area[56:], sum)
			}
			le.PutUint32(area, crc(initialCRC, area[4:mdaHeaderSize]))
		}
		return dev
	}
	return dev
}

func scanOK(t *testing.T, dev []byte) {
	{
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
	}
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
