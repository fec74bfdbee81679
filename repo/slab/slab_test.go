package slab

import (
	"runtime"
	"testing"
	"unsafe"
)

func TestGetPutReuses(t *testing.T) {
	SetKeep(0) // what an earlier run (-count) kept
	SetKeep(DefaultKeep)
	t.Cleanup(func() { SetKeep(DefaultKeep) })
	a := Get(5 << 20)
	if len(a) != 5<<20 || cap(a) != 5<<20 {
		t.Fatalf("Get(5 MiB): len %d cap %d", len(a), cap(a))
	}
	if p := uintptr(unsafe.Pointer(&a[0])); p%4096 != 0 {
		t.Fatalf("buffer at %#x is not page-aligned", p)
	}
	for i := range a { // the whole buffer is usable
		a[i] = byte(i)
	}
	first := &a[0]
	Put(a[:0])
	if Kept() != 6<<20 {
		t.Fatalf("kept %d bytes after one 5 MiB buffer, want 6 MiB (rounded to huge pages)", Kept())
	}
	b := Get(6 << 20) // same rounded size: the stocked buffer
	if &b[0] != first {
		t.Error("a buffer of the same rounded size was not reused")
	}
	if b[1] != 1 {
		t.Error("a reused buffer lost its contents (Get promises nothing, but the same memory should come back)")
	}
	if Kept() != 0 {
		t.Errorf("kept %d after taking the buffer back", Kept())
	}
	Put(b)
}

func TestPutBoundAndForeign(t *testing.T) {
	SetKeep(4 << 20)
	t.Cleanup(func() { SetKeep(DefaultKeep) })
	x, y, z := Get(2<<20), Get(2<<20), Get(2<<20)
	for _, b := range [][]byte{x, y, z} {
		b[0] = 7
	}
	Put(x)
	Put(y)
	Put(z) // over the bound: cold
	if Kept() != 4<<20 {
		t.Errorf("kept %d, want the 4 MiB bound", Kept())
	}
	Put(make([]byte, 3<<20)) // not from Get: ignored
	if Kept() != 4<<20 {
		t.Errorf("a foreign slice was stocked: kept %d", Kept())
	}
	SetKeep(0)
	if Kept() != 0 {
		t.Errorf("SetKeep(0) left %d kept", Kept())
	}
	// Cold buffers come back before new ones, their memory given back (zeros) on Linux.
	seen := map[*byte]bool{&x[0]: true, &y[0]: true, &z[0]: true}
	for range 3 {
		b := Get(2 << 20)
		if !seen[&b[0]] {
			t.Error("a new buffer was mapped while cold ones of the size were stocked")
		}
		if runtime.GOOS == "linux" && b[0] != 0 {
			t.Error("a cold buffer kept its memory")
		}
		defer Put(b)
	}
}

func TestLenderTakesBackWhatIsOut(t *testing.T) {
	SetKeep(DefaultKeep)
	SetKeep(0) // start from an empty warm stock
	SetKeep(DefaultKeep)
	var l Lender
	a, b := l.Get(1<<20), l.Get(3<<20)
	l.Put(a)
	if Kept() != 2<<20 {
		t.Fatalf("kept %d after one return, want 2 MiB", Kept())
	}
	l.Put(make([]byte, 10)) // not lent: ignored
	l.Close()
	if Kept() != 6<<20 {
		t.Errorf("kept %d after Close, want 6 MiB (the buffer never returned came back)", Kept())
	}
	_ = b
	if l.Get(0) != nil {
		t.Error("Get(0) gave a buffer")
	}
	l.Close()
}

// Release gives a buffer's memory back at once however much room the stock has, and what it
// held is gone: the same mapping, taken again, reads zeros (a key derivation's work area
// must not outlive it).
func TestReleaseGivesMemoryBack(t *testing.T) {
	SetKeep(0)
	SetKeep(DefaultKeep)
	t.Cleanup(func() { SetKeep(DefaultKeep) })
	a := Get(10 << 20)
	for i := range a {
		a[i] = 0xa5
	}
	first := &a[0]
	Release(a)
	if Kept() != 0 {
		t.Fatalf("kept %d bytes after Release, want none", Kept())
	}
	b := Get(10 << 20)
	if &b[0] == first {
		for i, c := range b {
			if c != 0 {
				t.Fatalf("byte %d of a released buffer still reads %#x", i, c)
			}
		}
	} else if runtime.GOOS == "linux" {
		t.Error("a released buffer was not reused by the next Get of its size")
	}
	Release(b)
	Release(make([]byte, 3<<20)) // not from Get: ignored
	Release(nil)
}
