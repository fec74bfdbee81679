package repo

import (
	"sync"
	"sync/atomic"
	"time"
)

// sharedPacks lets the write sessions of one Repository that run at once pack a new data
// block once: it knows which session's pack each new block went into until that pack is
// indexed or lost. A session that meets a block another one packed depends on that pack
// instead of packing it again (docs/design.md, "Backups running at once in one process share
// what they pack").
type sharedPacks struct {
	mu    sync.Mutex
	blobs map[Address]*packTicket
	// sessions counts the write sessions running; gen counts the packs indexed while another
	// session ran (mu guards both). A session's dedup check that ran before one of those
	// may have missed a block now in the index and no longer in blobs: claim says so.
	sessions int
	gen      uint64
	waiting  atomic.Int64 // sessions settling what they left to other sessions (settleDeps)
}

// join counts a write session in for the time it runs; leave counts it out, once every
// upload of its packs has settled.
func (s *sharedPacks) join() {
	s.mu.Lock()
	s.sessions++
	s.mu.Unlock()
}

func (s *sharedPacks) leave() {
	s.mu.Lock()
	s.sessions--
	s.mu.Unlock()
}

// generation returns how many packs were indexed while another session ran. A leaf records
// it before its dedup check.
func (s *sharedPacks) generation() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen
}

// packTicket is one session's pack, from its first blob until it is indexed or lost.
type packTicket struct {
	owner *writeSession
	// flushed is closed when the pack is handed to an upload: it then settles within an
	// upload's time. Until then it fills for as long as its session has new blocks.
	flushed chan struct{}
	// wanted: a session waits for the pack; its owner flushes it after the leaf it is on.
	wanted atomic.Bool
	done   chan struct{} // closed once err is set: nil when the pack is indexed
	err    error
}

func newTicket(owner *writeSession) *packTicket {
	return &packTicket{owner: owner, flushed: make(chan struct{}), done: make(chan struct{})}
}

// isFlushed reports whether t's pack was handed to an upload.
func (t *packTicket) isFlushed() bool {
	select {
	case <-t.flushed:
		return true
	default:
		return false
	}
}

// sharedFlushWait is how long a session waits for another to flush a pack it wants (the
// other may be stuck on a slow read) before it reads the blocks again and stores them.
var sharedFlushWait = 10 * time.Second

// claim records addr as packed into t, unless another session's pack has it: then it returns
// that pack's ticket and records nothing. gen is the generation at which addr was last
// looked up in the index; if packs were indexed since (cur != gen), claim records nothing
// either: the caller looks addr up again and claims with cur.
func (s *sharedPacks) claim(addr Address, t *packTicket, gen uint64) (o *packTicket, cur uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o, ok := s.blobs[addr]; ok && o.owner != t.owner {
		return o, s.gen
	}
	if s.gen != gen {
		return nil, s.gen
	}
	if s.blobs == nil {
		s.blobs = map[Address]*packTicket{}
	}
	s.blobs[addr] = t
	return nil, gen
}

// settle ends t with err (nil: its pack is indexed): its blobs leave the registry, and the
// sessions that depend on it learn the outcome.
func (s *sharedPacks) settle(t *packTicket, entries []PackEntry, err error) {
	s.mu.Lock()
	if err == nil && s.sessions > 1 {
		s.gen++ // before its blobs leave: a claim that misses them sees it
	}
	for _, e := range entries {
		if s.blobs[e.Addr] == t {
			delete(s.blobs, e.Addr)
		}
	}
	s.mu.Unlock()
	t.err = err
	close(t.done)
}

// sharedDep is a data block a session did not pack because another session's pack has it:
// where it is in this session's volume, to read it again if that pack is lost.
type sharedDep struct {
	t   *packTicket
	off int64
}

// maxSharedDeps bounds the blocks one session leaves to others (about 50 bytes each with the
// address); past it, it packs what it meets.
const maxSharedDeps = 1 << 20
