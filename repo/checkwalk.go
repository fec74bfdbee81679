package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Problem classes of a check. Only damaged data and missing objects make a repository
// unhealthy (exit 8): the others are fixed by a sync, a gc or a rebuild.
const (
	ProblemDamaged = "damaged data"
	ProblemMissing = "missing object"
	ProblemIndex   = "index out of date"
)

// classify says which class an error reading an object belongs to.
func classify(err error) string {
	var mp missingPack
	switch {
	case errors.Is(err, backend.ErrRange):
		return ProblemDamaged // a truncated object
	case errors.As(err, &mp), errors.Is(err, backend.ErrNotFound):
		return ProblemMissing
	default:
		return ProblemDamaged
	}
}

// checkProblem says why check could not read or find a blob.
type checkProblem struct {
	class, what string
	data        bool      // a data blob (what Heal can find again in a volume)
	node        *LostNode // a block map node, and where it sits (what HealNodes rebuilds)
}

// checkWalk visits a backup's block map like Walk, but goes on past what it cannot read: each
// unreadable tree node, and each data block that is not indexed or whose pack is missing, is
// reported with the byte range of the volume it covers. seen holds the tree nodes walked,
// shared across backups, each with whether its subtree was clean: a clean subtree many backups
// share is checked once, and one with a problem is walked again for every backup (and every
// place in it) that reaches it, so each is told the bytes it costs there. Data blocks are
// looked up each time a leaf is walked, so memory grows with the tree nodes (one per
// LeafFanout blocks), not with the blobs. bad remembers damaged addresses so that every backup
// that reaches one is told.
func (r *Repository) checkWalk(ctx context.Context, m *Manifest, seen map[Address]bool, bad map[Address]checkProblem,
	stored map[PackID]int64, visit func(Location), report func(class string, start, end int64, what string)) error {
	g := newGeometry(m.Size, m.BlockSize)
	bytesOf := func(firstLeaf, leaves int64) (int64, int64) {
		start := firstLeaf * g.leafBytes()
		return start, min(start+leaves*g.leafBytes(), m.Size)
	}
	checkBlob := func(a Address, t BlobType, start, end int64) bool {
		if p, ok := bad[a]; ok {
			report(p.class, start, end, p.what)
			return false
		}
		loc, ok, err := r.idx.Lookup(a)
		var p checkProblem
		switch {
		case err != nil:
			p = checkProblem{class: ProblemIndex, what: err.Error()}
		case !ok:
			p = checkProblem{ProblemMissing, fmt.Sprintf("%s blob %s is in no pack the index knows", typeName(t), a.Short()), t == BlobData, nil}
		default:
			if _, ok := stored[loc.Pack]; ok {
				visit(loc)
				return true
			}
			p = checkProblem{ProblemMissing, fmt.Sprintf("%s blob %s: pack %s is missing", typeName(t), a.Short(), loc.Pack), t == BlobData, nil}
		}
		bad[a] = p
		report(p.class, start, end, p.what)
		return false
	}
	// walk checks the subtree at a and says whether it was clean.
	var walk func(a Address, level int, firstLeaf int64) (bool, error)
	walk = func(a Address, level int, firstLeaf int64) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		leaves := int64(1)
		if level > 0 {
			leaves = span(level) * NodeFanout
		}
		start, end := bytesOf(firstLeaf, min(leaves, g.leaves-firstLeaf))
		if a.IsZero() {
			return true, nil
		}
		// A clean subtree is checked once; one with a problem is walked again (damage is
		// rare), so that this backup is told what it costs here.
		if clean, ok := seen[a]; ok && clean {
			return true, nil
		}
		// Where the node sits, for HealNodes: the first place a walk met it.
		lostNode := func() {
			if p, ok := bad[a]; ok && p.node == nil && p.class != ProblemIndex {
				p.node = &LostNode{Level: level, FirstLeaf: firstLeaf, Size: m.Size, BlockSize: m.BlockSize}
				bad[a] = p
			}
		}
		if !checkBlob(a, BlobTree, start, end) {
			lostNode()
			return false, nil
		}
		// The backend's copy, not the node cache's: a node this process read before may
		// have been damaged since.
		var n *node
		b, err := r.loadBlob(ctx, BlobTree, a)
		if err == nil {
			n, err = decodeNode(b)
		}
		if err == nil && n.level != level {
			err = fmt.Errorf("level %d, want %d: %w", n.level, level, ErrCorrupt)
		}
		if err != nil {
			if errors.Is(err, backend.ErrUnavailable) || errors.Is(err, backend.ErrPermission) || ctx.Err() != nil {
				return false, err
			}
			p := checkProblem{class: classify(err), what: fmt.Sprintf("tree node %s: %v", a.Short(), err)}
			bad[a] = p
			lostNode()
			report(p.class, start, end, p.what)
			return false, nil
		}
		clean := true
		for i, c := range n.addrs {
			if c.IsZero() {
				continue
			}
			if level == 0 {
				b := firstLeaf*LeafFanout + int64(i)
				bs := b * g.blockSize
				if !checkBlob(c, BlobData, bs, min(bs+g.blockSize, m.Size)) {
					clean = false
				}
				continue
			}
			ok, err := walk(c, level-1, firstLeaf+int64(i)*span(level))
			if err != nil {
				return false, err
			}
			clean = clean && ok
		}
		seen[a] = clean
		return clean, nil
	}
	_, err := walk(m.Root, m.RootLevel, 0)
	return err
}

func typeName(t BlobType) string {
	if t == BlobTree {
		return "tree"
	}
	return "data"
}
