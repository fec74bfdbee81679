package limit

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Limit is a backend.Backend that lets at most n operations run at a time and, with Meters,
// moves at most so many bytes a second each way.
type Limit struct {
	backend.Backend
	sem      chan struct{} // nil: no bound on operations
	up, down *Meter
}

var (
	_ backend.Backend = (*Limit)(nil)
	_ backend.Creator = (*Limit)(nil)
)

// New wraps b with a limit of n concurrent operations; n < 1 is taken as 1.
func New(b backend.Backend, n int) *Limit {
	return newLimit(b, max(n, 1), Meters{})
}

// newLimit wraps b with at most n operations at once (n < 1: no bound) and meters m.
func newLimit(b backend.Backend, n int, m Meters) *Limit {
	l := &Limit{Backend: b, up: m.Up, down: m.Down}
	if n > 0 {
		l.sem = make(chan struct{}, n)
	}
	return l
}

// acquire takes a slot or returns the context's error.
func (l *Limit) acquire(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	if l.sem == nil {
		return nil
	}
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: waiting for a free slot: %w", op, key, ctx.Err())
	}
}

func (l *Limit) release() {
	if l.sem != nil {
		<-l.sem
	}
}

// charge waits for the meter m to let n bytes of op on key through, before the operation
// takes a slot (a transfer waiting for its rate holds no slot).
func charge(ctx context.Context, m *Meter, n int64, op, key string) error {
	if err := m.Charge(ctx, n); err != nil {
		return fmt.Errorf("%s %s: waiting for the rate limit: %w", op, key, err)
	}
	return nil
}

// Get holds its slot until the reader is closed: the transfer is what the limit bounds.
// A caller holding n open readers and asking for another waits for one to close.
func (l *Limit) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := l.acquire(ctx, "get", key); err != nil {
		return nil, err
	}
	rc, err := l.Backend.Get(ctx, key)
	if err != nil {
		l.release()
		return nil, err
	}
	if l.down != nil {
		rc = &meteredReader{ReadCloser: rc, ctx: ctx, m: l.down}
	}
	return &releaser{ReadCloser: rc, release: l.release}, nil
}

// GetRange runs in a slot.
func (l *Limit) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	if err := charge(ctx, l.down, length, "get", key); err != nil {
		return nil, err
	}
	if err := l.acquire(ctx, "get", key); err != nil {
		return nil, err
	}
	defer l.release()
	return l.Backend.GetRange(ctx, key, offset, length)
}

// Put runs in a slot.
func (l *Limit) Put(ctx context.Context, key string, data []byte) error {
	if err := charge(ctx, l.up, int64(len(data)), "put", key); err != nil {
		return err
	}
	if err := l.acquire(ctx, "put", key); err != nil {
		return err
	}
	defer l.release()
	return l.Backend.Put(ctx, key, data)
}

// Create runs in a slot (backend.Creator); a backend that cannot create only where no object
// is says so.
func (l *Limit) Create(ctx context.Context, key string, data []byte) error {
	c, err := backend.CreatorOf(l.Backend, key)
	if err != nil {
		return err
	}
	if err := charge(ctx, l.up, int64(len(data)), "put", key); err != nil {
		return err
	}
	if err := l.acquire(ctx, "put", key); err != nil {
		return err
	}
	defer l.release()
	return c.Create(ctx, key, data)
}

// Delete runs in a slot.
func (l *Limit) Delete(ctx context.Context, key string) error {
	if err := l.acquire(ctx, "delete", key); err != nil {
		return err
	}
	defer l.release()
	return l.Backend.Delete(ctx, key)
}

// Stat runs in a slot.
func (l *Limit) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	if err := l.acquire(ctx, "stat", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	defer l.release()
	return l.Backend.Stat(ctx, key)
}

// List is not limited: its callback may call back into the backend, and holding a slot
// across it could deadlock a limit of one. A listing is one request at a time anyway.

// releaser frees the slot once, on the first Close.
type releaser struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (r *releaser) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.release)
	return err
}

// Wrap is New that keeps what the wrapped backend can do beyond backend.Backend (below), with
// at most n operations at once (n < 1: no bound) and the meters m. When b is a
// backend.RangeReader (a local directory, S3), so is the result, and when b is also a
// backend.Spooler (a local directory), so is the result. Without them a restore would read
// into fresh heap buffers and a backup would hold its packs in memory (--concurrency on a
// local repository: a 1 GiB restore under its 64 MiB heap limit went from 2 s to 6 s, most of
// it in the collector).
func Wrap(b backend.Backend, n int, m Meters) backend.Backend {
	l := newLimit(b, n, m)
	rr, ranged := b.(backend.RangeReader)
	if !ranged {
		return l
	}
	if sp, spools := b.(backend.Spooler); spools {
		return &files{ranges: ranges{Limit: l, rr: rr}, sp: sp}
	}
	return &ranges{Limit: l, rr: rr}
}

// ranges is a Limit over a backend.RangeReader.
type ranges struct {
	*Limit
	rr backend.RangeReader
}

// files is a Limit over a backend of local files: a RangeReader and a Spooler.
type files struct {
	ranges
	sp backend.Spooler
}

var (
	_ backend.RangeReader = (*ranges)(nil)
	_ backend.RangeReader = (*files)(nil)
	_ backend.Spooler     = (*files)(nil)
)

// ReadRange runs in a slot, as GetRange does.
func (r *ranges) ReadRange(ctx context.Context, key string, offset int64, p []byte) error {
	if err := charge(ctx, r.down, int64(len(p)), "get", key); err != nil {
		return err
	}
	if err := r.acquire(ctx, "get", key); err != nil {
		return err
	}
	defer r.release()
	return r.rr.ReadRange(ctx, key, offset, p)
}

// Spool takes no slot: it creates an empty local file, no request.
func (f *files) Spool(ctx context.Context) (*os.File, error) { return f.sp.Spool(ctx) }

// Clean takes no slot: gc runs it alone, under its exclusive lock.
func (f *files) Clean(ctx context.Context, before time.Time) (int, error) {
	return f.sp.Clean(ctx, before)
}

// Commit runs in a slot, as Put does. A wait that ends in a cancel still goes to the wrapped
// Commit, which honours the cancel and removes the file, as a failed Commit must.
func (f *files) Commit(ctx context.Context, key string, file *os.File) error {
	if f.up != nil {
		if fi, err := file.Stat(); err == nil {
			if err := charge(ctx, f.up, fi.Size(), "put", key); err != nil {
				return f.sp.Commit(ctx, key, file)
			}
		}
	}
	if err := f.acquire(ctx, "put", key); err != nil {
		return f.sp.Commit(ctx, key, file)
	}
	defer f.release()
	return f.sp.Commit(ctx, key, file)
}
