package part

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"unicode/utf16"
)

// Partition is one entry of a partition table, in bytes from the start of the image.
// Number is the kernel's: MBR primaries 1-4, logicals from 5, GPT entry index + 1.
type Partition struct {
	Number int
	Start  int64
	Length int64
	Type   string // MBR type byte as "0x83", or the GPT type GUID
	Name   string // GPT partition name
}

// Bounds that keep a hostile table from costing memory or time.
const (
	maxGPTEntryBytes = 1 << 20
	maxLogical       = 128
)

// Read parses the partition table at the start of an image of the given size: a GPT (kind
// "gpt", behind its protective MBR, 512- or 4096-byte sectors, header and entry CRCs checked)
// or an MBR (kind "mbr") with its primaries and the logical partitions of an extended one. An image
// without a table returns no partitions and no error; an error is a failed read.
// Partitions are clipped to the image, as the kernel does; empty ones are left out.
func Read(r io.ReaderAt, size int64) (kind string, parts []Partition, err error) {
	if size < 1024 {
		return "", nil, nil
	}
	mbr := make([]byte, 512)
	if err := readFull(r, mbr, 0); err != nil {
		return "", nil, err
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return "", nil, nil
	}
	entries := mbrEntries(mbr)
	if entries == nil {
		return "", nil, nil
	}
	for _, e := range entries {
		if e.typ == 0xee {
			for _, ss := range []int64{512, 4096} {
				parts, ok, err := readGPT(r, size, ss)
				if err != nil || ok {
					return "gpt", parts, err
				}
			}
			return "", nil, nil
		}
	}
	for i, e := range entries {
		if e.typ == 0 || e.sectors == 0 {
			continue
		}
		if isExtended(e.typ) {
			logical, err := readLogical(r, size, int64(e.start))
			if err != nil {
				return "", nil, err
			}
			parts = append(parts, logical...)
			continue
		}
		if p, ok := clip(i+1, int64(e.start)*512, int64(e.sectors)*512, size); ok {
			p.Type = fmt.Sprintf("0x%02x", e.typ)
			parts = append(parts, p)
		}
	}
	// Logicals were appended where their extended partition sits; order by number.
	slices.SortFunc(parts, func(a, b Partition) int { return a.Number - b.Number })
	return "mbr", parts, nil
}

type mbrEntry struct {
	typ            byte
	start, sectors uint32
}

// mbrEntries returns the four entries of an MBR sector, or nil when a boot indicator is
// neither 0x00 nor 0x80: then the sector is a file system's boot sector, not a table.
func mbrEntries(sector []byte) []mbrEntry {
	out := make([]mbrEntry, 4)
	for i := range out {
		e := sector[446+16*i : 446+16*(i+1)]
		if e[0] != 0 && e[0] != 0x80 {
			return nil
		}
		out[i] = mbrEntry{typ: e[4], start: binary.LittleEndian.Uint32(e[8:]), sectors: binary.LittleEndian.Uint32(e[12:])}
	}
	return out
}

func isExtended(t byte) bool { return t == 0x05 || t == 0x0f || t == 0x85 }

// readLogical follows the chain of extended boot records that starts at sector ext.
// Each EBR's first entry is a logical partition relative to that EBR; its second points to
// the next EBR relative to the start of the extended partition.
func readLogical(r io.ReaderAt, size, ext int64) ([]Partition, error) {
	var out []Partition
	sector := make([]byte, 512)
	seen := map[int64]bool{}
	ebr := ext
	for n := 5; n < 5+maxLogical; n++ {
		if seen[ebr] || ebr*512+512 > size {
			break
		}
		seen[ebr] = true
		if err := readFull(r, sector, ebr*512); err != nil {
			return nil, err
		}
		if sector[510] != 0x55 || sector[511] != 0xaa {
			break
		}
		es := mbrEntries(sector)
		if es == nil {
			break
		}
		if l := es[0]; l.typ != 0 && l.sectors != 0 && !isExtended(l.typ) {
			if p, ok := clip(n, (ebr+int64(l.start))*512, int64(l.sectors)*512, size); ok {
				p.Type = fmt.Sprintf("0x%02x", l.typ)
				out = append(out, p)
			}
		}
		next := es[1]
		if !isExtended(next.typ) || next.start == 0 {
			break
		}
		ebr = ext + int64(next.start)
	}
	return out, nil
}

// readGPT reads the primary GPT of an image with sector size ss. ok is false when there is
// no valid header there (wrong sector size, or a damaged table).
func readGPT(r io.ReaderAt, size, ss int64) (parts []Partition, ok bool, err error) {
	if 2*ss > size {
		return nil, false, nil
	}
	hdr := make([]byte, ss)
	if err := readFull(r, hdr, ss); err != nil {
		return nil, false, err
	}
	le := binary.LittleEndian
	if !bytes.Equal(hdr[:8], []byte("EFI PART")) {
		return nil, false, nil
	}
	hsize := le.Uint32(hdr[12:])
	if hsize < 92 || int64(hsize) > ss {
		return nil, false, nil
	}
	h := append([]byte(nil), hdr[:hsize]...)
	want := le.Uint32(h[16:])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != want || le.Uint64(hdr[24:]) != 1 {
		return nil, false, nil
	}
	entryLBA, count, esize := le.Uint64(hdr[72:]), le.Uint32(hdr[80:]), le.Uint32(hdr[84:])
	if esize < 128 || esize%8 != 0 || count == 0 || uint64(count)*uint64(esize) > maxGPTEntryBytes ||
		entryLBA < 2 || entryLBA > uint64(size/ss) {
		return nil, false, nil
	}
	table := make([]byte, int(count)*int(esize))
	if int64(entryLBA)*ss+int64(len(table)) > size {
		return nil, false, nil
	}
	if err := readFull(r, table, int64(entryLBA)*ss); err != nil {
		return nil, false, err
	}
	if crc32.ChecksumIEEE(table) != le.Uint32(hdr[88:]) {
		return nil, false, nil
	}
	for i := 0; i < int(count); i++ {
		e := table[i*int(esize) : (i+1)*int(esize)]
		if allZero(e[:16]) {
			continue
		}
		first, last := le.Uint64(e[32:]), le.Uint64(e[40:])
		if last < first || first > uint64(size/ss) {
			continue
		}
		p, ok := clip(i+1, int64(first)*ss, int64(last-first+1)*ss, size)
		if !ok {
			continue
		}
		p.Type, p.Name = guid(e[:16]), utf16Name(e[56:128])
		parts = append(parts, p)
	}
	return parts, true, nil
}

// clip bounds a partition to the image; ok is false when nothing of it is inside.
func clip(n int, start, length, size int64) (Partition, bool) {
	if start <= 0 || length <= 0 || start >= size {
		return Partition{}, false
	}
	return Partition{Number: n, Start: start, Length: min(length, size-start)}, true
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("partition table at offset %d: %w", off, err)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// guid formats a GPT GUID, whose first three fields are little-endian.
func guid(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

func utf16Name(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}
