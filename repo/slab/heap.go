package slab

import (
	"sync"
	"unsafe"
)

// buffers records every buffer alloc made, by its first byte: its size, and whether it is a
// mapping (release unmaps only those).
var buffers = struct {
	sync.Mutex
	m map[*byte]buffer
}{m: map[*byte]buffer{}}

type buffer struct {
	size   int
	mapped bool
}

func record(b []byte, mapped bool) []byte {
	buffers.Lock()
	buffers.m[&b[0]] = buffer{size: len(b), mapped: mapped}
	buffers.Unlock()
	return b
}

// owned reports the size of the buffer starting at p, if alloc made it.
func owned(p *byte) (int, bool) {
	buffers.Lock()
	defer buffers.Unlock()
	b, ok := buffers.m[p]
	return b.size, ok
}

// isMapped reports whether the buffer starting at p is a mapping.
func isMapped(p *byte) bool {
	buffers.Lock()
	defer buffers.Unlock()
	return buffers.m[p].mapped
}

// forget drops a heap buffer's record, leaving it to the collector.
func forget(p *byte) {
	buffers.Lock()
	defer buffers.Unlock()
	delete(buffers.m, p)
}

// heapAlloc returns a page-aligned buffer of size bytes from the Go heap, recorded.
func heapAlloc(size int) []byte { return record(Aligned(size), false) }

// Aligned returns a 4096-byte aligned buffer of n bytes from the Go heap (O_DIRECT reads and
// writes need one), for a user that keeps it: the collector frees it, slab keeps no record.
func Aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := (4096 - int(uintptr(unsafe.Pointer(unsafe.SliceData(b)))&4095)) & 4095
	return b[off : off+n : off+n]
}
