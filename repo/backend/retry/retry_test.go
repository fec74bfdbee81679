package retry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

var fast = Options{Attempts: 4, MinDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond}

func newFaulty(t *testing.T) *faulty.Faulty {
	t.Helper()
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return faulty.New(l, 1)
}

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		opts := fast
		opts.Timeout = 10 * time.Second
		return New(newFaulty(t), opts)
	})
}

// TestBackendFlaky runs the suite over a backend that fails a fifth of all calls: the
// retries hide every one of them.
func TestBackendFlaky(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		f := newFaulty(t)
		f.Add(faulty.Rule{Methods: faulty.All, Fraction: 0.2})
		opts := fast
		opts.Attempts = 20
		return New(f, opts)
	})
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		rule      faulty.Rule
		wantErr   error
		wantCalls int
	}{
		{"no fault", faulty.Rule{Methods: faulty.Get}, nil, 1},
		{"two failures", faulty.Rule{Methods: faulty.Put, Times: 2}, nil, 3},
		{"ack lost", faulty.Rule{Methods: faulty.Put, Times: 1, Effect: faulty.FailAfter}, nil, 2},
		{"always", faulty.Rule{Methods: faulty.Put}, backend.ErrUnavailable, 4},
		{"permission", faulty.Rule{Methods: faulty.Put, Err: backend.ErrPermission}, backend.ErrPermission, 1},
		{"not found", faulty.Rule{Methods: faulty.Put, Err: backend.ErrNotFound}, backend.ErrNotFound, 1},
		{"other error", faulty.Rule{Methods: faulty.Put, Err: errors.New("disk full")}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFaulty(t)
			f.Add(tt.rule)
			r := New(f, fast)
			err := r.Put(context.Background(), "k", []byte("v"))
			switch {
			case tt.wantErr == nil && tt.rule.Err != nil:
				if err == nil || errors.Is(err, backend.ErrUnavailable) {
					t.Fatalf("Put = %v, want the rule's error", err)
				}
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Put = %v, want success", err)
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Put = %v, want %v", err, tt.wantErr)
			}
			if got := f.Calls(faulty.Put); got != tt.wantCalls {
				t.Fatalf("%d Put calls, want %d", got, tt.wantCalls)
			}
		})
	}
}

// TestListNoDuplicates fails a listing after it delivered everything: the retry must not
// deliver the keys twice, by List or by ListKeys.
func TestListNoDuplicates(t *testing.T) {
	lists := map[string]func(b backend.Backend, each func(string)) error{
		"List": func(b backend.Backend, each func(string)) error {
			return b.List(context.Background(), "", func(fi backend.ObjectInfo) error { each(fi.Key); return nil })
		},
		"ListKeys": func(b backend.Backend, each func(string)) error {
			return b.ListKeys(context.Background(), "", func(k string) error { each(k); return nil })
		},
	}
	for name, list := range lists {
		t.Run(name, func(t *testing.T) {
			f := newFaulty(t)
			ctx := context.Background()
			for i := range 5 {
				if err := f.Put(ctx, fmt.Sprintf("k%d", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			f.Add(faulty.Rule{Methods: faulty.List, Times: 1, Effect: faulty.FailAfter})
			seen := map[string]int{}
			if err := list(New(f, fast), func(k string) { seen[k]++ }); err != nil {
				t.Fatal(err)
			}
			for k, n := range seen {
				if n != 1 {
					t.Errorf("%s delivered %d times", k, n)
				}
			}
			if len(seen) != 5 || f.Calls(faulty.List) != 2 {
				t.Fatalf("%d keys in %d listings, want 5 in 2", len(seen), f.Calls(faulty.List))
			}
		})
	}
}

// TestListStopsAtTheCallersError: an error from fn ends the listing and is returned as it is,
// also one that wraps ErrUnavailable (fn's own store was down). Before, the wrapper took that
// for the backend's outage and listed again, calling fn for later keys after it had failed.
func TestListStopsAtTheCallersError(t *testing.T) {
	downstream := fmt.Errorf("put into the index: %w", backend.ErrUnavailable)
	lists := map[string]func(b backend.Backend, each func() error) error{
		"List": func(b backend.Backend, each func() error) error {
			return b.List(context.Background(), "", func(backend.ObjectInfo) error { return each() })
		},
		"ListAfter": func(b backend.Backend, each func() error) error {
			return b.ListAfter(context.Background(), "", "", func(backend.ObjectInfo) error { return each() })
		},
		"ListKeys": func(b backend.Backend, each func() error) error {
			return b.ListKeys(context.Background(), "", func(string) error { return each() })
		},
		"ListVersions": func(b backend.Backend, each func() error) error {
			return b.(*Retry).ListVersions(context.Background(), "", func(backend.Version) error { return each() })
		},
	}
	for name, list := range lists {
		t.Run(name, func(t *testing.T) {
			f := newFaulty(t)
			for i := range 5 {
				if err := f.Put(context.Background(), fmt.Sprintf("k%d", i), nil); err != nil {
					t.Fatal(err)
				}
			}
			calls := 0
			err := list(New(versionsOf{Faulty: f}, fast), func() error { calls++; return downstream })
			if err != downstream {
				t.Errorf("listing = %v, want fn's error as it is", err)
			}
			if calls != 1 || f.Calls(faulty.List) != 1 {
				t.Errorf("fn called %d times in %d listings, want once in one", calls, f.Calls(faulty.List))
			}
		})
	}
}

// versionsOf is a backend.Versioned whose ListVersions lists the objects as one version each;
// nothing else of Versioned is there.
type versionsOf struct {
	*faulty.Faulty
	versionOps
}

// versionOps is backend.Versioned less Backend and ListVersions.
type versionOps interface {
	ObjectLock(ctx context.Context) (bool, error)
	KeepsVersions(ctx context.Context) (bool, error)
	SetRetention(r *backend.Retention)
	RetainUntil(ctx context.Context, key, version string) (time.Time, error)
	Retain(ctx context.Context, key, version string, until time.Time) error
	DeleteVersion(ctx context.Context, key, version string) error
}

var _ backend.Versioned = versionsOf{}

func (v versionsOf) ListVersions(ctx context.Context, prefix string, fn func(backend.Version) error) error {
	return v.List(ctx, prefix, func(fi backend.ObjectInfo) error {
		return fn(backend.Version{Key: fi.Key, ID: "1", Latest: true})
	})
}

// TestCancelDuringBackoff cancels while the wrapper waits to retry: it returns at once.
func TestCancelDuringBackoff(t *testing.T) {
	f := newFaulty(t)
	f.Add(faulty.Rule{Methods: faulty.Stat})
	r := New(f, Options{Attempts: 10, MinDelay: time.Hour, MaxDelay: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, err := r.Stat(ctx, "k")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Stat = %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Stat returned %v after cancel", d)
	}
}

// slow blocks its first n calls until their context ends, like a stalled server.
type slow struct {
	backend.Backend
	n int
}

func (s *slow) stall(ctx context.Context) error {
	if s.n <= 0 {
		return nil
	}
	s.n--
	<-ctx.Done()
	return fmt.Errorf("stalled: %w", ctx.Err())
}

func (s *slow) Put(ctx context.Context, key string, data []byte) error {
	if err := s.stall(ctx); err != nil {
		return err
	}
	return s.Backend.Put(ctx, key, data)
}

func (s *slow) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := s.stall(ctx); err != nil {
		return nil, err
	}
	return s.Backend.Get(ctx, key)
}

// TestAttemptTimeout checks that a stalled attempt is cut by the per-attempt timeout and
// retried, and that a Get's reader outlives the attempt timeout.
func TestAttemptTimeout(t *testing.T) {
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &slow{Backend: l, n: 2}
	opts := fast
	opts.Timeout = 50 * time.Millisecond
	r := New(s, opts)
	ctx := context.Background()
	if err := r.Put(ctx, "k", []byte("value")); err != nil {
		t.Fatalf("Put after two stalls: %v", err)
	}
	s.n = 1
	rc, err := r.Get(ctx, "k")
	if err != nil {
		t.Fatalf("Get after a stall: %v", err)
	}
	time.Sleep(2 * opts.Timeout)
	data, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(data) != "value" {
		t.Fatalf("reading after the attempt timeout: %q, %v", data, err)
	}

	s.n = 100
	start := time.Now()
	err = r.Put(ctx, "k", []byte("v"))
	if !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("Put that always stalls = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v, want about 4 × 50ms", d)
	}
}

func TestBackoff(t *testing.T) {
	r := New(nil, Options{MinDelay: 100 * time.Millisecond, MaxDelay: time.Second})
	tests := []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 50 * time.Millisecond, 100 * time.Millisecond},
		{2, 100 * time.Millisecond, 200 * time.Millisecond},
		{4, 400 * time.Millisecond, 800 * time.Millisecond},
		{5, 500 * time.Millisecond, time.Second},
		{100, 500 * time.Millisecond, time.Second},
	}
	for _, tt := range tests {
		for range 20 {
			if d := r.backoff(tt.attempt); d < tt.min || d > tt.max {
				t.Errorf("backoff(%d) = %v, want in [%v, %v]", tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}

// flakyRanges fails its first n ReadRange calls the way a dropped connection does, after
// writing garbage into the caller's buffer, then reads from the local directory.
type flakyRanges struct {
	*local.Local
	n, calls int
}

func (f *flakyRanges) ReadRange(ctx context.Context, key string, offset int64, p []byte) error {
	f.calls++
	if f.calls <= f.n {
		for i := range p {
			p[i] = 0xee
		}
		return fmt.Errorf("read %s: %w", key, backend.ErrUnavailable)
	}
	return f.Local.ReadRange(ctx, key, offset, p)
}

// Wrap keeps a RangeReader one, and its ReadRange is retried whole: a failed attempt's bytes
// never survive into the answer.
func TestWrapRetriesReadRange(t *testing.T) {
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	data := backendtest.Data(3, 5000)
	if err := l.Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	f := &flakyRanges{Local: l, n: 2}
	rr, ok := Wrap(f, fast).(backend.RangeReader)
	if !ok {
		t.Fatal("Wrap of a RangeReader is no RangeReader")
	}
	p := make([]byte, 1000)
	if err := rr.ReadRange(ctx, "obj", 100, p); err != nil {
		t.Fatal(err)
	}
	if string(p) != string(data[100:1100]) || f.calls != 3 {
		t.Fatalf("after %d calls: wrong bytes or count (want 3)", f.calls)
	}
	f.calls, f.n = 0, 10
	if err := rr.ReadRange(ctx, "obj", 100, p); !errors.Is(err, backend.ErrUnavailable) || f.calls != fast.Attempts {
		t.Fatalf("a read failing every time: %v after %d calls, want ErrUnavailable after %d", err, f.calls, fast.Attempts)
	}
	if _, ok := Wrap(newFaulty(t), fast).(backend.RangeReader); ok {
		t.Error("Wrap of a backend that reads no ranges into buffers claims it does")
	}
}

// The error of a request that failed on its only attempt (--retries -1) says it was not
// retried, not "gave up after 1 attempts"; with retries it says how many attempts it made.
func TestGaveUpSaysHowOften(t *testing.T) {
	for _, c := range []struct {
		attempts int
		want     string
	}{{1, "; not retried"}, {3, "; gave up after 3 attempts"}} {
		f := newFaulty(t)
		f.Add(faulty.Rule{Methods: faulty.Put})
		o := fast
		o.Attempts = c.attempts
		err := New(f, o).Put(context.Background(), "k", []byte("v"))
		if !errors.Is(err, backend.ErrUnavailable) || !strings.HasSuffix(err.Error(), c.want) {
			t.Errorf("%d attempts: %v, want it to end in %q", c.attempts, err, c.want)
		}
	}
}

// TestPatientWaitsOutAnOutage: under a Patient context an operation goes on retrying past its
// attempts until the store answers again, for up to Outage (Waiting told once); without one,
// or with no Outage, it fails after its attempts as before.
func TestPatientWaitsOutAnOutage(t *testing.T) {
	const outage = 400 * time.Millisecond
	for _, c := range []struct {
		name    string
		ctx     context.Context
		outage  time.Duration
		back    time.Duration // the store answers again after this long; 0: never
		succeed bool
	}{
		{"patient, back within the outage", backend.Patient(context.Background()), outage, 150 * time.Millisecond, true},
		{"patient, never back", backend.Patient(context.Background()), outage, 0, false},
		{"not patient", context.Background(), outage, 150 * time.Millisecond, false},
		{"patient, no outage set", backend.Patient(context.Background()), 0, 150 * time.Millisecond, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFaulty(t)
			f.Add(faulty.Rule{Methods: faulty.Put})
			if c.back > 0 {
				time.AfterFunc(c.back, f.Reset)
			}
			o := fast
			o.Outage = c.outage
			waited := 0
			o.Waiting = func(op, key string, failing time.Duration, err error) { waited++ }
			start := time.Now()
			err := New(f, o).Put(c.ctx, "k", []byte("v"))
			took := time.Since(start)
			if c.succeed {
				if err != nil || waited != 1 {
					t.Fatalf("Put = %v, told of waiting %d times; want success after waiting, told once", err, waited)
				}
				return
			}
			if !errors.Is(err, backend.ErrUnavailable) {
				t.Fatalf("Put = %v, want unavailable", err)
			}
			if backend.IsPatient(c.ctx) && c.outage > 0 {
				if took < outage || waited != 1 || !strings.Contains(err.Error(), " attempts in ") {
					t.Fatalf("gave up after %v (told of waiting %d times): %v; want after the outage's %v, told once, saying how long", took, waited, err, outage)
				}
			} else if took >= outage || waited != 0 || !strings.HasSuffix(err.Error(), "gave up after 4 attempts") {
				t.Fatalf("gave up after %v (told of waiting %d times): %v; want after its 4 attempts, at once", took, waited, err)
			}
		})
	}
}
