package repo

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Small objects (manifests, pack index objects, deletion records, locks) are sealed with
// sealObject: in an encrypted repository by the AEAD with the object's key as additional data;
// in an unencrypted one the plaintext is followed by an HMAC-SHA256 over the key and the
// plaintext. Either way an object cannot be altered, truncated or moved to another key without
// openObject noticing.
const objectMACLen = sha256.Size

func (k *keys) objectMAC(key string, plain []byte) []byte {
	m := hmac.New(sha256.New, k.object[:])
	m.Write([]byte(key))
	m.Write([]byte{0})
	m.Write(plain)
	return m.Sum(nil)
}

// sealObject returns the stored form of a small object under key.
func (k *keys) sealObject(key string, plain []byte) []byte {
	if k.aead != nil {
		return k.seal(nil, plain, []byte(key))
	}
	out := append(make([]byte, 0, len(plain)+objectMACLen), plain...)
	return append(out, k.objectMAC(key, plain)...)
}

// errUnauthenticated is what openObject reports for an object that fails its check.
var errUnauthenticated = errors.New("authentication failed (damaged or tampered object)")

// openObject verifies (and decrypts) a small object read from key.
func (k *keys) openObject(key string, stored []byte) ([]byte, error) {
	if k.aead != nil {
		b, err := k.open(nil, stored, []byte(key))
		if err != nil {
			return nil, errUnauthenticated
		}
		return b, nil
	}
	if len(stored) < objectMACLen {
		return nil, errUnauthenticated
	}
	plain, mac := stored[:len(stored)-objectMACLen], stored[len(stored)-objectMACLen:]
	if !hmac.Equal(mac, k.objectMAC(key, plain)) {
		return nil, errUnauthenticated
	}
	return plain, nil
}

// putObject seals and stores a small object.
func (r *Repository) putObject(ctx context.Context, key string, plain []byte) error {
	return putSealed(ctx, r.be, r.keys, key, plain)
}

// getObject reads and verifies a small object; a failed check is ErrCorrupt naming the key.
func (r *Repository) getObject(ctx context.Context, key string) ([]byte, error) {
	return getSealed(ctx, r.be, r.keys, key)
}

// putSealed is putObject for whatever holds the keys (a Keyring has no Repository).
func putSealed(ctx context.Context, be backend.Backend, k *keys, key string, plain []byte) error {
	return be.Put(ctx, key, k.sealObject(key, plain))
}

// getSealed is getObject for whatever holds the keys.
func getSealed(ctx context.Context, be backend.Backend, k *keys, key string) ([]byte, error) {
	stored, err := getAll(ctx, be, key)
	if err != nil {
		return nil, err
	}
	plain, err := k.openObject(key, stored)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", key, ErrCorrupt, err)
	}
	return plain, nil
}
