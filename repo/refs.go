package repo

import (
	"context"
	"fmt"
)

// Retain counts one more reference to the tree under root and, where a node goes from
// unreferenced to referenced, to its children, recursively. Import and recount use it.
func (r *Repository) Retain(ctx context.Context, root Address, rootLevel int) error {
	r.sessions.RLock()
	defer r.sessions.RUnlock()
	return r.retain(ctx, []Address{root}, rootLevel)
}

func (r *Repository) retain(ctx context.Context, addrs []Address, level int) error {
	crossed, err := r.idx.AddRefs(addrs, 1)
	if err != nil || level < 0 { // level -1: data blocks, which have no children
		return err
	}
	return r.eachChild(ctx, crossed, level, func(children []Address) error {
		return r.retain(ctx, children, level-1)
	})
}

// Release drops one reference to the tree under root and, where a node's count reaches zero,
// to its children, recursively. Blobs left unreferenced are reclaimed by GC.
func (r *Repository) Release(ctx context.Context, root Address, rootLevel int) error {
	if root.IsZero() {
		return nil
	}
	r.sessions.RLock()
	defer r.sessions.RUnlock()
	return r.release(ctx, []Address{root}, rootLevel)
}

func (r *Repository) release(ctx context.Context, addrs []Address, level int) error {
	if len(addrs) == 1 && addrs[0].IsZero() {
		return nil
	}
	crossed, err := r.idx.AddRefs(addrs, -1)
	if err != nil || level < 0 {
		return err
	}
	return r.eachChild(ctx, crossed, level, func(children []Address) error {
		return r.release(ctx, children, level-1)
	})
}

// eachChild calls fn with the non-zero children of each node (at the given level).
func (r *Repository) eachChild(ctx context.Context, nodes []Address, level int, fn func([]Address) error) error {
	for _, a := range nodes {
		n, err := r.node(ctx, a)
		if err != nil {
			return fmt.Errorf("tree node %s: %w", a.Short(), err)
		}
		if n.level != level {
			return fmt.Errorf("tree node %s: level %d, want %d: %w", a.Short(), n.level, level, ErrCorrupt)
		}
		var children []Address
		for _, c := range n.addrs {
			if !c.IsZero() {
				children = append(children, c)
			}
		}
		if err := fn(children); err != nil {
			return err
		}
	}
	return nil
}

// Walk visits every distinct node and data block reachable from root once, calling fn with
// each address, its type and (for tree nodes) the decoded node's level. Shared subtrees are
// visited once thanks to seen, which the caller may share across backups.
func (r *Repository) Walk(ctx context.Context, root Address, rootLevel int, seen map[Address]struct{}, fn func(a Address, t BlobType) error) error {
	if root.IsZero() {
		return nil
	}
	if _, ok := seen[root]; ok {
		return nil
	}
	seen[root] = struct{}{}
	if err := fn(root, BlobTree); err != nil {
		return err
	}
	n, err := r.node(ctx, root)
	if err != nil {
		return fmt.Errorf("tree node %s: %w", root.Short(), err)
	}
	if n.level != rootLevel {
		return fmt.Errorf("tree node %s: level %d, want %d: %w", root.Short(), n.level, rootLevel, ErrCorrupt)
	}
	for _, c := range n.addrs {
		if c.IsZero() {
			continue
		}
		if rootLevel == 0 {
			if _, ok := seen[c]; ok {
				continue
			}
			seen[c] = struct{}{}
			if err := fn(c, BlobData); err != nil {
				return err
			}
			continue
		}
		if err := r.Walk(ctx, c, rootLevel-1, seen, fn); err != nil {
			return err
		}
	}
	return ctx.Err()
}
