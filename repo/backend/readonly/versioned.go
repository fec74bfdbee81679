package readonly

import (
	"context"
	"fmt"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

var _ backend.Versioned = (*ReadOnly)(nil)

func (r *ReadOnly) versioned(op, key string) (backend.Versioned, error) {
	if v, ok := r.Backend.(backend.Versioned); ok {
		return v, nil
	}
	return nil, fmt.Errorf("%s %s: %w", op, key, backend.ErrNotVersioned)
}

// ObjectLock passes the question on.
func (r *ReadOnly) ObjectLock(ctx context.Context) (bool, error) {
	if v, ok := r.Backend.(backend.Versioned); ok {
		return v.ObjectLock(ctx)
	}
	return false, nil
}

// KeepsVersions passes the question on.
func (r *ReadOnly) KeepsVersions(ctx context.Context) (bool, error) {
	if v, ok := r.Backend.(backend.Versioned); ok {
		return v.KeepsVersions(ctx)
	}
	return false, nil
}

// SetRetention does nothing: nothing is written.
func (r *ReadOnly) SetRetention(*backend.Retention) {}

// ListVersions passes the listing on.
func (r *ReadOnly) ListVersions(ctx context.Context, prefix string, fn func(backend.Version) error) error {
	v, err := r.versioned("list versions", prefix)
	if err != nil {
		return err
	}
	return v.ListVersions(ctx, prefix, fn)
}

// RetainUntil passes the lookup on.
func (r *ReadOnly) RetainUntil(ctx context.Context, key, version string) (time.Time, error) {
	v, err := r.versioned("stat", key)
	if err != nil {
		return time.Time{}, err
	}
	return v.RetainUntil(ctx, key, version)
}

// Retain refuses.
func (r *ReadOnly) Retain(_ context.Context, key, _ string, _ time.Time) error {
	return fmt.Errorf("retain %s: %w", key, backend.ErrReadOnly)
}

// DeleteVersion refuses.
func (r *ReadOnly) DeleteVersion(_ context.Context, key, _ string) error {
	return fmt.Errorf("delete %s: %w", key, backend.ErrReadOnly)
}
