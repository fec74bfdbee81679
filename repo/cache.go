package repo

import (
	"container/list"
	"context"
	"errors"
	"sync"
)

// cache is a byte-bounded LRU that loads each key once however many callers ask for it at the
// same time (the tree nodes'; data blocks have chunkCache, which also pins and reuses). Values
// must not be modified by callers.
//
// A load that fails because its caller was cancelled is not a result for the callers waiting
// for it: each waiter whose own context is alive loads again (one of them; the others wait for
// that load), so a cancelled restore does not fail an incremental reading the same block map.
// A waiter whose context ends stops waiting with its own context's error.
type cache[K comparable, V any] struct {
	mu      sync.Mutex
	max     int64
	used    int64
	order   *list.List // front = most recent; elements hold *cacheEntry
	items   map[K]*list.Element
	loading map[K]*cacheCall[V]
	cost    func(V) int64
}

type cacheEntry[K comparable, V any] struct {
	key K
	val V
}

type cacheCall[V any] struct {
	done      chan struct{}
	val       V
	err       error
	cancelled bool // err is its loader's cancellation: waiters load again
}

func newCache[K comparable, V any](maxBytes int64, cost func(V) int64) *cache[K, V] {
	return &cache[K, V]{max: maxBytes, order: list.New(), items: map[K]*list.Element{},
		loading: map[K]*cacheCall[V]{}, cost: cost}
}

// get returns the cached value or loads it with load(ctx), once for all concurrent callers.
func (c *cache[K, V]) get(ctx context.Context, key K, load func(context.Context) (V, error)) (V, error) {
	var zero V
	c.mu.Lock()
	for {
		if el, ok := c.items[key]; ok {
			c.order.MoveToFront(el)
			v := el.Value.(*cacheEntry[K, V]).val
			c.mu.Unlock()
			return v, nil
		}
		call, ok := c.loading[key]
		if !ok {
			break
		}
		c.mu.Unlock()
		select {
		case <-call.done:
		case <-ctx.Done():
			return zero, ctx.Err()
		}
		if !call.cancelled {
			return call.val, call.err
		}
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		c.mu.Lock() // its loader was cancelled, this caller was not: load again
	}
	call := &cacheCall[V]{done: make(chan struct{})}
	c.loading[key] = call
	c.mu.Unlock()

	call.val, call.err = load(ctx)
	call.cancelled = cancelledBy(ctx, call.err)

	c.mu.Lock()
	delete(c.loading, key)
	if call.err == nil && c.max > 0 {
		cost := c.cost(call.val)
		if cost <= c.max/4 {
			c.items[key] = c.order.PushFront(&cacheEntry[K, V]{key, call.val})
			c.used += cost
			for c.used > c.max {
				el := c.order.Back()
				e := el.Value.(*cacheEntry[K, V])
				c.order.Remove(el)
				delete(c.items, e.key)
				c.used -= c.cost(e.val)
			}
		}
	}
	c.mu.Unlock()
	close(call.done)
	return call.val, call.err
}

// cancelledBy reports whether err, from a load run with ctx, is that ctx's end rather than
// the load's own failure (damage, a missing pack, an outage), which the load's waiters share.
func cancelledBy(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil &&
		(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded))
}
