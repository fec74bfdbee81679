package repo

import (
	"container/list"
	"sync"
)

// cache is a byte-bounded LRU that loads each key once however many callers ask for it at the
// same time (the tree nodes'; data blocks have chunkCache, which also pins and reuses). Values
// must not be modified by callers.
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
	done chan struct{}
	val  V
	err  error
}

func newCache[K comparable, V any](maxBytes int64, cost func(V) int64) *cache[K, V] {
	return &cache[K, V]{max: maxBytes, order: list.New(), items: map[K]*list.Element{},
		loading: map[K]*cacheCall[V]{}, cost: cost}
}

// get returns the cached value or loads it with load, once for all concurrent callers.
func (c *cache[K, V]) get(key K, load func() (V, error)) (V, error) {
	c.mu.Lock()
	if el, ok := c.items[key]; ok {
		c.order.MoveToFront(el)
		v := el.Value.(*cacheEntry[K, V]).val
		c.mu.Unlock()
		return v, nil
	}
	if call, ok := c.loading[key]; ok {
		c.mu.Unlock()
		<-call.done
		return call.val, call.err
	}
	call := &cacheCall[V]{done: make(chan struct{})}
	c.loading[key] = call
	c.mu.Unlock()

	call.val, call.err = load()

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
