//go:build linux

package blockio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// createSized makes a new regular file of size bytes (sparse, mode 0600) at path, which must
// not exist. The file is made unnamed in path's directory (O_TMPFILE), given its size, and
// only then linked at path: a process killed in between leaves nothing, never an empty file
// that a later restore would find too small. The link fails with EEXIST if path appeared
// meanwhile, as O_EXCL would.
func createSized(path string, size int64) (*os.File, error) {
	fd, err := unix.Open(filepath.Dir(path), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		return nil, errNoTmpfile // an old kernel says EISDIR, file systems without it EOPNOTSUPP
	}
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f := os.NewFile(uintptr(fd), path)
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("set size to %d bytes: %w", size, err)
	}
	// Through /proc (AT_SYMLINK_FOLLOW): linking by descriptor with AT_EMPTY_PATH needs
	// CAP_DAC_READ_SEARCH.
	if err := unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW); err != nil {
		f.Close()
		if errors.Is(err, unix.ENOENT) && !procMounted() {
			return nil, errNoTmpfile
		}
		return nil, &os.PathError{Op: "link", Path: path, Err: err}
	}
	return f, nil
}

// procMounted reports whether /proc/self/fd is there to link through.
func procMounted() bool {
	_, err := os.Stat("/proc/self/fd")
	return err == nil
}
