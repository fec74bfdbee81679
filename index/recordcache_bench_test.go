package index

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// BenchmarkBackups: one Backups call with N records in the index, decoded from Badger (what
// every call did before the records were kept in memory, and what the first call still does)
// and copied from memory. The records are shaped like a gateway's (ids, a path, metadata,
// stats).
func BenchmarkBackups(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		ix, err := Open(filepath.Join(b.TempDir(), "index"))
		if err != nil {
			b.Fatal(err)
		}
		at := time.Now().UTC()
		for start := 0; start < n; start += 1000 {
			if err := ix.update(func(txn *badger.Txn) error {
				for i := start; i < min(start+1000, n); i++ {
					r := testBackup(i, at)
					r.Status, r.VolumePath, r.VolumeIdentity = BackupAvailable, fmt.Sprintf("/srv/volumes/vol-%d.img", i%7), "ino:1234:dev:2049"
					r.Stats.Blocks, r.Stats.DataBlocks, r.Stats.NewBytes = 65536, 60000, 300<<20
					if err := putBackup(txn, r); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("records=%d/decoded", n), func(b *testing.B) {
			for range b.N {
				if all, err := ix.decodeBackups(nil); err != nil || len(all) != n {
					b.Fatal(err, len(all))
				}
			}
		})
		if _, err := ix.Backups(); err != nil { // loads the copy
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("records=%d/in-memory", n), func(b *testing.B) {
			for range b.N {
				if all, err := ix.Backups(); err != nil || len(all) != n {
					b.Fatal(err, len(all))
				}
			}
		})
		ix.Close()
	}
}
