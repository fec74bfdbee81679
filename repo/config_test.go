package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
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
	// The config's second copy, which the forger did not replace, stands in: the repository
	// opens encrypted, and says its config is damaged.
	got, _, err := readConfig(ctx, be, "pw")
	if err != nil || got.Encryption != EncryptionAES || got.damage == "" {
		t.Errorf("a forged config beside its intact copy: %+v, %v; want the copy's, encrypted", got, err)
	}
	if err := be.Delete(ctx, configCopyKey); err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"pw", ""} {
		if _, _, err := readConfig(ctx, be, pw); err == nil {
			t.Errorf("passphrase %q: a forged unencrypted config of an encrypted repository opened", pw)
		}
	}
	// The key objects removed too: their second copies tell.
	saved := map[string][]byte{}
	if err := be.ListKeys(ctx, "keys/", func(key string) error {
		b, err := getAll(ctx, be, key)
		saved[key] = b
		return err
	}); err != nil || len(saved) == 0 {
		t.Fatalf("key objects: %v, %v", saved, err)
	}
	for key := range saved {
		if err := be.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := readConfig(ctx, be, ""); err == nil || !strings.Contains(err.Error(), "it was replaced") {
		t.Errorf("a forged unencrypted config, the key objects removed but their copies left: %v; want it refused as replaced", err)
	}
	for key, b := range saved {
		if err := be.Put(ctx, key, b); err != nil {
			t.Fatal(err)
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

// The config has a second copy (docs/design.md, "Creating a repository"). When the config is
// damaged or missing the copy stands in, check says so and repair writes the config again; a
// copy missing or damaged is written again from the config. Both damaged, or a config of a
// format this cairn does not read, do not open: no older copy stands in for a newer config.
func TestConfigCopyStandsInForADamagedConfig(t *testing.T) {
	for _, o := range []InitOptions{{}, {Encryption: EncryptionAES, Password: "pw"}} {
		t.Run(o.Encryption+"encryption", func(t *testing.T) { testConfigCopy(t, o) })
	}
}

func testConfigCopy(t *testing.T, o InitOptions) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, be, o); err != nil {
		t.Fatal(err)
	}
	read := func(name string) []byte {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	good := read("config")
	if !bytes.Equal(read(configCopyKey), good) {
		t.Fatal("init stored no second copy of the config, or another one")
	}
	open := func() *Repository {
		t.Helper()
		r, err := Open(ctx, be, nil, Options{Password: o.Password})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	check := func(r *Repository, wantProblem, wantNote string) *CheckReport {
		t.Helper()
		rep := &CheckReport{Classes: map[string]int{}}
		if err := r.checkConfig(ctx, rep); err != nil {
			t.Fatal(err)
		}
		problems, notes := strings.Join(rep.Problems, "\n"), strings.Join(rep.Notes, "\n")
		if (wantProblem == "") != (problems == "") || !strings.Contains(problems, wantProblem) ||
			(wantNote == "") != (notes == "") || !strings.Contains(notes, wantNote) {
			t.Fatalf("check: problems %q, notes %q; want %q, %q", problems, notes, wantProblem, wantNote)
		}
		return rep
	}
	mend := func(r *Repository, rep *CheckReport, want string) {
		t.Helper()
		if got, err := r.MendConfig(ctx, rep); err != nil || got != want {
			t.Fatalf("repair wrote %q (%v), want %q", got, err, want)
		}
		if !bytes.Equal(read("config"), good) || !bytes.Equal(read(configCopyKey), good) {
			t.Fatal("after repair the config and its copy are not the config init wrote")
		}
	}
	r := open()
	check(r, "", "")

	// A byte of the config changed (one its MAC covers): the copy stands in.
	damaged := bytes.Replace(good, []byte(`"id": "`), []byte(`"id": "0`), 1)
	write("config", damaged)
	r = open()
	rep := check(r, "config is damaged (its check does not match); its second copy is intact", "")
	mend(r, rep, "config")
	check(r, "", "")
	check(open(), "", "")

	// The config missing: the copy stands in.
	if err := os.Remove(filepath.Join(dir, "config")); err != nil {
		t.Fatal(err)
	}
	if _, err := Init(ctx, be, o); !errors.Is(err, ErrExists) {
		t.Fatalf("init over a repository that has only its config's copy: %v", err)
	}
	r = open()
	rep = check(r, "missing object: config is missing", "")
	mend(r, rep, "config")

	// The copy missing, then damaged: written again from the config.
	if err := os.Remove(filepath.Join(dir, configCopyKey)); err != nil {
		t.Fatal(err)
	}
	r = open()
	mend(r, check(r, "", "the config has no second copy"), configCopyKey)
	write(configCopyKey, []byte("junk"))
	r = open()
	mend(r, check(r, "config-copy differs from the config", ""), configCopyKey)

	// Both damaged: nothing opens.
	write("config", damaged)
	write(configCopyKey, []byte("junk"))
	if _, err := Open(ctx, be, nil, Options{Password: o.Password}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "damaged too") {
		t.Fatalf("config and copy damaged: %v", err)
	}
	// A config of a format this cairn does not read: its copy does not stand in.
	write(configCopyKey, good)
	write("config", bytes.Replace(good, []byte(`"version": `), []byte(`"version": 9`), 1))
	if _, err := Open(ctx, be, nil, Options{Password: o.Password}); err == nil || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("a config of an unknown format: %v", err)
	}
}
