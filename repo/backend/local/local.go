package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
)

// tempPrefix starts the name of every file that is not (yet) an object.
const tempPrefix = ".tmp-"

// IsTemp reports whether name is that of a temp file this backend writes (an object being
// stored, a spooled pack): tempPrefix and the digits os.CreateTemp puts for its '*'. Only
// such a name is ever removed as a temp file: a repository made among other files (before
// 'repo init' refused that) may hold a user's ".tmp-notes".
func IsTemp(name string) bool {
	digits, ok := strings.CutPrefix(name, tempPrefix)
	if !ok || digits == "" {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Local is a backend.Backend over a directory.
type Local struct {
	root  string
	files *files // recently read objects, kept open
	// durable holds the directories whose entry in their parent this process has fsynced
	// (mkdirAll): a Put into a directory another goroutine has just made, before that one
	// fsynced its parent, was acknowledged with the directory's entry not yet durable.
	durable sync.Map
}

var (
	_ backend.Backend     = (*Local)(nil)
	_ backend.Spooler     = (*Local)(nil)
	_ backend.RangeReader = (*Local)(nil)
	_ backend.Creator     = (*Local)(nil)
)

// Open returns a backend rooted at dir, creating the directory if it does not exist.
func Open(dir string) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open local backend %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open local backend %s: %w", abs, translate(err))
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("open local backend %s: %w", abs, translate(err))
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("open local backend %s: not a directory", abs)
	}
	return &Local{root: abs, files: newFiles(openFilesMax)}, nil
}

// Location returns the root directory.
func (l *Local) Location() string { return l.root }

// Close does nothing: a directory holds no connections.
func (l *Local) Close() error {
	l.files.closeAll()
	return nil
}

// Reserve is the free space that a large write (a pack: a Spool, or a Put of more than
// smallWrite bytes) must leave on the repository's file system. A local repository keeps its
// index there (<repo>/index), and Badger writes its memtables, value log and tables through
// memory maps of sparse files: on a full disk such a write is a SIGBUS, which killed the
// gateway [TestFullRepositoryFailsTheBackupNotTheGateway]. Small writes (lock objects,
// manifests, deletion records) are not held to it, so that gc can still run to free space.
const Reserve = 64 << 20

const (
	smallWrite  = 1 << 20  // writes up to this size are not held to Reserve
	spoolMargin = 32 << 20 // room a Spool must find beyond Reserve: a pack, and one more
)

// roomFor refuses a write of n bytes that would leave less than Reserve free. A file system
// that cannot say how much is free is not held to it.
func (l *Local) roomFor(op, key string, n int64) error {
	free, ok := freeBytes(l.root)
	if !ok || free-n >= Reserve {
		return nil
	}
	return fmt.Errorf("%s %s: the repository's file system has %d MiB free, and cairn keeps %d MiB of it for the index: free space there ('cairn repo gc' reclaims what no backup needs): %w",
		op, key, max(free, 0)>>20, Reserve>>20, syscall.ENOSPC)
}

// openFilesMax bounds the objects kept open for range reads.
const openFilesMax = 64

// Get opens the object for reading. The reader does not watch ctx: a local read does not
// hang the way a network read can.
func (l *Local) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := l.filename(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	f, err := openFile(name)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return f, nil
}

// GetRange reads length bytes at offset with one pread.
func (l *Local) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	return backend.GetRangeInto(ctx, l, key, offset, length)
}

// ReadRange reads len(p) bytes at offset into p with one pread (backend.RangeReader).
func (l *Local) ReadRange(ctx context.Context, key string, offset int64, p []byte) error {
	length := int64(len(p))
	if offset < 0 {
		return fmt.Errorf("get %s range [%d,+%d): negative offset or length", key, offset, length)
	}
	name, err := l.filename(ctx, key)
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	o, err := l.files.acquire(name)
	if err != nil {
		return fmt.Errorf("get %s: %w", key, err)
	}
	defer l.files.release(o)
	if offset+length > o.size {
		return fmt.Errorf("get %s range [%d,+%d): %w (size %d)", key, offset, length, backend.ErrRange, o.size)
	}
	if _, err := o.f.ReadAt(p, offset); errors.Is(err, io.EOF) {
		// The object is shorter than when it was opened (o.size): cut short since, which is
		// damage as a range past its end is, not the plain EOF that readers of a volume take
		// for its end [TestRestoreOfAPackCutShortAfterItWasOpened].
		return fmt.Errorf("get %s range [%d,+%d): %w (cut short since it was opened at %d bytes)", key, offset, length, backend.ErrRange, o.size)
	} else if err != nil {
		return fmt.Errorf("get %s range [%d,+%d): %w", key, offset, length, err)
	}
	return nil
}

// Put writes data to a temp file in the target's directory, fsyncs it, renames it over the
// key and fsyncs the directory: readers see the old object or the new one, never a part.
func (l *Local) Put(ctx context.Context, key string, data []byte) error {
	return l.store(ctx, "put", key, data, os.Rename)
}

// Create is Put that fails with backend.ErrExists when the key holds an object
// (backend.Creator): the temp file is linked to the key's name, which link(2) refuses when
// the name is taken, and never renamed over it.
func (l *Local) Create(ctx context.Context, key string, data []byte) error {
	return l.store(ctx, "create", key, data, publishNew)
}

// store writes data to a temp file in the target's directory and makes it the object key
// with publish (commit).
func (l *Local) store(ctx context.Context, op, key string, data []byte, publish func(tmp, name string) error) error {
	name, err := l.filename(ctx, key)
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	dir := filepath.Dir(name)
	if err := l.mkdirAll(dir); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	if len(data) > smallWrite {
		if err := l.roomFor(op, key, int64(len(data))); err != nil {
			return err
		}
	}
	f, err := os.CreateTemp(dir, tempPrefix+"*")
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, key, translate(err))
	}
	if _, err := f.Write(data); err != nil {
		discard(f)
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	return l.commit(ctx, op, key, name, f, publish)
}

// publishNew makes the temp file tmp the object at name only if name is free: a hard link,
// which link(2) refuses when the name is taken, then the temp name goes; on a file system
// without hard links (vfat, exfat) a rename that refuses a taken name. A taken name is
// backend.ErrExists.
func publishNew(tmp, name string) error {
	err := link(tmp, name)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) || errors.Is(err, syscall.EOPNOTSUPP) {
		err = renameNoReplace(tmp, name)
	} else if err == nil {
		_ = os.Remove(tmp)
	}
	if errors.Is(err, fs.ErrExist) {
		return backend.ErrExists
	}
	return err
}

// link is os.Link; a test stands in a file system without hard links.
var link = os.Link

// discard closes and removes a temp file that will not become an object.
func discard(f *os.File) {
	_ = f.Close()
	_ = os.Remove(f.Name())
}

// Spool creates an empty temp file in the root directory (backend.Spooler): on the same file
// system as every object, so Commit's rename moves no data.
func (l *Local) Spool(ctx context.Context) (*os.File, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := l.roomFor("spool", "a pack", spoolMargin); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(l.root, tempPrefix+"*")
	if err != nil {
		return nil, fmt.Errorf("spool in %s: %w", l.root, translate(err))
	}
	return f, nil
}

// Commit stores a file Spool gave under key, as Put stores its bytes (backend.Spooler).
func (l *Local) Commit(ctx context.Context, key string, f *os.File) error {
	name, err := l.filename(ctx, key)
	if err == nil {
		err = l.mkdirAll(filepath.Dir(name))
	}
	if err != nil {
		discard(f)
		return fmt.Errorf("put %s: %w", key, err)
	}
	// Other writers' spools may have taken the margin Spool found.
	if err := l.roomFor("put", key, 0); err != nil {
		discard(f)
		return err
	}
	return l.commit(ctx, "put", key, name, f, os.Rename)
}

// commit makes the written temp file f the object key at name: it fsyncs f, makes it the
// object with publish (os.Rename over name for a Put, publishNew for a Create) and fsyncs
// name's directory. It closes f, and removes it on failure. op names the call in errors.
func (l *Local) commit(ctx context.Context, op, key, name string, f *os.File, publish func(tmp, name string) error) (err error) {
	defer func() {
		if err != nil {
			discard(f)
		}
	}()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s %s: fsync: %w", op, key, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s %s: close: %w", op, key, err)
	}
	// The last chance to honour a cancel: after the rename the object exists.
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, err)
	}
	if err := publish(f.Name(), name); err != nil {
		return fmt.Errorf("%s %s: %w", op, key, translate(err))
	}
	// Readers holding the old object keep reading it whole; new ones open the new one.
	l.files.evict(name)
	dir := filepath.Dir(name)
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("%s %s: fsync directory: %w", op, key, err)
	}
	return nil
}

// Delete removes the object and fsyncs its directory; a missing object is not an error.
// The fsync makes a removal durable before the next step: gc removes a pack's index objects
// before its deletion record and the record before the pack, and a crash that brought back an
// index object whose pack stayed gone would make every sync learn a pack that no longer
// exists, so backups would reuse its blobs.
func (l *Local) Delete(ctx context.Context, key string) error {
	name, err := l.filename(ctx, key)
	if err != nil {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	l.files.evict(name)
	if err := os.Remove(name); err != nil {
		if errors.Is(translate(err), backend.ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, translate(err))
	}
	if err := syncDir(filepath.Dir(name)); err != nil {
		return fmt.Errorf("delete %s: fsync directory: %w", key, err)
	}
	return nil
}

// Stat returns the object's size.
func (l *Local) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	name, err := l.filename(ctx, key)
	if err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, err)
	}
	fi, err := os.Stat(name)
	if err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, translate(err))
	}
	if !fi.Mode().IsRegular() {
		return backend.ObjectInfo{}, fmt.Errorf("stat %s: %w", key, backend.ErrNotFound)
	}
	return backend.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// List walks the directories under prefix. A prefix may end inside a name ("packs/ab"), so
// the walk starts at the prefix's last directory and keeps only names that match.
func (l *Local) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	return l.list(ctx, prefix, "", fn)
}

// ListKeys is List without a stat of each file: the names come from the directories alone.
// A second gateway's catch-up lists manifests/ for their ids; with 20,000 backups 70 % of
// the walk's time was the stats (see docs/benchmarks.md, "Catch-up of a second gateway").
func (l *Local) ListKeys(ctx context.Context, prefix string, fn func(key string) error) error {
	return l.walk(ctx, prefix, "", func(key string, _ fs.DirEntry) error { return fn(key) })
}

// list is List of the keys that sort after after. Those it skips are not stat'ed: on cold
// caches each stat is a read of the file's inode.
func (l *Local) list(ctx context.Context, prefix, after string, fn func(backend.ObjectInfo) error) error {
	return l.walk(ctx, prefix, after, func(key string, d fs.DirEntry) error {
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil // removed while we walked
		}
		if err != nil {
			return err
		}
		return fn(backend.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()})
	})
}

// walk calls fn with each object under prefix whose key sorts after after, and its entry.
func (l *Local) walk(ctx context.Context, prefix, after string, fn func(key string, d fs.DirEntry) error) error {
	if err := checkPrefix(prefix); err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	start := l.root
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		start = filepath.Join(l.root, filepath.FromSlash(prefix[:i]))
	}
	err := filepath.WalkDir(start, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == start && errors.Is(translate(err), backend.ErrNotFound) {
				return fs.SkipAll
			}
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed while we walked
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == start {
			return nil
		}
		rel, err := filepath.Rel(l.root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if d.IsDir() {
			// Descend only where keys can still match the prefix.
			if !strings.HasPrefix(key+"/", prefix) && !strings.HasPrefix(prefix, key+"/") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), tempPrefix) || !strings.HasPrefix(key, prefix) || key <= after {
			return nil
		}
		return fn(key, d)
	})
	if err != nil {
		return fmt.Errorf("list %q: %w", prefix, err)
	}
	return nil
}

// ListAfter lists the keys under prefix that sort after after. A directory walk has no
// cheaper way to start in the middle, but it stats only the keys it lists: the sync before
// each backup lists the pack index after its cursor, and on cold caches stating every older
// index object took 380-430 ms at 50,000 of them, against 44-50 ms for the walk alone.
func (l *Local) ListAfter(ctx context.Context, prefix, after string, fn func(backend.ObjectInfo) error) error {
	return l.list(ctx, prefix, after, fn)
}

// Clean removes the temp files that interrupted writes left behind (backend.Spooler): those
// last modified before before. gc calls it under its exclusive lock with a cutoff an hour back
// by the store's clock, so it never takes the file of a write still running elsewhere.
func (l *Local) Clean(ctx context.Context, before time.Time) (removed int, err error) {
	cutoff := before
	err = filepath.WalkDir(l.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() || !IsTemp(d.Name()) {
			return nil
		}
		fi, err := d.Info()
		if err != nil || fi.ModTime().After(cutoff) {
			return nil
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		removed++
		return nil
	})
	if err != nil {
		return removed, fmt.Errorf("clean %s: %w", l.root, err)
	}
	return removed, nil
}

// filename checks ctx and key and maps the key to its file.
func (l *Local) filename(ctx context.Context, key string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := checkKey(key); err != nil {
		return "", err
	}
	return filepath.Join(l.root, filepath.FromSlash(key)), nil
}

// mkdirAll creates dir and its missing parents below the root, fsyncing each parent so the
// new directory entry is as durable as the file that will be renamed into it.
//
// A directory that exists is taken as durable only once this process has fsynced its parent:
// one made by another goroutine a moment ago may not be yet [TestPutIntoANewDirectoryIsDurable].
func (l *Local) mkdirAll(dir string) error {
	if dir == l.root {
		return nil
	}
	if _, ok := l.durable.Load(dir); ok {
		return nil
	}
	parent := filepath.Dir(dir)
	if err := l.mkdirAll(parent); err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
	} else if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) { // EEXIST: made concurrently
		return translate(err)
	}
	if err := syncDir(parent); err != nil {
		return err
	}
	l.durable.Store(dir, struct{}{})
	return nil
}

// checkKey refuses keys that would escape the root or collide with temp files.
func checkKey(key string) error {
	if key == "" || strings.HasPrefix(key, "/") || strings.HasSuffix(key, "/") || path.Clean(key) != key {
		return fmt.Errorf("invalid key %q", key)
	}
	for _, part := range strings.Split(key, "/") {
		if part == ".." || strings.HasPrefix(part, tempPrefix) {
			return fmt.Errorf("invalid key %q", key)
		}
	}
	return nil
}

// checkPrefix refuses prefixes that would walk outside the root.
func checkPrefix(prefix string) error {
	if strings.HasPrefix(prefix, "/") {
		return fmt.Errorf("invalid prefix")
	}
	for _, part := range strings.Split(prefix, "/") {
		if part == ".." || part == "." {
			return fmt.Errorf("invalid prefix")
		}
	}
	return nil
}

// openFile opens a regular file for reading; a directory or a missing path is ErrNotFound.
func openFile(name string) (*os.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, translate(err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, translate(err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, backend.ErrNotFound
	}
	return f, nil
}

// syncDir fsyncs a directory so renames, creations and removals in it survive a crash; a
// test watches when it runs.
var syncDir = func(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// translate maps a missing path (or a path through a file, ENOTDIR) to backend.ErrNotFound
// and a refused one to backend.ErrPermission, keeping the path in the message.
func translate(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return backend.ErrNotFound
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %v", backend.ErrPermission, err)
	}
	return err
}
