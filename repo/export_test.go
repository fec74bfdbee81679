package repo

import (
	"context"
	"time"
)

// WriteLockForTest writes a lock object as another process (host, pid) would have.
func WriteLockForTest(r *Repository, id, host string, pid int, op string) error {
	return r.locks.write(context.Background(), lockPrefix+id, LockInfo{ID: id, Kind: LockShared, Host: host, PID: pid, Operation: op, Created: time.Now().UTC()})
}
