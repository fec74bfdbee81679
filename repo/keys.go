package repo

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/cairn-backup/cairn/repo/backend"
)

// An encrypted repository has one master key and one or more key objects (keys/<id>), each
// wrapping it under a passphrase: an admin's, or a gateway host's. docs/design.md ("Several
// keys") has the rules and why a repository always keeps a key that opens it.

// Key errors, for the service layer to classify.
var (
	// ErrNoSuchKey: no key object has the id given.
	ErrNoSuchKey = errors.New("no such key")
	// ErrOwnKey: a command may not remove the key it opened the repository with.
	ErrOwnKey = errors.New("a command cannot remove the key it opened the repository with")
	// ErrKeyGone: the key the command opened with was removed, or its passphrase changed,
	// since it opened the repository.
	ErrKeyGone = errors.New("the key this command opened the repository with is gone")
	// ErrAmbiguousKey: several key objects' ids start with the prefix given.
	ErrAmbiguousKey = errors.New("several keys start with it")
	// ErrNotEncrypted: an unencrypted repository has no passphrase and no key objects.
	ErrNotEncrypted = errors.New("the repository is not encrypted: it has no passphrase and no key objects")
	// ErrKeyExists: the passphrase of a new key already opens one of the repository's keys.
	ErrKeyExists = errors.New("that passphrase already opens a key")
)

// metaKeys is the metadata kind of key info objects: meta/keys/<hex id>.
const metaKeys = "keys"

// keysClaim is the claim passwd, key add and key remove hold: one of them at a time, across
// every process and host.
const keysClaim = "keys"

// MaxKeyLabel is the longest label a key may have, in characters.
const MaxKeyLabel = 64

// KeyInfo describes one key object.
type KeyInfo struct {
	ID      string    `json:"id"`
	Label   string    `json:"label,omitempty"`
	Host    string    `json:"host,omitempty"`
	User    string    `json:"user,omitempty"`
	Created time.Time `json:"created,omitzero"`
	// Current: the key this passphrase opened.
	Current bool `json:"current"`
	// Problem says what is wrong with the key object or its info, if anything.
	Problem string `json:"problem,omitempty"`
}

// keyMeta is a key info object: who added the key, and when. Not secret, and not needed to
// open anything.
type keyMeta struct {
	Label   string    `json:"label,omitempty"`
	Host    string    `json:"host,omitempty"`
	User    string    `json:"user,omitempty"`
	Created time.Time `json:"created"`
}

// newKeyMeta describes a key this process adds now.
func newKeyMeta(label string) keyMeta {
	m := keyMeta{Label: label, Created: time.Now().UTC()}
	m.Host, _ = os.Hostname()
	if u, err := user.Current(); err == nil {
		m.User = u.Username
	}
	return m
}

func keyID(name string) string { return strings.TrimPrefix(name, "keys/") }

// putKeyMeta stores the info object of key object name, sealed like every metadata object.
func putKeyMeta(ctx context.Context, be backend.Backend, k *keys, name string, m keyMeta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := putSealed(ctx, be, k, metaKey(metaKeys, keyID(name)), b); err != nil {
		return fmt.Errorf("store info of %s: %w", name, err)
	}
	return nil
}

// ValidKeyLabel says what is wrong with label, or nil.
func ValidKeyLabel(label string) error {
	if !utf8.ValidString(label) || utf8.RuneCountInString(label) > MaxKeyLabel {
		return fmt.Errorf("key label: at most %d characters of valid UTF-8", MaxKeyLabel)
	}
	if strings.ContainsFunc(label, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return errors.New("key label: only printable characters (no control characters or tabs)")
	}
	return nil
}

// Keyring is an encrypted repository's keys, opened with one passphrase: enough to list,
// add and remove keys and change the passphrase, without an index (so it works beside a
// running gateway).
type Keyring struct {
	be       backend.Backend
	master   []byte
	keys     *keys
	password string
	current  string // the key object the passphrase opened
	locks    *locker
	wait     time.Duration
}

// OpenKeyring opens the keys of the encrypted repository in be with password.
func OpenKeyring(ctx context.Context, be backend.Backend, password string, o LockOptions) (*Keyring, error) {
	cfg, master, name, err := openConfig(ctx, be, password)
	if err != nil {
		return nil, err
	}
	if cfg.Encryption != EncryptionAES {
		return nil, fmt.Errorf("%s: %w", be.Location(), ErrNotEncrypted)
	}
	// Key objects are locked like every other object in an object-locked repository; a
	// removed one is hidden, and stays as a version until its date (docs/reliability.md).
	rt, err := useRetention(ctx, be, cfg.ObjectLock, false)
	if err != nil {
		return nil, err
	}
	k, err := deriveKeys(master, true)
	if err != nil {
		return nil, err
	}
	l := newLocker(be, k, o)
	l.retain = rt
	wait := o.Wait
	if wait <= 0 {
		wait = DefaultLockWait
	}
	return &Keyring{be: be, master: master, keys: k, password: password, current: name, locks: l, wait: wait}, nil
}

// Current returns the id of the key the passphrase opened.
func (kr *Keyring) Current() string { return keyID(kr.current) }

// List describes every key object, oldest first.
func (kr *Keyring) List(ctx context.Context) ([]KeyInfo, error) {
	var names []string
	if err := kr.be.ListKeys(ctx, "keys/", func(name string) error { names = append(names, name); return nil }); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := make([]KeyInfo, 0, len(names))
	for _, name := range names {
		ki := KeyInfo{ID: keyID(name), Current: name == kr.current}
		_, fromCopy, err := readKey(ctx, kr.be, name)
		switch {
		case errors.Is(err, backend.ErrNotFound):
			continue // removed since the listing
		case errors.Is(err, errDamagedKey):
			ki.Problem = "damaged key object (its checksum does not match), with no intact second copy: remove it, or restore it from a copy"
		case fromCopy:
			ki.Problem = "damaged key object (its checksum does not match); its second copy is intact: 'cairn repo repair' writes it again"
		case err != nil:
			return nil, err
		}
		if err := kr.withMeta(ctx, &ki); err != nil {
			return nil, err
		}
		out = append(out, ki)
	}
	// A copy whose key object is missing lists too, so that it can be named to key remove:
	// repair no longer removes it (docs/design.md, "A key object lost, its copy left").
	missing, err := kr.copiesWithoutKeys(ctx)
	if err != nil {
		return nil, err
	}
	for _, id := range missing {
		ki := KeyInfo{ID: id, Problem: "key object missing, its second copy stored: 'cairn repo key restore' with its passphrase, or 'cairn repo key remove'"}
		if err := kr.withMeta(ctx, &ki); err != nil {
			return nil, err
		}
		out = append(out, ki)
	}
	slices.SortStableFunc(out, func(a, b KeyInfo) int {
		return cmp.Or(a.Created.Compare(b.Created), strings.Compare(a.ID, b.ID))
	})
	return out, nil
}

// withMeta fills in who added key ki, and when, from its info object.
func (kr *Keyring) withMeta(ctx context.Context, ki *KeyInfo) error {
	m, err := kr.meta(ctx, "keys/"+ki.ID)
	switch {
	case errors.Is(err, backend.ErrNotFound):
	case errors.Is(err, ErrCorrupt):
		ki.Problem = cmp.Or(ki.Problem, "damaged info object (who added the key, and when, is unknown)")
	case err != nil:
		return err
	default:
		ki.Label, ki.Host, ki.User, ki.Created = m.Label, m.Host, m.User, m.Created
	}
	return nil
}

// meta reads and verifies the info object of key object name.
func (kr *Keyring) meta(ctx context.Context, name string) (keyMeta, error) {
	key := metaKey(metaKeys, keyID(name))
	plain, err := getSealed(ctx, kr.be, kr.keys, key)
	if err != nil {
		return keyMeta{}, err
	}
	var m keyMeta
	if err := json.Unmarshal(plain, &m); err != nil {
		return keyMeta{}, fmt.Errorf("%s: %w: %v", key, ErrCorrupt, err)
	}
	return m, nil
}

// claim takes the keys claim and checks that the key this keyring opened with is still there
// and still opens with its passphrase: a command must not act on keys it no longer holds.
func (kr *Keyring) claim(ctx context.Context) (*Lock, error) {
	lk, err := kr.locks.claimWithin(ctx, keysClaim, kr.wait)
	if errors.Is(err, ErrLocked) {
		return nil, fmt.Errorf("another passwd or key command is running: %w", err)
	}
	if err != nil {
		return nil, err
	}
	if err := kr.ownKeyThere(ctx); err != nil {
		lk.Unlock()
		return nil, err
	}
	return lk, nil
}

func (kr *Keyring) ownKeyThere(ctx context.Context) error {
	kf, _, err := readKey(ctx, kr.be, kr.current)
	if errors.Is(err, backend.ErrNotFound) || errors.Is(err, errDamagedKey) {
		return fmt.Errorf("%w: key %s was removed meanwhile (by another passwd or key remove); run the command again with a passphrase that opens the repository", ErrKeyGone, kr.Current())
	}
	if err != nil {
		return err
	}
	if m, err := kf.unwrap(kr.password); err != nil || !hmac.Equal(m, kr.master) {
		return fmt.Errorf("%w: key %s no longer opens with this passphrase; run the command again with a passphrase that opens the repository", ErrKeyGone, kr.Current())
	}
	return nil
}

// Add wraps the master key under a new passphrase, as a key object of its own with label. A
// passphrase that already opens one of this repository's keys is refused (ErrKeyExists): one
// passphrase, one key, so that passwd, which retires every key its passphrase opens, retires
// only its own.
func (kr *Keyring) Add(ctx context.Context, password, label string) (KeyInfo, error) {
	if password == "" {
		return KeyInfo{}, errors.New("the new key's passphrase is empty")
	}
	if err := ValidKeyLabel(label); err != nil {
		return KeyInfo{}, err
	}
	lk, err := kr.claim(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	defer lk.Unlock()
	if names, err := kr.openedBy(ctx, password, true); err != nil {
		return KeyInfo{}, err
	} else if len(names) > 0 {
		return KeyInfo{}, fmt.Errorf("%w of this repository (%s): choose another", ErrKeyExists, keyID(names[0]))
	}
	kf, err := wrapMaster(kr.master, password)
	if err != nil {
		return KeyInfo{}, err
	}
	if err := lk.Confirm(ctx); err != nil {
		return KeyInfo{}, err
	}
	name := "keys/" + uuid.NewString()
	if err := putKey(ctx, kr.be, name, kf.marshal()); err != nil {
		return KeyInfo{}, fmt.Errorf("write new key: %w", err)
	}
	m := newKeyMeta(label)
	// A key without its info opens the repository all the same and lists by its id.
	if err := putKeyMeta(ctx, kr.be, kr.keys, name, m); err != nil {
		return KeyInfo{}, fmt.Errorf("key %s was added, but %w", keyID(name), err)
	}
	return KeyInfo{ID: keyID(name), Label: m.Label, Host: m.Host, User: m.User, Created: m.Created}, nil
}

// openedBy returns the names of the key objects of this repository (of its master key) that
// password opens; with first, only the first one found.
func (kr *Keyring) openedBy(ctx context.Context, password string, first bool) ([]string, error) {
	var names []string
	if err := kr.be.ListKeys(ctx, "keys/", func(name string) error { names = append(names, name); return nil }); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	var out []string
	for _, name := range names {
		kf, _, err := readKey(ctx, kr.be, name)
		if errors.Is(err, backend.ErrNotFound) || errors.Is(err, errDamagedKey) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m, err := kf.unwrap(password); err == nil && hmac.Equal(m, kr.master) {
			if out = append(out, name); first {
				break
			}
		}
	}
	return out, nil
}

// removeKey removes key object name and its info: the info first, so an interrupted removal
// leaves a key listed by its id, never info that names a key that is not there; then its copy
// and the key object (deleteKey).
func (kr *Keyring) removeKey(ctx context.Context, name string) error {
	if err := kr.be.Delete(ctx, metaKey(metaKeys, keyID(name))); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("remove info of key %s: %w", keyID(name), err)
	}
	if err := deleteKey(ctx, kr.be, name); err != nil {
		return fmt.Errorf("remove key %s: %w", keyID(name), err)
	}
	return nil
}

// RestoreKey writes again, from its second copy, the missing key object that password opens
// (docs/design.md, "A key object lost, its copy left"), and returns its id. It works on a
// repository no key object opens: the keys claim is taken with the master key the copy
// unwraps, and under it the key object is looked for again and the copy read again (the same
// bytes) before the store. It then opens the repository with password, to prove the restored key opens it.
func RestoreKey(ctx context.Context, be backend.Backend, password string, o LockOptions) (string, error) {
	cfg, _, name, err := openConfig(ctx, be, password)
	if err == nil && cfg.Encryption != EncryptionAES {
		return "", fmt.Errorf("%s: %w", be.Location(), ErrNotEncrypted)
	}
	if err == nil {
		return "", fmt.Errorf("%w (%s): nothing to restore", ErrKeyExists, keyID(name))
	}
	var km *keyMissingError
	if !errors.As(err, &km) {
		return "", err
	}
	name = km.name
	first, err := getAll(ctx, be, keyCopyName(name))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", keyCopyName(name), err)
	}
	kf, err := parseKeyFile(keyCopyName(name), first)
	if err != nil {
		return "", err
	}
	master, err := kf.unwrap(password)
	if err != nil {
		return "", err
	}
	k, err := deriveKeys(master, true)
	if err != nil {
		return "", err
	}
	// In an object-locked repository the key object is locked as every other one.
	rt, err := useRetention(ctx, be, km.lock, false)
	if err != nil {
		return "", err
	}
	l := newLocker(be, k, o)
	l.retain = rt
	lk, err := l.claimWithin(ctx, keysClaim, cmp.Or(o.Wait, DefaultLockWait))
	if errors.Is(err, ErrLocked) {
		return "", fmt.Errorf("another passwd or key command is running: %w", err)
	}
	if err != nil {
		return "", err
	}
	defer lk.Unlock()
	// Under the claim no key command runs: the copy is still the missing key's, unless a
	// key remove came between the look above and the claim.
	if _, err := be.Stat(ctx, name); err == nil {
		return keyID(name), nil // written again meanwhile
	} else if !errors.Is(err, backend.ErrNotFound) {
		return "", err
	}
	raw, err := getAll(ctx, be, keyCopyName(name))
	if errors.Is(err, backend.ErrNotFound) || err == nil && !bytes.Equal(raw, first) {
		return "", fmt.Errorf("%w: the copy of key %s was removed or replaced meanwhile (by a key command)", ErrKeyGone, keyID(name))
	}
	if err != nil {
		return "", err
	}
	if err := lk.Confirm(ctx); err != nil {
		return "", err
	}
	if err := be.Put(ctx, name, raw); err != nil {
		return "", fmt.Errorf("write key %s again: %w", keyID(name), err)
	}
	lk.Unlock()
	if _, _, _, err := openConfig(ctx, be, password); err != nil {
		return "", fmt.Errorf("key %s was written again from its copy, but the repository still does not open with this passphrase: %w", keyID(name), err)
	}
	return keyID(name), nil
}

// Remove removes the key object id (or the one whose id starts with id, at least 4
// characters), with its info, and returns what it was. It refuses the key this keyring
// opened with (ErrOwnKey): that is what keeps a key that opens the repository.
func (kr *Keyring) Remove(ctx context.Context, id string) (KeyInfo, error) {
	lk, err := kr.claim(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	defer lk.Unlock()
	all, err := kr.List(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	var match []KeyInfo
	for _, ki := range all {
		if ki.ID == id || len(id) >= 4 && strings.HasPrefix(ki.ID, id) {
			match = append(match, ki)
		}
	}
	switch {
	case len(match) == 0:
		return KeyInfo{}, fmt.Errorf("%w %q: 'cairn repo key list' shows the keys", ErrNoSuchKey, id)
	case len(match) > 1 && match[0].ID != id:
		return KeyInfo{}, fmt.Errorf("key %q: %w (%d): give more of the id", id, ErrAmbiguousKey, len(match))
	}
	ki := match[0]
	if ki.Current {
		return KeyInfo{}, fmt.Errorf("%w: key %s is the one this passphrase opens; remove it with another key's passphrase, or change this passphrase with 'cairn repo passwd'", ErrOwnKey, ki.ID)
	}
	if err := lk.Confirm(ctx); err != nil {
		return KeyInfo{}, err
	}
	if err := kr.removeKey(ctx, "keys/"+ki.ID); err != nil {
		return KeyInfo{}, err
	}
	return ki, nil
}

// copiesWithoutKeys returns the ids of the key objects that are missing while their second
// copies are stored.
func (kr *Keyring) copiesWithoutKeys(ctx context.Context) ([]string, error) {
	var ids []string
	if err := kr.be.ListKeys(ctx, keyCopyPrefix, func(key string) error {
		ids = append(ids, strings.TrimPrefix(key, keyCopyPrefix))
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list %s: %w", keyCopyPrefix, err)
	}
	var out []string
	for _, id := range ids {
		if _, err := kr.be.Stat(ctx, "keys/"+id); errors.Is(err, backend.ErrNotFound) {
			out = append(out, id)
		} else if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ChangePassword wraps the master key with a new passphrase and removes every key object of
// this repository that the old passphrase opens. The new key keeps the old one's label.
func (kr *Keyring) ChangePassword(ctx context.Context, newPassword string) error {
	if newPassword == "" {
		return errors.New("the new passphrase is empty")
	}
	lk, err := kr.claim(ctx)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	kf, err := wrapMaster(kr.master, newPassword)
	if err != nil {
		return err
	}
	m := newKeyMeta("")
	if old, err := kr.meta(ctx, kr.current); err == nil {
		m.Label = old.Label
	}
	if err := lk.Confirm(ctx); err != nil {
		return err
	}
	newName := "keys/" + uuid.NewString()
	if err := putKey(ctx, kr.be, newName, kf.marshal()); err != nil {
		return fmt.Errorf("write new key: %w", err)
	}
	if err := putKeyMeta(ctx, kr.be, kr.keys, newName, m); err != nil {
		return err
	}
	// Every key object of this master that the old passphrase opens goes, not only the one
	// that opened it: another (left by a passwd that was interrupted and run again) would
	// keep the old passphrase working. Not the new one, should the two passphrases be one.
	old, err := kr.openedBy(ctx, kr.password, false)
	if err != nil {
		return err
	}
	for _, name := range old {
		if name == newName {
			continue
		}
		if err := kr.removeKey(ctx, name); err != nil {
			return fmt.Errorf("passwd: the new passphrase works, but the old one still does: %w", err)
		}
	}
	return nil
}

// ChangePassword opens the keys of the repository in be with oldPassword and changes it to
// newPassword (Keyring.ChangePassword).
func ChangePassword(ctx context.Context, be backend.Backend, oldPassword, newPassword string) error {
	kr, err := OpenKeyring(ctx, be, oldPassword, LockOptions{})
	if err != nil {
		return err
	}
	return kr.ChangePassword(ctx, newPassword)
}

// keyPair is what a look at the key objects and their copies found of one key id.
type keyPair struct {
	name            string // the key object's name
	key, copy       []byte // as stored; nil when missing
	keyOK, copyOK   bool   // each one parses as an intact key object
	keyGone, copied bool   // no key object (a removed key's copy); a copy is stored
}

// keyPairs reads every key object and every copy.
func (r *Repository) keyPairs(ctx context.Context) ([]*keyPair, error) {
	byID := map[string]*keyPair{}
	get := func(id string) *keyPair {
		if byID[id] == nil {
			byID[id] = &keyPair{name: "keys/" + id, keyGone: true}
		}
		return byID[id]
	}
	for _, prefix := range []string{"keys/", keyCopyPrefix} {
		var names []string
		if err := r.be.ListKeys(ctx, prefix, func(name string) error { names = append(names, name); return nil }); err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		for _, name := range names {
			b, err := getAll(ctx, r.be, name)
			if errors.Is(err, backend.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			_, perr := parseKeyFile(name, b)
			p := get(strings.TrimPrefix(name, prefix))
			if prefix == "keys/" {
				p.key, p.keyOK, p.keyGone = b, perr == nil, false
			} else {
				p.copy, p.copyOK, p.copied = b, perr == nil, true
			}
		}
	}
	out := make([]*keyPair, 0, len(byID))
	for _, p := range byID {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *keyPair) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// checkKeys reports, in an encrypted repository, each key object and copy that repair writes
// again or removes (docs/design.md, "A key object's second copy").
func (r *Repository) checkKeys(ctx context.Context, rep *CheckReport) error {
	if r.cfg.Encryption != EncryptionAES {
		return nil
	}
	pairs, err := r.keyPairs(ctx)
	if err != nil {
		return err
	}
	noCopy, orphans := 0, 0
	for _, p := range pairs {
		id := keyID(p.name)
		switch {
		case p.keyGone:
			orphans++
			continue // kept: it may be the last wrapping of a working passphrase
		case !p.keyOK && p.copyOK:
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: key object %s is damaged (its checksum does not match); its second copy is intact ('cairn repo repair' writes it again from it)", ProblemDamaged, id)
		case !p.keyOK:
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: key object %s is damaged (its checksum does not match), and it has no intact copy: remove it with 'cairn repo key remove', or restore it from a copy", ProblemDamaged, id)
			continue // nothing for repair to do
		case !p.copied:
			noCopy++
		case !bytes.Equal(p.key, p.copy):
			rep.Classes[ProblemDamaged]++
			rep.problem("%s: %s%s differs from its key object, which never changes: it is damaged ('cairn repo repair' writes it again)", ProblemDamaged, keyCopyPrefix, id)
		default:
			continue
		}
		rep.mendKeys = true
	}
	if noCopy > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d key objects have no second copy (added by an earlier cairn; 'cairn repo repair' stores them)", noCopy))
	}
	if orphans > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d key objects are missing while their second copies are stored: a key removed by a cairn from before 2026-12-07 leaves one, and so does a key object removed outside cairn. Such a copy opens nothing; if its passphrase should still open the repository, 'cairn repo key restore' with it writes the key object again, else 'cairn repo key remove ID' removes the copy ('cairn repo key list' shows the ids)", orphans))
	}
	return nil
}

// MendKeys writes again each damaged key object from its intact copy and each missing or
// damaged copy from its key object, and removes the copies of removed keys, as the check
// found them and as they are now: under the keys claim, so no key command runs between its
// reads and its writes. It returns how many objects it wrote or removed.
func (r *Repository) MendKeys(ctx context.Context, rep *CheckReport, wait time.Duration) (int, error) {
	if !rep.mendKeys {
		return 0, nil
	}
	lk, err := r.ClaimWithin(ctx, keysClaim, wait)
	if err != nil {
		return 0, fmt.Errorf("repair keys: %w", err)
	}
	defer lk.Unlock()
	pairs, err := r.keyPairs(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range pairs {
		if err := lk.Confirm(ctx); err != nil {
			return n, err
		}
		switch {
		case p.keyGone:
			continue // never written again by repair: 'repo key restore' needs its passphrase
		case !p.keyOK && p.copyOK:
			err = r.be.Put(ctx, p.name, p.copy)
		case p.keyOK && (!p.copied || !bytes.Equal(p.key, p.copy)):
			err = r.be.Put(ctx, keyCopyName(p.name), p.key)
		default:
			continue
		}
		if err != nil {
			return n, fmt.Errorf("repair key %s: %w", keyID(p.name), err)
		}
		n++
	}
	return n, nil
}
