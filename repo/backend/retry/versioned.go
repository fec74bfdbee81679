package retry

import (
	"context"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

var _ backend.Versioned = (*Retry)(nil)

// versioned returns the wrapped backend's version calls, or ErrNotVersioned.
func (r *Retry) versioned(op, key string) (backend.Versioned, error) {
	if v, ok := r.Backend.(backend.Versioned); ok {
		return v, nil
	}
	return nil, fmt.Errorf("%s %s: %w", op, key, backend.ErrNotVersioned)
}

// ObjectLock retries the question; a backend that keeps no versions cannot lock.
func (r *Retry) ObjectLock(ctx context.Context) (bool, error) {
	v, ok := r.Backend.(backend.Versioned)
	if !ok {
		return false, nil
	}
	var on bool
	err := r.do(ctx, "object lock", "", r.once("object lock", "", func(ctx context.Context) error {
		var err error
		on, err = v.ObjectLock(ctx)
		return err
	}))
	return on, err
}

// KeepsVersions retries the question; a backend that is not Versioned keeps none.
func (r *Retry) KeepsVersions(ctx context.Context) (bool, error) {
	v, ok := r.Backend.(backend.Versioned)
	if !ok {
		return false, nil
	}
	var on bool
	err := r.do(ctx, "versioning", "", r.once("versioning", "", func(ctx context.Context) error {
		var err error
		on, err = v.KeepsVersions(ctx)
		return err
	}))
	return on, err
}

// SetRetention passes the retention on.
func (r *Retry) SetRetention(ret *backend.Retention) {
	if v, ok := r.Backend.(backend.Versioned); ok {
		v.SetRetention(ret)
	}
}

// ListVersions retries like List, calling fn only for versions it has not seen.
func (r *Retry) ListVersions(ctx context.Context, prefix string, fn func(backend.Version) error) error {
	v, err := r.versioned("list versions", prefix)
	if err != nil {
		return err
	}
	// cairn's keys and a store's version ids hold no NUL: joined by one, they name a version.
	return listing(ctx, r, "list versions", prefix, func(ctx context.Context, each func(backend.Version) error) error {
		return v.ListVersions(ctx, prefix, each)
	}, func(ver backend.Version) string { return ver.Key + "\x00" + ver.ID }, fn)
}

// RetainUntil retries the lookup.
func (r *Retry) RetainUntil(ctx context.Context, key, version string) (time.Time, error) {
	v, err := r.versioned("stat", key)
	if err != nil {
		return time.Time{}, err
	}
	var until time.Time
	err = r.do(ctx, "stat", key, r.once("stat", key, func(ctx context.Context) error {
		var err error
		until, err = v.RetainUntil(ctx, key, version)
		return err
	}))
	return until, err
}

// Retain retries; setting the same date twice is harmless.
func (r *Retry) Retain(ctx context.Context, key, version string, until time.Time) error {
	v, err := r.versioned("retain", key)
	if err != nil {
		return err
	}
	return r.do(ctx, "retain", key, r.once("retain", key, func(ctx context.Context) error {
		return v.Retain(ctx, key, version, until)
	}))
}

// DeleteVersion retries; removing a version twice is harmless.
func (r *Retry) DeleteVersion(ctx context.Context, key, version string) error {
	v, err := r.versioned("delete", key)
	if err != nil {
		return err
	}
	return r.do(ctx, "delete", key, r.once("delete", key, func(ctx context.Context) error {
		return v.DeleteVersion(ctx, key, version)
	}))
}
