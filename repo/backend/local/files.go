package local

import (
	"container/list"
	"os"
	"sync"
)

// files keeps recently read objects open, so that reading many small ranges of one pack (a
// restore, a FUSE reader) costs one pread each, not an open, fstat, pread and close. Objects
// are replaced only by Put and removed only by Delete, which both evict them here, so a cached
// descriptor and size are those of the object under that key.
type files struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*list.Element // of *openObject
	lru   *list.List               // front = most recently used
}

type openObject struct {
	name    string
	f       *os.File
	size    int64
	refs    int  // readers using f now; guarded by files.mu
	evicted bool // no longer cached: the last reader closes f
}

func newFiles(max int) *files {
	return &files{max: max, byKey: map[string]*list.Element{}, lru: list.New()}
}

// acquire returns the open object for name; release it when done.
func (c *files) acquire(name string) (*openObject, error) {
	c.mu.Lock()
	if el, ok := c.byKey[name]; ok {
		o := el.Value.(*openObject)
		o.refs++
		c.lru.MoveToFront(el)
		c.mu.Unlock()
		return o, nil
	}
	c.mu.Unlock()

	f, err := openFile(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, translate(err)
	}
	o := &openObject{name: name, f: f, size: fi.Size(), refs: 1}

	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[name]; ok { // another reader opened it meanwhile: use theirs
		f.Close()
		theirs := el.Value.(*openObject)
		theirs.refs++
		c.lru.MoveToFront(el)
		return theirs, nil
	}
	c.byKey[name] = c.lru.PushFront(o)
	for c.lru.Len() > c.max {
		c.drop(c.lru.Back())
	}
	return o, nil
}

// release ends one reader's use.
func (c *files) release(o *openObject) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o.refs--
	if o.evicted && o.refs == 0 {
		o.f.Close()
	}
}

// evict forgets name (before it is replaced or removed).
func (c *files) evict(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[name]; ok {
		c.drop(el)
	}
}

// closeAll forgets everything.
func (c *files) closeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.lru.Len() > 0 {
		c.drop(c.lru.Back())
	}
}

func (c *files) drop(el *list.Element) {
	o := el.Value.(*openObject)
	c.lru.Remove(el)
	delete(c.byKey, o.name)
	o.evicted = true
	if o.refs == 0 {
		o.f.Close()
	}
}
