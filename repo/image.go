package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cairn-backup/cairn/repo/slab"
)

// Image reads a backup as the volume it was, at any offset, in O(range + log(volume size)):
// it walks the block map to the leaf of each block it needs and loads only those blocks.
// Holes read as zeros without touching the backend. Safe for concurrent use.
type Image struct {
	r *Repository
	m *Manifest
	g geometry

	mu      sync.Mutex // guards streams and tick
	streams []*stream  // recent sequential readers, for prefetch
	tick    uint64
	loads   chan struct{} // bounds prefetch loads in flight
}

// Prefetch tuning: a read within streamSlack of where a stream's last read ended continues
// it (the kernel's readahead sends neighbouring reads out of order); each continued read
// doubles the stream's window, from minWindow up to maxWindow (or an eighth of the cache).
// Prefetch starts at a stream's streamConfirm-th continued read: with one, random 4 KiB reads
// of a 1 GiB image continued some stream about one time in thirty and each such read had 64
// blocks decoded for nothing (41 % of a FUSE mount's CPU under fio's random reads).
const (
	maxStreams    = 8
	streamConfirm = 2
	streamSlack   = 2 << 20
	minWindow     = 1 << 20
	maxWindow     = 16 << 20
	readParallel  = 4 // blocks of one read loaded at once
)

// stream is one sequential reader. Its fields are guarded by Image.mu.
type stream struct {
	next    int64 // where its last read ended
	ahead   int64 // prefetch wanted up to here
	queued  int64 // prefetch loads started up to here
	window  int64
	running bool // a prefetcher goroutine works on it
	used    uint64
	runs    int // reads that continued it
}

// Image returns a reader of the backup m.
func (r *Repository) Image(m *Manifest) *Image {
	return &Image{r: r, m: m, g: newGeometry(m.Size, r.cfg.BlockSize), loads: make(chan struct{}, readParallel)}
}

// Size is the volume size at the time of the backup.
func (im *Image) Size() int64 { return im.m.Size }

// Manifest returns the backup's manifest.
func (im *Image) Manifest() *Manifest { return im.m }

// ReadAt implements io.ReaderAt.
func (im *Image) ReadAt(p []byte, off int64) (int, error) {
	return im.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext reads len(p) bytes at off; at the end of the volume it returns io.EOF with the
// bytes that were there. A block that fails verification fails the read, naming the backup and
// the block's offset: wrong bytes are never returned.
func (im *Image) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= im.m.Size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := im.m.Size - off; int64(want) > rest {
		p = p[:rest]
	}
	bs := im.g.blockSize
	first, last := off/bs, (off+int64(len(p))-1)/bs
	chunks, errs := im.blocks(ctx, first, last)
	n, err := im.copyOut(p, off, first, chunks, errs)
	seq := err == nil && im.maybePrefetch(off, n)
	end := off + int64(n)
	for i, ch := range chunks { // after the copy: a released block's buffer is reused
		if b := first + int64(i); seq && min((b+1)*bs, im.m.Size) <= end {
			im.r.chunks.releaseConsumed(ch)
		} else {
			im.r.chunks.release(ch)
		}
	}
	if err != nil {
		return n, err
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// copyOut copies blocks first.. (nil: a hole) into p, which starts at volume offset off, up to
// the first error.
func (im *Image) copyOut(p []byte, off, first int64, chunks []*chunk, errs []error) (int, error) {
	bs := im.g.blockSize
	n := 0
	for i, ch := range chunks {
		if errs[i] != nil {
			return n, errs[i]
		}
		b := first + int64(i)
		within := int(off + int64(n) - b*bs)
		var c int
		if ch == nil {
			c = min(len(p)-n, im.g.blockLen(b)-within)
			clear(p[n : n+c])
		} else {
			if within >= len(ch.data) {
				return n, fmt.Errorf("backup %s: block at offset %d: short block: %w", im.m.ID, b*bs, ErrCorrupt)
			}
			c = copy(p[n:], ch.data[within:])
		}
		n += c
	}
	return n, nil
}

// blocks returns blocks first..last pinned (nil for a hole; the caller releases each),
// loading those not cached with merged reads of their packs.
func (im *Image) blocks(ctx context.Context, first, last int64) ([]*chunk, []error) {
	count := int(last - first + 1)
	chunks, errs := make([]*chunk, count), make([]error, count)
	if count > 1 {
		im.preload(ctx, first, last+1, nil) // an error shows again, per block, below
	}
	for i := range count {
		chunks[i], errs[i] = im.block(ctx, first+int64(i))
	}
	return chunks, errs
}

// preload puts the blocks in [first, end) that are not cached into the chunk cache, reading
// neighbouring blobs of a pack with one backend request: a 16 KiB block at a time would cost
// a request, a lookup and a buffer each. Blocks passed reports as no longer wanted (nil: all
// are) are skipped when their turn comes: asked before a block is decoded, and again with the
// chunk cache's lock held as it is added (see chunkCache.add), so passed must not take that
// lock.
func (im *Image) preload(ctx context.Context, first, end int64, passed func(block int64) bool) {
	end = min(end, im.g.blocks)
	var reads []blobRead
	var look leafLookup
	for b := first; b < end; {
		lf, err := im.r.leaf(ctx, im.m.Root, im.m.RootLevel, b/LeafFanout)
		if err != nil {
			return
		}
		leafEnd := min((b/LeafFanout+1)*LeafFanout, end)
		if lf != nil {
			i0 := int(b % LeafFanout)
			i1 := min(i0+int(leafEnd-b), len(lf.addrs))
			if i0 < i1 && look.run(im.r.idx, lf.addrs[i0:i1], func(_ int, a Address) bool { return im.r.chunks.contains(a) }) == nil {
				for j, i := range look.blocks {
					if look.found[j] {
						reads = append(reads, blobRead{block: int(b-first) + i, loc: look.locs[j], addr: look.addrs[j]})
					}
				}
			}
		}
		b = leafEnd
	}
	if len(reads) < 2 {
		return // a single block loads as well on its own
	}
	var scratch []byte // the merged reads, opened into new plaintext buffers at once
	defer func() { slab.Put(scratch) }()
	_, _ = im.r.readGrouped(ctx, reads, &scratch, func(rd blobRead, stored []byte) error {
		var unwanted func() bool
		if passed != nil {
			if unwanted = func() bool { return passed(first + int64(rd.block)) }; unwanted() {
				return nil
			}
		}
		plain, err := im.r.openBlob(im.r.chunks.buffer(), stored, BlobData, rd.addr, rd.loc)
		if err == nil {
			im.r.chunks.add(rd.addr, plain, unwanted) // asked again: the reader may have passed meanwhile
		}
		return nil // a bad block fails its own read later, with its offset
	})
}

// block returns block b pinned (the caller releases it), or nil for a hole.
func (im *Image) block(ctx context.Context, b int64) (*chunk, error) {
	lf, err := im.r.leaf(ctx, im.m.Root, im.m.RootLevel, b/LeafFanout)
	if err != nil {
		return nil, fmt.Errorf("backup %s: block map at offset %d: %w", im.m.ID, b*im.g.blockSize, err)
	}
	if lf == nil {
		return nil, nil
	}
	i := int(b % LeafFanout)
	if i >= len(lf.addrs) {
		return nil, fmt.Errorf("backup %s: block map at offset %d: %w", im.m.ID, b*im.g.blockSize, ErrCorrupt)
	}
	addr := lf.addrs[i]
	if addr.IsZero() {
		return nil, nil
	}
	ch, err := im.r.chunk(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("backup %s: block at offset %d: %w", im.m.ID, b*im.g.blockSize, err)
	}
	if len(ch.data) != im.g.blockLen(b) {
		im.r.chunks.release(ch)
		return nil, fmt.Errorf("backup %s: block at offset %d: length %d: %w", im.m.ID, b*im.g.blockSize, len(ch.data), ErrCorrupt)
	}
	return ch, nil
}

// maybePrefetch notes a read of n bytes at off; when it continues a sequential stream, the
// blocks ahead of the stream are loaded into the chunk cache in the background, and it
// reports true.
func (im *Image) maybePrefetch(off int64, n int) bool {
	if im.r.chunks.max == 0 || n == 0 {
		return false
	}
	end := off + int64(n)
	im.mu.Lock()
	im.tick++
	var s *stream
	for _, st := range im.streams {
		if off >= st.next-streamSlack && off <= st.next+streamSlack {
			s = st
			break
		}
	}
	if s == nil {
		// A new reader: remember it, replacing the least recently used. A prefetcher still
		// working on the old one finishes its (bounded) window on its own.
		ns := &stream{next: end, ahead: end, queued: end, used: im.tick}
		if len(im.streams) < maxStreams {
			im.streams = append(im.streams, ns)
		} else {
			lru := 0
			for i, st := range im.streams {
				if st.used < im.streams[lru].used {
					lru = i
				}
			}
			im.streams[lru] = ns
		}
		im.mu.Unlock()
		return false
	}
	s.used = im.tick
	s.next = max(s.next, end)
	if s.runs++; s.runs < streamConfirm {
		im.mu.Unlock()
		return false
	}
	s.window = min(max(2*s.window, minWindow), maxWindow, max(im.r.chunks.max/8, minWindow))
	s.ahead = max(s.ahead, min(s.next+s.window, im.m.Size))
	s.queued = max(s.queued, s.next) // reads that overtook the prefetcher need nothing more
	start := !s.running && s.queued < s.ahead
	if start {
		s.running = true
	}
	im.mu.Unlock()
	if start {
		go im.prefetch(s)
	}
	return true
}

// prefetch loads the blocks of s from queued to ahead in runs of prefetchRun blocks (merged
// pack reads), a few runs at once, until it has caught up with what the stream wants.
func (im *Image) prefetch(s *stream) {
	bs := im.g.blockSize
	for {
		im.mu.Lock()
		if s.queued >= s.ahead {
			s.running = false
			im.mu.Unlock()
			return
		}
		b := s.queued / bs
		e := min(b+prefetchRun, (s.ahead+bs-1)/bs)
		s.queued = e * bs
		im.mu.Unlock()
		im.loads <- struct{}{}
		go func() {
			defer func() { <-im.loads }()
			// A block the stream's reads have gone past was loaded by the reader itself
			// (and released as consumed): decoding it again would only park a block in
			// the cache that nobody reads.
			im.preload(context.Background(), b, e, func(block int64) bool {
				im.mu.Lock()
				defer im.mu.Unlock()
				return min((block+1)*bs, im.m.Size) <= s.next
			})
		}()
	}
}

// prefetchRun is how many blocks one prefetch load reads (1 MiB of 16 KiB blocks).
const prefetchRun = 64

// NextData returns the next extent at or after off that is not a hole, at block granularity:
// [start, end). Past the last data it returns io.EOF. FUSE uses it for SEEK_DATA/SEEK_HOLE.
// A leaf with more or fewer blocks than its place in the volume holds is ErrCorrupt, as it is
// to a read: the blocks it lacks are not holes.
func (im *Image) NextData(ctx context.Context, off int64) (start, end int64, err error) {
	bs := im.g.blockSize
	if off >= im.m.Size {
		return im.m.Size, im.m.Size, io.EOF
	}
	b := off / bs
	found := false
	for b < im.g.blocks {
		leaf := b / LeafFanout
		lf, err := im.r.leaf(ctx, im.m.Root, im.m.RootLevel, leaf)
		if err != nil {
			return 0, 0, fmt.Errorf("backup %s: block map at offset %d: %w", im.m.ID, leaf*im.g.leafBytes(), err)
		}
		if lf == nil {
			if found {
				break
			}
			b = (leaf + 1) * LeafFanout
			continue
		}
		if err := im.g.checkLeaf(leaf, lf); err != nil {
			return 0, 0, fmt.Errorf("backup %s: block map at offset %d: %w", im.m.ID, leaf*im.g.leafBytes(), err)
		}
		for i := int(b % LeafFanout); i < len(lf.addrs); i, b = i+1, b+1 {
			hole := lf.addrs[i].IsZero()
			if !found && !hole {
				found, start = true, max(b*bs, off)
			}
			if found && hole {
				return start, b * bs, nil
			}
		}
	}
	if !found {
		return im.m.Size, im.m.Size, io.EOF
	}
	return start, min(b*bs, im.m.Size), nil
}

// Source returns the image as a Source, reading under ctx: what a copy of the backup to
// another repository backs up there. Every byte it returns was verified, as ReadAt's are.
func (im *Image) Source(ctx context.Context) Source { return imageSource{im: im, ctx: ctx} }

type imageSource struct {
	im  *Image
	ctx context.Context
}

func (s imageSource) ReadAt(p []byte, off int64) (int, error) {
	return s.im.ReadAtContext(s.ctx, p, off)
}
func (s imageSource) Size() int64 { return s.im.Size() }
func (s imageSource) NextData(off int64) (start, end int64, err error) {
	return s.im.NextData(s.ctx, off)
}
