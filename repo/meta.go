package repo

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Metadata objects keep what the index holds that no manifest or pack says (volumes with
// their names, kinds and descriptions; snapshots; quota limits), so that an index rebuilt from
// the backend loses nothing. Each is meta/<kind>/<hex of its name>, sealed JSON.
const metaPrefix = "meta/"

// Kinds of metadata that say what runs now (a backup being created, a restore running, a
// request to cancel either: docs/design.md, "Backups being created, on every gateway"; a
// gateway's services),
// rewritten while it runs and removed when it ends. An object-locked repository writes them
// without a lock and removes them whole (every version), as it does lock objects: a lock
// would keep every rewrite for the whole period and protect nothing.
const (
	MetaCreating  = "creating"
	MetaCancel    = "cancel"
	MetaRestoring = "restoring"
	// MetaRestoreCancel is a reset-state's request to cancel a restore another gateway runs.
	MetaRestoreCancel = "restore-cancel"
	MetaGateways      = "gateways" // each running gateway's services ("Every gateway's services")
)

// hintKinds are those kinds, hintPrefixes their key prefixes.
var (
	hintKinds    = []string{MetaCreating, MetaCancel, MetaRestoring, MetaRestoreCancel, MetaGateways}
	hintPrefixes = func() []string {
		var ps []string
		for _, k := range hintKinds {
			ps = append(ps, metaPrefix+k+"/")
		}
		return ps
	}()
)

func metaKey(kind, name string) string {
	return metaPrefix + kind + "/" + hex.EncodeToString([]byte(name))
}

// MetaReservations is the kind of a quota reservation: one per backup being created in a
// project with a limit, gone when the backup ends.
const MetaReservations = "reservations"

// metaCopyPrefix holds the second copy of each metadata object of a kind that records what
// stays: the same JSON sealed under its own key (docs/design.md, "A metadata object's second
// copy").
const metaCopyPrefix = "meta-copies/"

// copiedKind reports whether objects of kind have a second copy: every kind but those that
// say what runs now, reservations, damage marks and key information.
func copiedKind(kind string) bool {
	return !slices.Contains(hintKinds, kind) && kind != MetaReservations && kind != metaDamaged && kind != metaKeys
}

// metaCopyOf returns the key of the second copy of the metadata object stored as key, or ""
// when its kind has none.
func metaCopyOf(key string) string {
	rest, ok := strings.CutPrefix(key, metaPrefix)
	kind, _, _ := strings.Cut(rest, "/")
	if !ok || !copiedKind(kind) {
		return ""
	}
	return metaCopyPrefix + rest
}

// existenceOnly reports whether the metadata object stored as key is read for its existence
// alone (a tombstone: docs/design.md, "A metadata object's second copy"): damage loses nothing
// of it, and removing it would end the guard of a delete.
func existenceOnly(key string) bool { return strings.HasPrefix(key, tombstonePrefix) }

// metaOfCopy returns the key of the metadata object whose second copy is stored as key.
func metaOfCopy(key string) string { return metaPrefix + strings.TrimPrefix(key, metaCopyPrefix) }

func validKind(kind string) bool {
	return kind != "" && !strings.ContainsAny(kind, "/\\.\x00 ")
}

// PutMeta stores v (as JSON) as the metadata object name of kind.
func (r *Repository) PutMeta(ctx context.Context, kind, name string, v any) error {
	if !validKind(kind) || name == "" {
		return fmt.Errorf("metadata %q/%q: invalid name", kind, name)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	key := metaKey(kind, name)
	if err := r.putObject(ctx, key, b); err != nil {
		return fmt.Errorf("store %s %s: %w", kind, name, err)
	}
	// A write is acknowledged only once its copy is stored too: a copy that stands in for a
	// damaged object then holds the last acknowledged write, or a later one that failed.
	if ckey := metaCopyOf(key); ckey != "" {
		if err := r.putObject(ctx, ckey, b); err != nil {
			return fmt.Errorf("store %s %s: its second copy: %w (the write may have taken effect; run it again)", kind, name, err)
		}
	}
	return nil
}

// DeleteMeta removes a metadata object; a missing one is not an error.
func (r *Repository) DeleteMeta(ctx context.Context, kind, name string) error {
	if !validKind(kind) || name == "" {
		return fmt.Errorf("metadata %q/%q: invalid name", kind, name)
	}
	key := metaKey(kind, name)
	if slices.Contains(hintKinds, kind) {
		return removeWhole(ctx, r.be, r.retain, key) // as a lock object's release
	}
	return r.deleteMetaKey(ctx, key)
}

// deleteMetaKey removes the second copy of the metadata object stored as key, then the object:
// a removal that stops between leaves the object (it did not happen) and never a copy without
// its object, which only a loss or an earlier cairn's removal leaves (docs/design.md, "A
// metadata object lost, its copy left").
func (r *Repository) deleteMetaKey(ctx context.Context, key string) error {
	if ckey := metaCopyOf(key); ckey != "" {
		if err := r.be.Delete(ctx, ckey); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("remove the second copy of %s: %w (nothing was removed; run it again)", key, err)
		}
	}
	return r.be.Delete(ctx, key)
}

// getMeta reads and verifies the metadata object stored as key. When it fails its check, its
// second copy stands in if that one passes its own and the store wrote it no earlier than the
// object (metaPair.standsIn). A missing object is an absent one, whatever copy is left.
func (r *Repository) getMeta(ctx context.Context, key string) ([]byte, error) {
	b, err := r.getObject(ctx, key)
	if !errors.Is(err, ErrCorrupt) || metaCopyOf(key) == "" {
		return b, err
	}
	p, perr := r.readMetaPair(ctx, key, nil)
	switch {
	case perr != nil:
		return nil, fmt.Errorf("%w; its second copy: %v", err, perr)
	case p.objMissing:
		return nil, fmt.Errorf("%s: %w", key, backend.ErrNotFound) // deleted since
	case p.objErr == nil:
		return p.obj, nil // written again since
	case !p.standsIn():
		return nil, fmt.Errorf("%w; %s", err, p.whyNot())
	}
	r.logf("%v; read its second copy instead ('cairn repo repair' writes it again)", err)
	return p.cp, nil
}

// GetMeta reads and verifies one metadata object into v; backend.ErrNotFound when absent.
func (r *Repository) GetMeta(ctx context.Context, kind, name string, v any) error {
	b, err := r.getMeta(ctx, metaKey(kind, name))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w: %v", metaKey(kind, name), ErrCorrupt, err)
	}
	return nil
}

// GetMetaCopy reads and verifies the second copy of the metadata object name of kind into v;
// backend.ErrNotFound when it has none. Reads of the object never fall back to it: this is for
// a new index that learns what a lost object recorded, as the indexes that read the object
// before the loss keep it (docs/design.md, "A metadata object lost, its copy left").
func (r *Repository) GetMetaCopy(ctx context.Context, kind, name string, v any) error {
	ckey := metaCopyOf(metaKey(kind, name))
	if !validKind(kind) || name == "" || ckey == "" {
		return fmt.Errorf("metadata %q/%q: no second copy is kept of this kind", kind, name)
	}
	b, err := r.getObject(ctx, ckey)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w: %v", ckey, ErrCorrupt, err)
	}
	return nil
}

// ListMetaNames calls fn with the name of every metadata object of kind, without reading them:
// which objects exist, not what they say.
func (r *Repository) ListMetaNames(ctx context.Context, kind string, fn func(name string) error) error {
	return r.ListMetaNamesFrom(ctx, kind, "", fn)
}

// ListMetaNamesFrom is ListMetaNames of the names that start with from: one listing of those
// keys alone, as a name's hex starts with the hex of its start.
func (r *Repository) ListMetaNamesFrom(ctx context.Context, kind, from string, fn func(name string) error) error {
	prefix := metaPrefix + kind + "/"
	return r.be.ListKeys(ctx, prefix+hex.EncodeToString([]byte(from)), func(key string) error {
		raw, err := hex.DecodeString(strings.TrimPrefix(key, prefix))
		if err != nil {
			return nil
		}
		return fn(string(raw))
	})
}

// MissingMetaNames returns the names of the metadata objects of kind that are missing while
// their second copies are left: lost, or removed by a cairn from before the copies (the
// admin's to decide: docs/design.md, "A metadata object lost, its copy left"). It lists the
// objects, then the copies, and looks again for each copy's object the first listing lacked,
// so an object stored meanwhile is not taken for a missing one. One listing of each, and a
// Stat for each copy without a listed object.
func (r *Repository) MissingMetaNames(ctx context.Context, kind string) ([]string, error) {
	if !validKind(kind) || !copiedKind(kind) {
		return nil, fmt.Errorf("metadata %q: no second copies are kept of this kind", kind)
	}
	prefix := metaPrefix + kind + "/"
	listed := map[string]bool{}
	if err := r.be.ListKeys(ctx, prefix, func(key string) error {
		listed[strings.TrimPrefix(key, prefix)] = true
		return nil
	}); err != nil {
		return nil, err
	}
	var unlisted []string
	cprefix := metaCopyPrefix + kind + "/"
	if err := r.be.ListKeys(ctx, cprefix, func(key string) error {
		if h := strings.TrimPrefix(key, cprefix); !listed[h] {
			unlisted = append(unlisted, h)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var names []string
	for _, h := range unlisted {
		raw, err := hex.DecodeString(h)
		if err != nil {
			continue
		}
		if has, err := r.exists(ctx, prefix+h); err != nil {
			return nil, err
		} else if has {
			continue // stored since the listing
		}
		names = append(names, string(raw))
	}
	return names, nil
}

// HasMeta reports whether the metadata object name of kind is stored (a Stat, no read).
func (r *Repository) HasMeta(ctx context.Context, kind, name string) (bool, error) {
	return r.exists(ctx, metaKey(kind, name))
}

// MetaCopyLeft reports whether the second copy of the metadata object name of kind is stored.
// Every removal of this cairn takes the copy before the object, so a copy left beside a
// missing object is a loss, or an older cairn's removal, never this cairn's (docs/design.md,
// "A metadata object lost, its copy left"); a caller that found the object missing asks this
// after, to tell.
func (r *Repository) MetaCopyLeft(ctx context.Context, kind, name string) (bool, error) {
	ckey := metaCopyOf(metaKey(kind, name))
	if ckey == "" {
		return false, nil
	}
	return r.exists(ctx, ckey)
}

// exists reports whether the object stored as key is there (a Stat).
func (r *Repository) exists(ctx context.Context, key string) (bool, error) {
	_, err := r.be.Stat(ctx, key)
	if errors.Is(err, backend.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ListMetaTimes calls fn with the name of every metadata object of kind and when it was last
// written, by the store's clock, without reading them.
func (r *Repository) ListMetaTimes(ctx context.Context, kind string, fn func(name string, written time.Time) error) error {
	prefix := metaPrefix + kind + "/"
	return r.be.List(ctx, prefix, func(o backend.ObjectInfo) error {
		raw, err := hex.DecodeString(strings.TrimPrefix(o.Key, prefix))
		if err != nil {
			return nil
		}
		return fn(string(raw), o.ModTime)
	})
}

// ListMeta calls fn with the name and verified JSON of every metadata object of kind. A damaged
// object is passed to bad (and skipped) rather than stopping the listing.
func (r *Repository) ListMeta(ctx context.Context, kind string, fn func(name string, data []byte) error, bad func(key string, err error)) error {
	var names []string
	if err := r.ListMetaNames(ctx, kind, func(name string) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		key := metaKey(kind, name)
		b, err := r.getMeta(ctx, key)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if errors.Is(err, ErrCorrupt) {
			if bad != nil {
				bad(key, err)
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(name, b); err != nil {
			return err
		}
	}
	return nil
}

// metaPair is what a read found of a metadata object and its second copy: each one's JSON
// when intact, its damage, whether it is missing, and when the store wrote it.
type metaPair struct {
	obj, cp               []byte
	objErr, cpErr         error
	objMissing, cpMissing bool
	objAt, cpAt           time.Time
}

// readMetaPair reads the metadata object stored as key, then its second copy (missing when
// its kind has none). The store's times of the two come from at when a listing gave them,
// else from a Stat of each.
func (r *Repository) readMetaPair(ctx context.Context, key string, at map[string]time.Time) (*metaPair, error) {
	read := func(key string) (b []byte, damage error, missing bool, when time.Time, err error) {
		b, err = r.getObject(ctx, key)
		switch {
		case errors.Is(err, backend.ErrNotFound):
			return nil, nil, true, when, nil
		case errors.Is(err, ErrCorrupt):
			b, damage = nil, err
		case err != nil:
			return nil, nil, false, when, err
		}
		if t, ok := at[key]; ok {
			return b, damage, false, t, nil
		}
		oi, err := r.be.Stat(ctx, key)
		if errors.Is(err, backend.ErrNotFound) {
			return nil, nil, true, when, nil
		}
		return b, damage, false, oi.ModTime, err
	}
	p := &metaPair{}
	var err error
	if p.obj, p.objErr, p.objMissing, p.objAt, err = read(key); err != nil {
		return nil, err
	}
	if ckey := metaCopyOf(key); ckey == "" {
		p.cpMissing = true
	} else if p.cp, p.cpErr, p.cpMissing, p.cpAt, err = read(ckey); err != nil {
		return nil, err
	}
	return p, nil
}

// standsIn reports whether the copy may stand in for the damaged object: intact, and written
// no earlier than the object by the store's clock. An older copy is one a later write of the
// object did not update: a cairn of before 2026-12-07 on the same repository writes objects
// without copies, and its write must not be undone by the copy it left stale.
func (p *metaPair) standsIn() bool {
	return p.cpErr == nil && !p.cpMissing && !p.cpAt.Before(p.objAt)
}

// whyNot says why the copy cannot stand in for the damaged object.
func (p *metaPair) whyNot() string {
	switch {
	case p.cpMissing:
		return "it has no second copy"
	case p.cpErr != nil:
		return "its second copy is damaged too, so what it held is lost ('cairn repo repair' lists such objects)"
	}
	return fmt.Sprintf("its second copy (stored %s) is older than it (stored %s), written before a later write of it (a cairn that keeps no copies?), so what it held is lost ('cairn repo repair' lists such objects)",
		p.cpAt.UTC().Format(time.RFC3339), p.objAt.UTC().Format(time.RFC3339))
}

// staleCopy reports whether the object is intact and its copy is missing, damaged, different
// or older than it: the copy is to be written from it (an older copy could not stand in).
func (p *metaPair) staleCopy() bool {
	return !p.objMissing && p.objErr == nil &&
		(p.cpMissing || p.cpErr != nil || !bytes.Equal(p.obj, p.cp) || p.cpAt.Before(p.objAt))
}

// checkMetaPairs reads every metadata object of a copied kind and its second copy, and every
// copy whose object the listing lacks; it reports what it finds and notes the keys repair
// mends. It returns the keys of the other metadata objects (kinds without copies) it listed.
func (r *Repository) checkMetaPairs(ctx context.Context, rep *CheckReport) (uncopied []string, err error) {
	at := map[string]time.Time{}
	var objects, copies []string
	if err := r.be.List(ctx, metaPrefix, func(o backend.ObjectInfo) error {
		if metaCopyOf(o.Key) == "" {
			uncopied = append(uncopied, o.Key)
			return nil
		}
		objects = append(objects, o.Key)
		at[o.Key] = o.ModTime
		return nil
	}); err != nil {
		return nil, err
	}
	if err := r.be.List(ctx, metaCopyPrefix, func(o backend.ObjectInfo) error {
		copies = append(copies, o.Key)
		at[o.Key] = o.ModTime
		return nil
	}); err != nil {
		return nil, err
	}
	read := map[string]bool{}
	var noCopy, differ int
	for _, key := range objects {
		read[key] = true
		p, err := r.readMetaPair(ctx, key, at)
		if err != nil {
			return nil, err
		}
		switch {
		case p.objMissing:
			continue // removed since the listing
		case p.objErr != nil && p.standsIn():
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: metadata object %v; its second copy is intact and stands in ('cairn repo repair' writes it again)", ProblemDamaged, p.objErr)
		case p.objErr != nil && existenceOnly(key):
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: metadata object %v, and %s; it still marks its backup deleted, as readers ask only whether it exists (gc removes it a day after the delete)", ProblemDamaged, p.objErr, p.whyNot())
			continue
		case p.objErr != nil:
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: metadata object %v, and %s", ProblemDamaged, p.objErr, p.whyNot())
			rep.lostMeta = append(rep.lostMeta, key)
			continue
		case p.cpErr != nil:
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: second copy of metadata object %s: %v ('cairn repo repair' writes it again)", ProblemDamaged, key, p.cpErr)
		case p.cpMissing:
			noCopy++
		case p.staleCopy():
			differ++
		default:
			continue
		}
		rep.mendMeta = append(rep.mendMeta, key)
	}
	// A copy without its object: a loss, or a removal by a cairn from before the copies. The
	// admin decides which (docs/design.md, "A metadata object lost, its copy left").
	for _, ckey := range copies {
		key := metaOfCopy(ckey)
		if read[key] || metaCopyOf(key) != ckey {
			continue
		}
		p, err := r.readMetaPair(ctx, key, at)
		if err != nil {
			return nil, err
		}
		if !p.objMissing || p.cpMissing {
			continue // stored since the listing, or removed
		}
		rep.Classes[ProblemMissing]++
		if p.cpErr != nil {
			rep.problem("%s: metadata object %s is missing and its second copy is damaged (%v): what it held is lost ('cairn repo repair --forget-damaged' removes the copy)", ProblemMissing, key, p.cpErr)
		} else {
			rep.problem("%s: metadata object %s is missing while its second copy is intact: removed outside cairn, or by a cairn from before 2026-12-07 ('cairn repo repair --restore-meta' stores it again from the copy; '--forget-damaged' removes the copy)", ProblemMissing, key)
		}
		rep.missingMeta = append(rep.missingMeta, key)
	}
	if noCopy > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d metadata objects have no second copy (made by an earlier cairn, or its store failed; 'cairn repo repair' stores them)", noCopy))
	}
	if differ > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d metadata objects have a second copy that differs from them or is older (a write stopped between the two, two wrote at once, or a cairn that keeps no copies wrote the object; 'cairn repo repair' stores them again)", differ))
	}
	return uncopied, nil
}

// MendMeta mends each metadata object and second copy the check found damaged, missing or
// stale, each pair in turn (docs/design.md, "A metadata object's second copy"): an intact
// object is the record and its copy is written from it, and a damaged object whose copy stands
// in is written from the copy. It reads the pair again after each store and repeats, up to four
// rounds, until the two agree. A copy without its object it leaves alone: that is the admin's
// to decide (RestoreMeta, ForgetMeta). Deletion records and their copies are mended first
// (mendDeletions). It returns how many objects (records among them) and copies it wrote.
func (r *Repository) MendMeta(ctx context.Context, rep *CheckReport) (objects, copies int, err error) {
	if objects, copies, err = r.mendDeletions(ctx, rep); err != nil {
		return objects, copies, err
	}
	for _, key := range rep.mendMeta {
		ckey := metaCopyOf(key)
		for round := 0; round < 4; round++ {
			p, err := r.readMetaPair(ctx, key, nil)
			if err != nil {
				return objects, copies, err
			}
			switch {
			case p.objMissing:
				// Removed since the check, or lost: never written back from the copy here.
			case p.objErr != nil && p.standsIn():
				if err := r.putObject(ctx, key, p.cp); err != nil {
					return objects, copies, fmt.Errorf("write %s again from its second copy: %w", key, err)
				}
				objects++
				continue
			case p.staleCopy():
				if err := r.putObject(ctx, ckey, p.obj); err != nil {
					return objects, copies, fmt.Errorf("write the second copy of %s: %w", key, err)
				}
				copies++
				continue
			}
			break
		}
	}
	return objects, copies, nil
}

// mendDeletions writes each deletion record the check found missing or damaged while its
// second copy verifies again from the copy, and the copy of each that has none from the
// record. Neither is a decision: no cairn removes either (docs/design.md, "A deletion record
// removed outside cairn").
func (r *Repository) mendDeletions(ctx context.Context, rep *CheckReport) (records, copies int, err error) {
	for _, key := range rep.mendDeletions {
		ckey := deletionCopyKey(key)
		b, err := r.getObject(ctx, key)
		if err == nil {
			if has, err := r.exists(ctx, ckey); err != nil {
				return records, copies, err
			} else if has {
				continue // stored since
			}
			if err := r.putObject(ctx, ckey, b); err != nil {
				return records, copies, fmt.Errorf("write the second copy of %s: %w", key, err)
			}
			copies++
			continue
		}
		if !errors.Is(err, backend.ErrNotFound) && !errors.Is(err, ErrCorrupt) {
			return records, copies, err
		}
		cb, cerr := r.getObject(ctx, ckey)
		if cerr != nil {
			continue // nothing to write it from: the note stays
		}
		if err := r.putObject(ctx, key, cb); err != nil {
			return records, copies, fmt.Errorf("write %s again from its second copy: %w", key, err)
		}
		records++
	}
	return records, copies, nil
}

// MissingMeta returns the metadata objects the check found missing while their second copies
// are left (intact or damaged): lost, or removed by a cairn from before the copies. Only an
// admin's RestoreMeta or ForgetMeta ends the problem.
func (c *CheckReport) MissingMeta() []MetaObject { return metaObjects(c.missingMeta) }

// ErrNotMissing means RestoreMeta was asked to store again a metadata object that is not
// missing with an intact copy: stored since, or its copy is gone or damaged.
var ErrNotMissing = errors.New("the metadata object is not missing with an intact second copy")

// RestoreMeta stores again, from its second copy, a metadata object that is missing while its
// copy is intact: an admin's choice that it was lost, not removed (docs/design.md, "A metadata
// object lost, its copy left"). It reads the pair again first, and the copy again after its
// store: a removal that took the copy meanwhile wins (the object is removed again), and a
// write that changed it meanwhile is stored as the object.
func (r *Repository) RestoreMeta(ctx context.Context, m MetaObject) error {
	if !validKind(m.Kind) || m.Name == "" {
		return fmt.Errorf("metadata %q/%q: invalid name", m.Kind, m.Name)
	}
	if m.Kind == metaTombstones {
		return r.restoreTombstone(ctx, m)
	}
	return r.restoreMeta(ctx, m)
}

// ErrBackupStored is RestoreMeta's refusal to store again the tombstone of a backup whose
// manifest is stored: gc would finish that delete a day later, and the tombstone's copy may be
// what a cairn from before the copies left when an import removed the tombstone on purpose.
var ErrBackupStored = errors.New("its backup's manifest is stored: the tombstone stored again would make gc delete the backup a day later ('cairn backup delete' deletes it if that was meant; '--forget-damaged' removes the copy)")

// restoreTombstone is RestoreMeta for a tombstone: never beside a stored manifest, so a
// restore can only guard a delete, never begin one (docs/design.md, "A metadata object lost,
// its copy left"). It looks for the manifest before its store and again after: an import
// that stores the manifest meanwhile looks for the tombstone after its own store (adoption's
// Deleted), so either the import sees the tombstone and fails, or this second look sees the
// manifest and the tombstone goes again.
func (r *Repository) restoreTombstone(ctx context.Context, m MetaObject) error {
	manifestStored := func() error {
		if has, err := r.HasManifest(ctx, m.Name); err != nil || !has {
			return err
		}
		return fmt.Errorf("%s: %w", m, ErrBackupStored)
	}
	if err := manifestStored(); err != nil {
		return err
	}
	if err := r.restoreMeta(ctx, m); err != nil {
		return err
	}
	if err := manifestStored(); err != nil {
		if derr := r.deleteMetaKey(ctx, metaKey(m.Kind, m.Name)); derr != nil && !errors.Is(derr, backend.ErrNotFound) {
			return fmt.Errorf("%w; and removing the tombstone again: %v", err, derr)
		}
		return err
	}
	return nil
}

// restoreMeta is RestoreMeta for every kind.
func (r *Repository) restoreMeta(ctx context.Context, m MetaObject) error {
	key := metaKey(m.Kind, m.Name)
	ckey := metaCopyOf(key)
	if ckey == "" {
		return fmt.Errorf("%s: %w", m, ErrNotMissing)
	}
	p, err := r.readMetaPair(ctx, key, nil)
	if err != nil {
		return err
	}
	if !p.objMissing || p.cpMissing || p.cpErr != nil {
		return fmt.Errorf("%s: %w", m, ErrNotMissing)
	}
	stored := p.cp
	for round := 0; round < 4; round++ {
		if err := r.putObject(ctx, key, stored); err != nil {
			return fmt.Errorf("store %s again from its second copy: %w", m, err)
		}
		cp, err := r.getObject(ctx, ckey)
		switch {
		case errors.Is(err, backend.ErrNotFound):
			// A removal took the copy since the read: it removes the object too, and wins.
			if err := r.be.Delete(ctx, key); err != nil && !errors.Is(err, backend.ErrNotFound) {
				return fmt.Errorf("%s was removed while it was stored again: remove it again: %w", m, err)
			}
			return fmt.Errorf("%s: removed meanwhile: %w", m, ErrNotMissing)
		case err != nil:
			return fmt.Errorf("%s: read its second copy again: %w", m, err)
		case bytes.Equal(cp, stored):
			// The copy again, so it is no older than the object and can stand in for it. A
			// removal that takes the copy just before this store leaves this copy without its
			// object (its object removal comes after): missing again, the admin's again,
			// never the object back.
			if err := r.putObject(ctx, ckey, stored); err != nil {
				return fmt.Errorf("store the second copy of %s again: %w", m, err)
			}
			return nil
		}
		stored = cp // a write since the read: its JSON is the object's
	}
	return fmt.Errorf("%s: its second copy kept changing while it was stored again; run repair again", m)
}

// MetaObject names a metadata object: its kind and name.
type MetaObject struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

func (m MetaObject) String() string { return m.Kind + "/" + m.Name }

// MetaObjectOf names the metadata object stored as key (as ListMeta's bad is given it): the one
// reader of the key's form besides metaKey, its writer.
func MetaObjectOf(key string) (MetaObject, bool) {
	rest, isMeta := strings.CutPrefix(key, metaPrefix)
	kind, h, ok := strings.Cut(rest, "/")
	name, err := hex.DecodeString(h)
	return MetaObject{Kind: kind, Name: string(name)}, isMeta && ok && err == nil
}

// LostMeta returns the metadata objects the check found damaged with no second copy that
// stands in: what they held is lost, and only ForgetMeta ends the problem.
func (c *CheckReport) LostMeta() []MetaObject { return metaObjects(c.lostMeta) }

func metaObjects(keys []string) []MetaObject {
	var out []MetaObject
	for _, key := range keys {
		if m, ok := MetaObjectOf(key); ok {
			out = append(out, m)
		}
	}
	return out
}

// ErrNotLost means ForgetMeta was asked to remove a metadata object that is not lost: intact,
// or damaged with a copy that stands in (repair writes it again), or gone.
var ErrNotLost = errors.New("the metadata object is not lost")

// ForgetMeta removes a lost metadata object (damaged, and its second copy damaged or missing)
// and its copy, or the copy left of a missing object: an admin's explicit choice, as
// forgetting a damaged backup is. It reads the pair again first and refuses one that is not
// lost (ErrNotLost): a write since the check replaced it.
func (r *Repository) ForgetMeta(ctx context.Context, m MetaObject) error {
	if !validKind(m.Kind) || m.Name == "" {
		return fmt.Errorf("metadata %q/%q: invalid name", m.Kind, m.Name)
	}
	key := metaKey(m.Kind, m.Name)
	p, err := r.readMetaPair(ctx, key, nil)
	if err != nil {
		return err
	}
	if p.objMissing && !p.cpMissing {
		// The copy of a missing object: what the object held goes with it. A write that
		// stores the object between the read and this removal keeps it, without a copy
		// (check notes that and repair stores the copy again).
		if err := r.be.Delete(ctx, metaCopyOf(key)); err != nil && !errors.Is(err, backend.ErrNotFound) {
			return fmt.Errorf("remove the second copy of %s: %w", m, err)
		}
		return nil
	}
	if p.objMissing || p.objErr == nil || p.standsIn() || existenceOnly(key) {
		return fmt.Errorf("%s: %w", m, ErrNotLost)
	}
	return r.DeleteMeta(ctx, m.Kind, m.Name)
}
