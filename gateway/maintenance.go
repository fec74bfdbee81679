package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/units"
)

// SyncBackups brings the backup records up to date with the manifests in the backend: a
// backup another gateway stored becomes known here (with its volume), and one whose manifest
// another gateway deleted is forgotten. The index's packs follow through repo.Sync, which
// runs after the listing of manifests, so every new manifest's packs are learned with it.
// This is the full catch-up: it lists every manifest. Between full ones, CatchUp follows the
// backup log instead.
func (s *Service) SyncBackups(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	look := time.Now()
	// Backups being created through other gateways: listed before the manifests and the
	// failures, so none is missed between its end and this listing ("Backups being created,
	// on every gateway").
	creating, err := s.listCreating(ctx, true)
	if err != nil {
		return err
	}
	stored := map[string]bool{}
	if err := s.repo.ListManifests(ctx, func(id string) error { stored[id] = true; return nil }); err != nil {
		return err
	}
	// Backups whose delete began elsewhere: a manifest still stored beside its tombstone is a
	// delete that did not finish (its deleter died mid-way and finishes it when it starts
	// again), so this gateway stops showing it now rather than after that
	// [TestCatchUpForgetsABackupWhoseDeleteBegan].
	deleting := map[string]bool{}
	if err := s.repo.ListDeleted(ctx, func(id string) error { deleting[id] = true; return nil }); err != nil {
		return err
	}
	if _, err := s.repo.Sync(ctx, false); err != nil {
		return err
	}
	// Copies a reader of another gateway (or of this one, before its index was rebuilt)
	// found damaged: backups here store those blocks again too (docs/design.md, "Marks in
	// the repository").
	if _, err := s.repo.LearnDamaged(ctx); err != nil {
		return err
	}
	all, err := s.idx.Backups()
	if err != nil {
		return err
	}
	changed := false
	known, forgotten := map[string]bool{}, map[string]bool{}
	for _, b := range all {
		known[b.ID] = true
		if b.ManifestInDoubt && b.Status == index.BackupError {
			ch, err := s.settleInDoubt(ctx, b.ID)
			if err != nil {
				s.log.Warn("failed backup whose manifest may be stored not settled", "backup_id", b.ID, "error", err)
			}
			changed = changed || ch
			continue
		}
		if committedRecord(b) && (!stored[b.ID] || deleting[b.ID]) {
			// Deleted through another gateway (only a committed backup's manifest goes away),
			// or its delete began there.
			if !deleting[b.ID] {
				if has, err := s.repo.HasManifest(ctx, b.ID); err != nil || has {
					continue
				}
				if s.keepsLost(ctx, b.ID) {
					continue
				}
			}
			gone, err := s.forget(b.ID)
			if err != nil {
				return err
			}
			if gone {
				forgotten[b.ID], changed = true, true
			}
		}
	}
	s.relink(ctx, all, forgotten)
	var unlocated []*repo.Manifest
	for id := range stored {
		if known[id] {
			continue
		}
		m, err := s.repo.GetManifest(ctx, id)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if err == nil {
			err = s.adopt(ctx, m)
		}
		if errors.As(err, new(*blockMapUnknown)) {
			unlocated = append(unlocated, m)
			continue
		}
		if err != nil {
			s.log.Warn("stored backup not adopted", "backup_id", id, "error", err)
			continue
		}
		changed = true
	}
	if s.adoptUnlocated(ctx, unlocated) {
		changed = true
	}
	if pending, err := s.idx.Meta(adoptLostKey); err == nil && pending != "" {
		n, err := s.adoptLost(ctx, stored)
		if err != nil {
			return err
		}
		learned, err := s.adoptLostRecords(ctx)
		if err != nil {
			return err
		}
		n += learned
		if err := s.idx.SetMeta(adoptLostKey, ""); err != nil {
			return err
		}
		changed = changed || n > 0
	}
	if err := s.syncQuotaLimits(ctx); err != nil {
		return err
	}
	volumes, err := s.listVolumeRecords(ctx) // one listing for both passes below
	if err != nil {
		return err
	}
	if vchanged, err := s.syncVolumes(ctx, look, volumes); err != nil {
		return err
	} else if vchanged {
		changed = true
	}
	if vchanged, err := s.followVolumes(ctx, volumes); err != nil {
		return err
	} else if vchanged {
		changed = true
	}
	if nchanged, err := s.syncVolumeSettings(ctx); err != nil {
		return err
	} else if nchanged {
		changed = true
	}
	if schanged, err := s.syncSnapshots(ctx, look); err != nil {
		return err
	} else if schanged {
		changed = true
	}
	s.syncRuns(ctx)
	if s.recordMended(ctx, all) {
		changed = true
	}
	fchanged, failed, err := s.syncFailures(ctx, all, stored)
	if err != nil {
		return err
	} else if fchanged {
		changed = true
	}
	for id := range failed {
		stored[id] = true
	}
	s.showCreating(ctx, creating, true, stored)
	s.lastFull, s.lastLook = look, look
	if changed {
		s.notifyChange()
	}
	return nil
}

// rescanEvery bounds how often SyncBackups reads every pack index object again for backups
// whose block maps the index does not locate. A variable for tests.
var rescanEvery = 10 * time.Minute

// adoptUnlocated adopts the stored backups whose block maps the index did not locate. A
// manifest is stored only after its packs' index objects, so the index misses them only when
// the sync's time window did: their writer's clock was more than repo.SyncMargin behind this
// index's cursor. A Rescan, at most every rescanEvery, reads every index object and learns
// them [TestCatchUpAdoptsTheBackupOfAWriterWhoseClockIsBehind]. It reports whether it
// adopted any.
func (s *Service) adoptUnlocated(ctx context.Context, ms []*repo.Manifest) bool {
	if len(ms) == 0 {
		return false
	}
	if time.Since(s.lastRescan) < rescanEvery {
		for _, m := range ms {
			s.log.Warn("stored backup not adopted yet: its blocks are not indexed (its writer's clock may be behind); the next rescan of the repository's pack index looks again",
				"backup_id", m.ID, "next_rescan", s.lastRescan.Add(rescanEvery))
		}
		return false
	}
	s.lastRescan = time.Now()
	st, err := s.repo.Rescan(ctx)
	if err != nil {
		s.log.Warn("rescan of the repository's pack index failed", "error", err)
		return false
	}
	s.log.Info("rescanned the repository's pack index for backups whose blocks were not indexed", "packs_learned", st.Packs, "backups", len(ms))
	adopted := false
	for _, m := range ms {
		if err := s.adopt(ctx, m); err != nil {
			s.log.Warn("stored backup not adopted", "backup_id", m.ID, "error", err)
			continue
		}
		adopted = true
	}
	return adopted
}

// fullCatchUpEvery bounds the time between full catch-ups: a change whose log object is
// missing (its writer crashed before writing it) is learned within it (docs/design.md,
// "Catch-up: the backup log"). A variable for tests.
var fullCatchUpEvery = time.Minute

// CatchUp is the heartbeat's catch-up with what other gateways on the repository stored and
// deleted: the full one (SyncBackups) when the last is fullCatchUpEvery old, else followLog,
// which costs what changed since the last look. It waits while the index's file system is
// under the reserve (roomForIndex): each catch-up writes to the index, where Badger dies of a
// SIGBUS on a full disk [TestCatchUpWaitsWhileTheIndexHasNoRoom].
func (s *Service) CatchUp(ctx context.Context) error {
	if err := s.roomForIndex(Caller{Admin: true}); err != nil { // for the log
		return err
	}
	s.syncMu.Lock()
	full := s.lastFull.IsZero() || time.Since(s.lastFull) >= fullCatchUpEvery
	s.syncMu.Unlock()
	if full {
		return s.SyncBackups(ctx)
	}
	return s.followLog(ctx)
}

// followLog examines each backup named by a log object written since the last look (less
// repo.SyncMargin) that it has not examined yet. What it does for one depends only on the
// backup's manifest, read now: the log says where to look, never what is there.
func (s *Service) followLog(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	look := time.Now()
	creating, err := s.listCreating(ctx, false) // shown below; forgotten only by a full catch-up
	if err != nil {
		return err
	}
	keys := map[string][]repo.LogEntry{} // new log objects by backup
	var order []string
	err = s.repo.ListLog(ctx, s.lastLook.Add(-repo.SyncMargin), func(e repo.LogEntry) error {
		if _, done := s.logSeen[e.Key]; done {
			return nil
		}
		if keys[e.BackupID] == nil {
			order = append(order, e.BackupID)
		}
		keys[e.BackupID] = append(keys[e.BackupID], e)
		return nil
	})
	if err != nil {
		return err
	}
	if _, err := s.repo.Sync(ctx, false); err != nil { // after the listing, as in SyncBackups
		return err
	}
	if s.logSeen == nil {
		s.logSeen = map[string]time.Time{}
	}
	changed, forgotten := false, map[string]bool{}
	examined := true // every backup the log named: the look may be saved
	for _, id := range order {
		ch, err := s.examine(ctx, id, forgotten)
		if err != nil {
			// Its keys stay unexamined: the next catch-up tries again.
			s.log.Warn("backup named by the backup log not examined", "backup_id", id, "error", err)
			examined = false
			continue
		}
		changed = changed || ch
		for _, e := range keys[id] {
			s.logSeen[e.Key] = e.Time
		}
	}
	if len(forgotten) > 0 {
		all, err := s.idx.Backups()
		if err != nil {
			return err
		}
		s.relink(ctx, all, forgotten)
	}
	// A key older than the next listing's start is never listed again.
	for k, t := range s.logSeen {
		if t.Before(look.Add(-repo.SyncMargin)) {
			delete(s.logSeen, k)
		}
	}
	// A restore that ended elsewhere since the listing of restores is shown ended from now on
	// (showCreating forgets it): its volume's record, stored before the end, is followed
	// first. Only then: the full catch-up follows the volumes otherwise.
	if s.restoresEnded(creating.restoring) {
		volumes, err := s.listVolumeRecords(ctx)
		if err != nil {
			return err
		}
		if vchanged, err := s.followVolumes(ctx, volumes); err != nil {
			return err
		} else if vchanged {
			changed = true
		}
	}
	s.showCreating(ctx, creating, false, nil)
	s.lastLook = look
	if examined {
		s.saveLook(look)
	}
	if changed {
		s.notifyChange()
	}
	return nil
}

// lastLookKey holds, in the index, when the last catch-up that read the backup log (or every
// known manifest) began, with nothing left unexamined: where the next open of the index reads
// the log from (RFC 3339).
const lastLookKey = "catch-up/last-look"

// saveLook records look as the index's last look (lastLookKey). A failure costs the next open
// a read of every known manifest, so it is logged, not returned.
func (s *Service) saveLook(look time.Time) {
	if err := s.idx.SetMeta(lastLookKey, look.UTC().Format(time.RFC3339Nano)); err != nil {
		s.log.Warn("cannot record the catch-up's position in the index (the next start reads every manifest)", "error", err)
	}
}

// catchUpSinceClosed learns the changes other gateways made, while this index was closed, to
// backups it knows (a reset to error, a damaged verification, protection, a name, copies): the
// full catch-up reads only the manifests it does not know, and its look is now, so the log
// written while the index was closed went unread, and such a change was learned only at a
// rebuild-index; the embedded CLI never read the log at all
// [TestAGatewayAwayLearnsWhatChangedElsewhere]. It reads the log from the index's last look;
// with none recorded, or one old enough that gc may have pruned the log since (repo.LogKeep
// less the margin), it reads every known committed backup's manifest instead.
func (s *Service) catchUpSinceClosed(ctx context.Context) error {
	at, err := s.idx.Meta(lastLookKey)
	if err != nil {
		return err
	}
	since, perr := time.Parse(time.RFC3339Nano, at)
	covered := at != "" && perr == nil && time.Since(since) < repo.LogKeep-repo.SyncMargin
	if !covered && at != "" && perr == nil {
		// Older than gc leaves log objects: the log still covers it if gc has not pruned past
		// it (its oldest object is older than the look, less the margin). A command run by
		// cron once a day read every manifest on every run otherwise.
		oldest, ok, err := s.repo.OldestLog(ctx)
		if err != nil {
			return err
		}
		covered = ok && !oldest.After(since.Add(-repo.SyncMargin))
	}
	if covered {
		var seen map[string]time.Time
		if raw, err := s.idx.Meta(logSeenKey); err == nil && raw != "" && json.Unmarshal([]byte(raw), &seen) != nil {
			seen = nil // read again, then: a key examined twice costs a read of its manifest
		}
		s.syncMu.Lock()
		s.lastLook, s.logSeen = since, seen
		s.syncMu.Unlock()
		return s.followLog(ctx)
	}
	return s.relearnKnown(ctx)
}

// logSeenKey holds, in the index, the backup log's keys examined within the margin before the
// last look (followLog's logSeen), saved when the service closes: the next open's read of the
// log skips them, as a running gateway's next catch-up does. Without them every embedded
// command examined again every backup changed in the 15 minutes before its look, a read of
// each one's manifest (the tests' suite took a third longer).
const logSeenKey = "catch-up/log-seen"

// saveLogSeen stores the examined log keys (logSeenKey). A failure costs the next open those
// reads again, so it is logged, not returned.
func (s *Service) saveLogSeen() {
	s.syncMu.Lock()
	b, err := json.Marshal(s.logSeen)
	s.syncMu.Unlock()
	if err == nil {
		err = s.idx.SetMeta(logSeenKey, string(b))
	}
	if err != nil {
		s.log.Debug("cannot record the backup log keys examined (the next start reads them again)", "error", err)
	}
}

// relearnKnown examines every backup the index knows as committed (or restoring), as followLog
// examines the ones the log names.
func (s *Service) relearnKnown(ctx context.Context) error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	look := time.Now()
	all, err := s.idx.Backups()
	if err != nil {
		return err
	}
	changed, examined, forgotten := false, true, map[string]bool{}
	for _, b := range all {
		if !committedRecord(b) && b.Status != index.BackupRestoring {
			continue
		}
		ch, err := s.examine(ctx, b.ID, forgotten)
		if err != nil {
			s.log.Warn("known backup not examined (the next start tries again)", "backup_id", b.ID, "error", err)
			examined = false
			continue
		}
		changed = changed || ch
	}
	if len(forgotten) > 0 {
		if all, err = s.idx.Backups(); err != nil {
			return err
		}
		s.relink(ctx, all, forgotten)
	}
	if examined {
		s.saveLook(look)
	}
	if changed {
		s.notifyChange()
	}
	return nil
}

// committedRecord says whether b is a committed backup as its record stands, the records a
// catch-up follows the manifests of: an available one, or one an admin reset to error.
func committedRecord(b *index.Backup) bool {
	return b.Status == index.BackupAvailable || resetToError(b)
}

// resetToError says whether b is a committed backup an admin reset to error (reset-state).
func resetToError(b *index.Backup) bool {
	return b.Status == index.BackupError && b.FailReason == resetReason
}

// examine brings backup id's record in line with its manifest: adopted when the manifest is
// there and the index does not know it, forgotten when it is gone and the record says
// available (and added to forgotten, for the caller to re-link its children), its name,
// description, metadata, protection and parent taken from it otherwise, also while this
// gateway restores it: the full catch-up reads no manifest it knows, so a key passed over
// then was a change lost for good [TestCatchUpDuringARestoreTakesTheChangesMadeElsewhere].
// The record is read before the manifest: this gateway writes a backup's record before its
// manifest and deletes its manifest before its record, so a record missing here with a
// manifest there is another gateway's backup, and an available one with the manifest gone
// was deleted.
func (s *Service) examine(ctx context.Context, id string, forgotten map[string]bool) (bool, error) {
	b, err := s.idx.Backup(id)
	known := err == nil
	if err != nil && !errors.Is(err, index.ErrNotFound) {
		return false, err
	}
	restoring := known && b.Status == index.BackupRestoring
	if known && !committedRecord(b) && !restoring {
		return false, nil // one being created or deleted here is this gateway's own
	}
	m, err := s.repo.GetManifest(ctx, id)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		if !known || restoring || s.keepsLost(ctx, id) {
			// One being restored here is forgotten by the full catch-up once its restore
			// ended; its key needs no second look.
			return false, nil
		}
		gone, err := s.forget(id)
		if err != nil {
			return false, err
		}
		if gone {
			forgotten[id] = true
		}
		return gone, nil
	case err != nil:
		return false, err
	case !known:
		return true, s.adopt(ctx, m)
	}
	return s.relearn(ctx, m)
}

// keepsLost reports whether the record of backup id, whose manifest is gone, stays because
// the manifest is lost, not deleted: gone without a delete, its copy left. The record stays
// (listed, counted in its project's quota, its restore refused with what repair does) until
// repair stores the manifest again (docs/design.md, "A manifest lost, its copy left").
func (s *Service) keepsLost(ctx context.Context, id string) bool {
	_, err := s.lostManifest(ctx, id)
	if err != nil {
		s.markLost(id, err)
	}
	return err != nil
}

// markLost notes that backup id's manifest is lost (why says how), for the overview.
func (s *Service) markLost(id string, why error) {
	if s.lost.note(id) {
		s.log.Warn("backup's manifest is lost: 'cairn repo repair' stores it again from its second copy", "backup_id", id, "error", why)
	}
}

// adoptLostKey marks an index whose first catch-up has not yet adopted the backups whose
// manifests are lost (a new index: Open sets it, adoptLost's caller clears it).
const adoptLostKey = "catch-up/adopt-lost"

// adoptLost records each backup whose manifest is lost and that the index does not know, from
// its intact second copy, and keeps it as lost (markLost): what a gateway that had its record
// keeps, so a new index hides no lost backup (docs/design.md, "A manifest lost, its copy
// left"). listed are the manifests the caller listed before: the copies are listed after. It
// returns how many it adopted.
func (s *Service) adoptLost(ctx context.Context, listed map[string]bool) (int, error) {
	n := 0
	err := s.repo.EachLostManifest(ctx, listed, func(id string, m *repo.Manifest, err error) error {
		if _, ierr := s.idx.Backup(id); ierr == nil {
			return nil // known: the catch-up keeps its record
		}
		if err != nil {
			s.log.Warn("backup's manifest is lost and its second copy is damaged: 'cairn repo repair --forget-damaged' forgets it", "backup_id", id, "error", err)
			return nil
		}
		if err := s.adopt(ctx, m); err != nil {
			s.log.Warn("backup whose manifest is lost not adopted from its second copy", "backup_id", id, "error", err)
			return nil
		}
		s.markLost(id, repo.ErrLostManifest) // the walk established it: no second look
		n++
		return nil
	})
	return n, err
}

// adoptLostRecords learns, into a new index, each volume and each project's quota limits whose
// record is missing while its second copy is left, from the copy, and notes it missing
// (missingRecord): what an index that read the record before the loss keeps (syncRecords,
// syncQuotaLimits), so an index made anew loses nothing an older one has (docs/design.md, "A
// metadata object lost, its copy left"). It returns how many it learned.
func (s *Service) adoptLostRecords(ctx context.Context) (int, error) {
	n := 0
	vols, err := s.repo.MissingMetaNames(ctx, metaVolumes)
	if err != nil {
		return n, err
	}
	for _, id := range vols {
		learned, err := s.learnLostVolume(ctx, id)
		if err != nil {
			return n, err
		}
		if learned {
			s.missingRecord(metaVolumes, id)
			n++
		}
	}
	projects, err := s.repo.MissingMetaNames(ctx, metaQuotas)
	if err != nil {
		return n, err
	}
	for _, project := range projects {
		var limits map[string]int64
		if err := s.repo.GetMetaCopy(ctx, metaQuotas, project, &limits); err != nil {
			s.log.Warn("quota whose record is missing not learned from its second copy", "project", project, "error", err)
			continue
		}
		s.limitsMu.Lock()
		have, err := s.idx.QuotaLimits(project)
		learn := err == nil && len(have) == 0 // known: the catch-up keeps them
		if learn {
			err = s.idx.SetQuotaLimits(project, limits)
		}
		s.limitsMu.Unlock()
		if err != nil {
			return n, err
		}
		if learn {
			s.missingRecord(metaQuotas, project)
			n++
		}
	}
	return n, nil
}

// learnLostVolume learns volume id from its record's second copy if the index lacks it (a
// known one the catch-up keeps), read under volumeRecMu as learnVolume reads the record.
func (s *Service) learnLostVolume(ctx context.Context, id string) (bool, error) {
	v, err := s.learnVolumeFrom(id, func() *index.Volume {
		var v index.Volume
		if err := s.repo.GetMetaCopy(ctx, metaVolumes, id, &v); err != nil || v.ID != id {
			if !errors.Is(err, backend.ErrNotFound) {
				s.log.Warn("volume whose record is missing not learned from its second copy", "volume_id", id, "error", err)
			}
			return nil
		}
		return &v
	})
	return v != nil, err
}

// missingRecord notes that the catch-up found the repository record id of kind missing while
// its second copy is left, and kept the index's: the overview names it while it stays missing.
func (s *Service) missingRecord(kind, id string) {
	if s.missing.note(kind + "/" + id) {
		s.log.Warn("repository record missing while its second copy is left (removed outside cairn?): kept in the index; 'cairn repo repair --restore-meta' stores it again", "kind", kind, "id", id)
	}
}

// missingRecords returns the records the catch-up kept as missing (kind/id) and that are still
// missing, with when it found each.
func (s *Service) missingRecords(ctx context.Context) map[string]time.Time {
	return s.missing.still(func(key string) bool {
		kind, id, _ := strings.Cut(key, "/")
		has, err := s.repo.HasMeta(ctx, kind, id)
		return err == nil && has
	})
}

// lostBackups returns the backups whose manifests a catch-up found lost and that are still
// missing, with when it found each; a manifest stored again ends it.
func (s *Service) lostBackups(ctx context.Context) map[string]time.Time {
	return s.lost.still(func(id string) bool {
		has, err := s.repo.HasManifest(ctx, id)
		return err == nil && has
	})
}

// missingSince holds what catch-ups found missing in the repository and kept (a backup whose
// manifest is lost, a record whose object is gone while its copy is left), each with when it
// was first found: the overview names each while it stays missing.
type missingSince struct {
	mu sync.Mutex
	at map[string]time.Time
}

// note records key as found missing now, unless it is already; it reports whether it is new.
func (m *missingSince) note(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.at[key]; ok {
		return false
	}
	if m.at == nil {
		m.at = map[string]time.Time{}
	}
	m.at[key] = now()
	return true
}

// still returns the keys still missing, with when each was found: stored says whether a key's
// object is stored again (one Stat for each key, none when there are none), which ends it.
func (m *missingSince) still(stored func(key string) bool) map[string]time.Time {
	m.mu.Lock()
	found := maps.Clone(m.at)
	m.mu.Unlock()
	for key := range found {
		if stored(key) {
			delete(found, key)
			m.mu.Lock()
			delete(m.at, key)
			m.mu.Unlock()
		}
	}
	return found
}

// settleInDoubt finishes the withdrawal of a failed backup's manifest that withdrawManifest
// could not complete: the backup was reported failed, and its delete's tombstone may be
// stored, so a manifest still there is deleted now (and other gateways that adopted it forget
// it at their next catch-up), never made available. Once the manifest is gone the doubt ends
// and the backup stays error. Only the mark decides, never an error status alone: an admin's
// reset-state to error keeps its manifest. It reports whether the record changed.
func (s *Service) settleInDoubt(ctx context.Context, id string) (bool, error) {
	s.manifestMu.Lock()
	defer s.manifestMu.Unlock()
	if err := s.repo.DeleteManifest(ctx, id); err != nil {
		return false, err
	}
	_, err := s.idx.UpdateBackup(id, func(rec *index.Backup) error {
		if !rec.ManifestInDoubt || rec.Status != index.BackupError {
			return errUnchanged // a delete, or an admin's reset-state, came first
		}
		endDoubt(rec)
		return nil
	})
	if errors.Is(err, errUnchanged) || errors.Is(err, index.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, nil
}

// takeManifest makes rec the available backup its manifest m says was committed.
func takeManifest(rec *index.Backup, m *repo.Manifest) {
	rec.Status, rec.Root, rec.RootLevel, rec.Stats, rec.Size = index.BackupAvailable, m.Root, m.RootLevel, m.Stats, m.Size
	rec.ReadMode, rec.ReadFallback = m.ReadMode, m.ReadFallback
}

// endDoubt clears rec's mark that its manifest may be stored, and the words that said so.
func endDoubt(rec *index.Backup) {
	if rec.ManifestInDoubt {
		rec.ManifestInDoubt = false
		rec.FailReason, _, _ = strings.Cut(rec.FailReason, "; "+errManifestInDoubt.Error())
	}
}

// relink takes the parent of each of all whose parent was forgotten from its manifest: a
// prune elsewhere re-links the backups after the ones it removed.
func (s *Service) relink(ctx context.Context, all []*index.Backup, forgotten map[string]bool) {
	for _, b := range all {
		if forgotten[b.ParentID] && !forgotten[b.ID] {
			if err := s.relearnChain(ctx, b.ID); err != nil {
				s.log.Warn("backup's parent after a prune elsewhere not learned", "backup_id", b.ID, "error", err)
			}
		}
	}
}

// volumeRecordGrace: a volume this gateway made this recently may have its record in the
// repository still on the way, so the catch-up does not take its absence for a forget
// elsewhere. A variable for tests.
var volumeRecordGrace = repo.SyncMargin

// recordSync is one kind of metadata record (meta/<kind>/<id>) that the full catch-up makes
// the index's like the repository's (syncRecords): its records in the index, read before the
// listing, each with whether it may be forgotten now; forget drops one whose repository record
// another gateway removed, if it still may go; learn adds one another gateway stored.
type recordSync struct {
	kind   string
	stored map[string]bool // the repository's records, when the caller listed them already
	local  map[string]bool // the index's records: id → may be forgotten now
	forget func(id string) (bool, error)
	learn  func(ctx context.Context, id string) (bool, error)
}

// syncRecords runs r: each record of the index that may go and has none in the repository (a
// listing, then a read of the record itself to confirm the absence) is forgotten; each
// repository record the index lacks is learned. It reports whether the index changed.
func (s *Service) syncRecords(ctx context.Context, r recordSync) (bool, error) {
	stored := r.stored
	if stored == nil {
		stored = map[string]bool{}
		if err := s.repo.ListMetaNames(ctx, r.kind, func(id string) error { stored[id] = true; return nil }); err != nil {
			return false, err
		}
	}
	changed := false
	for id, mayGo := range r.local {
		if stored[id] || !mayGo {
			continue
		}
		var rec json.RawMessage
		if err := s.repo.GetMeta(ctx, r.kind, id, &rec); !errors.Is(err, backend.ErrNotFound) {
			continue // there after all, or cannot tell
		}
		// Asked after the read: a removal of this cairn took the copy before the object, so a
		// copy left is a loss (or an older cairn's removal), and the index keeps the record
		// (docs/design.md, "A metadata object lost, its copy left").
		if left, err := s.repo.MetaCopyLeft(ctx, r.kind, id); err != nil || left {
			if left {
				s.missingRecord(r.kind, id)
			}
			continue
		}
		gone, err := r.forget(id)
		if err != nil {
			return changed, err
		}
		changed = changed || gone
	}
	for id := range stored {
		if _, known := r.local[id]; known {
			continue
		}
		learned, err := r.learn(ctx, id)
		if err != nil {
			return changed, err
		}
		changed = changed || learned
	}
	return changed, nil
}

// syncVolumes makes the index's volumes the repository's (syncRecords): it forgets the volumes
// whose records another gateway removed (unmanaged, or deleted with their backups kept), as the
// catch-up forgets backups deleted elsewhere, and learns the ones another gateway managed or
// created. Kept here, a forgotten volume's next write of its record (a backup of the volume, a
// policy run) stored it again, and the volume came back on every gateway and to every rebuilt
// index [TestVolumeForgottenOnOneGatewayIsForgottenOnAnother]; not learned, a volume managed
// elsewhere was missing here until a backup of it was
// [TestVolumeManagedOnOneGatewayIsListedOnAnother]. A volume made within volumeRecordGrace of
// the look, or busy here, is left for a later catch-up.
func (s *Service) syncVolumes(ctx context.Context, look time.Time, written map[string]time.Time) (bool, error) {
	vols, err := s.idx.Volumes()
	if err != nil {
		return false, err
	}
	local := map[string]bool{}
	names := map[string]string{}
	for _, v := range vols {
		local[v.ID] = !v.CreatedAt.After(look.Add(-volumeRecordGrace)) &&
			v.Status != index.VolumeBackingUp && v.Status != index.VolumeRestoringBackup && v.Status != index.VolumeCreating
		names[v.ID] = v.Name
	}
	stored := make(map[string]bool, len(written))
	for id := range written {
		stored[id] = true
	}
	return s.syncRecords(ctx, recordSync{kind: metaVolumes, stored: stored, local: local, learn: s.learnVolume,
		forget: func(id string) (bool, error) {
			// Claimed here since the look (a backup, a restore): left for a later catch-up.
			if err := s.idx.DeleteVolumeIf(id, notBusy); errors.Is(err, ErrConflict) {
				return false, nil
			} else if err != nil {
				return false, err
			}
			s.log.Info("volume forgotten elsewhere forgotten", "volume_id", id, "volume", names[id])
			return true, nil
		}})
}

// followVolumes brings the status of each volume the index holds, and is not busy with, up to
// its record in the repository when that record is newer: a restore or a backup through
// another gateway ends there, and this gateway showed the volume as the record stood when it
// learned it (a restore's new volume stayed "error: restore interrupted" here for good,
// while its gateway showed it available) [TestVolumeStatusFollowsARestoreThroughAnotherGateway].
// written is a listing of the records (listVolumeRecords); it reads only those written since
// its last look (volumeSeen, by the store's clock), and each at the first look. A volume's updated_at becomes its record's, so one host's
// clock orders one volume's changes. It reports whether it changed a volume.
func (s *Service) followVolumes(ctx context.Context, written map[string]time.Time) (bool, error) {
	if s.volumeSeen == nil {
		s.volumeSeen = map[string]time.Time{}
	}
	changed := false
	for id, at := range written {
		if seen, ok := s.volumeSeen[id]; ok && !at.After(seen) {
			continue
		}
		v, err := s.idx.Volume(id)
		if errors.Is(err, index.ErrNotFound) {
			continue // not learned here (yet): the next look reads it
		}
		if err != nil {
			return changed, err
		}
		r := s.storedVolume(ctx, id)
		if r == nil {
			continue
		}
		s.volumeSeen[id] = at
		if !r.UpdatedAt.After(v.UpdatedAt) || (r.Status == v.Status && r.FailReason == v.FailReason && r.Size == v.Size) {
			continue
		}
		_, err = s.idx.UpdateVolume(id, func(rec *index.Volume) error {
			if rec.Status.Busy() || !r.UpdatedAt.After(rec.UpdatedAt) {
				return errUnchanged // busy here: its end here stores the record
			}
			rec.Status, rec.FailReason, rec.Size, rec.UpdatedAt = r.Status, r.FailReason, r.Size, r.UpdatedAt
			return nil
		})
		switch {
		case errors.Is(err, errUnchanged) || errors.Is(err, index.ErrNotFound):
			delete(s.volumeSeen, id) // look again next time
			continue
		case err != nil:
			return changed, err
		}
		s.log.Info("volume status changed elsewhere followed", "volume_id", id, "volume", v.Name, "status", r.Status, "was", v.Status)
		changed = true
	}
	for id := range s.volumeSeen {
		if _, ok := written[id]; !ok {
			delete(s.volumeSeen, id)
		}
	}
	return changed, nil
}

// listVolumeRecords lists meta/volumes/: each volume record's name and when it was written,
// by the store's clock.
func (s *Service) listVolumeRecords(ctx context.Context) (map[string]time.Time, error) {
	written := map[string]time.Time{}
	err := s.repo.ListMetaTimes(ctx, metaVolumes, func(id string, at time.Time) error { written[id] = at; return nil })
	return written, err
}

// learnVolume adds a volume the index lacks from its record in the repository, if there is
// one, and reports whether it learned it. Every learn of a volume is this one or
// learnLostVolume (learnVolumeFrom).
func (s *Service) learnVolume(ctx context.Context, id string) (bool, error) {
	v, err := s.learnVolumeFrom(id, func() *index.Volume { return s.storedVolume(ctx, id) })
	if v != nil {
		s.log.Info("volume managed through another gateway learned", "volume_id", v.ID, "volume", v.Name, "project", v.Project)
	}
	return v != nil, err
}

// learnVolumeFrom adds volume id to the index from what read returns (nil: nothing to learn)
// if the index lacks it, and returns the volume it learned, or nil. It reads under volumeRecMu, which a
// forget of a volume here holds from its index delete to its record's (the copy first), so
// it never brings back a volume being forgotten; a known volume costs no lock.
func (s *Service) learnVolumeFrom(id string, read func() *index.Volume) (*index.Volume, error) {
	if _, err := s.idx.Volume(id); !errors.Is(err, index.ErrNotFound) {
		return nil, err
	}
	s.volumeRecMu.Lock()
	defer s.volumeRecMu.Unlock()
	if _, err := s.idx.Volume(id); !errors.Is(err, index.ErrNotFound) {
		return nil, err
	}
	v := read()
	if v == nil {
		return nil, nil
	}
	if err := s.idx.LearnVolume(v); errors.Is(err, index.ErrExists) {
		return nil, nil // learned meanwhile (its id is known here now)
	} else if err != nil {
		return nil, err
	}
	return v, nil
}

// syncSnapshots makes the index's snapshots the repository's, as syncVolumes does volumes: it
// forgets the snapshots whose records another gateway removed (a snapshot delete there) and
// learns the ones another gateway took. Before, a snapshot deleted through one gateway stayed
// listed, available, on every other that had learned it (with nothing at its path), and one
// taken through one gateway was missing from the others' lists until their index was rebuilt
// [TestSnapshotTakenOnOneGatewayIsListedOnAnother]. A snapshot this gateway took within
// volumeRecordGrace of the look, or one it is backing up or deleting, is left; a forget
// removes the record only if it is still available, in one transaction (a backup's claim of
// the snapshot came first, and it is left for a later catch-up, or the backup finds it gone),
// and never marks it deleting, which a start would settle by storing its record again were
// the snapshot's path there. A learn needs no lock: a snapshot taken or deleted here has its
// index record from before its repository record is stored until after that record is
// removed, so a learn finds it known.
func (s *Service) syncSnapshots(ctx context.Context, look time.Time) (bool, error) {
	snaps, err := s.idx.Snapshots()
	if err != nil {
		return false, err
	}
	local := map[string]bool{}
	for _, sn := range snaps {
		local[sn.ID] = sn.Status == index.SnapshotAvailable && !sn.CreatedAt.After(look.Add(-volumeRecordGrace))
	}
	return s.syncRecords(ctx, recordSync{kind: metaSnapshots, local: local, learn: s.learnSnapshot,
		forget: func(id string) (bool, error) {
			var volumeID string
			err := s.idx.DeleteSnapshotIf(id, func(r *index.Snapshot) error {
				if r.Status != index.SnapshotAvailable {
					return errUnchanged // a backup or a delete here took it meanwhile
				}
				volumeID = r.VolumeID
				return nil
			})
			if errors.Is(err, errUnchanged) || errors.Is(err, index.ErrNotFound) {
				return false, nil
			}
			if err != nil {
				return false, err
			}
			s.log.Info("snapshot deleted elsewhere forgotten", "snapshot_id", id, "volume_id", volumeID)
			return true, nil
		}})
}

// learnSnapshot adds a snapshot the index lacks from its record in the repository, if there is
// one. It reports whether it learned the snapshot.
func (s *Service) learnSnapshot(ctx context.Context, id string) (bool, error) {
	var sn index.Snapshot
	if err := s.repo.GetMeta(ctx, metaSnapshots, id, &sn); err != nil {
		if !errors.Is(err, backend.ErrNotFound) {
			s.log.Warn("snapshot record in the repository unreadable", "snapshot_id", id, "error", err)
		}
		return false, nil
	}
	if sn.ID != id {
		return false, nil
	}
	if err := s.idx.CreateSnapshot(&sn); errors.Is(err, index.ErrExists) {
		return false, nil // taken here meanwhile
	} else if err != nil {
		return false, err
	}
	s.log.Info("snapshot taken through another gateway learned", "snapshot_id", sn.ID, "volume_id", sn.VolumeID)
	return true, nil
}

// forget drops the record of a backup whose manifest another gateway deleted, if the record
// is committed still: its callers read it before they found the manifest gone, and a restore
// or delete this gateway began in between owns the record now (the restore finds the backup
// gone and writes nothing, and a full catch-up after its end forgets it; the delete removes
// it) [TestCatchUpLeavesARecordThatARestoreHereTookMeanwhile]. It reports whether it dropped
// the record.
func (s *Service) forget(id string) (bool, error) {
	return s.dropRecord(id, committedRecord, "backup deleted elsewhere forgotten")
}

// dropRecord removes backup id's record if still, asked in the index's transaction, says it
// may go, and logs msg when it went. It reports whether it removed the record.
func (s *Service) dropRecord(id string, still func(*index.Backup) bool, msg string) (bool, error) {
	err := s.idx.DeleteBackupIf(id, func(b *index.Backup) error {
		if !still(b) {
			return errUnchanged
		}
		return nil
	})
	if errors.Is(err, errUnchanged) || errors.Is(err, index.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	s.log.Info(msg, "backup_id", id)
	return true, nil
}

// adopt records a backup another gateway stored; one already known is not an error.
func (s *Service) adopt(ctx context.Context, m *repo.Manifest) error {
	if _, err := s.adoptManifest(ctx, m); err != nil && !errors.Is(err, ErrExists) {
		return err
	}
	return nil
}

// relearnChain takes a backup's parent, incremental flag and protection from its manifest.
func (s *Service) relearnChain(ctx context.Context, id string) error {
	m, err := s.repo.GetManifest(ctx, id)
	if err != nil {
		return err
	}
	_, err = s.relearn(ctx, m)
	return err
}

// relearn takes what another gateway may change in a known backup's manifest: its parent and
// incremental flag (a prune), protection, name, description, metadata, an admin's reset to
// error, a newer verification or restore, and its copies. It reports whether the record
// changed.
func (s *Service) relearn(ctx context.Context, m *repo.Manifest) (bool, error) {
	rec := &index.Backup{ID: m.ID, VolumeID: m.VolumeID, Project: m.Project, CreatedAt: m.CreatedAt,
		ParentID: m.ParentID, IsIncremental: m.Incremental}
	if rec.Project == "" {
		rec.Project = DefaultProject
	}
	if err := s.resolveParent(ctx, rec); err != nil {
		return false, err
	}
	_, err := s.idx.UpdateBackup(m.ID, func(b *index.Backup) error {
		// An admin's reset-state elsewhere: a committed backup's only change of status.
		status, reason := b.Status, b.FailReason
		switch {
		case m.Error != "" && b.Status.Committed(): // being restored here too: its restore's end keeps error
			status, reason = index.BackupError, m.Error
		case m.Error == "" && resetToError(b):
			status, reason = index.BackupAvailable, ""
		}
		// A verification here whose rewrite failed stays until a newer one elsewhere.
		verified := b.LastVerify
		if m.Verified != nil && (verified == nil || m.Verified.At.After(verified.At)) {
			verified = m.Verified
		}
		// So does a restore's, and one running here is never replaced: its end records itself.
		restored := b.LastRestore
		if m.Restored != nil && (restored == nil || !restored.Running() && m.Restored.At.After(restored.At)) {
			restored = m.Restored
		}
		protected := s.protectionOf(b, m)
		if b.ParentID == rec.ParentID && b.IsIncremental == rec.IsIncremental && b.Protected == protected &&
			b.Name == m.Name && b.Description == m.Description && maps.Equal(b.Metadata, m.Metadata) && b.Status == status &&
			verified == b.LastVerify && restored == b.LastRestore && b.Copies.Equal(m.Copies) {
			return errUnchanged // nothing to write
		}
		b.ParentID, b.IsIncremental, b.Protected = rec.ParentID, rec.IsIncremental, protected
		b.Name, b.Description, b.Metadata = m.Name, m.Description, m.Metadata
		b.Status, b.FailReason, b.LastVerify, b.LastRestore = status, reason, verified, restored
		b.Copies = m.Copies
		if !m.UpdatedAt.IsZero() && m.Updated().After(b.UpdatedAt) {
			// The rewrite's time, as the gateway that made it shows it; never back to an older
			// one (a manifest put back), which protectionOf would then take as the newer word.
			b.UpdatedAt = m.Updated()
		}
		return nil
	})
	if errors.Is(err, errUnchanged) {
		return false, nil
	}
	return err == nil, err
}

// errUnchanged ends an update that has nothing to change.
var errUnchanged = errors.New("unchanged")

// Check verifies the repository from the manifests in the backend, and that the index's
// committed backups (available, being restored, or reset to error by an admin) match them; o
// says how much data it reads.
func (s *Service) Check(ctx context.Context, o repo.CheckOptions) (*repo.CheckReport, error) {
	if _, err := adminOf(ctx, "check the repository"); err != nil {
		return nil, err
	}
	if p := o.SamplePercent; p != 0 && !(p > 0 && p <= 100) {
		return nil, invalidf("a sample of %v%% of the packs: give a share above 0 and at most 100, like 2.5", p)
	}
	// A check of every pack takes hours at scale: it waits out a store's restart, as a backup
	// does (it deletes nothing, so a late request is harmless).
	ctx = backend.Patient(ctx)
	if o.SamplePercent != 0 && !o.ReadData {
		return nil, invalidf("a sample of the packs applies only to a check that reads the data")
	}
	start := time.Now()
	rep, err := s.check(ctx, o)
	if ctx.Err() == nil {
		s.recordCheck(start, o, rep, err)
	}
	return rep, err
}

// check is Check after its caller was admitted.
func (s *Service) check(ctx context.Context, o repo.CheckOptions) (*repo.CheckReport, error) {
	if err := s.SyncBackups(ctx); err != nil {
		return nil, err
	}
	rep, err := s.repo.Check(ctx, o)
	if err != nil {
		return nil, err
	}
	all, err := s.idx.Backups()
	if err != nil {
		return nil, err
	}
	for _, b := range all {
		if !b.Status.Committed() && !resetToError(b) {
			continue // an admin's reset to error keeps the backup committed, and its manifest
		}
		if v := b.LastVerify; v.Damaged() && !o.ReadData {
			// Without --read-data "no problems found" read as if the damage were gone.
			rep.Notes = append(rep.Notes, fmt.Sprintf("backup %s: its last verification (%s) found %s it cannot restore; this check reads no data: 'cairn repo repair' says what can be recovered",
				b.ID, v.At.UTC().Format("2006-01-02 15:04 MST"), units.Bytes(v.LostBytes)))
		}
		m, err := s.repo.GetManifest(ctx, b.ID)
		switch {
		case errors.Is(err, backend.ErrNotFound):
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s: its manifest is missing from the backend", b.ID))
		case errors.Is(err, repo.ErrCorrupt):
			// Restore, export and rebuild-index all start from the manifest.
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s: its manifest is damaged: %v", b.ID, err))
		case err != nil:
			return nil, err
		case m.Root != b.Root || m.RootLevel != b.RootLevel || m.Size != b.Size:
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s: its manifest and the index describe different backups", b.ID))
		case manifestProject(m) != b.Project || m.VolumeID != b.VolumeID:
			// Neither ever changes: a record that disagrees shows the backup to another
			// project or volume [TestCheckFindsARecordWhoseProjectDisagreesWithItsManifest].
			rep.Problems = append(rep.Problems, fmt.Sprintf("backup %s: the index says project %s and volume %s, its manifest %s and %s",
				b.ID, b.Project, b.VolumeID, manifestProject(m), m.VolumeID))
		}
	}
	return rep, nil
}

// retakeIdentity makes b's record say what its manifest m says of what never changes after the
// commit: the project, volume, block map, size, user and snapshot. check reports a record that
// disagrees (it shows the backup to another project, or describes another backup), and
// rebuild-index, which brings the index in line with the backend, kept it as it was
// [TestRebuildIndexTakesABackupsProjectFromItsManifest]. It says what it corrected ("" when
// nothing).
func (s *Service) retakeIdentity(ctx context.Context, b *index.Backup, m *repo.Manifest) (string, error) {
	want := recordOf(m)
	if want.Project == b.Project && want.VolumeID == b.VolumeID && want.Root == b.Root && want.RootLevel == b.RootLevel &&
		want.Size == b.Size && want.UserID == b.UserID && want.SnapshotID == b.SnapshotID {
		return "", nil
	}
	if err := s.ensureVolume(ctx, m); err != nil {
		return "", err
	}
	why := fmt.Sprintf("the index said project %s, volume %s, block map %s, %d bytes; its manifest %s, %s, %s, %d bytes",
		b.Project, b.VolumeID, b.Root.Short(), b.Size, want.Project, want.VolumeID, want.Root.Short(), want.Size)
	_, err := s.idx.UpdateBackup(b.ID, func(rec *index.Backup) error {
		rec.Project, rec.VolumeID, rec.Root, rec.RootLevel = want.Project, want.VolumeID, want.Root, want.RootLevel
		rec.Size, rec.UserID, rec.SnapshotID = want.Size, want.UserID, want.SnapshotID
		rec.VolumeName, rec.VolumePath = want.VolumeName, want.VolumePath
		return nil
	})
	return why, err
}

// manifestProject is the project a manifest names, as its record says it.
func manifestProject(m *repo.Manifest) string {
	if m.Project == "" {
		return DefaultProject
	}
	return m.Project
}

// GC reclaims the space no stored backup needs. It decides from the manifests in the backend
// alone (whatever the index says of any backup's status), under the repository's exclusive
// lock, so backups, restores and gcs of every process that shares the repository are safe.
func (s *Service) GC(ctx context.Context, o repo.GCOptions) (repo.GCStats, error) {
	if _, err := adminOf(ctx, "run gc"); err != nil {
		return repo.GCStats{}, err
	}
	// Its mark reads every manifest and block map node, hours at scale: those reads wait out a
	// store's restart, as a check's do; its removals do not (repo.GC makes them Impatient).
	ctx = backend.Patient(ctx)
	start := time.Now()
	st, err := s.repo.GC(ctx, o)
	if errors.Is(err, repo.ErrLocked) {
		return st, wrapf(ErrInUse, "%v", err)
	}
	if !o.DryRun && ctx.Err() == nil {
		s.recordGC(start, st, err)
	}
	if err != nil {
		return st, err
	}
	s.log.Info("gc finished", "backups", st.Backups, "packs_deleted", st.PacksDeleted, "packs_repacked", st.PacksRepacked, "bytes_freed", st.BytesFreed,
		"copy_bytes", st.CopyBytes, "packs_kept_locked", st.PacksLocked, "objects_extended", st.ObjectsExtended, "versions_removed", st.VersionsRemoved,
		"temp_files_removed", st.TempFilesRemoved, "log_objects_removed", st.LogObjectsRemoved)
	return st, nil
}

// Locks lists the repository's locks (every process on every host that uses it).
func (s *Service) Locks(ctx context.Context) ([]repo.LockInfo, error) {
	if _, err := adminOf(ctx, "list the repository's locks"); err != nil {
		return nil, err
	}
	return s.repo.Locks(ctx)
}

// Unlock removes stale locks; with force every lock (admins who know no holder still runs).
func (s *Service) Unlock(ctx context.Context, force bool) ([]repo.LockInfo, error) {
	if _, err := adminOf(ctx, "remove repository locks"); err != nil {
		return nil, err
	}
	return s.repo.Unlock(ctx, force)
}

// RebuildResult says what rebuild-index found.
type RebuildResult struct {
	Packs     int `json:"packs"`
	Backups   int `json:"backups"`
	Volumes   int `json:"volumes"`
	Snapshots int `json:"snapshots"`
	Quotas    int `json:"quotas"`
	Skipped   int `json:"skipped"`
	Relearned int `json:"blobs_relearned"` // blobs located again in packs the index knew
	Corrected int `json:"corrected"`       // known backups whose record disagreed with their manifest
}

// RebuildIndex brings the index fully in line with the backend: every pack (from its index
// object, else its trailer) and every readable blob in it the index located nowhere
// (repo.Reindex), every manifest, and every stored volume, snapshot and quota. It
// is additive: it merges what the backend says with what the index knows and never forgets a
// backup whose manifest is stored, so it cannot lose a backup that restored before it ran.
// A damaged index is not repaired here but moved aside when cairn opens it.
func (s *Service) RebuildIndex(ctx context.Context, logf func(string, ...any)) (*RebuildResult, error) {
	if _, err := adminOf(ctx, "rebuild the index"); err != nil {
		return nil, err
	}
	// Hours at scale, reading only: it waits out a store's restart, as a backup does.
	ctx = backend.Patient(ctx)
	if logf == nil {
		logf = func(string, ...any) {}
	}
	s.mu.Lock()
	running := len(s.cancels)
	s.mu.Unlock()
	if running > 0 {
		return nil, wrapf(ErrConflict, "%d backups or restores are running: wait for them before rebuilding the index", running)
	}
	lk, err := s.repo.Lock(ctx, repo.LockShared, "rebuild-index")
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	st, err := s.repo.Reindex(ctx, lk)
	if err != nil {
		return nil, err
	}
	res := &RebuildResult{Relearned: st.Relearned}
	_ = s.idx.Packs(func(repo.PackID, int64) error { res.Packs++; return nil })
	logf("indexed %d packs", res.Packs)
	if res.Relearned > 0 {
		logf("located again %d blobs the index had forgotten", res.Relearned)
	}
	nvols, snaps, quotas, err := s.restoreMeta(ctx, logf)
	if err != nil {
		return nil, err
	}
	res.Snapshots, res.Quotas = snaps, quotas
	logf("restored %d volumes, %d snapshots and %d quotas", nvols, snaps, quotas)
	var ids []string
	if err := s.repo.ListManifests(ctx, func(id string) error { ids = append(ids, id); return nil }); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if b, err := s.idx.Backup(id); err == nil && b.Status != index.BackupCreating {
			res.Backups++ // known already: kept, with what its manifest says of it now
			if !b.Status.Committed() && !resetToError(b) {
				continue
			}
			m, err := s.repo.GetManifest(ctx, id) // once, for both looks below
			if err != nil {
				logf("backup %s kept as it was: %v", id, err)
				continue
			}
			if why, err := s.retakeIdentity(ctx, b, m); err != nil {
				logf("backup %s kept as it was: %v", id, err)
			} else if why != "" {
				logf("backup %s: %s: taken from its manifest", id, why)
				res.Corrected++
			}
			if committedRecord(b) {
				// A change whose log object is missing is learned here, and only here: the
				// full catch-up reads no manifest it knows
				// [TestRebuildIndexTakesAChangeWhoseLogObjectIsMissing].
				if _, err := s.relearn(ctx, m); err != nil {
					logf("backup %s kept as it was: %v", id, err)
				}
			}
			continue
		}
		m, err := s.repo.GetManifest(ctx, id)
		if err != nil {
			logf("backup %s skipped: %v", id, err)
			res.Skipped++
			continue
		}
		if _, err := s.adoptManifest(ctx, m); err != nil {
			logf("backup %s skipped: %v", id, err)
			res.Skipped++
			continue
		}
		res.Backups++
	}
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		listed[id] = true
	}
	if n, err := s.adoptLost(ctx, listed); err != nil {
		return nil, err
	} else if n > 0 {
		logf("recorded %d backups whose manifests are lost from their second copies ('cairn repo repair' stores the manifests again)", n)
		res.Backups += n
	}
	if n, err := s.adoptLostRecords(ctx); err != nil {
		return nil, err
	} else if n > 0 {
		logf("learned %d volumes and quotas whose records are missing from their second copies ('cairn repo repair --restore-meta' stores the records again)", n)
	}
	vols, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	res.Volumes = len(vols)
	s.notifyChange()
	s.syncIndex()
	s.log.Info("index rebuilt", "packs", res.Packs, "backups", res.Backups, "volumes", res.Volumes)
	return res, nil
}

// Stats describes the repository's size and savings.
type Stats struct {
	Location         string  `json:"location"`
	Driver           string  `json:"backup_service"`
	BlockSize        int     `json:"block_size"`
	Compression      string  `json:"compression"`
	Encryption       string  `json:"encryption"`
	Volumes          int     `json:"volumes"`
	Backups          int     `json:"backups"`
	LogicalBytes     int64   `json:"logical_bytes"`      // sum of backup sizes
	DataBytes        int64   `json:"data_bytes"`         // sum of non-hole blocks over backups
	UniquePlainBytes int64   `json:"unique_plain_bytes"` // distinct blobs, uncompressed
	StoredBytes      int64   `json:"stored_bytes"`       // distinct blobs, as stored
	PackBytes        int64   `json:"pack_bytes"`         // pack objects in the backend
	Packs            int     `json:"packs"`
	Blobs            int64   `json:"blobs"`
	DedupRatio       float64 `json:"dedup_ratio"`       // data bytes / unique plain bytes
	CompressionRatio float64 `json:"compression_ratio"` // unique plain / stored
	IndexBytes       int64   `json:"index_bytes"`
	// ObjectLock is set in an object-locked repository: its mode and retention, and the
	// retain-until dates of its objects, read from the store (one HEAD an object).
	ObjectLock *LockStats `json:"object_lock,omitempty"`
}

// LockStats describes an object-locked repository.
type LockStats struct {
	Mode             string `json:"mode"`
	RetentionSeconds int64  `json:"retention_seconds"`
	// Objects counts the objects whose dates were read (every one but lock objects); none
	// when the store cannot say (a copy in a directory).
	Objects int `json:"objects"`
	// Unprotected counts those whose date has passed: anyone with the credentials could remove
	// them now (gc extends the ones in use).
	Unprotected int        `json:"unprotected"`
	Oldest      *time.Time `json:"oldest_retain_until,omitempty"`
	Newest      *time.Time `json:"newest_retain_until,omitempty"`
}

// RepoStats computes the repository's statistics from the index.
func (s *Service) RepoStats(ctx context.Context) (*Stats, error) {
	if _, err := adminOf(ctx, "see the repository's statistics"); err != nil {
		return nil, err
	}
	cfg := s.repo.Config()
	st := &Stats{Location: s.Location(), Driver: s.driver, BlockSize: cfg.BlockSize, Compression: string(cfg.Compression),
		Encryption: cfg.Encryption, IndexBytes: s.idx.Size()}
	vols, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	st.Volumes = len(vols)
	backups, err := s.idx.Backups()
	if err != nil {
		return nil, err
	}
	for _, b := range backups {
		if !b.Status.Committed() {
			continue
		}
		st.Backups++
		st.LogicalBytes += b.Size
		st.DataBytes += min(b.Stats.DataBlocks*int64(cfg.BlockSize), b.Size)
	}
	if err := s.idx.Packs(func(_ repo.PackID, size int64) error {
		st.Packs++
		st.PackBytes += size
		return nil
	}); err != nil {
		return nil, err
	}
	if err := s.idx.Blobs(func(e repo.PackEntry) error {
		st.Blobs++
		st.UniquePlainBytes += int64(e.PlainLen)
		st.StoredBytes += int64(e.Length)
		return nil
	}); err != nil {
		return nil, err
	}
	if st.UniquePlainBytes > 0 {
		st.DedupRatio = float64(st.DataBytes) / float64(st.UniquePlainBytes)
	}
	if st.StoredBytes > 0 {
		st.CompressionRatio = float64(st.UniquePlainBytes) / float64(st.StoredBytes)
	}
	if l := cfg.ObjectLock; l != nil {
		st.ObjectLock = &LockStats{Mode: string(l.Mode), RetentionSeconds: l.RetentionSeconds}
		rep, err := s.repo.Retention(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the objects' retain-until dates: %w", err)
		}
		if rep != nil {
			st.ObjectLock.Objects, st.ObjectLock.Unprotected = rep.Objects, rep.Unprotected
			if !rep.Oldest.IsZero() {
				st.ObjectLock.Oldest, st.ObjectLock.Newest = &rep.Oldest, &rep.Newest
			}
		}
	}
	return st, nil
}

// RepairBackup is one damaged backup in a repair report.
type RepairBackup struct {
	ID string `json:"id"`
	// Lost are the byte ranges of the volume that cannot be restored; nil with Whole.
	Lost      [][2]int64 `json:"lost,omitempty"`
	Whole     bool       `json:"whole"` // its manifest is damaged: nothing can be restored
	LostBytes int64      `json:"lost_bytes"`
	Forgotten bool       `json:"forgotten"`
}

// RepairReport says what repo repair found and did.
type RepairReport struct {
	Backups []RepairBackup `json:"backups"`
	// WholeAgain are backups the check found damaged that restore whole again (a backup
	// running beside the repair stored their lost blocks again): kept, not forgotten.
	WholeAgain []string `json:"whole_again,omitempty"`
	Problems   int      `json:"problems"`
	// Healed counts lost blocks stored again from the volumes named in HealedFrom, and
	// HealedNodes lost block map nodes built again from them.
	Healed      int      `json:"healed_blocks"`
	HealedNodes int      `json:"healed_nodes,omitempty"`
	HealedFrom  []string `json:"healed_from,omitempty"`
	// PackIndexes counts pack index objects written again from their packs' trailers.
	PackIndexes int `json:"pack_indexes_rewritten"`
	// Trailers counts packs rewritten because their trailer was damaged.
	Trailers int `json:"packs_rewritten"`
	// Forgotten counts lost blocks the index forgot, for the next full backup to store again.
	Forgotten int `json:"blocks_to_store_again"`
	// GoodCopies counts blobs whose indexed copy was damaged or in a missing pack that the
	// index now reads from a good copy in another pack.
	GoodCopies int `json:"good_copies_used"`
	// Manifests counts damaged manifests written again from their second copies, and
	// ManifestCopies second copies written again (damaged, missing or older) from their
	// manifests.
	Manifests      int `json:"manifests_rewritten"`
	ManifestCopies int `json:"manifest_copies_written"`
	// LostManifests counts manifests stored again from their second copies that were missing
	// though no delete of their backups began (docs/design.md, "A manifest lost, its copy
	// left").
	LostManifests int `json:"lost_manifests_stored,omitempty"`
	// Config names the config object written again: "config" (from its second copy, which
	// stood in for it) or "config-copy" (from the config); empty when neither was.
	Config string `json:"config_written,omitempty"`
	// Keys counts key objects and their copies written again, and copies of removed keys
	// removed.
	Keys int `json:"key_objects_mended,omitempty"`
	// Meta counts damaged metadata objects written again from their second copies, and
	// MetaCopies second copies written again (damaged, missing, different or older) from their
	// objects.
	Meta       int `json:"metadata_rewritten,omitempty"`
	MetaCopies int `json:"metadata_copies_written,omitempty"`
	// LostMeta are the metadata objects damaged with no second copy that stands in (a policy,
	// a volume's record, a quota): what they held is lost; --forget-damaged removes them.
	LostMeta []RepairMeta `json:"lost_metadata,omitempty"`
	// MissingMeta are the metadata objects missing while their second copies are left: lost
	// (removed outside cairn) or removed by a cairn from before the copies, which only the
	// admin can tell; RestoreMeta stores them again, ForgetDamaged removes the copies
	// (docs/design.md, "A metadata object lost, its copy left").
	MissingMeta []RepairMeta `json:"missing_metadata,omitempty"`
}

// RepairMeta is one lost or missing metadata object in a repair report.
type RepairMeta struct {
	repo.MetaObject
	Forgotten bool `json:"forgotten"`
	Restored  bool `json:"restored,omitempty"`
	// Refused says why RestoreMeta would not store it again (a tombstone beside a stored
	// manifest: repo.ErrBackupStored).
	Refused string `json:"refused,omitempty"`
}

// RepairOptions says what a repair may forget or store again beyond what it mends by itself.
type RepairOptions struct {
	// Forget names damaged backups to forget; ForgetDamaged forgets every damaged backup, every
	// lost metadata object, and the copy of every missing one RestoreMeta does not restore.
	Forget        []string
	ForgetDamaged bool
	// RestoreMeta stores again, from its intact second copy, every metadata object that is
	// missing.
	RestoreMeta bool
}

// healRounds bounds repair's rounds of heal and check: a round sees below the block map nodes
// the one before healed, and a map is a few levels deep.
const healRounds = 4

// Repair checks the repository and lists, per damaged backup, the byte ranges that are lost.
// It forgets the backups named in forget (or every damaged one with forgetDamaged): their
// manifests go, so gc can run again and reclaim what only they used; the undamaged backups are
// untouched. Forgetting is explicit and for admins only; it never touches an undamaged backup.
func (s *Service) Repair(ctx context.Context, o RepairOptions) (*RepairReport, error) {
	forget, forgetDamaged := o.Forget, o.ForgetDamaged
	if _, err := adminOf(ctx, "repair the repository"); err != nil {
		return nil, err
	}
	// It reads every blob, hours at scale: it waits out a store's restart, as a check does;
	// the removals of its pack step do not (repo.RepairPacks makes them Impatient).
	ctx = backend.Patient(ctx)
	out := &RepairReport{}
	// Both copies of each pack's blob list first, each from the other.
	var err error
	if out.PackIndexes, out.Trailers, err = s.repo.RepairPacks(ctx); err != nil {
		return nil, err
	}
	// Each check reads every blob; the last one's findings are recorded, as of its start.
	var checked time.Time
	check := func() (*repo.CheckReport, error) {
		checked = now()
		return s.Check(ctx, repo.CheckOptions{ReadData: true})
	}
	rep, err := check()
	if err != nil {
		return nil, err
	}
	// Both copies of the config and of each manifest, each from the other: a damaged one's
	// copy stood in for it in the check, so the check after sees the backup whole.
	if out.Config, err = s.repo.MendConfig(ctx, rep); err != nil {
		return nil, err
	}
	if out.Keys, err = s.repo.MendKeys(ctx, rep, cmp.Or(s.cfg.Lock.Wait, repo.DefaultLockWait)); err != nil {
		return nil, err
	}
	mended, err := s.repo.MendManifests(ctx, rep)
	if err != nil {
		return nil, err
	}
	out.Manifests, out.LostManifests, out.ManifestCopies = mended.Damaged, mended.Lost, mended.Copies
	if out.Meta, out.MetaCopies, err = s.repo.MendMeta(ctx, rep); err != nil {
		return nil, err
	}
	if out.Manifests > 0 || out.LostManifests > 0 || out.Config == "config" || out.Keys > 0 || out.Meta > 0 {
		s.log.Info("damaged or lost objects written again from their second copies", "manifests", out.Manifests, "lost_manifests", out.LostManifests, "config", out.Config == "config", "key_objects", out.Keys, "metadata", out.Meta)
		if rep, err = check(); err != nil {
			return nil, err
		}
	}
	// A blob stored twice is not lost while one copy verifies: the index reads that one.
	if out.GoodCopies, err = s.repo.UseGoodCopies(ctx, rep); err != nil {
		return nil, err
	}
	if out.GoodCopies > 0 {
		s.log.Info("index points at good copies of damaged blobs", "blobs", out.GoodCopies)
		if rep, err = check(); err != nil {
			return nil, err
		}
	}
	// Then heal: a lost block that a registered volume still holds (the same bytes hash to
	// the same address) is stored again, and every backup that needs it restores again; so is
	// a lost block map node the volume's blocks build again, with what is lost below it (the
	// check could not see there). A check after a heal may find more (past HealNodes's bounds,
	// or a copy no read had marked): up to healRounds rounds.
	vols, err := s.idx.Volumes()
	if err != nil {
		return nil, err
	}
	healedFrom := map[string]bool{}
	// forgot: the blocks the last ForgetDamaged was given, while no check followed it (nil
	// once one did): a backup beside the repair that stores one again may make a damaged
	// backup whole before the forget step (wholeAgain).
	var forgot map[repo.Address]struct{}
	for round := 1; ; round++ {
		lost, nodes := rep.LostData(), rep.LostNodes()
		if len(lost)+len(nodes) == 0 {
			break
		}
		healed := 0
		for _, v := range vols {
			if len(lost)+len(nodes) == 0 {
				break
			}
			src, err := blockio.OpenSource(v.Path)
			if err != nil {
				continue // not on this host, or gone
			}
			hn, err := s.repo.HealNodes(ctx, src, nodes, lost)
			var hd []repo.Address
			if err == nil {
				hd, err = s.repo.Heal(ctx, src, lost)
			}
			src.Close()
			if err != nil {
				return nil, fmt.Errorf("heal from volume %s: %w", v.Name, err)
			}
			if len(hn)+len(hd) > 0 {
				healed += len(hn) + len(hd)
				out.Healed += len(hd)
				out.HealedNodes += len(hn)
				if !healedFrom[v.Name] {
					healedFrom[v.Name] = true
					out.HealedFrom = append(out.HealedFrom, v.Name)
				}
				s.log.Info("lost blocks stored again", "volume_id", v.ID, "blocks", len(hd), "block_map_nodes", len(hn))
			}
		}
		// What no volume here holds: the index forgets the damaged copies, so the next full
		// backup of a volume (anywhere) that still holds the data stores it again (a lost
		// node too: a backup that builds it stores it).
		for a := range nodes {
			lost[a] = struct{}{}
		}
		n, kept, err := s.repo.ForgetDamaged(ctx, lost)
		if err != nil {
			return nil, err
		}
		out.Forgotten += n
		forgot = lost
		if afterForgetDamaged != nil {
			afterForgetDamaged()
		}
		// A blob kept was stored again since the check (a backup running beside the repair
		// met its mark): the check's damaged backups are out of date, and one forgotten by
		// --forget-damaged from them could be whole again [TestForgetDamagedKeepsACopyStoredAgain].
		if healed == 0 && kept == 0 {
			break
		}
		if rep, err = check(); err != nil {
			return nil, err
		}
		forgot = nil
		if round == healRounds {
			break
		}
	}
	out.Problems = rep.ProblemCount
	want := map[string]bool{}
	for _, id := range forget {
		if _, ok := rep.Lost[id]; !ok {
			return nil, invalidf("backup %s is not damaged (or not stored): delete it with 'cairn backup delete' instead", id)
		}
		want[id] = true
	}
	ids := make([]string, 0, len(rep.Lost))
	for id := range rep.Lost {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// Whether any block ForgetDamaged forgot is indexed again (caught up first, so a backup
	// through another gateway counts): only then can a damaged backup be whole again, and each
	// one's block map is looked at (wholeAgain). Asked once, at the first backup to forget.
	var storedAgain *bool
	mayBeWhole := func() (bool, error) {
		if storedAgain == nil {
			again := false
			if len(forgot) > 0 {
				if _, err := s.repo.Sync(ctx, false); err != nil {
					return false, err
				}
				for a := range forgot {
					if _, ok, err := s.idx.Lookup(a); err != nil {
						return false, err
					} else if ok {
						again = true
						break
					}
				}
			}
			storedAgain = &again
		}
		return *storedAgain, nil
	}
	for _, id := range ids {
		rb := RepairBackup{ID: id}
		for _, r := range rep.Lost[id] {
			if r[1] < 0 {
				rb.Whole, rb.Lost = true, nil
				break
			}
			rb.Lost = append(rb.Lost, r)
			rb.LostBytes += r[1] - r[0]
		}
		if (want[id] || forgetDamaged) && !rb.Whole {
			// The last check is minutes old at scale, and ForgetDamaged has since forgotten
			// the lost blocks, so a backup running beside the repair that met one stored it
			// again: a backup whole again is kept [TestForgetDamagedKeepsABackupMadeWholeSinceTheCheck].
			whole, err := mayBeWhole()
			if err == nil && whole {
				whole, err = s.wholeAgain(ctx, id)
			}
			if err != nil {
				return nil, fmt.Errorf("forget backup %s: %w", id, err)
			}
			if whole {
				s.log.Info("damaged backup whole again since the check: kept", "backup_id", id)
				out.WholeAgain = append(out.WholeAgain, id)
				continue
			}
		}
		if want[id] || forgetDamaged {
			if err := s.repo.DeleteManifest(ctx, id); err != nil {
				return nil, fmt.Errorf("forget backup %s: %w", id, err)
			}
			if err := s.idx.DeleteBackup(id); err != nil && !errors.Is(err, index.ErrNotFound) {
				return nil, err
			}
			rb.Forgotten = true
			s.log.Warn("damaged backup forgotten", "backup_id", id)
		}
		out.Backups = append(out.Backups, rb)
	}
	for _, m := range rep.LostMeta() {
		rm := RepairMeta{MetaObject: m}
		if forgetDamaged {
			if err := s.repo.ForgetMeta(ctx, m); err != nil && !errors.Is(err, repo.ErrNotLost) {
				return nil, fmt.Errorf("forget metadata object %s: %w", m, err)
			}
			rm.Forgotten = true
			s.log.Warn("lost metadata object forgotten", "object", m.String())
			if m.Kind == metaPolicies {
				s.policiesChanged()
			}
		}
		out.LostMeta = append(out.LostMeta, rm)
	}
	// A copy without its object: lost, or removed by a cairn from before the copies. Only the
	// admin's flags decide, and restoring wins over forgetting (it loses nothing).
	for _, m := range rep.MissingMeta() {
		rm := RepairMeta{MetaObject: m}
		switch err := error(nil); {
		case o.RestoreMeta:
			if err = s.repo.RestoreMeta(ctx, m); err == nil {
				rm.Restored = true
				s.log.Warn("missing metadata object stored again from its second copy", "object", m.String())
			} else if errors.Is(err, repo.ErrBackupStored) {
				rm.Refused = repo.ErrBackupStored.Error()
			} else if !errors.Is(err, repo.ErrNotMissing) {
				return nil, fmt.Errorf("store metadata object %s again: %w", m, err)
			}
		case forgetDamaged:
			if err = s.repo.ForgetMeta(ctx, m); err == nil {
				rm.Forgotten = true
				s.log.Warn("second copy of a missing metadata object removed", "object", m.String())
			} else if !errors.Is(err, repo.ErrNotLost) {
				return nil, fmt.Errorf("forget metadata object %s: %w", m, err)
			}
		}
		if (rm.Restored || rm.Forgotten) && m.Kind == metaPolicies {
			s.policiesChanged()
		}
		out.MissingMeta = append(out.MissingMeta, rm)
	}
	s.settleVerifications(ctx, out.Backups, checked)
	s.syncIndex()
	s.notifyChange()
	return out, nil
}

// settleVerifications records what repair's last check, which read every blob of every backup
// as a verification of each would, says of the backups: one a verification found damaged that
// the check found whole (repair stored its lost blocks again, or the index now reads good
// copies) is ok from then on, and one the check found damaged is damaged, with what it loses
// now. Until 2026-12-06 a repaired backup stayed "damaged" in cairn status, the console and
// cairn_attention (its alert firing) until someone verified it again. Other backups keep
// their outcome: recording theirs would rewrite every manifest.
func (s *Service) settleVerifications(ctx context.Context, damaged []RepairBackup, at time.Time) {
	lost := map[string]RepairBackup{}
	for _, rb := range damaged {
		if !rb.Forgotten {
			lost[rb.ID] = rb
		}
	}
	all, err := s.idx.Backups()
	if err != nil {
		s.log.Warn("repair: cannot record the backups' verification", "error", err)
		return
	}
	for _, b := range all {
		if !b.Status.Committed() {
			continue
		}
		rb, isLost := lost[b.ID]
		switch {
		case isLost:
			bytes := rb.LostBytes
			if rb.Whole {
				bytes = b.Size
			}
			if v := b.LastVerify; !v.Damaged() || v.LostBytes != bytes {
				s.recordVerify(ctx, b.ID, &index.VerifyOutcome{Result: repo.VerifyDamaged, LostBytes: bytes, At: at})
			}
		case b.LastVerify.Damaged():
			s.recordVerify(ctx, b.ID, &index.VerifyOutcome{Result: repo.VerifyOK, At: at})
		}
	}
}

// afterForgetDamaged, when set (by tests), runs right after repair's ForgetDamaged.
var afterForgetDamaged func()

// wholeAgain reports whether backup id, which the last check found damaged in part, restores
// whole now: every blob of its block map is in the index (its caller caught it up) in a pack the
// backend holds. ForgetDamaged forgot each lost blob that did not verify, so one indexed now was
// stored again since, and verified as it was.
func (s *Service) wholeAgain(ctx context.Context, id string) (bool, error) {
	m, err := s.repo.GetManifest(ctx, id)
	if err != nil {
		if errors.Is(err, repo.ErrCorrupt) || errors.Is(err, backend.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	switch err := s.repo.Verify(ctx, m); {
	case err == nil:
		return true, nil
	case errors.Is(err, repo.ErrCorrupt), errors.Is(err, backend.ErrNotFound):
		return false, nil
	default:
		return false, err
	}
}
