package repo

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/slab"
)

// maxSpanGap is how much unneeded data a read takes to merge two blob reads into one;
// maxSpan bounds one merged read, and maxScratchSpan one read into a caller's scratch buffer
// (which the caller keeps: a restore worker holds one for its whole run).
const (
	maxSpanGap     = 256 << 10
	maxSpan        = 32 << 20
	maxScratchSpan = 1 << 20
)

// blobRead is one blob to read, with where it is stored and which block it fills.
type blobRead struct {
	block int
	loc   Location
	addr  Address
}

// leafLookup asks the index where a leaf's blocks are, in one batch: a leaf's 256 lookups as
// one read transaction. Reused leaf after leaf.
type leafLookup struct {
	blocks []int // the blocks asked about: each non-zero address not skipped
	addrs  []Address
	locs   []Location
	found  []bool
}

// run looks up addrs[b] for every b whose address is not zero and not skip(b, addr) (skip may
// be nil): for the j-th of them, blocks[j] is b, and locs[j] and found[j] are the answer.
func (l *leafLookup) run(idx Index, addrs []Address, skip func(b int, a Address) bool) error {
	l.blocks, l.addrs = l.blocks[:0], l.addrs[:0]
	for b, a := range addrs {
		if a.IsZero() || (skip != nil && skip(b, a)) {
			continue
		}
		l.blocks = append(l.blocks, b)
		l.addrs = append(l.addrs, a)
	}
	if cap(l.locs) < len(l.addrs) {
		l.locs, l.found = make([]Location, len(l.addrs)), make([]bool, len(l.addrs))
	}
	l.locs, l.found = l.locs[:len(l.addrs)], l.found[:len(l.addrs)]
	if len(l.addrs) == 0 {
		return nil
	}
	return idx.LookupBatch(l.addrs, l.locs, l.found)
}

// readGrouped reads blobs with as few backend requests as their placement allows: sorted by
// pack and offset, neighbours (gaps up to maxSpanGap) merged into one range read. fn gets
// each blob's stored bytes; on an error it returns the failing read's block with it.
//
// With a scratch buffer (a repo/slab buffer or nil, owned by the caller, who slab.Puts it
// when done) and a backend that reads into the caller's buffer (backend.RangeReader), the
// ranges are read into scratch, grown as needed: then fn must not keep the bytes it gets.
// Without one, each range is a fresh buffer.
func (r *Repository) readGrouped(ctx context.Context, reads []blobRead, scratch *[]byte, fn func(rd blobRead, stored []byte) error) (int, error) {
	rr, _ := r.be.(backend.RangeReader)
	limit := int64(maxSpan)
	if scratch != nil && rr != nil {
		limit = maxScratchSpan
	}
	sort.Slice(reads, func(x, y int) bool {
		if reads[x].loc.Pack != reads[y].loc.Pack {
			return string(reads[x].loc.Pack[:]) < string(reads[y].loc.Pack[:])
		}
		return reads[x].loc.Offset < reads[y].loc.Offset
	})
	for s := 0; s < len(reads); {
		e := s + 1
		end := int64(reads[s].loc.Offset) + int64(reads[s].loc.Length)
		for e < len(reads) && reads[e].loc.Pack == reads[s].loc.Pack &&
			int64(reads[e].loc.Offset) <= end+maxSpanGap && int64(reads[e].loc.Offset)+int64(reads[e].loc.Length)-int64(reads[s].loc.Offset) <= limit {
			end = max(end, int64(reads[e].loc.Offset)+int64(reads[e].loc.Length))
			e++
		}
		base := int64(reads[s].loc.Offset)
		var data []byte
		var err error
		if scratch != nil && rr != nil {
			if n := int(end - base); cap(*scratch) < n {
				slab.Put(*scratch)
				*scratch = slab.Get(n)
			}
			data = (*scratch)[:end-base]
			err = rr.ReadRange(ctx, reads[s].loc.Pack.Key(), base, data)
		} else {
			data, err = r.be.GetRange(ctx, reads[s].loc.Pack.Key(), base, end-base)
		}
		if errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrRange) {
			err = missingPack{err} // the index says it is there: the repository is damaged
		}
		if err != nil {
			return reads[s].block, fmt.Errorf("pack %s: %w", reads[s].loc.Pack, err)
		}
		for _, rd := range reads[s:e] {
			if err := fn(rd, data[int64(rd.loc.Offset)-base:int64(rd.loc.Offset)-base+int64(rd.loc.Length)]); err != nil {
				return rd.block, err
			}
		}
		s = e
	}
	return 0, nil
}
