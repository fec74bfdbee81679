package gateway_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
)

// A backup its starter cancels is removed, record and all, and its volume is free again; one
// the gateway's shutdown stops stays as error ("interrupted").
func TestCancelledBackupIsRemoved(t *testing.T) {
	s, dir := newService(t)
	vol := image(t, dir, "vol.img", 1<<20)
	ctx, cancel := context.WithCancel(adminCtx())
	b, job, err := s.StartBackup(ctx, gateway.BackupRequest{Volume: vol, Name: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	err = s.Submit(ctx, "backup", b.ID, job)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "removed") {
		t.Fatalf("cancelled backup: %v, want a cancellation saying it is removed", err)
	}
	if _, err := s.Index().Backup(b.ID); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("the cancelled backup's record is still there: %v", err)
	}
	if v, err := s.Volume(adminCtx(), vol); err != nil || v.Status != index.VolumeAvailable {
		t.Errorf("volume after the cancelled backup: %+v %v", v, err)
	}

	// The gateway stops with a backup queued: it ends as error, interrupted.
	s.StartWorkers(1)
	b2, job2, err := s.StartBackup(adminCtx(), gateway.BackupRequest{Volume: vol, Name: "stopped"})
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	if err := s.Submit(adminCtx(), "test", "blocker", func(ctx context.Context) error { <-ctx.Done(); close(block); return ctx.Err() }); err != nil {
		t.Fatal(err)
	}
	if err := s.Submit(adminCtx(), "backup", b2.ID, job2); err != nil {
		t.Fatal(err)
	}
	stopCtx, done := context.WithTimeout(context.Background(), 30*time.Second)
	defer done()
	if err := s.StopWorkers(stopCtx); err != nil {
		t.Fatal(err)
	}
	<-block
	got, err := s.Index().Backup(b2.ID)
	if err != nil || got.Status != index.BackupError || !strings.Contains(got.FailReason, "interrupted") {
		t.Errorf("backup stopped by the gateway's shutdown: %+v %v, want error, interrupted", got, err)
	}
}
