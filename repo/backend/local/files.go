package local

import (
	"container/list"
	"os"
	"sync"
	"time"
)

// files keeps recently read objects open, so that reading many small ranges of one pack (a
// restore, a FUSE reader) costs one pread each, not an open, fstat, pread and close. Objects
// are replaced only by Put and removed only by Delete, which both evict them here, so a cached
// descriptor and size are those of the object under that key.
//
// A pack another process deletes (gc run from the CLI beside a gateway or a mount) is not
// evicted here, and its space is not freed while it is open: an object unused for filesIdle is
// closed, so a gateway or mount at rest holds no deleted pack for longer than that
// [TestIdleFilesAreClosed].
type files struct {
	mu    sync.Mutex
	max   int
	byKey map[string]*list.Element // of *openObject
	lru   *list.List               // front = most recently used
	idle  time.Duration            // filesIdle when made
	sweep *time.Timer              // closes idle objects; nil when none is cached
}

type openObject struct {
	name    string
	f       *os.File
	size    int64
	refs    int       // readers using f now; guarded by files.mu
	used    time.Time // last acquired or released
	evicted bool      // no longer cached: the last reader closes f
}

// filesIdle is how long an object stays open unused; a test shortens it before an Open.
var filesIdle = 30 * time.Second

func newFiles(max int) *files {
	return &files{max: max, idle: filesIdle, byKey: map[string]*list.Element{}, lru: list.New()}
}

// closeIdle drops the objects no reader has used for c.idle, and looks again later while
// any stays cached. The LRU's back holds the least recently used.
func (c *files) closeIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep = nil
	for el := c.lru.Back(); el != nil; {
		prev := el.Prev()
		if o := el.Value.(*openObject); o.refs == 0 && time.Since(o.used) >= c.idle {
			c.drop(el)
		}
		el = prev
	}
	c.armSweep()
}

// armSweep schedules closeIdle while objects are cached; the caller holds c.mu.
func (c *files) armSweep() {
	if c.sweep == nil && c.lru.Len() > 0 {
		c.sweep = time.AfterFunc(c.idle, c.closeIdle)
	}
}

// acquire returns the open object for name; release it when done.
func (c *files) acquire(name string) (*openObject, error) {
	c.mu.Lock()
	if el, ok := c.byKey[name]; ok {
		o := el.Value.(*openObject)
		o.refs++
		o.used = time.Now()
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
	o := &openObject{name: name, f: f, size: fi.Size(), refs: 1, used: time.Now()}

	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[name]; ok { // another reader opened it meanwhile: use theirs
		f.Close()
		theirs := el.Value.(*openObject)
		theirs.refs++
		theirs.used = time.Now()
		c.lru.MoveToFront(el)
		return theirs, nil
	}
	c.byKey[name] = c.lru.PushFront(o)
	for c.lru.Len() > c.max {
		c.drop(c.lru.Back())
	}
	c.armSweep()
	return o, nil
}

// release ends one reader's use.
func (c *files) release(o *openObject) {
	c.mu.Lock()
	defer c.mu.Unlock()
	o.refs--
	o.used = time.Now()
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
	if c.sweep != nil {
		c.sweep.Stop()
		c.sweep = nil
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
