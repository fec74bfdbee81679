//go:build linux

package blockio

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FIEMAP (linux/fiemap.h): the file system's map of a file's logical ranges to physical ones.
const (
	fsIocFiemap    = 0xC020660B // _IOWR('f', 11, struct fiemap)
	fiemapFlagSync = 0x1        // write dirty pages back before mapping

	extentLast        = 0x1
	extentUnknown     = 0x2
	extentDelalloc    = 0x4
	extentEncoded     = 0x8
	extentEncrypted   = 0x80
	extentNotAligned  = 0x100
	extentInline      = 0x200
	extentTail        = 0x400
	extentUnwritten   = 0x800
	extentMerged      = 0x1000
	extentShared      = 0x2000
	fiemapHeader      = 32
	fiemapExtentBytes = 56
	fiemapBatch       = 512
)

// untrusted are the extent flags under which a physical address does not name the file's
// bytes alone: data not yet placed, packed with other data, compressed or encrypted
// (extentUnknown, extentDelalloc, extentEncoded, extentEncrypted, extentNotAligned,
// extentInline, extentTail), and any flag a later kernel may add: only the four whose meaning
// leaves the address exact are trusted.
const untrusted = ^uint32(extentLast | extentUnwritten | extentMerged | extentShared)

// mapping is one FIEMAP extent.
type mapping struct {
	logical, physical, length int64
	flags                     uint32
}

// mappings reads a file's extents in batches, in logical order, up to size.
type mappings struct {
	f    *os.File
	size int64
	next int64 // where the next batch starts
	buf  []byte
	got  []mapping
	last bool
}

func newMappings(f *os.File, size int64) *mappings {
	return &mappings{f: f, size: size, buf: make([]byte, fiemapHeader+fiemapBatch*fiemapExtentBytes)}
}

// peek returns the next extent without consuming it; ok is false past the last one.
func (m *mappings) peek() (mapping, bool, error) {
	for len(m.got) == 0 {
		if m.last || m.next >= m.size {
			return mapping{}, false, nil
		}
		if err := m.fill(); err != nil {
			return mapping{}, false, err
		}
	}
	return m.got[0], true, nil
}

func (m *mappings) pop() { m.got = m.got[1:] }

func (m *mappings) fill() error {
	clear(m.buf[:fiemapHeader])
	binary.NativeEndian.PutUint64(m.buf[0:], uint64(m.next))
	binary.NativeEndian.PutUint64(m.buf[8:], uint64(m.size-m.next))
	binary.NativeEndian.PutUint32(m.buf[16:], fiemapFlagSync)
	binary.NativeEndian.PutUint32(m.buf[24:], fiemapBatch)
	err := control(m.f, func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fsIocFiemap, uintptr(unsafe.Pointer(&m.buf[0])))
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("FIEMAP of %s: %w", m.f.Name(), err)
	}
	n := int(binary.NativeEndian.Uint32(m.buf[20:]))
	if n == 0 {
		m.last = true
		return nil
	}
	for i := range min(n, fiemapBatch) {
		e := m.buf[fiemapHeader+i*fiemapExtentBytes:]
		x := mapping{
			logical:  int64(binary.NativeEndian.Uint64(e[0:])),
			physical: int64(binary.NativeEndian.Uint64(e[8:])),
			length:   int64(binary.NativeEndian.Uint64(e[16:])),
			flags:    binary.NativeEndian.Uint32(e[40:]),
		}
		if x.flags&extentLast != 0 {
			m.last = true
		}
		if x.length <= 0 || x.logical+x.length <= m.next {
			continue
		}
		m.next = x.logical + x.length
		if x.flags&extentUnwritten != 0 && x.flags&untrusted == 0 {
			continue // allocated but never written: reads as zeros, like a hole
		}
		if x.logical < m.size {
			m.got = append(m.got, x)
		}
	}
	return nil
}

// ReflinkDiff returns the ranges of the first size bytes of file that may differ from base, a
// reflink clone of an earlier state of it. Both are asked for their physical extents: a range
// is unchanged where both map it to the same physical bytes, shared, with nothing that makes
// an address less than the bytes' own (delayed allocation, inline, compressed or encrypted
// extents), or where both read as zeros without data (holes, unwritten extents: a clone does
// not share preallocated space). Copy-on-write never writes a shared
// block in place and a block one of them still holds is never reused, so the same physical
// bytes at the same offset are the same data. base must not be written while this runs; file
// may be (the image itself, when a base is brought forward in place): a write moves the
// range it writes to blocks base does not map, so it shows as changed from then on.
func ReflinkDiff(file, base string, size int64) (Changes, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, pathError("volume clone", file, err)
	}
	defer f.Close() // read-only
	b, err := os.Open(base)
	if err != nil {
		return nil, pathError("change-tracking base", base, err)
	}
	defer b.Close() // read-only
	return diffMappings(newMappings(f, size), newMappings(b, size), size)
}

// diffMappings sweeps both maps in logical order, one segment between extent boundaries at a
// time.
func diffMappings(a, b *mappings, size int64) (Changes, error) {
	var out Changes
	for pos := int64(0); pos < size; {
		ea, okA, err := nextAt(a, pos)
		if err != nil {
			return nil, err
		}
		eb, okB, err := nextAt(b, pos)
		if err != nil {
			return nil, err
		}
		inA, inB := okA && ea.logical <= pos, okB && eb.logical <= pos
		end := size
		for _, x := range []struct {
			ok, in bool
			m      mapping
		}{{okA, inA, ea}, {okB, inB, eb}} {
			switch {
			case x.in:
				end = min(end, x.m.logical+x.m.length)
			case x.ok:
				end = min(end, x.m.logical)
			}
		}
		switch {
		case !inA && !inB: // a hole in both
		case inA != inB:
			out = out.add(pos, end)
		case !sameBytes(ea, eb, pos):
			out = out.add(pos, end)
		}
		pos = end
	}
	return out, nil
}

// nextAt drops the extents that end at or before pos and returns the next one.
func nextAt(m *mappings, pos int64) (mapping, bool, error) {
	for {
		x, ok, err := m.peek()
		if err != nil || !ok {
			return x, ok, err
		}
		if x.logical+x.length > pos {
			return x, true, nil
		}
		m.pop()
	}
}

// sameBytes reports whether a and b map offset pos (inside both) to the same physical bytes in
// a way that proves the contents equal from pos to the end of the shorter one.
func sameBytes(a, b mapping, pos int64) bool {
	if (a.flags|b.flags)&untrusted != 0 || a.flags&b.flags&extentShared == 0 {
		return false
	}
	return a.physical+(pos-a.logical) == b.physical+(pos-b.logical)
}
