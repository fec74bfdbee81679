//go:build linux

package blockio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An open flag that only Linux has.
const flagNoAtime = unix.O_NOATIME

// control runs fn with f's descriptor, retrying while the call is interrupted by a signal.
// It goes through SyscallConn so a concurrent Close cannot hand fn a reused descriptor.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		for {
			opErr = fn(int(fd))
			if !errors.Is(opErr, unix.EINTR) {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return opErr
}

// DeviceSize returns the size in bytes of the block device open as f (BLKGETSIZE64).
func DeviceSize(f *os.File) (int64, error) {
	var size uint64
	err := control(f, func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size)))
		if e != 0 {
			return e
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("size of device %s: %w", f.Name(), err)
	}
	return int64(size), nil
}

// logicalBlockSize returns the device's logical sector size (BLKSSZGET), the unit that
// O_DIRECT and BLKZEROOUT ranges must be multiples of.
func logicalBlockSize(f *os.File) (int64, error) {
	var size int
	err := control(f, func(fd int) error {
		var err error
		size, err = unix.IoctlGetInt(fd, unix.BLKSSZGET)
		return err
	})
	return int64(size), err
}

// readOnly reports whether the device is read-only (BLKROGET). Opening a read-only device
// for writing can succeed; only the writes fail.
func readOnly(f *os.File) (bool, error) {
	var ro int
	err := control(f, func(fd int) error {
		var err error
		ro, err = unix.IoctlGetInt(fd, unix.BLKROGET)
		return err
	})
	return ro != 0, err
}

// seekData returns the next data extent [start, end) at or after off, clipped to size.
// ok is false when the filesystem cannot answer, so the caller treats everything as data.
func seekData(f *os.File, off, size int64) (start, end int64, ok bool, err error) {
	err = control(f, func(fd int) error {
		var err error
		start, err = unix.Seek(fd, off, unix.SEEK_DATA)
		if err != nil {
			return err
		}
		end, err = unix.Seek(fd, start, unix.SEEK_HOLE)
		return err
	})
	switch {
	case errors.Is(err, unix.ENXIO): // no data at or after off, or off is past the file's end now
		return size, size, true, nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EOPNOTSUPP):
		return off, size, false, nil
	case err != nil:
		return 0, 0, true, err
	}
	return min(start, size), min(end, size), true, nil
}

// openDirect opens the file f has open once more, with O_DIRECT and mode (os.O_RDONLY for a
// Source's aligned reads, os.O_RDWR for a Target's aligned writes); nil where O_DIRECT is
// refused. It reopens the open file through /proc/self/fd, not by path: the path may lead to
// another file by now (an image renamed over, a udev symlink moved to another device): a
// backup's aligned reads would take that file's bytes, a restore's aligned writes would land
// on a device nobody checked for size, claim or use. Without /proc it opens path, and keeps
// the handle only if it is f's file.
func openDirect(f *os.File, path string, mode int) *os.File {
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	var d *os.File
	_ = control(f, func(fd int) error {
		// Within control, so the number is still f's while it is reopened.
		d = openSame(fi, "/proc/self/fd/"+strconv.Itoa(fd), mode)
		return nil
	})
	if d == nil {
		d = openSame(fi, path, mode)
	}
	return d
}

// openSame opens name with mode and O_DIRECT (and O_NOATIME where the kernel lets us) and
// returns it if it is the file fi describes (the same st_dev and st_ino), else nil.
func openSame(fi fs.FileInfo, name string, mode int) *os.File {
	for _, flag := range []int{unix.O_DIRECT | unix.O_NOATIME, unix.O_DIRECT} {
		d, err := os.OpenFile(name, mode|flag, 0)
		if err != nil {
			continue
		}
		if di, err := d.Stat(); err == nil && os.SameFile(fi, di) {
			return d
		}
		_ = d.Close() // nothing read or written through it
		return nil
	}
	return nil
}

// punchHole deallocates [off, off+n) of a regular file so it reads as zeros, keeping the size.
func punchHole(f *os.File, off, n int64) error {
	return control(f, func(fd int) error {
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	})
}

// zeroOut makes the device range [off, off+n) read as zeros (BLKZEROOUT). The kernel offloads
// to WRITE ZEROES where the device has it and writes zero pages otherwise, and drops the
// range from the page cache either way. off and n must be multiples of the logical block size.
func zeroOut(f *os.File, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	return control(f, func(fd int) error {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
		if e != 0 {
			return e
		}
		return nil
	})
}

// isUnsupported reports whether err says an operation is not available for this file or
// device, so a slower equivalent should be used instead.
func isUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) ||
		errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL)
}

// adviseSequential tells the kernel f is read front to back, which widens readahead.
func adviseSequential(f *os.File) error {
	return control(f, func(fd int) error {
		return unix.Fadvise(fd, 0, 0, unix.FADV_SEQUENTIAL)
	})
}

// adviseDontNeed drops the clean cached pages of [off, off+n) so a backup of a large volume
// does not push everything else out of the page cache.
func adviseDontNeed(f *os.File, off, n int64) error {
	return control(f, func(fd int) error {
		return unix.Fadvise(fd, off, n, unix.FADV_DONTNEED)
	})
}

// isBusy reports whether err is EBUSY, what an O_EXCL open of a claimed device returns.
func isBusy(err error) bool { return errors.Is(err, syscall.EBUSY) }

// FreeSpace returns the bytes an unprivileged writer may still use on the file system that
// holds path, and that file system's device number (to tell whether two paths share one).
func FreeSpace(path string) (free int64, dev uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, err
	}
	var fi unix.Stat_t
	if err := unix.Stat(path, &fi); err != nil {
		return 0, 0, err
	}
	return int64(st.Bavail) * st.Bsize, fi.Dev, nil
}
