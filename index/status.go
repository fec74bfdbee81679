package index

import (
	"errors"
	"fmt"
)

// Statuses are the seed's words, one type per kind of record, and every change of one goes
// through a transition table here: the index is the one owner of records, and UpdateBackup,
// UpdateVolume and UpdateSnapshot refuse a change the table does not allow. gc, check, the API
// and the FUSE tree ask the same methods what a status means.

// BackupStatus is a backup's status (seed 3.1, 3.5.3).
type BackupStatus string

// VolumeStatus is a volume's status while cairn backs it up or restores onto it.
type VolumeStatus string

// SnapshotStatus is a snapshot's status.
type SnapshotStatus string

// ErrTransition means a status change the transition table does not allow.
var ErrTransition = errors.New("status change not allowed")

var backupTransitions = map[BackupStatus][]BackupStatus{
	BackupCreating:  {BackupAvailable, BackupError},
	BackupAvailable: {BackupRestoring, BackupDeleting, BackupError},
	BackupRestoring: {BackupAvailable, BackupError, BackupDeleting},
	BackupError:     {BackupAvailable, BackupDeleting},
	// deleting → available is not here: only UndoDelete makes it, for a delete that never
	// began in the repository; a reset-state must not bring back one whose delete did.
	BackupDeleting: {BackupError},
}

var volumeTransitions = map[VolumeStatus][]VolumeStatus{
	VolumeCreating:        {VolumeAvailable, VolumeError, VolumeRestoringBackup},
	VolumeAvailable:       {VolumeBackingUp, VolumeRestoringBackup, VolumeError},
	VolumeBackingUp:       {VolumeAvailable, VolumeError},
	VolumeRestoringBackup: {VolumeAvailable, VolumeError},
	VolumeError:           {VolumeAvailable, VolumeRestoringBackup, VolumeBackingUp},
}

var snapshotTransitions = map[SnapshotStatus][]SnapshotStatus{
	SnapshotAvailable: {SnapshotBackingUp, SnapshotDeleting},
	SnapshotBackingUp: {SnapshotAvailable},
	SnapshotDeleting:  {SnapshotAvailable},
}

func allowed[S comparable](table map[S][]S, from, to S) bool {
	if from == to {
		return true
	}
	for _, s := range table[from] {
		if s == to {
			return true
		}
	}
	return false
}

// CanBecome reports whether a backup may go from s to to.
func (s BackupStatus) CanBecome(to BackupStatus) bool { return allowed(backupTransitions, s, to) }

// CanBecome reports whether a volume may go from s to to.
func (s VolumeStatus) CanBecome(to VolumeStatus) bool { return allowed(volumeTransitions, s, to) }

// Busy reports whether a volume in status s has a job on it (a backup, a restore, its
// creation) through the gateway whose index holds it.
func (s VolumeStatus) Busy() bool {
	return s == VolumeBackingUp || s == VolumeRestoringBackup || s == VolumeCreating
}

// CanBecome reports whether a snapshot may go from s to to.
func (s SnapshotStatus) CanBecome(to SnapshotStatus) bool { return allowed(snapshotTransitions, s, to) }

// Valid reports whether s is a backup status.
func (s BackupStatus) Valid() bool { _, ok := backupTransitions[s]; return ok }

// Committed reports whether a backup in this status has a stored manifest: its data is kept
// by gc and it can be restored (available), is being restored, or was reset by an admin.
func (s BackupStatus) Committed() bool { return s == BackupAvailable || s == BackupRestoring }

// Restorable reports whether a backup in this status may be restored or exported.
func (s BackupStatus) Restorable() bool { return s == BackupAvailable }

func transitionError[S ~string](what, id string, from, to S) error {
	return fmt.Errorf("%s %s: %w: %s → %s", what, id, ErrTransition, from, to)
}
