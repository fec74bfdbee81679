package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/slab"
	"golang.org/x/sync/errgroup"
)

// Target is where a restore writes: blockio.Target satisfies it.
type Target interface {
	io.WriterAt
	// Zero makes a range read as zeros (a hole in a file, zeroed blocks on a device).
	Zero(off, n int64) error
}

// RestoreOptions tune a restore.
type RestoreOptions struct {
	Workers int
	// Fresh says the target is a new sparse file that already reads as zeros, so holes need
	// no work. Otherwise holes are zeroed: no old data is left behind.
	Fresh    bool
	Progress func(done, total int64)
	// Lost, when set, makes a salvage: a block or block map node that cannot be read (damaged
	// or missing) is written as zeros and reported here (the byte range and why) instead of
	// stopping the restore. It is called from several goroutines at once.
	Lost func(start, end int64, err error)
	// FromStore reads every block map node from the backend, never from the process's node
	// cache: a verification must see a node damaged or removed after this process (a
	// gateway's gc mark, a mount, an incremental) cached it. Upper nodes are kept while
	// the leaves under them are read (storeNodesKept); leaves are read once each, as always.
	FromStore bool
}

// Restore writes the backup m onto t, verifying every block against its address. A mismatch
// stops the restore with an error naming the backup and the block's offset.
func (r *Repository) Restore(ctx context.Context, m *Manifest, t Target, o RestoreOptions) error {
	lk, err := r.Lock(ctx, LockShared, "restore")
	if err != nil {
		return err
	}
	defer lk.Unlock()
	// The caller read m before this lock: a delete elsewhere since (and a gc before the lock)
	// made a salvage write the removed blocks as zeros and call it salvaged, and a restore
	// stop part way. With the manifest there now, no gc removes its blocks while the lock
	// holds [TestRestoreOfABackupDeletedElsewhereWritesNothing].
	if has, err := r.HasManifest(ctx, m.ID); err != nil {
		return fmt.Errorf("restore backup %s: %w", m.ID, err)
	} else if !has {
		return fmt.Errorf("restore backup %s: %w", m.ID, ErrManifestDeleted)
	}
	if o.Workers <= 0 {
		o.Workers = 2 * runtime.GOMAXPROCS(0) // reads and writes overlap with decoding
	}
	var lost atomic.Int64 // ranges a salvage wrote as zeros
	if o.Lost != nil {
		report := o.Lost
		o.Lost = func(start, end int64, err error) {
			lost.Add(1)
			report(start, end, err)
		}
	}
	g := newGeometry(m.Size, r.cfg.BlockSize)
	load := r.node
	if o.FromStore {
		load = r.storeNodes()
	}
	eg, ctx := errgroup.WithContext(ctx)
	leaves := make(chan int64, o.Workers)
	done := make(chan int64, o.Workers)
	eg.Go(func() error {
		defer close(leaves)
		for i := range g.leaves {
			select {
			case leaves <- i:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range o.Workers {
		eg.Go(func() error {
			// Off the heap: a restore's heap limit is tight, and four 4 MiB leaf buffers on it
			// were a third of make bench's restore heap.
			buf := slab.Get(int(g.leafBytes()))
			var packs []byte // the merged pack reads, reused leaf after leaf
			defer func() { slab.Put(buf); slab.Put(packs) }()
			var look leafLookup
			for i := range leaves {
				n, err := r.restoreLeaf(ctx, load, m, g, i, t, buf, &packs, &look, o.Fresh, o.Lost)
				if err != nil {
					return err
				}
				select {
				case done <- n:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	}
	go func() {
		_ = eg.Wait()
		close(done)
	}()
	var total int64
	for n := range done {
		total += n
		if o.Progress != nil {
			o.Progress(total, m.Size)
		}
	}
	err = eg.Wait()
	if lerr := lk.Check(); lerr != nil && ((err != nil && isDamage(err)) || lost.Load() > 0) {
		// Without its lock the restore may have read while a gc elsewhere removed what it
		// needed: what looks like damage may not be. (What it wrote was verified all the same.)
		if err != nil {
			return fmt.Errorf("restore backup %s: %w; and %w, so this may be a gc elsewhere removing what it read, not damage: run it again", m.ID, err, lerr)
		}
		return fmt.Errorf("restore backup %s: %w, so the %d ranges written as zeros may be a gc elsewhere removing what it read, not damage: run the salvage again", m.ID, lerr, lost.Load())
	}
	if err != nil {
		return fmt.Errorf("restore backup %s: %w", m.ID, err)
	}
	return nil
}

// restoreLeaf restores one leaf's span and returns its length.
func (r *Repository) restoreLeaf(ctx context.Context, load nodeLoader, m *Manifest, g geometry, i int64, t Target, buf []byte, packs *[]byte, look *leafLookup, fresh bool, lost func(int64, int64, error)) (int64, error) {
	lo := i * g.leafBytes()
	hi := min(lo+g.leafBytes(), g.size)
	span := buf[:hi-lo]
	lf, err := r.leafVia(ctx, load, m.Root, m.RootLevel, i)
	if err == nil && lf != nil {
		err = g.checkLeaf(i, lf)
	}
	if err != nil && lost != nil && isDamage(err) {
		// Salvage: the whole leaf's span is lost.
		lost(lo, hi, fmt.Errorf("block map: %w", err))
		if !fresh {
			if err := t.Zero(lo, hi-lo); err != nil {
				return 0, fmt.Errorf("zero offset %d: %w", lo, err)
			}
		}
		return hi - lo, nil
	}
	if err != nil {
		return 0, fmt.Errorf("block map at offset %d: %w", lo, err)
	}
	if lf == nil {
		if !fresh {
			if err := t.Zero(lo, hi-lo); err != nil {
				return 0, fmt.Errorf("zero offset %d: %w", lo, err)
			}
		}
		return hi - lo, nil
	}
	var reads []blobRead
	var gone map[int]error // salvage: blocks that cannot be read, written as zeros
	err = look.run(r.idx, lf.addrs, nil)
	if err != nil {
		return 0, err
	}
	for j, b := range look.blocks {
		a, loc, ok := lf.addrs[b], look.locs[j], look.found[j]
		var err error
		if !ok && r.syncAfterMiss(ctx) {
			loc, ok, err = r.idx.Lookup(a) // another process may have stored or moved it
		}
		if err != nil {
			return 0, err
		}
		if !ok {
			err := fmt.Errorf("block at offset %d: blob %s is in no pack the index knows: %w", lo+int64(b)*g.blockSize, a.Short(), ErrCorrupt)
			if lost == nil {
				return 0, err
			}
			if gone == nil {
				gone = map[int]error{}
			}
			gone[b] = err
			continue
		}
		reads = append(reads, blobRead{block: b, loc: loc, addr: a})
	}
	var scratch []byte
	failed, err := r.readGrouped(ctx, reads, packs, func(rd blobRead, stored []byte) error {
		off := int64(rd.block) * g.blockSize
		want := g.blockLen(int64(rd.block) + i*LeafFanout)
		var plain []byte
		var err error
		plain, scratch, err = r.keys.decodeBlob(span[off:off:off+int64(want)], scratch, stored, BlobData, rd.addr)
		if errors.Is(err, ErrCorrupt) {
			if again, ok := r.readAgain(ctx, BlobData, rd.addr, rd.loc, span[off:off:off+int64(want)]); ok {
				plain, err = again, nil
			}
		}
		if err != nil {
			return err
		}
		if len(plain) != want || unsafe.SliceData(plain) != unsafe.SliceData(span[off:]) {
			return fmt.Errorf("length %d, want %d: %w", len(plain), want, ErrCorrupt)
		}
		return nil
	})
	if err != nil && lost != nil && isDamage(err) {
		// Salvage: read the leaf's blocks one by one and keep what verifies.
		if gone == nil {
			gone = map[int]error{}
		}
		for _, rd := range reads {
			off := int64(rd.block) * g.blockSize
			want := g.blockLen(int64(rd.block) + i*LeafFanout)
			stored, gerr := r.be.GetRange(ctx, rd.loc.Pack.Key(), int64(rd.loc.Offset), int64(rd.loc.Length))
			if gerr == nil {
				var plain []byte
				dst := span[off : off : off+int64(want)]
				plain, scratch, gerr = r.keys.decodeBlob(dst, scratch, stored, BlobData, rd.addr)
				if errors.Is(gerr, ErrCorrupt) {
					if again, ok := r.readAgain(ctx, BlobData, rd.addr, rd.loc, dst); ok {
						plain, gerr = again, nil
					}
				}
				if gerr == nil && (len(plain) != want || unsafe.SliceData(plain) != unsafe.SliceData(span[off:])) {
					gerr = fmt.Errorf("length %d, want %d: %w", len(plain), want, ErrCorrupt)
				}
			}
			if gerr != nil {
				if !isDamage(gerr) {
					return 0, gerr
				}
				gone[rd.block] = fmt.Errorf("block at offset %d: %w", lo+off, gerr)
			}
		}
		err = nil
	}
	if err != nil {
		return 0, fmt.Errorf("block at offset %d: %w", lo+int64(failed)*g.blockSize, err)
	}
	if len(gone) > 0 {
		// The lost blocks read as zeros: the leaf is written as if they were holes.
		addrs := append([]Address(nil), lf.addrs...)
		for b, gerr := range gone {
			addrs[b] = Address{}
			start := lo + int64(b)*g.blockSize
			lost(start, min(start+g.blockSize, hi), &LostBlockError{Addr: lf.addrs[b], Err: gerr})
		}
		lf = &node{level: lf.level, addrs: addrs}
	}
	return hi - lo, r.writeSpan(t, lf, g, lo, span, fresh)
}

// isDamage reports whether err means data that is damaged or missing (not an outage).
func isDamage(err error) bool {
	return errors.Is(err, ErrCorrupt) || errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrRange)
}

// writeSpan writes the decoded span: runs of data blocks as single writes; holes as zeros
// inside a run (cheaper than a syscall) or, when long, by Zero (nothing at all on a fresh file).
func (r *Repository) writeSpan(t Target, lf *node, g geometry, lo int64, span []byte, fresh bool) error {
	bs := int(g.blockSize)
	nb := (len(span) + bs - 1) / bs
	const longHole = 64 // blocks
	for b := 0; b < nb; {
		if lf.addrs[b].IsZero() {
			e := b
			for e < nb && lf.addrs[e].IsZero() {
				e++
			}
			if fresh || e-b >= longHole || e == nb {
				if !fresh {
					if err := t.Zero(lo+int64(b*bs), int64(min(e*bs, len(span))-b*bs)); err != nil {
						return fmt.Errorf("zero offset %d: %w", lo+int64(b*bs), err)
					}
				}
				b = e
				continue
			}
		}
		// a data run, absorbing short holes (their bytes in span are zeros)
		e := b
		for e < nb {
			if !lf.addrs[e].IsZero() {
				e++
				continue
			}
			h := e
			for h < nb && lf.addrs[h].IsZero() {
				h++
			}
			if fresh || h-e >= longHole || h == nb {
				break
			}
			e = h
		}
		for x := b; x < e; x++ {
			if lf.addrs[x].IsZero() {
				clear(span[x*bs : min((x+1)*bs, len(span))])
			}
		}
		end := min(e*bs, len(span))
		if _, err := t.WriteAt(span[b*bs:end], lo+int64(b*bs)); err != nil {
			return fmt.Errorf("write offset %d: %w", lo+int64(b*bs), err)
		}
		b = e
	}
	return nil
}
