//go:build linux

package blockio

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// BaseDirName is the directory, beside a tracked image file and on its file system, where
// cairn keeps change-tracking bases: one subdirectory per volume.
const BaseDirName = ".cairn-cbt"

// Base suffixes: a clone being read by a running backup, the base a finished one left, and
// beside a base that is being brought forward in place, the ranges it may no longer hold as
// its backup read them (Advance).
const (
	cloneSuffix = ".new"
	baseSuffix  = ".base"
	dirtySuffix = ".dirty"
)

// BaseStore holds a volume's change-tracking base: a reflink clone of the image as the last
// backup read it. The next backup clones the image again, asks the file system which extents
// the two no longer share (ReflinkDiff), reads only those, and its clone becomes the base. A
// base costs the space of the blocks written since it was taken: the rest is shared with the
// image. Bases are named by the caller (the backup they belong to), so a base is never taken
// for another one's.
type BaseStore struct {
	dir string
}

// OpenBaseStore opens (creating it, mode 0700) the base directory of the volume named id
// whose image file is image. It must be on the image's file system: clones cannot cross one.
func OpenBaseStore(image, id string) (*BaseStore, error) {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return nil, fmt.Errorf("change-tracking base of %s: invalid name %q", image, id)
	}
	dir := filepath.Join(filepath.Dir(image), BaseDirName, id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, pathError("change-tracking directory", dir, err)
	}
	var si, sd syscall.Stat_t
	if err := syscall.Stat(image, &si); err != nil {
		return nil, pathError("volume", image, err)
	}
	if err := syscall.Stat(dir, &sd); err != nil {
		return nil, pathError("change-tracking directory", dir, err)
	}
	if si.Dev != sd.Dev {
		return nil, fmt.Errorf("%w: change-tracking directory %s is not on the file system of %s", ErrNoSnapshot, dir, image)
	}
	return &BaseStore{dir: dir}, nil
}

// RemoveBaseStore deletes the base directory of volume id beside image, and the parent
// directory when it is left empty.
func RemoveBaseStore(image, id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") || id == "." || id == ".." {
		return nil
	}
	top := filepath.Join(filepath.Dir(image), BaseDirName)
	if err := os.RemoveAll(filepath.Join(top, id)); err != nil {
		return fmt.Errorf("remove change-tracking base: %w", err)
	}
	_ = os.Remove(top) // only when empty: other volumes' bases stay
	return nil
}

// Dir is the store's directory.
func (s *BaseStore) Dir() string { return s.dir }

// Probe reports whether the store's file system makes reflink clones, by cloning a small
// temporary file; nil when it does, an ErrNoSnapshot error saying why not otherwise.
func (s *BaseStore) Probe() error {
	src := filepath.Join(s.dir, ".probe")
	if err := os.WriteFile(src, make([]byte, 4096), 0o600); err != nil {
		return pathError("change-tracking directory", s.dir, err)
	}
	defer os.Remove(src)
	dst := src + ".clone"
	os.Remove(dst)
	if err := cloneFile(src, dst); err != nil {
		if errors.Is(err, ErrNoSnapshot) {
			return fmt.Errorf("%w: %s is on a file system without reflinks", ErrNoSnapshot, filepath.Dir(filepath.Dir(s.dir)))
		}
		return err
	}
	return os.Remove(dst)
}

// Clone makes a reflink clone of image named name, for a backup to read: a point in time,
// taken without stopping the image's writer. It returns the clone's path.
func (s *BaseStore) Clone(image, name string) (string, error) {
	dst := filepath.Join(s.dir, name+cloneSuffix)
	os.Remove(dst) // a crashed attempt with the same name
	if err := cloneFile(image, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// Lock takes the store for one backup until unlock is called: it alone then compares with,
// brings forward, keeps or removes the volume's bases. Backups of the volume in one process
// are one at a time anyway; this is for another process (another gateway on the same
// repository knows the volume by the same id) whose backup would otherwise bring the same
// base forward while this one reads it, and leave it holding what no backup read. It does not
// wait: the error says the store is busy.
func (s *BaseStore) Lock() (unlock func() error, err error) {
	d, err := os.Open(s.dir)
	if err != nil {
		return nil, pathError("change-tracking directory", s.dir, err)
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		d.Close() // read-only
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another backup of the volume is using its change-tracking base (%s)", s.dir)
		}
		return nil, pathError("change-tracking directory", s.dir, err)
	}
	return d.Close, nil // closing the directory releases the lock
}

// Base returns the path of the base named name, or "" when there is none.
func (s *BaseStore) Base(name string) (string, error) {
	p := filepath.Join(s.dir, name+baseSuffix)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", pathError("change-tracking base", p, err)
	}
	if !fi.Mode().IsRegular() {
		return "", nil
	}
	return p, nil
}

// Keep makes the clone at path the base named name, durably, and removes every other base
// and clone in the store: only the newest backup's base is ever used.
func (s *BaseStore) Keep(path, name string) error {
	dst := filepath.Join(s.dir, name+baseSuffix)
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("keep change-tracking base: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("keep change-tracking base: %w", err)
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("keep change-tracking base: %w", err)
	}
	// A leftover costs space, not correctness, except a base without its .dirty record: the
	// record goes only once its base is gone, so a base that could not be removed is never
	// trusted whole should the backup it was named after become a parent again.
	var records []string
	for _, e := range entries {
		switch {
		case e.Name() == name+baseSuffix:
		case strings.HasSuffix(e.Name(), dirtySuffix):
			records = append(records, e.Name())
		default:
			_ = os.Remove(filepath.Join(s.dir, e.Name()))
		}
	}
	for _, r := range records {
		base := filepath.Join(s.dir, strings.TrimSuffix(r, dirtySuffix)+baseSuffix)
		if _, err := os.Lstat(base); errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(filepath.Join(s.dir, r))
		}
	}
	return nil
}

// Drop removes the clone or base at path (a backup that failed leaves the old base as it was).
func (s *BaseStore) Drop(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove change-tracking clone: %w", err)
	}
	return nil
}

// Dirty returns the ranges in which the base named name may differ from the backup it is
// named after: those an Advance recorded and no committed backup took over. nil when there
// are none; an error when the record cannot be read, and then the base must not be trusted.
func (s *BaseStore) Dirty(name string) (Changes, error) {
	p := filepath.Join(s.dir, name+dirtySuffix)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, pathError("change-tracking record", p, err)
	}
	var rec dirtyRecord
	if err := json.Unmarshal(b, &rec); err != nil || rec.Base != name {
		return nil, fmt.Errorf("change-tracking record %s is unreadable or not this base's", p)
	}
	var c Changes
	for _, r := range rec.Ranges {
		if r[1] <= r[0] || (len(c) > 0 && r[0] < c[len(c)-1].End) {
			return nil, fmt.Errorf("change-tracking record %s holds ranges out of order", p)
		}
		c = append(c, Extent{r[0], r[1]})
	}
	return c, nil
}

// dirtyRecord is the .dirty file beside a base: the ranges, sorted and disjoint.
type dirtyRecord struct {
	Base   string     `json:"base"`
	Ranges [][2]int64 `json:"ranges"`
}

// Advance brings the base named name forward to image in place, for a backup that will read
// ranges from it (docs/design.md, "Bringing a base forward in place"). ranges must include
// every range where the two may differ and every range of Dirty(name). It records ranges as
// the base's dirty ranges, durably, before it changes anything, then clones each range of
// image into the base (FICLONERANGE: atomic per range). It returns the base's path: it holds
// image's bytes in ranges and the named backup's elsewhere. After an error the base may hold
// some ranges of the image; the record covers them.
func (s *BaseStore) Advance(image, name string, ranges Changes) (string, error) {
	base := filepath.Join(s.dir, name+baseSuffix)
	if len(ranges) == 0 {
		return base, nil // nothing to clone, and any earlier record's ranges are among these
	}
	rec := dirtyRecord{Base: name, Ranges: make([][2]int64, 0, len(ranges))}
	for _, r := range ranges {
		rec.Ranges = append(rec.Ranges, [2]int64{r.Start, r.End})
	}
	b, _ := json.Marshal(rec)
	if err := s.writeDurably(name+dirtySuffix, b); err != nil {
		return "", fmt.Errorf("record the change-tracking base's dirty ranges: %w", err)
	}
	src, err := os.Open(image)
	if err != nil {
		return "", pathError("volume", image, err)
	}
	defer src.Close() // read-only
	dst, err := os.OpenFile(base, os.O_WRONLY, 0)
	if err != nil {
		return "", pathError("change-tracking base", base, err)
	}
	for _, r := range ranges {
		arg := unix.FileCloneRange{Src_fd: int64(src.Fd()), Src_offset: uint64(r.Start), Src_length: uint64(r.End - r.Start), Dest_offset: uint64(r.Start)}
		if err := unix.IoctlFileCloneRange(int(dst.Fd()), &arg); err != nil {
			dst.Close()
			return "", fmt.Errorf("clone range [%d, %d) of %s into its change-tracking base: FICLONERANGE: %w", r.Start, r.End, image, err)
		}
	}
	if err := dst.Close(); err != nil {
		return "", pathError("change-tracking base", base, err)
	}
	return base, nil
}

// writeDurably writes file name in the store: a temporary file, synced, renamed over name,
// and the directory synced, so a crash leaves the old file or the new one, whole.
func (s *BaseStore) writeDurably(name string, data []byte) error {
	tmp := filepath.Join(s.dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(s.dir)
}
