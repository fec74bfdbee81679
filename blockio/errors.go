package blockio

import (
	"errors"
	"fmt"
	"io/fs"
)

// Sentinel errors, wrapped with the volume's path; callers map them with errors.Is.
var (
	// ErrNotVolume: the path is neither a block device nor a regular file.
	ErrNotVolume = errors.New("not a block device or regular file")
	// ErrInUse: the volume is mounted, attached, held by another device or opened
	// exclusively by someone else.
	ErrInUse = errors.New("in use")
	// ErrTooSmall: a restore target device is smaller than the volume being restored.
	ErrTooSmall = errors.New("device too small")
)

// pathError turns an error from opening or stating path into one line that names what the
// path is for ("volume", "restore target") once, keeping errors.Is for fs.ErrNotExist and
// fs.ErrPermission working.
func pathError(what, path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%s %s: %w; run as root or grant this user access to it", what, path, err)
	}
	return fmt.Errorf("%s %s: %w", what, path, err)
}

// isBlockDevice reports whether fi describes a block device (a device that is not a
// character device).
func isBlockDevice(fi fs.FileInfo) bool {
	m := fi.Mode()
	return m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0
}
