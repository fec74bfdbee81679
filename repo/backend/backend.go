// Package backend defines where a repository's bytes live: a flat namespace of immutable
// objects addressed by slash-separated keys. It is a leaf: it imports nothing of cairn, and
// implementations (local/, s3/) and wrappers (retry/, limit/, faulty/) live in subfolders.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Sentinel errors. Implementations translate their own errors into these at the edge, so
// nothing above a backend ever sees an SDK or syscall error type for these conditions.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrUnavailable: the backend cannot be reached (refused, DNS, TLS, timeout, 5xx after
	// retries). Callers report the backend as down.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrPermission: the credentials were refused.
	ErrPermission = errors.New("backend access denied")
	// ErrRange: a GetRange past the end of the object (a truncated object, or an index that
	// expects a larger one); no retry fixes it.
	ErrRange = errors.New("range past end of object")
	// ErrReadOnly: the repository was opened read-only (read-only media or --read-only).
	ErrReadOnly = errors.New("the repository is read-only")
	// ErrExists: Create found the key taken.
	ErrExists = errors.New("object already exists")
	// ErrBadLocation: the repository's location cannot name a store (an S3 bucket name
	// S3 does not allow): what the admin typed is wrong, and no retry fixes it.
	ErrBadLocation = errors.New("invalid repository location")
)

// Creator is implemented by a backend that can store an object only where none is: of many
// processes that create the same key at once, one succeeds and the others get ErrExists (a
// directory: link(2) of a temp file; S3: PUT with If-None-Match: *). A repository's config is
// created so, and so by one init alone. Wrappers pass it on.
type Creator interface {
	// Create stores data under key as durably and atomically as Put, or fails with an error
	// wrapping ErrExists if the key holds an object. An attempt whose answer was lost may
	// have stored it: the caller that gets ErrExists after a retry reads the object to know.
	Create(ctx context.Context, key string, data []byte) error
}

// CreatorOf is b's Creator, for a wrapper to pass Create on to, or an error saying b cannot
// create an object only where none is.
func CreatorOf(b Backend, key string) (Creator, error) {
	c, ok := b.(Creator)
	if !ok {
		return nil, fmt.Errorf("create %s: the backend cannot create an object only where none is", key)
	}
	return c, nil
}

// Spooler is implemented by a backend whose objects are files on the local file system. A
// writer that would otherwise hold a large object in memory (a backup's packs) writes it to
// a file Spool gives and hands the file to Commit, which stores it under the key as durably
// and atomically as Put does.
type Spooler interface {
	// Spool creates an empty temporary file. It is not an object: List never shows it, and
	// Clean removes it if a crash leaves it behind.
	Spool(ctx context.Context) (*os.File, error)
	// Commit makes the file's contents the object key (fsynced before it returns) and
	// closes the file; if Commit fails the file is removed.
	Commit(ctx context.Context, key string, f *os.File) error
	// Clean removes the temp files (of Spool, and of Puts) that interrupted writes left
	// behind: those last modified before before. It says how many it removed.
	Clean(ctx context.Context, before time.Time) (int, error)
}

// RangeReader is implemented by a backend that can read a range into the caller's buffer
// (the local directory: one pread), so a reader of many ranges (a restore) reuses one buffer
// instead of a fresh allocation per range.
type RangeReader interface {
	// ReadRange reads len(p) bytes at offset of the object key into p. A range past the end
	// is an error wrapping ErrRange, as for GetRange.
	ReadRange(ctx context.Context, key string, offset int64, p []byte) error
}

// GetRangeInto is GetRange for a RangeReader: a new buffer of length, filled by ReadRange.
func GetRangeInto(ctx context.Context, rr RangeReader, key string, offset, length int64) ([]byte, error) {
	if length < 0 {
		return nil, fmt.Errorf("get %s range [%d,+%d): negative length", key, offset, length)
	}
	buf := make([]byte, length)
	if err := rr.ReadRange(ctx, key, offset, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key  string
	Size int64
	// ModTime is when the object was last written, by the store's clock (the server's for
	// S3). Lock staleness compares these times with each other, never with a local clock.
	ModTime time.Time
}

// Backend stores immutable objects. Put replaces atomically: a reader sees the old object, the
// new one whole, or none; never a part. All methods are safe for concurrent use.
type Backend interface {
	// Get returns a reader of the whole object.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// GetRange reads length bytes at offset into a new slice. A range past the end is an error.
	GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error)
	// Put stores data under key durably (fsynced or acknowledged by the server) before returning.
	Put(ctx context.Context, key string, data []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every object whose key starts with prefix, in no particular order.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// ListAfter is List restricted to keys that sort after the key after, in key order where
	// the store lists in order (S3). It lets a reader pick up only what is new in a prefix
	// whose keys start with a time.
	ListAfter(ctx context.Context, prefix, after string, fn func(ObjectInfo) error) error
	// ListKeys is List of the keys alone, for a caller that needs no size or time: a local
	// directory then reads no object's inode (on cold caches, one disk read each).
	ListKeys(ctx context.Context, prefix string, fn func(key string) error) error
	// Stat returns the object's size, or ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Location names the backend for messages and exports (a path or s3://bucket/prefix),
	// never with credentials.
	Location() string
	// Close releases connections.
	Close() error
}

type patientKey struct{}

// Patient marks ctx as a long job's (a backup, a restore, a check, gc's reads): a retrying
// wrapper (retry/) goes on retrying its operations through an outage of the store, up to its
// bound, before they fail.
func Patient(ctx context.Context) context.Context {
	return context.WithValue(ctx, patientKey{}, true)
}

// Impatient takes Patient's mark off ctx: for a write or delete whose landing late matters
// more than its failing (gc's removals, which must not land after its lock could have been
// broken; docs/design.md, "Locks").
func Impatient(ctx context.Context) context.Context {
	return context.WithValue(ctx, patientKey{}, false)
}

// IsPatient says whether ctx is marked Patient.
func IsPatient(ctx context.Context) bool {
	p, _ := ctx.Value(patientKey{}).(bool)
	return p
}
