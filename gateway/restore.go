package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/units"
)

// RestoreRequest restores a backup (seed 3.5.1) to a new volume (the default), onto a
// registered volume (Volume), or onto a block device or file path (To).
type RestoreRequest struct {
	Backup   string
	Volume   string
	To       string
	Name     string
	Progress func(done, total int64)
	// Salvage writes what survives of a damaged backup, zeros for what does not, and lists
	// the lost ranges (RestoreResult.Lost) instead of failing.
	Salvage bool
}

// RestoreResult says where a backup was restored.
type RestoreResult struct {
	BackupID   string `json:"backup_id"`
	VolumeID   string `json:"volume_id,omitempty"`
	VolumeName string `json:"volume_name,omitempty"`
	Path       string `json:"path"`
	Size       int64  `json:"size"`
	// Lost are the byte ranges a salvage wrote as zeros (known when the restore has run).
	Lost      [][2]int64 `json:"lost,omitempty"`
	LostBytes int64      `json:"lost_bytes,omitempty"`
}

// addLost records a lost range, merging it with an adjacent one.
func (r *RestoreResult) addLost(start, end int64) { addRange(&r.Lost, &r.LostBytes, start, end) }

// addRange adds [start, end) to sorted ranges and its length to total, merging it with an
// adjacent range.
func addRange(ranges *[][2]int64, total *int64, start, end int64) {
	*total += end - start
	for i, x := range *ranges {
		if x[1] == start {
			(*ranges)[i][1] = end
			return
		}
		if x[0] == end {
			(*ranges)[i][0] = start
			return
		}
	}
	*ranges = append(*ranges, [2]int64{start, end})
	sort.Slice(*ranges, func(i, j int) bool { return (*ranges)[i][0] < (*ranges)[j][0] })
}

// manifestOf reads backup b's manifest, for a restore or a verification. Sizes and block maps
// come from the authenticated manifest; an index that says otherwise is out of date or
// damaged, and nothing is read or written by it.
func (s *Service) manifestOf(ctx context.Context, b *index.Backup) (*repo.Manifest, error) {
	m, err := s.repo.GetManifest(ctx, b.ID)
	if errors.Is(err, backend.ErrNotFound) {
		if _, lerr := s.lostManifest(ctx, b.ID); lerr != nil {
			return nil, lerr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", b.ID, err)
	}
	if m.Size != b.Size || m.Root != b.Root || m.RootLevel != b.RootLevel {
		return nil, fmt.Errorf("backup %s: %w: its manifest (%d bytes) and the index (%d bytes) describe different backups: run 'cairn repo check'", b.ID, repo.ErrCorrupt, m.Size, b.Size)
	}
	return m, nil
}

// StartRestore checks the request, claims backup and target and returns the job that writes.
func (s *Service) StartRestore(ctx context.Context, req RestoreRequest) (*RestoreResult, Job, error) {
	b, err := s.backupHere(ctx, req.Backup)
	if err != nil {
		return nil, nil, err
	}
	c, _ := CallerFrom(ctx) // backupHere asked for one
	if b.Status != index.BackupAvailable {
		return nil, nil, wrapf(ErrConflict, "backup %s is %s: only an available backup can be restored", b.ID, b.Status)
	}
	if req.Volume != "" && req.To != "" {
		return nil, nil, invalidf("give --volume or --to, not both")
	}
	m, err := s.manifestOf(ctx, b)
	if err != nil {
		return nil, nil, err
	}
	var vol *index.Volume
	path := req.To
	switch {
	case req.Volume != "":
		if vol, err = s.findVolume(ctx, req.Volume); err != nil {
			return nil, nil, err
		}
		if vol.Kind == KindNBD {
			return nil, nil, invalidf("volume %s is an NBD export, which cairn reads but does not write: restore --to a file or device, or to a new volume", vol.Name)
		}
		if err := stillTheDevice(vol); err != nil {
			return nil, nil, err
		}
		path = vol.Path
	case req.To != "":
		if path, err = absPath(ctx, req.To); err != nil {
			return nil, nil, invalidf("--to %q: %v", req.To, err)
		}
		if vol, err = s.volumeAt(path); err != nil {
			return nil, nil, err
		}
		if vol == nil && s.insideRepository(path) {
			return nil, nil, invalidf("restore target %s is inside the repository or its state directory, whose files are what backups are stored in: give a path outside it, or a registered volume", path)
		}
	}
	if vol != nil && cmp.Or(vol.Project, DefaultProject) != cmp.Or(b.Project, DefaultProject) {
		// Only an admin sees both. The job, the volume's restoring state and the backup's
		// last restore would show each project the other's (its volume's name and path, or a
		// restore of its volume it cannot see), so the two are not mixed.
		return nil, nil, invalidf("backup %s is project %s's and volume %s is project %s's: restore it to a volume of project %s, to a new volume (without --volume), or --to a path that is no volume",
			b.ID, cmp.Or(b.Project, DefaultProject), vol.Name, cmp.Or(vol.Project, DefaultProject), cmp.Or(b.Project, DefaultProject))
	}
	created := false // the restore creates the file at path: a failed restore removes it
	accepted := false
	releaseTarget := func() {} // ends the claim on path (claimTarget), once the job has ended
	releaseRoom := func() {}   // gives back the room taken for an image cairn made (roomForImage), likewise
	defer func() {
		if !accepted {
			releaseRoom()
		}
	}()
	data := min(b.Stats.DataBlocks*int64(s.repo.Config().BlockSize), b.Size) // what a restore allocates
	if path != "" {
		what := "restore target " + path
		if vol != nil {
			what = "volume " + vol.Name
		}
		if err := checkRestoreTarget(path, what, b.Size); err != nil {
			return nil, nil, err
		}
		if err := s.overlapsBusyVolume(c, path, what, vol); err != nil {
			return nil, nil, err
		}
		if vol != nil && vol.Managed && vol.Kind == KindFile {
			// A volume cairn made is a sparse image beside the index, as large as its creator
			// asked (a member's too, 1 PiB if it likes), and the restore fills it: it takes its
			// room as a restore to a new volume does, unless the image is allocated whole (the
			// restore writes over it in place and allocates nothing; it was refused on a disk
			// with less free than its data [TestRestoreOntoAVolumeThatCannotFitIsRefused]). An
			// image allocated in part is counted as empty: where the backup's data lands on its
			// holes is not known here, and the restore allocates before it punches.
			need := data
			if fi, err := os.Stat(path); err == nil {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Blocks*512 >= fi.Size() {
					need = 0
				}
			}
			room, err := s.roomForImage(c, filepath.Dir(path), fmt.Sprintf("restoring %s of data onto volume %s", units.Bytes(data), vol.Name),
				c.shown("or restore --to a device or a file on another file system", "or ask an admin for room"), need)
			if err != nil {
				return nil, nil, err
			}
			releaseRoom = room
		}
		_, serr := os.Stat(path)
		created = vol == nil && errors.Is(serr, os.ErrNotExist)
		if q := overwriteQuestion(b, vol, path); q != "" && !created {
			if err := confirm(ctx, q); err != nil {
				return nil, nil, err
			}
		}
		release, err := s.claimTarget(c.shown("restore target "+path, what), path, b.ID)
		if err != nil {
			return nil, nil, err
		}
		defer func() {
			if !accepted {
				release()
			}
		}()
		releaseTarget = release
	}
	fresh, newVol := false, false // newVol: the volume is new, made for this restore
	var was index.Volume          // an existing volume's status and reason before the claim
	if vol == nil && path == "" {
		name := req.Name
		if name == "" {
			name = s.freeName(b.Project, "restore-"+b.ID[:8])
		}
		if err := validName(name); err != nil {
			return nil, nil, err
		}
		if err := os.MkdirAll(s.volDir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("volume directory: %w", err)
		}
		room, err := s.roomForImage(c, s.volDir, fmt.Sprintf("a new volume of %s holding %s of data", units.Bytes(b.Size), units.Bytes(data)),
			"or restore onto an existing volume (--volume) or a device (--to)", data)
		if err != nil {
			return nil, nil, err
		}
		releaseRoom = room
		if vol, err = s.newImageVolume(ctx, b.Project, name, "restored from backup "+b.ID, b.Size, index.VolumeRestoringBackup); err != nil {
			return nil, nil, err
		}
		path, fresh, newVol = vol.Path, true, true
	} else if vol != nil {
		if _, err := s.idx.UpdateVolume(vol.ID, func(v *index.Volume) error {
			if v.Status != index.VolumeAvailable && v.Status != index.VolumeError {
				return wrapf(ErrConflict, "volume %s is %s: wait for it to finish", v.Name, v.Status)
			}
			was.Status, was.FailReason = v.Status, v.FailReason
			v.Status, v.FailReason = index.VolumeRestoringBackup, ""
			return nil
		}); err != nil {
			return nil, nil, err
		}
	}
	running := &index.RestoreOutcome{Target: path, Result: repo.RestoreRunning, At: now()} // this restore's, until it ends
	if _, err := s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
		if rec.Status != index.BackupAvailable {
			return wrapf(ErrConflict, "backup %s is %s", rec.ID, rec.Status)
		}
		rec.Status = index.BackupRestoring
		if vol != nil {
			rec.RestoreTarget = vol.ID
		}
		rec.LastRestore = running
		return nil
	}); err != nil {
		// Nothing was written: the volume goes back to what it was, and one made for this
		// restore goes. Before, either was set available: a volume an unfinished restore had
		// marked error, or a new one of zeros, read as intact
		// [TestRestoreThatLosesItsBackupLeavesTheVolumeAsItWas,
		// TestRestoresToNewVolumesThatLoseTheBackupLeaveNoVolume].
		switch {
		case newVol:
			s.dropNewVolume(ctx, vol, "restore did not start: "+err.Error())
		case vol != nil:
			s.setVolumeStatus(vol.ID, was.Status, was.FailReason)
		}
		return nil, nil, err
	}
	if vol != nil && !newVol {
		// The repository's record says so too (saveVolume stores restoring-backup as the error
		// recovery makes of it), until the restore ends: an index lost meanwhile, or another
		// gateway, never shows the half-written volume as available
		// [TestLostIndexKeepsAVolumeARestoreWasWritingError].
		s.saveVolumeLogged(ctx, vol.ID)
	}
	res := &RestoreResult{BackupID: b.ID, Path: path, Size: b.Size}
	if vol != nil {
		res.VolumeID, res.VolumeName = vol.ID, vol.Name
	}
	// Shown by every gateway on the repository until it ends ("Backups being created, on
	// every gateway").
	shared := &restoringObject{BackupID: b.ID, VolumeID: res.VolumeID, Target: cmp.Or(res.VolumeName, path), Host: hostName(), Gateway: s.gatewayName(), At: running.At, Process: s.process()}
	s.storeRestoring(ctx, shared)
	// A job of hours waits out a store's restart or failover rather than fail of it.
	jobCtx, cancel := context.WithCancel(backend.Patient(context.WithoutCancel(ctx)))
	untrack := s.track(jobCtx, "restore/"+b.ID, cancel)
	jobID := "restore/" + b.ID
	info := JobInfo{ID: jobID, Kind: "restore", Subject: b.ID, Project: b.Project, VolumeID: b.VolumeID, Target: path, Total: b.Size}
	if vol != nil {
		info.Target = vol.Name
	}
	if src, err := s.idx.Volume(b.VolumeID); err == nil {
		info.VolumeName = src.Name
	}
	s.jobs.add(info)
	s.jobs.logf(jobID, "accepted: restore of backup %s (%s) to %s", b.ID, units.Bytes(b.Size), info.Target)
	req.Progress = s.jobProgress(jobID, req.Progress)
	job := func(ctx context.Context) error {
		defer releaseTarget()
		defer releaseRoom()
		defer cancel()
		defer untrack()
		stop := context.AfterFunc(ctx, cancel)
		defer stop()
		var made bool // the job created the file at path (created): only then is it its to remove
		kept := make(chan struct{})
		keepCtx, stopKeeping := context.WithCancel(jobCtx)
		// A reset-state through another gateway while the restore was queued stops it here.
		s.lookForRestoreCancel(jobCtx, shared, cancel)
		go func() { defer close(kept); s.keepRestoring(keepCtx, shared, cancel) }()
		err := s.runRestore(jobCtx, b, m, vol, path, running.At, created, &made, fresh, req.Progress, req.Salvage, res)
		stopKeeping()
		<-kept
		s.removeRestoring(b.ID) // after runRestore stored its end
		if err != nil && made {
			if rerr := os.Remove(path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				s.log.Error("cannot remove the failed restore's file", "path", path, "error", rerr)
			}
		}
		return err
	}
	accepted = true
	return res, job, nil
}

// stillTheDevice refuses a restore by name onto a device volume whose path names another
// device than the one it was registered as (its identity, blockio.Identify): /dev/sdb after a
// disk swap or a renumbering, a link that leads elsewhere now. Backups bring the record up to
// date; a restore must not overwrite whatever disk took the name
// [TestRestoreByVolumeRefusesAnotherDeviceAtItsPath]. Image files are left to their path: a
// copy put in place of one is still the admin's file of that volume.
func stillTheDevice(v *index.Volume) error {
	if v.Identity == "" || strings.HasPrefix(v.Identity, "file:") {
		return nil // no identity recorded (an old record), or an image file
	}
	id, err := blockio.Identify(v.Path)
	if err != nil {
		return fmt.Errorf("volume %s: %w", v.Name, err)
	}
	if id != v.Identity {
		return wrapf(ErrConflict, "volume %s: %s now names another device (%s, registered as %s): check which disk is there; to write to it anyway, restore --to %s",
			v.Name, v.Path, id, v.Identity, v.Path)
	}
	return nil
}

// claimTarget claims path for the restore of backup id until release is called: a second
// restore onto the same file or device (by any of its names), or onto a device that shares
// blocks with it (overlapKeys: a partition of the disk, the disk of the partition), while one
// is accepted and has not ended is refused. Two at once interleaved their writes, and the
// target held one backup or a mix of both while both reported success
// [TestSecondRestoreOntoTheSameFileWaitsForTheFirst].
// Registered volumes are claimed by their status as well; this covers the other targets.
// what names the target in the error.
func (s *Service) claimTarget(what, path, id string) (release func(), err error) {
	keys := targetKeys(path)
	overlap, err := overlapKeys(path)
	if err != nil {
		return nil, fmt.Errorf("restore target %s: %w", path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if other := s.restorerOf(append(keys, overlap...)); other != "" {
		return nil, wrapf(ErrInUse, "%s is being written by the restore of backup %s: wait for it to end", what, other)
	}
	for _, k := range keys {
		s.restoring[k] = id
	}
	return func() {
		s.mu.Lock()
		for _, k := range keys {
			delete(s.restoring, k)
		}
		s.mu.Unlock()
	}, nil
}

// restoringOnto returns the backup id of a restore accepted onto path, or onto a device that
// shares blocks with the one at path (overlapKeys), and not ended; or "".
func (s *Service) restoringOnto(path string) (string, error) {
	overlap, err := overlapKeys(path)
	if err != nil {
		return "", err
	}
	keys := append(targetKeys(path), overlap...)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restorerOf(keys), nil
}

// restorerOf returns the backup id of the restore that claimed any of keys, or "". Called
// with s.mu held.
func (s *Service) restorerOf(keys []string) string {
	for _, k := range keys {
		if id, ok := s.restoring[k]; ok {
			return id
		}
	}
	return ""
}

// targetKeys names the target at path: by the path itself (a file the restore is yet to
// make), and by what is there whatever name reaches it (device and inode, or device number).
func targetKeys(path string) []string {
	keys := []string{"path:" + filepath.Clean(path)}
	if fi, err := os.Stat(path); err == nil {
		if k := whatIsThere(fi); k != "" {
			keys = append(keys, k)
		}
	}
	return keys
}

// overlapKeys names, as whatIsThere does, the block devices that share blocks with the one at
// path (blockio.Overlapping): the disk a partition is on, a disk's partitions, the devices
// stacked on it or under it; none for a file. A restore onto one of them writes what a backup
// of path reads, and the reverse. Before, only the device itself was looked at: a restore onto
// a disk overwrote a partition of it that a backup was reading, and the backup was committed
// with a mix of old and restored blocks [TestRestoreOverlappingAVolumeBeingBackedUpIsRefused].
func overlapKeys(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode()&(os.ModeDevice|os.ModeCharDevice) != os.ModeDevice {
		return nil, nil // a file, or a new one
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, nil
	}
	devs, err := blockio.Overlapping(uint64(st.Rdev))
	if err != nil {
		return nil, fmt.Errorf("devices that share blocks with %s: %w", path, err)
	}
	keys := make([]string, len(devs))
	for i, d := range devs {
		keys[i] = rdevKey(d)
	}
	return keys, nil
}

// overlapsBusyVolume refuses a restore onto the block device at path while a registered
// volume other than vol (the restore's own) whose device shares blocks with it (overlapKeys:
// a partition of it, the disk it is a partition of) has a job on it: the restore would write
// under its backup. what names the target, as in checkRestoreTarget. Asked when the restore
// is accepted and again when its job runs.
func (s *Service) overlapsBusyVolume(c Caller, path, what string, vol *index.Volume) error {
	keys, err := overlapKeys(path)
	if err != nil || len(keys) == 0 {
		return err
	}
	all, err := s.idx.Volumes()
	if err != nil {
		return err
	}
	for _, v := range all {
		if v.Kind == KindNBD || !v.Status.Busy() || vol != nil && v.ID == vol.ID {
			continue
		}
		if fi, err := os.Stat(v.Path); err == nil && slices.Contains(keys, whatIsThere(fi)) {
			if !c.sees(v.Project) {
				// Another project's volume: neither its name nor its path, nor what it does.
				return wrapf(ErrConflict, "%s shares blocks with a device that is busy: wait a while, then restore again", what)
			}
			return wrapf(ErrConflict, "%s overlaps volume %s%s, which is %s: wait for it to finish, then restore again",
				what, v.Name, c.shown(" ("+v.Path+")", ""), v.Status)
		}
	}
	return nil
}

// rdevKey names a block device by its device number: whatIsThere's and overlapKeys' keys must
// match for an overlap to be seen.
func rdevKey(rdev uint64) string { return fmt.Sprintf("rdev:%d", rdev) }

// whatIsThere names the file or device fi describes, whatever name reached it: a block
// device by its device number (two nodes of one device are one), anything else by its file
// system and inode; "" when it cannot be told.
func whatIsThere(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !ok:
		return "" // no stat of a Unix system: nothing to name it by
	case fi.Mode()&(os.ModeDevice|os.ModeCharDevice) == os.ModeDevice:
		return rdevKey(uint64(st.Rdev))
	default:
		return fmt.Sprintf("file:%d:%d", st.Dev, st.Ino)
	}
}

// insideRepository says whether path (or, through symbolic links, the file it names) lies in
// the local repository's directory or in the state directory (packs, index), other than
// directly in the volume directory, where the images of volumes cairn created are. A restore
// --to a pack overwrote it, and with it every backup that had blocks in it. Directories are
// compared as files, so another name of one (a link, a bind mount) is found.
func (s *Service) insideRepository(path string) bool {
	var roots []os.FileInfo
	dirs := []string{s.cfg.stateDir()}
	if !s.cfg.remote() {
		dirs = append(dirs, s.Location())
	}
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil {
			roots = append(roots, fi)
		}
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	if fi, err := os.Stat(filepath.Dir(path)); err == nil {
		if vd, err := os.Stat(s.volDir); err == nil && os.SameFile(fi, vd) {
			return false
		}
	}
	for d := filepath.Dir(path); ; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && slices.ContainsFunc(roots, func(r os.FileInfo) bool { return os.SameFile(fi, r) }) {
			return true
		}
		if d == filepath.Dir(d) {
			return false
		}
	}
}

// volumeAt returns the registered volume that path names, or nil: the one registered at path,
// or one registered under another name of the same file or device (a symbolic link, as
// /dev/disk/by-id/ links are, or a hard link). Through another name a restore left the
// volume unclaimed, so a backup of it could read it half restored
// [TestRestoreToAnotherNameOfAVolumeClaimsIt].
func (s *Service) volumeAt(path string) (*index.Volume, error) {
	// A device volume whose path names another device now is not the one there
	// (stillTheDevice): --to that path writes to the device, claiming no volume.
	// More than one volume there (learned from gateways that each managed the path, "Volumes
	// of one name or path" in docs/design.md) is refused: a restore claims one volume, and
	// a backup of the other could read the target half restored.
	ambiguous := func(vs []*index.Volume) error {
		return invalidf("%d volumes are registered at %s (%s): restore onto one of them by its id (--volume), or unmanage the others", len(vs), path, volumeIDs(vs))
	}
	vs, err := s.idx.VolumesByPath(path)
	if err != nil {
		return nil, err
	}
	vs = slices.DeleteFunc(vs, func(v *index.Volume) bool { return stillTheDevice(v) != nil })
	if len(vs) > 1 {
		return nil, ambiguous(vs)
	} else if len(vs) == 1 {
		return vs[0], nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil // a new file: no volume's
	}
	here := whatIsThere(fi)
	if here == "" {
		return nil, nil
	}
	all, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	var there []*index.Volume
	for _, v := range all {
		if v.Kind == KindNBD {
			continue
		}
		if vfi, err := os.Stat(v.Path); err == nil && whatIsThere(vfi) == here && stillTheDevice(v) == nil {
			there = append(there, v)
		}
	}
	switch len(there) {
	case 0:
		return nil, nil
	case 1:
		return there[0], nil
	}
	return nil, ambiguous(there)
}

// dropNewVolume removes a volume this gateway has just registered or made and whose start
// failed (its record could not be stored, or the restore it was made for did not start): its
// record, here and in the repository, its change-tracking base, and its image when cairn made
// it (it holds nothing yet). A volume whose record cannot be removed from both stays, marked
// error with reason, and keeps its image: dropped here only, it came back from its stored
// record at rebuild-index and on every other gateway, its image gone
// [TestVolumeWhoseStartFailedStaysWhenItsRecordCannotBeDeleted].
func (s *Service) dropNewVolume(ctx context.Context, v *index.Volume, reason string) {
	s.volumeRecMu.Lock()
	defer s.volumeRecMu.Unlock()
	if err := s.idx.DeleteVolume(v.ID); err != nil {
		s.log.Error("cannot remove a volume whose start failed", "volume_id", v.ID, "error", err)
		if s.markVolume(v.ID, index.VolumeError, reason) {
			s.saveVolumeHeld(ctx, v.ID, false) // setVolumeStatus, under the lock held here
		}
		return
	}
	if err := s.repo.DeleteMeta(context.WithoutCancel(ctx), metaVolumes, v.ID); err != nil && !errors.Is(err, backend.ErrNotFound) {
		// The record stays, so the volume does too (as forgetVolume keeps one).
		s.log.Error("cannot remove the record of a volume whose start failed", "volume_id", v.ID, "error", err)
		kept := *v
		kept.Status, kept.FailReason = index.VolumeError, reason
		if rerr := s.idx.LearnVolume(&kept); rerr != nil { // the repository records it
			s.log.Error("cannot keep the record of a volume whose delete failed", "volume_id", v.ID, "error", rerr)
		}
		s.saveVolumeHeld(ctx, v.ID, false)
		return
	}
	if v.TrackChanges {
		if err := blockio.RemoveBaseStore(v.Path, v.ID); err != nil {
			s.log.Warn("cannot remove the volume's change-tracking base", "volume_id", v.ID, "error", err)
		}
	}
	if !v.Managed {
		return // the admin's device or file
	}
	if err := os.Remove(v.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("cannot remove the image of a volume whose start failed", "path", v.Path, "error", err)
	}
}

// overwriteQuestion says what a restore onto path destroys: a registered volume's contents, a
// block device's or a non-empty file's. A new or empty file loses nothing ("").
func overwriteQuestion(b *index.Backup, vol *index.Volume, path string) string {
	what := "backup " + b.ID
	if b.Name != "" {
		what += " (" + b.Name + ")"
	}
	if vol != nil {
		return fmt.Sprintf("replace the contents of volume %s (%s) with %s", vol.Name, path, what)
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return ""
	case fi.Mode().IsRegular() && fi.Size() == 0:
		return ""
	case fi.Mode().IsRegular():
		return fmt.Sprintf("replace the contents of %s (%d bytes) with %s", path, fi.Size(), what)
	}
	return fmt.Sprintf("replace the contents of block device %s with %s", path, what)
}

// checkRestoreTarget refuses targets that are too small or in use; what names the target in
// errors ("volume NAME" for a registered volume: a Cinder user knows it by its name).
func checkRestoreTarget(path, what string, size int64) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		// A symbolic link to nothing: the restore would not make the file it leads to (the
		// link's name is taken), and said at its end that a file appeared meanwhile
		// [TestRestoreToADanglingLinkSaysSo].
		if dest, lerr := os.Readlink(path); lerr == nil {
			return invalidf("restore target %s is a symbolic link to %s, which does not exist: give that path, or create the file or device first", path, dest)
		}
		// A new file, in a directory that must exist.
		if _, err := os.Stat(filepath.Dir(path)); err != nil {
			return invalidf("restore target %s: directory %s does not exist", path, filepath.Dir(path))
		}
		return nil
	}
	if err != nil {
		return invalidf("restore target %s: %v", path, err)
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return invalidf("restore target %s is not a block device or regular file", path)
	}
	if reason, err := blockio.InUse(path); err != nil {
		return fmt.Errorf("restore target %s: %w", path, err)
	} else if reason != "" {
		return wrapf(ErrInUse, "%s is in use (%s): unmount or detach it first", what, reason)
	}
	if fi.Mode().IsRegular() {
		if fi.Size() < size {
			return tooSmall(what, fi.Size(), size)
		}
		return nil
	}
	// A device cannot grow: refuse it here, before anything is claimed or written.
	f, err := os.Open(path)
	if err != nil {
		return invalidf("restore target %s: %v", path, err)
	}
	devSize, err := blockio.DeviceSize(f)
	f.Close() // read-only
	if err != nil {
		return fmt.Errorf("restore target %s: %w", path, err)
	}
	if devSize < size {
		return tooSmall(what, devSize, size)
	}
	return nil
}

// tooSmall refuses a target of have bytes for a backup of need.
func tooSmall(what string, have, need int64) error {
	return wrapf(ErrInvalid, "%s is %s (%d bytes), smaller than the backup (%s, %d bytes): use a larger target or a new volume",
		what, units.Bytes(have), have, units.Bytes(need), need)
}

// runRestore writes backup b to path (to vol's, when vol is set). With create the file must be
// new, as it was when the restore was accepted: one that appeared since is neither taken over
// nor, when the restore fails, removed [TestRestoreLeavesAFileThatAppearedAfterItWasAccepted];
// *made says whether it created it.
func (s *Service) runRestore(ctx context.Context, b *index.Backup, m *repo.Manifest, vol *index.Volume, path string, started time.Time, create bool, made *bool, fresh bool, progress func(int64, int64), salvage bool, res *RestoreResult) (err error) {
	var lostMu sync.Mutex
	start := time.Now()
	defer func() {
		outcome := &index.RestoreOutcome{Target: path, Result: repo.RestoreSucceeded, At: now()}
		lostMu.Lock()
		if err == nil && res.LostBytes > 0 {
			outcome.Result = repo.RestoreSalvaged
			outcome.Reason = fmt.Sprintf("%d bytes in %d ranges could not be read and were written as zeros (first: %d-%d)",
				res.LostBytes, len(res.Lost), res.Lost[0][0], res.Lost[0][1])
		}
		lostMu.Unlock()
		if err != nil {
			outcome.Result, outcome.Kind, outcome.Reason = repo.RestoreFailed, failureKind(err), err.Error()
		}
		_, uerr := s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
			// Only while the record is still this restore's: one that reset-state cancelled
			// may end after another restore of the backup was accepted, and ending that one's
			// record made a command waiting for it take this end for its own
			// [TestRestoreEndedByResetStateLeavesTheNextRestoreRecord].
			if lr := rec.LastRestore; !lr.Running() || lr.Target != path || !lr.At.Equal(started) {
				return errRestoreSuperseded
			}
			if rec.Status == index.BackupRestoring {
				rec.Status = index.BackupAvailable
			}
			rec.RestoreTarget, rec.LastRestore = "", outcome
			return nil
		})
		s.syncIndex()
		if uerr == nil {
			s.recordRestore(ctx, b.ID, outcome)
		}
		if errors.Is(uerr, errRestoreSuperseded) {
			s.log.Warn("restore ended after another restore of its backup began; its outcome is in this log only",
				"backup_id", b.ID, "target", path, "result", outcome.Result, "reason", outcome.Reason)
		} else if uerr != nil && !errors.Is(uerr, index.ErrNotFound) {
			s.log.Error("cannot record restore end", "backup_id", b.ID, "error", uerr)
		}
		if vol != nil {
			if err != nil {
				s.setVolumeStatus(vol.ID, index.VolumeError, "restore incomplete: "+err.Error())
			} else {
				if _, uerr := s.idx.UpdateVolume(vol.ID, func(v *index.Volume) error {
					v.Status, v.FailReason = index.VolumeAvailable, ""
					if v.Kind == KindFile {
						v.Size = b.Size
					}
					return nil
				}); uerr != nil {
					s.log.Error("cannot record restore end", "volume_id", vol.ID, "error", uerr)
				}
			}
			s.saveVolumeLogged(ctx, vol.ID)
		}
		if err != nil {
			s.log.Error("restore failed", "backup_id", b.ID, "target", path, "error", err)
			err = fmt.Errorf("restore of backup %s to %s is incomplete: %w", b.ID, path, err)
		} else {
			s.metrics.bytesRest.Add(float64(b.Size))
			took := time.Since(start)
			s.jobs.logf("restore/"+b.ID, "restored %s to %s in %s, %s", units.Bytes(b.Size), path, units.Seconds(took), units.Rate(b.Size, took))
			s.log.Info("restore finished", "backup_id", b.ID, "target", path, "size", b.Size, "seconds", took.Seconds(),
				"mib_per_s", units.MiBPerSecond(b.Size, took))
		}
	}()
	if ctx.Err() != nil {
		// Cancelled while queued (reset-state through another gateway stops it so too): the
		// target is not opened, let alone changed.
		return wrapf(context.Canceled, "cancelled")
	}
	var t *blockio.Target
	if create {
		t, err = blockio.CreateTarget(path, b.Size)
		if errors.Is(err, fs.ErrExist) {
			return wrapf(ErrConflict, "restore target %s appeared after the restore was accepted: it is left as it is; restore again to overwrite it", path)
		}
		*made = err == nil
	} else {
		// Asked again when the job runs (later, when jobs queue): a file attached to a loop
		// device since the restore was accepted may be mounted, and OpenTarget's O_EXCL
		// guards only devices [TestRestoreRefusesATargetAttachedAfterItWasAccepted]; a
		// volume's path may name another device by then.
		if vol != nil {
			if err := stillTheDevice(vol); err != nil {
				return err
			}
		}
		if reason, ierr := blockio.InUse(path); ierr != nil && !errors.Is(ierr, fs.ErrNotExist) {
			return fmt.Errorf("restore target %s: %w", path, ierr)
		} else if reason != "" {
			return wrapf(ErrInUse, "restore target %s is in use (%s): unmount or detach it first", path, reason)
		}
		what := "restore target " + path
		if vol != nil {
			what = "volume " + vol.Name
		}
		c, cerr := callerOf(ctx)
		if cerr != nil {
			c = Caller{} // a member's view: nothing of another project
		}
		if err := s.overlapsBusyVolume(c, path, what, vol); err != nil {
			return err
		}
		t, err = blockio.OpenTarget(path, b.Size)
	}
	if err != nil {
		return err
	}
	fresh = fresh || t.Empty()
	// Each restore worker reads its leaf's blocks with ranged GETs: on S3 it takes as many
	// workers as requests in flight to keep the link busy.
	o := repo.RestoreOptions{Fresh: fresh, Progress: progress}
	if salvage {
		o.Lost = func(start, end int64, err error) {
			s.log.Warn("salvage: range lost", "backup_id", b.ID, "start", start, "end", end, "error", err)
			lostMu.Lock()
			res.addLost(start, end)
			lostMu.Unlock()
		}
	}
	if n := s.cfg.transfers(); n > 0 {
		o.Workers = max(n, 2*runtime.GOMAXPROCS(0))
	}
	err = s.repo.Restore(ctx, m, t, o)
	if err == nil {
		err = t.Sync()
	}
	if err == nil {
		// A file larger than the backup is cut to its size only now, with the backup written
		// and durable in it. Cut when opened, a restore that stopped before it wrote (its
		// backup deleted elsewhere, the repository's lock refused) took the file's tail and
		// wrote nothing, and the volume's record kept the old size
		// [TestRestoreThatCannotRunLeavesALargerFileWhole]. After it the file is the backup's
		// size, as the end above records in the volume's size.
		err = t.Trim()
	}
	if cerr := t.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, context.Canceled) {
		// Said in one word, and still a cancel: the record's kind, --wait's error and the
		// job's end say cancelled, not failed [TestCancelledRestoreIsRecordedAsCancelled].
		err = wrapf(context.Canceled, "cancelled")
	}
	return err
}

// errRestoreSuperseded: the backup's record belongs to a later restore.
var errRestoreSuperseded = errors.New("the backup's restore record is another restore's")

// Restore accepts a restore and runs it: to the end in the embedded CLI, on a worker in
// cairn serve.
func (s *Service) Restore(ctx context.Context, req RestoreRequest) (*RestoreResult, error) {
	res, job, err := s.StartRestore(ctx, req)
	if err != nil {
		return nil, err
	}
	return res, s.Submit(ctx, "restore", res.BackupID, job)
}

// failureKind classifies a job's failure for a caller that only sees its record.
func failureKind(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.Is(err, repo.ErrCorrupt):
		return "corrupt"
	case errors.Is(err, backend.ErrUnavailable):
		return "unavailable"
	}
	return "failed"
}

// BackupError is the error a backup that ended as b returned, rebuilt from its record for a
// command that waited for it (cairn serve's 'backup create --wait'), with the exit code the
// embedded command gives [TestBackupWaitFailureKeepsItsKind]; nil unless it failed.
func BackupError(b *index.Backup) error {
	if b.Status != index.BackupError {
		return nil
	}
	kind := failKindError(b.FailKind)
	if kind == nil {
		return fmt.Errorf("backup %s failed: %s", b.ID, b.FailReason)
	}
	return wrapf(kind, "backup %s failed: %s", b.ID, b.FailReason)
}

// failKindError is the error a recorded kind of failure (failureKind) stands for; nil for one
// with no exit code of its own.
func failKindError(kind string) error {
	switch kind {
	case "cancelled":
		return context.Canceled
	case "corrupt":
		return repo.ErrCorrupt
	case "unavailable":
		return backend.ErrUnavailable
	}
	return nil
}

// RestoreError is the error a restore that ended as o returned, rebuilt from its record for a
// command that waited for it; nil when it succeeded.
func RestoreError(backupID string, o *index.RestoreOutcome) error {
	if o.Running() {
		// The wait ended and the restore has not: reset-state set its backup available while
		// it was queued or ran (and cancelled it). Not a success: nothing may have been
		// written [TestWaitForARestoreResetWhileItRanIsNoSuccess].
		return wrapf(ErrConflict, "restore of backup %s to %s has not ended: the backup's state was reset while it was queued or ran, which cancels it: 'cairn backup show %s' tells how it ended", backupID, o.Target, backupID)
	}
	if o == nil || o.Result != repo.RestoreFailed {
		return nil
	}
	kind := failKindError(o.Kind)
	if kind == nil {
		return fmt.Errorf("restore of backup %s to %s failed: %s", backupID, o.Target, o.Reason)
	}
	return wrapf(kind, "restore of backup %s to %s failed: %s", backupID, o.Target, o.Reason)
}
