package repo

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/repo/backend"
)

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

// Verify checks that every blob of a backup's block map is indexed in a pack the backend
// holds: the backup restores from what the repository holds. Callers hold a lock so that
// stays true. An index may still list a pack that is gone (lost, removed by hand)
// [TestImportRefusesABackupWhosePackIsMissing], so each pack is looked for once.
func (r *Repository) Verify(ctx context.Context, m *Manifest) error {
	packs := map[PackID]bool{}
	return r.Walk(ctx, m.Root, m.RootLevel, map[Address]struct{}{}, func(a Address, _ BlobType) error {
		loc, ok, err := r.idx.Lookup(a)
		if err != nil {
			return err
		} else if !ok {
			return fmt.Errorf("blob %s is not in the repository: %w", a.Short(), ErrCorrupt)
		}
		if packs[loc.Pack] {
			return nil
		}
		if _, err := r.be.Stat(ctx, loc.Pack.Key()); errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("blob %s: its pack %s is missing from the backend: %w", a.Short(), loc.Pack, ErrCorrupt)
		} else if err != nil {
			return err
		}
		packs[loc.Pack] = true
		return nil
	})
}

// walkTrees is Walk for gc's mark: it calls add for every node and data block reachable from
// root, remembering only the tree nodes in trees (shared across backups, so a shared subtree
// is walked once). A data block reached twice is added twice; the mark set keeps it once.
func (r *Repository) walkTrees(ctx context.Context, root Address, rootLevel int, trees map[Address]struct{}, add func(Address) error) error {
	if root.IsZero() {
		return nil
	}
	if _, ok := trees[root]; ok {
		return nil
	}
	trees[root] = struct{}{}
	if err := add(root); err != nil {
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
			err = add(c)
		} else {
			err = r.walkTrees(ctx, c, rootLevel-1, trees, add)
		}
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}
