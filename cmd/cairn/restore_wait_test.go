package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
)

// 'backup restore --wait' inside a gateway whose restore reset-state cancelled while it was
// queued, and which another restore of the same backup then followed: the waiting command
// fails, and does not print the later restore's success for its own. Once a restore no longer
// ends a later restore's record (TestRestoreEndedByResetStateLeavesTheNextRestoreRecord), the
// command found the backup's last restore naming another target and took that for a success:
// exit 0, "restored", and no file at its target.
func TestRestoreWaitSupersededIsNoSuccess(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	s, admin := gatewayWithVolume(t, cfg, dir)
	b, err := s.CreateBackup(admin, gateway.BackupRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	release := busyWorker(t, s, admin)
	first, second := filepath.Join(dir, "first.img"), filepath.Join(dir, "second.img")
	var out, errb bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- runCLI(admin, []string{"--quiet", "backup", "restore", "--yes", b.ID, "--to", first, "--wait"}, &out, &errb, s, nil)
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) { // accepted, queued
		if rec, err := s.Backup(admin, b.ID); err == nil && rec.Status == index.BackupRestoring {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first restore was not accepted")
		}
	}
	if _, err := s.ResetBackupState(admin, b.ID, "available"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Restore(admin, gateway.RestoreRequest{Backup: b.ID, To: second}); err != nil {
		t.Fatal(err)
	}
	close(release)
	select {
	case c := <-code:
		_, statErr := os.Stat(first)
		if c == 0 {
			t.Errorf("restore --wait of a restore that reset-state cancelled: exit %d (%s%s), target: %v", c, out.String(), errb.String(), statErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("restore --wait did not return")
	}
	// The second restore, to its end, wrote the backup.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rec, err := s.Backup(admin, b.ID)
		if err == nil && rec.LastRestore != nil && rec.LastRestore.Target == second && rec.LastRestore.Result != "running" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the second restore did not end: %+v, %v", rec, err)
		}
	}
	got, err := os.ReadFile(second)
	want, _ := os.ReadFile(filepath.Join(dir, "vm.img"))
	if err != nil || sha256.Sum256(got) != sha256.Sum256(want) {
		t.Errorf("the second restore: %v, sha256 %x, want %x", err, sha256.Sum256(got), sha256.Sum256(want))
	}
}

// 'backup create --wait' inside a gateway whose backup a force delete cancels exits as
// cancelled (130), as the embedded command does when its backup is cancelled, and says so.
// Before, the wait found the record gone and the command exited 3, "not found", as if the
// backup it had just created had never existed.
func TestBackupWaitCancelledByForceDeleteIsCancelled(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	s, admin := gatewayWithVolume(t, cfg, dir)
	release := busyWorker(t, s, admin)
	defer close(release)
	var out, errb bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- runCLI(admin, []string{"--quiet", "backup", "create", "vm", "--wait"}, &out, &errb, s, nil)
	}()
	var id string
	for deadline := time.Now().Add(10 * time.Second); id == ""; time.Sleep(time.Millisecond) { // accepted, queued
		if bs, err := s.ListBackups(admin, gateway.ListFilter{}); err == nil && len(bs) == 1 {
			id = bs[0].ID
		}
		if time.Now().After(deadline) {
			t.Fatal("the backup was not accepted")
		}
	}
	if _, err := s.DeleteBackup(admin, id, true); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != exitCancelled || !strings.Contains(errb.String(), "cancelled") {
			t.Errorf("backup create --wait of a backup force delete cancelled: exit %d, %q; want %d, saying it was cancelled", c, errb.String(), exitCancelled)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("backup create --wait did not return")
	}
}

// gatewayWithVolume opens a gateway service on cfg, a repository initialised here, with an
// image volume "vm" under dir; it returns the service (closed when the test ends) and the
// embedded CLI's caller.
func gatewayWithVolume(t *testing.T, cfg gateway.Config, dir string) (*gateway.Service, context.Context) {
	t.Helper()
	s := openedGateway(t, cfg)
	admin := gateway.WithCaller(context.Background(), gateway.Caller{User: "admin", Project: gateway.DefaultProject, Admin: true})
	vol := filepath.Join(dir, "vm.img")
	if err := os.WriteFile(vol, bytes.Repeat([]byte("volume!!"), 32<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ManageVolume(admin, gateway.ManageRequest{Path: vol, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	return s, admin
}

// busyWorker starts one job worker on s and keeps it busy until release is closed, so that
// the next job waits queued; the workers stop before the service closes.
func busyWorker(t *testing.T, s *gateway.Service, admin context.Context) (release chan struct{}) {
	t.Helper()
	s.StartWorkers(1)
	t.Cleanup(func() { s.StopWorkers(context.Background()) }) //nolint:errcheck // before Close: no job may outlive the index
	release = make(chan struct{})
	if err := s.Submit(admin, "test", "blocker", func(context.Context) error { <-release; return nil }); err != nil {
		t.Fatal(err)
	}
	return release
}

// openedGateway initialises a repository on cfg and opens a gateway service on it, closed
// when the test ends.
func openedGateway(t *testing.T, cfg gateway.Config) *gateway.Service {
	t.Helper()
	bg := context.Background()
	if _, err := gateway.Init(bg, cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(bg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
