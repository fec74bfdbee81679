package repo

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Metadata objects keep what the index holds that no manifest or pack says (volumes with
// their names, kinds and descriptions; snapshots; quota limits), so that an index rebuilt from
// the backend loses nothing. Each is meta/<kind>/<hex of its name>, sealed JSON.
const metaPrefix = "meta/"

// Kinds of metadata that say what runs now (a backup being created, a restore running, a
// request to cancel either: docs/design.md, "Backups being created, on every gateway"; a
// gateway's services),
// rewritten while it runs and removed when it ends. An object-locked repository writes them
// without a lock and removes them whole (every version), as it does lock objects: a lock
// would keep every rewrite for the whole period and protect nothing.
const (
	MetaCreating  = "creating"
	MetaCancel    = "cancel"
	MetaRestoring = "restoring"
	// MetaRestoreCancel is a reset-state's request to cancel a restore another gateway runs.
	MetaRestoreCancel = "restore-cancel"
	MetaGateways      = "gateways" // each running gateway's services ("Every gateway's services")
)

// hintKinds are those kinds, hintPrefixes their key prefixes.
var (
	hintKinds    = []string{MetaCreating, MetaCancel, MetaRestoring, MetaRestoreCancel, MetaGateways}
	hintPrefixes = func() []string {
		var ps []string
		for _, k := range hintKinds {
			ps = append(ps, metaPrefix+k+"/")
		}
		return ps
	}()
)

func metaKey(kind, name string) string {
	return metaPrefix + kind + "/" + hex.EncodeToString([]byte(name))
}

func validKind(kind string) bool {
	return kind != "" && !strings.ContainsAny(kind, "/\\.\x00 ")
}

// PutMeta stores v (as JSON) as the metadata object name of kind.
func (r *Repository) PutMeta(ctx context.Context, kind, name string, v any) error {
	if !validKind(kind) || name == "" {
		return fmt.Errorf("metadata %q/%q: invalid name", kind, name)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := r.putObject(ctx, metaKey(kind, name), b); err != nil {
		return fmt.Errorf("store %s %s: %w", kind, name, err)
	}
	return nil
}

// DeleteMeta removes a metadata object; a missing one is not an error.
func (r *Repository) DeleteMeta(ctx context.Context, kind, name string) error {
	if !validKind(kind) || name == "" {
		return fmt.Errorf("metadata %q/%q: invalid name", kind, name)
	}
	key := metaKey(kind, name)
	if slices.Contains(hintKinds, kind) {
		return removeWhole(ctx, r.be, r.retain, key) // as a lock object's release
	}
	return r.be.Delete(ctx, key)
}

// GetMeta reads and verifies one metadata object into v; backend.ErrNotFound when absent.
func (r *Repository) GetMeta(ctx context.Context, kind, name string, v any) error {
	b, err := r.getObject(ctx, metaKey(kind, name))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w: %v", metaKey(kind, name), ErrCorrupt, err)
	}
	return nil
}

// ListMetaNames calls fn with the name of every metadata object of kind, without reading them:
// which objects exist, not what they say.
func (r *Repository) ListMetaNames(ctx context.Context, kind string, fn func(name string) error) error {
	return r.ListMetaNamesFrom(ctx, kind, "", fn)
}

// ListMetaNamesFrom is ListMetaNames of the names that start with from: one listing of those
// keys alone, as a name's hex starts with the hex of its start.
func (r *Repository) ListMetaNamesFrom(ctx context.Context, kind, from string, fn func(name string) error) error {
	prefix := metaPrefix + kind + "/"
	return r.be.ListKeys(ctx, prefix+hex.EncodeToString([]byte(from)), func(key string) error {
		raw, err := hex.DecodeString(strings.TrimPrefix(key, prefix))
		if err != nil {
			return nil
		}
		return fn(string(raw))
	})
}

// ListMetaTimes calls fn with the name of every metadata object of kind and when it was last
// written, by the store's clock, without reading them.
func (r *Repository) ListMetaTimes(ctx context.Context, kind string, fn func(name string, written time.Time) error) error {
	prefix := metaPrefix + kind + "/"
	return r.be.List(ctx, prefix, func(o backend.ObjectInfo) error {
		raw, err := hex.DecodeString(strings.TrimPrefix(o.Key, prefix))
		if err != nil {
			return nil
		}
		return fn(string(raw), o.ModTime)
	})
}

// ListMeta calls fn with the name and verified JSON of every metadata object of kind. A damaged
// object is passed to bad (and skipped) rather than stopping the listing.
func (r *Repository) ListMeta(ctx context.Context, kind string, fn func(name string, data []byte) error, bad func(key string, err error)) error {
	var names []string
	if err := r.ListMetaNames(ctx, kind, func(name string) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		key := metaKey(kind, name)
		b, err := r.getObject(ctx, key)
		if errors.Is(err, backend.ErrNotFound) {
			continue
		}
		if errors.Is(err, ErrCorrupt) {
			if bad != nil {
				bad(key, err)
			}
			continue
		}
		if err != nil {
			return err
		}
		if err := fn(name, b); err != nil {
			return err
		}
	}
	return nil
}
