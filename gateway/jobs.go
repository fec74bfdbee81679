package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// pool runs accepted jobs in the background, at most n at a time (cairn serve). Without a
// pool (the embedded CLI) jobs run in the caller.
type pool struct {
	sem  chan struct{}
	wg   sync.WaitGroup
	ctx  context.Context
	stop context.CancelFunc
}

// StartWorkers makes the service asynchronous: Submit runs jobs on n background workers.
func (s *Service) StartWorkers(n int) {
	if n <= 0 {
		n = 2
	}
	ctx, stop := context.WithCancel(context.Background())
	s.mu.Lock()
	s.pool = &pool{sem: make(chan struct{}, n), ctx: ctx, stop: stop}
	s.mu.Unlock()
}

// Async reports whether jobs run in the background.
func (s *Service) Async() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pool != nil
}

// Submit runs a job: in the background on the worker pool when the service is asynchronous,
// else right away in the caller. kind and id name it in logs and metrics.
func (s *Service) Submit(ctx context.Context, kind, id string, job Job) error {
	s.mu.Lock()
	p := s.pool
	var cancelled <-chan struct{} // nil (never ready) for a job nothing cancels on its own
	if t := s.cancels[cancelKey(kind, id)]; t != nil {
		cancelled = t.done
	}
	s.mu.Unlock()
	own := s.jobs.entry(kind + "/" + id)
	if p == nil {
		return s.runJob(ctx, kind, id, own, job)
	}
	s.metrics.jobsQueued.WithLabelValues(kind).Inc()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		select {
		case p.sem <- struct{}{}:
		case <-p.ctx.Done():
			s.metrics.jobsQueued.WithLabelValues(kind).Dec()
			err := job(p.ctx) // a cancelled context makes the job record its failure and return
			s.jobs.finish(own, JobCancelled, err)
			return
		case <-cancelled:
			// Cancelled while queued (force delete, reset-state): it runs now, without a
			// worker's place, and ends at its first step, freeing its volume or target at
			// once rather than when the jobs ahead of it end
			// [TestJobsCancelledWhileQueuedEndAtOnce].
			s.metrics.jobsQueued.WithLabelValues(kind).Dec()
			_ = s.runJob(p.ctx, kind, id, own, job)
			return
		}
		defer func() { <-p.sem }()
		s.metrics.jobsQueued.WithLabelValues(kind).Dec()
		_ = s.runJob(p.ctx, kind, id, own, job)
	}()
	return nil
}

// cancelKey is where Service.cancels holds a job of kind, or "" for a kind it never holds.
func cancelKey(kind, id string) string {
	switch kind {
	case "backup":
		return id
	case "restore":
		return "restore/" + id
	}
	return ""
}

// runJob runs job, recording its start and end in its entry own (nil: none) of the job table.
func (s *Service) runJob(ctx context.Context, kind, id string, own *JobInfo, job Job) error {
	s.metrics.jobsRunning.WithLabelValues(kind).Inc()
	defer s.metrics.jobsRunning.WithLabelValues(kind).Dec()
	start := time.Now()
	s.log.Info("job started", "kind", kind, "id", id)
	s.jobs.start(own)
	// Backups and restores run under contexts of their own (backend.Patient too); a check or
	// verification job, under this one. No job that deletes runs here: a delete must not
	// wait out an outage (docs/reliability.md, "Backend faults").
	err := job(backend.Patient(ctx))
	result, state := "success", JobSucceeded
	if errors.Is(err, context.Canceled) || (err != nil && ctx.Err() != nil) {
		result, state = "cancelled", JobCancelled
	} else if err != nil {
		result, state = "error", JobFailed
	}
	s.jobs.finish(own, state, err)
	s.metrics.jobs.WithLabelValues(kind, result).Inc()
	s.metrics.jobSeconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	s.log.Info("job finished", "kind", kind, "id", id, "result", result, "seconds", time.Since(start).Seconds())
	return err
}

// StopWorkers cancels running and queued jobs and waits for them to record their end.
func (s *Service) StopWorkers(ctx context.Context) error {
	s.stopping.Store(true)
	s.mu.Lock()
	p := s.pool
	for _, t := range s.cancels {
		t.cancel()
	}
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	p.stop()
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("jobs still running at shutdown: %w", ctx.Err())
	}
}

// Running reports whether a backup or restore of the backup id is running or queued.
func (s *Service) Running(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, b := s.cancels[id]
	_, r := s.cancels["restore/"+id]
	return b || r
}

// resetReason is why a committed backup an admin reset to error is error (its manifest's
// Error, its record's FailReason).
const resetReason = "reset to error by an admin"

// ResetBackupState sets a backup's status (admins; seed 3.5.3). On a restoring backup it
// cancels the restore: the worker stops and the target volume is marked error, since its
// contents are then incomplete. A restore another gateway runs is cancelled there, on a
// request stored before the status changes.
func (s *Service) ResetBackupState(ctx context.Context, ref, newState string) (*index.Backup, error) {
	if _, err := adminOf(ctx, "reset a backup's state"); err != nil {
		return nil, err
	}
	state := index.BackupStatus(newState)
	if state != index.BackupAvailable && state != index.BackupError {
		return nil, invalidf("state %q: use available or error", newState)
	}
	b, err := s.backupHere(ctx, ref)
	if err != nil {
		return nil, err
	}
	switch b.Status {
	case index.BackupRestoring:
		s.mu.Lock()
		cancel := s.cancelOf("restore/" + b.ID)
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		} else if e := s.restoringElsewhereOf(b.ID); e != nil {
			// Restored through another gateway: that gateway cancels it once the request is
			// stored (docs/design.md, "A restore cancelled through another gateway").
			if err := s.requestRestoreCancel(ctx, b, e); err != nil {
				return nil, err
			}
		}
	case index.BackupCreating:
		return nil, wrapf(ErrConflict, "backup %s is being created: cancel it with 'cairn backup delete --force %s'", b.ID, b.ID)
	}
	if state == index.BackupAvailable {
		// Only a backup whose manifest is stored is complete; reset-state changes a status,
		// never what the repository holds.
		if has, err := s.repo.HasManifest(ctx, b.ID); err != nil {
			return nil, err
		} else if !has {
			return nil, wrapf(ErrConflict, "backup %s never completed (no manifest is stored): it cannot become available", b.ID)
		}
	}
	// A committed backup's reset to error, and its undoing, is stored in its manifest, so every
	// gateway and an index rebuilt show it: kept in the index alone, the backup came back
	// available, restorable and a parent for incrementals [TestResetToErrorOutlivesTheIndex].
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if b, err = s.idx.Backup(b.ID); err != nil {
		return nil, err
	}
	mark := ""
	switch {
	case state == index.BackupError && b.Status.Committed():
		// One being restored too: the restore, cancelled above, may not have ended yet.
		mark = "write"
	case state == index.BackupAvailable && resetToError(b):
		mark = "clear"
	}
	var at time.Time // the manifest's rewrite, if any
	protected := b.Protected
	if mark != "" {
		if at, err = s.rewriteManifest(ctx, b.ID, func(m *repo.Manifest) {
			m.Error = ""
			if mark == "write" {
				m.Error = resetReason
			}
			// Protected through another gateway since this index learned it: the record
			// takes it, as a catch-up would.
			protected = m.Protected
		}); err != nil {
			return nil, err
		}
	}
	out, err := s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
		if state == index.BackupAvailable && rec.Root.IsZero() && rec.Size > 0 {
			return wrapf(ErrConflict, "backup %s never completed: it cannot become available", rec.ID)
		}
		rec.Status = state
		rec.Protected = protected
		stampUpdated(rec, at)
		endDoubt(rec) // an admin's word settles a manifest in doubt
		switch {
		case state == index.BackupAvailable:
			rec.FailReason, rec.FailKind = "", ""
		case mark == "write":
			rec.FailReason, rec.FailKind = resetReason, ""
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.notifyChange()
	s.syncIndex()
	s.log.Info("backup state reset", "backup_id", b.ID, "from", b.Status, "to", state)
	return out, nil
}

// WaitBackup polls a backup the caller may see until it leaves creating and restoring (or
// ctx ends).
func (s *Service) WaitBackup(ctx context.Context, id string) (*index.Backup, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	// A job's end wakes the wait at once; the ticker catches changes made elsewhere
	// (reset-state, another gateway's delete).
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	var last index.BackupStatus // as last read; "" before the first read
	for {
		ended := s.jobs.endings()
		b, err := s.idx.Backup(id)
		if errors.Is(err, index.ErrNotFound) && last != index.BackupRestoring {
			// A backup being created goes only when a force delete cancels it: the command
			// that waits for it ends as cancelled, as the embedded one does
			// [TestBackupWaitCancelledByForceDeleteIsCancelled].
			return nil, wrapf(context.Canceled, "backup %s was cancelled (force delete): it is removed", id)
		}
		if errors.Is(err, index.ErrNotFound) {
			return nil, wrapf(ErrNotFound, "backup %s was deleted (force delete) while it was being restored", id)
		}
		if err == nil && !c.sees(b.Project) {
			return nil, wrapf(ErrNotFound, "backup %s not found: see 'cairn backup list'", id)
		}
		if err != nil {
			return nil, err
		}
		if b.Status != index.BackupCreating && b.Status != index.BackupRestoring {
			return b, nil
		}
		last = b.Status
		select {
		case <-ctx.Done():
			return b, ctx.Err()
		case <-ended:
		case <-t.C:
		}
	}
}
