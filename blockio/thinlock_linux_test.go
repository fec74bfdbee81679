package blockio

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A pool's metadata snapshot is taken by one caller at a time, in this process (a second
// waits) and across processes (an flock another process holds keeps it out), and a wait is
// bounded: a holder stuck in thin_delta held every later thin incremental of the pool, which
// could not be cancelled; now they read in full, saying the pool is busy.
func TestThinPoolLockIsOneAtATimeAndBounded(t *testing.T) {
	poolLockDir = t.TempDir()
	poolLockWait = 300 * time.Millisecond
	t.Cleanup(func() { poolLockDir, poolLockWait = "/run/lock", time.Minute })

	release, err := lockPool("vg0-pool-tpool")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockPool("vg0-pool-tpool"); err == nil || !strings.Contains(err.Error(), "another backup has held its metadata snapshot") {
		t.Fatalf("a second lock of the pool in this process: %v, want busy", err)
	}
	if other, err := lockPool("vg1-pool-tpool"); err != nil {
		t.Fatalf("another pool's lock: %v", err)
	} else {
		other()
	}
	release()

	// Another process's flock (another open file description of the lock file).
	f, err := os.OpenFile(filepath.Join(poolLockDir, "cairn-thin-vg0-pool-tpool"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if _, err := lockPool("vg0-pool-tpool"); err == nil || !strings.Contains(err.Error(), "another backup") {
		t.Fatalf("the lock while another process holds the pool's flock: %v, want busy", err)
	}
	f.Close()
	release, err = lockPool("vg0-pool-tpool")
	if err != nil {
		t.Fatalf("the lock once the other process let go: %v", err)
	}
	release()
}
