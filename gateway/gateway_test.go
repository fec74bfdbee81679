package gateway_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

func newService(t *testing.T) (*gateway.Service, string) {
	t.Helper()
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// as returns a context whose caller is user in project, an admin or not.
func as(user, project string, admin bool) context.Context {
	return gateway.WithCaller(context.Background(), gateway.Caller{User: user, Project: project, Admin: admin})
}

// adminCtx is the embedded CLI's caller: the admin of the default project.
func adminCtx() context.Context { return as("admin", gateway.DefaultProject, true) }

func image(t *testing.T, dir, name string, size int) string {
	t.Helper()
	p := filepath.Join(dir, name)
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i*7 + len(name))
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Concurrent creates cannot overshoot a quota: the reservation is taken under one lock.
func TestQuotaReservationsUnderConcurrency(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	limit := int64(3)
	if _, err := s.QuotaUpdate(ctx, gateway.DefaultProject, &limit, nil); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var vols []string
	for i := range n {
		vols = append(vols, image(t, dir, "v"+string(rune('a'+i))+".img", 64<<10))
	}
	var mu sync.Mutex
	var accepted []gateway.Job
	var refused int
	var wg sync.WaitGroup
	for _, v := range vols {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: v})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				accepted = append(accepted, job)
			case errors.Is(err, gateway.ErrQuota):
				refused++
			default:
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if int64(len(accepted)) != limit || refused != n-int(limit) {
		t.Fatalf("%d accepted, %d refused; want %d and %d", len(accepted), refused, limit, n-int(limit))
	}
	u, err := s.QuotaUsage(ctx, gateway.DefaultProject)
	if err != nil || u.Backups.Reserved != limit || u.Backups.InUse != 0 {
		t.Fatalf("usage while creating: %+v %v", u, err)
	}
	for _, job := range accepted {
		if err := job(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if u, _ := s.QuotaUsage(ctx, gateway.DefaultProject); u.Backups.InUse != limit || u.Backups.Reserved != 0 {
		t.Fatalf("usage after the jobs: %+v", u)
	}
	// A refused create wrote nothing.
	bs, _ := s.ListBackups(ctx, gateway.ListFilter{})
	if int64(len(bs)) != limit {
		t.Fatalf("%d backups recorded, want %d", len(bs), limit)
	}
}

// Only the latest backup of a chain can be deleted, and the error names the dependants.
func TestDeleteOnlyLatestOfChain(t *testing.T) {
	s, dir := newService(t)
	ctx := adminCtx()
	v := image(t, dir, "vm.img", 256<<10)
	full, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackup(ctx, full.ID, false); !errors.Is(err, gateway.ErrConflict) {
		t.Fatalf("delete of a parent: %v", err)
	}
	if _, err := s.DeleteBackup(ctx, inc.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteBackup(ctx, full.ID, false); err != nil {
		t.Fatal(err)
	}
	// Non-admins cannot force-delete, and do not see other projects' backups.
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: v})
	if err != nil {
		t.Fatal(err)
	}
	user := gateway.WithCaller(ctx, gateway.Caller{User: "u", Project: "other"})
	if _, err := s.Backup(user, b.ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("another project's backup: %v, want not found", err)
	}
	if _, err := s.DeleteBackup(user, b.ID, true); !errors.Is(err, gateway.ErrNotFound) && !errors.Is(err, gateway.ErrDenied) {
		t.Fatalf("non-admin force delete: %v", err)
	}
}
