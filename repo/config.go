package repo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/google/uuid"
	"github.com/zeebo/blake3"
)

// Format constants. The block size is per repository; the fan-outs are fixed by the format.
const (
	// FormatVersion is the format of packs, manifests and the small objects, and of a config
	// without object lock.
	FormatVersion = 2
	// LockedConfigVersion is the version of a config with object lock: the same format, but a
	// cairn that does not know object lock must not write to it (its gc would hide locked
	// objects behind delete markers for ever instead of removing them), and it refuses any
	// version but its own.
	LockedConfigVersion = 3
	DefaultBlockSize    = 16 << 10
	MinBlockSize        = 4 << 10
	MaxBlockSize        = 4 << 20
	LeafFanout          = 256  // block entries per leaf node
	NodeFanout          = 1024 // children per interior node
	DefaultPackSize     = 16 << 20
)

// Encryption modes.
const (
	EncryptionNone = "none"
	EncryptionAES  = "aes-256-gcm"
)

// Config is the repository's self-description, stored in clear as the object "config".
type Config struct {
	Version     int         `json:"version"`
	ID          string      `json:"id"`
	BlockSize   int         `json:"block_size"`
	Compression Compression `json:"compression"`
	Encryption  string      `json:"encryption"`
	PackSize    int         `json:"pack_size"`
	CreatedAt   time.Time   `json:"created_at"`
	// ObjectLock, when set, makes every object but lock objects immutable for a period after
	// it is written (S3 Object Lock); absent in older configs, which read as before.
	ObjectLock *ObjectLock `json:"object_lock,omitempty"`
	// MasterKey is present only in unencrypted repositories, where the backend is trusted.
	MasterKey []byte `json:"master_key,omitempty"`
	// MAC authenticates everything above (HMAC-SHA256 under a key derived from the master
	// key), so a damaged config is reported as such rather than as damage everywhere else.
	MAC []byte `json:"mac,omitempty"`
	// damage, set by open only, says what was wrong with the config object when its second
	// copy stood in for it (check reports it, repair writes the config again).
	damage string
	// raw is the config object's bytes as open read and verified them (the copy's when it
	// stood in): what repair stores again.
	raw []byte
}

// configMAC is the MAC of c (with its master key, if stored, and without its MAC).
func configMAC(c Config, master []byte) []byte {
	c.MAC = nil
	b, _ := json.Marshal(c)
	var key [32]byte
	blake3.DeriveKey("cairn 2026-12 config mac", master, key[:])
	m := hmac.New(sha256.New, key[:])
	m.Write(b)
	return m.Sum(nil)
}

// InitOptions choose a new repository's settings.
type InitOptions struct {
	BlockSize   int
	Compression Compression
	Encryption  string
	Password    string
	// ObjectLock makes the repository immutable (see Config.ObjectLock); the backend must be
	// able to lock objects (an S3 bucket with object lock enabled).
	ObjectLock *ObjectLock
	// AskPassword, when set and Password is empty, gives the passphrase of an encrypted
	// repository. Init calls it only once the settings are valid and the location is free,
	// so nobody types a passphrase for a repository that cannot be made.
	AskPassword func() (string, error)
	// KeyLabel names the first key in 'repo key list' (an admin's or a host's name).
	KeyLabel string
}

// ErrInvalidOption means a repository setting that is not valid (a block size, compression
// or encryption cairn does not know).
var ErrInvalidOption = errors.New("invalid setting")

// ErrExists means a repository is already initialised at that location.
var ErrExists = errors.New("a repository already exists there")

// ErrNoRepository means there is no repository at that location.
var ErrNoRepository = errors.New("no repository there: run 'cairn repo init' first")

// topNames are the names a repository's objects take at the top of its location: the config
// and the first segment of every other key (docs/design.md, "Repository format"), from the
// prefixes the objects are written under.
var topNames = func() map[string]bool {
	names := map[string]bool{"config": true, configCopyKey: true}
	for _, p := range []string{"keys/", keyCopyPrefix, "packs/", "manifests/", manifestCopyPrefix, indexPrefix, deletedPrefix, deletedCopyPrefix, lockPrefix, logPrefix, metaPrefix, metaCopyPrefix} {
		names[strings.TrimSuffix(p, "/")] = true
	}
	return names
}()

// OwnsName reports whether name, at the top of a repository's location, is the repository's:
// its config or the first segment of its objects' keys.
func OwnsName(name string) bool { return topNames[name] }

// ownsKey reports whether key is under one of the repository's names.
func ownsKey(key string) bool {
	top, _, _ := strings.Cut(key, "/")
	return OwnsName(top)
}

// Init creates a repository in an empty backend location.
func Init(ctx context.Context, be backend.Backend, o InitOptions) (Config, error) {
	if _, err := be.Stat(ctx, "config"); err == nil {
		return Config{}, fmt.Errorf("%s: %w", be.Location(), ErrExists)
	} else if !errors.Is(err, backend.ErrNotFound) {
		return Config{}, fmt.Errorf("%s: %w", be.Location(), err)
	}
	// Backups without a config are a repository that lost it, not a free location: a new
	// config there would carry another master key, with which none of them opens.
	if _, err := be.Stat(ctx, configCopyKey); err == nil {
		return Config{}, fmt.Errorf("%s: %w: it holds the config's second copy but no config: the repository opens from the copy, and 'cairn repo repair' writes the config again", be.Location(), ErrExists)
	} else if !errors.Is(err, backend.ErrNotFound) {
		return Config{}, fmt.Errorf("%s: %w", be.Location(), err)
	}
	for _, prefix := range []string{"manifests/", "packs/"} {
		name, err := firstObject(ctx, be, prefix)
		if err != nil {
			return Config{}, err
		}
		if name != "" {
			return Config{}, fmt.Errorf("%s: %w: it holds %s but no config: the repository's config was lost; put it back from a copy, or move its objects away to make a new repository there", be.Location(), ErrExists, name)
		}
	}
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.BlockSize < MinBlockSize || o.BlockSize > MaxBlockSize || o.BlockSize&(o.BlockSize-1) != 0 {
		return Config{}, fmt.Errorf("%w: block size %d: use a power of two from %d to %d", ErrInvalidOption, o.BlockSize, MinBlockSize, MaxBlockSize)
	}
	c, err := ParseCompression(string(o.Compression))
	if err != nil {
		return Config{}, err
	}
	if o.Encryption == "" {
		o.Encryption = EncryptionNone
	}
	if o.Encryption != EncryptionNone && o.Encryption != EncryptionAES {
		return Config{}, fmt.Errorf("%w: unknown encryption %q: use none or aes-256-gcm", ErrInvalidOption, o.Encryption)
	}
	if o.KeyLabel != "" && o.Encryption != EncryptionAES {
		return Config{}, fmt.Errorf("%w: a key label names a passphrase's key, and an unencrypted repository has none", ErrInvalidOption)
	}
	if err := ValidKeyLabel(o.KeyLabel); err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalidOption, err)
	}
	cfg := Config{Version: FormatVersion, ID: uuid.NewString(), BlockSize: o.BlockSize, Compression: c,
		Encryption: o.Encryption, PackSize: DefaultPackSize, CreatedAt: time.Now().UTC().Truncate(time.Second)}
	if o.ObjectLock != nil {
		if err := o.ObjectLock.valid(); err != nil {
			return Config{}, fmt.Errorf("%w: %v", ErrInvalidOption, err)
		}
		// Every object from the first one on (keys, the config) is locked.
		if _, err := useRetention(ctx, be, o.ObjectLock, false); err != nil {
			return Config{}, fmt.Errorf("%w: use a bucket created with object lock enabled", err)
		}
		l := *o.ObjectLock
		cfg.Version, cfg.ObjectLock = LockedConfigVersion, &l
	}
	master := make([]byte, masterKeyLen)
	if _, err := rand.Read(master); err != nil {
		return Config{}, err
	}
	var keyName string // this init's key object
	if cfg.Encryption == EncryptionAES {
		if o.Password == "" && o.AskPassword != nil {
			if o.Password, err = o.AskPassword(); err != nil {
				return Config{}, err
			}
		}
		if o.Password == "" {
			return Config{}, ErrPasswordRequired
		}
		kf, err := wrapMaster(master, o.Password)
		if err != nil {
			return Config{}, err
		}
		keyName = "keys/" + uuid.NewString()
		if err := putKey(ctx, be, keyName, kf.marshal()); err != nil {
			return Config{}, fmt.Errorf("write key: %w", err)
		}
	} else {
		// An unencrypted config beside key objects is refused on open (openConfig): an
		// encrypted init that was interrupted before its config left them.
		keyObject, err := firstObject(ctx, be, "keys/")
		if err != nil {
			return Config{}, err
		}
		if keyObject != "" {
			return Config{}, fmt.Errorf("%s holds key object %s, left by an encrypted init that did not finish: init it encrypted, or remove its keys/ first", be.Location(), keyObject)
		}
		cfg.MasterKey = master
	}
	cfg.MAC = configMAC(cfg, master)
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := createConfig(ctx, be, b); err != nil {
		// Another init created the repository since the check above: its config stays, and
		// this one's key object, which opens no repository, goes.
		if keyName != "" && errors.Is(err, ErrExists) {
			_ = deleteKey(ctx, be, keyName)
		}
		return Config{}, err
	}
	// The config's second copy: open reads it when the config is damaged. A failure here
	// leaves a repository that opens; check notes the missing copy and repair stores it.
	_ = be.Put(ctx, configCopyKey, b)
	if keyName != "" {
		// Who made the key, for 'repo key list'; a repository without it opens all the same.
		if k, err := deriveKeys(master, true); err == nil {
			_ = putKeyMeta(ctx, be, k, keyName, newKeyMeta(o.KeyLabel))
		}
	}
	cfg.MasterKey, cfg.MAC = nil, nil
	return cfg, nil
}

// createConfig stores the config of a new repository where no config is. Of several inits of
// one location at once, one creates it and the others fail with ErrExists
// (backend.Creator; docs/design.md, "Creating a repository"). A config there that is this
// one byte for byte (random id and MAC) was stored by an attempt whose answer was lost.
func createConfig(ctx context.Context, be backend.Backend, b []byte) error {
	c, ok := be.(backend.Creator)
	if !ok {
		// A backend that cannot create exclusively (a test's wrapper): the check in Init
		// is all there is.
		if err := be.Put(ctx, "config", b); err != nil {
			return fmt.Errorf("write config: %w", err)
		}
		return nil
	}
	err := c.Create(ctx, "config", b)
	if errors.Is(err, backend.ErrExists) {
		stored, gerr := getAll(ctx, be, "config")
		if gerr != nil {
			// Perhaps this init's own: not ErrExists, so its key object stays.
			return fmt.Errorf("%s: write config: a config is there, and reading it back to tell whether this init stored it failed: %w: try to open it with this passphrase; if it does not open, another init made it", be.Location(), gerr)
		}
		if bytes.Equal(stored, b) {
			return nil
		}
		return fmt.Errorf("%s: %w: another 'cairn repo init' created it at the same time; open it with that init's passphrase", be.Location(), ErrExists)
	}
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// readConfig loads the config and unlocks the master key.
func readConfig(ctx context.Context, be backend.Backend, password string) (Config, *keys, error) {
	cfg, master, _, err := openConfig(ctx, be, password)
	if err != nil {
		return Config{}, nil, err
	}
	k, err := deriveKeys(master, cfg.Encryption == EncryptionAES)
	return cfg, k, err
}

// configCopyKey is the config's second copy: the same bytes, stored by init right after the
// config (docs/design.md, "Creating a repository").
const configCopyKey = "config-copy"

// StatConfig looks for the repository in be: its config, or the config's second copy, from
// which it opens when the config is missing. It is nil when either is there, and
// backend.ErrNotFound when neither is.
func StatConfig(ctx context.Context, be backend.Backend) error {
	_, err := be.Stat(ctx, "config")
	if errors.Is(err, backend.ErrNotFound) {
		_, err = be.Stat(ctx, configCopyKey)
	}
	return err
}

// configMissing is Config.damage when the copy stood in for a missing config.
const configMissing = "config is missing"

// errConfigDamaged marks what openConfigAt found wrong with a config object itself, as
// opposed to the store, the passphrase or a format this cairn does not read: only then does
// openConfig read the copy.
var errConfigDamaged = errors.New("damaged config")

// configDamage is a config object found damaged: errConfigDamaged and ErrCorrupt.
type configDamage struct {
	loc, key, reason string
}

func (e *configDamage) Error() string {
	return fmt.Sprintf("%s: %s: %v: %s", e.loc, e.key, ErrCorrupt, e.reason)
}

func (e *configDamage) Is(target error) bool {
	return target == errConfigDamaged || target == ErrCorrupt
}

// what says what is wrong, without the location.
func (e *configDamage) what() string { return fmt.Sprintf("%s is damaged (%s)", e.key, e.reason) }

func damagedConfig(be backend.Backend, key, format string, args ...any) error {
	return &configDamage{loc: be.Location(), key: key, reason: fmt.Sprintf(format, args...)}
}

// openConfig loads the config and returns it with the master key and, in an encrypted
// repository, the name of the key object that opened it. When the config is damaged or
// missing and its copy opens, the copy stands in and cfg.damage says what was wrong.
func openConfig(ctx context.Context, be backend.Backend, password string) (Config, []byte, string, error) {
	cfg, master, keyName, err := openConfigAt(ctx, be, password, "config")
	if err == nil || !errors.Is(err, errConfigDamaged) && !errors.Is(err, ErrNoRepository) {
		return cfg, master, keyName, err
	}
	ccfg, cmaster, ckeyName, cerr := openConfigAt(ctx, be, password, configCopyKey)
	var d *configDamage
	switch {
	case errors.As(err, &d) && errors.Is(cerr, errConfigDamaged):
		return Config{}, nil, "", fmt.Errorf("%w; its second copy %s is damaged too: restore the config from a copy of it", err, configCopyKey)
	case errors.As(err, &d) && errors.Is(cerr, ErrNoRepository):
		return Config{}, nil, "", fmt.Errorf("%w; it has no second copy: restore it from a copy of the repository's config", err)
	case cerr != nil:
		return Config{}, nil, "", err
	case d != nil:
		ccfg.damage = d.what()
	default:
		ccfg.damage = configMissing
	}
	return ccfg, cmaster, ckeyName, nil
}

// openConfigAt is openConfig of the config object key (the config, or its copy).
func openConfigAt(ctx context.Context, be backend.Backend, password, key string) (Config, []byte, string, error) {
	rc, err := be.Get(ctx, key)
	if errors.Is(err, backend.ErrNotFound) {
		return Config{}, nil, "", fmt.Errorf("%s: %w", be.Location(), ErrNoRepository)
	}
	if err != nil {
		return Config{}, nil, "", fmt.Errorf("%s: read %s: %w", be.Location(), key, err)
	}
	raw, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return Config{}, nil, "", fmt.Errorf("%s: read %s: %w", be.Location(), key, err)
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return Config{}, nil, "", damagedConfig(be, key, "not valid JSON: %v", err)
	}
	switch {
	case cfg.Version == FormatVersion && cfg.ObjectLock == nil:
	case cfg.Version == LockedConfigVersion && cfg.ObjectLock != nil:
		if err := cfg.ObjectLock.valid(); err != nil {
			return Config{}, nil, "", damagedConfig(be, key, "%v", err)
		}
	case cfg.Version == LockedConfigVersion:
		return Config{}, nil, "", damagedConfig(be, key, "version %d without an object lock setting", cfg.Version)
	default:
		return Config{}, nil, "", fmt.Errorf("%s: repository format %d is not supported (this cairn reads %d and %d)", be.Location(), cfg.Version, FormatVersion, LockedConfigVersion)
	}
	if cfg.BlockSize < MinBlockSize || cfg.BlockSize > MaxBlockSize || cfg.PackSize <= 0 {
		return Config{}, nil, "", damagedConfig(be, key, "an invalid block or pack size")
	}
	master := cfg.MasterKey
	cfg.MasterKey = nil
	stored := cfg
	// fits reports whether the config's MAC is the one master gives it.
	fits := func(master []byte) bool {
		s := stored
		if cfg.Encryption == EncryptionNone {
			s.MasterKey = master
		}
		return hmac.Equal(cfg.MAC, configMAC(s, master))
	}
	var keyName string
	switch cfg.Encryption {
	case EncryptionNone:
		if len(master) != masterKeyLen {
			return Config{}, nil, "", damagedConfig(be, key, "no valid key")
		}
		// Only an encrypted repository has key objects. An unencrypted config beside them
		// replaced an encrypted one's (its MAC is keyed by the key it carries, so anyone can
		// write one that fits): opened, it would store the next backups in clear.
		// A key object's copy says the same when the key objects are gone too.
		for _, prefix := range []string{"keys/", keyCopyPrefix} {
			keyObject, err := firstObject(ctx, be, prefix)
			if err != nil {
				return Config{}, nil, "", err
			}
			if keyObject != "" {
				return Config{}, nil, "", damagedConfig(be, key, "it says the repository is not encrypted, but the repository has key object %s: it was replaced", keyObject)
			}
		}
	case EncryptionAES:
		if password == "" {
			return Config{}, nil, "", ErrPasswordRequired
		}
		master, keyName, err = unlock(ctx, be, password, fits)
		var km *keyMissingError
		if errors.As(err, &km) {
			km.lock = cfg.ObjectLock // for RestoreKey's store of the key object
		}
		if err != nil {
			return Config{}, nil, "", err
		}
	default:
		return Config{}, nil, "", fmt.Errorf("%s: unknown encryption %q", be.Location(), cfg.Encryption)
	}
	if !fits(master) {
		return Config{}, nil, "", damagedConfig(be, key, "its check does not match")
	}
	cfg.MAC, cfg.raw = nil, raw
	return cfg, master, keyName, nil
}

// errDamagedKey: a key object that cannot be one (unparseable, or fields out of range).
var errDamagedKey = errors.New("damaged key object")

// readKeyFile reads key object name: backend.ErrNotFound when it is gone, errDamagedKey when
// it cannot be a key object.
func readKeyFile(ctx context.Context, be backend.Backend, name string) (*keyFile, error) {
	b, err := getAll(ctx, be, name)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return parseKeyFile(name, b)
}

func parseKeyFile(name string, b []byte) (*keyFile, error) {
	var kf keyFile
	if json.Unmarshal(b, &kf) != nil || kf.damaged() {
		return nil, fmt.Errorf("%s: %w", name, errDamagedKey)
	}
	return &kf, nil
}

// keyCopyPrefix holds each key object's second copy (docs/design.md, "A key object's second
// copy").
const keyCopyPrefix = "key-copies/"

// keyCopyName is the name of key object name's copy.
func keyCopyName(name string) string { return keyCopyPrefix + strings.TrimPrefix(name, "keys/") }

// readKey reads key object name, or its copy when the key object is damaged: the one way every
// caller reads a key, so a damaged key with an intact copy opens, lists and retires as any
// other. A missing key object is a removed key, whatever copy is left (backend.ErrNotFound).
// fromCopy says the copy stood in.
func readKey(ctx context.Context, be backend.Backend, name string) (kf *keyFile, fromCopy bool, err error) {
	kf, err = readKeyFile(ctx, be, name)
	if !errors.Is(err, errDamagedKey) {
		return kf, false, err
	}
	if c, cerr := readKeyFile(ctx, be, keyCopyName(name)); cerr == nil {
		return c, true, nil
	} else if !errors.Is(cerr, errDamagedKey) && !errors.Is(cerr, backend.ErrNotFound) {
		return nil, false, cerr
	}
	return nil, false, err
}

// putKey stores a new key object, then its copy. A copy that fails to store leaves a key that
// opens: check notes it and repair stores it.
func putKey(ctx context.Context, be backend.Backend, name string, b []byte) error {
	if err := be.Put(ctx, name, b); err != nil {
		return err
	}
	_ = be.Put(ctx, keyCopyName(name), b)
	return nil
}

// deleteKey removes a key object's copy, then the key object: never a copy without its key.
func deleteKey(ctx context.Context, be backend.Backend, name string) error {
	if err := be.Delete(ctx, keyCopyName(name)); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return err
	}
	if err := be.Delete(ctx, name); err != nil && !errors.Is(err, backend.ErrNotFound) {
		return err
	}
	return nil
}

// firstObject returns the name of an object under prefix in be, or "" when it has none.
func firstObject(ctx context.Context, be backend.Backend, prefix string) (string, error) {
	var name string
	err := be.ListKeys(ctx, prefix, func(key string) error {
		name = key
		return errStopList
	})
	if err != nil && !errors.Is(err, errStopList) {
		return "", fmt.Errorf("%s: list %s: %w", be.Location(), prefix, err)
	}
	return name, nil
}

// errStopList ends a List early.
var errStopList = errors.New("stop listing")

// unlock tries the passphrase on every key object and returns the master key and the key's
// name: the first whose master key fits the config (a key object of another repository that
// opens with the same passphrase does not), else the first that opens, for the config's
// check to report.
func unlock(ctx context.Context, be backend.Backend, password string, fits func(master []byte) bool) ([]byte, string, error) {
	var damaged []string
	// A repo passwd elsewhere may remove a key object between the listing and its reading:
	// the key that replaces it is in a new listing.
	for attempt := 0; ; attempt++ {
		var names []string
		err := be.List(ctx, "keys/", func(oi backend.ObjectInfo) error {
			names = append(names, oi.Key)
			return nil
		})
		if err != nil {
			return nil, "", fmt.Errorf("list keys: %w", err)
		}
		if len(names) == 0 {
			if err := missingKey(ctx, be, password, fits); err != nil {
				return nil, "", err
			}
			return nil, "", fmt.Errorf("%s: encrypted repository has no key objects", be.Location())
		}
		damaged = damaged[:0]
		var opened []byte
		var openedName string
		vanished := false
		for _, name := range names {
			kf, _, err := readKey(ctx, be, name)
			if errors.Is(err, backend.ErrNotFound) {
				vanished = true
				continue
			}
			if errors.Is(err, errDamagedKey) {
				damaged = append(damaged, name)
				continue
			}
			if err != nil {
				return nil, "", err
			}
			if master, err := kf.unwrap(password); err == nil {
				if fits(master) {
					return master, name, nil
				}
				if opened == nil {
					opened, openedName = master, name
				}
			}
		}
		if opened != nil {
			return opened, openedName, nil
		}
		if !vanished || attempt == 2 {
			break
		}
	}
	if err := missingKey(ctx, be, password, fits); err != nil {
		return nil, "", err
	}
	if len(damaged) > 0 {
		return nil, "", fmt.Errorf("%s: %w: key object %s is damaged (its checksum does not match) and no other key opens with this passphrase: restore the key object from a copy", be.Location(), ErrCorrupt, damaged[0])
	}
	return nil, "", fmt.Errorf("%w: no key of %s opens with it", ErrWrongPassword, be.Location())
}

// ErrKeyObjectMissing marks a passphrase that opens no key object while the second copy of a
// missing key object opens with it (docs/design.md, "A key object lost, its copy left"). It is
// damage: errors.Is(err, ErrCorrupt) holds for its errors too.
var ErrKeyObjectMissing = errors.New("the key object this passphrase opens is missing")

// keyMissingError is ErrKeyObjectMissing's error: name is the missing key object, lock the
// repository's object lock setting (for RestoreKey).
type keyMissingError struct {
	location, name string
	lock           *ObjectLock
}

func (e *keyMissingError) Error() string {
	return fmt.Sprintf("%s: %v: %s is its intact second copy, and 'cairn repo key restore' writes it again from it (unless the key was removed on purpose by a cairn from before 2026-12-07: then remove the copy with 'cairn repo key remove %s' under another key)",
		e.location, ErrKeyObjectMissing, keyCopyName(e.name), keyID(e.name))
}

func (e *keyMissingError) Is(target error) bool {
	return target == ErrKeyObjectMissing || target == ErrCorrupt
}

// missingKey looks, for a passphrase that opened no key object, for the second copy of a
// missing key object that opens with it and fits the config: the error says so, and what
// restores it. It is nil when there is none. Nothing opens through such a copy.
func missingKey(ctx context.Context, be backend.Backend, password string, fits func(master []byte) bool) error {
	name, err := keyWithoutObject(ctx, be, password, fits)
	if err != nil || name == "" {
		return err
	}
	return &keyMissingError{location: be.Location(), name: name}
}

// keyWithoutObject returns the name of the missing key object whose second copy is stored,
// intact, and opens with password to a master key that fits; "" when there is none.
func keyWithoutObject(ctx context.Context, be backend.Backend, password string, fits func(master []byte) bool) (string, error) {
	var copies []string
	if err := be.ListKeys(ctx, keyCopyPrefix, func(key string) error { copies = append(copies, key); return nil }); err != nil {
		return "", fmt.Errorf("list %s: %w", keyCopyPrefix, err)
	}
	for _, c := range copies {
		name := "keys/" + strings.TrimPrefix(c, keyCopyPrefix)
		if _, err := be.Stat(ctx, name); err == nil {
			continue
		} else if !errors.Is(err, backend.ErrNotFound) {
			return "", err
		}
		kf, err := readKeyFile(ctx, be, c)
		if err != nil {
			continue // damaged, or removed since the listing
		}
		if master, err := kf.unwrap(password); err == nil && fits(master) {
			return name, nil
		}
	}
	return "", nil
}

// checkConfig reports the config that did not open (its copy stood in: a problem), and a copy
// that is missing (a note: a repository an earlier cairn made) or differs from the config (a
// problem: the config never changes after init, so the two are equal).
func (r *Repository) checkConfig(ctx context.Context, rep *CheckReport) error {
	if r.cfg.damage != "" && !r.configMended.Load() {
		class := ProblemDamaged
		if r.cfg.damage == configMissing {
			class = ProblemMissing
		}
		rep.Classes[class]++
		rep.problem("%s: %s; its second copy is intact ('cairn repo repair' writes the config again from it)", class, r.cfg.damage)
		rep.mendConfig = true
		return nil
	}
	stored, err := getAll(ctx, r.be, configCopyKey)
	switch {
	case errors.Is(err, backend.ErrNotFound):
		rep.Notes = append(rep.Notes, "the config has no second copy (made by an earlier cairn; 'cairn repo repair' stores it)")
		rep.mendConfig = true
	case err != nil:
		return fmt.Errorf("read %s: %w", configCopyKey, err)
	case !bytes.Equal(stored, r.cfg.raw):
		rep.Classes[ProblemDamaged]++
		rep.problem("%s: %s differs from the config, which never changes: it is damaged ('cairn repo repair' writes it again from the config)", ProblemDamaged, configCopyKey)
		rep.mendConfig = true
	}
	return nil
}

// MendConfig writes the config again from the copy that stood in for it at open, or the copy
// from the config, as the check found them; each as one Put of the bytes open verified. It
// returns the key it wrote, or "".
func (r *Repository) MendConfig(ctx context.Context, rep *CheckReport) (string, error) {
	if !rep.mendConfig || len(r.cfg.raw) == 0 {
		return "", nil
	}
	key := configCopyKey
	if r.cfg.damage != "" && !r.configMended.Load() {
		key = "config"
	}
	if err := r.be.Put(ctx, key, r.cfg.raw); err != nil {
		return "", fmt.Errorf("repair: write %s: %w", key, err)
	}
	if key == "config" {
		r.configMended.Store(true)
	}
	r.logf("repair: wrote %s again", key)
	return key, nil
}
