package backend_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/limit"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/readonly"
	"github.com/cairn-backup/cairn/repo/backend/retry"
)

func TestRetentionLocks(t *testing.T) {
	r := &backend.Retention{Mode: backend.Governance, Period: time.Hour, Exempt: []string{"locks/"}}
	tests := []struct {
		r    *backend.Retention
		key  string
		want bool
	}{
		{r, "packs/ab/ab12", true},
		{r, "config", true},
		{r, "locks/1f2e", false},
		{r, "xlocks/1f2e", true},
		{nil, "packs/ab/ab12", false},
	}
	for _, tt := range tests {
		if got := tt.r.Locks(tt.key); got != tt.want {
			t.Errorf("%+v.Locks(%q) = %v, want %v", tt.r, tt.key, got, tt.want)
		}
	}
	for in, want := range map[string]backend.LockMode{"governance": backend.Governance, "COMPLIANCE": backend.Compliance, "legal-hold": ""} {
		if got, err := backend.ParseLockMode(in); got != want || (err != nil) != (want == "") {
			t.Errorf("ParseLockMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// TestWrappersOverADirectory: every wrapper is Versioned, and over a store that keeps no
// versions it says it cannot lock and refuses the version calls with ErrNotVersioned (the
// read-only one refuses the writes with ErrReadOnly first).
func TestWrappersOverADirectory(t *testing.T) {
	l, err := local.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	wrappers := map[string]backend.Versioned{
		"retry":    retry.New(l, retry.Options{Attempts: 1}),
		"limit":    limit.New(l, 2),
		"readonly": readonly.New(l),
	}
	for name, w := range wrappers {
		t.Run(name, func(t *testing.T) {
			w.SetRetention(&backend.Retention{Mode: backend.Governance, Period: time.Hour})
			if on, err := w.ObjectLock(ctx); on || err != nil {
				t.Errorf("ObjectLock = %v, %v; want false, nil", on, err)
			}
			if on, err := w.KeepsVersions(ctx); on || err != nil {
				t.Errorf("KeepsVersions = %v, %v; want false, nil", on, err)
			}
			if err := w.ListVersions(ctx, "", func(backend.Version) error { return nil }); !errors.Is(err, backend.ErrNotVersioned) {
				t.Errorf("ListVersions = %v", err)
			}
			if _, err := w.RetainUntil(ctx, "k", ""); !errors.Is(err, backend.ErrNotVersioned) {
				t.Errorf("RetainUntil = %v", err)
			}
			want := backend.ErrNotVersioned
			if name == "readonly" {
				want = backend.ErrReadOnly
			}
			if err := w.Retain(ctx, "k", "", time.Now()); !errors.Is(err, want) {
				t.Errorf("Retain = %v, want %v", err, want)
			}
			if err := w.DeleteVersion(ctx, "k", "v"); !errors.Is(err, want) {
				t.Errorf("DeleteVersion = %v, want %v", err, want)
			}
		})
	}
}
