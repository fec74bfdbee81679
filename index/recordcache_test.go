package index

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
)

func testBackup(i int, at time.Time) *Backup {
	return &Backup{ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i), Name: fmt.Sprintf("b%d", i),
		VolumeID: fmt.Sprintf("vol-%d", i%7), Project: "p", Status: BackupCreating, Size: int64(i) << 20,
		CreatedAt: at.Add(time.Duration(i%5) * time.Second), UpdatedAt: at, Metadata: map[string]string{"k": "v"}}
}

// sameAsDisk fails the test unless Backups (from memory) equals the records decoded from
// Badger afresh, and the copy in memory is loaded (so that it is what was compared).
func sameAsDisk(t *testing.T, ix *Index, step string) {
	t.Helper()
	mem, err := ix.Backups()
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	ix.records.mu.Lock()
	loaded := ix.records.all != nil
	ix.records.mu.Unlock()
	if !loaded {
		t.Fatalf("%s: the records are not in memory", step)
	}
	disk, err := ix.decodeBackups(nil)
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	if !reflect.DeepEqual(mem, disk) {
		t.Fatalf("%s: in memory %d records, in the index %d; first difference:\n%s", step, len(mem), len(disk), firstDiff(mem, disk))
	}
}

func firstDiff(a, b []*Backup) string {
	for i := range min(len(a), len(b)) {
		if !reflect.DeepEqual(a[i], b[i]) {
			return fmt.Sprintf("%+v\n%+v", *a[i], *b[i])
		}
	}
	return "one is longer"
}

func TestBackupsInMemoryFollowEveryWrite(t *testing.T) {
	ix := openTest(t)
	at := time.Now() // local, with a monotonic reading: what JSON gives back differs
	for i := range 20 {
		if err := ix.CreateBackup(testBackup(i, at)); err != nil {
			t.Fatal(err)
		}
	}
	sameAsDisk(t, ix, "loaded")

	if err := ix.CreateBackup(testBackup(20, at)); err != nil {
		t.Fatal(err)
	}
	sameAsDisk(t, ix, "created")
	if err := ix.CreateBackup(testBackup(3, at)); !errors.Is(err, ErrExists) {
		t.Fatalf("a second record with the same id: %v", err)
	}
	sameAsDisk(t, ix, "create refused")

	b := testBackup(4, at)
	b.Name, b.Description, b.Metadata = "renamed", "put again", map[string]string{"x": "y"}
	if err := ix.PutBackup(b); err != nil {
		t.Fatal(err)
	}
	b.Name = "changed by the caller after the put"
	sameAsDisk(t, ix, "put")

	id := testBackup(5, at).ID
	if _, err := ix.UpdateBackup(id, func(r *Backup) error {
		r.Status, r.LastRestore = BackupAvailable, &RestoreOutcome{Target: "v", Result: "succeeded", At: at}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sameAsDisk(t, ix, "updated")
	if _, err := ix.UpdateBackup(id, func(r *Backup) error { r.Status = BackupCreating; return nil }); err == nil {
		t.Fatal("available → creating was allowed")
	}
	sameAsDisk(t, ix, "update refused by the state machine")
	if _, err := ix.UpdateBackup(id, func(r *Backup) error { r.Name = "never"; return errors.New("no") }); err == nil {
		t.Fatal("an update whose function failed succeeded")
	}
	sameAsDisk(t, ix, "update refused by its function")
	if _, err := ix.UpdateBackup("no-such-backup", func(r *Backup) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of a missing record: %v", err)
	}

	if err := ix.DeleteBackup(testBackup(6, at).ID); err != nil {
		t.Fatal(err)
	}
	sameAsDisk(t, ix, "deleted")
	if err := ix.DeleteBackup(testBackup(6, at).ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	sameAsDisk(t, ix, "delete of a missing record")

	// What the index holds after a reopen (decoded afresh) is what memory said.
	before, _ := ix.Backups()
	dir := ix.Dir()
	ix.Close()
	ix2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ix2.Close()
	after, err := ix2.Backups()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("after a reopen: %s", firstDiff(before, after))
	}
}

func TestBackupsAreTheCallersOwn(t *testing.T) {
	ix := openTest(t)
	at := time.Now().UTC()
	b := testBackup(1, at)
	b.LastRestore = &RestoreOutcome{Target: "v", Result: "running", At: at}
	b.Copies = []repo.CopyRecord{{Repository: "r", Location: "s3://offsite", At: at}}
	if err := ix.CreateBackup(b); err != nil {
		t.Fatal(err)
	}
	if _, err := ix.Backups(); err != nil { // loads the copy; the next call reads it
		t.Fatal(err)
	}
	first, err := ix.Backups()
	if err != nil || len(first) != 1 {
		t.Fatal(err, len(first))
	}
	first[0].Name, first[0].Metadata["k"], first[0].LastRestore.Result, first[0].Copies[0].Location = "mine", "mine", "mine", "mine"
	again, err := ix.Backups()
	if err != nil {
		t.Fatal(err)
	}
	if g := again[0]; g.Name != b.Name || g.Metadata["k"] != "v" || g.LastRestore.Result != "running" || g.Copies[0].Location != "s3://offsite" {
		t.Fatalf("a caller's change reached the index's copy: %+v %+v", g, *g.LastRestore)
	}
	sameAsDisk(t, ix, "after a caller's changes")
}

// Writers, loads and readers at once: the copy in memory ends equal to the index, and no
// reader ever sees a record twice or a state older than one it saw before.
func TestBackupsInMemoryUnderConcurrentWrites(t *testing.T) {
	for round := range 4 {
		ix, err := Open(filepath.Join(t.TempDir(), "index"))
		if err != nil {
			t.Fatal(err)
		}
		at := time.Now().UTC()
		const n = 40
		for i := range n {
			if err := ix.CreateBackup(testBackup(i, at)); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errc := make(chan error, 64)
		for w := range 4 { // each bumps the size of every record, in its own order
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range n {
					id := testBackup((k+7*w)%n, at).ID
					if _, err := ix.UpdateBackup(id, func(b *Backup) error { b.Size++; return nil }); err != nil {
						errc <- err
						return
					}
				}
			}()
		}
		wg.Add(1)
		go func() { // creates and deletes records of its own
			defer wg.Done()
			for i := n; i < n+30; i++ {
				if err := ix.CreateBackup(testBackup(i, at)); err != nil {
					errc <- err
					return
				}
				if i%3 == 0 {
					if err := ix.DeleteBackup(testBackup(i, at).ID); err != nil {
						errc <- err
						return
					}
				}
			}
		}()
		for range 3 { // readers, the first of them loading the copy while the writers run
			wg.Add(1)
			go func() {
				defer wg.Done()
				seen := map[string]int64{}
				for range 30 {
					all, err := ix.Backups()
					if err != nil {
						errc <- err
						return
					}
					ids := map[string]bool{}
					for _, b := range all {
						if ids[b.ID] {
							errc <- fmt.Errorf("record %s listed twice", b.ID)
							return
						}
						ids[b.ID] = true
						if b.Size < seen[b.ID] {
							errc <- fmt.Errorf("record %s went back from size %d to %d", b.ID, seen[b.ID], b.Size)
							return
						}
						seen[b.ID] = b.Size
					}
				}
			}()
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatalf("round %d: %v", round, err)
		}
		sameAsDisk(t, ix, fmt.Sprintf("round %d", round))
		all, _ := ix.Backups()
		for _, b := range all {
			if i := b.Size >> 20; b.ID == testBackup(int(i), at).ID && i < n && b.Size != int64(i)<<20+4 {
				t.Fatalf("round %d: record %d has size %d, want four updates", round, i, b.Size)
			}
		}
		ix.Close()
	}
}

func TestBackupsPastTheMemoryBoundAreDecodedEachTime(t *testing.T) {
	old := maxRecordBytes
	t.Cleanup(func() { maxRecordBytes = old })
	maxRecordBytes = 10 * 1100 // about ten records
	ix := openTest(t)
	at := time.Now().UTC()
	for i := range 8 {
		if err := ix.CreateBackup(testBackup(i, at)); err != nil {
			t.Fatal(err)
		}
	}
	sameAsDisk(t, ix, "under the bound")
	for i := 8; i < 12; i++ { // the copy outgrows the bound as it follows these
		if err := ix.CreateBackup(testBackup(i, at)); err != nil {
			t.Fatal(err)
		}
	}
	all, err := ix.Backups()
	if err != nil || len(all) != 12 {
		t.Fatalf("past the bound: %d records, %v", len(all), err)
	}
	ix.records.mu.Lock()
	kept := ix.records.all != nil
	ix.records.mu.Unlock()
	if kept || !ix.records.tooMany.Load() {
		t.Fatal("records past the bound were kept in memory")
	}
	if err := ix.DeleteBackup(all[0].ID); err != nil {
		t.Fatal(err)
	}
	if again, err := ix.Backups(); err != nil || len(again) != 11 {
		t.Fatalf("after a delete: %d records, %v", len(again), err)
	}
}
