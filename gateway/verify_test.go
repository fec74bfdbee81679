package gateway_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/repo"
)

// A backup deleted on another gateway, and its blocks removed by a gc there, while this
// gateway's index still shows it available: a verification here fails (its manifest is not
// found) and records nothing: it never reports the gc's removals as damage. (A delete and gc
// between the manifest's read and the verification's lock is the restore's case, which
// Restore refuses once it holds its lock: repo's TestRestoreOfABackupDeletedElsewhereWritesNothing,
// with Lost set as a verification sets it.)
func TestVerifyOfABackupDeletedElsewhereIsNoDamage(t *testing.T) {
	dir := t.TempDir()
	a, b, _, bk := backedUpOnA(t, filepath.Join(dir, "r"))
	if _, err := b.VerifyBackup(adminCtx(), bk.ID, nil); err != nil {
		t.Fatalf("verification on b before the delete: %v", err)
	}
	if _, err := a.DeleteBackup(adminCtx(), bk.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.GC(adminCtx(), repo.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	before := record(t, b, bk.ID).LastVerify
	if before == nil || before.Result != "ok" {
		t.Fatalf("the first verification's record: %+v", before)
	}
	res, err := b.VerifyBackup(adminCtx(), bk.ID, nil)
	if err == nil || errors.Is(err, repo.ErrCorrupt) || res != nil {
		t.Fatalf("verification on b after a deleted it: %+v, %v; want an error that is not damage", res, err)
	}
	t.Logf("the verification said: %v", err)
	if after := record(t, b, bk.ID); after != nil && (after.LastVerify == nil || after.LastVerify.Result != "ok" || !after.LastVerify.At.Equal(before.At)) {
		t.Fatalf("the failed verification was recorded: %+v", after.LastVerify)
	}
}
