package repo_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/retry"
	"github.com/cairn-backup/cairn/tests/testutil"
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
	be := encryptedRepo(t, "a")
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

// Several processes init the same location at once (two admins, two gateways started with an
// init-if-missing path): each finds no config, and each would write its own key object and
// config over the other's, leaving some of them going on with a master key the repository no
// longer has. Exactly one creates the repository; the others fail with ErrExists and take
// their key objects back, and the repository opens with the winner's passphrase.
func TestConcurrentInitCreatesOneRepository(t *testing.T) {
	for _, kind := range []string{"local", "s3"} {
		t.Run(kind, func(t *testing.T) {
			var open func() backend.Backend
			if kind == "local" {
				dir := filepath.Join(t.TempDir(), "repo")
				open = func() backend.Backend {
					be, err := local.Open(dir)
					if err != nil {
						t.Fatal(err)
					}
					return be
				}
			} else {
				srv := testutil.StartS3(t)
				open = func() backend.Backend { return openS3(t, srv, srv.Bucket, "racy") }
			}
			ctx := context.Background()
			const n = 3
			var passed sync.WaitGroup // every init is past its check that the location is free
			passed.Add(n)
			errs := make([]error, n)
			cfgs := make([]repo.Config, n)
			var wg sync.WaitGroup
			for i := range n {
				be := open()
				wg.Go(func() {
					pw := fmt.Sprintf("passphrase %d", i)
					cfgs[i], errs[i] = repo.Init(ctx, be, repo.InitOptions{Encryption: repo.EncryptionAES,
						AskPassword: func() (string, error) {
							passed.Done()
							passed.Wait()
							return pw, nil
						}})
				})
			}
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Errorf("inits %d and %d both succeeded", winner, i)
				case err == nil:
					winner = i
				case !errors.Is(err, repo.ErrExists):
					t.Errorf("init %d: %v; want ErrExists", i, err)
				}
			}
			if winner < 0 {
				t.Fatal("no init succeeded")
			}
			be := open()
			if _, err := repo.Unlock(ctx, be, fmt.Sprintf("passphrase %d", winner)); err != nil {
				t.Fatalf("open with the passphrase of the init that succeeded: %v", err)
			}
			var stored repo.Config
			if rc, err := be.Get(ctx, "config"); err != nil {
				t.Fatal(err)
			} else if err := json.NewDecoder(rc).Decode(&stored); err != nil {
				t.Fatal(err)
			} else {
				rc.Close()
			}
			if stored.ID != cfgs[winner].ID {
				t.Errorf("repository %s, want the one init %d created (%s)", stored.ID, winner, cfgs[winner].ID)
			}
			keys := 0
			if err := be.List(ctx, "keys/", func(backend.ObjectInfo) error { keys++; return nil }); err != nil {
				t.Fatal(err)
			}
			if keys != 1 {
				t.Errorf("%d key objects, want the winner's alone", keys)
			}
		})
	}
}

// An init whose config was stored but whose answer was lost is retried, and the retry finds a
// config there: its own, read back, is success; one that cannot be read back is an error, and
// the key object stays, since the config there may well be this init's and would open with
// no other key.
func TestInitRetriedAfterALostAnswer(t *testing.T) {
	ctx := context.Background()
	for _, readBack := range []bool{true, false} {
		l, err := local.Open(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatal(err)
		}
		f := faulty.New(l, 1)
		f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "config", Nth: 1, Effect: faulty.FailAfter})
		if !readBack {
			f.Add(faulty.Rule{Methods: faulty.Get, Prefix: "config", Nth: 1, Err: errors.New("read error")})
		}
		be := retry.New(f, retry.Options{Attempts: 3, MinDelay: time.Millisecond})
		_, err = repo.Init(ctx, be, repo.InitOptions{Encryption: repo.EncryptionAES, Password: "pw"})
		switch {
		case readBack && err != nil:
			t.Errorf("init whose config was stored by an attempt whose answer was lost: %v", err)
		case !readBack && (err == nil || errors.Is(err, repo.ErrExists)):
			t.Errorf("init that cannot read back the config it may have stored: %v; want an error, not ErrExists", err)
		}
		if _, err := repo.Unlock(ctx, l, "pw"); err != nil {
			t.Errorf("read back %v: open: %v", readBack, err)
		}
	}
}

// A repository whose config was lost (removed by mistake, not copied with the rest) is not
// an empty location: an init there would give it a second master key, with which none of its
// backups opens and every gc stops. Init refuses it, writes nothing, and the repository opens
// again, every backup whole, once its config is put back.
func TestInitRefusesALocationThatHoldsBackups(t *testing.T) {
	ctx := context.Background()
	o := repo.InitOptions{Encryption: repo.EncryptionAES, Password: "pw"}
	f := newFixture(t, o)
	vol := randomVolume(1, 1<<20)
	m := f.backup(t, "b1", &memSource{data: vol}, nil)
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(filepath.Join(f.dir, "repo", "config"))
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Delete(ctx, "config"); err != nil {
		t.Fatal(err)
	}
	for _, enc := range []string{repo.EncryptionAES, repo.EncryptionNone} {
		if _, err := repo.Init(ctx, be, repo.InitOptions{Encryption: enc, Password: "pw"}); !errors.Is(err, repo.ErrExists) {
			t.Errorf("%s init where a repository lost its config: %v, want ErrExists", enc, err)
		}
	}
	keys := 0
	if err := be.List(ctx, "keys/", func(backend.ObjectInfo) error { keys++; return nil }); err != nil {
		t.Fatal(err)
	}
	if keys != 1 {
		t.Errorf("%d key objects, want the repository's own alone", keys)
	}
	if err := be.Put(ctx, "config", saved); err != nil {
		t.Fatal(err)
	}
	g := fixtureOn(t, be, t.TempDir(), "index", repo.Options{Password: "pw"})
	if got := g.restore(t, m); !bytes.Equal(got, vol) {
		t.Error("the backup does not restore whole once the config is back")
	}
}

// A passwd that was interrupted before it removed the old key reports failure; run again, it
// succeeds, and the repository then has two key objects under the new passphrase (two
// passwds from one passphrase to the same new one at once leave the same). A later passwd
// must retire the passphrase it changes, every key object of it: until then the old
// passphrase, perhaps changed because it leaked, went on opening the repository.
func TestPasswdRetiresEveryKeyOfTheOldPassphrase(t *testing.T) {
	ctx := context.Background()
	be := encryptedRepo(t, "a")
	if err := repo.ChangePassword(ctx, &keepOldKey{be}, "a", "b"); err == nil {
		t.Fatal("passwd without removing the old key succeeded")
	}
	if err := repo.ChangePassword(ctx, be, "a", "b"); err != nil {
		t.Fatalf("passwd from a to b again: %v", err)
	}
	if err := repo.ChangePassword(ctx, be, "b", "c"); err != nil {
		t.Fatalf("passwd from b to c: %v", err)
	}
	for _, pw := range []string{"a", "b"} {
		if _, err := repo.Unlock(ctx, be, pw); !errors.Is(err, repo.ErrWrongPassword) {
			t.Errorf("open with %s after passwd from b to c: %v; want ErrWrongPassword", pw, err)
		}
	}
	if _, err := repo.Unlock(ctx, be, "c"); err != nil {
		t.Errorf("open with the new passphrase: %v", err)
	}
}

// encryptedRepo makes a new encrypted repository in a directory, with passphrase password.
func encryptedRepo(t *testing.T, password string) backend.Backend {
	t.Helper()
	be, err := local.Open(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(context.Background(), be, repo.InitOptions{Encryption: repo.EncryptionAES, Password: password}); err != nil {
		t.Fatal(err)
	}
	return be
}

// Several keys: each opens the repository with its own passphrase and lists with who added
// it; a passphrase that already opens a key is refused for a new one; a command may not
// remove the key it opened with, and a removed key's passphrase opens nothing.
func TestSeveralKeys(t *testing.T) {
	ctx := context.Background()
	be, err := local.Open(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Init(ctx, be, repo.InitOptions{Encryption: repo.EncryptionAES, Password: "a", KeyLabel: "first admin"}); err != nil {
		t.Fatal(err)
	}
	ka := keyring(t, be, "a")
	if _, err := ka.Add(ctx, "a", "again"); !errors.Is(err, repo.ErrKeyExists) {
		t.Fatalf("a key with the passphrase of an existing one: %v, want ErrKeyExists", err)
	}
	b, err := ka.Add(ctx, "b", "gateway gw2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ka.Add(ctx, "c", "bad\x1blabel"); err == nil {
		t.Fatal("a label with a control character was taken")
	}
	all, err := ka.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Label != "first admin" || !all[0].Current || all[1].ID != b.ID || all[1].Label != "gateway gw2" || all[1].Current ||
		all[1].Host == "" || all[1].User == "" || all[1].Created.IsZero() || all[0].Problem != "" || all[1].Problem != "" {
		t.Fatalf("keys: %+v", all)
	}
	for _, pw := range []string{"a", "b"} {
		if _, err := repo.Unlock(ctx, be, pw); err != nil {
			t.Errorf("open with %s: %v", pw, err)
		}
	}
	if _, err := ka.Remove(ctx, all[0].ID); !errors.Is(err, repo.ErrOwnKey) {
		t.Fatalf("remove the key in use: %v, want ErrOwnKey", err)
	}
	if _, err := ka.Remove(ctx, "no-such-key"); !errors.Is(err, repo.ErrNoSuchKey) {
		t.Fatalf("remove a key that is not there: %v, want ErrNoSuchKey", err)
	}
	kb := keyring(t, be, "b")
	if kb.Current() != b.ID {
		t.Fatalf("b opened key %s, want %s", kb.Current(), b.ID)
	}
	gone, err := kb.Remove(ctx, all[0].ID[:8])
	if err != nil || gone.ID != all[0].ID || gone.Label != "first admin" {
		t.Fatalf("remove a's key by its first 8 characters: %+v %v", gone, err)
	}
	if _, err := repo.Unlock(ctx, be, "a"); !errors.Is(err, repo.ErrWrongPassword) {
		t.Errorf("open with a removed key's passphrase: %v, want ErrWrongPassword", err)
	}
	if err := be.List(ctx, "meta/keys/", func(oi backend.ObjectInfo) error {
		if !strings.HasSuffix(oi.Key, hex.EncodeToString([]byte(b.ID))) {
			t.Errorf("info object %s left beside the one key", oi.Key)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Two ids with the same first characters: a prefix naming both is refused.
	kf, err := os.ReadFile(filepath.Join(be.Location(), "keys", b.ID))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"abcd0001-0000-0000-0000-000000000000", "abcd0002-0000-0000-0000-000000000000"} {
		if err := be.Put(ctx, "keys/"+id, kf); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kb.Remove(ctx, "abcd"); !errors.Is(err, repo.ErrAmbiguousKey) {
		t.Fatalf("remove by a prefix of two keys: %v, want ErrAmbiguousKey", err)
	}
	if _, err := kb.Remove(ctx, "abcd0002"); err != nil {
		t.Fatalf("remove by a unique prefix: %v", err)
	}
}

// A key's info object is sealed under its own name: one altered, or moved to another key,
// lists as damaged, and the key opens the repository all the same.
func TestKeyInfoIsAuthenticated(t *testing.T) {
	ctx := context.Background()
	be := encryptedRepo(t, "a")
	ka := keyring(t, be, "a")
	b, err := ka.Add(ctx, "b", "b's")
	if err != nil {
		t.Fatal(err)
	}
	infoOf := func(id string) string { return "meta/keys/" + hex.EncodeToString([]byte(id)) }
	moved, err := getBytes(ctx, be, infoOf(ka.Current()))
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Put(ctx, infoOf(b.ID), moved); err != nil {
		t.Fatal(err)
	}
	all, err := ka.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if damaged := strings.Contains(k.Problem, "damaged info"); damaged != (k.ID == b.ID) || k.ID == b.ID && k.Label != "" {
			t.Errorf("key %s with %s's info: %+v", k.ID, ka.Current(), k)
		}
	}
	if _, err := repo.Unlock(ctx, be, "b"); err != nil {
		t.Errorf("open with a key whose info is damaged: %v", err)
	}
}

// Two removals at once, each by the key the other removes ("A removes B" while "B removes
// A"), would leave no key at all. Under the keys claim the second finds its own key gone and
// refuses, and the repository opens with the first one's key.
func TestTwoKeysRemovingEachOtherLeaveOne(t *testing.T) {
	ctx := context.Background()
	be := encryptedRepo(t, "a")
	ka := keyring(t, be, "a")
	b, err := ka.Add(ctx, "b", "")
	if err != nil {
		t.Fatal(err)
	}
	paused := &pauseBeforeKeyDelete{Backend: be, reached: make(chan struct{}), resume: make(chan struct{})}
	kaPaused, err := repo.OpenKeyring(ctx, paused, "a", repo.LockOptions{Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	kb, err := repo.OpenKeyring(ctx, be, "b", repo.LockOptions{Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	aDone := make(chan error, 1)
	go func() {
		_, err := kaPaused.Remove(ctx, b.ID)
		aDone <- err
	}()
	<-paused.reached // a has checked its own key and is about to delete b's
	_, bErr := kb.Remove(ctx, ka.Current())
	close(paused.resume)
	if err := <-aDone; err != nil {
		t.Fatalf("a removing b: %v", err)
	}
	if !errors.Is(bErr, repo.ErrKeyGone) {
		t.Errorf("b removing a while a removed b: %v, want ErrKeyGone", bErr)
	}
	if _, err := repo.Unlock(ctx, be, "a"); err != nil {
		t.Fatalf("after two keys removed each other, the repository does not open with a: %v", err)
	}
	// A passwd whose key was removed since it opened changes nothing.
	kc, err := ka.Add(ctx, "c", "")
	if err != nil {
		t.Fatal(err)
	}
	stale := keyring(t, be, "c")
	if _, err := ka.Remove(ctx, kc.ID); err != nil {
		t.Fatal(err)
	}
	if err := stale.ChangePassword(ctx, "d"); !errors.Is(err, repo.ErrKeyGone) {
		t.Errorf("passwd by a removed key: %v, want ErrKeyGone", err)
	}
	if _, err := repo.Unlock(ctx, be, "d"); !errors.Is(err, repo.ErrWrongPassword) {
		t.Errorf("a passwd by a removed key left a key of its new passphrase: %v", err)
	}
}

// pauseBeforeKeyDelete holds the first deletion of a key object until resume is closed or a
// second has passed.
type pauseBeforeKeyDelete struct {
	backend.Backend
	once            sync.Once
	reached, resume chan struct{}
}

func (p *pauseBeforeKeyDelete) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, "keys/") {
		p.once.Do(func() {
			close(p.reached)
			select {
			case <-p.resume:
			case <-time.After(time.Second):
			}
		})
	}
	return p.Backend.Delete(ctx, key)
}

func keyring(t *testing.T, be backend.Backend, password string) *repo.Keyring {
	t.Helper()
	kr, err := repo.OpenKeyring(context.Background(), be, password, repo.LockOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func getBytes(ctx context.Context, be backend.Backend, key string) ([]byte, error) {
	rc, err := be.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// A key object has a second copy (docs/design.md, "A key object's second copy"). With one
// passphrase, a damaged key object no longer shuts everyone out: its copy opens, lists and
// retires as the key would, check reports it and repair writes it again. A copy whose key
// object is gone (a removed key) opens nothing, and repair removes it; a missing copy is
// stored again.
func TestKeyCopyStandsInForADamagedKey(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{Encryption: repo.EncryptionAES, Password: "a"})
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	files := f.objectFiles(t)
	check := func(wantProblem, wantNote string) *repo.CheckReport {
		t.Helper()
		rep, err := f.r.Check(ctx, repo.CheckOptions{})
		if err != nil {
			t.Fatal(err)
		}
		problems, notes := strings.Join(rep.Problems, "\n"), strings.Join(rep.Notes, "\n")
		if (wantProblem == "") != (problems == "") || !strings.Contains(problems, wantProblem) || !strings.Contains(notes, wantNote) ||
			wantNote == "" && strings.Contains(notes, "key") {
			t.Fatalf("check: problems %q, notes %q; want %q, %q", problems, notes, wantProblem, wantNote)
		}
		return rep
	}
	mend := func(rep *repo.CheckReport, want int) {
		t.Helper()
		if n, err := f.r.MendKeys(ctx, rep, time.Second); err != nil || n != want {
			t.Fatalf("repair mended %d key objects (%v), want %d", n, err, want)
		}
		check("", "")
	}
	id := keyring(t, be, "a").Current()
	key, cp := "keys/"+id, "key-copies/"+id
	if !bytes.Equal(files.read(key), files.read(cp)) {
		t.Fatal("init stored no copy of its key object, or another one")
	}
	good := files.read(key)
	check("", "")

	// The key object damaged: its copy opens the repository and lists as the key.
	files.flip(key)
	if _, err := repo.Unlock(ctx, be, "a"); err != nil {
		t.Fatalf("open with a damaged key object beside its intact copy: %v", err)
	}
	if ks, err := keyring(t, be, "a").List(ctx); err != nil || len(ks) != 1 || !ks[0].Current || !strings.Contains(ks[0].Problem, "second copy is intact") {
		t.Fatalf("key list: %+v, %v", ks, err)
	}
	mend(check("key object "+id+" is damaged", ""), 1)
	if !bytes.Equal(files.read(key), good) {
		t.Fatal("repair did not write the key object again from its copy")
	}

	// Both damaged: nothing opens.
	files.flip(key)
	files.flip(cp)
	if _, err := repo.Unlock(ctx, be, "a"); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("open with the key object and its copy damaged: %v", err)
	}
	files.write(key, good)
	files.write(cp, good)

	// passwd retires a damaged key its copy opens, copy and all.
	files.flip(key)
	if err := repo.ChangePassword(ctx, be, "a", "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Unlock(ctx, be, "a"); !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("the old passphrase after passwd: %v", err)
	}
	if files.exists(key) || files.exists(cp) {
		t.Fatal("passwd left the old key object or its copy")
	}
	kb := keyring(t, be, "b")
	id = kb.Current()
	key, cp = "keys/"+id, "key-copies/"+id
	if !bytes.Equal(files.read(key), files.read(cp)) {
		t.Fatal("passwd stored no copy of its new key object")
	}

	// A removed key's copy left behind (by an earlier cairn's removal) opens nothing, and says
	// which copy its passphrase opens; repair keeps it (it may be a lost key object's), and key
	// remove removes it. A missing copy is stored again.
	c, err := kb.Add(ctx, "c", "")
	if err != nil {
		t.Fatal(err)
	}
	cCopy := files.read("key-copies/" + c.ID)
	if _, err := kb.Remove(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if files.exists("keys/"+c.ID) || files.exists("key-copies/"+c.ID) {
		t.Fatal("key remove left the key object or its copy")
	}
	files.write("key-copies/"+c.ID, cCopy)
	if _, err := repo.Unlock(ctx, be, "c"); !errors.Is(err, repo.ErrKeyObjectMissing) || !strings.Contains(err.Error(), "key-copies/"+c.ID) {
		t.Fatalf("a removed key's passphrase with its copy left: %v; want it refused, naming the copy", err)
	}
	files.remove(cp)
	rep := check("", "1 key objects are missing while their second copies are stored")
	check("", "1 key objects have no second copy")
	if n, err := f.r.MendKeys(ctx, rep, time.Second); err != nil || n != 1 {
		t.Fatalf("repair mended %d key objects (%v), want 1: the missing copy", n, err)
	}
	if !files.exists("key-copies/"+c.ID) || files.exists("keys/"+c.ID) || !bytes.Equal(files.read(cp), files.read(key)) {
		t.Fatal("repair removed a copy without its key object, wrote the key object from it, or did not store the missing copy")
	}
	if ks, err := kb.List(ctx); err != nil || len(ks) != 2 || !hasKey(ks, c.ID, "key object missing") {
		t.Fatalf("key list with a copy left: %+v, %v; want it listed with its problem", ks, err)
	}
	if _, err := kb.Remove(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if files.exists("key-copies/" + c.ID) {
		t.Fatal("key remove left the copy of a key whose object is missing")
	}
	if _, err := repo.Unlock(ctx, be, "c"); !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("a removed key's passphrase once its copy is removed: %v", err)
	}
	check("", "")

	// A damaged copy is written again from its key object.
	files.flip(cp)
	mend(check(cp+" differs from its key object", ""), 1)
	if _, err := repo.Unlock(ctx, be, "b"); err != nil {
		t.Fatal(err)
	}

	// A key object removed alone (by an earlier cairn) is removed, though its copy is left:
	// a command that opened with it holds nothing any more.
	files.remove(key)
	if _, err := kb.Add(ctx, "d", ""); !errors.Is(err, repo.ErrKeyGone) {
		t.Fatalf("key add with a key removed but for its copy: %v, want ErrKeyGone", err)
	}
}

// hasKey reports whether ks lists key id with a problem that says what.
func hasKey(ks []repo.KeyInfo, id, what string) bool {
	for _, k := range ks {
		if k.ID == id && strings.Contains(k.Problem, what) {
			return true
		}
	}
	return false
}

// A key object removed outside cairn, its copy left: until 2026-12-07 (later that day) the
// repository with one passphrase no longer opened ("encrypted repository has no key objects")
// and nothing said the copy was there; with two, repair removed the copy, the last wrapping
// of the master key under that passphrase. Now the passphrase's unlock names the copy and
// RestoreKey writes the key object again from it; repair never touches it (docs/design.md, "A
// key object lost, its copy left").
func TestALostKeyObjectIsRestoredFromItsCopy(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{Encryption: repo.EncryptionAES, Password: "a"})
	vol := randomVolume(91, 1<<20)
	m := f.backup(t, "x", &memSource{data: vol}, nil)
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	files := f.objectFiles(t)
	ka := keyring(t, be, "a")
	b, err := ka.Add(ctx, "b", "")
	if err != nil {
		t.Fatal(err)
	}

	// B's key object lost: B's passphrase is told, A's repair keeps the copy, B restores it.
	files.remove("keys/" + b.ID)
	if _, err := repo.Unlock(ctx, be, "b"); !errors.Is(err, repo.ErrKeyObjectMissing) || !errors.Is(err, repo.ErrCorrupt) ||
		!strings.Contains(err.Error(), "'cairn repo key restore'") {
		t.Fatalf("open with b, its key object lost: %v; want the missing key object named", err)
	}
	if _, err := repo.Unlock(ctx, be, "wrong"); !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("open with a passphrase no key has: %v; want ErrWrongPassword, the copy unnamed", err)
	}
	rep, err := f.r.Check(ctx, repo.CheckOptions{})
	if err != nil || !rep.OK() || !hasText(rep.Notes, "1 key objects are missing while their second copies are stored") {
		t.Fatalf("check: %v %+v", err, rep)
	}
	if n, err := f.r.MendKeys(ctx, rep, time.Second); err != nil || n != 0 || !files.exists("key-copies/"+b.ID) || files.exists("keys/"+b.ID) {
		t.Fatalf("repair with b's key object lost: %d mended (%v), copy there %v, key object there %v; want it left as it is",
			n, err, files.exists("key-copies/"+b.ID), files.exists("keys/"+b.ID))
	}
	if _, err := repo.RestoreKey(ctx, be, "a", repo.LockOptions{}); !errors.Is(err, repo.ErrKeyExists) {
		t.Fatalf("restore with a, whose key object is there: %v; want nothing to restore", err)
	}
	if id, err := repo.RestoreKey(ctx, be, "b", repo.LockOptions{}); err != nil || id != b.ID {
		t.Fatalf("restore with b: %q, %v; want %s", id, err, b.ID)
	}
	if !bytes.Equal(files.read("keys/"+b.ID), files.read("key-copies/"+b.ID)) {
		t.Fatal("the restored key object is not its copy's bytes")
	}
	if _, err := repo.Unlock(ctx, be, "b"); err != nil {
		t.Fatalf("open with b after its restore: %v", err)
	}

	// The one key object left lost: the repository opened with no passphrase until then.
	if _, err := ka.Remove(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(files.path("keys/" + ka.Current())); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Unlock(ctx, be, "a"); !errors.Is(err, repo.ErrKeyObjectMissing) {
		t.Fatalf("open with a, the only key object lost: %v; want the missing key object named", err)
	}
	if id, err := repo.RestoreKey(ctx, be, "a", repo.LockOptions{}); err != nil || id != ka.Current() {
		t.Fatalf("restore with a: %q, %v", id, err)
	}
	g := fixtureOn(t, be, f.dir, "index-after", repo.Options{Password: "a"})
	if !bytes.Equal(g.restore(t, m), vol) {
		t.Fatal("the backup does not restore byte-exact through the restored key")
	}
}

// removesBeforeClaim removes the key copy key just before the first lock object is stored:
// a key remove that finished between RestoreKey's look at the copy and its claim.
type removesBeforeClaim struct {
	backend.Backend
	key  string
	done bool
}

func (r *removesBeforeClaim) Put(ctx context.Context, key string, b []byte) error {
	if strings.HasPrefix(key, "locks/") && !r.done {
		r.done = true
		if err := r.Backend.Delete(ctx, r.key); err != nil {
			return err
		}
	}
	return r.Backend.Put(ctx, key, b)
}

// RestoreKey reads the copy again under the keys claim: a key remove that came before the
// claim wins, and no key object is written from a copy that is gone.
func TestRestoreKeyLosesToAKeyRemove(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, repo.InitOptions{Encryption: repo.EncryptionAES, Password: "a"})
	be, err := local.Open(filepath.Join(f.dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := keyring(t, be, "a").Add(ctx, "b", "")
	if err != nil {
		t.Fatal(err)
	}
	files := f.objectFiles(t)
	files.remove("keys/" + b.ID)
	wrapped := &removesBeforeClaim{Backend: be, key: "key-copies/" + b.ID}
	if _, err := repo.RestoreKey(ctx, wrapped, "b", repo.LockOptions{}); !errors.Is(err, repo.ErrKeyGone) {
		t.Fatalf("restore racing a key remove: %v; want ErrKeyGone", err)
	}
	if files.exists("keys/" + b.ID) {
		t.Fatal("restore wrote a key object from a copy removed before its claim")
	}
	if _, err := repo.Unlock(ctx, be, "b"); !errors.Is(err, repo.ErrWrongPassword) {
		t.Fatalf("b after its key was removed: %v", err)
	}
}
