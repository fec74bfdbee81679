package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/slab"
	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"
)

// Source is a volume being backed up: blockio.Source satisfies it.
type Source interface {
	io.ReaderAt
	Size() int64
	// NextData returns the next data extent at or after off; io.EOF past the end.
	NextData(off int64) (start, end int64, err error)
}

// Parent is the earlier backup an incremental compares against.
type Parent struct {
	Root      Address
	RootLevel int
	Size      int64
	// DataBlocks is the parent's Stats.DataBlocks: with Changes, the leaves that are not
	// read are not loaded either, so the new count is the parent's plus what changed.
	DataBlocks int64
}

// Changes says which byte ranges of an incremental's source may differ from its parent, as
// changed-block tracking reports them (extents no longer shared with a reflinked base, the
// dirty extents of an NBD bitmap). Everything outside them is taken from the parent's block
// map without being read. The caller vouches for it: a range missing here is a wrong backup.
type Changes interface {
	// NextChange returns the next range [start, end) that may have changed and ends after
	// off; io.EOF when none is left.
	NextChange(off int64) (start, end int64, err error)
}

// WriteOptions tune a backup.
type WriteOptions struct {
	// Lock is the shared repository lock the caller took (to choose the parent under it);
	// nil: Write takes one.
	Lock   *Lock
	Parent *Parent // nil for a full backup
	// Changes, with a Parent of the source's size, limits what is read to the ranges that
	// may have changed; nil reads every data extent.
	Changes  Changes
	Workers  int // fingerprint/compress workers; 0 = GOMAXPROCS
	Uploads  int // packs stored at once; 0 = 2, at most maxPackUploads
	Progress func(done, total int64)
}

// Stats counts what a backup read and stored.
type Stats struct {
	Blocks        int64 `json:"blocks"`         // blocks in the volume
	DataBlocks    int64 `json:"data_blocks"`    // blocks that are not holes
	ChangedBlocks int64 `json:"changed_blocks"` // data blocks whose fingerprint differs from the parent's
	NewBlobs      int64 `json:"new_blobs"`      // blobs stored by this backup (data and tree)
	NewBytes      int64 `json:"new_bytes"`      // their stored (compressed, sealed) bytes
	NewPlainBytes int64 `json:"new_plain_bytes"`
	Packs         int64 `json:"packs"`
	// ReadBytes is how many bytes were read from the source: with changed-block tracking, what
	// changed (rounded out to blocks); without, every data extent.
	ReadBytes int64 `json:"read_bytes"`
	// SharedBlobs: new data blocks this backup did not store because a backup running at the
	// same time in this process had just stored them.
	SharedBlobs int64 `json:"shared_blobs,omitempty"`
}

// WriteResult is the block map of a written backup.
type WriteResult struct {
	Root      Address
	RootLevel int
	Stats     Stats
}

// leafJob is one leaf's span of the volume, passed from the reader to a worker and, in order,
// to the collector. The reader owns it until it is sent; then the worker; then the collector.
type leafJob struct {
	i int64
	// since is how many of the session's packs were indexed when the leaf was planned: its
	// dedup check sees their blobs in the index. gen is the shared registry's generation
	// then (sharedPacks.generation): the packs other sessions had indexed.
	since uint64
	gen   uint64
	holes int64 // > 0: this job is a run of that many all-hole leaves starting at i
	// reuse > 0: a run of that many leaves starting at i that did not change since the
	// parent; their addresses are the parent's, nothing is read.
	reuse int64
	// keep[b]: with Changes, block b of the leaf did not change and is taken from the parent.
	keep []bool
	read int64 // bytes read from the source
	// extents are the leaf's data ranges (absolute offsets) that the readers read.
	extents [][2]int64
	buf     []byte // the span's bytes; nil when the whole span is a hole
	data    []bool // data[b]: block b of the leaf has data (else it is a hole)
	parent  *node  // the parent's leaf, loaded by the reader (nil: none, or all holes)
	done    chan struct{}
	res     leafResult
	blobs   []byte // stored bytes of new blobs, back to back
}

type newBlob struct {
	t        BlobType
	addr     Address
	block    int // in its leaf
	off, n   int
	plainLen int
}

type leafResult struct {
	err      error
	addr     Address // zero for an all-hole leaf
	reused   bool    // same as the parent's leaf: nothing new below it
	node     *node
	enc      []byte // node, encoded
	newBlobs []newBlob
	stats    Stats
	// parentData is how many data blocks the parent's leaf has, counted when the leaf was
	// read for Changes: the leaves not read keep the parent's count.
	parentData int64
}

// Write backs up src into the repository. When every blob is stored and indexed, it calls
// commit (still under the lock, so no gc can run in between) to store the manifest and record
// the backup. It refuses to commit once the lock is lost: a gc elsewhere may then have removed
// blobs this backup reuses.
func (r *Repository) Write(ctx context.Context, src Source, o WriteOptions, commit func(WriteResult) error) (WriteResult, error) {
	if o.Lock == nil {
		lk, err := r.Lock(ctx, LockShared, "backup")
		if err != nil {
			return WriteResult{}, err
		}
		defer lk.Unlock()
		o.Lock = lk
	}
	res, err := r.write(ctx, src, o)
	if err != nil {
		return res, err
	}
	if err := o.Lock.Confirm(ctx); err != nil {
		return res, err
	}
	return res, commit(res)
}

func (r *Repository) write(ctx context.Context, src Source, o WriteOptions) (WriteResult, error) {
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Uploads <= 0 {
		o.Uploads = 2
	}
	// Each pack in flight to S3 holds a buffer of the pack size (17 MiB): more than
	// maxPackUploads at once would take a backup past its memory budget (peak RSS ≤ 256 MiB)
	// for little more speed; S3's other requests keep their concurrency. (A local
	// repository's packs are spooled files: see flushPack.)
	o.Uploads = min(o.Uploads, maxPackUploads)
	if o.Changes != nil && (o.Parent == nil || o.Parent.Size != src.Size()) {
		return WriteResult{}, errors.New("changed-block tracking needs a parent backup of the volume's current size")
	}
	g := newGeometry(src.Size(), r.cfg.BlockSize)
	w := &writeSession{r: r, g: g, o: o, src: src, packed: map[Address]struct{}{}, stored: map[Address]struct{}{}}
	return w.run(ctx)
}

type writeSession struct {
	r   *Repository
	g   geometry
	o   WriteOptions
	src Source

	// packed holds the blobs this session packed that a leaf's dedup check may not have
	// seen in the index: those of packs not yet indexed, and those of the packs indexed since
	// the oldest leaf still in the pipeline was planned (its check may have run just before
	// they were). A block that repeats is then packed once. indexed counts the packs indexed,
	// recent holds the entries of the last of them (the newest last), still in packed.
	// All three are guarded by mu.
	mu      sync.Mutex
	packed  map[Address]struct{}
	indexed uint64
	recent  [][]PackEntry

	// owned by the planner goroutine: the current data extent and changed range.
	extStart, extEnd int64
	chStart, chEnd   int64

	// owned by the collector goroutine:
	stored map[Address]struct{} // tree nodes this session has stored or found stored
	packer packer
	ticket *packTicket           // the pack being filled, as other sessions see it (shared.go)
	deps   map[Address]sharedDep // data blocks left to other sessions' packs
	stats  Stats
	levels []levelBuilder
	root   Address
	// Leaf read buffers, arenas of a leaf's new stored blobs, and pack buffers unless the
	// packs are spooled (returned after upload) come from slab; whatever is still out when
	// the session ends goes back then.
	bufs     slab.Lender
	leafLen  int
	arenaLen int
	packLen  int
	spool    backend.Spooler // the backend, when it takes packs as files (no pack in memory)
	uploads  *errgroup.Group // pack uploads; uctx is cancelled when one fails
	uctx     context.Context
}

type levelBuilder struct {
	children []Address
	done     int64 // nodes finished at this level
}

func (w *writeSession) run(ctx context.Context) (WriteResult, error) {
	w.r.shared.join()
	defer w.r.shared.leave() // runs last: every upload has settled by then
	parent := ctx
	eg, ctx := errgroup.WithContext(ctx)
	w.uploads, w.uctx = errgroup.WithContext(ctx)
	w.uploads.SetLimit(w.o.Uploads)
	w.levels = make([]levelBuilder, w.g.rootLevel+1)
	w.leafLen = int(w.g.leafBytes()) // page-aligned: sources read aligned ranges with O_DIRECT
	w.arenaLen = w.leafLen + w.leafLen/8 + 4096
	w.packLen = w.r.cfg.PackSize + 2*int(w.g.blockSize) + 1<<20
	defer w.bufs.Close() // after every stage and upload has stopped
	w.spool, _ = w.r.be.(backend.Spooler)
	defer w.packer.abandon() // a pack not handed to an upload, when the session fails
	defer func() {
		// Before abandon (defers run last first): the sessions that depend on the pack
		// being filled learn it is lost.
		if w.ticket != nil {
			w.r.shared.settle(w.ticket, w.packer.entries, errPackAbandoned)
			w.ticket = nil
		}
	}()
	if w.o.Changes != nil {
		w.stats.DataBlocks = w.o.Parent.DataBlocks // what is not read stays as the parent had it
	}

	// Channels as deep as there are workers: each job in one holds a 4 MiB leaf buffer or
	// an arena. On make bench's full backup, workers + 2 gave the same speed and 20 MiB more
	// peak RSS (docs/design.md, "Backup").
	depth := w.o.Workers
	order := make(chan *leafJob, depth)
	work := make(chan *leafJob, depth)
	eg.Go(func() error { defer close(order); defer close(work); return w.read(ctx, order, work) })
	for range w.o.Workers {
		eg.Go(func() error {
			scratch := make([]byte, 0, w.g.blockSize+1024)
			var look leafLookup
			for job := range work {
				job.res = w.process(ctx, job, &scratch, &look)
				close(job.done)
			}
			return nil
		})
	}
	eg.Go(func() error { return w.collect(ctx, order) })
	err := eg.Wait()
	// A failed upload cancels the pipeline, whose stages then report context.Canceled: the
	// upload's error is the one that says why, unless the caller itself cancelled.
	if uerr := w.uploads.Wait(); err == nil || (uerr != nil && errors.Is(err, context.Canceled) && parent.Err() == nil) {
		err = uerr
	}
	if err == nil {
		err = parent.Err()
	}
	if err != nil {
		// The pack uploads that finished are indexed; no manifest reaches their blobs, so gc
		// reclaims them (unless a later backup reuses them first).
		return WriteResult{}, err
	}
	return WriteResult{Root: w.root, RootLevel: w.g.rootLevel, Stats: w.stats}, nil
}

// maxPackUploads bounds the packs one backup uploads at once. With S3's 8 the full backup of
// make bench's 1 GiB image peaked at 264 MiB (9 pack buffers); see docs/design.md.
const maxPackUploads = 4

// readers is how many leaves are read at once: one buffered sequential reader gets a
// fraction of what a disk delivers at a small queue depth.
const readers = 4

// mergeGap is the longest hole between two extents of a leaf that one read spans.
const mergeGap = 1 << 20

// read walks the volume leaf by leaf, planning reads of data extents only, and hands each
// leaf to a small pool that reads leaves in parallel. Jobs reach the collector in volume
// order whatever order their reads finish in.
func (w *writeSession) read(ctx context.Context, order, work chan<- *leafJob) error {
	toRead := make(chan *leafJob)
	var pool errgroup.Group
	for range readers {
		pool.Go(func() error {
			for job := range toRead {
				if err := w.readLeaf(ctx, job); err != nil {
					job.res = leafResult{err: err}
					close(job.done)
					continue
				}
				select {
				case work <- job:
				case <-ctx.Done():
					job.res = leafResult{err: ctx.Err()}
					close(job.done)
				}
			}
			return nil
		})
	}
	err := w.plan(ctx, order, toRead)
	close(toRead)
	_ = pool.Wait()
	return err
}

// plan finds each leaf's data extents and queues the leaf; runs of hole leaves become one job
// that needs no read, and so do runs of leaves that Changes says did not change.
func (w *writeSession) plan(ctx context.Context, order, toRead chan<- *leafJob) error {
	w.extStart, w.extEnd = -1, -1
	w.chStart, w.chEnd = -1, -1
	size := w.g.size
	for i := int64(0); i < w.g.leaves; i++ {
		lo := i * w.g.leafBytes()
		hi := min(lo+w.g.leafBytes(), size)
		job := &leafJob{i: i, since: w.packsIndexed(), gen: w.r.shared.generation(), done: make(chan struct{})}
		if w.o.Changes != nil {
			changed, err := w.changedIn(lo, hi)
			if err != nil {
				return err
			}
			if len(changed) == 0 {
				// A run of unchanged leaves up to the next change: the parent's, unread.
				n := w.g.leaves - i
				if w.chStart < size {
					n = min((w.chStart-lo)/w.g.leafBytes(), n)
				}
				job.reuse = max(n, 1)
				close(job.done)
				select {
				case order <- job:
				case <-ctx.Done():
					return ctx.Err()
				}
				i += job.reuse - 1
				continue
			}
			bs := w.g.blockSize
			job.keep = make([]bool, (hi-lo+bs-1)/bs)
			for b := range job.keep {
				job.keep[b] = true
			}
			for _, c := range changed {
				for b := (c[0] - lo) / bs; b*bs < c[1]-lo; b++ {
					job.keep[b] = false
				}
				if err := w.dataIn(job, c[0], c[1]); err != nil {
					return err
				}
			}
		} else {
			if lo >= w.extEnd {
				if err := w.nextExtent(lo); err != nil {
					return err
				}
			}
			if w.extStart >= hi {
				// A run of hole leaves up to the next data: one job, no reads.
				// Past the last extent every remaining leaf is a hole, the last one maybe short.
				n := w.g.leaves - i
				if w.extStart < size {
					n = min((w.extStart-lo)/w.g.leafBytes(), n)
				}
				job.holes = max(n, 1)
				close(job.done)
				select {
				case order <- job:
				case <-ctx.Done():
					return ctx.Err()
				}
				i += job.holes - 1
				continue
			}
			if err := w.dataIn(job, lo, hi); err != nil {
				return err
			}
		}
		select {
		case order <- job:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case toRead <- job:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// dataIn appends the data extents within [lo, hi) to the job's extents. Calls come in volume
// order, so the source is asked for each extent once.
func (w *writeSession) dataIn(job *leafJob, lo, hi int64) error {
	for off := lo; off < hi; {
		if off >= w.extEnd {
			if err := w.nextExtent(off); err != nil {
				return err
			}
			if w.extStart >= w.g.size {
				break
			}
		}
		if w.extStart >= hi {
			break
		}
		s, e := max(w.extStart, off), min(w.extEnd, hi)
		job.extents = append(job.extents, [2]int64{s, e})
		off = e
	}
	return nil
}

// changedIn returns the ranges of [lo, hi) that may have changed, widened to whole blocks and
// merged; nil when nothing in it changed.
func (w *writeSession) changedIn(lo, hi int64) ([][2]int64, error) {
	var out [][2]int64
	bs := w.g.blockSize
	for off := lo; off < hi; {
		if off >= w.chEnd {
			if err := w.nextChange(off); err != nil {
				return nil, err
			}
		}
		if w.chStart >= hi {
			break
		}
		s, e := max(w.chStart, off), min(w.chEnd, hi)
		s = lo + (s-lo)/bs*bs
		e = min(lo+(e-lo+bs-1)/bs*bs, hi)
		if n := len(out); n > 0 && s <= out[n-1][1] {
			out[n-1][1] = max(out[n-1][1], e)
		} else {
			out = append(out, [2]int64{s, e})
		}
		off = e
	}
	return out, nil
}

// nextChange moves [chStart, chEnd) to the next changed range ending after off; past the last
// one both are the volume size.
func (w *writeSession) nextChange(off int64) error {
	size := w.g.size
	s, e, err := w.o.Changes.NextChange(off)
	if errors.Is(err, io.EOF) || (err == nil && s >= size) {
		w.chStart, w.chEnd = size, size
		return nil
	}
	if err != nil {
		return fmt.Errorf("find changes at offset %d: %w", off, err)
	}
	if e <= off || e <= s {
		return fmt.Errorf("find changes at offset %d: the tracking answered [%d, %d), which ends before it", off, s, e)
	}
	w.chStart, w.chEnd = s, min(e, size)
	return nil
}

// readLeaf reads a leaf's extents into a buffer (the parts between them read as zeros), and
// the parent's leaf: the readers load both in parallel, so the workers only compute.
func (w *writeSession) readLeaf(ctx context.Context, job *leafJob) error {
	if w.o.Parent != nil && job.i*w.g.leafBytes() < w.o.Parent.Size {
		p, err := w.r.leaf(ctx, w.o.Parent.Root, w.o.Parent.RootLevel, job.i)
		if err != nil {
			return fmt.Errorf("read parent block map: %w", err)
		}
		job.parent = p
	}
	lo := job.i * w.g.leafBytes()
	hi := min(lo+w.g.leafBytes(), w.g.size)
	bs := w.g.blockSize
	job.buf = w.bufs.Get(w.leafLen)[:hi-lo]
	job.data = make([]bool, (hi-lo+bs-1)/bs)
	filled := lo // end of what the buffer holds (read or cleared)
	gap := int64(mergeGap)
	if job.keep != nil {
		gap = 0 // between changed blocks lies data that did not change: never read it
		// Only the changed blocks are looked at: clear those (their holes read as zeros)
		// and leave the rest of the buffer as it is, which at 1 % of changes saves clearing
		// 99 % of every leaf.
		for b, keep := range job.keep {
			if !keep {
				clear(job.buf[int64(b)*bs : min(int64(b+1)*bs, hi-lo)])
			}
		}
		filled = hi
	}
	for i := 0; i < len(job.extents); {
		// Extents a short hole apart are read with one request: a hole in a sparse file
		// reads as zeros without touching the disk, and a fragmented file system image
		// would otherwise cost a small read per extent.
		s, e := job.extents[i][0], job.extents[i][1]
		for _, x := range job.extents[i:] {
			s0, e0 := x[0], x[1]
			if s0-e > gap {
				break
			}
			e = e0
			i++
		}
		if filled < s {
			clear(job.buf[filled-lo : s-lo])
		}
		n, err := w.src.ReadAt(job.buf[s-lo:e-lo], s)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read volume at offset %d: %w", s, err)
		}
		if int64(n) < e-s {
			// The rest of the buffer holds what it held before: never store it.
			return fmt.Errorf("read volume at offset %d: it ends there, short of its size of %d bytes (did it shrink during the backup?): back it up again, from a snapshot (--force) if it is in use", s+int64(n), w.g.size)
		}
		job.read += e - s
		filled = max(filled, e)
	}
	clear(job.buf[filled-lo:])
	for _, x := range job.extents { // only blocks with data are fingerprinted
		for b := (x[0] - lo) / bs; b*bs < x[1]-lo; b++ {
			job.data[b] = true
		}
	}
	return nil
}

// nextExtent moves [extStart, extEnd) to the next data extent at or after off; past the last
// one both are the volume size.
func (w *writeSession) nextExtent(off int64) error {
	size := w.g.size
	s, e, err := w.src.NextData(off)
	if errors.Is(err, io.EOF) || (err == nil && s >= size) {
		w.extStart, w.extEnd = size, size
		return nil
	}
	if err != nil {
		return fmt.Errorf("find data at offset %d: %w", off, err)
	}
	w.extStart, w.extEnd = s, min(e, size)
	return nil
}

// zeroBlock is what isZero compares with, a piece at a time: a static array, not a heap
// buffer the collector would count against a command's heap limit.
var zeroBlock [64 << 10]byte

// process fingerprints a leaf's blocks and compresses and seals the ones that are new.
func (w *writeSession) process(ctx context.Context, job *leafJob, scratch *[]byte, look *leafLookup) leafResult {
	var res leafResult
	first := job.i * LeafFanout
	n := int(min(LeafFanout, w.g.blocks-first))
	res.stats.Blocks = int64(n)
	if job.buf == nil {
		return res // all holes
	}
	parent := job.parent
	defer w.bufs.Put(job.buf)
	nd := &node{fps: make([]xxh3.Uint128, n), addrs: make([]Address, n)}
	var changed [LeafFanout]bool // blocks whose content is not the parent's: looked up below
	bs := int(w.g.blockSize)
	if job.keep != nil && parent != nil {
		for _, a := range parent.addrs {
			if !a.IsZero() {
				res.parentData++
			}
		}
	}
	for b := range n {
		if job.keep != nil && job.keep[b] {
			if parent != nil && b < len(parent.addrs) && !parent.addrs[b].IsZero() {
				nd.fps[b], nd.addrs[b] = parent.fps[b], parent.addrs[b]
				res.stats.DataBlocks++
			}
			continue
		}
		if !job.data[b] {
			continue
		}
		blk := job.buf[b*bs : min((b+1)*bs, len(job.buf))]
		fp := xxh3.Hash128(blk)
		if parent != nil && b < len(parent.fps) && parent.fps[b] == fp && !parent.addrs[b].IsZero() {
			nd.fps[b], nd.addrs[b] = fp, parent.addrs[b]
			res.stats.DataBlocks++
			continue
		}
		if isZero(blk) {
			continue
		}
		res.stats.DataBlocks++
		res.stats.ChangedBlocks++
		nd.fps[b], nd.addrs[b] = fp, w.r.keys.address(BlobData, blk)
		changed[b] = true
	}
	// The changed blocks' dedup checks, as one batch; those the index does not know are new.
	if err := look.run(w.r.idx, nd.addrs, func(b int, _ Address) bool { return !changed[b] }); err != nil {
		return leafResult{err: err}
	}
	for j, b := range look.blocks {
		if look.found[j] && !w.r.idx.Damaged(look.addrs[j], look.locs[j]) {
			continue // a copy a reader found damaged is stored again (Index.MarkDamaged)
		}
		blk := job.buf[b*bs : min((b+1)*bs, len(job.buf))]
		if job.blobs == nil {
			job.blobs = w.bufs.Get(w.arenaLen)[:0]
		}
		start := len(job.blobs)
		job.blobs, *scratch = w.r.keys.encodeBlob(job.blobs, *scratch, blk, w.r.cfg.Compression, nd.addrs[b])
		res.newBlobs = append(res.newBlobs, newBlob{t: BlobData, addr: nd.addrs[b], block: b, off: start, n: len(job.blobs) - start, plainLen: len(blk)})
	}
	if ctx.Err() != nil {
		return leafResult{err: ctx.Err()}
	}
	res.node = nd
	return w.finishLeaf(res, parent)
}

// finishLeaf decides the leaf's address: zero for all holes, the parent's when nothing changed.
func (w *writeSession) finishLeaf(res leafResult, parent *node) leafResult {
	nd := res.node
	addr, enc := w.r.keys.encodeNode(nd)
	if addr.IsZero() {
		res.node = nil
		return res
	}
	if parent != nil && len(parent.addrs) == len(nd.addrs) {
		same := true
		for b := range nd.addrs {
			if nd.addrs[b] != parent.addrs[b] || nd.fps[b] != parent.fps[b] {
				same = false
				break
			}
		}
		if same {
			res.reused = true
		}
	}
	res.enc, res.addr = enc, addr
	return res
}

func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if string(b[:n]) != string(zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// collect takes results in volume order, packs new blobs and builds the tree bottom-up.
func (w *writeSession) collect(ctx context.Context, order <-chan *leafJob) error {
	var done int64
	for job := range order {
		select {
		case <-job.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if job.reuse > 0 {
			p := w.o.Parent
			for k := range job.reuse {
				addr, err := w.r.leafAddress(ctx, p.Root, p.RootLevel, job.i+k)
				if err != nil {
					return fmt.Errorf("read parent block map: %w", err)
				}
				if err := w.push(1, addr); err != nil {
					return err
				}
			}
			w.stats.Blocks += min(job.reuse*LeafFanout, w.g.blocks-job.i*LeafFanout)
			done = min((job.i+job.reuse)*w.g.leafBytes(), w.g.size)
			if w.o.Progress != nil {
				w.o.Progress(done, w.g.size)
			}
			continue
		}
		if job.holes > 0 {
			for range job.holes {
				if err := w.push(1, Address{}); err != nil {
					return err
				}
			}
			w.stats.Blocks += min(job.holes*LeafFanout, w.g.blocks-job.i*LeafFanout)
			done = min((job.i+job.holes)*w.g.leafBytes(), w.g.size)
			if w.o.Progress != nil {
				w.o.Progress(done, w.g.size)
			}
			continue
		}
		res := job.res
		if res.err != nil {
			return res.err
		}
		w.stats.Blocks += res.stats.Blocks
		w.stats.DataBlocks += res.stats.DataBlocks - res.parentData
		w.stats.ReadBytes += job.read
		w.stats.ChangedBlocks += res.stats.ChangedBlocks
		w.forgetIndexed(job.since) // every leaf from this one on was planned after those packs were indexed
		for _, b := range res.newBlobs {
			at := job.i*w.g.leafBytes() + int64(b.block)*w.g.blockSize
			if err := w.addBlob(b.t, b.addr, job.blobs[b.off:b.off+b.n], b.plainLen, at, job.gen); err != nil {
				return err
			}
		}
		if job.blobs != nil {
			w.bufs.Put(job.blobs)
			job.blobs = nil
		}
		if res.node != nil && !res.reused {
			if err := w.ensureNode(res.addr, res.enc); err != nil {
				return err
			}
		}
		if w.ticket != nil && w.ticket.wanted.Load() {
			// A session running at once waits for blocks in the pack being filled.
			if err := w.flushPack(); err != nil {
				return err
			}
		}
		if err := w.push(1, res.addr); err != nil {
			return err
		}
		done = min((job.i+1)*w.g.leafBytes(), w.g.size)
		if w.o.Progress != nil {
			w.o.Progress(min(done, w.g.size), w.g.size)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if w.g.leaves == 0 {
		w.root = Address{}
	}
	// The last pack goes before the dependencies are settled: a session settling its own
	// then finds this one's packs all uploading, never one that waits for this session.
	if err := w.flushPack(); err != nil {
		return err
	}
	if err := w.settleDeps(ctx); err != nil {
		return err
	}
	if err := w.flushPack(); err != nil { // what settleDeps stored
		return err
	}
	return w.uploads.Wait()
}

// errPackAbandoned settles the ticket of a pack its failed session never stored.
var errPackAbandoned = errors.New("the backup that was storing it failed")

// settleDeps makes sure every data block this session left to another session's pack is
// stored and indexed before the session commits. A pack still filling is asked for (its
// session flushes it after the leaf it is on) and waited for up to sharedFlushWait; a pack
// handed to an upload is waited for. A block whose pack is lost, or was not flushed in time
// (its session may be stuck on a slow read), is read again from this session's volume and
// packed here (docs/design.md, "Backups running at once in one process share what they
// pack").
func (w *writeSession) settleDeps(ctx context.Context) error {
	if len(w.deps) == 0 {
		return nil
	}
	w.r.shared.waiting.Add(1)
	defer w.r.shared.waiting.Add(-1)
	// Closed sharedFlushWait after the first wait begins, and closed for every wait after it:
	// a timer's one tick would bound the wait for the first pack only.
	var expired chan struct{}
	ok := map[*packTicket]bool{}
	for _, d := range w.deps {
		t := d.t
		if _, seen := ok[t]; seen {
			continue
		}
		if !t.isFlushed() {
			t.wanted.Store(true)
			if expired == nil {
				expired = make(chan struct{})
				timer := time.AfterFunc(sharedFlushWait, func() { close(expired) })
				defer timer.Stop()
			}
			select {
			case <-t.flushed:
			case <-t.done:
			case <-expired:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if t.isFlushed() {
			select {
			case <-t.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		ok[t] = t.isFlushed() && t.err == nil
	}
	deps := w.deps
	var again []Address
	for addr, d := range deps {
		if ok[d.t] {
			w.stats.SharedBlobs++
			continue
		}
		again = append(again, addr)
	}
	w.deps = nil
	if len(again) == 0 {
		return nil
	}
	sort.Slice(again, func(i, j int) bool { return deps[again[i]].off < deps[again[j]].off })
	buf := w.bufs.Get(int(w.g.blockSize))
	defer w.bufs.Put(buf)
	var scratch, enc []byte
	for _, addr := range again {
		d := deps[addr]
		blk, a, err := w.r.sourceBlock(w.src, buf, d.off)
		if err != nil {
			return err
		}
		w.stats.ReadBytes += int64(len(blk))
		if a != addr {
			return fmt.Errorf("the volume changed while it was backed up (the block at offset %d differs from its first read): back it up again, from a snapshot (--force) if it is in use", d.off)
		}
		enc, scratch = w.r.keys.encodeBlob(enc[:0], scratch, blk, w.r.cfg.Compression, addr)
		if err := w.pack(BlobData, addr, enc, len(blk)); err != nil {
			return err
		}
	}
	return nil
}

// push adds a child address at the given level (1 = parents of leaves) and finishes nodes as
// they fill. The node finished at the root level is the tree's root.
func (w *writeSession) push(level int, child Address) error {
	if level > w.g.rootLevel {
		w.root = child
		return nil
	}
	lb := &w.levels[level]
	lb.children = append(lb.children, child)
	below := w.nodesAt(level - 1)
	if len(lb.children) < NodeFanout && lb.done*NodeFanout+int64(len(lb.children)) < below {
		return nil
	}
	children := lb.children
	lb.children = nil
	lb.done++
	addr, enc := w.r.keys.encodeNode(&node{level: level, addrs: children})
	if !addr.IsZero() {
		if err := w.ensureNode(addr, enc); err != nil {
			return err
		}
	}
	return w.push(level+1, addr)
}

func (w *writeSession) nodesAt(level int) int64 {
	n := w.g.leaves
	for range level {
		n = (n + NodeFanout - 1) / NodeFanout
	}
	return n
}

// ensureNode stores a tree node unless the index or this session already has it. Whatever
// the index knows is safe to reuse: the lock keeps gc out until the manifest that reaches it
// is stored, and the index forgot every pack gc deleted when the lock was taken.
func (w *writeSession) ensureNode(addr Address, enc []byte) error {
	if _, ok := w.stored[addr]; ok {
		return nil
	}
	w.stored[addr] = struct{}{}
	loc, known, err := w.r.idx.Lookup(addr)
	if err != nil || known && !w.r.idx.Damaged(addr, loc) {
		return err
	}
	stored, _ := w.r.keys.encodeBlob(nil, nil, enc, w.r.cfg.Compression, addr)
	return w.addBlob(BlobTree, addr, stored, len(enc), -1, 0)
}

// addBlob puts a stored blob into the current pack unless this session already has it, or,
// for a data block (at is its offset in the volume; -1 for a tree node), another session
// running at once has just packed it: then it depends on that pack (settleDeps), or has
// just indexed it. gen is the shared generation before the block's dedup check.
func (w *writeSession) addBlob(t BlobType, addr Address, stored []byte, plainLen int, at int64, gen uint64) error {
	w.mu.Lock()
	_, dup := w.packed[addr]
	if !dup {
		w.packed[addr] = struct{}{}
	}
	w.mu.Unlock()
	if dup {
		return nil
	}
	if t == BlobData && at >= 0 && len(w.deps) < maxSharedDeps {
		for {
			o, cur := w.r.shared.claim(addr, w.currentTicket(), gen)
			if o != nil {
				if w.deps == nil {
					w.deps = map[Address]sharedDep{}
				}
				w.deps[addr] = sharedDep{t: o, off: at}
				return nil
			}
			if cur == gen {
				break // claimed: no pack was indexed elsewhere since the last lookup
			}
			// Another session indexed a pack since the block was looked up, and its
			// blobs left the registry: the block may be in it.
			loc, known, err := w.r.idx.Lookup(addr)
			if err != nil {
				return err
			}
			if known && !w.r.idx.Damaged(addr, loc) {
				w.stats.SharedBlobs++
				return nil
			}
			gen = cur
		}
	}
	return w.pack(t, addr, stored, plainLen)
}

// currentTicket returns the ticket of the pack being filled, which starts with its first blob
// (or the first claim for it).
func (w *writeSession) currentTicket() *packTicket {
	if w.ticket == nil {
		w.ticket = newTicket(w)
	}
	return w.ticket
}

// pack puts a stored blob into the current pack.
func (w *writeSession) pack(t BlobType, addr Address, stored []byte, plainLen int) error {
	w.currentTicket()
	if !w.packer.started() {
		// A pack file or buffer only once there is something to pack.
		if w.spool != nil {
			f, err := w.spool.Spool(w.uctx)
			if err != nil {
				return fmt.Errorf("store a pack: %w", err)
			}
			w.packer.spool(f)
		} else {
			w.packer.buf = w.bufs.Get(w.packLen)[:0]
		}
	}
	w.packer.add(t, addr, stored, plainLen)
	w.stats.NewBlobs++
	w.stats.NewBytes += int64(len(stored))
	w.stats.NewPlainBytes += int64(plainLen)
	if w.packer.size() >= w.r.cfg.PackSize {
		return w.flushPack()
	}
	return nil
}

// flushPack hands the current pack to an uploader.
func (w *writeSession) flushPack() error {
	if w.packer.empty() {
		return nil
	}
	if w.uctx.Err() != nil {
		// The cause is the failed upload's error, which says what went wrong; the plain
		// context error would only say "canceled". The pack is abandoned by run.
		return context.Cause(w.uctx)
	}
	w.stats.Packs++
	t := w.ticket // set by pack; settled by the upload, whatever its outcome
	w.ticket = nil
	close(t.flushed)
	if w.packer.file != nil {
		filled := w.packer.entries // finishSpool drops them when it fails
		id, f, size, entries, err := w.packer.finishSpool(w.r.keys)
		if err != nil {
			w.r.shared.settle(t, filled, err)
			return err
		}
		w.uploads.Go(func() error {
			err := w.r.storeSpooledPack(w.uctx, w.o.Lock, w.spool, id, f, size, entries)
			w.r.shared.settle(t, entries, err)
			if err != nil {
				return err
			}
			w.unpend(entries)
			return nil
		})
		return nil
	}
	id, data, entries := w.packer.finish(w.r.keys) // the next addBlob takes a new buffer
	w.uploads.Go(func() error {
		err := w.r.storePack(w.uctx, w.o.Lock, id, data, entries)
		w.r.shared.settle(t, entries, err)
		if err != nil {
			return err
		}
		w.bufs.Put(data)
		w.unpend(entries)
		return nil
	})
	return nil
}

// unpend counts a stored pack as indexed. Its blobs stay in packed until forgetIndexed:
// a leaf whose dedup check ran before the pack was indexed may have them too.
func (w *writeSession) unpend(entries []PackEntry) {
	w.mu.Lock()
	w.indexed++
	w.recent = append(w.recent, entries)
	w.mu.Unlock()
}

// packsIndexed returns how many of the session's packs are indexed.
func (w *writeSession) packsIndexed() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.indexed
}

// forgetIndexed drops from packed the blobs of the first n packs indexed: every dedup check
// still to come finds them in the index.
func (w *writeSession) forgetIndexed(n uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.recent) > 0 && w.indexed-uint64(len(w.recent)) < n {
		for _, e := range w.recent[0] {
			delete(w.packed, e.Addr)
		}
		w.recent[0] = nil
		w.recent = w.recent[1:]
	}
}
