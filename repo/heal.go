package repo

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/zeebo/xxh3"
)

// Heal stores again every block of src whose content hashes to one of the lost addresses,
// the way Proxmox re-stores a chunk its verify marked bad: a lost block that a volume still
// holds comes back under the same address, so every backup that needs it restores again. It
// reads only src's data extents, and returns the addresses it stored (removed from lost).
func (r *Repository) Heal(ctx context.Context, src Source, lost map[Address]struct{}) ([]Address, error) {
	if len(lost) == 0 {
		return nil, nil
	}
	lk, err := r.Lock(ctx, LockShared, "repair")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	bs := int64(r.cfg.BlockSize)
	buf := make([]byte, bs)
	h := &healStore{r: r, lk: lk}
	var scratch []byte
	for off := int64(0); off < src.Size(); {
		start, end, err := src.NextData(off)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return h.healed, err
		}
		// Blocks are aligned to the block size: start at the block the extent begins in.
		for b := start / bs * bs; b < end; b += bs {
			if err := ctx.Err(); err != nil {
				return h.healed, err
			}
			blk, a, err := r.sourceBlock(src, buf, b)
			if err != nil {
				return h.healed, err
			}
			if _, ok := lost[a]; !ok {
				continue
			}
			var sealed []byte
			sealed, scratch = r.keys.encodeBlob(nil, scratch, blk, r.cfg.Compression, a)
			h.add(BlobData, a, sealed, len(blk))
			delete(lost, a)
			if err := h.flushFull(ctx); err != nil {
				return h.healed, err
			}
		}
		off = max(end, off+1)
	}
	return h.done(ctx)
}

// sourceBlock reads the block of src at off (a multiple of the block size; the last block
// may be short) into buf, which holds a block, and returns it with its address.
func (r *Repository) sourceBlock(src Source, buf []byte, off int64) ([]byte, Address, error) {
	blk := buf[:min(int64(r.cfg.BlockSize), src.Size()-off)]
	if _, err := src.ReadAt(blk, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, Address{}, fmt.Errorf("read volume at offset %d: %w", off, err)
	}
	return blk, r.keys.address(BlobData, blk), nil
}

// readAgain is called when the stored copy of addr at loc did not open (ErrCorrupt) for a
// reader (a restore, a verification, the mount, a check's walk). It reads that copy once more
// and returns it, decoded into dst when it has room, if it opens now: a read that went wrong
// on the way fails no restore and marks no backup damaged. When it fails again the index marks
// the copy damaged: reads still go there, but backups no longer deduplicate against it, so the
// next backup that meets the same data stores it again, and its new copy mends every backup
// that needs it, as repair's heal does. Until 2026-12-06 every later backup of the same data
// deduplicated against the damaged copy and was committed available, and damaged, until
// repair ran. The mark is stored in the repository too, for other gateways and a rebuilt
// index (LearnDamaged). A second read that fails otherwise (an outage, a cancelled read)
// judges nothing.
func (r *Repository) readAgain(ctx context.Context, t BlobType, addr Address, loc Location, dst []byte) ([]byte, bool) {
	plain, good, _ := r.readAgainJudged(ctx, t, addr, loc, dst)
	return plain, good
}

// readAgainJudged is readAgain, and says too whether the copy is damaged: it failed to open a
// second time, or was marked so before. Neither good nor damaged, the second read judged
// nothing (an outage, a cancel) [TestCheckStopsWhenTheSecondReadOfABlobCannotBeMade].
func (r *Repository) readAgainJudged(ctx context.Context, t BlobType, addr Address, loc Location, dst []byte) (plain []byte, good, damaged bool) {
	stored, err := r.be.GetRange(ctx, loc.Pack.Key(), int64(loc.Offset), int64(loc.Length))
	if err == nil {
		if plain, _, err = r.keys.decodeBlob(dst, nil, stored, t, addr); err == nil {
			return plain, true, false
		}
	}
	if !errors.Is(err, ErrCorrupt) {
		return nil, false, false
	}
	if r.idx.Damaged(addr, loc) {
		return nil, false, true
	}
	if err := r.idx.MarkDamaged(addr, loc); err != nil {
		r.logf("blob %s in pack %s is damaged, and the index could not mark it so: %v", addr.Short(), loc.Pack, err)
	} else {
		r.logf("blob %s in pack %s is damaged: the next backup of the same data stores it again", addr.Short(), loc.Pack)
		r.storeDamagedMark(ctx, addr, loc)
	}
	return nil, false, true
}

// ForgetDamaged makes the index forget the lost blobs (a check's) whose only copy it knows is
// damaged or gone: the next full backup of a volume that holds the same data stores it again
// (as Proxmox re-uploads a chunk its verify marked bad). Nothing is deleted from the backend.
// A blob the index now locates at a copy not marked damaged that reads and verifies was
// stored again since the check (a backup that met the mark) and is kept: forgotten, the
// sound copy was lost to every backup that needs it [TestForgetDamagedKeepsACopyStoredAgain].
// It returns how many it forgot and how many it kept: when it kept any, the check's list of
// damaged backups is out of date. Only an outage, a refused read or a cancel is an error.
func (r *Repository) ForgetDamaged(ctx context.Context, lost map[Address]struct{}) (forgot, kept int, err error) {
	addrs := make([]Address, 0, len(lost))
	gone := map[PackID]bool{} // packs a read found missing or short: their other blobs are too
	for a := range lost {
		loc, ok, err := r.idx.Lookup(a)
		if err != nil {
			return 0, 0, err
		}
		if !ok {
			continue
		}
		if !r.idx.Damaged(a, loc) && !gone[loc.Pack] {
			err := r.verifyCopy(ctx, PackEntry{Addr: a, Location: loc})
			switch {
			case err == nil:
				kept++
				continue
			case errors.Is(err, backend.ErrNotFound), errors.Is(err, backend.ErrRange):
				gone[loc.Pack] = true
			case !isDamage(err):
				return 0, 0, err
			}
		}
		addrs = append(addrs, a)
	}
	return len(addrs), kept, r.idx.ForgetBlobs(addrs)
}

// Mended reports whether every one of the data blocks addrs (a damaged verification's lost
// blocks) was stored again: the index reads each at a copy not marked damaged, and each reads
// and verifies there. A copy that does not is marked damaged by the read (readAgain), and the
// answer is false; only an outage or a cancelled read is an error (docs/design.md, "A damaged
// backup that a later backup mended says so").
func (r *Repository) Mended(ctx context.Context, addrs []Address) (bool, error) {
	if len(addrs) == 0 {
		return false, nil
	}
	for _, a := range addrs {
		loc, ok, err := r.idx.Lookup(a)
		if err != nil {
			return false, err
		}
		if !ok || r.idx.Damaged(a, loc) {
			return false, nil
		}
	}
	for _, a := range addrs {
		if _, err := r.loadBlob(ctx, BlobData, a); isDamage(err) {
			return false, nil
		} else if err != nil {
			return false, err
		}
	}
	return true, nil
}

// healStore packs the blobs a heal stores again and stores each pack under the heal's lock,
// keeping which addresses landed.
type healStore struct {
	r       *Repository
	lk      *Lock
	p       packer
	healed  []Address // stored
	pending []Address // in p
}

func (h *healStore) add(t BlobType, a Address, sealed []byte, plainLen int) {
	h.p.add(t, a, sealed, plainLen)
	h.pending = append(h.pending, a)
}

// flushFull stores the pack once it is full.
func (h *healStore) flushFull(ctx context.Context) error {
	if h.p.size() < h.r.cfg.PackSize {
		return nil
	}
	return h.flush(ctx)
}

func (h *healStore) flush(ctx context.Context) error {
	if h.p.empty() {
		return nil
	}
	if err := h.lk.Check(); err != nil {
		return err
	}
	id, data, entries := h.p.finish(h.r.keys)
	if err := h.r.storePack(ctx, h.lk, id, data, entries); err != nil {
		return err
	}
	h.healed = append(h.healed, h.pending...)
	h.pending = h.pending[:0]
	return nil
}

// done stores what is left and returns every address stored.
func (h *healStore) done(ctx context.Context) ([]Address, error) {
	err := h.flush(ctx)
	return h.healed, err
}

// LostNode is a block map node some backup needs that cannot be read, with where it sits in
// that backup's block map: its level, the first leaf under it, and the map's geometry (the
// volume's size and block size).
type LostNode struct {
	Level     int
	FirstLeaf int64
	Size      int64
	BlockSize int
}

// HealNodes stores again the lost block map nodes that src still determines: each is built
// again from src's blocks as a backup builds it (a leaf from each block's fingerprint and
// address, an interior node from its children's addresses, a hole where all is zero), and
// stored only when the address of what was built is the lost node's. The address is the keyed
// hash of the node's content, so a match is the lost node itself: a volume changed since
// builds another address and stores nothing (docs/design.md, "Repair rebuilds lost block map
// nodes"). A check cannot see below a lost node, so what is lost there too is found here: the
// nodes below a rebuilt one that the index does not know, or knows only at a copy marked
// damaged (a check that read the packs marked them), are stored with it, and such data blocks
// are added to lostData for Heal to store from the same volume; each up to a bound, past which
// the next check names the rest. It returns the nodes it stored (those of lost removed from it).
func (r *Repository) HealNodes(ctx context.Context, src Source, lost map[Address]LostNode, lostData map[Address]struct{}) ([]Address, error) {
	if len(lost) == 0 {
		return nil, nil
	}
	lk, err := r.Lock(ctx, LockShared, "repair")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	// The highest first: its rebuild rebuilds the lost nodes below it too. Lost nodes at one
	// place (level, first leaf, geometry) are built once: the roots of several backups of one
	// volume read it once, not once each.
	addrs := make([]Address, 0, len(lost))
	for a := range lost {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b Address) int { return cmp.Compare(lost[b].Level, lost[a].Level) })
	var places []LostNode
	atPlace := map[LostNode][]Address{}
	for _, a := range addrs {
		ln := lost[a]
		if ln.BlockSize != r.cfg.BlockSize || ln.Level < 0 {
			continue // of a block size this cannot build
		}
		if _, ok := atPlace[ln]; !ok {
			places = append(places, ln)
		}
		atPlace[ln] = append(atPlace[ln], a)
	}
	h := &healStore{r: r, lk: lk}
	var scratch []byte
	buf := make([]byte, r.cfg.BlockSize)
	stored := r.storedIn(ctx)
	for _, ln := range places {
		if !slices.ContainsFunc(atPlace[ln], func(a Address) bool { _, ok := lost[a]; return ok }) {
			continue // healed by a build above
		}
		g := newGeometry(ln.Size, ln.BlockSize)
		under := int64(1)
		if ln.Level > 0 {
			under = span(ln.Level) * NodeFanout
		}
		if ln.FirstLeaf >= g.leaves || src.Size() < min((ln.FirstLeaf+under)*g.leafBytes(), g.size) {
			continue // the volume does not reach that far
		}
		if ln.Level > 0 && src.Size() != ln.Size {
			continue // not the backup's volume, or resized since: not worth reading it all
		}
		// A built node whose address is a lost one is that node (the address is the keyed
		// hash of its content), wherever the build met it: stored whatever the top. What is
		// below and unknown to the index is stored only below a top that matched.
		found := map[Address][]byte{}
		below := map[Address][]byte{}
		var belowBytes int
		var belowData []Address
		got, err := r.buildNode(ctx, src, g, ln.Level, ln.FirstLeaf, buf, func(t BlobType, n Address, enc []byte) {
			_, isLost := lost[n]
			switch {
			case t == BlobTree && isLost:
				found[n] = enc
			case t == BlobTree && belowBytes < healBelowBytes && !stored(n):
				below[n] = enc
				belowBytes += len(enc)
			case t == BlobData && len(belowData) < healBelowBlocks && !stored(n):
				belowData = append(belowData, n)
			}
		})
		if err != nil {
			return h.healed, err
		}
		if slices.Contains(atPlace[ln], got) {
			maps.Copy(found, below)
			for _, d := range belowData {
				lostData[d] = struct{}{}
			}
		}
		for n, enc := range found {
			var sealed []byte
			sealed, scratch = r.keys.encodeBlob(nil, scratch, enc, r.cfg.Compression, n)
			h.add(BlobTree, n, sealed, len(enc))
			delete(lost, n)
		}
		if err := h.flushFull(ctx); err != nil {
			return h.healed, err
		}
	}
	return h.done(ctx)
}

// Bounds on what HealNodes stores below a rebuilt node besides the lost nodes themselves: the
// encodings it keeps until the node is known to match, and the data block addresses it hands
// to Heal. A check after names what is past them.
const (
	healBelowBytes  = 64 << 20
	healBelowBlocks = 1 << 20
)

// storedIn returns whether the index reads a blob at a copy not marked damaged in a pack the
// backend holds (a missing pack's blobs are not damaged, and no check read them), asking the
// backend once per pack.
func (r *Repository) storedIn(ctx context.Context) func(Address) bool {
	there := map[PackID]bool{}
	return func(a Address) bool {
		loc, ok, err := r.idx.Lookup(a)
		if err != nil || !ok || r.idx.Damaged(a, loc) {
			return false
		}
		have, known := there[loc.Pack]
		if !known {
			_, err := r.be.Stat(ctx, loc.Pack.Key())
			have = !errors.Is(err, backend.ErrNotFound) // an outage says nothing: taken as there
			there[loc.Pack] = have
		}
		return have
	}
}

// buildNode builds the block map node at level over the leaves from first on, from src's
// blocks, as the backup that wrote the map did (writeSession.process, finishLeaf, push), and
// returns its address (zero for a hole). Each data block that is not a hole is passed to found
// with its address (and no bytes), and each node it builds that is not a hole with its encoding.
func (r *Repository) buildNode(ctx context.Context, src Source, g geometry, level int, first int64, buf []byte, found func(BlobType, Address, []byte)) (Address, error) {
	if err := ctx.Err(); err != nil {
		return Address{}, err
	}
	var nd *node
	if level == 0 {
		b0 := first * LeafFanout
		n := int(min(LeafFanout, g.blocks-b0))
		nd = &node{fps: make([]xxh3.Uint128, n), addrs: make([]Address, n)}
		for i := range n {
			b := b0 + int64(i)
			blk := buf[:g.blockLen(b)]
			if _, err := src.ReadAt(blk, b*g.blockSize); err != nil && !errors.Is(err, io.EOF) {
				return Address{}, fmt.Errorf("read volume at offset %d: %w", b*g.blockSize, err)
			}
			if !isZero(blk) {
				nd.fps[i], nd.addrs[i] = xxh3.Hash128(blk), r.keys.address(BlobData, blk)
				found(BlobData, nd.addrs[i], nil)
			}
		}
	} else {
		nd = &node{level: level}
		for c := range int64(NodeFanout) {
			child := first + c*span(level)
			if child >= g.leaves {
				break
			}
			a, err := r.buildNode(ctx, src, g, level-1, child, buf, found)
			if err != nil {
				return Address{}, err
			}
			nd.addrs = append(nd.addrs, a)
		}
	}
	a, enc := r.keys.encodeNode(nd)
	if !a.IsZero() {
		found(BlobTree, a, enc)
	}
	return a, nil
}
