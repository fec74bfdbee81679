package repo

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

const testBlock = 1024

func testAddr(i int) Address {
	var a Address
	a[0], a[1], a[2] = 1, byte(i), byte(i>>8)
	return a
}

// fill is block i's content, decoded into buf as a load does.
func fill(buf []byte, i int) []byte {
	if cap(buf) < testBlock {
		buf = make([]byte, 0, testBlock)
	}
	buf = buf[:testBlock]
	for j := range buf {
		buf[j] = byte(i*7 + j)
	}
	return buf
}

// A pinned block's buffer is not reused while it is pinned, even once evicted; at its release
// it is, for the next load.
func TestChunkCacheReusesOnlyReleased(t *testing.T) {
	c := newChunkCache(3*(testBlock+64), testBlock)
	load := func(i int) func([]byte) ([]byte, error) {
		return func(buf []byte) ([]byte, error) { return fill(buf, i), nil }
	}
	a, err := c.get(testAddr(0), load(0))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ { // evicts block 0, which stays pinned
		ch, err := c.get(testAddr(i), load(i))
		if err != nil {
			t.Fatal(err)
		}
		c.release(ch)
	}
	if c.contains(testAddr(0)) {
		t.Fatal("block 0 still cached after four more blocks in a cache of three")
	}
	for _, b := range c.free {
		if &b[:1][0] == &a.data[0] {
			t.Fatal("an evicted block's buffer was reused while pinned")
		}
	}
	if !bytes.Equal(a.data, fill(nil, 0)) {
		t.Fatal("a pinned block's bytes changed")
	}
	c.release(a)
	reused := false
	for _, b := range c.free {
		reused = reused || &b[:1][0] == &a.data[0]
	}
	if !reused {
		t.Fatal("a released, evicted block's buffer is not kept for reuse")
	}
	// A failed load gives its buffer back and returns no chunk.
	if _, err := c.get(testAddr(9), func([]byte) ([]byte, error) { return nil, errors.New("damaged") }); err == nil {
		t.Fatal("a failed load succeeded")
	}
}

// Readers on many goroutines, a cache of eight blocks over sixty-four, waiting while pinned:
// every reader sees its own block's bytes to the end of its pin, and no pin is left over
// (run with -race).
func TestChunkCacheConcurrentPins(t *testing.T) {
	c := newChunkCache(8*(testBlock+64), testBlock)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 400 {
				i := rng.IntN(64)
				ch, err := c.get(testAddr(i), func(buf []byte) ([]byte, error) {
					if rng.IntN(10) == 0 {
						time.Sleep(50 * time.Microsecond) // let waiters pile up
					}
					return fill(buf, i), nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				want := fill(nil, i)
				if !bytes.Equal(ch.data, want) {
					t.Errorf("block %d: wrong bytes at pin", i)
				}
				if rng.IntN(4) == 0 {
					time.Sleep(20 * time.Microsecond) // others evict and load meanwhile
				}
				if !bytes.Equal(ch.data, want) {
					t.Errorf("block %d: bytes changed while pinned", i)
				}
				c.release(ch)
			}
		})
	}
	wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.order.Front(); el != nil; el = el.Next() {
		if ch := el.Value.(*chunk); ch.refs != 0 {
			t.Errorf("block %x still pinned %d times after every reader released it", ch.addr[:3], ch.refs)
		}
	}
	if len(c.loading) != 0 {
		t.Errorf("%d loads still registered", len(c.loading))
	}
}

// Buffers given back beyond maxFreeChunks are kept while cached blocks and free buffers fit
// in the cache's size together; as the cache fills, the free list gives that room back.
func TestChunkCacheFreeListWithinCacheSize(t *testing.T) {
	const blocks = 600
	c := newChunkCache(blocks*(testBlock+64), testBlock)
	c.mu.Lock()
	for range blocks + 100 {
		c.putBuf(make([]byte, 0, testBlock))
	}
	kept := len(c.free)
	c.mu.Unlock()
	if kept != blocks {
		t.Fatalf("free list kept %d buffers in an empty cache of %d blocks, want %d", kept, blocks, blocks)
	}
	for i := range blocks - 100 { // blocks decoded elsewhere (prefetched) fill the cache
		c.add(testAddr(i), fill(nil, i), nil)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := len(c.free); n != maxFreeChunks {
		t.Fatalf("free list holds %d buffers with the cache at %d of %d blocks, want %d", n, len(c.items), blocks, maxFreeChunks)
	}
	if c.used+int64(len(c.free)-maxFreeChunks)*(testBlock+64) > c.max {
		t.Fatal("cached blocks and free buffers past maxFreeChunks exceed the cache's size")
	}
}
