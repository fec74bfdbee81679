package blockio

import "unsafe"

// Alignment is the memory, offset and length alignment that O_DIRECT writes use. 4096 covers
// both 512-byte and 4K-sector devices.
const Alignment = 4096

// AlignedBuffer returns an n-byte slice whose first byte sits on an Alignment boundary, so a
// Target can hand it to the device with O_DIRECT. Go's heap does not move objects, so the
// alignment holds for the slice's lifetime.
func AlignedBuffer(n int) []byte {
	buf := make([]byte, n+Alignment)
	skip := 0
	if rem := int(uintptr(unsafe.Pointer(&buf[0])) & (Alignment - 1)); rem != 0 {
		skip = Alignment - rem
	}
	return buf[skip : skip+n : skip+n]
}

// isAligned reports whether p and off satisfy O_DIRECT with the given block size.
func isAligned(p []byte, off, block int64) bool {
	if len(p) == 0 || off%block != 0 || int64(len(p))%block != 0 {
		return false
	}
	return uintptr(unsafe.Pointer(&p[0]))&(Alignment-1) == 0
}
