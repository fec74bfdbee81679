package slab

import (
	"sync"
	"unsafe"
)

// hugePage is the unit buffers are rounded up to: one transparent huge page on x86-64 and
// arm64.
const hugePage = 2 << 20

// DefaultKeep is how many bytes of returned buffers a process keeps backed by memory.
const DefaultKeep = 96 << 20

// The stock: returned buffers by rounded size. Warm ones keep their memory; past the bound a
// returned buffer goes cold: its memory goes back to the system but its mapping stays, so a
// stale reference reads zeros instead of faulting, and the next Get of its size reuses it.
// A mapping is never unmapped; the address space the process holds is its peak of buffers in
// use at once.
var stock = struct {
	sync.Mutex
	warm map[int][][]byte
	cold map[int][][]byte
	kept int // bytes in warm
	keep int
}{warm: map[int][][]byte{}, cold: map[int][][]byte{}, keep: DefaultKeep}

// Get returns a buffer of length and capacity n, page-aligned (as O_DIRECT needs). Its
// contents are undefined.
func Get(n int) []byte {
	if n <= 0 {
		return nil
	}
	size := roundUp(n)
	stock.Lock()
	if b, ok := pop(stock.warm, size); ok {
		stock.kept -= size
		stock.Unlock()
		return b[:n:n]
	}
	b, ok := pop(stock.cold, size)
	stock.Unlock()
	if !ok {
		b = alloc(size)
	}
	return b[:n:n]
}

func pop(m map[int][][]byte, size int) ([]byte, bool) {
	l := m[size]
	if len(l) == 0 {
		return nil, false
	}
	b := l[len(l)-1]
	m[size] = l[:len(l)-1]
	return b, true
}

// Put returns a buffer Get gave (any length of it, from its start); the caller must not touch
// it again. Anything else (a slice that append moved to the heap) is left to the collector.
func Put(b []byte) {
	b, ok := whole(b)
	if !ok {
		return
	}
	size := len(b)
	stock.Lock()
	if stock.kept+size <= stock.keep {
		stock.warm[size] = append(stock.warm[size], b)
		stock.kept += size
		stock.Unlock()
		return
	}
	stock.Unlock()
	cool(b)
}

// cool gives a buffer's memory back and stocks it cold; a heap buffer goes to the collector.
func cool(b []byte) {
	if !discard(b) {
		forget(&b[0])
		return
	}
	stock.Lock()
	stock.cold[len(b)] = append(stock.cold[len(b)], b)
	stock.Unlock()
}

// SetKeep bounds the bytes of warm buffers (0: none) and cools what is over the bound.
func SetKeep(n int) {
	stock.Lock()
	stock.keep = n
	var drop [][]byte
	for size, l := range stock.warm {
		for stock.kept > stock.keep && len(l) > 0 {
			drop = append(drop, l[len(l)-1])
			l = l[:len(l)-1]
			stock.kept -= size
		}
		stock.warm[size] = l
	}
	stock.Unlock()
	for _, b := range drop {
		cool(b)
	}
}

// Kept reports the bytes of warm buffers held for reuse.
func Kept() int {
	stock.Lock()
	defer stock.Unlock()
	return stock.kept
}

func roundUp(n int) int {
	return (n + hugePage - 1) / hugePage * hugePage
}

// Release returns a buffer Get gave, as Put does, but gives its memory back at once instead
// of keeping it warm: for a user that needs a large buffer once (scrypt's work area), whose
// size no later Get is likely to ask for, and whose contents must not outlive it (the memory
// of a mapped buffer reads as zeros afterwards; a heap one is cleared).
func Release(b []byte) {
	b, ok := whole(b)
	if !ok {
		return
	}
	if !isMapped(&b[0]) {
		clear(b)
	}
	cool(b)
}

// whole returns the whole buffer b starts (Get gives out its first n bytes), if Get gave it.
func whole(b []byte) ([]byte, bool) {
	if cap(b) == 0 {
		return nil, false
	}
	b = b[:1]
	size, ok := owned(&b[0])
	if !ok {
		return nil, false
	}
	return unsafe.Slice(&b[0], size), true
}
