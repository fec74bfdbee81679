package repo

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// Repository is an open repository: a backend, its keys and an index. It is safe for
// concurrent use by many backups, restores and readers at once.
type Repository struct {
	be   backend.Backend
	cfg  Config
	keys *keys
	idx  Index

	// sessions is the in-process half of the repository lock (Lock): shared for backups,
	// restores and checks, exclusive for gc. The backend's lock objects are the other half,
	// for processes the index cannot see.
	sessions sync.RWMutex
	locks    *locker
	// retain is the store's version and lock calls in an object-locked repository, nil
	// otherwise (retention.go).
	retain   *retention
	readOnly bool
	syncMu   sync.Mutex // one Sync at a time

	missMu       sync.Mutex // held through a miss's sync: another miss meanwhile waits for it
	lastMissSync time.Time  // when the last miss's sync ended; guarded by missMu
	lastMissOK   bool       // whether it succeeded; guarded by missMu
	log          func(format string, args ...any)

	nodes  *cache[Address, *node]
	chunks *chunkCache
	shared sharedPacks // new data blocks of the write sessions running in this process

	// configMended says repair wrote the config again since open found it damaged
	// (cfg.damage).
	configMended atomic.Bool
}

// Options tune an open repository.
type Options struct {
	Password        string
	ChunkCacheBytes int64 // decompressed data blocks kept for random reads (FUSE)
	NodeCacheBytes  int64 // decoded tree nodes
	Lock            LockOptions
	// ReadOnly: the backend takes no writes (read-only media), so no lock objects are
	// written: nothing can delete while nothing can write.
	ReadOnly bool
	// Log receives warnings about what a sync or gc skipped; nil discards them.
	Log func(format string, args ...any)
}

// Unlocked is a repository's config with its keys, read and derived before the index is
// needed: a caller may open its index meanwhile (the key derivation is about 70 ms of one
// core) and then call OpenUnlocked.
type Unlocked struct {
	cfg  Config
	keys *keys
}

// Unlock reads the repository's config in be and derives its keys, with password when it is
// encrypted.
func Unlock(ctx context.Context, be backend.Backend, password string) (Unlocked, error) {
	cfg, k, err := readConfig(ctx, be, password)
	return Unlocked{cfg: cfg, keys: k}, err
}

// Open opens the repository in be, unlocking it with o.Password when it is encrypted.
func Open(ctx context.Context, be backend.Backend, idx Index, o Options) (*Repository, error) {
	u, err := Unlock(ctx, be, o.Password)
	if err != nil {
		return nil, err
	}
	return OpenUnlocked(ctx, be, idx, u, o)
}

// OpenUnlocked is Open with the config and keys Unlock gave for be (o.Password is not used).
func OpenUnlocked(ctx context.Context, be backend.Backend, idx Index, u Unlocked, o Options) (*Repository, error) {
	if u.keys == nil {
		return nil, errors.New("open repository: not unlocked (call repo.Unlock first)")
	}
	cfg, k := u.cfg, u.keys
	if o.NodeCacheBytes == 0 {
		o.NodeCacheBytes = 32 << 20
	}
	rt, err := useRetention(ctx, be, cfg.ObjectLock, o.ReadOnly)
	if err != nil {
		return nil, fmt.Errorf("the repository is object-locked (%s) but %w: open it with --read-only", cfg.ObjectLock, err)
	}
	r := &Repository{be: be, cfg: cfg, keys: k, idx: idx, locks: newLocker(be, k, o.Lock), log: o.Log, readOnly: o.ReadOnly, retain: rt}
	r.locks.retain = rt
	if !r.readOnly && idx != nil {
		if err := r.forgetReadOnlyLearned(); err != nil {
			return nil, err
		}
	}
	r.nodes = newCache[Address, *node](o.NodeCacheBytes, func(n *node) int64 { return int64(n.size()) })
	r.chunks = newChunkCache(o.ChunkCacheBytes, cfg.BlockSize)
	return r, nil
}

func (r *Repository) logf(format string, args ...any) {
	if r.log != nil {
		r.log(format, args...)
	}
}

// Lock takes the repository lock for op (a word for messages: "backup", "restore", "gc"):
// shared for everything that reads or adds, exclusive for gc. It holds the in-process half
// and a lock object in the backend, and then brings the index up to date with what other
// processes did (Sync). Release it with Unlock.
func (r *Repository) Lock(ctx context.Context, kind LockKind, op string) (*Lock, error) {
	if kind == LockExclusive {
		r.sessions.Lock()
	} else {
		r.sessions.RLock()
	}
	release := func() {
		if kind == LockExclusive {
			r.sessions.Unlock()
		} else {
			r.sessions.RUnlock()
		}
	}
	var lk *Lock
	var err error
	if r.readOnly {
		if kind == LockExclusive {
			release()
			return nil, fmt.Errorf("%s: %w", op, backend.ErrReadOnly)
		}
		lk = r.locks.inProcess(op)
	} else if lk, err = r.locks.acquire(ctx, kind, op); err != nil {
		release()
		return nil, err
	}
	lk.release = release
	if _, err := r.Sync(ctx, false); err != nil {
		lk.Unlock()
		return nil, err
	}
	return lk, nil
}

// Config returns the repository's configuration (never the key).
func (r *Repository) Config() Config { return r.cfg }

// TokenKey is the key every gateway of this repository signs and checks its API tokens with
// (derived from the master key, like every other key): a token one gateway issued holds on
// another, and across restarts.
func (r *Repository) TokenKey() []byte { return append([]byte(nil), r.keys.tokens[:]...) }

// KeyID names the repository's master key and whether it encrypts ("aes-256-gcm:HEX" or
// "none:HEX"), derived one way from the key: an index records it when it is made, so a config
// replaced by someone who can write to the bucket (another master key, or encryption off,
// with the key objects removed) is refused by every gateway that knew the repository.
func (r *Repository) KeyID() string {
	mode := "none"
	if r.keys.aead != nil {
		mode = "aes-256-gcm"
	}
	return mode + ":" + hex.EncodeToString(r.keys.id[:])
}

// ReadOnly reports whether the repository was opened without writing to it.
func (r *Repository) ReadOnly() bool { return r.readOnly }

// Backend returns the repository's backend.
func (r *Repository) Backend() backend.Backend { return r.be }

// Index returns the repository's index.
func (r *Repository) Index() Index { return r.idx }

// CacheStats returns the data chunk cache's hits and misses.
func (r *Repository) CacheStats() (hits, misses int64) { return r.chunks.stats() }

// loadBlob reads, decrypts, decompresses and verifies one blob.
func (r *Repository) loadBlob(ctx context.Context, t BlobType, addr Address) ([]byte, error) {
	return r.loadBlobInto(ctx, nil, t, addr)
}

// loadBlobInto is loadBlob decoding into dst when it has room (else into a new buffer).
func (r *Repository) loadBlobInto(ctx context.Context, dst []byte, t BlobType, addr Address) ([]byte, error) {
	loc, ok, err := r.idx.Lookup(addr)
	if err != nil {
		return nil, err
	}
	if !ok && r.syncAfterMiss(ctx) {
		// Another process may have stored it, or moved it (gc's repack) since the index
		// last looked.
		if loc, ok, err = r.idx.Lookup(addr); err != nil {
			return nil, err
		}
	}
	if !ok {
		return nil, fmt.Errorf("blob %s: not in the index: %w", addr.Short(), backend.ErrNotFound)
	}
	sp := storedBufs.Get().(*[]byte)
	defer storedBufs.Put(sp)
	stored, err := r.getStored(ctx, loc, sp)
	if errors.Is(err, backend.ErrNotFound) {
		// gc (here or in another process) may have moved the blob to a new pack since the
		// lookup: follow it, and look once more.
		r.syncAfterMiss(ctx)
		if loc2, ok, lerr := r.idx.Lookup(addr); lerr == nil && ok && loc2 != loc {
			loc = loc2
			stored, err = r.getStored(ctx, loc, sp)
		}
	}
	if errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrRange) {
		err = missingPack{err} // the index says it is there: the repository is damaged
	}
	if err != nil {
		return nil, fmt.Errorf("blob %s in pack %s: %w", addr.Short(), loc.Pack, err)
	}
	plain, err := r.openBlob(dst, stored, t, addr, loc)
	if errors.Is(err, ErrCorrupt) {
		if again, ok := r.readAgain(ctx, t, addr, loc, dst[:0]); ok {
			return again, nil
		}
	}
	return plain, err
}

// getStored reads a blob's stored bytes: into *buf, grown as needed, when the backend reads
// into the caller's buffer (backend.RangeReader), else into a fresh buffer.
func (r *Repository) getStored(ctx context.Context, loc Location, buf *[]byte) ([]byte, error) {
	rr, ok := r.be.(backend.RangeReader)
	if !ok {
		return r.be.GetRange(ctx, loc.Pack.Key(), int64(loc.Offset), int64(loc.Length))
	}
	if cap(*buf) < int(loc.Length) {
		*buf = make([]byte, loc.Length)
	}
	b := (*buf)[:loc.Length]
	if err := rr.ReadRange(ctx, loc.Pack.Key(), int64(loc.Offset), b); err != nil {
		return nil, err
	}
	return b, nil
}

// storedBufs holds loadBlob's buffers for a blob's stored bytes: they are opened into a new
// plaintext buffer at once, so none is referenced once loadBlob returns.
var storedBufs = sync.Pool{New: func() any { return new([]byte) }}

// openBlob opens, decompresses and verifies one stored blob into dst when it has room for its
// plain length, else into a new buffer. The sealed frame is opened into a pooled scratch
// buffer: the plaintext is a copy, so no frame is referenced once decodeBlob returns.
func (r *Repository) openBlob(dst, stored []byte, t BlobType, addr Address, loc Location) ([]byte, error) {
	if cap(dst) < int(loc.PlainLen) {
		dst = make([]byte, 0, loc.PlainLen)
	}
	sp := frames.Get().(*[]byte)
	plain, frame, err := r.keys.decodeBlob(dst[:0], *sp, stored, t, addr)
	*sp = frame[:0]
	frames.Put(sp)
	return plain, err
}

// frames holds openBlob's scratch buffers.
var frames = sync.Pool{New: func() any { return new([]byte) }}

// syncAfterMiss brings the index up to date after a read found a blob missing, at most once
// a second, and reports whether the index may have learned where it is since (the caller then
// looks again). A miss while another's sync runs waits for that sync: the index is being
// changed under it (a deletion record's packs forgotten before its blobs' new packs are
// learned), and what it missed may be there once the sync ends.
func (r *Repository) syncAfterMiss(ctx context.Context) bool {
	r.missMu.Lock()
	defer r.missMu.Unlock()
	if time.Since(r.lastMissSync) < time.Second {
		return r.lastMissOK // a sync just ended, perhaps after this reader's lookup: look again
	}
	_, err := r.Sync(ctx, false)
	if cancelledBy(ctx, err) {
		return false // this reader's end, not the sync's: the next miss syncs again
	}
	r.lastMissSync, r.lastMissOK = time.Now(), err == nil
	return r.lastMissOK
}

// missingPack is a pack the index lists but the backend does not have: data lost, so it
// matches ErrCorrupt as well as the backend's ErrNotFound.
type missingPack struct{ error }

func (e missingPack) Is(target error) bool { return target == ErrCorrupt }
func (e missingPack) Unwrap() error        { return e.error }

// chunk returns a data block's plaintext through the chunk cache, pinned: release it with
// r.chunks.release once its bytes are copied.
func (r *Repository) chunk(ctx context.Context, addr Address) (*chunk, error) {
	return r.chunks.get(ctx, addr, func(ctx context.Context, buf []byte) ([]byte, error) {
		return r.loadBlobInto(ctx, buf, BlobData, addr)
	})
}

// ChunkCached reports whether a data block is in the cache.
func (r *Repository) ChunkCached(addr Address) bool { return r.chunks.contains(addr) }
