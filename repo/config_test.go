package repo

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/repo/backend/local"
)

// Whoever may write to the bucket can replace the config of an encrypted repository by one
// that says "not encrypted" and carries a master key of their own, with a MAC that fits (an
// unencrypted config's MAC is keyed by the key it carries). Opened as it says, the next
// backups would be stored in clear under a key the writer knows. The repository's key objects
// tell: it is refused, and nothing is read or written with that key.
func TestEncryptedConfigReplacedByAnUnencryptedOneIsRefused(t *testing.T) {
	ctx := context.Background()
	be, err := local.Open(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Init(ctx, be, InitOptions{Encryption: EncryptionAES, Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	forged := cfg
	forged.Encryption = EncryptionNone
	forged.MasterKey = make([]byte, masterKeyLen)
	if _, err := rand.Read(forged.MasterKey); err != nil {
		t.Fatal(err)
	}
	forged.MAC = configMAC(forged, forged.MasterKey)
	b, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Put(ctx, "config", b); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"pw", ""} {
		if _, _, err := readConfig(ctx, be, pw); err == nil {
			t.Errorf("passphrase %q: a forged unencrypted config of an encrypted repository opened", pw)
		}
	}
	// An encrypted init that stopped before its config leaves a key object: an unencrypted
	// init there is refused (it could not be opened), an encrypted one works.
	if err := be.Delete(ctx, "config"); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, be, InitOptions{}); err == nil {
		t.Error("an unencrypted init beside a key object succeeded")
	}
	if _, err := Init(ctx, be, InitOptions{Encryption: EncryptionAES, Password: "other"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := readConfig(ctx, be, "other"); err != nil {
		t.Errorf("encrypted init beside a leftover key object: %v", err)
	}
}
