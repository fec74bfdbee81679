package repo

import (
	"context"
	"time"
)

// WriteLockForTest writes a lock object as another process (host, pid) would have.
func WriteLockForTest(r *Repository, id, host string, pid int, op string) error {
	return r.locks.write(context.Background(), lockPrefix+id, LockInfo{ID: id, Kind: LockShared, Host: host, PID: pid, Operation: op, Created: time.Now().UTC()})
}

// PutDeletionForTest stores a deletion record of pack id (with addrs) as a gc whose clock
// reads at would have.
func PutDeletionForTest(r *Repository, at time.Time, id PackID, addrs []Address) error {
	d := &deletion{packs: map[PackID][]Address{id: addrs}, sizes: map[PackID]int64{}}
	return r.putObject(context.Background(), timeKey(deletedPrefix, at, "test"), d.encode())
}
