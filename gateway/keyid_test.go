package gateway_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/repo"
)

// TestAReplacedConfigIsRefused: someone who can write to the bucket but has no passphrase
// replaces an encrypted repository's config with one of the same id that turns encryption off
// under a master key of their choosing (its MAC made with that key), and removes the key
// objects and the config's copy. A gateway whose index was made with the repository refuses
// it, as damage, instead of writing every later backup in clear under the attacker's key.
func TestAReplacedConfigIsRefused(t *testing.T) {
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state"), Password: "secret"}
	if _, err := gateway.Init(context.Background(), cfg, repo.InitOptions{BlockSize: 4 << 10, Encryption: repo.EncryptionAES, Password: cfg.Password}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(adminCtx(), gateway.BackupRequest{Volume: image(t, dir, "vm.img", 64<<10)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile(filepath.Join(cfg.Repo, "config"))
	if err != nil {
		t.Fatal(err)
	}
	var c repo.Config
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	c.Encryption, c.MasterKey, c.MAC = repo.EncryptionNone, make([]byte, 64), nil
	if _, err := rand.Read(c.MasterKey); err != nil {
		t.Fatal(err)
	}
	unsigned, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var key [32]byte
	blake3.DeriveKey("cairn 2026-12 config mac", c.MasterKey, key[:])
	mac := hmac.New(sha256.New, key[:])
	mac.Write(unsigned)
	c.MAC = mac.Sum(nil)
	forged, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Repo, "config"), forged, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, gone := range []string{"keys", "key-copies", "config-copy"} {
		if err := os.RemoveAll(filepath.Join(cfg.Repo, gone)); err != nil {
			t.Fatal(err)
		}
	}

	s, err = gateway.Open(context.Background(), cfg)
	if err == nil {
		s.Close()
		t.Fatal("a gateway opened a repository whose config was replaced with one under another master key, encryption off")
	}
	if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "replaced") {
		t.Fatalf("open of a repository whose config was replaced: %v; want damage that says the config was replaced", err)
	}
}
