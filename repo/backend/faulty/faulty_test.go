package faulty

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

func newFaulty(t *testing.T, seed uint64) *Faulty {
	t.Helper()
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(l, seed)
}

func TestRules(t *testing.T) {
	errCustom := errors.New("custom")
	tests := []struct {
		name     string
		rule     Rule
		calls    int
		wantFail []int // 1-based indexes of the Put calls that fail
		wantErr  error
	}{
		{"nth", Rule{Methods: Put, Nth: 3}, 5, []int{3}, backend.ErrUnavailable},
		{"every call", Rule{Methods: Put}, 3, []int{1, 2, 3}, backend.ErrUnavailable},
		{"times", Rule{Methods: Put, Times: 2}, 4, []int{1, 2}, backend.ErrUnavailable},
		{"custom error", Rule{Methods: All, Nth: 1, Err: errCustom}, 2, []int{1}, errCustom},
		{"other method", Rule{Methods: Get}, 3, nil, nil},
		{"after", Rule{Methods: Put, Nth: 2, Effect: FailAfter}, 3, []int{2}, backend.ErrUnavailable},
		{"prefix", Rule{Methods: Put, Prefix: "k"}, 2, []int{1, 2}, backend.ErrUnavailable},
		{"other prefix", Rule{Methods: Put, Prefix: "manifests/"}, 3, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFaulty(t, 1)
			f.Add(tt.rule)
			var failed []int
			for i := 1; i <= tt.calls; i++ {
				err := f.Put(context.Background(), "k", []byte("v"))
				if err != nil {
					if !errors.Is(err, tt.wantErr) {
						t.Fatalf("call %d: %v, want %v", i, err, tt.wantErr)
					}
					failed = append(failed, i)
				}
			}
			if !equal(failed, tt.wantFail) {
				t.Fatalf("failed calls %v, want %v", failed, tt.wantFail)
			}
			if f.Calls(Put) != tt.calls {
				t.Fatalf("Calls(Put) = %d, want %d", f.Calls(Put), tt.calls)
			}
		})
	}
}

// TestFailAfterStores checks that FailAfter runs the inner call: the object exists.
func TestFailAfterStores(t *testing.T) {
	f := newFaulty(t, 1)
	f.Add(Rule{Methods: Put, Effect: FailAfter})
	if err := f.Put(context.Background(), "k", []byte("v")); !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("Put = %v, want ErrUnavailable", err)
	}
	f.Reset()
	if _, err := f.Stat(context.Background(), "k"); err != nil {
		t.Fatalf("Stat after a FailAfter Put: %v", err)
	}
}

// TestFractionDeterministic checks that the same seed fails the same calls.
func TestFractionDeterministic(t *testing.T) {
	run := func(seed uint64) []int {
		f := newFaulty(t, seed)
		f.Add(Rule{Methods: Stat, Fraction: 0.3})
		var failed []int
		for i := range 200 {
			if _, err := f.Stat(context.Background(), "missing"); errors.Is(err, backend.ErrUnavailable) {
				failed = append(failed, i)
			}
		}
		return failed
	}
	a, b := run(42), run(42)
	if !equal(a, b) {
		t.Fatal("same seed, different faults")
	}
	if len(a) < 30 || len(a) > 90 {
		t.Fatalf("%d of 200 calls failed with fraction 0.3", len(a))
	}
	if equal(a, run(43)) {
		t.Fatal("different seeds, same faults")
	}
}

func TestCorrupt(t *testing.T) {
	f := newFaulty(t, 7)
	ctx := context.Background()
	data := bytes.Repeat([]byte("cairn"), 100)
	if err := f.Put(ctx, "k", data); err != nil {
		t.Fatal(err)
	}
	f.Add(Rule{Methods: Get | GetRange, Effect: Corrupt, Times: 2})
	rc, err := f.Get(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || bytes.Equal(got, data) || len(got) != len(data) {
		t.Fatalf("Get with Corrupt returned the data intact (err %v)", err)
	}
	got, err = f.GetRange(ctx, "k", 10, 100)
	if err != nil || bytes.Equal(got, data[10:110]) {
		t.Fatalf("GetRange with Corrupt returned the data intact (err %v)", err)
	}
	got, err = f.GetRange(ctx, "k", 10, 100)
	if err != nil || !bytes.Equal(got, data[10:110]) {
		t.Fatalf("GetRange after Times ran out: corrupted (err %v)", err)
	}
}

func equal(a, b []int) bool { return slices.Equal(a, b) }
