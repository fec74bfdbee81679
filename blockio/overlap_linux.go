//go:build linux

package blockio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Overlapping returns the device numbers of the block devices that share blocks with the
// block device rdev, rdev first: beneath it, the disk it is a partition of and the devices it
// is built on (sysfs slaves: an md array's members, a logical volume's physical volumes);
// above it, its partitions and the devices built on it (holders); and so on both ways. A
// write to any of them can change what a reader of rdev reads. Two partitions of one disk
// are not in each other's list: they share the disk, not blocks. Without sysfs (a container
// without /sys) only rdev itself is returned.
func Overlapping(rdev uint64) ([]uint64, error) {
	dir, err := sysfsDir(rdev)
	if errors.Is(err, fs.ErrNotExist) {
		return []uint64{rdev}, nil
	}
	if err != nil {
		return nil, err
	}
	devs := []uint64{rdev}
	seen := map[string]bool{dir: true}
	// Down from rdev and up from it, never down from what is above (a sibling partition).
	var walk func(dir string, next func(string) ([]string, error)) error
	walk = func(dir string, next func(string) ([]string, error)) error {
		dirs, err := next(dir)
		if err != nil {
			return err
		}
		for _, d := range dirs {
			if seen[d] {
				continue
			}
			seen[d] = true
			n, err := readDevNumber(filepath.Join(d, "dev"))
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile: nothing writes through it
			}
			if err != nil {
				return err
			}
			devs = append(devs, n)
			if err := walk(d, next); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(dir, beneath); err != nil {
		return nil, fmt.Errorf("devices beneath %s: %w", filepath.Base(dir), err)
	}
	if err := walk(dir, above); err != nil {
		return nil, fmt.Errorf("devices on %s: %w", filepath.Base(dir), err)
	}
	return devs, nil
}

// beneath returns the sysfs directories of the devices the one at dir is made of: its disk
// when it is a partition (the directory it is in), and its slaves.
func beneath(dir string) ([]string, error) {
	var dirs []string
	if isPartition(dir) {
		dirs = append(dirs, filepath.Dir(dir))
	}
	linked, err := linkedDevices(filepath.Join(dir, "slaves"))
	return append(dirs, linked...), err
}

// above returns the sysfs directories of the devices made of the one at dir: its partitions
// (directories in it with a partition file) and its holders.
func above(dir string) ([]string, error) {
	dirs, err := partitionDirs(dir)
	if err != nil {
		return nil, err
	}
	linked, err := linkedDevices(filepath.Join(dir, "holders"))
	return append(dirs, linked...), err
}

// linkedDevices returns the sysfs directories the links in a slaves or holders directory
// lead to; none when it does not exist.
func linkedDevices(links string) ([]string, error) {
	entries, err := os.ReadDir(links)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range entries {
		d, err := filepath.EvalSymlinks(filepath.Join(links, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}
