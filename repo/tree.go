package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/zeebo/xxh3"
	"golang.org/x/sync/errgroup"
)

// A backup's block map is a tree. Leaves (level 0) hold, for LeafFanout consecutive blocks, each
// block's xxh3-128 change fingerprint and blob address; interior nodes hold NodeFanout child
// addresses. The zero address (and zero fingerprint) is a hole: an all-zero block or subtree.
// Nodes are blobs like any other, so an unchanged subtree has the same address as in the parent
// backup and is stored once: an incremental of an unchanged volume adds only its manifest.
//
// Node encoding: kind (1 = leaf, 2 = interior), level, two zero bytes, entry count (u32 LE),
// then the entries: 16-byte fingerprint (hi, lo as u64 LE) + 32-byte address for leaves,
// 32-byte addresses for interior nodes.
const (
	nodeLeaf     = 1
	nodeInterior = 2
	nodeHeader   = 8
	leafEntry    = 48
)

// node is a decoded tree node. For a leaf, fps[i] and addrs[i] describe block i of the leaf.
type node struct {
	level int
	fps   []xxh3.Uint128
	addrs []Address
}

func (n *node) size() int { return 64 + len(n.fps)*16 + len(n.addrs)*32 }

// encodedLen is the length of the node's encoding.
func (n *node) encodedLen() int {
	if n.level == 0 {
		return nodeHeader + len(n.addrs)*leafEntry
	}
	return nodeHeader + len(n.addrs)*len(Address{})
}

func (n *node) encode(dst []byte) []byte {
	kind := byte(nodeInterior)
	if n.level == 0 {
		kind = nodeLeaf
	}
	dst = append(dst, kind, byte(n.level), 0, 0)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(n.addrs)))
	for i, a := range n.addrs {
		if n.level == 0 {
			dst = binary.LittleEndian.AppendUint64(dst, n.fps[i].Hi)
			dst = binary.LittleEndian.AppendUint64(dst, n.fps[i].Lo)
		}
		dst = append(dst, a[:]...)
	}
	return dst
}

// encodeNode is the one rule for a block map node's address, which a backup (finishLeaf, push)
// and repair's rebuild (buildNode) must agree on to the bit: zero, a hole, when every entry is
// zero; else the keyed address of its encoding, returned with the encoding.
func (k *keys) encodeNode(nd *node) (Address, []byte) {
	if !slices.ContainsFunc(nd.addrs, func(a Address) bool { return !a.IsZero() }) {
		return Address{}, nil
	}
	enc := nd.encode(make([]byte, 0, nd.encodedLen()))
	return k.address(BlobTree, enc), enc
}

func decodeNode(b []byte) (*node, error) {
	if len(b) < nodeHeader {
		return nil, fmt.Errorf("tree node: short: %w", ErrCorrupt)
	}
	if b[2] != 0 || b[3] != 0 {
		return nil, fmt.Errorf("tree node: reserved header bytes set: %w", ErrCorrupt)
	}
	n := &node{level: int(b[1])}
	count := int(binary.LittleEndian.Uint32(b[4:]))
	width := 32
	switch {
	case b[0] == nodeLeaf && n.level == 0:
		width = leafEntry
		if count > LeafFanout {
			return nil, fmt.Errorf("tree node: %d entries: %w", count, ErrCorrupt)
		}
	case b[0] == nodeInterior && n.level > 0:
		if count > NodeFanout {
			return nil, fmt.Errorf("tree node: %d entries: %w", count, ErrCorrupt)
		}
	default:
		return nil, fmt.Errorf("tree node: kind %d level %d: %w", b[0], n.level, ErrCorrupt)
	}
	if len(b) != nodeHeader+count*width {
		return nil, fmt.Errorf("tree node: length %d for %d entries: %w", len(b), count, ErrCorrupt)
	}
	n.addrs = make([]Address, count)
	if n.level == 0 {
		n.fps = make([]xxh3.Uint128, count)
	}
	p := b[nodeHeader:]
	for i := range count {
		if n.level == 0 {
			n.fps[i] = xxh3.Uint128{Hi: binary.LittleEndian.Uint64(p), Lo: binary.LittleEndian.Uint64(p[8:])}
			p = p[16:]
		}
		copy(n.addrs[i][:], p)
		p = p[32:]
	}
	return n, nil
}

// geometry is the shape of a block map for a volume size and block size.
type geometry struct {
	size      int64
	blockSize int64
	blocks    int64
	leaves    int64
	rootLevel int
}

func newGeometry(size int64, blockSize int) geometry {
	g := geometry{size: size, blockSize: int64(blockSize)}
	g.blocks = (size + g.blockSize - 1) / g.blockSize
	g.leaves = (g.blocks + LeafFanout - 1) / LeafFanout
	for n := g.leaves; n > 1; n = (n + NodeFanout - 1) / NodeFanout {
		g.rootLevel++
	}
	return g
}

// leafBytes is the volume span one leaf covers.
func (g geometry) leafBytes() int64 { return g.blockSize * LeafFanout }

// checkLeaf says whether lf, leaf i of the block map, holds as many blocks as its place in the
// volume does: every leaf but the last is full. A shorter or longer one is damage, never the
// end of the data nor holes (a read, a restore and SEEK_DATA judge it alike).
func (g geometry) checkLeaf(i int64, lf *node) error {
	if want := min(LeafFanout, g.blocks-i*LeafFanout); int64(len(lf.addrs)) != want {
		return fmt.Errorf("leaf has %d blocks, want %d: %w", len(lf.addrs), want, ErrCorrupt)
	}
	return nil
}

// blockLen is the length of block b (the last one may be short).
func (g geometry) blockLen(b int64) int {
	if rest := g.size - b*g.blockSize; rest < g.blockSize {
		return int(rest)
	}
	return int(g.blockSize)
}

// span returns how many leaves one child of a node at level h covers.
func span(h int) int64 {
	s := int64(1)
	for range h - 1 {
		s *= NodeFanout
	}
	return s
}

// node loads a decoded tree node through the node cache.
func (r *Repository) node(ctx context.Context, addr Address) (*node, error) {
	return r.nodes.get(ctx, addr, func(ctx context.Context) (*node, error) {
		b, err := r.loadBlob(ctx, BlobTree, addr)
		if err != nil {
			return nil, err
		}
		return decodeNode(b)
	})
}

// nodeLoader loads a decoded tree node: r.node (through the node cache) or storeNodes.
type nodeLoader func(ctx context.Context, addr Address) (*node, error)

// storeNodesKept bounds the upper nodes a storeNodes loader keeps: one level-1 node covers
// 256 leaves (1 GiB of volume at 16 KiB blocks) and is about 12 KiB decoded, so this is some
// 12 MiB, and the leaves a restore reads at once share far fewer.
const storeNodesKept = 1024

// storeNodes returns a nodeLoader that reads every node from the backend, never from the
// node cache, and keeps upper nodes (not leaves) it read, up to storeNodesKept at a time
// (then it starts again), so a walk of every leaf in order reads each upper node about once
// (RestoreOptions.FromStore).
func (r *Repository) storeNodes() nodeLoader {
	var mu sync.Mutex
	upper := map[Address]*node{}
	return func(ctx context.Context, addr Address) (*node, error) {
		mu.Lock()
		n := upper[addr]
		mu.Unlock()
		if n != nil {
			return n, nil
		}
		b, err := r.loadBlob(ctx, BlobTree, addr)
		if err != nil {
			return nil, err
		}
		if n, err = decodeNode(b); err != nil {
			return nil, err
		}
		if n.level > 0 {
			mu.Lock()
			if len(upper) >= storeNodesKept {
				clear(upper)
			}
			upper[addr] = n
			mu.Unlock()
		}
		return n, nil
	}
}

// leafAddress returns the address of leaf number i of the tree under root; zero where the
// leaf is a hole.
func (r *Repository) leafAddress(ctx context.Context, root Address, rootLevel int, i int64) (Address, error) {
	return r.leafAddressVia(ctx, r.node, root, rootLevel, i)
}

func (r *Repository) leafAddressVia(ctx context.Context, load nodeLoader, root Address, rootLevel int, i int64) (Address, error) {
	addr, level := root, rootLevel
	for level > 0 {
		if addr.IsZero() {
			return Address{}, nil
		}
		n, err := load(ctx, addr)
		if err != nil {
			return Address{}, err
		}
		if n.level != level {
			return Address{}, fmt.Errorf("tree node %s: level %d, want %d: %w", addr.Short(), n.level, level, ErrCorrupt)
		}
		c := (i / span(level)) % NodeFanout
		if c >= int64(len(n.addrs)) {
			return Address{}, fmt.Errorf("tree node %s: no child %d: %w", addr.Short(), c, ErrCorrupt)
		}
		addr, level = n.addrs[c], level-1
	}
	return addr, nil
}

// leaf returns leaf number i of the tree under root, or nil where the leaf is a hole.
func (r *Repository) leaf(ctx context.Context, root Address, rootLevel int, i int64) (*node, error) {
	return r.leafVia(ctx, r.node, root, rootLevel, i)
}

func (r *Repository) leafVia(ctx context.Context, load nodeLoader, root Address, rootLevel int, i int64) (*node, error) {
	addr, err := r.leafAddressVia(ctx, load, root, rootLevel, i)
	if err != nil || addr.IsZero() {
		return nil, err
	}
	n, err := load(ctx, addr)
	if err != nil {
		return nil, err
	}
	if n.level != 0 {
		return nil, fmt.Errorf("tree node %s: level %d, want a leaf: %w", addr.Short(), n.level, ErrCorrupt)
	}
	return n, nil
}

// DifferFromParent reads the given blocks of src and returns those whose content is not what
// the parent recorded for them, in the order given: a spot check of changed-block tracking,
// whose "unchanged" cannot be proven. It returns the bytes it read too. The blocks are
// checked probeWorkers at a time: each is a random read of the volume and of a parent leaf,
// and one after another they were most of a tracked incremental of a large volume.
func (r *Repository) DifferFromParent(ctx context.Context, src io.ReaderAt, p *Parent, blocks []int64) (differ []int64, read int64, err error) {
	g := newGeometry(p.Size, r.cfg.BlockSize)
	for _, b := range blocks {
		if b < 0 || b >= g.blocks {
			return nil, 0, fmt.Errorf("block %d outside a volume of %d blocks", b, g.blocks)
		}
	}
	differs := make([]bool, len(blocks))
	var n atomic.Int64
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(probeWorkers)
	for i, b := range blocks {
		eg.Go(func() error {
			lf, err := r.leaf(ctx, p.Root, p.RootLevel, b/LeafFanout)
			if err != nil {
				return fmt.Errorf("read parent block map: %w", err)
			}
			blk := make([]byte, g.blockLen(b))
			if _, err := src.ReadAt(blk, b*g.blockSize); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("read volume at offset %d: %w", b*g.blockSize, err)
			}
			n.Add(int64(len(blk)))
			e := b % LeafFanout
			if lf == nil || e >= int64(len(lf.addrs)) || lf.addrs[e].IsZero() {
				differs[i] = !isZero(blk)
			} else {
				differs[i] = xxh3.Hash128(blk) != lf.fps[e]
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return nil, n.Load(), err
	}
	for i, d := range differs {
		if d {
			differ = append(differ, blocks[i])
		}
	}
	return differ, n.Load(), nil
}

// probeWorkers is how many blocks DifferFromParent checks at once.
const probeWorkers = 8

// Changed returns the byte ranges, sorted and merged, where backup m may differ from base: the
// blocks whose addresses differ in their block maps. Both are backups in this repository of
// one volume size. An address is the keyed hash of a block's content, so a block outside the
// ranges holds in m what it holds in base; subtrees with equal addresses are not loaded. It
// is what a copy to another repository reads of an incremental whose parent was copied
// before (design.md, "Copies to another repository").
func (r *Repository) Changed(ctx context.Context, m, base *Manifest) ([][2]int64, error) {
	if m.Size != base.Size {
		return nil, fmt.Errorf("backups %s and %s are of different sizes (%d and %d bytes)", m.ID, base.ID, m.Size, base.Size)
	}
	g := newGeometry(m.Size, r.cfg.BlockSize)
	if m.RootLevel != g.rootLevel || base.RootLevel != g.rootLevel {
		return nil, fmt.Errorf("backups %s and %s: root levels %d and %d, want %d: %w", m.ID, base.ID, m.RootLevel, base.RootLevel, g.rootLevel, ErrCorrupt)
	}
	var out [][2]int64
	add := func(b int64) {
		start, end := b*g.blockSize, min((b+1)*g.blockSize, g.size)
		if n := len(out); n > 0 && out[n-1][1] == start {
			out[n-1][1] = end
			return
		}
		out = append(out, [2]int64{start, end})
	}
	load := func(a Address, level int) (*node, error) {
		if a.IsZero() {
			return &node{level: level}, nil
		}
		n, err := r.node(ctx, a)
		if err != nil {
			return nil, err
		}
		if n.level != level {
			return nil, fmt.Errorf("tree node %s: level %d, want %d: %w", a.Short(), n.level, level, ErrCorrupt)
		}
		return n, nil
	}
	entry := func(n *node, i int64) Address {
		if i < int64(len(n.addrs)) {
			return n.addrs[i]
		}
		return Address{}
	}
	// first is the first leaf under the nodes a and b.
	var walk func(a, b Address, level int, first int64) error
	walk = func(a, b Address, level int, first int64) error {
		if a == b {
			return nil
		}
		na, err := load(a, level)
		if err != nil {
			return err
		}
		nb, err := load(b, level)
		if err != nil {
			return err
		}
		if level == 0 {
			for e := range int64(LeafFanout) {
				blk := first*LeafFanout + e
				if blk >= g.blocks {
					break
				}
				if entry(na, e) != entry(nb, e) {
					add(blk)
				}
			}
			return nil
		}
		for c := range int64(NodeFanout) {
			child := first + c*span(level)
			if child >= g.leaves {
				break
			}
			if err := walk(entry(na, c), entry(nb, c), level-1, child); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(m.Root, base.Root, g.rootLevel, 0); err != nil {
		return nil, fmt.Errorf("compare the block maps of backups %s and %s: %w", m.ID, base.ID, err)
	}
	return out, nil
}
