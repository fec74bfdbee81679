package slab

import "sync"

// Lender hands out buffers for one task and takes back, at Close, every one not yet
// returned: whatever path the task ends by, nothing leaks. Close must come after every user of
// the buffers has stopped.
type Lender struct {
	mu  sync.Mutex
	out map[*byte][]byte
}

// Get is slab.Get, recorded.
func (l *Lender) Get(n int) []byte {
	b := Get(n)
	if b == nil {
		return nil
	}
	l.mu.Lock()
	if l.out == nil {
		l.out = map[*byte][]byte{}
	}
	l.out[&b[:1][0]] = b
	l.mu.Unlock()
	return b
}

// Put is slab.Put of a buffer this lender gave; anything else is ignored.
func (l *Lender) Put(b []byte) {
	if cap(b) == 0 {
		return
	}
	p := &b[:1][0]
	l.mu.Lock()
	_, ok := l.out[p]
	delete(l.out, p)
	l.mu.Unlock()
	if ok {
		Put(b)
	}
}

// Close returns every buffer still out.
func (l *Lender) Close() {
	l.mu.Lock()
	out := l.out
	l.out = nil
	l.mu.Unlock()
	for _, b := range out {
		Put(b)
	}
}
