package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/google/uuid"
)

// Backups being created, on every gateway (docs/design.md): the gateway that accepts a backup
// stores its creating record as meta/creating/<hex id> and rewrites it while the backup runs;
// the others show it from memory, never from their index. A force delete through another
// gateway stores meta/cancel/<hex id>, which the gateway running the backup acts on.
const (
	metaCreating = repo.MetaCreating
	metaCancel   = repo.MetaCancel
)

// creatingRefresh: how often a running backup's creating object is written again;
// creatingStale: how long another gateway waits for that before it shows the backup as
// interrupted; cancelLook: how often a running backup looks for a cancel request. Variables
// for tests.
var (
	creatingRefresh = time.Minute
	creatingStale   = 10 * time.Minute
	cancelLook      = 10 * time.Second
)

// creatingObject is meta/creating/<id>: the backup's creating record and the host of the
// gateway that runs it.
type creatingObject struct {
	Backup  index.Backup `json:"backup"`
	Host    string       `json:"host"`
	Gateway string       `json:"gateway"` // gatewayName: one this gateway finds of its own is a leftover
	// Process is the gateway's process: one of this host found gone shows the backup
	// interrupted at once (docs/design.md, "A gateway process of the same host that is gone").
	Process repo.Process `json:"process,omitzero"`
}

// cancelRequest is meta/cancel/<id>: a force delete of the backup through another gateway.
type cancelRequest struct {
	BackupID string    `json:"backup_id"`
	By       string    `json:"by"`
	Host     string    `json:"host"`
	At       time.Time `json:"at"`
	// Admin and Force are the delete's: a backup that committed first is deleted with its
	// rights, so a member's delete of one shown interrupted never passes the minimum age.
	Admin bool `json:"admin,omitempty"`
	Force bool `json:"force,omitempty"`
}

// elsewhereBackup is a backup another gateway is creating, as this one shows it.
type elsewhereBackup struct {
	rec *index.Backup // the stored creating record, RunBy set
	// written: the object's last write by the store's clock, from the last listing (zero
	// when it was read for a show, before any listing); cancelled: a cancel request is stored;
	// proc: the process that runs it, and gone: it was found gone (a process of this host).
	written   time.Time
	cancelled bool
	proc      repo.Process
	gone      bool
}

// shown is the record as this gateway shows it at storeNow (the store's time now): creating,
// deleting once a cancel is requested, or error when its gateway stopped rewriting its object.
func (e *elsewhereBackup) shown(storeNow time.Time) *index.Backup {
	r := *e.rec
	switch {
	case e.cancelled:
		r.Status = index.BackupDeleting
	case e.gone:
		r.Status = index.BackupError
		r.FailReason = fmt.Sprintf("interrupted: the gateway process on %s that ran it (pid %d) is gone; it records the failure when it starts again",
			r.RunBy, e.proc.PID)
	case !e.written.IsZero() && storeNow.Sub(e.written) > creatingStale:
		r.Status = index.BackupError
		r.FailReason = fmt.Sprintf("interrupted: the gateway on %s that ran it stopped reporting at %s; it records the failure when it starts again",
			r.RunBy, e.written.UTC().Format(time.RFC3339))
	}
	return &r
}

// storeCreating stores backup b's creating object, before its create returns. A failure is
// logged: the backup runs, and other gateways learn it at its end.
func (s *Service) storeCreating(ctx context.Context, b *index.Backup) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	if err := s.repo.PutMeta(ctx, metaCreating, b.ID, creatingObject{Backup: *b, Host: hostName(), Gateway: s.gatewayName(), Process: s.process()}); err != nil {
		s.log.Warn("cannot store a backup being created in the repository; other gateways show it once it ends", "backup_id", b.ID, "error", err)
	}
}

// removeCreating removes backup id's creating object and any cancel request, once what ended
// the backup (its manifest, its failure object, or the removal of its record) is done.
func (s *Service) removeCreating(id string) { s.removeJobObjects(id, metaCreating, metaCancel) }

// removeJobObjects removes the objects of kinds (creating, cancel, restoring) of the job on
// backup id that ended here, with a context of their own (the job's has often ended). A
// failure is logged: a catch-up removes the object later, as this gateway's own leftover.
func (s *Service) removeJobObjects(id string, kinds ...string) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTimeout)
	defer cancel()
	for _, kind := range kinds {
		if err := s.repo.DeleteMeta(ctx, kind, id); err != nil && !errors.Is(err, backend.ErrNotFound) {
			s.log.Warn("cannot remove an ended job's "+kind+" object; a catch-up removes it later", "backup_id", id, "error", err)
		}
	}
}

// watchCreating runs while backup id's job does: it rewrites the creating object every
// creatingRefresh and looks for a cancel request every cancelLook (the job looked once as it
// began). It stops when ctx ends.
func (s *Service) watchCreating(ctx context.Context, id string) {
	s.watchJob(ctx, func(ctx context.Context) { s.lookForCancel(ctx, id) }, func(ctx context.Context) {
		if b, err := s.idx.Backup(id); err == nil && b.Status == index.BackupCreating {
			s.storeCreating(ctx, b)
		}
	})
}

// watchJob runs while a job every gateway shows runs (a backup being created, a restore): it
// calls look every cancelLook and rewrite every creatingRefresh, until ctx ends. A read-only
// service stores no such objects and reads no requests.
func (s *Service) watchJob(ctx context.Context, look, rewrite func(context.Context)) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	t := time.NewTicker(cancelLook)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		look(ctx)
		if time.Since(last) >= creatingRefresh {
			last = time.Now()
			rewrite(ctx)
		}
	}
}

// lookForCancel cancels backup id when a cancel request for it is stored.
func (s *Service) lookForCancel(ctx context.Context, id string) {
	if req, ok := s.cancelRequested(ctx, id); ok {
		s.cancelOnRequest(id, req)
	}
}

// cancelRequested returns the cancel request stored for backup id, if there is one. One that
// cannot be read is logged, and taken for none: the next look reads it.
func (s *Service) cancelRequested(ctx context.Context, id string) (cancelRequest, bool) {
	var req cancelRequest
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return req, false
	}
	err := s.repo.GetMeta(ctx, metaCancel, id, &req)
	if err != nil && !errors.Is(err, backend.ErrNotFound) && ctx.Err() == nil {
		s.log.Warn("cannot look for a request to cancel a running backup", "backup_id", id, "error", err)
	}
	return req, err == nil && req.BackupID == id
}

// cancelOnRequest cancels running backup id as a force delete here would (cancelBackup),
// for a force delete through another gateway. A backup that committed first is deleted as a
// force delete of it here would (docs/design.md, "Backups being created, on every gateway");
// one that ended otherwise (failed, or gone) leaves nothing to do, and the request goes.
func (s *Service) cancelOnRequest(id string, req cancelRequest) {
	if err := s.stopCreating(id); err != nil {
		if b, berr := s.idx.Backup(id); errors.Is(err, errNotCreating) && berr == nil && b.Status == index.BackupAvailable {
			s.deleteOnRequest(b, req)
			return
		}
		s.log.Warn("request to cancel a backup that is no longer being created dropped", "backup_id", id, "by", req.By, "through", req.Host, "error", err)
		s.removeJobObjects(id, metaCancel)
		return
	}
	s.jobs.logf("backup/"+id, "cancelled by %s through the gateway on %s (force delete)", req.By, req.Host)
	s.log.Info("backup cancelled through another gateway", "backup_id", id, "by", req.By, "through", req.Host)
}

// deleteOnRequest deletes backup b, which committed after a delete through another gateway
// had asked to cancel it, as that delete here would have: with its caller's rights and force,
// by the deletion protocol and its checks (a protected backup stays, and so does one younger
// than the minimum age unless an admin forced the delete; the refusal is logged). It removes
// the request either way.
func (s *Service) deleteOnRequest(b *index.Backup, req cancelRequest) {
	defer s.removeJobObjects(b.ID, metaCancel)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c := Caller{User: req.By, Project: b.Project, Admin: req.Admin}
	if _, err := s.deleteFinished(WithCaller(ctx, c), c, b.ID, req.Force); err != nil {
		if !errors.Is(err, index.ErrNotFound) { // deleted already, by the other look
			s.log.Warn("backup committed before a force delete through another gateway could cancel it, and not deleted", "backup_id", b.ID, "by", req.By, "through", req.Host, "error", err)
			s.jobs.logf("backup/"+b.ID, "committed before the force delete by %s through the gateway on %s could cancel it, and not deleted: %v", req.By, req.Host, err)
		}
		return
	}
	s.jobs.logf("backup/"+b.ID, "committed before the force delete by %s through the gateway on %s could cancel it: deleted", req.By, req.Host)
	s.log.Info("backup deleted on a force delete through another gateway that came as it committed", "backup_id", b.ID, "by", req.By, "through", req.Host)
}

// requestCancel is a force delete (or the delete of one shown interrupted) of backup b,
// which another gateway is creating: it stores the cancel request that gateway acts on.
func (s *Service) requestCancel(ctx context.Context, c Caller, b *index.Backup, force bool) (*index.Backup, error) {
	if err := confirm(ctx, fmt.Sprintf("cancel backup %s, which the gateway on %s is creating, and delete it", s.describeBackup(b), b.RunBy)); err != nil {
		return nil, err
	}
	req := cancelRequest{BackupID: b.ID, By: c.User, Host: hostName(), At: now(), Admin: c.Admin, Force: force}
	if err := s.repo.PutMeta(ctx, metaCancel, b.ID, &req); err != nil {
		return nil, fmt.Errorf("store the request to cancel backup %s: %w", b.ID, err)
	}
	s.elsewhereMu.Lock()
	if e := s.elsewhere[b.ID]; e != nil {
		e.cancelled = true
	}
	s.elsewhereMu.Unlock()
	s.log.Info("cancel of a backup being created through another gateway requested", "backup_id", b.ID, "runs_on", b.RunBy, "by", c.User)
	shown := *b
	shown.Status = index.BackupDeleting
	return &shown, nil
}

// cancelPending says whether a cancel request for backup id is stored: recovery then drops an
// interrupted backup, as the cancel would have.
func (s *Service) cancelPending(ctx context.Context, id string) bool {
	_, ok := s.cancelRequested(ctx, id)
	return ok
}

// creatingListing is what a catch-up listed of meta/restore-cancel/ (full only),
// meta/restoring/, meta/cancel/ and meta/creating/, in that order (the argument in
// docs/design.md).
type creatingListing struct {
	restoreCancels map[string]bool      // meta/restore-cancel/ (restoring.go)
	restoring      map[string]time.Time // meta/restoring/ (restoring.go)
	cancels        map[string]bool
	written        map[string]time.Time
}

// listCreating lists meta/restore-cancel/ (full: the full catch-up removes the requests
// left), meta/restoring/, meta/cancel/ (full: only the full catch-up shows another gateway's
// request, and removes those left), then meta/creating/. It comes before the catch-up's other
// listings.
func (s *Service) listCreating(ctx context.Context, full bool) (creatingListing, error) {
	l := creatingListing{restoreCancels: map[string]bool{}, restoring: map[string]time.Time{}, cancels: map[string]bool{}, written: map[string]time.Time{}}
	if full {
		if err := s.repo.ListMetaNames(ctx, metaRestoreCancel, func(id string) error { l.restoreCancels[id] = true; return nil }); err != nil {
			return l, err
		}
	}
	if err := s.repo.ListMetaTimes(ctx, metaRestoring, func(id string, at time.Time) error { l.restoring[id] = at; return nil }); err != nil {
		return l, err
	}
	if !full {
		s.elsewhereMu.Lock()
		for id, e := range s.elsewhere {
			l.cancels[id] = e.cancelled // as the last full catch-up, or a request here, left it
		}
		s.elsewhereMu.Unlock()
	} else if err := s.repo.ListMetaNames(ctx, metaCancel, func(id string) error { l.cancels[id] = true; return nil }); err != nil {
		return l, err
	}
	err := s.repo.ListMetaTimes(ctx, metaCreating, func(id string, at time.Time) error { l.written[id] = at; return nil })
	return l, err
}

// showCreating brings what this gateway shows of backups other gateways are creating up to
// the listing l. full says the catch-up also listed every manifest and failure (ended holds
// those ids): only then are entries forgotten and leftover objects removed.
func (s *Service) showCreating(ctx context.Context, l creatingListing, full bool, ended map[string]bool) {
	s.showRestoring(ctx, l.restoring, true, full)
	if full {
		s.removeRestoreCancels(ctx, l.restoreCancels, l.restoring)
	}
	// Looked up one by one, the listed and the shown: the 10-second catch-up must cost what
	// runs, not what the repository holds.
	knownMemo := map[string]bool{}
	known := func(id string) bool {
		k, ok := knownMemo[id]
		if !ok {
			_, err := s.idx.Backup(id)
			k = err == nil
			knownMemo[id] = k
		}
		return k
	}
	writable := !s.cfg.ReadOnly && !s.repo.ReadOnly()
	if full && writable {
		for id := range l.cancels {
			if _, ok := l.written[id]; ok {
				continue
			}
			// Its backup ended before the listing. One that committed is deleted, as the
			// force delete that asked would have done here; any other goes with the request.
			if b, err := s.idx.Backup(id); err == nil && b.Status == index.BackupAvailable {
				if req, ok := s.cancelRequested(ctx, id); ok {
					s.deleteOnRequest(b, req)
					continue
				}
			}
			s.repo.DeleteMeta(ctx, metaCancel, id) // best effort
		}
	}
	fresh := map[string]*elsewhereBackup{}
	for id, at := range l.written {
		switch {
		case full && (ended[id] || s.storeNow().Sub(at) > reservationTTL):
			// Ended (its gateway died after storing the end, before removing this), or its
			// gateway never came back.
			if writable {
				s.repo.DeleteMeta(ctx, metaCreating, id) // best effort
			}
			continue
		case known(id):
			continue // this gateway's own, or one it learned
		}
		s.elsewhereMu.Lock()
		e := s.elsewhere[id]
		s.elsewhereMu.Unlock()
		if e == nil {
			if e = s.readCreating(ctx, id); e == nil {
				continue
			}
		}
		fresh[id] = &elsewhereBackup{rec: e.rec, written: at, cancelled: l.cancels[id], proc: e.proc, gone: s.repo.ProcessGone(e.proc)}
	}
	s.elsewhereMu.Lock()
	ids := slices.Collect(maps.Keys(s.elsewhere))
	s.elsewhereMu.Unlock()
	var gone []string
	for _, id := range ids {
		if known(id) || (full && fresh[id] == nil) {
			gone = append(gone, id)
		}
	}
	s.elsewhereMu.Lock()
	defer s.elsewhereMu.Unlock()
	if s.elsewhere == nil {
		s.elsewhere = map[string]*elsewhereBackup{}
	}
	for _, id := range gone {
		delete(s.elsewhere, id)
	}
	maps.Copy(s.elsewhere, fresh)
}

// readCreating reads backup id's creating object; nil when it is gone or not one.
func (s *Service) readCreating(ctx context.Context, id string) *elsewhereBackup {
	var o creatingObject
	err := s.repo.GetMeta(ctx, metaCreating, id, &o)
	if err != nil {
		if !errors.Is(err, backend.ErrNotFound) {
			s.log.Warn("record of a backup being created elsewhere skipped", "backup_id", id, "error", err)
		}
		return nil
	}
	if o.Backup.ID != id || o.Backup.Status != index.BackupCreating {
		s.log.Warn("record of a backup being created elsewhere skipped: it does not describe one", "backup_id", id)
		return nil
	}
	if o.Gateway == s.gatewayName() {
		// This gateway's own, which it never shows as another's: while the backup runs here
		// the index holds it as creating, so one it does not is a leftover whose removal
		// failed (the store was down as the backup ended), removed now.
		if b, err := s.idx.Backup(id); errors.Is(err, index.ErrNotFound) || (err == nil && b.Status != index.BackupCreating) {
			s.removeCreating(id)
		}
		return nil
	}
	// A volume managed through that gateway since the last full catch-up: learned now, so
	// the backup shows with its volume rather than as one of a volume gone.
	if _, err := s.idx.Volume(o.Backup.VolumeID); errors.Is(err, index.ErrNotFound) {
		if _, err := s.learnVolume(ctx, o.Backup.VolumeID); err != nil {
			s.log.Warn("volume of a backup being created elsewhere not learned", "volume_id", o.Backup.VolumeID, "error", err)
		}
	}
	rec := o.Backup
	rec.RunBy = o.Host
	if rec.RunBy == "" {
		rec.RunBy = "another host"
	}
	return &elsewhereBackup{rec: &rec, proc: o.Process, gone: s.repo.ProcessGone(o.Process)}
}

// process is this gateway's process, as its jobs' and services' objects name it.
func (s *Service) process() repo.Process {
	if p := s.procForTest.Load(); p != nil {
		return *p
	}
	return s.repo.ThisProcess()
}

// elsewhereRecords returns the backups other gateways are creating that the index does not
// hold, as shown now, oldest first.
func (s *Service) elsewhereRecords() []*index.Backup {
	s.elsewhereMu.Lock()
	defer s.elsewhereMu.Unlock()
	out := make([]*index.Backup, 0, len(s.elsewhere))
	for _, e := range s.elsewhere {
		out = append(out, e.shown(s.storeNow()))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out
}

// lookElsewhere looks in the repository, once, for backup id that neither the index nor
// memory holds: one another gateway is creating, or one that ended there since the last
// catch-up (its manifest: the log is followed; its failure: learned). It reports whether it
// found one.
func (s *Service) lookElsewhere(ctx context.Context, id string) bool {
	if _, err := uuid.Parse(id); err != nil || len(id) != 36 {
		return false
	}
	if e := s.readCreating(ctx, id); e != nil {
		s.elsewhereMu.Lock()
		if s.elsewhere == nil {
			s.elsewhere = map[string]*elsewhereBackup{}
		}
		if s.elsewhere[id] == nil {
			s.elsewhere[id] = e
		}
		s.elsewhereMu.Unlock()
		// The index may have learned it meanwhile: it wins, as at a catch-up.
		return true
	}
	if has, err := s.repo.HasManifest(ctx, id); err == nil && has {
		if err := s.followLog(ctx); err != nil {
			s.log.Warn("catch-up for a backup stored elsewhere failed", "backup_id", id, "error", err)
		}
		return true
	}
	learned, err := s.learnFailure(ctx, id)
	return err == nil && learned
}

// elsewhereBackupOf returns the backup another gateway is creating that ref names exactly
// (its id), as shown now, unless the index holds it; nil otherwise.
func (s *Service) elsewhereBackupOf(id string) *index.Backup {
	s.elsewhereMu.Lock()
	e := s.elsewhere[id]
	s.elsewhereMu.Unlock()
	if e == nil {
		return nil
	}
	if _, err := s.idx.Backup(id); err == nil {
		return nil
	}
	return e.shown(s.storeNow())
}

// backupHere is Backup for an operation that changes the backup or reads its data: one
// another gateway is creating is refused, naming that gateway's host.
func (s *Service) backupHere(ctx context.Context, ref string) (*index.Backup, error) {
	b, err := s.Backup(ctx, ref)
	if err != nil || b.RunBy == "" {
		return b, err
	}
	switch b.Status {
	case index.BackupDeleting:
		return nil, wrapf(ErrConflict, "backup %s is being cancelled through the gateway on %s", b.ID, b.RunBy)
	case index.BackupError:
		return nil, wrapf(ErrConflict, "backup %s was interrupted: the gateway on %s that ran it stopped reporting; it has no data, and is recorded failed when that gateway starts again", b.ID, b.RunBy)
	}
	return nil, wrapf(ErrConflict, "backup %s is being created through the gateway on %s: try again once it is available", b.ID, b.RunBy)
}

// withElsewhere returns the index's backups, then those other gateways are creating that it
// does not hold.
func (s *Service) withElsewhere() ([]*index.Backup, error) {
	all, err := s.idx.Backups()
	if err != nil {
		return nil, err
	}
	more := s.elsewhereRecords()
	if len(more) == 0 {
		return all, nil
	}
	known := make(map[string]bool, len(all))
	for _, b := range all {
		known[b.ID] = true
	}
	for _, b := range more {
		if !known[b.ID] {
			all = append(all, b)
		}
	}
	return all, nil
}
