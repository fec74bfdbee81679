//go:build linux

package repo

import (
	"os"
	"testing"
	"time"
)

// A pid names a lock's holder only while the process that started before the lock runs: pids
// wrap around, and a newer process with the holder's pid does not hold its lock.
func TestProcessHolds(t *testing.T) {
	if !processHolds(os.Getpid(), time.Now()) {
		t.Error("this process does not hold a lock it took now")
	}
	if processHolds(os.Getpid(), time.Now().Add(-48*time.Hour)) {
		t.Error("a process that started after the lock was taken holds it")
	}
	if processHolds(1<<22+7, time.Now()) {
		t.Error("a pid that names no process holds a lock")
	}
}
