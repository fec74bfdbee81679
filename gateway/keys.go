package gateway

import (
	"context"
	"errors"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/stack"
)

// The key commands (repo passwd, repo key list|add|remove) touch only the backend's key
// objects and their info, so they need no index and work while a gateway runs. Each opens
// the repository's keys with the caller's passphrase.

// withKeyring opens the keys of the repository c names with password and calls fn.
func withKeyring(ctx context.Context, c Config, password string, fn func(*repo.Keyring) error) error {
	be, err := stack.Open(ctx, c.backendConfig())
	if err != nil {
		return err
	}
	defer be.Close()
	if err := repo.StatConfig(ctx, be); errors.Is(err, backend.ErrNotFound) {
		return wrapf(ErrNotFound, "%s: %v", be.Location(), repo.ErrNoRepository)
	}
	kr, err := repo.OpenKeyring(ctx, be, password, c.Lock)
	if err != nil {
		return keyError(err)
	}
	return keyError(fn(kr))
}

// keyError gives the key errors of repo their kinds.
func keyError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, repo.ErrNoSuchKey):
		return wrapf(ErrNotFound, "%v", err)
	case errors.Is(err, repo.ErrOwnKey), errors.Is(err, repo.ErrAmbiguousKey), errors.Is(err, repo.ErrNotEncrypted):
		return wrapf(ErrInvalid, "%v", err)
	case errors.Is(err, repo.ErrKeyExists):
		return wrapf(ErrExists, "%v", err)
	case errors.Is(err, repo.ErrKeyGone), errors.Is(err, repo.ErrLocked):
		return wrapf(ErrConflict, "%v", err)
	}
	return err
}

// ChangePassword wraps the repository's master key with a new passphrase and retires every
// key the old one opens.
func ChangePassword(ctx context.Context, c Config, oldPassword, newPassword string) error {
	if newPassword == "" {
		return invalidf("the new passphrase is empty")
	}
	return withKeyring(ctx, c, oldPassword, func(kr *repo.Keyring) error { return kr.ChangePassword(ctx, newPassword) })
}

// Keys lists the repository's keys, marking the one password opens.
func Keys(ctx context.Context, c Config, password string) ([]repo.KeyInfo, error) {
	var out []repo.KeyInfo
	err := withKeyring(ctx, c, password, func(kr *repo.Keyring) (err error) {
		out, err = kr.List(ctx)
		return err
	})
	return out, err
}

// AddKey adds a key that opens the repository with newPassword, labelled label.
func AddKey(ctx context.Context, c Config, password, newPassword, label string) (repo.KeyInfo, error) {
	if newPassword == "" {
		return repo.KeyInfo{}, invalidf("the new key's passphrase is empty")
	}
	if err := repo.ValidKeyLabel(label); err != nil {
		return repo.KeyInfo{}, invalidf("%v", err)
	}
	var ki repo.KeyInfo
	err := withKeyring(ctx, c, password, func(kr *repo.Keyring) (err error) {
		ki, err = kr.Add(ctx, newPassword, label)
		return err
	})
	return ki, err
}

// RestoreKey writes again, from its second copy, the missing key object that password opens
// (removed outside cairn), and returns its id.
func RestoreKey(ctx context.Context, c Config, password string) (string, error) {
	be, err := stack.Open(ctx, c.backendConfig())
	if err != nil {
		return "", err
	}
	defer be.Close()
	if err := repo.StatConfig(ctx, be); errors.Is(err, backend.ErrNotFound) {
		return "", wrapf(ErrNotFound, "%s: %v", be.Location(), repo.ErrNoRepository)
	}
	id, err := repo.RestoreKey(ctx, be, password, c.Lock)
	return id, keyError(err)
}

// RemoveKey removes the key id (or a unique prefix of it) other than the one password opens.
func RemoveKey(ctx context.Context, c Config, password, id string) (repo.KeyInfo, error) {
	if id == "" {
		return repo.KeyInfo{}, invalidf("no key id: 'cairn repo key list' shows them")
	}
	var ki repo.KeyInfo
	err := withKeyring(ctx, c, password, func(kr *repo.Keyring) (err error) {
		ki, err = kr.Remove(ctx, id)
		return err
	})
	return ki, err
}
