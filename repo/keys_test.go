package repo_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/local"
)

// A key object of another repository that opens with the same passphrase (copied in by
// mistake, or left by restoring keys/ from the wrong copy) is not this repository's key: the
// repository still opens with its own key, whichever sorts first, and repo passwd replaces
// its own key, so the repository opens with the new passphrase afterwards.
func TestForeignKeyWithTheSamePassphrase(t *testing.T) {
	ctx := context.Background()
	const pw = "same passphrase"
	for _, name := range []string{"keys/00000000-0000-0000-0000-000000000000", "keys/ffffffff-ffff-ffff-ffff-ffffffffffff"} {
		dir := t.TempDir()
		open := func(sub string) *local.Local {
			be, err := local.Open(filepath.Join(dir, sub))
			if err != nil {
				t.Fatal(err)
			}
			return be
		}
		a, b := open("a"), open("b")
		for _, be := range []*local.Local{a, b} {
			if _, err := repo.Init(ctx, be, repo.InitOptions{Encryption: repo.EncryptionAES, Password: pw}); err != nil {
				t.Fatal(err)
			}
		}
		keys, err := filepath.Glob(filepath.Join(dir, "b", "keys", "*"))
		if err != nil || len(keys) != 1 {
			t.Fatalf("keys of b: %v %v", keys, err)
		}
		foreign, err := os.ReadFile(keys[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Put(ctx, name, foreign); err != nil {
			t.Fatal(err)
		}
		if _, err := repo.Unlock(ctx, a, pw); err != nil {
			t.Fatalf("%s: open with a foreign key beside its own: %v", name, err)
		}
		if err := repo.ChangePassword(ctx, a, pw, "new passphrase"); err != nil {
			t.Fatalf("%s: passwd: %v", name, err)
		}
		if _, err := repo.Unlock(ctx, a, "new passphrase"); err != nil {
			t.Fatalf("%s: open with the new passphrase after passwd: %v", name, err)
		}
	}
	// An unencrypted repository has no passphrase to change, and gets no key object.
	plain, err := local.Open(filepath.Join(t.TempDir(), "plain"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(ctx, plain, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := repo.ChangePassword(ctx, plain, pw, "new passphrase"); err == nil {
		t.Error("passwd of an unencrypted repository succeeded")
	}
	if err := plain.List(ctx, "keys/", func(oi backend.ObjectInfo) error {
		t.Errorf("passwd of an unencrypted repository wrote a key object %s", oi.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
