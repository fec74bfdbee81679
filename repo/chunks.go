package repo

import (
	"container/list"
	"context"
	"sync"
)

// chunkCache holds decoded data blocks for readers of images (the mount, NBD exports): a
// byte-bounded LRU that loads each block once however many readers ask for it at the same
// time, like cache, with two differences that keep a reader of gigabytes in the same few MiB:
//
//   - A reader holds a *chunk pinned while it copies from it (get pins, release unpins).
//   - A block's buffer is reused for another block's decode once it is out of the cache
//     (evicted, or never cached) and no reader has it pinned; before, every decoded block was
//     a fresh heap buffer, and a mount reading its image faulted in its whole heap limit's
//     worth of pages (47,543 faults for make bench's 1 GiB, a third of its CPU time).
//
// Every change to a chunk's pins and to whether it is cached happens under mu, so a buffer
// goes to the free list exactly once, when both are gone: then nobody holds it.
//
// As in cache, a load that fails because its reader was cancelled is not a result for the
// readers waiting for it: those whose contexts are alive load again, and a reader whose
// context ends stops waiting.
type chunkCache struct {
	mu      sync.Mutex
	max     int64
	used    int64
	order   *list.List // front = most recent; elements hold *chunk
	items   map[Address]*list.Element
	loading map[Address]*chunkCall
	hits    int64
	misses  int64
	bufCap  int      // the capacity of a reusable buffer: the repository's block size
	free    [][]byte // reusable buffers, each of capacity bufCap
}

// chunk is one decoded block. Its data must not be modified, nor read after release.
type chunk struct {
	addr   Address
	data   []byte
	refs   int  // readers that have it pinned; under chunkCache.mu
	cached bool // in the cache's items; under chunkCache.mu
}

// chunkCall is a load in progress; the readers waiting for it are counted, and the chunk it
// produces comes pinned once for each of them and once for the loader. A reader that stops
// waiting (its context ended) counts itself out before the load ends or, once it has ended,
// takes its pin as any waiter does: done is closed under mu, in the same hold that counts the
// pins.
type chunkCall struct {
	done      chan struct{}
	c         *chunk
	err       error
	cancelled bool // err is its loader's cancellation: waiters load again
	waiters   int  // under chunkCache.mu
}

// maxFreeChunks is the free list's size that the cache's size does not bound (see freeFull): a
// reader evicts about one block per block it loads, so a few hundred cover the loads in
// flight.
const maxFreeChunks = 256

func newChunkCache(maxBytes int64, blockSize int) *chunkCache {
	return &chunkCache{max: maxBytes, order: list.New(), items: map[Address]*list.Element{},
		loading: map[Address]*chunkCall{}, bufCap: blockSize}
}

// chunkOverhead is what a cached block costs beyond its buffer: its chunk, list element and
// map entry.
const chunkOverhead = 64

func chunkCost(b []byte) int64 { return int64(cap(b)) + chunkOverhead }

// get returns the block addr pinned, loading it with load(ctx, buf) (buf a reusable buffer,
// possibly nil, to decode into) once for all concurrent callers. The caller must release it.
func (c *chunkCache) get(ctx context.Context, addr Address, load func(ctx context.Context, buf []byte) ([]byte, error)) (*chunk, error) {
	c.mu.Lock()
	for {
		if el, ok := c.items[addr]; ok {
			c.order.MoveToFront(el)
			c.hits++
			ch := el.Value.(*chunk)
			ch.refs++
			c.mu.Unlock()
			return ch, nil
		}
		call, ok := c.loading[addr]
		if !ok {
			break
		}
		call.waiters++
		c.mu.Unlock()
		if !c.wait(ctx, call) {
			return nil, ctx.Err()
		}
		if !call.cancelled {
			return call.c, call.err // pinned for this waiter by the loader
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		c.mu.Lock() // its loader was cancelled, this reader was not: load again
	}
	c.misses++
	call := &chunkCall{done: make(chan struct{})}
	c.loading[addr] = call
	buf := c.takeBuf()
	c.mu.Unlock()

	data, err := load(ctx, buf)

	c.mu.Lock()
	delete(c.loading, addr)
	if err != nil {
		call.err = err
		call.cancelled = cancelledBy(ctx, err)
		c.putBuf(buf)
	} else {
		if cap(buf) > 0 && (cap(data) == 0 || &data[:1][0] != &buf[:1][0]) {
			c.putBuf(buf) // load decoded elsewhere
		}
		call.c = &chunk{addr: addr, data: data, refs: 1 + call.waiters}
		c.insert(call.c)
	}
	close(call.done)
	c.mu.Unlock()
	return call.c, call.err
}

// wait waits for call to end and reports true, or reports false once ctx ends first; then the
// reader is no longer counted among call's waiters, so no pin is left for it.
func (c *chunkCache) wait(ctx context.Context, call *chunkCall) bool {
	select {
	case <-call.done:
		return true
	case <-ctx.Done():
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-call.done:
		return true // ended meanwhile, with a pin for this reader
	default:
		call.waiters--
		return false
	}
}

// release unpins a chunk get returned; nil (a failed get) is ignored.
func (c *chunkCache) release(ch *chunk) {
	if ch == nil {
		return
	}
	c.mu.Lock()
	ch.refs--
	if ch.refs == 0 && !ch.cached {
		c.putBuf(ch.data)
	}
	c.mu.Unlock()
}

// releaseConsumed is release for a block a sequential reader has read to its end: the
// reader will not come back for it (the kernel's page cache keeps what it read), so at its
// last release it leaves the cache and its buffer goes to the next load. Aged out through the
// LRU instead, a sequential read of a volume filled the whole cache with fresh buffers, each
// page touched for the first time (a 1 GiB read allocated 138 MB of block buffers, and set
// the mount's peak RSS).
func (c *chunkCache) releaseConsumed(ch *chunk) {
	if ch == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch.refs--; ch.refs > 0 {
		return
	}
	if ch.cached {
		c.uncache(ch)
	}
	c.putBuf(ch.data)
}

// uncache takes a cached chunk out of the cache; its buffer is the caller's to give back once
// unpinned. Called with mu held.
func (c *chunkCache) uncache(ch *chunk) {
	c.order.Remove(c.items[ch.addr])
	delete(c.items, ch.addr)
	c.used -= chunkCost(ch.data)
	ch.cached = false
}

// add caches a block loaded elsewhere (a prefetch), unless it is cached or being loaded or
// unwanted reports true (nil: wanted); the caller gives data up either way. unwanted runs
// with mu held, so a reader that releases the block as consumed (releaseConsumed) after it
// has made unwanted true cannot see the block cached again behind it.
func (c *chunkCache) add(addr Address, data []byte, unwanted func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, cached := c.items[addr]
	_, loading := c.loading[addr]
	if cached || loading || unwanted != nil && unwanted() {
		c.putBuf(data)
		return
	}
	c.insert(&chunk{addr: addr, data: data})
}

// insert caches ch if it fits, evicting the least recently used; a chunk that does not fit
// stays uncached and goes back to the free list at its last release. Called with mu held.
func (c *chunkCache) insert(ch *chunk) {
	cost := chunkCost(ch.data)
	if c.max == 0 || cost > c.max/4 {
		if ch.refs == 0 {
			c.putBuf(ch.data)
		}
		return
	}
	ch.cached = true
	c.items[ch.addr] = c.order.PushFront(ch)
	c.used += cost
	for c.used > c.max {
		old := c.order.Back().Value.(*chunk)
		c.uncache(old)
		if old.refs == 0 {
			c.putBuf(old.data)
		}
	}
	for c.freeFull(len(c.free)) { // the cache grew into the free list's room
		c.takeBuf()
	}
}

// buffer returns a reusable buffer (length 0) to decode a block into, or nil.
func (c *chunkCache) buffer() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.takeBuf()
}

// takeBuf returns a reusable buffer (length 0), or nil. Called with mu held.
func (c *chunkCache) takeBuf() []byte {
	n := len(c.free)
	if n == 0 {
		return nil
	}
	b := c.free[n-1]
	c.free[n-1] = nil
	c.free = c.free[:n-1]
	return b
}

// putBuf keeps b for reuse if it is a block buffer and the free list has room. Called with mu
// held, and only for a buffer nobody else holds.
func (c *chunkCache) putBuf(b []byte) {
	if cap(b) != c.bufCap || c.bufCap == 0 || c.freeFull(len(c.free)+1) {
		return
	}
	c.free = append(c.free, b[:0])
}

// freeFull reports whether n free buffers are more than the free list keeps: maxFreeChunks,
// or more while cached blocks and free buffers together fit in the cache's size. A sequential
// reader releases a read's blocks at once and loads the next window in bursts of hundreds; a
// free list of only maxFreeChunks dropped the one burst's buffers to the collector and
// allocated the next's afresh (88 MB per GiB read). Called with mu held.
func (c *chunkCache) freeFull(n int) bool {
	return n > maxFreeChunks && c.used+int64(n)*(int64(c.bufCap)+chunkOverhead) > c.max
}

// contains reports whether addr is cached, without loading it.
func (c *chunkCache) contains(addr Address) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.items[addr]
	return ok
}

// stats returns hit and miss counts.
func (c *chunkCache) stats() (hits, misses int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}
