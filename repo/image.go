package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Image reads a backup as the volume it was, at any offset, in O(range + log(volume size)):
// it walks the block map to the leaf of each block it needs and loads only those blocks.
// Holes read as zeros without touching the backend. Safe for concurrent use.
type Image struct {
	r  *Repository
	m  *Manifest
	g  geometry
	mu sync.Mutex
	// next is where the last read ended: a read starting there is sequential and prefetches.
	next     int64
	prefetch chan struct{} // bounds prefetching goroutines
}

// Image returns a reader of the backup m.
func (r *Repository) Image(m *Manifest) *Image {
	return &Image{r: r, m: m, g: newGeometry(m.Size, r.cfg.BlockSize), next: -1, prefetch: make(chan struct{}, 4)}
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
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		b := pos / bs
		within := int(pos - b*bs)
		chunk, err := im.block(ctx, b)
		if err != nil {
			return n, err
		}
		var c int
		if chunk == nil {
			c = min(len(p)-n, im.g.blockLen(b)-within)
			clear(p[n : n+c])
		} else {
			if within >= len(chunk) {
				return n, fmt.Errorf("backup %s: block at offset %d: short block: %w", im.m.ID, b*bs, ErrCorrupt)
			}
			c = copy(p[n:], chunk[within:])
		}
		n += c
	}
	im.maybePrefetch(off, n)
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// block returns block b's bytes, or nil for a hole.
func (im *Image) block(ctx context.Context, b int64) ([]byte, error) {
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
	chunk, err := im.r.Chunk(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("backup %s: block at offset %d: %w", im.m.ID, b*im.g.blockSize, err)
	}
	if len(chunk) != im.g.blockLen(b) {
		return nil, fmt.Errorf("backup %s: block at offset %d: length %d: %w", im.m.ID, b*im.g.blockSize, len(chunk), ErrCorrupt)
	}
	return chunk, nil
}

// maybePrefetch loads the blocks after a sequential read into the cache in the background.
func (im *Image) maybePrefetch(off int64, n int) {
	im.mu.Lock()
	sequential := off == im.next
	im.next = off + int64(n)
	im.mu.Unlock()
	if !sequential || im.r.chunks.max == 0 {
		return
	}
	bs := im.g.blockSize
	from := (off + int64(n) + bs - 1) / bs
	to := min(from+int64(max(n, 1<<20))/bs, im.g.blocks)
	for b := from; b < to; b++ {
		select {
		case im.prefetch <- struct{}{}:
		default:
			return // enough prefetching in flight
		}
		go func(b int64) {
			defer func() { <-im.prefetch }()
			_, _ = im.block(context.Background(), b)
		}(b)
	}
}

// NextData returns the next extent at or after off that is not a hole, at block granularity:
// [start, end). Past the last data it returns io.EOF. FUSE uses it for SEEK_DATA/SEEK_HOLE.
func (im *Image) NextData(ctx context.Context, off int64) (start, end int64, err error) {
	bs := im.g.blockSize
	if off >= im.m.Size {
		return im.m.Size, im.m.Size, io.EOF
	}
	b := off / bs
	found := false
	for b < im.g.blocks {
		lf, err := im.r.leaf(ctx, im.m.Root, im.m.RootLevel, b/LeafFanout)
		if err != nil {
			return 0, 0, err
		}
		if lf == nil {
			if found {
				break
			}
			b = (b/LeafFanout + 1) * LeafFanout
			continue
		}
		i := int(b % LeafFanout)
		for ; i < len(lf.addrs); i, b = i+1, b+1 {
			hole := lf.addrs[i].IsZero()
			if !found && !hole {
				found, start = true, max(b*bs, off)
			}
			if found && hole {
				return start, b * bs, nil
			}
		}
		if i < LeafFanout {
			break
		}
	}
	if !found {
		return im.m.Size, im.m.Size, io.EOF
	}
	return start, min(b*bs, im.m.Size), nil
}
