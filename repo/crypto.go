package repo

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
)

// ErrWrongPassword means no key object of the repository opens with the given passphrase.
var ErrWrongPassword = errors.New("wrong passphrase")

// ErrPasswordRequired means the repository is encrypted and no passphrase was given.
var ErrPasswordRequired = errors.New("repository is encrypted: set CAIRN_PASSWORD or use --password-file")

// masterKeyLen is the size of the random master key every other key is derived from.
const masterKeyLen = 64

// keys are the per-repository secrets derived from the master key. They live only in memory.
type keys struct {
	addr   [32]byte    // keys chunk addresses
	export [32]byte    // authenticates export URLs
	object [32]byte    // authenticates small objects in an unencrypted repository
	tokens [32]byte    // signs the API tokens gateways issue to signed-in users
	id     [16]byte    // names the master key without telling it (Repository.KeyID)
	aead   cipher.AEAD // nil when the repository is not encrypted

	hashers sync.Pool // of *blake3.Hasher keyed with addr
}

func deriveKeys(master []byte, encrypted bool) (*keys, error) {
	k := &keys{}
	blake3.DeriveKey("cairn 2026-11 chunk address", master, k.addr[:])
	blake3.DeriveKey("cairn 2026-11 export url", master, k.export[:])
	blake3.DeriveKey("cairn 2026-12 object mac", master, k.object[:])
	blake3.DeriveKey("cairn 2026-12 identity tokens", master, k.tokens[:])
	blake3.DeriveKey("cairn 2026-12 master key id", master, k.id[:])
	k.hashers.New = func() any {
		h, err := blake3.NewKeyed(k.addr[:])
		if err != nil {
			panic(err)
		}
		return h
	}
	if encrypted {
		var ek [32]byte
		blake3.DeriveKey("cairn 2026-11 aes-256-gcm", master, ek[:])
		aead, err := newGCM(ek[:])
		if err != nil {
			return nil, err
		}
		k.aead = aead
	}
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts and authenticates plain (appending to dst) when the repository is encrypted;
// ad binds the ciphertext to its context (a blob's address, an object's key).
func (k *keys) seal(dst, plain, ad []byte) []byte {
	if k.aead == nil {
		return append(dst, plain...)
	}
	n := k.aead.NonceSize()
	start := len(dst)
	dst = append(dst, make([]byte, n)...)
	if _, err := rand.Read(dst[start : start+n]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return k.aead.Seal(dst, dst[start:start+n], plain, ad)
}

// open reverses seal.
func (k *keys) open(dst, sealed, ad []byte) ([]byte, error) {
	if k.aead == nil {
		return append(dst, sealed...), nil
	}
	n := k.aead.NonceSize()
	if len(sealed) < n+k.aead.Overhead() {
		return nil, errors.New("sealed data too short")
	}
	out, err := k.aead.Open(dst, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, errors.New("authentication failed (corrupt or tampered data)")
	}
	return out, nil
}

// mac authenticates exported metadata.
func (k *keys) mac(data []byte) []byte {
	m := hmac.New(sha256.New, k.export[:])
	m.Write(data)
	return m.Sum(nil)
}

// keyFile is a repository key object: the master key wrapped by a key derived from a
// passphrase with scrypt. Several may exist; changing the passphrase adds one and removes one.
type keyFile struct {
	KDF     string `json:"kdf"`
	N       int    `json:"n"`
	R       int    `json:"r"`
	P       int    `json:"p"`
	Salt    []byte `json:"salt"`
	Wrapped []byte `json:"wrapped"`
	// Sum is SHA-256 over the fields above: it tells a damaged key object from a wrong
	// passphrase (nothing secret can check a key object before it is unwrapped).
	Sum []byte `json:"sum,omitempty"`
}

func (kf *keyFile) sum() []byte {
	c := *kf
	c.Sum = nil
	b, _ := json.Marshal(c)
	s := sha256.Sum256(b)
	return s[:]
}

// damaged reports whether the key object fails its checksum.
func (kf *keyFile) damaged() bool { return kf.Sum != nil && !hmac.Equal(kf.Sum, kf.sum()) }

// scryptN is the scrypt cost: about 100 ms and 32 MiB on this class of machine.
const scryptN = 1 << 15

// kek derives the key that wraps the master key from password (scryptKey: scrypt with its
// work area out of the Go heap, so nothing of it is left for the collector).
func (kf *keyFile) kek(password string) ([]byte, error) {
	return scryptKey([]byte(password), kf.Salt, kf.N, kf.R, kf.P, 32)
}

func wrapMaster(master []byte, password string) (*keyFile, error) {
	kf := &keyFile{KDF: "scrypt", N: scryptN, R: 8, P: 1, Salt: make([]byte, 32)}
	if _, err := rand.Read(kf.Salt); err != nil {
		return nil, err
	}
	kek, err := kf.kek(password)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	kf.Wrapped = aead.Seal(nonce, nonce, master, []byte("cairn master key"))
	return kf, nil
}

func (kf *keyFile) unwrap(password string) ([]byte, error) {
	// No more work than cairn asks for (wrapMaster): anyone who can write to the bucket can
	// add key objects (even to an immutable one), their checksum is no secret, and every open
	// tries each with the passphrase. The bounds of before (N 2^18, r 16, p 4: a 512 MiB work
	// area and 64 times the work each) let a few planted objects stall every command or
	// exhaust its memory (found by review, 2026-12-08) [TestKeyObjectAskingForMoreWorkIsRefused].
	if kf.KDF != "scrypt" || kf.N < 2 || kf.N > scryptN || kf.R < 1 || kf.R > 8 || kf.P != 1 {
		return nil, fmt.Errorf("key object: kdf %q with N=%d, r=%d, p=%d is not one cairn writes (scrypt with N at most %d, r at most 8, p 1): %w",
			kf.KDF, kf.N, kf.R, kf.P, scryptN, ErrCorrupt)
	}
	kek, err := kf.kek(password)
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(kf.Wrapped) < n {
		return nil, errors.New("key object: truncated")
	}
	master, err := aead.Open(nil, kf.Wrapped[:n], kf.Wrapped[n:], []byte("cairn master key"))
	if err != nil {
		return nil, ErrWrongPassword
	}
	return master, nil
}

func (kf *keyFile) marshal() []byte {
	kf.Sum = kf.sum()
	b, _ := json.MarshalIndent(kf, "", "  ")
	return b
}
