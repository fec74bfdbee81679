package gateway_test

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// syncBuffer is a log destination for goroutines that log at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// An index written by a cairn of the previous schema (2) is not read: the first open moves it
// aside with one log line and builds a new one from the repository, without an admin's
// rebuild-index, and every backup restores as before; an incremental on the new index chains
// onto the old backups and restores too.
func TestOldSchemaIndexRebuiltOnOpen(t *testing.T) {
	dir := t.TempDir()
	cfg, s := openedRepo(t, dir)
	ctx, admin := context.Background(), adminCtx()
	var err error
	img := image(t, dir, "vm.img", 512<<10)
	if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	full, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	sumFull := sha256File(t, img)
	overwrite(t, img, 200<<10, "changed before the incremental")
	inc, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm", Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	sumInc := sha256File(t, img)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// What an older cairn left: an index that says schema 2.
	ix, err := index.Open(cfg.IndexDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := ix.SetMeta("schema", "2"); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}

	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err = gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatalf("open with a schema-2 index: %v", err)
	}
	defer s.Close()
	var said []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "schema") {
			said = append(said, l)
		}
	}
	if len(said) != 1 || !strings.Contains(said[0], "schema 2") || !strings.Contains(said[0], "level=WARN") {
		t.Fatalf("log lines about the schema: %q; want one warning naming schema 2", said)
	}
	aside, _ := filepath.Glob(cfg.IndexDir() + ".schema2-*")
	if len(aside) != 1 {
		t.Fatalf("old index moved to %v, want one %s.schema2-<time>", aside, cfg.IndexDir())
	}

	bs, err := s.ListBackups(admin, gateway.ListFilter{})
	if err != nil || len(bs) != 2 {
		t.Fatalf("backups after the rebuild: %d, %v; want 2", len(bs), err)
	}
	for _, c := range []struct{ id, want string }{{full.ID, sumFull}, {inc.ID, sumInc}} {
		if got := restoreSHA(t, s, admin, c.id); got != c.want {
			t.Fatalf("backup %s restores to sha256 %s, want %s", c.id, got, c.want)
		}
	}
	overwrite(t, img, 300<<10, "changed after the upgrade")
	after, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm", Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if after.ParentID != inc.ID {
		t.Fatalf("incremental on the rebuilt index: parent %s, want %s", after.ParentID, inc.ID)
	}
	if got, want := restoreSHA(t, s, admin, after.ID), sha256File(t, img); got != want {
		t.Fatalf("backup %s restores to sha256 %s, want %s", after.ID, got, want)
	}
}

func overwrite(t *testing.T, path string, off int64, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(s), off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// An index whose table a crash cut short (Badger's own goroutine panicked on it, ending every
// start of cairn) is moved aside like any damaged index, and a new one has every backup.
func TestOpenMovesAsideAnIndexWithATruncatedTable(t *testing.T) {
	dir := t.TempDir()
	cfg, s := openedRepo(t, dir)
	admin := adminCtx()
	img := image(t, dir, "vm.img", 512<<10)
	if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	b, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(cfg.IndexDir(), "*.sst"))
	if len(tables) == 0 {
		t.Fatal("the closed index has no table to cut short")
	}
	for _, f := range tables {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	}

	movedAside(t, cfg, "a table cut short", b.ID, img)
}

// An index whose value log a crash cut short (Badger opens it, and fails only when a record is
// read: recovery did, and refused every start) is moved aside like any damaged index, and a
// new one has every backup and volume.
func TestOpenMovesAsideAnIndexWithATruncatedValueLog(t *testing.T) {
	dir := t.TempDir()
	cfg, s := openedRepo(t, dir)
	admin := adminCtx()
	img := image(t, dir, "vm.img", 512<<10)
	if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: img, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	// Records over Badger's value threshold (1 KiB) live in the value log.
	md := map[string]string{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		md[k] = strings.Repeat(k, 250)
	}
	var ids []string
	for range 3 {
		b, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm", Metadata: md})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, b.ID)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	logs, _ := filepath.Glob(filepath.Join(cfg.IndexDir(), "*.vlog"))
	cut := false
	for _, f := range logs {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 4<<10 {
			if err := os.Truncate(f, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
			cut = true
		}
	}
	if !cut {
		t.Fatalf("the closed index has no value log to cut short: %v", logs)
	}

	s = movedAside(t, cfg, "a value log cut short", ids[2], img)
	for _, id := range ids {
		b, err := s.Backup(admin, id)
		if err != nil || b.Status != "available" || !maps.Equal(b.Metadata, md) {
			t.Fatalf("backup %s after the new index: %+v, %v", id, b, err)
		}
	}
}

// A new index whose first catch-up failed (the backend unreachable for a moment) catches up
// at the next open: the quota limits, and the volumes without backups, that only the
// repository's metadata objects hold come back. The index was bound to the repository before
// they were read, so the next open took it for one that had them: the limit was gone for good
// and the project could back up past it.
func TestNewIndexWhoseFirstCatchUpFailedCatchesUpAtTheNextOpen(t *testing.T) {
	dir := t.TempDir()
	cfg, s := openedRepo(t, dir)
	ctx, admin := context.Background(), adminCtx()
	var err error
	limit := int64(1)
	if _, err := s.QuotaUpdate(admin, "p1", &limit, nil); err != nil {
		t.Fatal(err)
	}
	img := image(t, dir, "vm.img", 512<<10)
	if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: img, Name: "vm", Project: "p1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfg.IndexDir()); err != nil {
		t.Fatal(err)
	}

	opens := 0
	gateway.WrapBackendAtOpenForTest(t, func(be backend.Backend) backend.Backend {
		if opens++; opens > 1 {
			return be
		}
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.List, Prefix: "meta/quotas/", Times: 1})
		return f
	})
	if s, err := gateway.Open(ctx, cfg); err == nil {
		s.Close()
		t.Fatal("open with the backend failing a listing of meta/quotas/ succeeded")
	}
	s, err = gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if q, err := s.QuotaShow(admin, "p1"); err != nil || q.Backups != limit {
		t.Fatalf("quota of p1 after the failed catch-up: %+v, %v; want %d backups", q, err, limit)
	}
	if _, err := s.Volume(as("u1", "p1", false), "vm"); err != nil {
		t.Fatalf("volume vm after the failed catch-up: %v", err)
	}
}

// openedRepo initialises a local repository under dir, with the default state directory beside
// it, and opens a service on it; the test closes it (and may open the config again).
func openedRepo(t testing.TB, dir string) (gateway.Config, *gateway.Service) {
	t.Helper()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	return cfg, initOpened(t, cfg)
}

// initOpened initialises a repository on cfg and opens a service on it; the caller closes it.
func initOpened(t testing.TB, cfg gateway.Config) *gateway.Service {
	t.Helper()
	ctx := context.Background()
	if _, err := gateway.Init(ctx, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// movedAside opens cfg's service again (closed when the test ends) on an index that damage
// (what) must have moved aside, and checks that the new index restores backup id to img's
// bytes and knows volume "vm".
func movedAside(t *testing.T, cfg gateway.Config, what, id, img string) *gateway.Service {
	t.Helper()
	s, err := gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("open with %s: %v", what, err)
	}
	t.Cleanup(func() { s.Close() })
	if aside, _ := filepath.Glob(cfg.IndexDir() + ".damaged-*"); len(aside) != 1 {
		t.Fatalf("damaged index moved to %v, want one %s.damaged-<time>", aside, cfg.IndexDir())
	}
	if got := restoreSHA(t, s, adminCtx(), id); got != sha256File(t, img) {
		t.Fatalf("backup %s restores to sha256 %s after the new index, want the volume's", id, got)
	}
	if _, err := s.Volume(adminCtx(), "vm"); err != nil {
		t.Fatalf("volume vm after the new index: %v", err)
	}
	return s
}
