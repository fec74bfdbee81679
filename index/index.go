package index

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/dgraph-io/badger/v4"
)

// Key schema (every key starts with a short prefix and a slash):
//
//	m/<name>                   meta values (schema version, repository id, flags; m/pack-serial:
//	                           the last pack serial assigned, serials.go)
//	c/<address 32 bytes>       blob location: pack serial, offset, length, plain length (uvarints),
//	                           type (1 byte)
//	p/<pack id 16 bytes>       pack size (u64 LE), serial (u32 LE)
//	pn/<serial 4 bytes BE>     pack id: serials are this index's own, never reused
//	v/<volume id>              volume record (JSON)
//	vn/<project>\x00<name>     ids of the project's volumes of that name, comma-separated (one
//	                           unless volumes were learned under one name: LearnVolume)
//	vp/<path>                  volume id by path
//	b/<backup id>              backup record (JSON)
//	bv/<volume id>/<ns>/<id>   backups of a volume in creation order (ns = 16 hex digits)
//	q/<project>\x00<resource> quota limit set for a project (quotas.go)
//
// Schema 3 put pack serials in blob entries (schema 2 had the pack id): no schema is read by
// another's code, and Open refuses it with a *SchemaError.
const schemaVersion = "3"

// ErrNotFound: no such record.
var ErrNotFound = errors.New("not found")

// ErrLocked: another process has the index open.
var ErrLocked = errors.New("the index is in use by another cairn process")

// ErrSchema: the index was written by a cairn of another index schema. The index is a cache
// of the repository: moved away, it is built again from the repository.
var ErrSchema = errors.New("the index has another schema")

// SchemaError is Open's error for an index of another schema (errors.Is(err, ErrSchema)).
type SchemaError struct {
	Dir   string
	Found string // the schema the index has
	Want  string // the schema this cairn reads and writes
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("index %s has schema %s and this cairn uses %s: move it away, and cairn builds a new one from the repository", e.Dir, e.Found, e.Want)
}

// Is makes errors.Is(err, ErrSchema) true of a *SchemaError.
func (e *SchemaError) Is(target error) bool { return target == ErrSchema }

// Index is the open database. Safe for concurrent use.
type Index struct {
	db  *badger.DB
	dir string

	packMu     sync.Mutex // held while a pack is given a serial (registerPack)
	lastSerial uint32     // the last pack serial assigned; under packMu
	packs      *packCache // serial → pack id

	records backupRecords // every backup record decoded, once Backups has read them
	damaged damagedMarks  // copies readers found damaged (damaged.go)

	// closeMu orders Sync and Close: Badger's Sync dereferences what its Close released, and
	// a job that outlives a gateway's shutdown (StopWorkers gave up on it) syncs after the
	// index closed. closed is set under it.
	closeMu sync.RWMutex
	closed  bool
}

// ErrClosed: the index was closed (the gateway is shutting down).
var ErrClosed = errors.New("the index is closed")

// ErrNoResources: the index could not be opened for want of space, quota, file descriptors
// or memory, or on a read-only file system. Nothing in it is damaged, and moving it aside
// cures nothing: the caller says so and leaves it.
var ErrNoResources = errors.New("out of resources")

// resourceErrnos are the causes ErrNoResources stands for. Badger formats the cause of a
// failed open into its message (y.Wrap: "%s err: %+v") rather than wrapping it, so they are
// also matched by their text.
var resourceErrnos = []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EROFS, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM}

// Open opens (creating if needed) the index in dir. Only one process may have it open.
// An index that cannot be opened for want of resources fails with ErrNoResources and the
// cause's errno, both matched by errors.Is [TestOpenOnAFullFileSystemIsNotDamage].
func Open(dir string) (*Index, error) {
	ix, err := open(dir)
	if err == nil || errors.Is(err, ErrLocked) {
		return ix, err
	}
	for _, e := range resourceErrnos {
		if errors.Is(err, e) || strings.Contains(err.Error(), e.Error()) {
			if !strings.HasPrefix(err.Error(), "index ") {
				err = fmt.Errorf("index %s: %w", dir, err)
			}
			return nil, &resourceError{err, e}
		}
	}
	return nil, err
}

// resourceError is Open's error for want of resources: its message is the cause's, and
// errors.Is matches ErrNoResources and the errno.
type resourceError struct {
	error
	errno syscall.Errno
}

func (e *resourceError) Is(target error) bool { return target == ErrNoResources || target == e.errno }
func (e *resourceError) Unwrap() error        { return e.error }

func open(dir string) (*Index, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("index %s: %w", dir, err)
	}
	opts := badger.DefaultOptions(dir).
		WithLogger(nil).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithValueThreshold(1 << 10).
		WithNumCompactors(2).
		WithNumLevelZeroTables(4).
		WithNumLevelZeroTablesStall(8).
		WithCompactL0OnClose(false)
	if err := checkTables(dir, opts); err != nil {
		return nil, fmt.Errorf("index %s: %w", dir, err)
	}
	db, err := badger.Open(opts)
	if err != nil && strings.Contains(err.Error(), "Create a new file") {
		// A process killed right after Badger created a log or memtable file, before it gave
		// it a size, leaves an empty file that the next open refuses once and sizes
		// (dgraph-io/badger#2207): open again.
		db, err = badger.Open(opts)
	}
	if err != nil {
		if strings.Contains(err.Error(), "Cannot acquire directory lock") || strings.Contains(err.Error(), "resource temporarily unavailable") {
			if h := readHolder(dir); h != "" {
				return nil, fmt.Errorf("index %s: %w: %s (stop it, or reach it through its socket)", dir, ErrLocked, h)
			}
			return nil, fmt.Errorf("index %s: %w (stop it, or use the running gateway)", dir, ErrLocked)
		}
		return nil, fmt.Errorf("index %s: %w", dir, err)
	}
	ix := &Index{db: db, dir: dir, packs: newPackCache()}
	writeHolder(dir)
	v, err := ix.Meta("schema")
	if err != nil {
		db.Close()
		return nil, err
	}
	switch v {
	case "":
		err = ix.SetMeta("schema", schemaVersion)
	case schemaVersion:
	default:
		err = &SchemaError{Dir: dir, Found: v, Want: schemaVersion}
	}
	if err == nil {
		err = ix.loadSerial()
	}
	if err == nil {
		err = ix.loadDamaged()
	}
	if err != nil {
		db.Close()
		return nil, err
	}
	return ix, nil
}

// Dir is where the index lives.
func (ix *Index) Dir() string { return ix.dir }

// Sync makes every write so far durable. Writes are not synced one by one (a pack's blob
// locations can be learned again from the backend); callers sync before they report a state
// that must survive a power cut, such as a backup that became available.
func (ix *Index) Sync() error {
	ix.closeMu.RLock()
	defer ix.closeMu.RUnlock()
	if ix.closed {
		return ErrClosed // [TestSyncAfterCloseIsAnError]
	}
	return ix.db.Sync()
}

// Close flushes and closes the database.
func (ix *Index) Close() error {
	ix.closeMu.Lock()
	defer ix.closeMu.Unlock()
	if ix.closed {
		return nil
	}
	ix.closed = true
	_ = os.Remove(holderPath(ix.dir))
	return ix.db.Close()
}

// Meta returns a meta value, "" when unset.
func (ix *Index) Meta(name string) (string, error) {
	var v string
	err := ix.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte("m/" + name))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		b, err := item.ValueCopy(nil)
		v = string(b)
		return err
	})
	return v, err
}

// SetMeta sets a meta value; "" deletes it.
func (ix *Index) SetMeta(name, value string) error {
	return ix.db.Update(func(txn *badger.Txn) error {
		if value == "" {
			return txn.Delete([]byte("m/" + name))
		}
		return txn.Set([]byte("m/"+name), []byte(value))
	})
}

func getJSON(txn *badger.Txn, key string, v any) error {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return err
	}
	return item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
}

func setJSON(txn *badger.Txn, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return txn.Set([]byte(key), b)
}

// update runs fn in a read-write transaction, retrying on conflicts.
func (ix *Index) update(fn func(txn *badger.Txn) error) error {
	for range 16 {
		err := ix.db.Update(fn)
		if !errors.Is(err, badger.ErrConflict) {
			return err
		}
	}
	return errors.New("index: too many conflicting updates")
}

// scan calls fn for each key with prefix, with the key after the prefix and the value.
func (ix *Index) scan(prefix string, values bool, fn func(k, v []byte) error) error {
	return ix.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.PrefetchValues = values
		o.Prefix = []byte(prefix)
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			var v []byte
			if values {
				var err error
				if v, err = item.ValueCopy(nil); err != nil {
					return err
				}
			}
			if err := fn(item.Key()[len(prefix):], v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Size returns the disk space the index uses (allocated blocks: Badger preallocates sparse
// files, so their length says little).
func (ix *Index) Size() int64 {
	var n int64
	_ = filepath.Walk(ix.dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
		return nil
	})
	return n
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
