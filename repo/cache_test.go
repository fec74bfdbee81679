package repo

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// A node cache's waiter whose context ends stops waiting at once, while the load goes on; a
// caller whose context is alive gets the node after its loader was cancelled (that it waited
// for the cancelled load first is TestCancelledRestoreDoesNotFailAnIncrementalOfTheSameVolume's
// part).
func TestCacheWaitersOfACancelledLoad(t *testing.T) {
	c := newCache[int, string](1<<20, func(s string) int64 { return int64(len(s)) })
	type result struct {
		v   string
		err error
	}
	get := func(ctx context.Context, key int, load func(context.Context) (string, error)) chan result {
		res := make(chan result, 1)
		go func() {
			v, err := c.get(ctx, key, load)
			res <- result{v, err}
		}()
		return res
	}
	var loads atomic.Int32
	held := make(chan struct{})
	load := func(ctx context.Context) (string, error) {
		if loads.Add(1) == 1 { // the first load lasts until its caller is cancelled
			close(held)
			<-ctx.Done()
			return "", ctx.Err()
		}
		return "node", nil
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	defer cancelA()
	a := get(ctxA, 1, load)
	<-held
	ctxC, cancelC := context.WithCancel(context.Background())
	cc := get(ctxC, 1, load)
	cancelC()
	select {
	case r := <-cc:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("a waiter whose context ended: %q, %v; want context canceled", r.v, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter whose context ended still waits for the load")
	}
	b := get(context.Background(), 1, load)
	cancelA()
	if r := <-a; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("the cancelled loader: %q, %v; want context canceled", r.v, r.err)
	}
	if r := <-b; r.err != nil || r.v != "node" {
		t.Fatalf("a caller whose context is alive, its loader cancelled: %q, %v", r.v, r.err)
	}
}
