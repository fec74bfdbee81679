package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
)

// ErrNoLabel says a device holds no LVM2 physical volume label.
var ErrNoLabel = errors.New("no lvm2 label")

const (
	sectorSize    = 512
	labelSectors  = 4 // the label is in one of the first four sectors
	mdaHeaderSize = 512
	idLen         = 32
	// mdaMagic is the metadata area header's magic, FMTT_MAGIC in LVM's source.
	mdaMagic = " LVM2 x[5A%r0N*>"
	// initialCRC is LVM's seed for its CRC-32 (the IEEE polynomial, no final inversion).
	initialCRC = 0xf597a6cf
	// rawLocnIgnored marks a metadata area whose copy is to be ignored (pvchange
	// --metadataignore).
	rawLocnIgnored = 1
)

// Bounds that keep a hostile label or metadata area from costing memory or time.
const (
	// MaxMetadataBytes is the largest text metadata read: LVM's default area is 1 MiB and
	// even VGs of thousands of LVs stay far below this.
	MaxMetadataBytes = 16 << 20
	maxAreas         = 16 // data or metadata areas listed in a PV header
)

// crc is LVM's calc_crc: the IEEE CRC-32 table, seeded with initialCRC, not inverted.
func crc(seed uint32, p []byte) uint32 { return ^crc32.Update(^seed, crc32.IEEETable, p) }

// Area is a byte range of a device: offset from the device's start and size in bytes.
type Area struct {
	Offset, Size uint64
}

// PVHeader is what a physical volume's label says about it.
type PVHeader struct {
	// UUID is the PV's id as LVM prints it (6-4-4-4-4-4-6 with dashes).
	UUID string
	// DeviceSize is the device size recorded at pvcreate (bytes); 0 when unknown.
	DeviceSize uint64
	// LabelSector is the sector (0-3) that holds the label.
	LabelSector int
	Data        []Area
	Metadata    []Area
}

// ReadLabel finds the LVM2 label in the first four sectors of a device of the given size
// and returns its PV header. A device without a label returns ErrNoLabel; a label whose
// checksum fails is treated as absent, as LVM does.
func ReadLabel(r io.ReaderAt, size int64) (*PVHeader, error) {
	if size < labelSectors*sectorSize {
		return nil, ErrNoLabel
	}
	buf := make([]byte, labelSectors*sectorSize)
	if err := readFull(r, buf, 0); err != nil {
		return nil, fmt.Errorf("read lvm label: %w", err)
	}
	for s := 0; s < labelSectors; s++ {
		h, ok := parseLabel(buf[s*sectorSize:(s+1)*sectorSize], s)
		if ok {
			return h, nil
		}
	}
	return nil, ErrNoLabel
}

// parseLabel decodes one sector's label_header and pv_header.
func parseLabel(sec []byte, n int) (*PVHeader, bool) {
	le := binary.LittleEndian
	if string(sec[:8]) != "LABELONE" || le.Uint64(sec[8:]) != uint64(n) {
		return nil, false
	}
	if crc(initialCRC, sec[20:]) != le.Uint32(sec[16:]) {
		return nil, false
	}
	if string(sec[24:32]) != "LVM2 001" {
		return nil, false
	}
	off := int(le.Uint32(sec[20:]))
	if off < 32 || off+idLen+8 > len(sec) {
		return nil, false
	}
	p := sec[off:]
	h := &PVHeader{UUID: formatUUID(p[:idLen]), DeviceSize: le.Uint64(p[idLen:]), LabelSector: n}
	p = p[idLen+8:]
	var ok bool
	if h.Data, p, ok = areaList(p); !ok {
		return nil, false
	}
	if h.Metadata, _, ok = areaList(p); !ok {
		return nil, false
	}
	return h, true
}

// areaList reads disk_locn entries up to the zero entry that ends the list.
func areaList(p []byte) ([]Area, []byte, bool) {
	var out []Area
	for {
		if len(p) < 16 {
			return nil, nil, false
		}
		a := Area{Offset: binary.LittleEndian.Uint64(p), Size: binary.LittleEndian.Uint64(p[8:])}
		p = p[16:]
		if a.Offset == 0 {
			return out, p, true
		}
		if len(out) == maxAreas {
			return nil, nil, false
		}
		out = append(out, a)
	}
}

// formatUUID prints a 32-character LVM id the way LVM does: 6-4-4-4-4-4-6.
func formatUUID(id []byte) string {
	var b strings.Builder
	for i, c := range id {
		if i == 6 || i == 10 || i == 14 || i == 18 || i == 22 || i == 26 {
			b.WriteByte('-')
		}
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ReadMetadata reads the text metadata of one metadata area: its header (magic, version,
// checksum), the first raw location and the text it points at, following the circular
// buffer's wraparound, checked against its CRC. ok is false when the area holds no
// metadata (a new PV without a VG, or an ignored copy).
func ReadMetadata(r io.ReaderAt, size int64, a Area) (text []byte, ok bool, err error) {
	if a.Size < 2*mdaHeaderSize || a.Offset > uint64(size) || a.Size > uint64(size)-a.Offset {
		return nil, false, fmt.Errorf("lvm metadata area at %d (%d bytes) is outside the %d-byte device", a.Offset, a.Size, size)
	}
	hdr := make([]byte, mdaHeaderSize)
	if err := readFull(r, hdr, int64(a.Offset)); err != nil {
		return nil, false, fmt.Errorf("read lvm metadata header: %w", err)
	}
	le := binary.LittleEndian
	if crc(initialCRC, hdr[4:]) != le.Uint32(hdr) {
		return nil, false, fmt.Errorf("lvm metadata header at %d: checksum mismatch", a.Offset)
	}
	if !bytes.Equal(hdr[4:20], []byte(mdaMagic)) {
		return nil, false, fmt.Errorf("lvm metadata header at %d: bad magic", a.Offset)
	}
	if v := le.Uint32(hdr[20:]); v != 1 {
		return nil, false, fmt.Errorf("lvm metadata header at %d: version %d is not supported", a.Offset, v)
	}
	if start := le.Uint64(hdr[24:]); start != a.Offset {
		return nil, false, fmt.Errorf("lvm metadata header at %d says it starts at %d", a.Offset, start)
	}
	mdaSize := le.Uint64(hdr[32:])
	if mdaSize != a.Size {
		return nil, false, fmt.Errorf("lvm metadata header at %d says its area is %d bytes, the label %d", a.Offset, mdaSize, a.Size)
	}
	// The first raw location is the committed metadata (the second, if any, a pending one).
	loc := hdr[40:]
	off, n, sum, flags := le.Uint64(loc), le.Uint64(loc[8:]), le.Uint32(loc[16:]), le.Uint32(loc[20:])
	if off == 0 || n == 0 || flags&rawLocnIgnored != 0 {
		return nil, false, nil
	}
	ring := mdaSize - mdaHeaderSize // the circular buffer follows the header
	if off < mdaHeaderSize || off >= mdaSize || n > ring {
		return nil, false, fmt.Errorf("lvm metadata at %d+%d does not fit its %d-byte area", off, n, mdaSize)
	}
	if n > MaxMetadataBytes {
		return nil, false, fmt.Errorf("lvm metadata of %d bytes is larger than the %d cairn reads", n, MaxMetadataBytes)
	}
	text = make([]byte, n)
	first := min(n, mdaSize-off)
	if err := readFull(r, text[:first], int64(a.Offset+off)); err != nil {
		return nil, false, fmt.Errorf("read lvm metadata: %w", err)
	}
	if first < n { // wrapped: the rest starts just after the header
		if err := readFull(r, text[first:], int64(a.Offset+mdaHeaderSize)); err != nil {
			return nil, false, fmt.Errorf("read lvm metadata: %w", err)
		}
	}
	if crc(initialCRC, text) != sum {
		return nil, false, fmt.Errorf("lvm metadata at %d: checksum mismatch", a.Offset+off)
	}
	// LVM writes a terminating NUL it counts in the size.
	text = bytes.TrimRight(text, "\x00")
	return text, true, nil
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("at offset %d: %w", off, err)
}
