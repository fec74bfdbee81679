package repo_test

import (
	"context"
	"errors"
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

// passwdDuringOpen is a backend on which another process runs repo passwd from old to new
// between an open's listing of the key objects and its reading of them.
type passwdDuringOpen struct {
	backend.Backend
	t        *testing.T
	old, new string
	done     bool
}

func (b *passwdDuringOpen) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	if err := b.Backend.List(ctx, prefix, fn); err != nil {
		return err
	}
	if prefix == "keys/" && !b.done {
		b.done = true
		if err := repo.ChangePassword(ctx, b.Backend, b.old, b.new); err != nil {
			b.t.Fatal(err)
		}
	}
	return nil
}

// A repository opens while another process changes a passphrase: with a passphrase whose
// key stays, and with the new one, whatever the other process removed meanwhile.
func TestOpenDuringPasswd(t *testing.T) {
	ctx := context.Background()
	be, err := local.Open(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(ctx, be, repo.InitOptions{Encryption: repo.EncryptionAES, Password: "a"}); err != nil {
		t.Fatal(err)
	}
	// A second key, as an interrupted repo passwd from a to c leaves.
	if err := repo.ChangePassword(ctx, &keepOldKey{be}, "a", "c"); err == nil {
		t.Fatal("passwd without removing the old key succeeded")
	}
	if _, err := repo.Unlock(ctx, &passwdDuringOpen{Backend: be, t: t, old: "a", new: "b"}, "c"); err != nil {
		t.Errorf("open with c while a passwd from a to b ran: %v", err)
	}
	if _, err := repo.Unlock(ctx, &passwdDuringOpen{Backend: be, t: t, old: "b", new: "d"}, "d"); err != nil {
		t.Errorf("open with d while a passwd from b to d ran: %v", err)
	}
}

// keepOldKey is a backend on which repo passwd stops before it removes the old key.
type keepOldKey struct{ backend.Backend }

func (keepOldKey) Delete(context.Context, string) error { return errors.New("interrupted") }
