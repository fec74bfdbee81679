package repo

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Mark objects: the repository's record of a copy a reader found damaged, so that every
// gateway and a rebuilt index stop deduplicating against it (docs/design.md, "Marks in the
// repository"). Each is meta/damaged/<hex of pack id, offset and address>: the name says which
// copy it marks, so a learner lists them without reading one that cannot apply.
const metaDamaged = "damaged"

// damagedMark is a copy a mark object marks; markObject is its contents.
type damagedMark struct {
	Addr   Address
	Pack   PackID
	Offset uint32
}

type markObject struct {
	Addr   Address   `json:"addr"`
	Pack   string    `json:"pack"` // hex
	Offset uint32    `json:"offset"`
	At     time.Time `json:"at"`
}

func damagedMarkName(a Address, loc Location) string {
	b := make([]byte, 0, len(loc.Pack)+4+len(a))
	b = append(b, loc.Pack[:]...)
	b = binary.BigEndian.AppendUint32(b, loc.Offset)
	return string(append(b, a[:]...))
}

// parseDamagedMarkName is damagedMarkName's inverse; ok is false for a name of another form.
func parseDamagedMarkName(name string) (m damagedMark, ok bool) {
	if len(name) != len(m.Pack)+4+len(m.Addr) {
		return m, false
	}
	n := copy(m.Pack[:], name)
	m.Offset = binary.BigEndian.Uint32([]byte(name[n : n+4]))
	copy(m.Addr[:], name[n+4:])
	return m, true
}

// storeDamagedMark stores the mark object of the copy of a at loc, which this index has just
// marked. A failure is logged: the index's mark stands alone, as it did before mark objects.
func (r *Repository) storeDamagedMark(ctx context.Context, a Address, loc Location) {
	if r.readOnly {
		return
	}
	m := markObject{Addr: a, Pack: loc.Pack.String(), Offset: loc.Offset, At: time.Now().UTC()}
	if err := r.PutMeta(ctx, metaDamaged, damagedMarkName(a, loc), m); err != nil {
		r.logf("blob %s in pack %s is damaged, and its mark could not be stored in the repository (other gateways will not know until they read it): %v", a.Short(), loc.Pack, err)
	}
}

// LearnDamaged applies the repository's mark objects to the index: each whose copy is where
// the index reads its block, and not marked there yet, is marked after its object is read
// and verified. It costs one listing of meta/damaged/ and a lookup per mark object. It says
// how many marks it applied.
func (r *Repository) LearnDamaged(ctx context.Context) (int, error) {
	var apply []damagedMark
	err := r.ListMetaNames(ctx, metaDamaged, func(name string) error {
		m, ok := parseDamagedMarkName(name)
		if !ok {
			return nil
		}
		loc, found, err := r.idx.Lookup(m.Addr)
		if err != nil {
			return err
		}
		if found && loc.Pack == m.Pack && loc.Offset == m.Offset && !r.idx.Damaged(m.Addr, loc) {
			apply = append(apply, m)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, want := range apply {
		loc := Location{Pack: want.Pack, Offset: want.Offset}
		var got markObject
		if err := r.GetMeta(ctx, metaDamaged, damagedMarkName(want.Addr, loc), &got); err != nil {
			if errors.Is(err, backend.ErrNotFound) {
				continue // its pack went meanwhile (gc)
			}
			if errors.Is(err, ErrCorrupt) {
				r.logf("mark object of blob %s in pack %s skipped: %v", want.Addr.Short(), want.Pack, err)
				continue
			}
			return n, err
		}
		if got.Addr != want.Addr || got.Pack != want.Pack.String() || got.Offset != want.Offset {
			r.logf("mark object of blob %s in pack %s skipped: it names another copy", want.Addr.Short(), want.Pack)
			continue
		}
		if err := r.idx.MarkDamaged(want.Addr, loc); err != nil {
			return n, fmt.Errorf("mark blob %s in pack %s damaged: %w", want.Addr.Short(), want.Pack, err)
		}
		n++
	}
	if n > 0 {
		r.logf("learned %d damaged copies from the repository: backups store those blocks again", n)
	}
	return n, nil
}

// pruneDamagedMarks deletes the mark objects whose packs are gone (gc, after it deleted the
// packs it doomed): a pack that still exists may be named by some index, so its marks stay.
// A failure is logged, not gc's: a mark left costs nothing but its object.
func (r *Repository) pruneDamagedMarks(ctx context.Context, lk *Lock, logf func(string, ...any)) {
	n, err := r.dropDamagedMarks(ctx, lk)
	if n > 0 {
		logf("removed %d marks of damaged copies whose packs are gone", n)
	}
	if err != nil {
		logf("marks of damaged copies not pruned: %v", err)
	}
}

// dropDamagedMarks is pruneDamagedMarks, saying how many it deleted.
func (r *Repository) dropDamagedMarks(ctx context.Context, lk *Lock) (int, error) {
	var names []string
	if err := r.ListMetaNames(ctx, metaDamaged, func(name string) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return 0, err
	}
	n := 0
	gone := map[PackID]bool{}
	for _, name := range names {
		m, ok := parseDamagedMarkName(name)
		if !ok {
			continue
		}
		g, seen := gone[m.Pack]
		if !seen {
			_, err := r.be.Stat(ctx, m.Pack.Key())
			switch {
			case errors.Is(err, backend.ErrNotFound):
				g = true
			case err != nil:
				return n, err
			}
			gone[m.Pack] = g
		}
		if !g {
			continue
		}
		if err := stillHeld(lk); err != nil {
			return n, err
		}
		if err := r.DeleteMeta(ctx, metaDamaged, name); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return n, err
		}
		n++
	}
	return n, nil
}
