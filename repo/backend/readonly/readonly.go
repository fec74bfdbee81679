// Package readonly wraps a backend so that nothing can be written to it: a repository on
// read-only media, a snapshot of one, or one opened with --read-only.
package readonly

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/repo/backend"
)

// ReadOnly refuses Put and Delete with backend.ErrReadOnly and passes reads through.
type ReadOnly struct {
	backend.Backend
}

var (
	_ backend.Backend = (*ReadOnly)(nil)
	_ backend.Creator = (*ReadOnly)(nil)
)

// New wraps b.
func New(b backend.Backend) *ReadOnly { return &ReadOnly{Backend: b} }

// Put refuses.
func (r *ReadOnly) Put(_ context.Context, key string, _ []byte) error {
	return fmt.Errorf("write %s: %w", key, backend.ErrReadOnly)
}

// Create refuses.
func (r *ReadOnly) Create(_ context.Context, key string, _ []byte) error {
	return fmt.Errorf("write %s: %w", key, backend.ErrReadOnly)
}

// Delete refuses.
func (r *ReadOnly) Delete(_ context.Context, key string) error {
	return fmt.Errorf("delete %s: %w", key, backend.ErrReadOnly)
}

// Wrap is New that keeps a backend.RangeReader one: a restore from read-only media reads
// into its own buffers as it does from a writable directory.
func Wrap(b backend.Backend) backend.Backend {
	if rr, ok := b.(backend.RangeReader); ok {
		return &ranged{ReadOnly: New(b), rr: rr}
	}
	return New(b)
}

// ranged is a ReadOnly over a backend.RangeReader. It is no backend.Spooler: nothing is written.
type ranged struct {
	*ReadOnly
	rr backend.RangeReader
}

var _ backend.RangeReader = (*ranged)(nil)

// ReadRange passes the read through.
func (r *ranged) ReadRange(ctx context.Context, key string, offset int64, p []byte) error {
	return r.rr.ReadRange(ctx, key, offset, p)
}
