package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Defaults for the zero Options fields.
const (
	DefaultAttempts = 5
	DefaultMinDelay = 200 * time.Millisecond
	DefaultMaxDelay = 10 * time.Second
)

// Options bound the retrying.
type Options struct {
	// Attempts is the number of tries per operation, the first included; 0 means
	// DefaultAttempts, 1 means no retry.
	Attempts int
	// Timeout bounds one attempt; 0 means none. For Get it bounds the wait for the response,
	// not the reading of the body, which the caller's context governs.
	Timeout time.Duration
	// MinDelay is the wait before the first retry; it doubles each retry up to MaxDelay.
	MinDelay, MaxDelay time.Duration
	// Notify, when set, is told of each failed attempt that will be retried after delay.
	Notify func(op, key string, attempt int, err error, delay time.Duration)
	// GaveUp, when set, is told of each operation that failed transiently on every attempt.
	GaveUp func(op, key string, attempts int, err error)
	// Outage is how long an operation under a backend.Patient context goes on retrying after its
	// attempts are spent, counted from its first failure: a backup or restore of hours should
	// wait out a store's restart or failover, where a command at a terminal should not hang.
	// 0: no longer than its attempts. It needs Attempts above 1 (retries at all).
	Outage time.Duration
	// Waiting, when set, is told once per operation that it goes on retrying past its
	// attempts, for up to Outage.
	Waiting func(op, key string, failing time.Duration, err error)
}

// Retry is a backend.Backend that retries its inner backend's transient failures.
type Retry struct {
	backend.Backend
	opts Options
}

var (
	_ backend.Backend = (*Retry)(nil)
	_ backend.Creator = (*Retry)(nil)
)

// New wraps b.
func New(b backend.Backend, opts Options) *Retry {
	if opts.Attempts <= 0 {
		opts.Attempts = DefaultAttempts
	}
	if opts.MinDelay <= 0 {
		opts.MinDelay = DefaultMinDelay
	}
	if opts.MaxDelay < opts.MinDelay {
		opts.MaxDelay = max(DefaultMaxDelay, opts.MinDelay)
	}
	return &Retry{Backend: b, opts: opts}
}

// Get retries until the object's response arrives. A failure while reading the body is not
// retried: the caller may already have consumed part of it. The attempt's context lives until
// the reader is closed.
func (r *Retry) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	var rc io.ReadCloser
	err := r.do(ctx, "get", key, func(ctx context.Context) error {
		actx, release, expired := r.attemptContext(ctx)
		var err error
		rc, err = r.Backend.Get(actx, key)
		if err == nil && expired() {
			rc.Close()
			err = fmt.Errorf("get %s: %w", key, context.Cause(actx))
		}
		if err != nil {
			release()
			return r.timeoutErr(ctx, actx, "get", key, err)
		}
		rc = &releaser{ReadCloser: rc, release: release}
		return nil
	})
	return rc, err
}

// GetRange retries the whole read.
func (r *Retry) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	var data []byte
	err := r.do(ctx, "get", key, r.once("get", key, func(ctx context.Context) error {
		var err error
		data, err = r.Backend.GetRange(ctx, key, offset, length)
		return err
	}))
	return data, err
}

// Wrap is New that keeps a backend.RangeReader one: its ReadRange is retried as GetRange is.
func Wrap(b backend.Backend, opts Options) backend.Backend {
	r := New(b, opts)
	if rr, ok := b.(backend.RangeReader); ok {
		return &ranges{Retry: r, rr: rr}
	}
	return r
}

// ranges is a Retry over a backend.RangeReader.
type ranges struct {
	*Retry
	rr backend.RangeReader
}

var _ backend.RangeReader = (*ranges)(nil)

// ReadRange retries the whole read; an attempt that failed may have filled part of p, and the
// next one reads all of it again.
func (r *ranges) ReadRange(ctx context.Context, key string, offset int64, p []byte) error {
	return r.do(ctx, "get", key, r.once("get", key, func(ctx context.Context) error {
		return r.rr.ReadRange(ctx, key, offset, p)
	}))
}

// Put retries the upload; Put replaces atomically, so a retry after an unclear failure is safe.
func (r *Retry) Put(ctx context.Context, key string, data []byte) error {
	return r.do(ctx, "put", key, r.once("put", key, func(ctx context.Context) error {
		return r.Backend.Put(ctx, key, data)
	}))
}

// Create retries like Put (backend.Creator). An attempt whose answer was lost may have
// stored the object, and the next then finds it: ErrExists after a retry may be this call's
// own object, which the caller tells by reading it.
func (r *Retry) Create(ctx context.Context, key string, data []byte) error {
	c, err := backend.CreatorOf(r.Backend, key)
	if err != nil {
		return err
	}
	return r.do(ctx, "put", key, r.once("put", key, func(ctx context.Context) error {
		return c.Create(ctx, key, data)
	}))
}

// Delete retries the removal; deleting twice is harmless.
func (r *Retry) Delete(ctx context.Context, key string) error {
	return r.do(ctx, "delete", key, r.once("delete", key, func(ctx context.Context) error {
		return r.Backend.Delete(ctx, key)
	}))
}

// Stat retries the lookup.
func (r *Retry) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	var fi backend.ObjectInfo
	err := r.do(ctx, "stat", key, r.once("stat", key, func(ctx context.Context) error {
		var err error
		fi, err = r.Backend.Stat(ctx, key)
		return err
	}))
	return fi, err
}

// List retries a listing that failed part way, calling fn only for keys it has not seen in
// an earlier attempt. An error from fn is returned as it is, never retried. The attempt
// timeout does not apply: a listing's length depends on fn and on the repository's size;
// the transport's timeouts catch a stalled page.
func (r *Retry) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	return r.ListAfter(ctx, prefix, "", fn)
}

// ListAfter retries like List.
func (r *Retry) ListAfter(ctx context.Context, prefix, after string, fn func(backend.ObjectInfo) error) error {
	return listing(ctx, r, "list", prefix, func(ctx context.Context, each func(backend.ObjectInfo) error) error {
		return r.Backend.ListAfter(ctx, prefix, after, each)
	}, func(fi backend.ObjectInfo) string { return fi.Key }, fn)
}

// ListKeys retries like List.
func (r *Retry) ListKeys(ctx context.Context, prefix string, fn func(key string) error) error {
	return listing(ctx, r, "list", prefix, func(ctx context.Context, each func(string) error) error {
		return r.Backend.ListKeys(ctx, prefix, each)
	}, func(k string) string { return k }, fn)
}

// listing runs list, a listing (op) of items named by key, under the retry policy, and hands
// fn only the items no earlier attempt handed it. An error from fn is returned as it is, never
// retried.
func listing[T any](ctx context.Context, r *Retry, op, prefix string, list func(context.Context, func(T) error) error, key func(T) string, fn func(T) error) error {
	seen := make(map[string]struct{})
	var fnErr error
	err := r.do(ctx, op, prefix, func(ctx context.Context) error {
		err := list(ctx, func(x T) error {
			k := key(x)
			if _, ok := seen[k]; ok {
				return nil
			}
			seen[k] = struct{}{}
			if err := fn(x); err != nil {
				fnErr = err
				return err
			}
			return nil
		})
		if fnErr != nil {
			// fn's error ends the listing, whatever it wraps: one that wraps ErrUnavailable
			// (fn's own store was down) would otherwise be retried, and fn called again for
			// later keys after it failed [TestListStopsAtTheCallersError].
			return errStopped
		}
		return err
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

// errStopped is what an attempt of listing returns when fn failed: not ErrUnavailable, so do
// returns at once.
var errStopped = errors.New("the caller stopped the listing")

// Do runs fn, a call outside the Backend interface (such as the connection check when a
// backend is opened), under the same retry policy and attempt timeout; op and key name it in
// errors.
func (r *Retry) Do(ctx context.Context, op, key string, fn func(context.Context) error) error {
	return r.do(ctx, op, key, r.once(op, key, fn))
}

// do runs op until it succeeds, fails for good, or the attempts or ctx run out.
func (r *Retry) do(ctx context.Context, op, key string, fn func(context.Context) error) error {
	var err error
	var firstFailure time.Time
	waiting := false
	for attempt := 1; ; attempt++ {
		if cerr := ctx.Err(); cerr != nil {
			if err != nil {
				return fmt.Errorf("%s %s: %w (after: %v)", op, key, cerr, err)
			}
			return fmt.Errorf("%s %s: %w", op, key, cerr)
		}
		err = fn(ctx)
		if err == nil {
			return nil
		}
		if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
			// The caller gave up while the attempt ran: say so, not the attempt's error.
			return fmt.Errorf("%s %s: %w (after: %v)", op, key, cerr, err)
		}
		if !errors.Is(err, backend.ErrUnavailable) || ctx.Err() != nil {
			return err
		}
		if firstFailure.IsZero() {
			firstFailure = time.Now()
		}
		failing := time.Since(firstFailure)
		if attempt >= r.opts.Attempts {
			if r.opts.Attempts > 1 && r.opts.Outage > 0 && backend.IsPatient(ctx) && failing < r.opts.Outage {
				if !waiting && r.opts.Waiting != nil {
					r.opts.Waiting(op, key, failing, err)
				}
				waiting = true
			} else {
				if r.opts.GaveUp != nil {
					r.opts.GaveUp(op, key, attempt, err)
				}
				switch {
				case attempt == 1:
					return fmt.Errorf("%w; not retried", err)
				case waiting:
					return fmt.Errorf("%w; gave up after %d attempts in %s", err, attempt, failing.Round(time.Second))
				}
				return fmt.Errorf("%w; gave up after %d attempts", err, attempt)
			}
		}
		delay := r.backoff(attempt)
		if r.opts.Notify != nil {
			r.opts.Notify(op, key, attempt, err, delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s %s: %w (while waiting to retry after: %v)", op, key, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// errAttemptTimeout is the cause of an attempt context that ran out of time.
var errAttemptTimeout = errors.New("attempt timed out")

// attemptContext returns the context for one attempt: ctx bounded by Options.Timeout, a
// release func to call when the attempt's result is no longer used, and expired, which
// reports whether the timeout has fired (and disarms it if not).
func (r *Retry) attemptContext(ctx context.Context) (actx context.Context, release func(), expired func() bool) {
	actx, cancel := context.WithCancelCause(ctx)
	if r.opts.Timeout <= 0 {
		return actx, func() { cancel(nil) }, func() bool { return false }
	}
	timer := time.AfterFunc(r.opts.Timeout, func() { cancel(errAttemptTimeout) })
	release = func() { timer.Stop(); cancel(nil) }
	expired = func() bool { return !timer.Stop() }
	return actx, release, expired
}

// once wraps one attempt of a call whose result is complete when it returns (everything but
// Get) in the attempt timeout.
func (r *Retry) once(op, key string, fn func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		actx, release, _ := r.attemptContext(ctx)
		defer release()
		return r.timeoutErr(ctx, actx, op, key, fn(actx))
	}
}

// timeoutErr turns an error caused by the attempt's own timeout (not the caller's ctx) into
// ErrUnavailable, so it is retried.
// The inner error then only says "context canceled", so it is replaced.
func (r *Retry) timeoutErr(ctx, actx context.Context, op, key string, err error) error {
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(actx), errAttemptTimeout) {
		return fmt.Errorf("%s %s: %w (no answer within %v)", op, key, backend.ErrUnavailable, r.opts.Timeout)
	}
	return err
}

// backoff returns the wait before retry number attempt: MinDelay doubled per attempt, capped
// at MaxDelay, with the upper half jittered so many clients do not retry in step.
func (r *Retry) backoff(attempt int) time.Duration {
	d := r.opts.MinDelay << min(attempt-1, 30)
	if d <= 0 || d > r.opts.MaxDelay {
		d = r.opts.MaxDelay
	}
	return d/2 + rand.N(d/2+1)
}

// releaser ends a Get's attempt context when the reader is closed.
type releaser struct {
	io.ReadCloser
	release func()
}

func (r *releaser) Close() error {
	err := r.ReadCloser.Close()
	r.release()
	return err
}
