// Package retry wraps a backend.Backend and retries operations that failed with
// backend.ErrUnavailable, with exponential backoff and jitter, a bounded number of attempts
// and a timeout per attempt. ErrNotFound, ErrPermission and other errors are final and
// returned at once; a cancelled context stops waiting at once. It knows only the
// backend.Backend and backend.Versioned contracts, not which implementation it wraps.
package retry
