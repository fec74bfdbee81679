//go:build linux

package fusefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options tune a mount.
type Options struct {
	// Project shows only that project's volumes and backups; empty shows every project.
	Project string
	// AllowOther lets users other than the mounting one in (allow_other), with the kernel
	// checking modes (default_permissions); files are then readable by everyone.
	AllowOther bool
	// Logger gets failed reads (backup id and offset) and refresh failures.
	Logger *slog.Logger
	// Debug logs every FUSE request.
	Debug bool
}

// Timeouts: backups are immutable, so the kernel may keep names and attributes long. What
// can change (latest, the lists) is refreshed through notifications or short timeouts.
const (
	longTimeout  = time.Hour
	shortTimeout = time.Second
	maxIO        = 1 << 20 // max read and readahead
)

// FS is a mounted tree. Refresh makes it show backups that came or went since.
type FS struct {
	repo   *repo.Repository
	ix     *index.Index
	o      Options
	log    *slog.Logger
	dir    string
	server *fuse.Server
	root   *dir
	gen    atomic.Uint64 // bumped by Refresh; directory listings older than it are reloaded
	uid    uint32
	gid    uint32
	mtime  time.Time
}

// Mount mounts the tree on dir, which must exist and be empty (see CheckMountpoint), and
// serves it until Unmount or an external unmount. r and ix must stay open until then.
func Mount(dir string, r *repo.Repository, ix *index.Index, o Options) (*FS, error) {
	f := &FS{repo: r, ix: ix, o: o, log: o.Logger, dir: dir, uid: uint32(os.Getuid()), gid: uint32(os.Getgid()),
		mtime: time.Now()}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.root = f.newDir(1, f.mtime, f.listRoot)
	long, zero := longTimeout, time.Duration(0)
	opts := &fs.Options{
		EntryTimeout:    &long,
		AttrTimeout:     &long,
		NegativeTimeout: &zero, // a backup may appear any time
		RootStableAttr:  &fs.StableAttr{Ino: 1},
		UID:             f.uid,
		GID:             f.gid,
		MountOptions: fuse.MountOptions{
			FsName:               "cairn",
			Name:                 "cairn",
			MaxWrite:             maxIO,
			MaxReadAhead:         maxIO,
			AllowOther:           o.AllowOther,
			DisableXAttrs:        true,
			IgnoreSecurityLabels: true,
			DirectMount:          true, // as root: mount(2) without fusermount; falls back to it
			// Every read is answered from decoded memory, never from a file descriptor, so
			// go-fuse's splice path can never apply; left on, it still took a pipe, wrote
			// the reply header into it and drained it again on every read before falling
			// back to writev (9 % of the mount's CPU under random 4 KiB reads).
			DisableSplice: true,
			Debug:         o.Debug,
			Options:       []string{"ro"},
		},
	}
	if o.AllowOther {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	if !o.Debug {
		opts.MountOptions.Logger = log.New(io.Discard, "", 0)
	}
	server, err := fs.Mount(dir, f.root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s: %w", dir, err)
	}
	f.server = server
	f.raiseReadahead()
	return f, nil
}

// raiseReadahead lifts the kernel's readahead for this mount from its 128 KiB default to
// maxIO, so sequential readers (dd, qemu-img, a loop device) send 1 MiB reads. Only root may;
// without it reads are smaller, not wrong.
func (f *FS) raiseReadahead() {
	var st unix.Stat_t
	if err := unix.Stat(f.dir, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(fmt.Sprint(maxIO>>10)), 0o644); err != nil {
		f.log.Debug("readahead unchanged", "path", p, "err", err)
	}
}

// Wait returns when the tree is unmounted.
func (f *FS) Wait() { f.server.Wait() }

// Unmount unmounts the tree; it fails while files are open (the caller may then detach it
// lazily with DetachMount).
func (f *FS) Unmount() error {
	if err := f.server.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", f.dir, err)
	}
	return nil
}

// Refresh makes the tree show the index as it is now: listings are reloaded on their next
// read, and the kernel forgets names of backups and volumes that went away. The gateway
// calls it after a backup or delete; cairn mount calls it on a timer.
func (f *FS) Refresh(ctx context.Context) {
	f.gen.Add(1)
	f.refreshDir(ctx, f.root)
}

// refreshDir drops names under d that no longer resolve to the same node, depth first.
func (f *FS) refreshDir(ctx context.Context, d *dir) {
	if d.immutable {
		return
	}
	for name, child := range d.Children() {
		e, err := d.find(ctx, name)
		if err != nil {
			f.log.Warn("refresh failed", "dir", d.path(), "err", err)
			continue
		}
		if e == nil || e.attr.Ino != child.StableAttr().Ino {
			d.RmChild(name)
			if errno := d.NotifyEntry(name); errno != 0 && !errors.Is(errno, syscall.ENOENT) {
				f.log.Debug("invalidate entry", "name", name, "err", errno)
			}
			continue
		}
		if cd, ok := child.Operations().(*dir); ok {
			f.refreshDir(ctx, cd)
		}
	}
}

// visible says whether a backup belongs in the tree: a committed one, being restored or not.
// Restoring reads a backup and changes nothing in it; when only available backups showed, the
// newest backup left the tree while it was restored and latest went back to the one before
// it [TestTreeShowsABackupBeingRestored].
func (f *FS) visible(b *index.Backup) bool {
	return b.Status.Committed() && (f.o.Project == "" || b.Project == f.o.Project)
}

func (f *FS) fileMode() uint32 {
	if f.o.AllowOther {
		return 0o444
	}
	return 0o400
}

func (f *FS) dirMode() uint32 {
	if f.o.AllowOther {
		return 0o555
	}
	return 0o500
}

// attr fills what every node shares.
func (f *FS) attr(ino uint64, mode uint32, size int64, mtime time.Time) fuse.Attr {
	a := fuse.Attr{Ino: ino, Mode: mode, Size: uint64(size), Nlink: 1, Blksize: maxIO,
		Owner: fuse.Owner{Uid: f.uid, Gid: f.gid}}
	if mode&syscall.S_IFDIR != 0 {
		a.Nlink = 2
	}
	a.SetTimes(nil, &mtime, &mtime)
	return a
}

// readErrno turns a failed read into what the reader gets, logging what an admin needs.
func (f *FS) readErrno(err error, backupID string, off int64, n int, what string) syscall.Errno {
	f.log.Error("read failed", "backup_id", backupID, "offset", off, "length", n, "file", what, "err", err)
	return errno(err)
}

// errno is what a failed request answers: EINTR for one the kernel interrupted (as go-fuse
// asks of a file system that honours the interrupt; the caller retries), else EIO.
func errno(err error) syscall.Errno {
	if errors.Is(err, context.Canceled) {
		return syscall.EINTR
	}
	return syscall.EIO
}

// path names a directory for log lines.
func (d *dir) path() string {
	p := d.Path(nil)
	if p == "" {
		return "/"
	}
	return "/" + strings.TrimPrefix(p, "/")
}
