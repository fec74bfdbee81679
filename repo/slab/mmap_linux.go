package slab

import (
	"syscall"
	"unsafe"
)

// alloc maps size bytes (a multiple of hugePage) aligned to a huge page and asks for huge
// pages; if the kernel refuses the mapping, the buffer comes from the Go heap instead.
func alloc(size int) []byte {
	m, err := syscall.Mmap(-1, 0, size+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return heapAlloc(size)
	}
	// Trim to a huge-page-aligned window: the head and tail go back at once (nothing can
	// refer to them yet).
	off := (hugePage - int(uintptr(unsafe.Pointer(&m[0]))%hugePage)) % hugePage
	if off > 0 {
		_ = syscall.Munmap(m[:off:off])
	}
	if tail := m[off+size:]; len(tail) > 0 {
		_ = syscall.Munmap(tail)
	}
	b := m[off : off+size : off+size]
	_ = syscall.Madvise(b, 14) // MADV_HUGEPAGE; without it (THP off) the buffer still works
	return record(b, true)
}

// discard gives a mapped buffer's memory back to the system, keeping the mapping (it then
// reads as zeros); it reports false for a heap buffer.
func discard(b []byte) bool {
	if !isMapped(&b[0]) {
		return false
	}
	_ = syscall.Madvise(b, syscall.MADV_DONTNEED)
	return true
}
