package limit

import (
	"context"
	"errors"
	"os"
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

// Wrap over a local directory reads ranges into the caller's buffer and spools packs, each
// in a slot like GetRange and Put; over anything else it is New.
func TestWrapKeepsLocalFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := Wrap(l, 1, Meters{})
	rr, ranged := b.(backend.RangeReader)
	sp, spools := b.(backend.Spooler)
	if !ranged || !spools {
		t.Fatalf("Wrap(local) is RangeReader %v, Spooler %v", ranged, spools)
	}
	if _, ok := Wrap(&counting{Backend: l}, 1, Meters{}).(backend.RangeReader); ok {
		t.Error("Wrap of a backend that reads no ranges into buffers claims it does")
	}

	f, err := sp.Spool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("spooled"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Commit(ctx, "packs/aa/one", f); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	if err := rr.ReadRange(ctx, "packs/aa/one", 2, p); err != nil || string(p) != "oole" {
		t.Fatalf("ReadRange = %q, %v", p, err)
	}

	// With the only slot held by an open reader, a read waits, and a cancel ends the wait; a
	// Commit that waits and is cancelled leaves no file behind.
	rc, err := b.Get(ctx, "packs/aa/one")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := rr.ReadRange(short, "packs/aa/one", 0, p); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ReadRange without a free slot = %v, want a deadline error", err)
	}
	f, err = sp.Spool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Commit(short, "packs/aa/two", f); err == nil {
		t.Fatal("Commit without a free slot, cancelled, succeeded")
	}
	if _, err := os.Stat(f.Name()); !os.IsNotExist(err) {
		t.Errorf("a cancelled Commit left its spooled file: %v", err)
	}
	rc.Close()
	if err := rr.ReadRange(ctx, "packs/aa/one", 0, p); err != nil || string(p) != "spoo" {
		t.Fatalf("ReadRange after the slot was freed = %q, %v", p, err)
	}
}
