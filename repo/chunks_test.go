package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
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
	ctx := context.Background()
	load := func(i int) func(context.Context, []byte) ([]byte, error) {
		return func(_ context.Context, buf []byte) ([]byte, error) { return fill(buf, i), nil }
	}
	a, err := c.get(ctx, testAddr(0), load(0))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ { // evicts block 0, which stays pinned
		ch, err := c.get(ctx, testAddr(i), load(i))
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
	if _, err := c.get(ctx, testAddr(9), func(context.Context, []byte) ([]byte, error) { return nil, errors.New("damaged") }); err == nil {
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
				ch, err := c.get(context.Background(), testAddr(i), func(_ context.Context, buf []byte) ([]byte, error) {
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

// A load cancelled by its reader is not the result of the readers waiting for it: a waiter
// whose context is alive loads again and gets the block, pinned once; a waiter whose context
// ends stops waiting at once, while the load goes on, and is left no pin. A load's own
// failure is still every waiter's, without a second load.
func TestChunkCacheWaitersOfACancelledLoad(t *testing.T) {
	c := newChunkCache(8*(testBlock+64), testBlock)
	waiting := func(addr Address, n int) { // until n readers wait for addr's load
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			c.mu.Lock()
			call := c.loading[addr]
			ok := call != nil && call.waiters == n
			c.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("block %x: not %d waiters after 10 s", addr[:3], n)
			}
		}
	}
	type result struct {
		ch  *chunk
		err error
	}
	get := func(ctx context.Context, addr Address, load func(context.Context, []byte) ([]byte, error)) chan result {
		res := make(chan result, 1)
		go func() {
			ch, err := c.get(ctx, addr, load)
			res <- result{ch, err}
		}()
		return res
	}
	var loads atomic.Int32
	held := make(chan struct{})
	load := func(ctx context.Context, buf []byte) ([]byte, error) {
		if loads.Add(1) == 1 { // the first load lasts until its reader is cancelled
			close(held)
			<-ctx.Done()
			return nil, fmt.Errorf("blob %x: %w", testAddr(1).Short(), ctx.Err())
		}
		return fill(buf, 1), nil
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	ctxC, cancelC := context.WithCancel(context.Background())
	defer cancelA()
	a := get(ctxA, testAddr(1), load)
	<-held
	b := get(context.Background(), testAddr(1), load)
	cc := get(ctxC, testAddr(1), load)
	waiting(testAddr(1), 2)
	cancelC()
	select {
	case r := <-cc:
		if r.ch != nil || !errors.Is(r.err, context.Canceled) {
			t.Fatalf("a waiter whose context ended: %v, %v; want no block and context canceled", r.ch, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter whose context ended still waits for the load")
	}
	waiting(testAddr(1), 1)
	cancelA()
	if r := <-a; r.ch != nil || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the cancelled loader: %v, %v; want no block and context canceled", r.ch, r.err)
	}
	r := <-b
	if r.err != nil {
		t.Fatalf("a waiter whose context is alive, its loader cancelled: %v", r.err)
	}
	if !bytes.Equal(r.ch.data, fill(nil, 1)) {
		t.Fatal("a waiter that loaded again got wrong bytes")
	}
	if n := loads.Load(); n != 2 {
		t.Fatalf("%d loads, want 2: the cancelled one and the waiter's", n)
	}
	c.mu.Lock()
	refs := r.ch.refs
	c.mu.Unlock()
	if refs != 1 {
		t.Fatalf("the block is pinned %d times with one reader holding it", refs)
	}
	c.release(r.ch)

	loads.Store(0)
	failing := make(chan struct{})
	damaged := func(context.Context, []byte) ([]byte, error) {
		loads.Add(1)
		<-failing
		return nil, errors.New("checksum mismatch")
	}
	a = get(context.Background(), testAddr(2), damaged)
	waiting(testAddr(2), 0) // the load has begun
	b = get(context.Background(), testAddr(2), damaged)
	waiting(testAddr(2), 1)
	close(failing)
	for _, res := range []chan result{a, b} {
		if r := <-res; r.err == nil || r.err.Error() != "checksum mismatch" {
			t.Fatalf("a reader of a damaged block: %v, want checksum mismatch", r.err)
		}
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("a damaged block was loaded %d times, want once for both readers", n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.loading) != 0 {
		t.Errorf("%d loads still registered", len(c.loading))
	}
}
