package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
)

func newLocal(t *testing.T) *Local {
	t.Helper()
	l, err := Open(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newLocal(t) })
}

func TestInvalidKeys(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	for _, key := range []string{"", "/abs", "a/../b", "../escape", "a//b", "a/", "./a", ".tmp-x", "dir/.tmp-1"} {
		if err := l.Put(ctx, key, []byte("x")); err == nil {
			t.Errorf("Put(%q) succeeded, want an invalid-key error", key)
		}
		if _, err := l.Stat(ctx, key); err == nil || errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Stat(%q) = %v, want an invalid-key error", key, err)
		}
	}
	for _, prefix := range []string{"/abs", "../x", "a/../b"} {
		if err := l.List(ctx, prefix, func(backend.ObjectInfo) error { return nil }); err == nil {
			t.Errorf("List(%q) succeeded, want an error", prefix)
		}
	}
}

// TestTempFiles plays a crash: temp files left in the tree are not objects, and Clean
// removes those old enough.
func TestTempFiles(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	if err := l.Put(ctx, "packs/ab/ab01", []byte("pack")); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(l.root, "packs", "ab", ".tmp-123")
	fresh := filepath.Join(l.root, "packs", ".tmp-456")
	// Not a name os.CreateTemp gives: someone's file in a repository made among other files.
	mine := filepath.Join(l.root, ".tmp-notes")
	for _, name := range []string{old, fresh, mine} {
		if err := os.WriteFile(name, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-time.Hour)
	for _, name := range []string{old, mine} {
		if err := os.Chtimes(name, past, past); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := l.List(ctx, "", func(fi backend.ObjectInfo) error { keys = append(keys, fi.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"packs/ab/ab01"}) {
		t.Fatalf("List = %v, want only packs/ab/ab01", keys)
	}
	n, err := l.Clean(ctx, time.Now().Add(-time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("Clean = %d, %v; want 1, nil", n, err)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old temp file still there: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("fresh temp file removed: %v", err)
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("a file that is no temp file of cairn's was removed: %v", err)
	}
}

func TestOpenNotADirectory(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(file); err == nil {
		t.Fatal("Open of a regular file succeeded")
	}
}

// Cached open files never serve a replaced or deleted object.
func TestOpenFilesFollowPutAndDelete(t *testing.T) {
	ctx := context.Background()
	l, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range openFilesMax + 5 { // more than the cache holds
		key := fmt.Sprintf("packs/%03d", i)
		if err := l.Put(ctx, key, []byte("first-"+key)); err != nil {
			t.Fatal(err)
		}
		if b, err := l.GetRange(ctx, key, 0, 5); err != nil || string(b) != "first" {
			t.Fatalf("%s: %q %v", key, b, err)
		}
	}
	if err := l.Put(ctx, "packs/001", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if b, err := l.GetRange(ctx, "packs/001", 0, 6); err != nil || string(b) != "second" {
		t.Fatalf("after overwrite: %q %v", b, err)
	}
	if err := l.Delete(ctx, "packs/002"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GetRange(ctx, "packs/002", 0, 1); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

// A pack deleted by another process (gc run from the CLI beside a gateway or a mount) is not
// evicted from the open-file cache, and its space stays taken while it is open: once unused
// for filesIdle it is closed. Before, a gateway at rest held up to 64 deleted packs open until
// other reads pushed them out.
func TestIdleFilesAreClosed(t *testing.T) {
	ctx := context.Background()
	orig := filesIdle
	filesIdle = 100 * time.Millisecond
	l, err := Open(t.TempDir())
	filesIdle = orig
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const key = "packs/ab/abcdef"
	if err := l.Put(ctx, key, []byte("pack bytes")); err != nil {
		t.Fatal(err)
	}
	if _, err := l.GetRange(ctx, key, 0, 4); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(l.root, filepath.FromSlash(key))
	if !holdsOpen(t, name) {
		t.Fatal("the pack read is not kept open: the test shows nothing")
	}
	if err := os.Remove(name); err != nil { // another process's gc
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for holdsOpen(t, name) {
		if time.Now().After(deadline) {
			t.Fatal("a pack deleted by another process is still held open 5 s after its last read")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The cache goes on working after a sweep.
	if err := l.Put(ctx, key, []byte("pack bytes")); err != nil {
		t.Fatal(err)
	}
	if b, err := l.GetRange(ctx, key, 0, 4); err != nil || string(b) != "pack" {
		t.Fatalf("read after the sweep: %q %v", b, err)
	}
}

// holdsOpen says whether this process has a descriptor open on name (or on the file it was,
// if deleted).
func holdsOpen(t *testing.T, name string) bool {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && (target == name || target == name+" (deleted)") {
			return true
		}
	}
	return false
}

// A spooled file is no object until Commit, which stores it whole; a cancelled Commit stores
// nothing and removes the file.
func TestSpoolCommit(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	f, err := l.Spool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("pack bytes")); err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := l.List(ctx, "", func(backend.ObjectInfo) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("List before Commit: %d objects, %v; want none", n, err)
	}
	if err := l.Commit(ctx, "packs/ab/ab01", f); err != nil {
		t.Fatal(err)
	}
	if b, err := l.GetRange(ctx, "packs/ab/ab01", 0, 10); err != nil || string(b) != "pack bytes" {
		t.Fatalf("after Commit: %q, %v", b, err)
	}
	if _, err := os.Stat(f.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spooled file still there after Commit: %v", err)
	}

	g, err := l.Spool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.Commit(cctx, "packs/cd/cd01", g); !errors.Is(err, context.Canceled) {
		t.Fatalf("Commit with a cancelled context = %v, want context.Canceled", err)
	}
	if _, err := l.Stat(ctx, "packs/cd/cd01"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("a cancelled Commit stored the object: %v", err)
	}
	if _, err := os.Stat(g.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a cancelled Commit left its file: %v", err)
	}
}

// TestCreateWithoutHardLinks: on a file system without hard links (vfat, exfat: link(2)
// fails with EPERM), Create stores the object with a rename that refuses a taken name, and
// still never replaces one.
func TestCreateWithoutHardLinks(t *testing.T) {
	link = func(oldname, newname string) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EPERM}
	}
	t.Cleanup(func() { link = os.Link })
	backendtest.Run(t, func(t *testing.T) backend.Backend { return newLocal(t) })
}

// TestDeleteIsDurable: Delete fsyncs the object's directory after the unlink, so a crash
// cannot bring back what it removed. gc's order (index objects, then the deletion record, then
// the packs) rests on it: an index object back after a crash whose pack stayed gone would be
// learned by every sync, and backups would reuse blobs that no longer exist. Before, Delete
// only unlinked.
func TestDeleteIsDurable(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	const key = "packindex/00000000000000ab-ab01"
	if err := l.Put(ctx, key, []byte("index object")); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(l.root, filepath.FromSlash(key))
	synced := false
	orig := syncDir
	syncDir = func(dir string) error {
		if _, err := os.Stat(name); dir == filepath.Dir(name) && errors.Is(err, os.ErrNotExist) {
			synced = true
		}
		return orig(dir)
	}
	t.Cleanup(func() { syncDir = orig })
	if err := l.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if !synced {
		t.Error("Delete returned without an fsync of the directory after the unlink")
	}
}

// A Put into a directory another goroutine has just made (and not yet fsynced into its
// parent) fsyncs that parent before it returns: it found the directory there and returned
// at once, acknowledging an object whose directory entry a crash could still lose.
func TestPutIntoANewDirectoryIsDurable(t *testing.T) {
	l := newLocal(t)
	ctx := context.Background()
	packs := filepath.Join(l.root, "packs")
	if err := os.MkdirAll(filepath.Join(packs, "ab"), 0o700); err != nil { // made, not fsynced
		t.Fatal(err)
	}
	var synced []string
	orig := syncDir
	syncDir = func(dir string) error {
		synced = append(synced, dir)
		return orig(dir)
	}
	t.Cleanup(func() { syncDir = orig })
	if err := l.Put(ctx, "packs/ab/abcdef", []byte("pack")); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(synced, packs) || !slices.Contains(synced, l.root) {
		t.Errorf("Put into a directory made by another: fsynced %q, want %s (its entry) and %s too", synced, packs, l.root)
	}
	synced = nil
	if err := l.Put(ctx, "packs/ab/abcdf0", []byte("pack")); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(synced, packs) {
		t.Errorf("the second Put into the directory fsynced its parent again: %q", synced)
	}
}
