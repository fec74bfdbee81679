package readonly_test

import (
	"context"
	"errors"
	"testing"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/readonly"
)

func TestReadOnly(t *testing.T) {
	dir := t.TempDir()
	l, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := l.Put(ctx, "a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ro := readonly.New(l)
	if err := ro.Put(ctx, "b", []byte("y")); !errors.Is(err, backend.ErrReadOnly) {
		t.Fatalf("Put = %v", err)
	}
	if err := ro.Delete(ctx, "a"); !errors.Is(err, backend.ErrReadOnly) {
		t.Fatalf("Delete = %v", err)
	}
	if b, err := ro.GetRange(ctx, "a", 0, 1); err != nil || string(b) != "x" {
		t.Fatalf("GetRange = %q, %v", b, err)
	}
}

// Wrap over a local directory still reads ranges into the caller's buffer, and writes nothing.
func TestWrapKeepsRangeReads(t *testing.T) {
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := l.Put(ctx, "a", []byte("xyz")); err != nil {
		t.Fatal(err)
	}
	ro := readonly.Wrap(l)
	rr, ok := ro.(backend.RangeReader)
	if !ok {
		t.Fatal("Wrap(local) is no RangeReader")
	}
	if _, ok := ro.(backend.Spooler); ok {
		t.Error("a read-only backend offers to spool writes")
	}
	p := make([]byte, 2)
	if err := rr.ReadRange(ctx, "a", 1, p); err != nil || string(p) != "yz" {
		t.Fatalf("ReadRange = %q, %v", p, err)
	}
	if err := ro.Put(ctx, "b", []byte("y")); !errors.Is(err, backend.ErrReadOnly) {
		t.Fatalf("Put = %v", err)
	}
}
