package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"golang.org/x/sync/errgroup"
)

// Immutable backups (S3 Object Lock, kopia's model). In an object-locked repository every
// object cairn writes is locked until a retain-until date of its write plus the retention
// period, except lock objects (lockPrefix): they are rewritten while held and removed on
// release, and a lock on them would protect nothing (a delete marker hides a locked object
// as well as an unlocked one) while keeping every rewrite for the whole period. The backup
// log (logPrefix) is exempt too: a hint, which gc removes after a day; and so are the metadata
// that say what runs now (hintPrefixes), removed whole when it ends.
//
// On such a store a Delete only hides an object behind a delete marker. So:
//   - a backup delete, a metadata delete and a passphrase change hide their objects (the
//     backup is gone from every listing; its manifest's version stays until its date);
//   - gc keeps an unreachable pack, with its index objects, until the dates of all their
//     versions have passed, and then removes every version, in the deletion protocol's order;
//   - gc extends the date of every object still in use whose date is less than half the
//     period away, and removes the versions that are hidden or superseded once their dates
//     have passed (sweep).
// docs/design.md has the argument for why none of this deletes what a backup needs.

// ObjectLock is a repository's immutability setting, recorded in its config.
type ObjectLock struct {
	Mode backend.LockMode `json:"mode"`
	// RetentionSeconds is how long an object stays locked after it is written or extended.
	RetentionSeconds int64 `json:"retention_seconds"`
}

// Period returns the retention period.
func (l ObjectLock) Period() time.Duration { return time.Duration(l.RetentionSeconds) * time.Second }

// String reads like "governance, 720h0m0s".
func (l ObjectLock) String() string { return fmt.Sprintf("%s, %s", l.Mode, l.Period()) }

// valid checks a setting read from a config or given to Init.
func (l ObjectLock) valid() error {
	if _, err := backend.ParseLockMode(string(l.Mode)); err != nil {
		return err
	}
	if l.RetentionSeconds < 1 || l.RetentionSeconds > 100*366*24*3600 {
		return fmt.Errorf("object lock retention %ds: want from 1 second to 100 years", l.RetentionSeconds)
	}
	return nil
}

// ErrNoObjectLock means a repository was to be object-locked on a store that cannot lock
// objects (a directory, or an S3 bucket without an object lock configuration).
var ErrNoObjectLock = errors.New("the store cannot lock objects")

// retention is an open object-locked repository's handle on its store's versions.
type retention struct {
	be     backend.Versioned
	mode   backend.LockMode
	period time.Duration
	set    *backend.Retention
}

// lockedPrefixesHidden are the kinds of object cairn itself hides (deletes) in an
// object-locked repository; their hidden versions are removed once their dates pass. A pack,
// a deletion record or the config behind a delete marker was hidden by someone else, and is
// kept for the admin to look at (docs/reliability.md).
var lockedPrefixesHidden = []string{"manifests/", manifestCopyPrefix, metaPrefix, metaCopyPrefix, "keys/", keyCopyPrefix, lockPrefix, indexPrefix, logPrefix}

// useRetention makes be lock what it stores from now on, as the config says. A store that
// cannot lock is refused, unless nothing will be written (readOnly): then the repository is
// read as an unlocked one (nil).
func useRetention(ctx context.Context, be backend.Backend, l *ObjectLock, readOnly bool) (*retention, error) {
	if l == nil {
		return nil, nil
	}
	vb, ok := be.(backend.Versioned)
	rt := &retention{be: vb, mode: l.Mode, period: l.Period(),
		set: &backend.Retention{Mode: l.Mode, Period: l.Period(), Exempt: append([]string{lockPrefix, logPrefix}, hintPrefixes...)}}
	if readOnly {
		if !ok {
			return nil, nil
		}
		return rt, nil
	}
	on := false
	if ok {
		var err error
		if on, err = vb.ObjectLock(ctx); err != nil {
			return nil, fmt.Errorf("%s: %w", be.Location(), err)
		}
	}
	if !on {
		return nil, fmt.Errorf("%w: %s has no object lock configuration", ErrNoObjectLock, be.Location())
	}
	vb.SetRetention(rt.set)
	return rt, nil
}

// purge removes every version of key for good: older versions first, so that what a reader
// sees does not change until the last one goes. It fails with backend.ErrRetained on a
// version whose date has not passed.
func (rt *retention) purge(ctx context.Context, key string) error {
	var vs []backend.Version
	if err := rt.be.ListVersions(ctx, key, func(v backend.Version) error {
		if v.Key == key {
			vs = append(vs, v)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.SliceStable(vs, func(i, j int) bool { return !vs[i].Latest && vs[j].Latest })
	for _, v := range vs {
		if err := rt.be.DeleteVersion(ctx, key, v.ID); err != nil {
			return err
		}
	}
	return nil
}

// destroy removes key for good: every version in an object-locked repository, else the object.
func (r *Repository) destroy(ctx context.Context, key string) error {
	if r.retain == nil {
		return r.be.Delete(ctx, key)
	}
	if err := r.retain.purge(ctx, key); err != nil {
		return err
	}
	return r.idx.SetMeta(retainMeta(key), "")
}

// storeClock returns a clock that never runs ahead of the store's: the modification time the
// store gave the lock object lk (a second's truncation at most behind the write), plus the
// time since it was read. Retain-until dates are the store's to judge, and a host's clock may
// be off.
func (r *Repository) storeClock(ctx context.Context, lk *Lock) (func() time.Time, error) {
	oi, err := r.be.Stat(ctx, lk.key)
	if err != nil {
		return nil, fmt.Errorf("read the store's clock: %w", err)
	}
	read := time.Now()
	return func() time.Time { return oi.ModTime.Add(time.Since(read)) }, nil
}

// versions is every version in the repository by key, from one listing. Keys that are not
// the repository's (another's objects in the same bucket and prefix) are left out: gc
// removes old versions of what it lists, and another's history is not its to judge.
type versions map[string][]backend.Version

func (r *Repository) listVersions(ctx context.Context) (versions, error) {
	vs := versions{}
	if err := r.retain.be.ListVersions(ctx, "", func(v backend.Version) error {
		if ownsKey(v.Key) {
			vs[v.Key] = append(vs[v.Key], v)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list object versions: %w", err)
	}
	return vs, nil
}

// clockSkew bounds how far a writer's clock may be behind the store's when a version's date
// is estimated from its modification time (only ever to skip asking about a version that is
// surely still locked).
const clockSkew = time.Hour

// surelyLocked reports whether v is still locked at store time now, judging by its
// modification time alone: its date is at least its write plus the period, by its writer's
// clock.
func (r *Repository) surelyLocked(v backend.Version, now time.Time) bool {
	return !v.DeleteMarker && r.retain.set.Locks(v.Key) && v.ModTime.Add(r.retain.period-clockSkew).After(now)
}

// removable frees the doomed keys (a pack and its index objects) for the deletion protocol:
// it reports whether the store will let each be removed now. The current versions' dates are
// read; superseded versions (no reader sees them) are removed at once when their dates have
// passed, and one that is still locked makes the keys wait.
func (lp *lockPass) removable(ctx context.Context, dry bool, keys ...string) (bool, error) {
	r, vs, now := lp.r, lp.vs, lp.now()
	for _, key := range keys {
		for _, v := range vs[key] {
			if !v.Latest || v.DeleteMarker || !r.retain.set.Locks(key) {
				continue
			}
			if r.surelyLocked(v, now) {
				return false, nil
			}
			// A date the store does not report is taken as passed: the store refuses the
			// removal if it is not, and the protocol survives a refusal at any step.
			until, err := r.retain.be.RetainUntil(ctx, v.Key, v.ID)
			if err != nil && !errors.Is(err, backend.ErrNotFound) {
				return false, err
			}
			if until.After(now) {
				return false, nil
			}
		}
	}
	for _, key := range keys {
		for _, v := range vs[key] {
			if v.Latest {
				continue
			}
			if gone, err := lp.removeOld(ctx, v, now, dry); err != nil || !gone {
				return false, err
			}
		}
	}
	return true, nil
}

// removeOld removes a version no reader sees (superseded, hidden, or a delete marker) if its
// date has passed at store time now, and reports whether it did (with dry, would). A store
// may not report the date of such a version (versitygw 1.8 does not): then the removal is
// tried, the store refuses it while the version is locked, and false is reported; a dry run
// estimates from the version's modification time instead.
func (lp *lockPass) removeOld(ctx context.Context, v backend.Version, now time.Time, dry bool) (bool, error) {
	r := lp.r
	if !v.DeleteMarker && r.retain.set.Locks(v.Key) {
		if r.surelyLocked(v, now) {
			return false, nil
		}
		until, err := r.retain.be.RetainUntil(ctx, v.Key, v.ID)
		if errors.Is(err, backend.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		if until.After(now) || dry && until.IsZero() && v.ModTime.Add(r.retain.period).After(now) {
			return false, nil
		}
	}
	if dry {
		return true, nil
	}
	if err := stillHeld(lp.lk); err != nil {
		return false, err
	}
	err := r.retain.be.DeleteVersion(ctx, v.Key, v.ID)
	if errors.Is(err, backend.ErrRetained) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove version %s of %s: %w", v.ID, v.Key, err)
	}
	return true, nil
}

// retainMeta names the index's note of the date gc last saw or set on an object's current
// version: "<version id> <unix seconds>". It only ever saves a HEAD when gc decides whether to
// extend; nothing is removed because of it.
func retainMeta(key string) string { return "retain/" + key }

func (r *Repository) knownUntil(v backend.Version) time.Time {
	s, err := r.idx.Meta(retainMeta(v.Key))
	if err != nil || s == "" {
		return time.Time{}
	}
	id, sec, ok := strings.Cut(s, " ")
	n, err := strconv.ParseInt(sec, 10, 64)
	if !ok || id != v.ID || err != nil {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

func (r *Repository) noteUntil(v backend.Version, until time.Time) error {
	return r.idx.SetMeta(retainMeta(v.Key), fmt.Sprintf("%s %d", v.ID, until.Unix()))
}

// extend moves the date of each version in current that is less than half the period away to
// the period from now, and returns how many it extended (with dry, would extend). A key the
// retention exempts is left as it was written: unlocked.
func (r *Repository) extend(ctx context.Context, current []backend.Version, now func() time.Time, dry bool) (int, error) {
	var mu sync.Mutex
	n := 0
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, v := range current {
		if !r.retain.set.Locks(v.Key) {
			continue // exempt: a lock would keep a hint, or a lock object, for a whole period
		}
		g.Go(func() error {
			if known := r.knownUntil(v); known.Sub(now()) >= r.retain.period/2 {
				return nil
			}
			until, err := r.retain.be.RetainUntil(gctx, v.Key, v.ID)
			if errors.Is(err, backend.ErrNotFound) {
				return nil // replaced or hidden since the listing
			}
			if err != nil {
				return err
			}
			if until.Sub(now()) >= r.retain.period/2 {
				return r.noteUntil(v, until)
			}
			mu.Lock()
			n++
			mu.Unlock()
			if dry {
				return nil
			}
			// Rounded up to the second: the store keeps whole seconds.
			target := now().Add(r.retain.period).Truncate(time.Second).Add(time.Second)
			err = r.retain.be.Retain(gctx, v.Key, v.ID, target)
			if errors.Is(err, backend.ErrRetained) {
				// Another gc set a later date meanwhile: keep what the store has.
				if target, err = r.retain.be.RetainUntil(gctx, v.Key, v.ID); err != nil {
					return err
				}
			} else if err != nil {
				return fmt.Errorf("extend the lock of %s: %w", v.Key, err)
			}
			return r.noteUntil(v, target)
		})
	}
	err := g.Wait()
	return n, err
}

// sweep removes, once their dates have passed, the versions no reader sees: versions
// superseded by a newer one, and the versions of objects cairn hid (a deleted backup's
// manifest, a replaced key object). A current version is never touched, and a delete marker
// goes only after every version under it, so nothing hidden comes back. skip names keys gc
// has just removed. It returns how many versions it removed (with dry, would remove).
func (lp *lockPass) sweep(ctx context.Context, skip map[string]bool, dry bool) (int, error) {
	vs, now := lp.vs, lp.now
	keys := make([]string, 0, len(vs))
	for k, kv := range vs {
		if !skip[k] && (len(kv) > 1 || kv[0].DeleteMarker) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	n := 0
	for _, key := range keys {
		hidden := true
		for _, v := range vs[key] {
			if v.Latest && !v.DeleteMarker {
				hidden = false
			}
		}
		if hidden && !hasPrefix(key, lockedPrefixesHidden) {
			continue
		}
		kept := false
		var markers []backend.Version
		for _, v := range vs[key] {
			switch {
			case v.Latest && !hidden:
				continue
			case v.DeleteMarker:
				markers = append(markers, v)
				continue
			}
			gone, err := lp.removeOld(ctx, v, now(), dry)
			if err != nil {
				return n, err
			}
			if !gone {
				kept = true
				continue
			}
			n++
		}
		if hidden && kept {
			continue // the markers keep hiding what is still locked
		}
		sort.SliceStable(markers, func(i, j int) bool { return !markers[i].Latest && markers[j].Latest })
		for _, v := range markers {
			if _, err := lp.removeOld(ctx, v, now(), dry); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func hasPrefix(key string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// lockPass is what gc knows of an object-locked repository's versions in one run.
type lockPass struct {
	r   *Repository
	lk  *Lock            // gc's exclusive lock, checked before each version it removes
	now func() time.Time // the store's clock, never ahead of it
	vs  versions         // every version, listed under gc's exclusive lock before any change
}

func (r *Repository) newLockPass(ctx context.Context, lk *Lock) (*lockPass, error) {
	now, err := r.storeClock(ctx, lk)
	if err != nil {
		return nil, err
	}
	vs, err := r.listVersions(ctx)
	if err != nil {
		return nil, err
	}
	return &lockPass{r: r, lk: lk, now: now, vs: vs}, nil
}

// maintain is gc's last two steps in an object-locked repository: extend the dates of the
// objects in use, then sweep the versions no reader sees. An object is in use unless the
// retention exempts its kind (lock objects, the backup log: never locked when written, so
// never locked by gc either), it is a pack no backup needs (unreachable, or repacked in this
// run: usage has no live blob in it) with its index objects, or this run removed it.
func (lp *lockPass) maintain(ctx context.Context, st *GCStats, usage map[PackID]*packUsage, repacked []PackID, removed map[string]bool, dry bool) error {
	unused := func(id PackID) bool {
		u := usage[id]
		return slices.Contains(repacked, id) || u != nil && u.live == 0
	}
	var current []backend.Version
	for key, kv := range lp.vs {
		if removed[key] || !lp.r.retain.set.Locks(key) {
			continue
		}
		if id, ok := ParsePackKey(key); ok && unused(id) {
			continue
		}
		if _, name, ok := keyTime(indexPrefix, key); ok {
			if id, err := ParsePackID(name); err == nil && (unused(id) || !lp.visible(id.Key())) {
				continue
			}
		}
		for _, v := range kv {
			if v.Latest && !v.DeleteMarker {
				current = append(current, v)
			}
		}
	}
	n, err := lp.r.extend(ctx, current, lp.now, dry)
	st.ObjectsExtended = n
	if err != nil {
		return fmt.Errorf("gc: extend locks: %w", err)
	}
	n, err = lp.sweep(ctx, removed, dry)
	st.VersionsRemoved = n
	if err != nil {
		return fmt.Errorf("gc: remove old versions: %w", err)
	}
	return nil
}

// extendAfterFailedGC extends the date of every current object the retention locks, when gc
// stopped before its own extension (an unreadable backup stops its mark; a repack or a delete
// can fail): gc is the only thing that extends dates, so one junk manifest (a new version,
// which the lock allows anyone with the credentials to write) that stopped every gc let every
// backup's lock lapse within a period [TestAFailedGCStillExtendsTheLocks]. Without the
// mark, the objects in use are not known: all of them are extended, which costs storage
// (unreachable packs wait a period longer), never a backup. Its own failure is logged beside
// gc's.
func (r *Repository) extendAfterFailedGC(ctx context.Context, lk *Lock, st *GCStats, logf func(string, ...any)) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
	defer cancel()
	lp, err := r.newLockPass(ctx, lk)
	if err == nil {
		var current []backend.Version
		for key, kv := range lp.vs {
			if !r.retain.set.Locks(key) {
				continue
			}
			// A manifest's older versions too: what stopped gc may be a junk version
			// written over a backup's manifest, which is then the one to keep.
			older := strings.HasPrefix(key, "manifests/") || strings.HasPrefix(key, manifestCopyPrefix)
			for _, v := range kv {
				if !v.DeleteMarker && (v.Latest || older) {
					current = append(current, v)
				}
			}
		}
		st.ObjectsExtended, err = r.extend(ctx, current, lp.now, false)
	}
	if err != nil {
		logf("gc failed, and the locks' dates could not be extended either: %v", err)
		return
	}
	logf("gc failed: the dates of all %d locked objects were extended all the same", st.ObjectsExtended)
}

// visible reports whether key had a current version when the run listed them.
func (lp *lockPass) visible(key string) bool {
	for _, v := range lp.vs[key] {
		if v.Latest && !v.DeleteMarker {
			return true
		}
	}
	return false
}

// RetentionReport describes an object-locked repository's dates.
type RetentionReport struct {
	Mode   backend.LockMode `json:"mode"`
	Period time.Duration    `json:"-"`
	// Objects counts the current objects looked at (every one but lock objects).
	Objects int `json:"objects"`
	// Unprotected counts those whose date has passed (or that have none): anyone with the
	// credentials could remove them now. gc extends the ones in use.
	Unprotected int `json:"unprotected"`
	// Oldest and Newest are the earliest and latest retain-until dates among them.
	Oldest time.Time `json:"oldest_retain_until"`
	Newest time.Time `json:"newest_retain_until"`
}

// Retention reads the retain-until date of every current object (one HEAD each, 16 at a
// time: a full look, not a sample). It returns nil for a repository that is not
// object-locked, or whose store cannot say.
func (r *Repository) Retention(ctx context.Context) (*RetentionReport, error) {
	if r.cfg.ObjectLock == nil || r.retain == nil {
		return nil, nil
	}
	rep := &RetentionReport{Mode: r.retain.mode, Period: r.retain.period}
	var keys []string
	if err := r.be.List(ctx, "", func(oi backend.ObjectInfo) error {
		if !strings.HasPrefix(oi.Key, lockPrefix) && ownsKey(oi.Key) {
			keys = append(keys, oi.Key)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	var mu sync.Mutex
	now := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, key := range keys {
		g.Go(func() error {
			until, err := r.retain.be.RetainUntil(gctx, key, "")
			if errors.Is(err, backend.ErrNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			rep.Objects++
			if until.Before(now) {
				rep.Unprotected++
			}
			if until.IsZero() {
				return nil
			}
			if rep.Oldest.IsZero() || until.Before(rep.Oldest) {
				rep.Oldest = until
			}
			if until.After(rep.Newest) {
				rep.Newest = until
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return rep, nil
}
