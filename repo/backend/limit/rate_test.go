package limit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
)

func TestBackendWithRates(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		return Wrap(newLocal(t), 0, Rates{Up: 64 << 20, Down: 64 << 20}.Meters())
	})
}

// Every way bytes go to and come from the backend waits for its rate: moving n bytes at r
// a second takes at least (n - burst) / r, the burst being the bucket's start (r/8). Only
// that lower bound is checked: it is the limiter's contract, not a speed.
func TestRatesBoundEveryTransfer(t *testing.T) {
	const rate, n = 16 << 20, 4 << 20
	least := time.Duration(float64(n-rate/8) / rate * float64(time.Second))
	ctx := context.Background()
	data := backendtest.Data(7, n)
	fresh := func() backend.Backend { return Wrap(newLocal(t), 0, Rates{Up: rate, Down: rate}.Meters()) }
	timed := func(what string, f func(b backend.Backend) error) {
		t.Helper()
		b := fresh()
		if err := b.Put(ctx, "k", data); err != nil { // the write's wait empties the bucket...
			t.Fatal(err)
		}
		time.Sleep(time.Second / 4) // ...which then refills to its burst, no more
		start := time.Now()
		if err := f(b); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if took := time.Since(start); took < least {
			t.Errorf("%s of %d bytes at %d a second took %v, less than %v", what, n, rate, took, least)
		}
	}
	timed("put", func(b backend.Backend) error { return b.Put(ctx, "k2", data) })
	timed("create", func(b backend.Backend) error { return b.(backend.Creator).Create(ctx, "k2", data) })
	timed("commit", func(b backend.Backend) error {
		sp := b.(backend.Spooler)
		f, err := sp.Spool(ctx)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			return err
		}
		return sp.Commit(ctx, "k2", f)
	})
	timed("get range", func(b backend.Backend) error {
		got, err := b.GetRange(ctx, "k", 0, n)
		if err == nil && !bytes.Equal(got, data) {
			err = errors.New("wrong bytes")
		}
		return err
	})
	timed("read range", func(b backend.Backend) error {
		p := make([]byte, n)
		err := b.(backend.RangeReader).ReadRange(ctx, "k", 0, p)
		if err == nil && !bytes.Equal(p, data) {
			err = errors.New("wrong bytes")
		}
		return err
	})
	timed("get", func(b backend.Backend) error {
		rc, err := b.Get(ctx, "k")
		if err != nil {
			return err
		}
		defer rc.Close()
		got, err := io.ReadAll(rc)
		if err == nil && !bytes.Equal(got, data) {
			err = errors.New("wrong bytes")
		}
		return err
	})
}

// A transfer waiting for its rate ends on a cancel, without storing anything.
func TestRateWaitEndsOnCancel(t *testing.T) {
	b := Wrap(newLocal(t), 0, Rates{Up: MinRate}.Meters())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Put(ctx, "k", make([]byte, 4<<20)) // 64 s at this rate
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put: %v, want the deadline", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the cancelled put returned after %v", took)
	}
	if _, err := b.Stat(context.Background(), "k"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("the cancelled put stored its object: %v", err)
	}
}
