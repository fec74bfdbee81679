package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Locks coordinate every process (on any host) that uses one repository. They are objects
// locks/<id> in the backend, restic's model: backups, restores, deletes and checks hold a
// shared lock; gc holds an exclusive one while it decides and deletes. docs/design.md has the
// protocol and the argument for its safety.

// LockKind says whether a lock is shared or exclusive.
type LockKind string

// Lock kinds.
const (
	LockShared    LockKind = "shared"
	LockExclusive LockKind = "exclusive"
	lockProbe     LockKind = "probe" // written only to read the store's clock; never a lock
	// LockClaim is held by one process at a time per operation ("policy nightly"), across
	// hosts: a claim conflicts only with claims of the same operation, never with shared or
	// exclusive locks, and is refused at once rather than waited for (Repository.Claim).
	LockClaim LockKind = "claim"
)

// Lock timing defaults. A lock not refreshed for StaleAfter is stale and may be broken; its
// holder gives up (the lock is "lost") when it has not refreshed for StaleAfter*3/4. An
// exclusive lock waits DefaultLockWait for conflicting ones unless told otherwise.
const (
	DefaultLockStale = 10 * time.Minute
	DefaultLockWait  = time.Minute
	lockPrefix       = "locks/"
)

// ErrLocked means the repository is locked by another process in a conflicting way.
var ErrLocked = errors.New("the repository is locked")

// ErrLockLost means a held lock was removed by someone else or could not be refreshed in time:
// the operation must not commit anything.
var ErrLockLost = errors.New("the repository lock was lost")

// LockInfo describes one lock object.
type LockInfo struct {
	ID        string    `json:"id"`
	Kind      LockKind  `json:"kind"`
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Operation string    `json:"operation"`
	Created   time.Time `json:"created"`   // by the holder's clock
	Refreshed time.Time `json:"refreshed"` // by the store's clock
	Stale     bool      `json:"stale"`
	Why       string    `json:"why,omitempty"` // why it is stale
	// Damaged is set for a lock object that cannot be authenticated (treated as live and
	// exclusive until it is stale by age).
	Damaged bool `json:"damaged,omitempty"`
	// Space names the holder's process space: its host's boot and pid namespace
	// (processSpace). A pid is judged only by a process in the same space: two machines (or
	// containers) may share a host name, and a pid means nothing outside its namespace.
	Space string `json:"space,omitempty"`
	// Start is the holder's start in clock ticks since its boot (processStart): with Space and
	// PID it names the process whatever the wall clock does; 0 if unknown.
	Start uint64 `json:"start,omitempty"`
	// Wrote is the holder's clock when it last wrote the object: beside Refreshed (the
	// store's clock at that write) it says how far the holder's clock is off the store's.
	Wrote time.Time `json:"wrote,omitempty"`
	// StaleAfter is the holder's --lock-stale: it refreshes every eighth of it and gives up
	// at three quarters, so nobody may judge its lock stale sooner, whatever their own
	// setting (0 in objects written before 2026-12-05).
	StaleAfter time.Duration `json:"stale_after,omitempty"`
	// gone: stale because its process is gone (or is this one, which does not hold it), so
	// it writes nothing more; a lock stale by age may have a live writer.
	gone bool
}

// CreatedByStore is when the lock was taken by the store's clock, as near as its object tells:
// Created moved by the holder's clock's offset at its last write (Refreshed − Wrote), or
// Created itself if that is earlier or the offset unknown. A holder's clock hours ahead of the
// store's would otherwise date its lock after everything it wrote.
func (li LockInfo) CreatedByStore() time.Time {
	if li.Wrote.IsZero() || li.Refreshed.IsZero() {
		return li.Created
	}
	if c := li.Created.Add(li.Refreshed.Sub(li.Wrote)); c.Before(li.Created) {
		return c
	}
	return li.Created
}

func (li LockInfo) String() string {
	return fmt.Sprintf("%s lock of %s (host %s, pid %d) since %s", li.Kind, li.Operation, li.Host, li.PID, li.Created.Format(time.RFC3339))
}

// LockOptions tune locking; zero values are the defaults.
type LockOptions struct {
	// StaleAfter: a lock not refreshed for this long is stale (default DefaultLockStale).
	StaleAfter time.Duration
	// Wait bounds how long taking an exclusive lock waits for conflicting ones (default
	// DefaultLockWait); shared locks wait as long as their context allows.
	Wait time.Duration
}

type locker struct {
	be backend.Backend
	// retain, in an object-locked repository, removes every version of a released lock
	// object (each refresh wrote one); nil otherwise.
	retain *retention
	k      *keys
	o      LockOptions
	host   string
	space  string
	pid    int
	start  uint64
}

// held are this process's locks by id, across every open Repository (a lock object naming
// this process that is not here was left behind by it).
var held = struct {
	sync.Mutex
	m map[string]*Lock
}{m: map[string]*Lock{}}

func newLocker(be backend.Backend, k *keys, o LockOptions) *locker {
	if o.StaleAfter <= 0 {
		o.StaleAfter = DefaultLockStale
	}
	host, _ := os.Hostname()
	return &locker{be: be, k: k, o: o, host: host, space: processSpace(), pid: os.Getpid(), start: processStart()}
}

// Lock is a held lock. Release it with Unlock; Check before committing anything.
type Lock struct {
	l    *locker
	info LockInfo
	key  string

	mu          sync.Mutex
	lastRefresh time.Time // local time (monotonic and wall) the last successful write of the object began
	lost        error
	stop        chan struct{}
	done        chan struct{}
	release     func() // releases the in-process half
	// broken are the stale locks an exclusive locker removed when it took this lock.
	broken []LockInfo
	local  bool // no lock object (read-only repository)
}

// Info describes the lock.
func (lk *Lock) Info() LockInfo { return lk.info }

// Check returns ErrLockLost (wrapped with the reason) once the lock can no longer be trusted.
func (lk *Lock) Check() error {
	lk.mu.Lock()
	lost, last := lk.lost, lk.lastRefresh
	lk.mu.Unlock()
	if lost != nil || lk.local {
		return lost
	}
	if since := sinceRefresh(last); since > lk.l.o.StaleAfter*3/4 {
		return lk.lose(fmt.Errorf("%w: not refreshed for %s", ErrLockLost, since.Round(time.Second)))
	}
	return nil
}

// wallNow reads the wall clock for sinceRefresh; tests move it to jump the wall clock with no
// monotonic advance, as a suspended host's does.
var wallNow = time.Now

// sinceRefresh is how long ago last was, by the monotonic clock or by the wall clock, whichever
// says longer. The monotonic clock alone stands still while the host is suspended (and often
// while a VM is paused), when the store's clock runs on: a holder that slept past --lock-stale
// would count its lock held while others took it for stale and broke it. A wall clock stepped
// forward may lose a lock that was not; that only fails a run
// [TestLockLostWhenTheWallClockJumps].
func sinceRefresh(last time.Time) time.Duration {
	return max(time.Since(last), wallNow().Round(0).Sub(last.Round(0)))
}

// Confirm is Check, and also looks for the lock object: one removed since the last refresh
// (broken by a gc elsewhere, or by 'repo unlock --force') is a lost lock too, which the
// refresher would notice only up to --lock-stale/8 later. For the moment before a commit
// [TestBackupCommitsNothingOnceItsLockObjectIsGone].
func (lk *Lock) Confirm(ctx context.Context) error {
	if err := lk.Check(); err != nil || lk.local {
		return err
	}
	err := lk.objectThere(ctx)
	if err != nil && !errors.Is(err, ErrLockLost) {
		err = fmt.Errorf("look for lock object %s: %w", lk.key, err)
	}
	return err
}

// objectThere looks for the lock object: one removed (broken as stale, or by 'repo unlock
// --force') loses the lock. Other errors are the store's.
func (lk *Lock) objectThere(ctx context.Context) error {
	if _, err := lk.l.be.Stat(ctx, lk.key); errors.Is(err, backend.ErrNotFound) {
		return lk.lose(fmt.Errorf("%w: its lock object %s was removed (broken as stale?)", ErrLockLost, lk.key))
	} else if err != nil {
		return err
	}
	return nil
}

// lose marks the lock lost for the reason err, unless it already is, and returns the first
// reason.
func (lk *Lock) lose(err error) error {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.lost == nil {
		lk.lost = err
	}
	return lk.lost
}

// Unlock removes the lock object and releases the in-process half. Safe to call twice.
func (lk *Lock) Unlock() {
	select {
	case <-lk.stop:
		return
	default:
	}
	close(lk.stop)
	<-lk.done
	// A lock whose removal fails goes stale and is broken later; it never blocks forever.
	if !lk.local {
		_ = lk.l.remove(context.Background(), lk.key)
	}
	held.Lock()
	delete(held.m, lk.info.ID)
	held.Unlock()
	if lk.release != nil {
		lk.release()
	}
}

func (lk *Lock) refresher(every time.Duration) {
	defer close(lk.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-lk.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), lk.l.o.StaleAfter/4)
		err := lk.refresh(ctx)
		cancel()
		if errors.Is(err, ErrLockLost) {
			return
		}
	}
}

// refresh rewrites the lock object, unless someone removed it or the object may have looked
// stale to someone since the last write began (then the lock is lost).
//
// The second rule closes a race that finding the object in place cannot: a holder stalled
// past --lock-stale (a paused VM) that wakes as gc lists the locks, judges its object stale
// and is about to remove it, would otherwise rewrite the object, see it there, and commit
// while gc runs; its next refresh finds the object gone, too late. So the lock is lost once
// more than ¾ of --lock-stale lies between the start of one write and the end of the next,
// whatever the object says: the object's time is at least its last write's start, so while
// that rule holds, its age stays under --lock-stale and no one judges it stale. The time is
// the longer of the monotonic and the wall clock's (sinceRefresh): a suspended host's
// monotonic clock says no time passed.
func (lk *Lock) refresh(ctx context.Context) error {
	limit := lk.l.o.StaleAfter * 3 / 4
	lk.mu.Lock()
	prev := lk.lastRefresh
	lk.mu.Unlock()
	start := time.Now()
	stalled := func(since time.Duration) error {
		return lk.lose(fmt.Errorf("%w: not refreshed for %s (stalled or suspended?), so it may have been broken as stale", ErrLockLost, since.Round(time.Second)))
	}
	if since := sinceRefresh(prev); since > limit {
		return stalled(since)
	}
	if err := lk.objectThere(ctx); err != nil {
		return err
	}
	if err := lk.l.write(ctx, lk.key, lk.info); err != nil {
		return err
	}
	if since := sinceRefresh(prev); since > limit {
		return stalled(since)
	}
	lk.mu.Lock()
	lk.lastRefresh = start
	lk.mu.Unlock()
	return nil
}

// remove removes a lock object for good (removeWhole).
func (l *locker) remove(ctx context.Context, key string) error {
	return removeWhole(ctx, l.be, l.retain, key)
}

// removeWhole removes an object object lock exempts (a lock object, a hint of what runs now)
// for good: every version of it in an object-locked repository (rt set). A version the store
// keeps locked all the same (a bucket whose default retention locks every object) is hidden
// instead, so what it said ends all the same.
func removeWhole(ctx context.Context, be backend.Backend, rt *retention, key string) error {
	if rt != nil {
		err := rt.purge(ctx, key)
		if !errors.Is(err, backend.ErrRetained) {
			return err
		}
	}
	return be.Delete(ctx, key)
}

// inProcess returns a shared lock without a lock object, for a read-only repository.
func (l *locker) inProcess(op string) *Lock {
	lk := &Lock{l: l, info: LockInfo{ID: newLockID(), Kind: LockShared, Host: l.host, Space: l.space, Start: l.start, PID: l.pid, Operation: op, Created: time.Now().UTC(), StaleAfter: l.o.StaleAfter},
		stop: make(chan struct{}), done: make(chan struct{}), lastRefresh: time.Now(), local: true}
	close(lk.done)
	return lk
}

func newLockID() string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

func (l *locker) write(ctx context.Context, key string, info LockInfo) error {
	rec := info
	rec.Refreshed, rec.Stale, rec.Why = time.Time{}, false, ""
	rec.Wrote = time.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return l.be.Put(ctx, key, l.k.sealObject(key, b))
}

// acquire takes a lock of the given kind for op. It writes its own lock object first and then
// lists the others: of two processes that do this at the same time, at least one sees the
// other's object, so they never both hold conflicting locks (with a store whose listings show
// every completed write, which S3 and a directory do).
func (l *locker) acquire(ctx context.Context, kind LockKind, op string) (*Lock, error) {
	info := LockInfo{ID: newLockID(), Kind: kind, Host: l.host, Space: l.space, Start: l.start, PID: l.pid, Operation: op, Created: time.Now().UTC(), StaleAfter: l.o.StaleAfter}
	key := lockPrefix + info.ID
	// Only gc's exclusive lock gives up: a backup or restore waits for a running gc as long as
	// its context allows (gc is bounded; a dead gc's lock goes stale).
	var wait time.Duration
	if kind == LockExclusive {
		wait = l.o.Wait
		if wait <= 0 {
			wait = DefaultLockWait
		}
	}
	var deadline time.Time
	if wait > 0 {
		deadline = time.Now().Add(wait)
	}
	lk := &Lock{l: l, info: info, key: key, stop: make(chan struct{}), done: make(chan struct{})}
	held.Lock()
	held.m[info.ID] = lk
	held.Unlock()
	fail := func(err error) (*Lock, error) {
		_ = l.remove(context.WithoutCancel(ctx), key)
		held.Lock()
		delete(held.m, info.ID)
		held.Unlock()
		return nil, err
	}
	backoff := 200 * time.Millisecond
	for {
		// Our object is written on every try, also while an exclusive lock waits with it in
		// place: its time is the store's clock by which list judges the others (written once,
		// that clock stood still, and a lock that went stale during the wait never looked
		// stale), and a waiting lock must not look stale itself.
		lk.lastRefresh = time.Now()
		if err := l.write(ctx, key, info); err != nil {
			return fail(fmt.Errorf("take %s lock: %w", kind, err))
		}
		others, err := l.list(ctx, key, time.Time{})
		if err != nil {
			return fail(fmt.Errorf("take %s lock: %w", kind, err))
		}
		var blocking []LockInfo
		for _, o := range others {
			if conflicts(kind, op, o) {
				blocking = append(blocking, o)
			}
		}
		if len(blocking) > 0 && kind == LockClaim {
			// Held elsewhere, or two claimers that see each other: both step aside.
			return fail(fmt.Errorf("%w: %s", ErrLocked, blocking[0]))
		}
		if len(blocking) == 0 {
			if kind == LockExclusive {
				if lk.broken, err = l.breakStale(ctx, others); err != nil {
					return fail(fmt.Errorf("break stale locks: %w", err))
				}
			}
			break
		}
		// An exclusive lock that waits keeps its object, so new shared lockers back off and
		// running ones drain; a shared one steps aside while an exclusive one exists. Two
		// exclusive lockers that see each other both step aside and retry after a random delay.
		stepAside := kind == LockShared
		for _, o := range blocking {
			if o.Kind == LockExclusive || o.Damaged {
				stepAside = true
			}
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			return fail(fmt.Errorf("%w: %s: wait for it to finish, or if its process is gone run 'cairn repo unlock'", ErrLocked, blocking[0]))
		}
		if stepAside {
			if err := l.remove(ctx, key); err != nil {
				return fail(err)
			}
		}
		jitter, _ := rand.Int(rand.Reader, big.NewInt(int64(backoff)))
		select {
		case <-ctx.Done():
			return fail(ctx.Err())
		case <-time.After(backoff/2 + time.Duration(jitter.Int64())/2):
		}
		backoff = min(backoff*2, 2*time.Second, max(l.o.StaleAfter/4, 50*time.Millisecond))
	}
	go lk.refresher(max(l.o.StaleAfter/8, 50*time.Millisecond))
	return lk, nil
}

// conflicts says whether a live lock o keeps out a lock of kind for op: a shared lock and an
// exclusive one, or two exclusive ones, conflict (a damaged object counts as exclusive); a
// claim conflicts only with a claim of the same op; stale locks and probes with nothing.
func conflicts(kind LockKind, op string, o LockInfo) bool {
	switch {
	case o.Stale || o.Kind == lockProbe:
		return false
	case kind == LockClaim || o.Kind == LockClaim:
		return kind == o.Kind && o.Operation == op
	}
	return kind == LockExclusive || o.Kind == LockExclusive || o.Damaged
}

// list reads every lock object but own (its key), and says which are stale. The store's clock
// is read from the newest ModTime among own and the others, so hosts' clocks never matter;
// storeNow, when later, stands for it (LocksAt: no object of our own was just written).
func (l *locker) list(ctx context.Context, own string, storeNow time.Time) ([]LockInfo, error) {
	type obj struct {
		key string
		mod time.Time
	}
	var objs []obj
	now := storeNow
	sawOwn := false
	if err := l.be.List(ctx, lockPrefix, func(oi backend.ObjectInfo) error {
		if oi.ModTime.After(now) {
			now = oi.ModTime
		}
		if oi.Key != own {
			objs = append(objs, obj{oi.Key, oi.ModTime})
		} else {
			sawOwn = true
		}
		return nil
	}); err != nil {
		return nil, err
	}
	// The locks rest on listings that show every write that completed before them: a listing
	// without the object just written is proof that this store's do not (an eventually
	// consistent replica behind a balancer, a caching proxy), and that another locker's object
	// may be missing from it too. No lock is taken on such a listing
	// [TestALockIsNotTakenOnAListingThatLagsItsOwnWrite].
	if own != "" && !sawOwn {
		return nil, fmt.Errorf("%w: the store's listing of %s does not show the lock object %s just written: its listings lag its writes (an eventually consistent replica or a caching proxy in front?), and cairn's locks need listings that show every completed write", backend.ErrUnavailable, lockPrefix, own)
	}
	var out []LockInfo
	for _, o := range objs {
		li := LockInfo{ID: strings.TrimPrefix(o.key, lockPrefix), Refreshed: o.mod}
		stored, err := getAll(ctx, l.be, o.key)
		if errors.Is(err, backend.ErrNotFound) {
			// Released while we listed, if the store says so twice. A listed lock that one
			// read calls missing (a proxy's 404 page, a lagging replica) and that is still
			// there is a lock we cannot read: damaged, so exclusive. Skipped, it let a gc
			// delete the packs of a backup that held it
			// [TestALockThatOneReadCallsMissingStillKeepsGCOut].
			if _, serr := l.be.Stat(ctx, o.key); errors.Is(serr, backend.ErrNotFound) {
				continue
			} else if serr != nil {
				return nil, serr
			}
		} else if err != nil {
			return nil, err
		}
		if err == nil {
			var b []byte
			if b, err = l.k.openObject(o.key, stored); err == nil {
				err = json.Unmarshal(b, &li)
				li.Refreshed = o.mod
			}
		}
		if err != nil || li.ID != strings.TrimPrefix(o.key, lockPrefix) {
			li = LockInfo{ID: strings.TrimPrefix(o.key, lockPrefix), Kind: LockExclusive, Refreshed: o.mod, Damaged: true}
		}
		l.judge(&li, now)
		out = append(out, li)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// judge marks a lock stale when it was not refreshed for StaleAfter by the store's clock, or
// when it names a process of this host and pid namespace that no longer runs (or this
// process, which does not hold it). A lock of a host of the same name in another boot or
// namespace is judged by age alone [TestLockOfAnotherMachineOfTheSameNameIsNotBrokenByPID].
//
// The age is held to the larger of this process's --lock-stale and the holder's: a holder with
// a longer one refreshes more seldom and gives up later, and judged by a shorter one its lock
// was broken while it still held it, so a backup could commit after a gc had deleted its
// packs [TestLockIsJudgedByItsHoldersStaleness].
func (l *locker) judge(li *LockInfo, now time.Time) {
	if age := now.Sub(li.Refreshed); age > max(l.o.StaleAfter, li.StaleAfter) {
		li.Stale, li.Why = true, fmt.Sprintf("not refreshed for %s", age.Round(time.Second))
		return
	}
	if li.Damaged || !l.ours(*li) || li.PID <= 0 {
		return
	}
	if li.PID == l.pid {
		held.Lock()
		_, mine := held.m[li.ID]
		held.Unlock()
		if !mine {
			li.Stale, li.Why, li.gone = true, "left by this process", true
		}
		return
	}
	if !processHolds(li.PID, li.Start) {
		li.Stale, li.Why, li.gone = true, fmt.Sprintf("process %d is gone", li.PID), true
	}
}

// ours says whether li was written by a process this one can see: the same host name, boot
// and pid namespace, so that its pid names the same process here.
func (l *locker) ours(li LockInfo) bool { return li.Host == l.host && li.Space == l.space }

// Claim takes the claim op ("policy nightly"): at most one process anywhere holds a claim of
// one op at a time (docs/design.md, "Policies"). It fails at once with ErrLocked, naming the
// holder, when another process holds it. Release it with Unlock; Check says whether it is
// still held.
func (r *Repository) Claim(ctx context.Context, op string) (*Lock, error) {
	if r.readOnly {
		return nil, fmt.Errorf("%s: %w", op, backend.ErrReadOnly)
	}
	return r.locks.acquire(ctx, LockClaim, op)
}

// ClaimWithin takes the claim op as Claim does, trying again after a random backoff while
// another process holds it, for up to wait: for a short operation that others queue behind,
// such as a manifest's rewrite. It fails with ErrLocked, naming the holder, once wait is over.
func (r *Repository) ClaimWithin(ctx context.Context, op string, wait time.Duration) (*Lock, error) {
	if r.readOnly {
		return nil, fmt.Errorf("%s: %w", op, backend.ErrReadOnly)
	}
	return r.locks.claimWithin(ctx, op, wait)
}

// claimWithin is ClaimWithin for whatever holds a locker (a Keyring has no Repository).
func (l *locker) claimWithin(ctx context.Context, op string, wait time.Duration) (*Lock, error) {
	deadline := time.Now().Add(wait)
	backoff := 20 * time.Millisecond
	for {
		lk, err := l.acquire(ctx, LockClaim, op)
		if !errors.Is(err, ErrLocked) || time.Now().After(deadline) {
			return lk, err
		}
		// Random, so two claimers that saw each other do not try again in step.
		n, rerr := rand.Int(rand.Reader, big.NewInt(int64(backoff)))
		if rerr != nil {
			return nil, rerr
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff/2 + time.Duration(n.Int64())):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// Locks lists the repository's lock objects, saying which are stale.
func (r *Repository) Locks(ctx context.Context) ([]LockInfo, error) {
	// A probe object of our own gives the store's current time even when every other lock
	// is old.
	key := lockPrefix + newLockID()
	if err := r.locks.write(ctx, key, LockInfo{Kind: lockProbe, Host: r.locks.host, Space: r.locks.space, Start: r.locks.start, PID: r.locks.pid, Operation: "probe", Created: time.Now().UTC()}); err != nil {
		return nil, err
	}
	defer r.locks.remove(context.WithoutCancel(ctx), key) //nolint:errcheck // a leftover probe is stale and harmless
	return r.locks.locks(ctx, key, time.Time{})
}

// locks is list without the probe objects (others' as well as own).
func (l *locker) locks(ctx context.Context, own string, storeNow time.Time) ([]LockInfo, error) {
	all, err := l.list(ctx, own, storeNow)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(li LockInfo) bool { return li.Kind == lockProbe }), nil
}

// LocksAt lists the repository's lock objects as Locks does, without writing: their ages are
// judged against storeNow, the caller's best knowledge of the store's clock (a gateway's
// measured offset), or the newest lock object's time when that is later. For a look that must
// not write (a metrics scrape, a page that refreshes itself, a read-only repository); a clock
// behind the store's only makes locks look younger (docs/design.md, "Locks").
func (r *Repository) LocksAt(ctx context.Context, storeNow time.Time) ([]LockInfo, error) {
	return r.locks.locks(ctx, "", storeNow)
}

// Unlock removes stale lock objects (all of them with force, which is only safe when the
// admin knows that no process that holds them still runs) and returns what it removed.
func (r *Repository) Unlock(ctx context.Context, force bool) ([]LockInfo, error) {
	all, err := r.Locks(ctx)
	if err != nil {
		return nil, err
	}
	var removed []LockInfo
	for _, li := range all {
		if !li.Stale && !force {
			continue
		}
		if err := r.locks.remove(ctx, lockPrefix+li.ID); err != nil {
			return removed, err
		}
		removed = append(removed, li)
	}
	return removed, nil
}

// breakStale removes the stale locks among others and returns them.
func (l *locker) breakStale(ctx context.Context, others []LockInfo) ([]LockInfo, error) {
	var broken []LockInfo
	for _, li := range others {
		if li.Stale && li.Kind != lockProbe {
			if err := l.remove(ctx, lockPrefix+li.ID); err != nil {
				return broken, err
			}
			broken = append(broken, li)
		}
	}
	return broken, nil
}
