package limit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

func newLocal(t *testing.T) *local.Local {
	t.Helper()
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return New(newLocal(t), 2) })
}

// counting records the most Puts it saw at once.
type counting struct {
	backend.Backend
	now, peak atomic.Int64
}

func (c *counting) Put(ctx context.Context, key string, data []byte) error {
	n := c.now.Add(1)
	defer c.now.Add(-1)
	for {
		p := c.peak.Load()
		if n <= p || c.peak.CompareAndSwap(p, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond)
	return c.Backend.Put(ctx, key, data)
}

func TestBound(t *testing.T) {
	for _, n := range []int{1, 3, 8} {
		c := &counting{Backend: newLocal(t)}
		l := New(c, n)
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Go(func() {
				if err := l.Put(context.Background(), string(rune('a'+i)), []byte("x")); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if p := c.peak.Load(); p > int64(n) || p < 1 {
			t.Errorf("limit %d: peak %d in flight", n, p)
		}
	}
}

// TestGetHoldsSlot checks that an open reader holds its slot and that a waiting call gives
// up when its context is cancelled.
func TestGetHoldsSlot(t *testing.T) {
	l := New(newLocal(t), 1)
	ctx := context.Background()
	if err := l.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	rc, err := l.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := l.Stat(wctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stat while the only slot is held = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("waiting call returned after %v", d)
	}
	rc.Close()
	rc.Close() // a second Close must not free a second slot
	if _, err := l.Stat(ctx, "k"); err != nil {
		t.Fatalf("Stat after Close: %v", err)
	}
	if len(l.sem) != 0 {
		t.Fatalf("%d slots still taken", len(l.sem))
	}
}
