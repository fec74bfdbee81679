package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/limit"
	"github.com/cairn-backup/cairn/units"
	"github.com/google/uuid"
)

// BackupRequest asks for a backup of a volume (seed 3.1.1, 3.2).
type BackupRequest struct {
	Volume      string
	Name        string
	Description string
	Incremental bool
	Force       bool              // back up an in-use volume from a snapshot taken first (crash-consistent)
	SnapshotID  string            // back up this existing snapshot of the volume (seed 3.1.5)
	Project     string            // admin only: place the backup in another project
	Metadata    map[string]string // Cinder's backup metadata (3.43): kept in the manifest
	Hooks       Hooks             // commands around the point in time (admins only; docs/design.md, "Hooks")
	// policyHooks: Hooks are a policy's, checked when an admin stored them; its runs act as
	// the policy's project, not as an admin.
	policyHooks bool
	Protected   bool // refuse delete and prune until unprotected
	// Bitmap, for an incremental of an NBD volume, names the export's dirty bitmap
	// (qemu:dirty-bitmap:NAME): only the extents it marks are read.
	Bitmap   string
	Progress func(done, total int64)
}

// Job is accepted work that runs later (at once in the embedded CLI, on a worker in serve).
type Job func(ctx context.Context) error

// StartBackup does the static checks, records the backup as creating and the volume as
// backing-up, and returns the job that reads the volume. Nothing is written when a check fails.
func (s *Service) StartBackup(ctx context.Context, req BackupRequest) (*index.Backup, Job, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, nil, err
	}
	project, err := targetProject(c, req.Project)
	if err != nil {
		return nil, nil, err
	}
	if req.Name != "" {
		if err := validName(req.Name); err != nil {
			return nil, nil, err
		}
	}
	if utf8.RuneCountInString(req.Description) > maxField {
		return nil, nil, invalidf("a description must be at most %d characters", maxField)
	}
	if err := validMetadata(req.Metadata); err != nil {
		return nil, nil, err
	}
	if !req.policyHooks {
		if err := req.Hooks.validate(c); err != nil {
			return nil, nil, err
		}
	}
	if s.repo.ReadOnly() {
		// Refused before the volume is read and a record made that could only end as error.
		return nil, nil, fmt.Errorf("back up: %w", backend.ErrReadOnly)
	}
	if err := s.roomForIndex(c); err != nil {
		return nil, nil, err
	}
	v, snap, err := s.backupSubject(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	identity, err := s.volumeIdentity(v, snap == nil)
	if err != nil {
		return nil, nil, err
	}
	if !req.Hooks.empty() && v.Kind == KindNBD {
		return nil, nil, invalidf("hooks run around the point in time a backup takes, and volume %s takes none: an NBD export is its server's point in time (quiesce before its export begins)", v.Name)
	}
	if !req.Hooks.empty() && snap != nil {
		return nil, nil, invalidf("hooks run around the point in time a backup takes, and a backup of snapshot %s takes none: back up the volume itself with --pre-hook and --post-hook", snap.ID)
	}
	// Asked before the volume is opened (and hooks run) for a backup that cannot be made.
	var parent *index.Backup
	var fullInstead string // why an incremental that was asked for is a full backup
	if req.Incremental {
		if parent, err = s.latestBackup(v.ID, project); err != nil {
			return nil, nil, err
		}
		if parent == nil {
			return nil, nil, wrapf(ErrInvalid, "volume %s has no available backup in project %s to base an incremental on: create a full backup first (without --incremental)", v.Name, project)
		}
		if fullInstead, err = s.fullInsteadOf(ctx, parent); err != nil {
			return nil, nil, err
		}
		if fullInstead != "" {
			parent = nil
		}
	}
	id := uuid.NewString()
	var plan *readPlan
	var hookNotes []string
	sub := hookSubject{backupID: id, project: project, volume: v}
	if !req.policyHooks {
		sub.dir = workDir(ctx)
	}
	err = s.aroundPointInTime(ctx, req.Hooks, sub,
		func(f string, a ...any) { hookNotes = append(hookNotes, fmt.Sprintf(f, a...)) },
		func() error {
			var err error
			plan, err = s.openForBackup(ctx, req, v, snap, id)
			return err
		})
	if err != nil {
		return nil, nil, err
	}
	if fullInstead != "" {
		plan.fallback = fullInstead
	}
	src := plan.src
	closeSrc := func() {
		if err := plan.close(); err != nil {
			s.log.Error("cannot close the backup's source", "volume_id", v.ID, "error", err)
		}
	}
	b := &index.Backup{ID: id, Name: req.Name, Description: req.Description, Metadata: req.Metadata, UserID: c.User, VolumeID: v.ID,
		Project: project, Status: index.BackupCreating, Size: src.Size(), IsIncremental: parent != nil,
		VolumeName: v.Name, VolumePath: v.Path, VolumeIdentity: identity, Protected: req.Protected, CreatedAt: now(), UpdatedAt: now()}
	if parent != nil {
		b.ParentID = parent.ID
	}
	if b.CreatedAt, err = s.datedAfterEarlier(v.ID, b.CreatedAt); err != nil {
		closeSrc()
		return nil, nil, err
	}
	// The creating record is the quota reservation: hold the quota lock until it is written.
	release, dropReservation, err := s.reserveQuota(ctx, project, id, src.Size())
	if err != nil {
		closeSrc()
		return nil, nil, err
	}
	defer release()
	accepted := false
	defer func() {
		if !accepted {
			dropReservation()
		}
	}()
	// Claim what is read: the volume, one backup or restore at a time; or, backing up a
	// snapshot, the snapshot (seed 3.3: since Cinder 13 a snapshot's backup marks the snapshot).
	// A volume an unfinished restore left error stays error, with its reason, after its backup
	// [TestBackupOfAVolumeACancelledRestoreLeftErrorKeepsItError].
	var was index.Volume // the volume's status and reason before the claim
	claim, unclaim := s.claimVolume(c, v, src.Size(), &was), func() { s.setVolumeStatus(v.ID, was.Status, was.FailReason) }
	if snap != nil {
		b.SnapshotID = snap.ID
		claim, unclaim = s.claimSnapshot(snap), func() { s.setSnapshotStatus(snap.ID, index.SnapshotAvailable) }
	}
	if err := claim(); err != nil {
		closeSrc()
		return nil, nil, err
	}
	if err := s.idx.CreateBackup(b); err != nil {
		closeSrc()
		unclaim()
		return nil, nil, err
	}
	// Shown by every gateway on the repository from now on, before the create returns
	// ("Backups being created, on every gateway").
	s.storeCreating(ctx, b)
	// A job of hours waits out a store's restart or failover rather than fail of it.
	jobCtx, cancel := context.WithCancel(backend.Patient(context.WithoutCancel(ctx)))
	untrack := s.track(jobCtx, b.ID, cancel)
	jobID := "backup/" + b.ID
	s.jobs.add(JobInfo{ID: jobID, Kind: "backup", Subject: b.ID, Project: project, VolumeID: v.ID, VolumeName: v.Name, Total: b.Size})
	kind := "full"
	if parent != nil {
		kind = "incremental (parent " + parent.ID + ")"
	}
	s.jobs.logf(jobID, "accepted: %s backup of volume %s, %s, by %s", kind, v.Name, units.Bytes(b.Size), c.User)
	if tmp := plan.tmp; tmp != nil && req.Hooks.empty() {
		s.jobs.logf(jobID, "the volume is in use: backing up a %s snapshot of it", tmp.Kind)
	}
	if !req.Hooks.empty() {
		s.jobs.logf(jobID, "hooks ran around the point in time: backing up a snapshot of it")
	}
	for _, n := range hookNotes {
		s.jobs.logf(jobID, "%s", n)
	}
	progress := s.jobProgress(jobID, req.Progress)
	job := func(ctx context.Context) error {
		defer cancel()
		defer untrack()
		defer closeSrc()
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		// A cancel requested through another gateway while the job was queued stops it
		// before it begins; one requested later, within cancelLook.
		s.lookForCancel(jobCtx, b.ID)
		watched := make(chan struct{})
		go func() { defer close(watched); s.watchCreating(jobCtx, b.ID) }()
		defer func() { <-watched }()
		defer cancel()
		err := s.runBackup(jobCtx, b, v, plan, parent, progress, unclaim)
		if err != nil {
			dropReservation()
		} else {
			// Other gateways count it as a reservation until they have learned its manifest.
			time.AfterFunc(reservationGrace, dropReservation)
		}
		return err
	}
	accepted = true
	s.log.Info("backup accepted", "backup_id", b.ID, "volume_id", v.ID, "incremental", b.IsIncremental, "project", project)
	return b, job, nil
}

// fullInsteadOf says why an incremental on parent must be a full backup instead ("" when it
// need not). An incremental keeps its parent's unchanged blocks without reading them, so on a
// parent a verification found damaged it is damaged the same way; a full backup looks every
// block up and stores again those whose copy a reader marked damaged. The verification may
// have been another gateway's, within the last full catch-up: its marks are learned first, or
// the full backup would reuse the damaged copies ("Marks in the repository").
func (s *Service) fullInsteadOf(ctx context.Context, parent *index.Backup) (string, error) {
	lv := parent.LastVerify
	if !lv.Damaged() {
		return "", nil
	}
	if _, err := s.repo.LearnDamaged(ctx); err != nil {
		return "", fmt.Errorf("learn the repository's damaged copies before a full backup: %w", err)
	}
	return fmt.Sprintf("parent backup %s was found damaged (%s lost, verified %s): a full backup instead, which stores the lost blocks again where the volume still holds them",
		parent.ID, units.Bytes(lv.LostBytes), lv.At.UTC().Format("2006-01-02 15:04 MST")), nil
}

// parentNow looks at an incremental's parent again once the backup's lock is held: its
// manifest must still be stored, and the job may have waited in the queue while a
// verification found the parent damaged (the backup is then a full one, its record says so)
// or an admin reset it to error (the backup fails). Built on the record read at acceptance,
// it kept the damaged parent's blocks unread and committed as available
// [TestAQueuedIncrementalLooksAtItsParentAgain].
func (s *Service) parentNow(ctx context.Context, b *index.Backup, plan *readPlan, parent *index.Backup) (*index.Backup, error) {
	// Its blocks are reused without looking them up: its manifest must still be stored, so
	// that no gc removes them until this backup's manifest reaches them.
	if has, err := s.repo.HasManifest(ctx, parent.ID); err != nil {
		return nil, err
	} else if !has {
		return nil, wrapf(ErrConflict, "its parent backup %s was deleted while it waited: run the incremental again", parent.ID)
	}
	cur, err := s.idx.Backup(parent.ID)
	switch {
	case errors.Is(err, index.ErrNotFound), err == nil && !cur.Status.Committed():
		return nil, wrapf(ErrConflict, "its parent backup %s was deleted or reset to error while it waited: run the incremental again", parent.ID)
	case err != nil:
		return nil, err
	}
	why, err := s.fullInsteadOf(ctx, cur)
	if err != nil || why == "" {
		return cur, err
	}
	if _, err := s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
		if rec.Status != index.BackupCreating {
			return wrapf(ErrConflict, "backup %s was cancelled", b.ID)
		}
		rec.IsIncremental, rec.ParentID = false, ""
		return nil
	}); err != nil {
		return nil, err
	}
	b.IsIncremental, b.ParentID, plan.fallback = false, "", why
	return nil, nil
}

func (s *Service) runBackup(ctx context.Context, b *index.Backup, v *index.Volume, plan *readPlan, parent *index.Backup, progress func(int64, int64), unclaim func()) error {
	start := time.Now()
	if plan.nbd != nil {
		// A cancelled backup must not wait for an NBD server that stopped answering.
		stop := context.AfterFunc(ctx, plan.nbd.Cancel)
		defer stop()
	}
	o := repo.WriteOptions{Workers: s.cfg.Workers, Uploads: s.cfg.transfers(), Progress: progress}
	// Under the lock no gc runs anywhere, and the index has forgotten what earlier gcs
	// deleted. The parent's blocks are reused without looking them up, so its manifest must
	// still exist now: then no gc can remove them until this backup's manifest reaches them.
	lk, err := s.repo.Lock(ctx, repo.LockShared, "backup")
	if err == nil {
		o.Lock = lk
		defer lk.Unlock()
		if parent != nil {
			parent, err = s.parentNow(ctx, b, plan, parent)
			if parent != nil {
				o.Parent = &repo.Parent{Root: parent.Root, RootLevel: parent.RootLevel, Size: parent.Size, DataBlocks: parent.Stats.DataBlocks}
			}
		}
	}
	var how readChoice
	if err == nil {
		how = s.chooseRead(ctx, plan, parent)
		o.Changes = how.changes
		if how.fallback != "" {
			s.log.Warn("changed-block tracking not used", "backup_id", b.ID, "volume_id", v.ID, "reason", how.fallback)
		}
	}
	if err != nil {
		unclaim()
		return s.endFailedBackup(b, v, err)
	}
	var src repo.Source = plan.src
	if s.volumeReads != nil {
		src = &meteredSource{Source: plan.src, ctx: ctx, m: s.volumeReads}
	}
	res, err := s.repo.Write(ctx, src, o, func(res repo.WriteResult) error {
		// A force delete through another gateway since the last look cancels it still
		// ("Backups being created, on every gateway"): looked up once more before the commit.
		if req, ok := s.cancelRequested(ctx, b.ID); ok {
			s.cancelOnRequest(b.ID, req)
			return wrapf(context.Canceled, "backup %s was cancelled through the gateway on %s", b.ID, req.Host)
		}
		if h := afterLastCancelLookForTest.Load(); h != nil {
			(*h)(b.ID)
		}
		res.Stats.ReadBytes += how.read
		// The descriptive fields are the record's now: backup-update may have changed them
		// while the backup ran, and the record and the manifest must agree.
		s.manifestMu.Lock()
		defer s.manifestMu.Unlock()
		cur, err := s.idx.Backup(b.ID)
		if err != nil {
			return wrapf(ErrConflict, "backup %s was cancelled", b.ID)
		}
		m := &repo.Manifest{ID: b.ID, Name: cur.Name, Description: cur.Description, Metadata: cur.Metadata, UserID: b.UserID,
			VolumeID: v.ID, VolumeName: v.Name, VolumePath: b.VolumePath, VolumeIdentity: b.VolumeIdentity, Project: b.Project,
			Size: b.Size, Root: res.Root, RootLevel: res.RootLevel, Incremental: b.IsIncremental, ParentID: b.ParentID,
			SnapshotID: b.SnapshotID, CreatedAt: b.CreatedAt, Stats: res.Stats, CommittedAt: now(), Protected: cur.Protected,
			ReadMode: how.mode, ReadFallback: how.fallback}
		if err := s.repo.PutManifest(ctx, m); err != nil {
			return s.withdrawManifest(b.ID, err)
		}
		// A Put that took long (retried through an outage, or stalled) may have landed after
		// the lock could be judged stale and broken by a gc elsewhere, which may then have
		// removed blocks this manifest needs. While the lock still holds by time, no one
		// judged it stale before the Put landed, and a gc that starts after sees the manifest
		// (design.md, "A manifest that lands late").
		if err := lk.Check(); err != nil {
			return s.withdrawManifest(b.ID, err)
		}
		_, err = s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
			if rec.Status != index.BackupCreating {
				return wrapf(ErrConflict, "backup %s was cancelled", b.ID)
			}
			rec.Status, rec.Root, rec.RootLevel, rec.Stats = index.BackupAvailable, res.Root, res.RootLevel, m.Stats
			rec.ReadMode, rec.ReadFallback = m.ReadMode, m.ReadFallback
			rec.UpdatedAt = m.CommittedAt
			return nil
		})
		if err != nil {
			return s.withdrawManifest(b.ID, err)
		}
		return nil
	})
	if err == nil && plan.clone != "" && plan.unlock != nil {
		// From now on the clone this backup read is the next incremental's base. Still
		// claimed and the store still locked: the next backup of the volume cannot start in
		// between, here or in another process.
		if kerr := plan.store.Keep(plan.clone, b.ID); kerr != nil {
			s.log.Error("cannot keep the change-tracking base: the next incremental reads in full", "backup_id", b.ID, "error", kerr)
		} else {
			plan.kept = true
		}
	}
	if err == nil && plan.thinSnap != nil {
		// The thin snapshot this backup read is the next incremental's base; older ones go.
		if kerr := plan.thin.Keep(b.ID); kerr != nil {
			s.log.Error("cannot keep the thin snapshot for change tracking: the next incremental reads in full", "backup_id", b.ID, "error", kerr)
		} else {
			plan.thinKept = true
		}
	}
	if rerr := plan.release(); rerr != nil {
		s.log.Error("cannot unlock the change-tracking base", "backup_id", b.ID, "error", rerr)
	}
	unclaim()
	if err != nil {
		return s.endFailedBackup(b, v, err)
	}
	// A force delete through another gateway stored after the commit's last look (while the
	// manifest was being stored) deletes the backup now, before its request goes with the
	// creating object.
	if req, ok := s.cancelRequested(ctx, b.ID); ok {
		s.cancelOnRequest(b.ID, req)
	}
	if _, err := s.idx.Backup(b.ID); errors.Is(err, index.ErrNotFound) {
		// Deleted by that look, or by the watcher's (watchCreating), which may have come first.
		s.removeCreating(b.ID)
		s.notifyChange()
		return wrapf(context.Canceled, "backup %s was deleted as it committed: a delete through another gateway asked for it (the job's log says by whom)", b.ID)
	}
	s.removeCreating(b.ID) // after the manifest
	s.syncIndex()
	s.metrics.bytesBackup.Add(float64(b.Size))
	s.metrics.bytesStored.Add(float64(res.Stats.NewBytes))
	s.notifyChange()
	took := time.Since(start)
	s.jobs.logf("backup/"+b.ID, "available: %s of %s read, %d changed blocks, %s new stored, in %s, %s",
		units.Bytes(res.Stats.ReadBytes+how.read), units.Bytes(b.Size), res.Stats.ChangedBlocks, units.Bytes(res.Stats.NewBytes),
		units.Seconds(took), units.Rate(b.Size, took))
	s.sampleStored()
	s.log.Info("backup finished", "backup_id", b.ID, "volume_id", v.ID, "size", b.Size, "new_bytes", res.Stats.NewBytes,
		"changed_blocks", res.Stats.ChangedBlocks, "read_bytes", res.Stats.ReadBytes+how.read, "read_mode", how.mode,
		"seconds", took.Seconds(), "mib_per_s", units.MiBPerSecond(b.Size, took))
	return nil
}

// volumeIdentity is what the volume is now (blockio.Identify), recorded in each backup. A
// volume registered before identities were kept, an image file (a copy put in its place is
// still the admin's file of that volume) or a device known only by its number has its record
// brought up to date. A device whose path now names another disk, by names that survive
// reboots (dm, loop, wwid, serial), is refused when it is what the backup reads (read): backed
// up, it went into the volume's history as the volume, and the record taking its identity
// let a restore by the volume's name write onto it, which stillTheDevice exists to prevent
// [TestBackupRefusesAnotherDeviceAtTheVolumesPath].
func (s *Service) volumeIdentity(v *index.Volume, read bool) (string, error) {
	if v.Kind == KindNBD {
		return "", nil
	}
	id, err := blockio.Identify(v.Path)
	if err != nil {
		s.log.Warn("cannot identify the volume", "volume_id", v.ID, "path", v.Path, "error", err)
		return "", nil
	}
	if read && id != v.Identity && stableIdentity(v.Identity) && stableIdentity(id) {
		return "", wrapf(ErrConflict, "volume %s: %s now names another device (%s, registered as %s), and nothing was backed up: check which disk is there; if it is a disk of its own, 'cairn volume unmanage %s' and manage it as a new volume",
			v.Name, v.Path, id, v.Identity, v.Name)
	}
	if id != v.Identity {
		if _, err := s.idx.UpdateVolume(v.ID, func(rec *index.Volume) error {
			rec.Identity = id
			return nil
		}); err == nil {
			s.saveVolumeLogged(context.Background(), v.ID)
		}
	}
	return id, nil
}

// stableIdentity reports whether a device identity names the device by something that
// survives reboots and renumbering (blockio.Identify): two that differ are two devices.
func stableIdentity(id string) bool {
	for _, p := range []string{"dm:", "loop:", "wwid:", "serial:"} {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// endFailedBackup records how a backup that did not complete ended. One its starter cancelled
// (Ctrl-C of the embedded CLI, a signal to it) is removed: nothing is left for an admin to
// clean up, its reservation goes back, and gc reclaims the packs it stored. One stopped by
// the gateway's shutdown, or failed, stays as error with the reason; so does a cancelled one
// whose manifest may be stored (withdrawManifest), until the next full catch-up settles it.
func (s *Service) endFailedBackup(b *index.Backup, v *index.Volume, err error) error {
	if _, gerr := s.idx.Backup(b.ID); errors.Is(gerr, index.ErrNotFound) {
		s.removeCreating(b.ID) // cancelled: its record is gone
	}
	inDoubt := errors.Is(err, errManifestInDoubt)
	if errors.Is(err, context.Canceled) && !s.stopping.Load() && !inDoubt {
		s.dropCancelledBackup(b.ID)
		s.log.Info("backup cancelled and removed", "backup_id", b.ID, "volume_id", v.ID)
		return wrapf(context.Canceled, "backup %s of volume %s cancelled: it is removed, and 'cairn repo gc' reclaims what it stored", b.ID, v.Name)
	}
	reason := err.Error()
	if errors.Is(err, context.Canceled) && !inDoubt {
		reason = "interrupted: the gateway stopped"
	}
	s.failBackup(b.ID, reason, failureKind(err), inDoubt)
	s.log.Error("backup failed", "backup_id", b.ID, "volume_id", v.ID, "error", reason)
	// Every gateway and an index made anew show it too ("Failed backups in the repository");
	// with a context of its own, as the backup's is often what ended it.
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTimeout)
	defer cancel()
	s.storeFailure(ctx, b.ID)
	return fmt.Errorf("backup %s of volume %s: %w", b.ID, v.Name, err)
}

// withdrawTimeout bounds withdrawManifest's delete, whose context nothing else cancels.
const withdrawTimeout = time.Minute

// errManifestInDoubt is matched by the error of a commit whose manifest may be stored: its
// Put or what followed failed, and the manifest could not be deleted. Its words follow the
// cause in the fail reason; the catch-up that finds the manifest gone cuts them off again.
var errManifestInDoubt = errors.New("its manifest may be stored")

// withdrawManifest deletes the manifest of a backup whose commit failed at or after its Put,
// and returns cause. A Put the client saw fail (a timeout, a cancelled request, a shutdown)
// may have stored it: then every other gateway would adopt the backup as available while
// this one records it failed. It runs under manifestMu, so nothing writes the manifest in
// between, with a context nothing cancels (the backup's often is: that is why the Put
// failed), bounded by withdrawTimeout. DeleteManifest writes the backup's log object too, so
// a gateway that adopted the manifest meanwhile forgets it. When the delete fails and a look
// cannot show the manifest absent either, the error also matches errManifestInDoubt: the
// record then says so (Backup.ManifestInDoubt) and the next full catch-up settles it.
func (s *Service) withdrawManifest(id string, cause error) error {
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTimeout)
	defer cancel()
	err := s.repo.DeleteManifest(ctx, id)
	if err == nil {
		return cause
	}
	if has, herr := s.repo.HasManifest(ctx, id); herr == nil && !has {
		return cause
	}
	s.log.Error("cannot delete a failed backup's manifest; the next full catch-up settles the backup by it", "backup_id", id, "error", err)
	return fmt.Errorf("%w; %w and could not be deleted (%v): the next full catch-up deletes it and the backup stays failed: back the volume up again", cause, errManifestInDoubt, err)
}

// dropCancelledBackup removes a cancelled backup's record. It has no manifest: a commit the
// cancellation interrupted withdrew the one it may have stored (withdrawManifest), and one
// whose manifest it could not withdraw is not dropped (endFailedBackup).
func (s *Service) dropCancelledBackup(id string) {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if err := s.idx.DeleteBackup(id); err != nil && !errors.Is(err, index.ErrNotFound) {
		s.log.Error("cannot remove a cancelled backup's record", "backup_id", id, "error", err)
		s.failBackup(id, "cancelled", "cancelled", false)
		return
	}
	s.removeCreating(id)
	s.syncIndex()
}

// failBackup records a backup that was being created as error, with the reason and its kind
// (failureKind); inDoubt says its manifest may be stored (withdrawManifest).
func (s *Service) failBackup(id, reason, kind string, inDoubt bool) {
	_, err := s.idx.UpdateBackup(id, func(b *index.Backup) error {
		if b.Status == index.BackupCreating {
			b.Status, b.FailReason, b.FailKind, b.ManifestInDoubt = index.BackupError, reason, kind, inDoubt
		}
		return nil
	})
	if err != nil && !errors.Is(err, index.ErrNotFound) {
		s.log.Error("cannot record failed backup", "backup_id", id, "error", err)
	}
}

func (s *Service) setVolumeStatus(id string, status index.VolumeStatus, reason string) {
	if s.markVolume(id, status, reason) {
		s.saveVolumeLogged(context.Background(), id)
	}
}

// markVolume sets a volume's status in the index, and reports whether it could (a volume
// forgotten meanwhile is not an error, and is reported as set: its record is removed).
func (s *Service) markVolume(id string, status index.VolumeStatus, reason string) bool {
	if _, err := s.idx.UpdateVolume(id, func(v *index.Volume) error {
		v.Status, v.FailReason = status, reason
		return nil
	}); err != nil && !errors.Is(err, index.ErrNotFound) {
		s.log.Error("cannot set volume status", "volume_id", id, "status", status, "error", err)
		return false
	}
	return true
}

// latestBackup returns the volume's newest available backup in project, or nil. An
// incremental chains only onto its own project's backups: a parent in another project would
// be hidden from the incremental's owner and would block that project's deletes.
func (s *Service) latestBackup(volumeID, project string) (*index.Backup, error) {
	bs, err := s.idx.VolumeBackups(volumeID)
	if err != nil {
		return nil, err
	}
	for i := len(bs) - 1; i >= 0; i-- {
		if bs[i].Project != project {
			continue
		}
		if bs[i].Status.Committed() {
			return bs[i], nil
		}
	}
	return nil, nil
}

// CreateBackup accepts a backup and runs it: to the end in the embedded CLI, on a worker in
// cairn serve (it then returns the record while still creating).
func (s *Service) CreateBackup(ctx context.Context, req BackupRequest) (*index.Backup, error) {
	b, job, err := s.StartBackup(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := s.Submit(ctx, "backup", b.ID, job); err != nil {
		return nil, err
	}
	rec, err := s.idx.Backup(b.ID)
	if errors.Is(err, index.ErrNotFound) && s.Async() {
		// A force delete cancelled it as soon as it was accepted: it was accepted, and its
		// record as accepted is the answer (a wait for it then finds it cancelled).
		accepted := *b
		return &accepted, nil
	}
	return rec, err
}

// tracked is a job's entry in Service.cancels: its own pointer, so a job that ends removes
// its entry and never a later job's under the same id. done is closed when it is cancelled.
type tracked struct {
	cancel context.CancelFunc
	done   <-chan struct{}
}

// track registers cancel, which ends ctx, as job id's and returns what unregisters it, which
// leaves alone an entry a later job put under the same id: a restore that reset-state
// cancelled while queued ends after the next restore of its backup was accepted, and took that
// one's cancel with it [TestRestoreEndedByResetStateLeavesTheNextRestoreCancellable].
func (s *Service) track(ctx context.Context, id string, cancel context.CancelFunc) (untrack func()) {
	t := &tracked{cancel: cancel, done: ctx.Done()}
	s.mu.Lock()
	s.cancels[id] = t
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.cancels[id] == t {
			delete(s.cancels, id)
		}
		s.mu.Unlock()
	}
}

// afterLastCancelLookForTest, when set, runs in a backup's commit after its last look for a
// cancel request, before its manifest is stored (SetAfterLastCancelLookForTest).
var afterLastCancelLookForTest atomic.Pointer[func(id string)]

// cancelOf returns the cancel of job id, or nil. Called with s.mu held.
func (s *Service) cancelOf(id string) context.CancelFunc {
	if t := s.cancels[id]; t != nil {
		return t.cancel
	}
	return nil
}

// ListFilter narrows a backup list.
type ListFilter struct {
	Volume      string
	AllProjects bool
	Status      string
}

// ListBackups returns the backups the caller may see, oldest first.
func (s *Service) ListBackups(ctx context.Context, f ListFilter) ([]*index.Backup, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	var volumeID string
	var gone error // the volume is no longer registered: its id or name may still name its backups
	var registered map[string]bool
	if f.Volume != "" {
		v, err := s.findVolume(ctx, f.Volume)
		switch {
		case errors.Is(err, ErrNotFound):
			volumeID, gone = f.Volume, err
			if registered, err = s.volumeIDs(); err != nil {
				return nil, err
			}
		case err != nil:
			return nil, err
		default:
			volumeID = v.ID
		}
	}
	all, err := s.withElsewhere()
	if err != nil {
		return nil, err
	}
	var out []*index.Backup
	seen := false // a backup the caller sees is of volumeID
	show := s.backupsFor(c)
	for _, b := range all {
		if !(b.Project == c.Project || (f.AllProjects && c.Admin)) {
			continue
		}
		// A gone volume's backups list by the name they were taken under too, as the list
		// shows them ("web (gone)"): those of a volume still registered go by its name now.
		if volumeID != "" && b.VolumeID != volumeID && (gone == nil || b.VolumeName != volumeID || registered[b.VolumeID]) {
			continue
		}
		seen = true
		b = show(b)
		if f.Status != "" && string(b.Status) != f.Status {
			continue
		}
		out = append(out, b)
	}
	// A volume unmanaged or deleted (or copied here from another repository) keeps its
	// backups, which restore: its id or name still lists them, as the API's volume_id does
	// [TestListBackupsOfAGoneVolumeByItsID]. A volume no backup the caller sees has is not
	// found, as before.
	if gone != nil && !seen {
		return nil, gone
	}
	return out, nil
}

// volumeIDs returns the ids of every registered volume.
func (s *Service) volumeIDs() (map[string]bool, error) {
	vols, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(vols))
	for _, v := range vols {
		ids[v.ID] = true
	}
	return ids, nil
}

// Backup returns a backup by id (or unique name, or id prefix of at least 8 characters).
// Another project's backup is not found, not forbidden.
func (s *Service) Backup(ctx context.Context, ref string) (*index.Backup, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	b, err := s.backupOf(c, ref)
	if errors.Is(err, ErrNotFound) && s.lookElsewhere(ctx, ref) {
		b, err = s.backupOf(c, ref)
	}
	if errors.Is(err, ErrNotFound) {
		err = cmp.Or(s.lostBackup(ctx, c, ref), err)
	}
	if err != nil {
		return nil, err
	}
	return s.backupFor(c, b), nil
}

// lostBackup is the error for a backup id not found whose manifest is lost (docs/design.md,
// "A manifest lost, its copy left"): damage that repair mends, not a deleted backup. It says
// so to a caller who sees the backup's project (by its intact copy; only to an admin when the
// copy is damaged too), and is nil otherwise: the backup is not found.
func (s *Service) lostBackup(ctx context.Context, c Caller, ref string) error {
	m, err := s.lostManifest(ctx, ref)
	if err != nil && (m != nil && c.sees(m.Project) || m == nil && c.Admin) {
		return err
	}
	return nil
}

// lostManifest says what is wrong with backup id when its manifest is not found, if it is
// lost: the error says so, and that repair stores it again from its copy, whose manifest m
// is; or, when the copy is damaged too, that the backup is lost (m is nil). It is nil when the
// manifest is not lost (deleted, or never there).
func (s *Service) lostManifest(ctx context.Context, id string) (*repo.Manifest, error) {
	m, err := s.repo.LostManifest(ctx, id)
	switch {
	case !errors.Is(err, repo.ErrLostManifest):
		return nil, nil
	case m == nil:
		return nil, fmt.Errorf("%w: the backup is lost ('cairn repo repair --forget-damaged' forgets it)", err)
	}
	return m, fmt.Errorf("%w: an admin's 'cairn repo repair' stores the manifest again from it", err)
}

// backupFor is backup b as caller c is shown it: a restore running through another gateway
// as running (backupShown), and what is an admin's to know kept from a member
// (backupShownTo).
func (s *Service) backupFor(c Caller, b *index.Backup) *index.Backup {
	return s.backupsFor(c)(b)
}

// backupsFor is backupFor for a listing: the words a member reads are found once.
func (s *Service) backupsFor(c Caller) func(*index.Backup) *index.Backup {
	w := s.wordsFor(c)
	return func(b *index.Backup) *index.Backup { return backupShownTo(s.backupShown(b), c, w) }
}

// backupShownTo is backup b as caller c may see it: where it was copied to is an admin's to
// know (as a copy's job is), so a member sees when, not where; and a member reads its failure
// and its last restore in w's words, without the paths they may name.
func backupShownTo(b *index.Backup, c Caller, w *words) *index.Backup {
	if c.Admin {
		return b
	}
	shown := *b // records may be shared with the index's cache: never changed in place
	if len(b.Copies) > 0 {
		shown.Copies = make(repo.CopyRecords, len(b.Copies))
		for i, cp := range b.Copies {
			shown.Copies[i] = repo.CopyRecord{At: cp.At}
		}
	}
	shown.FailReason = w.of(b.FailReason)
	if b.LastRestore != nil {
		lr := *b.LastRestore
		lr.Target, lr.Reason = w.of(lr.Target), w.of(lr.Reason)
		shown.LastRestore = &lr
	}
	return &shown
}

// backupOf is Backup for caller c.
func (s *Service) backupOf(c Caller, ref string) (*index.Backup, error) {
	if ref == "" {
		return nil, invalidf("no backup given")
	}
	if b, err := s.idx.Backup(ref); err == nil && c.sees(b.Project) {
		return b, nil
	} else if err != nil && !errors.Is(err, index.ErrNotFound) {
		return nil, err
	}
	if b := s.elsewhereBackupOf(ref); b != nil && c.sees(b.Project) {
		return b, nil
	}
	all, err := s.withElsewhere()
	if err != nil {
		return nil, err
	}
	// A name in the project the caller acts in first, as findVolume does: another project's
	// backup of the same name (a member may name theirs at will) must not make an admin's
	// name for the project's own backup ambiguous [TestAdminNamesABackupOfTheProjectItActsIn].
	var found, own []*index.Backup
	for _, b := range all {
		if !c.sees(b.Project) || (!c.Admin && b.Project != c.Project) {
			continue
		}
		if (b.Name != "" && b.Name == ref) || (len(ref) >= 8 && strings.HasPrefix(b.ID, ref)) {
			found = append(found, b)
			if b.Project == c.Project && b.Name == ref {
				own = append(own, b)
			}
		}
	}
	if len(own) > 0 {
		found = own
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, wrapf(ErrNotFound, "backup %s not found: see 'cairn backup list'", ref)
	}
	return nil, invalidf("%d backups match %q: use the backup id", len(found), ref)
}

// DeleteBackup deletes a backup. Only the latest of an incremental chain can go (seed 3.2.2);
// force (admins) also deletes a backup that is being created, which cancels it (seed 3.3).
func (s *Service) DeleteBackup(ctx context.Context, ref string, force bool) (*index.Backup, error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	b, err := s.Backup(ctx, ref)
	if err != nil {
		return nil, err
	}
	if force && !c.Admin {
		return nil, wrapf(ErrDenied, "only an admin may force-delete a backup")
	}
	if b.RunBy != "" {
		// Another gateway is creating it ("Backups being created, on every gateway").
		switch {
		case b.Status == index.BackupDeleting:
			return b, nil // asked already
		case b.Status == index.BackupCreating && !force:
			return nil, wrapf(ErrConflict, "backup %s is being created through the gateway on %s: wait for it, or cancel it with 'cairn backup delete --force %s'", b.ID, b.RunBy, b.ID)
		}
		return s.requestCancel(ctx, c, b, force)
	}
	if err := s.mayDelete(ctx, c, b, force); err != nil {
		return nil, err
	}
	if b.Status == index.BackupCreating {
		if err := confirm(ctx, fmt.Sprintf("cancel the running backup %s and delete it", s.describeBackup(b))); err != nil {
			return nil, err
		}
		return s.cancelBackup(ctx, c, b, force)
	}
	if err := confirm(ctx, fmt.Sprintf("delete backup %s; it cannot be restored afterwards", s.describeBackup(b))); err != nil {
		return nil, err
	}
	if err := s.deleteCommitted(ctx, b, force); err != nil {
		return nil, err
	}
	return b, nil
}

// unfinishedDeleteStays settles a record left deleting by a delete that failed part way,
// before it is finished (asked again, or at the next start): when the delete never began in
// the repository (no tombstone) and the manifest now says protected (through another gateway,
// which still showed the backup available), or can only be read from its copy, the delete is
// not finished: the record is available again (protected), or stays deleting for a repair.
// It reports whether the delete stays unfinished, and why.
func (s *Service) unfinishedDeleteStays(ctx context.Context, id string) (string, error) {
	// Under manifestMu, as removeCommitted: a delete of this backup in progress here holds
	// it, so what is read below is one that failed, never one under way.
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if deleted, err := s.repo.Deleted(ctx, id); err != nil || deleted {
		return "", err
	}
	m, err := s.repo.GetManifest(ctx, id)
	if errors.Is(err, backend.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if m.ReadFromCopy() {
		return fmt.Sprintf("backup %s: its delete did not finish and its manifest is damaged: run 'cairn repo repair', then delete it again", id), nil
	}
	if !m.Protected || m.Error != "" {
		return "", nil // unprotected (the delete goes on), or reset to error: a delete may finish it
	}
	restoring := false
	if _, err := s.idx.UndoDelete(id, func(rec *index.Backup) {
		// The committed backup its manifest says, as a catch-up would take it: no failure,
		// no doubt, and no restore running (one force-deleted while it ran ended with it).
		takeManifest(rec, m)
		rec.Protected = m.Protected
		endDoubt(rec)
		rec.FailReason, rec.FailKind, rec.RestoreTarget = "", "", ""
		if lr := rec.LastRestore; lr.Running() {
			restoring = true
			rec.LastRestore = interruptedRestore(lr, "the backup was being deleted")
		}
		stampUpdated(rec, m.Updated())
	}); errors.Is(err, index.ErrTransition) {
		return "", nil // no longer deleting: settled meanwhile
	} else if err != nil {
		return "", err
	}
	if restoring {
		s.removeRestoring(id)
	}
	return fmt.Sprintf("backup %s was protected through another gateway before its delete here began in the repository: it stays, available", id), nil
}

// interruptedRestore is how the running restore lr ended when something else ended it (why):
// failed, dated when it started, its target incomplete.
func interruptedRestore(lr *index.RestoreOutcome, why string) *index.RestoreOutcome {
	return &index.RestoreOutcome{Target: lr.Target, Result: repo.RestoreFailed, Kind: "failed", At: lr.At,
		Reason: "interrupted: " + why + "; " + lr.Target + " is incomplete"}
}

// mayDelete is delete's checks of b as read: protection and the minimum age (of a backup
// not being created), dependants, and a status that allows it.
func (s *Service) mayDelete(ctx context.Context, c Caller, b *index.Backup, force bool) error {
	if b.Status == index.BackupDeleting {
		if why, err := s.unfinishedDeleteStays(ctx, b.ID); err != nil {
			return err
		} else if why != "" {
			return wrapf(ErrConflict, "%s", why)
		}
	}
	if b.Status != index.BackupCreating {
		if err := s.refreshProtection(ctx, b, true); err != nil {
			return err
		}
		st, err := s.Settings(ctx)
		if err != nil {
			return err
		}
		if err := mayRemove(c, b, st, force, now()); err != nil {
			return err
		}
	}
	// A failed incremental that made no block map names its parent and needs nothing of it:
	// as for prune, it does not keep its parent [TestAFailedIncrementalDoesNotKeepItsParent].
	if deps, err := s.dependants(b.ID); err != nil {
		return err
	} else if len(deps) > 0 {
		return wrapf(ErrConflict, "backup %s has dependent incremental backups (%s): delete those first; only the latest backup of a chain can be deleted", b.ID, strings.Join(deps, ", "))
	}
	switch b.Status {
	case index.BackupAvailable, index.BackupError:
	case index.BackupDeleting:
		// A delete that failed part way (removeCommitted runs under manifestMu, so one that
		// is still running holds this one's up there): asked again, it finishes. Nothing else
		// would before the next start [TestAFailedDeleteCanBeAskedAgain].
	case index.BackupCreating:
		if !force {
			return wrapf(ErrConflict, "backup %s is being created: wait for it, or cancel it with 'cairn backup delete --force %s'", b.ID, b.ID)
		}
	default:
		if !force {
			return wrapf(ErrConflict, "backup %s is %s: wait for it to finish", b.ID, b.Status)
		}
	}
	return nil
}

// deleteCommitted deletes a backup that is not being created, after mayDelete and the
// question: removeCommitted checks its record again as it marks it deleting.
func (s *Service) deleteCommitted(ctx context.Context, b *index.Backup, force bool) error {
	if err := s.removeCommitted(ctx, b.ID, func(rec *index.Backup) error {
		if rec.Status == index.BackupCreating || (rec.Status == index.BackupRestoring && !force) {
			return wrapf(ErrConflict, "backup %s is %s", rec.ID, rec.Status)
		}
		if rec.Protected {
			return wrapf(ErrConflict, "backup %s is protected: run 'cairn backup unprotect %s' first", rec.ID, rec.ID)
		}
		return nil
	}); err != nil {
		return err
	}
	s.notifyChange()
	s.syncIndex()
	s.log.Info("backup deleted", "backup_id", b.ID, "volume_id", b.VolumeID)
	return nil
}

// removeCommitted deletes a committed backup: under manifestMu, so no protect or other
// rewrite of its manifest interleaves, it marks the record deleting if may (run inside the
// index's transaction) allows, deletes the manifest, then the record. The manifest goes
// first: from then on nothing can resurrect the backup, its blobs are garbage for the next
// gc unless another manifest reaches them, and a crash before the record goes is finished by
// recovery. A protect that took manifestMu first is seen by may (the record says protected);
// one that comes after finds the record deleting and refuses.
func (s *Service) removeCommitted(ctx context.Context, id string, may func(*index.Backup) error) error {
	if s.repo.ReadOnly() {
		// Refused before the record says deleting: recovery would finish the delete later.
		return fmt.Errorf("delete backup %s: %w", id, backend.ErrReadOnly)
	}
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	failed := false
	if _, err := s.idx.UpdateBackup(id, func(rec *index.Backup) error {
		if err := may(rec); err != nil {
			return err
		}
		// One asked again after a delete that failed part way is deleting already: a
		// failure's object it may have goes too.
		failed = failedRecord(rec) || rec.FailureStored || rec.Status == index.BackupDeleting
		rec.Status = index.BackupDeleting
		return nil
	}); err != nil {
		return err
	}
	if err := s.deleteStored(ctx, id, failed); err != nil {
		return fmt.Errorf("delete backup %s: %w; it stays deleting: delete it again to finish", id, err)
	}
	// A quota reservation it may still have (a committed backup keeps one for a while, or
	// for a day when the process that made it ended first) must not outlive it: no index
	// knows a deleted backup, so every gateway would count the reservation.
	if err := s.repo.DeleteMeta(ctx, metaReservations, id); err != nil && !errors.Is(err, backend.ErrNotFound) {
		s.log.Warn("cannot remove a deleted backup's quota reservation; it ends by itself after a day", "backup_id", id, "error", err)
	}
	return s.idx.DeleteBackup(id)
}

// deleteStored removes what the repository holds of backup id for its delete: its manifest
// (after its tombstone, and with its log object), and with failure the record of its failure
// ("Failed backups in the repository"), which the catch-up would learn the backup from again.
func (s *Service) deleteStored(ctx context.Context, id string, failure bool) error {
	if err := s.repo.DeleteManifest(ctx, id); err != nil {
		return err
	}
	if failure {
		// A creating object its gateway did not get to remove goes first: without the
		// failure object, other gateways would show it as a backup being created.
		for _, kind := range []string{metaCreating, metaFailed} {
			if err := s.repo.DeleteMeta(ctx, kind, id); err != nil && !errors.Is(err, backend.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// describeBackup names a backup for a question: id, name, volume and time.
func (s *Service) describeBackup(b *index.Backup) string {
	d := b.ID
	if b.Name != "" {
		d += " (" + b.Name + ")"
	}
	vol := b.VolumeID
	if v, err := s.idx.Volume(b.VolumeID); err == nil {
		vol = v.Name
	}
	return d + " of volume " + vol + " from " + b.CreatedAt.UTC().Format(time.RFC3339)
}

// errNotCreating refuses cancelBackup's delete of a record that is no longer creating.
var errNotCreating = errors.New("not being created")

// cancelBackup stops a running backup and removes it (seed 3.3). Its record goes only if it
// still says creating, under manifestMu: the commit then either ran before (the record says
// available and its manifest is stored) or runs after, finds no record and stores no
// manifest. A backup that committed since DeleteBackup read it is deleted as a committed one,
// with that delete's checks: the manifest goes too, or the delete is refused.
func (s *Service) cancelBackup(ctx context.Context, c Caller, b *index.Backup, force bool) (*index.Backup, error) {
	err := s.stopCreating(b.ID)
	if errors.Is(err, errNotCreating) {
		return s.deleteFinished(ctx, c, b.ID, force)
	}
	if err != nil {
		return nil, err
	}
	s.jobs.logf("backup/"+b.ID, "cancelled by %s (force delete)", c.User)
	s.log.Info("backup cancelled", "backup_id", b.ID, "volume_id", b.VolumeID)
	return b, nil
}

// stopCreating removes backup id's record while it still says creating, under manifestMu,
// and stops its job: the commit then either ran before (errNotCreating: the record says
// available or error) or runs after, finds no record and stores no manifest. The one owner of
// a cancel, whether asked here or through another gateway (cancelOnRequest).
func (s *Service) stopCreating(id string) error {
	s.manifestMu.Lock()
	err := s.idx.DeleteBackupIf(id, func(rec *index.Backup) error {
		if rec.Status != index.BackupCreating {
			return errNotCreating
		}
		return nil
	})
	s.manifestMu.Unlock()
	if err != nil {
		return err
	}
	s.mu.Lock()
	cancel := s.cancelOf(id)
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	return nil
}

// deleteFinished deletes, for a force delete that found it no longer creating, a backup that
// finished while the delete was asked for.
func (s *Service) deleteFinished(ctx context.Context, c Caller, id string, force bool) (*index.Backup, error) {
	b, err := s.idx.Backup(id)
	if err != nil {
		return nil, err
	}
	if err := s.mayDelete(ctx, c, b, force); err != nil {
		return nil, fmt.Errorf("backup %s finished (%s) before it could be cancelled, and cannot be deleted: %w", id, b.Status, err)
	}
	if err := s.deleteCommitted(ctx, b, force); err != nil {
		return nil, fmt.Errorf("backup %s finished (%s) before it could be cancelled, and cannot be deleted: %w", id, b.Status, err)
	}
	return b, nil
}

// datedAfterEarlier returns at, or just after the newest backup of the volume when that one
// is dated at or after it: this host's clock went back (or the earlier backup's host's clock
// ran ahead). Retention orders a volume's backups by date; dated by the clock alone, the
// newest backup would sort as older than the one before it and 'prune --keep-last 1' would
// remove the newest data [TestABackupIsDatedAfterTheVolumesEarlierBackups].
func (s *Service) datedAfterEarlier(volumeID string, at time.Time) (time.Time, error) {
	all, err := s.idx.VolumeBackups(volumeID)
	if err != nil {
		return at, err
	}
	latest := time.Time{}
	for _, b := range all {
		if b.CreatedAt.After(latest) {
			latest = b.CreatedAt
		}
	}
	if latest.Before(at) {
		return at, nil
	}
	s.log.Warn("the clock is behind the date of the volume's latest backup: the new backup is dated just after it",
		"volume_id", volumeID, "clock", at, "latest_backup", latest)
	return latest.Add(time.Microsecond), nil
}

// dependants returns the ids of the backups that depend on backup id as their parent
// (dependsOnParent): a delete and a prune leave id while there are any.
func (s *Service) dependants(id string) ([]string, error) {
	all, err := s.idx.Backups()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, b := range all {
		if b.ParentID == id && dependsOnParent(b) {
			out = append(out, b.ID)
		}
	}
	sort.Strings(out)
	return out, nil
}

// meteredSource reads a volume at most at its meter's rate (--limit-read), shared by every
// backup of the service, so backups leave the storage room for the volumes' own I/O. Bytes
// are charged before they are read; a cancelled backup stops waiting.
type meteredSource struct {
	repo.Source
	ctx context.Context
	m   *limit.Meter
}

func (s *meteredSource) ReadAt(p []byte, off int64) (int, error) {
	if err := s.m.Charge(s.ctx, int64(len(p))); err != nil {
		return 0, err
	}
	return s.Source.ReadAt(p, off)
}

// BackupOrder compares backups by each key a list sorts by: the Block Storage API's sort keys
// (cinderclient sends name as display_name, and data_timestamp for backups), which the CLI's
// backup list --sort takes too.
var BackupOrder = map[string]func(a, b *index.Backup) int{
	"id":             func(a, b *index.Backup) int { return strings.Compare(a.ID, b.ID) },
	"name":           func(a, b *index.Backup) int { return strings.Compare(a.Name, b.Name) },
	"display_name":   func(a, b *index.Backup) int { return strings.Compare(a.Name, b.Name) },
	"status":         func(a, b *index.Backup) int { return strings.Compare(string(a.Status), string(b.Status)) },
	"size":           func(a, b *index.Backup) int { return cmp.Compare(a.Size, b.Size) },
	"volume_id":      func(a, b *index.Backup) int { return strings.Compare(a.VolumeID, b.VolumeID) },
	"created_at":     func(a, b *index.Backup) int { return a.CreatedAt.Compare(b.CreatedAt) },
	"data_timestamp": func(a, b *index.Backup) int { return a.CreatedAt.Compare(b.CreatedAt) },
	"updated_at":     func(a, b *index.Backup) int { return a.UpdatedAt.Compare(b.UpdatedAt) },
	"object_count":   func(a, b *index.Backup) int { return cmp.Compare(a.ObjectCount(), b.ObjectCount()) },
	// One zone: every backup ties.
	"availability_zone": func(a, b *index.Backup) int { return 0 },
}
