package backend

import (
	"context"
	"errors"
	"strings"
	"time"
)

// LockMode is how an object version is locked (S3 Object Lock). A governance lock can be
// lifted or shortened by a principal allowed to bypass governance retention; a compliance
// lock by nobody, the account's root included, until its date.
type LockMode string

// Lock modes.
const (
	Governance LockMode = "governance"
	Compliance LockMode = "compliance"
)

// ParseLockMode accepts "governance" or "compliance" (any case).
func ParseLockMode(s string) (LockMode, error) {
	switch m := LockMode(strings.ToLower(s)); m {
	case Governance, Compliance:
		return m, nil
	}
	return "", errors.New("object lock mode " + s + ": want governance or compliance")
}

// Retention is what a Versioned backend applies to every object it stores from the moment it
// is set: the object's version is locked in Mode until Period after the Put.
type Retention struct {
	Mode   LockMode
	Period time.Duration
	// Exempt lists key prefixes stored without a lock: objects deleted soon after they are
	// written (lock objects), which a lock would only keep around.
	Exempt []string
}

// Locks reports whether a Put of key is locked under r (a nil r locks nothing).
func (r *Retention) Locks(key string) bool {
	if r == nil {
		return false
	}
	for _, p := range r.Exempt {
		if strings.HasPrefix(key, p) {
			return false
		}
	}
	return true
}

// Version is one stored version of an object in a versioned store, or a delete marker.
type Version struct {
	Key string
	// ID is the store's version id.
	ID string
	// Latest is the version a Get returns, or, for a delete marker, the one that hides the key.
	Latest bool
	// DeleteMarker: not data, a marker that hides the versions under it (a Delete on a
	// versioned store writes one).
	DeleteMarker bool
	Size         int64
	ModTime      time.Time
}

// ErrRetained means the store refused to remove or shorten the lock of an object version
// whose retain-until date has not passed.
var ErrRetained = errors.New("the object is locked until its retain-until date")

// ErrNotVersioned means the backend under a wrapper keeps no versions (a directory).
var ErrNotVersioned = errors.New("the backend keeps no object versions")

// Versioned is a Backend over a store that keeps every version of an object and can lock
// versions until a date (S3 with Object Lock, which implies versioning). On such a store
// Delete only hides an object behind a delete marker: its versions stay, and each goes only
// through DeleteVersion, which the store refuses while the version is locked.
//
// Wrappers implement it by passing calls to the backend they wrap, or failing with
// ErrNotVersioned when that backend is not Versioned; ObjectLock says which.
type Versioned interface {
	Backend
	// ObjectLock reports whether the store can lock objects (an S3 bucket with an object
	// lock configuration); false, with no error, for one that cannot.
	ObjectLock(ctx context.Context) (bool, error)
	// KeepsVersions reports whether a Delete leaves the object's data stored, as a version
	// behind a delete marker (an S3 bucket with versioning enabled, object lock or not);
	// false, with no error, for one that does not.
	KeepsVersions(ctx context.Context) (bool, error)
	// SetRetention makes every later Put lock its object (nil: none). A repository sets it
	// once, when it is created or opened, before it writes.
	SetRetention(r *Retention)
	// ListVersions calls fn for every version and delete marker of every key under prefix.
	ListVersions(ctx context.Context, prefix string, fn func(Version) error) error
	// RetainUntil returns a version's retain-until date; zero when it is not locked, or when
	// the store does not say: versitygw 1.8 reports the date of an object's current version
	// only, so zero for a superseded or hidden version means "unknown" (the store still
	// refuses to remove it while it is locked).
	RetainUntil(ctx context.Context, key, version string) (time.Time, error)
	// Retain sets a version's retain-until date, in the mode of the retention set; the store
	// refuses an earlier date than the one it has (ErrRetained).
	Retain(ctx context.Context, key, version string, until time.Time) error
	// DeleteVersion removes one version (or delete marker) for good; a missing one is not an
	// error, a locked one is ErrRetained.
	DeleteVersion(ctx context.Context, key, version string) error
}
