package limit

import (
	"context"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

var _ backend.Versioned = (*Limit)(nil)

// versioned returns the wrapped backend's version calls, or ErrNotVersioned.
func (l *Limit) versioned(op, key string) (backend.Versioned, error) {
	if v, ok := l.Backend.(backend.Versioned); ok {
		return v, nil
	}
	return nil, fmt.Errorf("%s %s: %w", op, key, backend.ErrNotVersioned)
}

// ObjectLock runs in a slot; a backend that keeps no versions cannot lock.
func (l *Limit) ObjectLock(ctx context.Context) (bool, error) {
	v, ok := l.Backend.(backend.Versioned)
	if !ok {
		return false, nil
	}
	if err := l.acquire(ctx, "object lock", ""); err != nil {
		return false, err
	}
	defer l.release()
	return v.ObjectLock(ctx)
}

// KeepsVersions runs in a slot; a backend that is not Versioned keeps none.
func (l *Limit) KeepsVersions(ctx context.Context) (bool, error) {
	v, ok := l.Backend.(backend.Versioned)
	if !ok {
		return false, nil
	}
	if err := l.acquire(ctx, "versioning", ""); err != nil {
		return false, err
	}
	defer l.release()
	return v.KeepsVersions(ctx)
}

// SetRetention passes the retention on.
func (l *Limit) SetRetention(r *backend.Retention) {
	if v, ok := l.Backend.(backend.Versioned); ok {
		v.SetRetention(r)
	}
}

// ListVersions is not limited, like List.
func (l *Limit) ListVersions(ctx context.Context, prefix string, fn func(backend.Version) error) error {
	v, err := l.versioned("list versions", prefix)
	if err != nil {
		return err
	}
	return v.ListVersions(ctx, prefix, fn)
}

// RetainUntil runs in a slot.
func (l *Limit) RetainUntil(ctx context.Context, key, version string) (time.Time, error) {
	v, err := l.versioned("stat", key)
	if err != nil {
		return time.Time{}, err
	}
	if err := l.acquire(ctx, "stat", key); err != nil {
		return time.Time{}, err
	}
	defer l.release()
	return v.RetainUntil(ctx, key, version)
}

// Retain runs in a slot.
func (l *Limit) Retain(ctx context.Context, key, version string, until time.Time) error {
	v, err := l.versioned("retain", key)
	if err != nil {
		return err
	}
	if err := l.acquire(ctx, "retain", key); err != nil {
		return err
	}
	defer l.release()
	return v.Retain(ctx, key, version, until)
}

// DeleteVersion runs in a slot.
func (l *Limit) DeleteVersion(ctx context.Context, key, version string) error {
	v, err := l.versioned("delete", key)
	if err != nil {
		return err
	}
	if err := l.acquire(ctx, "delete", key); err != nil {
		return err
	}
	defer l.release()
	return v.DeleteVersion(ctx, key, version)
}
