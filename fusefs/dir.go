//go:build linux

package fusefs

import (
	"context"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// entry is one name in a directory: its attributes and how to build its node on lookup.
type entry struct {
	name   string
	attr   fuse.Attr
	short  bool   // attributes change (latest): short kernel timeouts
	hidden bool   // found by name but not listed (an older name of a backup's directory)
	target string // a symlink's target
	node   func() fs.InodeEmbedder
}

// dir is a directory whose contents come from the index. Listings load on first use and are
// kept until the next Refresh; nothing is loaded at mount time.
type dir struct {
	fs.Inode
	f    *FS
	attr fuse.Attr
	// list returns the directory's entries; lookup, if set, finds one name without listing
	// (backups/ finds an id without loading every backup).
	list   func(ctx context.Context) ([]entry, error)
	lookup func(ctx context.Context, name string) (*entry, error)
	// immutable directories (a backup's) never change: Refresh skips them.
	immutable bool

	mu      sync.Mutex // guards the fields below
	loaded  bool
	gen     uint64
	entries []entry // sorted by name
}

var (
	_ fs.NodeLookuper  = (*dir)(nil)
	_ fs.NodeReaddirer = (*dir)(nil)
	_ fs.NodeGetattrer = (*dir)(nil)
	_ fs.NodeStatfser  = (*dir)(nil)
)

func (f *FS) newDir(ino uint64, mtime time.Time, list func(context.Context) ([]entry, error)) *dir {
	return &dir{f: f, attr: f.attr(ino, syscall.S_IFDIR|f.dirMode(), 0, mtime), list: list}
}

// dirEntry is the entry of a directory node built by mk.
func (f *FS) dirEntry(name string, ino uint64, mtime time.Time, mk func() *dir) entry {
	return entry{name: name, attr: f.attr(ino, syscall.S_IFDIR|f.dirMode(), 0, mtime),
		node: func() fs.InodeEmbedder { return mk() }}
}

// load returns the current listing, reloading it after a Refresh.
func (d *dir) load(ctx context.Context) ([]entry, error) {
	gen := d.f.gen.Load()
	d.mu.Lock()
	if d.loaded && (d.immutable || d.gen == gen) {
		e := d.entries
		d.mu.Unlock()
		return e, nil
	}
	d.mu.Unlock()
	// A listing is small, bounded by the backend's timeouts, and kept: it runs to the end
	// even when the caller's request is interrupted. The kernel interrupts a request whenever
	// the waiting thread takes any signal (a Go program's preemption signal, SIGCHLD, a
	// resize), and failing the listing then would turn a harmless signal into EIO.
	e, err := d.list(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	slices.SortFunc(e, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	d.mu.Lock()
	d.entries, d.gen, d.loaded = e, gen, true
	d.mu.Unlock()
	return e, nil
}

// find returns the entry called name, or nil.
func (d *dir) find(ctx context.Context, name string) (*entry, error) {
	if d.lookup != nil {
		return d.lookup(context.WithoutCancel(ctx), name)
	}
	es, err := d.load(ctx)
	if err != nil {
		return nil, err
	}
	i, ok := slices.BinarySearchFunc(es, name, func(e entry, n string) int { return strings.Compare(e.name, n) })
	if !ok {
		return nil, nil
	}
	return &es[i], nil
}

// Lookup finds a child by name.
func (d *dir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	e, err := d.find(ctx, name)
	if err != nil {
		d.f.log.Error("lookup failed", "dir", d.path(), "name", name, "err", err)
		return nil, errno(err)
	}
	if e == nil {
		return nil, syscall.ENOENT
	}
	n := e.node()
	out.Attr = e.attr
	if e.short {
		// What changes (backup.json, latest) answers its attributes as they are now: the
		// listing may be older (a backup's directory is listed once).
		if g, ok := n.(fs.NodeGetattrer); ok {
			var a fuse.AttrOut
			if errno := g.Getattr(ctx, nil, &a); errno != 0 {
				return nil, errno
			}
			out.Attr = a.Attr
		}
		out.SetEntryTimeout(shortTimeout)
		out.SetAttrTimeout(shortTimeout)
	}
	return d.NewInode(ctx, n, fs.StableAttr{Mode: e.attr.Mode & syscall.S_IFMT, Ino: e.attr.Ino}), 0
}

// Readdir lists the directory.
func (d *dir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	es, err := d.load(ctx)
	if err != nil {
		d.f.log.Error("list failed", "dir", d.path(), "err", err)
		return nil, errno(err)
	}
	out := make([]fuse.DirEntry, 0, len(es))
	for _, e := range es {
		if !e.hidden {
			out = append(out, fuse.DirEntry{Name: e.name, Mode: e.attr.Mode, Ino: e.attr.Ino})
		}
	}
	return fs.NewListDirStream(out), 0
}

// Getattr reports the directory's attributes.
func (d *dir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Attr = d.attr
	return 0
}

// Statfs reports a read-only file system with nothing free.
func (d *dir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize, out.Frsize, out.NameLen = maxIO, maxIO, maxName
	return 0
}
