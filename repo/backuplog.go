package repo

import (
	"context"
	"errors"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// The backup log: every Put or Delete of a manifest is followed by a log object,
//
//	backuplog/<t>-<backup id>  the backup id, sealed
//
// so that another process learns which backups changed by listing the keys written since its
// last look instead of every manifest. The log is a hint: a reader decides from the manifest
// it then reads or finds missing, and nothing that deletes (gc, prune) or judges damage
// (check) reads it (docs/design.md, "Catch-up: the backup log").
const (
	logPrefix = "backuplog/"
	// logKeep is how long gc leaves a log object: far longer than any catch-up's window.
	logKeep = 24 * time.Hour
)

// logChange writes the log object that follows a change to backup id's manifest. The change
// stands whatever happens here: a log object that is not written only delays other
// processes, which learn the change at their next full catch-up.
func (r *Repository) logChange(ctx context.Context, id string) {
	key := timeKey(logPrefix, time.Now(), id)
	if err := r.putObject(ctx, key, []byte(id)); err != nil {
		r.logf("backup log: %s not written (other gateways learn the change at their next full catch-up): %v", key, err)
	}
}

// LogEntry is a log object: the backup whose manifest changed, and when by its writer's
// clock.
type LogEntry struct {
	Key      string
	Time     time.Time
	BackupID string
}

// ListLog calls fn, in key order, with the log objects written at or after since by their
// writers' clocks. The caller subtracts its margin for clocks that disagree.
func (r *Repository) ListLog(ctx context.Context, since time.Time, fn func(LogEntry) error) error {
	return r.be.ListAfter(ctx, logPrefix, logPrefix+timeStamp(since), func(oi backend.ObjectInfo) error {
		t, id, ok := keyTime(logPrefix, oi.Key)
		if !ok || !validID(id) {
			return nil
		}
		return fn(LogEntry{Key: oi.Key, Time: t, BackupID: id})
	})
}

// errOldest ends OldestLog's listing at its first key.
var errOldest = errors.New("oldest log object found")

// OldestLog returns the time of the oldest log object by its writer's clock, and false when
// there is none. gc prunes the log oldest first (pruneLog), so every log object written after
// it is still there: a reader whose last look is later than it (less the margin) reads the
// log from there whatever its age.
func (r *Repository) OldestLog(ctx context.Context) (time.Time, bool, error) {
	var oldest time.Time
	found := false
	err := r.ListLog(ctx, time.Unix(0, 0), func(e LogEntry) error {
		oldest, found = e.Time, true
		return errOldest
	})
	if errors.Is(err, errOldest) {
		err = nil
	}
	return oldest, found, err
}

// LogKeep is how long gc leaves a log object: a reader whose last look is older may find the
// log objects written since pruned.
const LogKeep = logKeep

// SyncMargin is how far before its last look a reader of keys named by their writers' clocks
// starts its next listing: clocks that disagree, and writes that took a while.
const SyncMargin = syncMargin

// pruneLog removes the log objects older than logKeep by the store's clock. It runs under
// gc's exclusive lock, after everything else: a failure is logged, not gc's.
func (r *Repository) pruneLog(ctx context.Context, lk *Lock, st *GCStats, logf func(string, ...any)) {
	now, err := r.storeClock(ctx, lk)
	if err != nil {
		logf("old backup log objects not removed: %v", err)
		return
	}
	cutoff := now().Add(-logKeep)
	var old []string
	err = r.be.ListKeys(ctx, logPrefix, func(key string) error {
		if t, _, ok := keyTime(logPrefix, key); ok && t.Before(cutoff) {
			old = append(old, key)
		}
		return nil
	})
	for _, key := range old {
		if err != nil {
			break
		}
		err = r.be.Delete(ctx, key)
		if err == nil {
			st.LogObjectsRemoved++
		}
	}
	if err != nil {
		logf("old backup log objects not removed: %v", err)
	}
}
