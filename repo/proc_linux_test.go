//go:build linux

package repo

import (
	"os"
	"testing"
)

// A pid names a lock's holder only while the process that took the lock runs: pids wrap
// around, and a newer process with the holder's pid (another start time) does not hold it.
func TestProcessHolds(t *testing.T) {
	start := processStart()
	if start == 0 {
		t.Fatal("this process's start time is unknown")
	}
	if !processHolds(os.Getpid(), start) {
		t.Error("this process does not hold a lock it took")
	}
	if processHolds(os.Getpid(), start+1) {
		t.Error("a process of another start time holds the lock")
	}
	if !processHolds(os.Getpid(), 0) {
		t.Error("a running process does not hold a lock that records no start")
	}
	if processHolds(1<<22+7, start) {
		t.Error("a pid that names no process holds a lock")
	}
}
