//go:build !linux

package blockio

import (
	"errors"
	"fmt"
	"os"
)

// cairn runs on Linux; these stand-ins keep the package building elsewhere (editors, tools)
// and make every device operation fail with errors.ErrUnsupported.

const flagNoAtime = 0

// DeviceSize returns the size in bytes of the block device open as f. Linux only.
func DeviceSize(f *os.File) (int64, error) {
	return 0, fmt.Errorf("size of device %s: %w", f.Name(), errors.ErrUnsupported)
}

// InUse reports why a volume is in use. Linux only.
func InUse(path string) (string, error) {
	return "", fmt.Errorf("check volume %s: %w", path, errors.ErrUnsupported)
}

func logicalBlockSize(*os.File) (int64, error) { return 0, errors.ErrUnsupported }

func readOnly(*os.File) (bool, error) { return false, nil }

func seekData(_ *os.File, off, size int64) (int64, int64, bool, error) {
	return off, size, false, nil
}

func openDirect(*os.File, string, int) *os.File { return nil }

func punchHole(*os.File, int64, int64) error { return errors.ErrUnsupported }

func zeroOut(*os.File, int64, int64) error { return errors.ErrUnsupported }

func isUnsupported(err error) bool { return errors.Is(err, errors.ErrUnsupported) }

func adviseSequential(*os.File) error { return nil }

func adviseDontNeed(*os.File, int64, int64) error { return nil }

func isBusy(error) bool { return false }

// Identify says which volume path names. Linux only.
func Identify(path string) (string, error) {
	return "", fmt.Errorf("identify volume %s: %w", path, errors.ErrUnsupported)
}

// createSized makes the file by name (createTarget's fallback). Linux only.
func createSized(string, int64) (*os.File, error) { return nil, errNoTmpfile }

// FreeSpace cannot tell here.
func FreeSpace(string) (int64, uint64, error) { return 0, 0, errors.ErrUnsupported }

// Overlapping returns the block devices that share blocks with rdev. Linux only.
func Overlapping(rdev uint64) ([]uint64, error) {
	return nil, fmt.Errorf("devices overlapping %d: %w", rdev, errors.ErrUnsupported)
}
