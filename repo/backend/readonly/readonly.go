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

var _ backend.Backend = (*ReadOnly)(nil)

// New wraps b.
func New(b backend.Backend) *ReadOnly { return &ReadOnly{Backend: b} }

// Put refuses.
func (r *ReadOnly) Put(_ context.Context, key string, _ []byte) error {
	return fmt.Errorf("write %s: %w", key, backend.ErrReadOnly)
}

// Delete refuses.
func (r *ReadOnly) Delete(_ context.Context, key string) error {
	return fmt.Errorf("delete %s: %w", key, backend.ErrReadOnly)
}
