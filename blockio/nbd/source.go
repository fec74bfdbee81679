package nbd

import (
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/cairn-backup/cairn/blockio"
)

// statusWindow is how much of the export one block status request asks about.
const statusWindow = 1 << 30

// Source is an NBD export read for backup: it reads through a Client and says where the data
// is from base:allocation, so ranges the server reports as zeros are never read. It is safe
// for concurrent use.
type Source struct {
	c   *Client
	uri string

	mu  sync.Mutex // guards the allocation window
	win []extent   // base:allocation from winStart, in order
	// winStart, winEnd: the range win describes.
	winStart, winEnd int64
}

type extent struct {
	start, end int64
	flags      uint32
}

// Open connects to the export at uri for a backup, selecting base:allocation and, when
// bitmap is not empty, the dirty bitmap qemu:dirty-bitmap:BITMAP.
func Open(ctx context.Context, uri, bitmap string) (*Source, error) {
	ctxs := []string{ContextAllocation}
	if bitmap != "" {
		ctxs = append(ctxs, ContextBitmapPrefix+bitmap)
	}
	c, err := Dial(ctx, uri, Options{MetaContexts: ctxs})
	if err != nil {
		return nil, err
	}
	return &Source{c: c, uri: uri, winStart: -1, winEnd: -1}, nil
}

// Size is the export's size.
func (s *Source) Size() int64 { return s.c.Size() }

// ReadAt reads the export.
func (s *Source) ReadAt(p []byte, off int64) (int, error) { return s.c.ReadAt(p, off) }

// HasBitmap reports whether the server granted the dirty bitmap named bitmap.
func (s *Source) HasBitmap(bitmap string) bool { return s.c.HasContext(ContextBitmapPrefix + bitmap) }

// NextData returns the next extent at or after off that base:allocation does not report as
// reading zeros. A hole that is not known to read as zeros (NBD_STATE_HOLE without
// NBD_STATE_ZERO: a backing file may show through) is data. Without base:allocation
// everything is data. At the end it returns size, size, io.EOF.
func (s *Source) NextData(off int64) (start, end int64, err error) {
	size := s.Size()
	if off >= size {
		return size, size, io.EOF
	}
	if !s.c.HasContext(ContextAllocation) {
		return off, size, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	start = -1
	for pos := off; pos < size; {
		if pos < s.winStart || pos >= s.winEnd {
			if err := s.load(pos); err != nil {
				return 0, 0, err
			}
		}
		for _, e := range s.win {
			if e.end <= pos {
				continue
			}
			zero := e.flags&StateZero != 0
			switch {
			case start < 0 && !zero:
				start, end = max(e.start, pos), e.end
			case start >= 0 && !zero:
				end = e.end
			case start >= 0 && zero:
				return start, end, nil
			}
		}
		pos = s.winEnd
		if start >= 0 && end < pos {
			return start, end, nil
		}
	}
	if start < 0 {
		return size, size, io.EOF
	}
	return start, min(end, size), nil
}

// load fetches base:allocation for the window at pos.
func (s *Source) load(pos int64) error {
	ds, err := s.c.BlockStatus(context.Background(), ContextAllocation, pos, uint32(min(statusWindow, s.Size()-pos)))
	if err != nil {
		return fmt.Errorf("NBD export %s: %w", s.uri, err)
	}
	s.win = s.win[:0]
	at := pos
	for _, d := range ds {
		e := min(at+int64(d.Length), s.Size())
		s.win = append(s.win, extent{at, e, d.Flags})
		at = e
		if at >= s.Size() {
			break
		}
	}
	s.winStart, s.winEnd = pos, at
	return nil
}

// Dirty returns the ranges the dirty bitmap named bitmap marks as written: for an
// incremental, what changed since the bitmap began (or was last cleared).
func (s *Source) Dirty(ctx context.Context, bitmap string) (blockio.Changes, error) {
	name := ContextBitmapPrefix + bitmap
	var out blockio.Changes
	size := s.Size()
	for pos := int64(0); pos < size; {
		ds, err := s.c.BlockStatus(ctx, name, pos, uint32(min(statusWindow, size-pos)))
		if err != nil {
			return nil, fmt.Errorf("NBD export %s: bitmap %s: %w", s.uri, bitmap, err)
		}
		for _, d := range ds {
			e := min(pos+int64(d.Length), size)
			if d.Flags&StateDirty != 0 {
				if n := len(out); n > 0 && out[n-1].End == pos {
					out[n-1].End = e
				} else {
					out = append(out, blockio.Extent{Start: pos, End: e})
				}
			}
			pos = e
			if pos >= size {
				break
			}
		}
	}
	return out, nil
}

// Cancel breaks the connection: reads waiting for the server fail at once (a backup that is
// cancelled must not wait for a server that stopped answering). Close still has to be called.
func (s *Source) Cancel() { s.c.fail(context.Canceled) }

// Close ends the NBD session.
func (s *Source) Close() error { return s.c.Close() }
