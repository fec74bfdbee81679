//go:build linux

package blockio

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// InUse reports why the volume at path is in use, or "" when it is free. A block device is in
// use when it or one of its partitions is mounted, used as swap or held by another device
// (device-mapper, md), when someone else opened it O_EXCL, or when another process locks it
// (as qemu locks a VM's raw disk). An image file is in use when it
// backs a loop device (found by path, and by device and inode when the file was renamed), is
// used as swap, or is locked by another process (as qemu locks the images of running VMs).
// The reason reads like "mounted at /mnt/x" or "attached to /dev/loop3".
func InUse(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", pathError("volume", path, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", fmt.Errorf("volume %s: no device numbers in stat", path)
	}
	var reason string
	switch {
	case fi.Mode().IsRegular():
		reason, err = fileInUse(path, uint64(st.Dev), uint64(st.Ino))
	case isBlockDevice(fi):
		reason, err = deviceInUse(path, uint64(st.Rdev), uint64(st.Dev), uint64(st.Ino))
	default:
		return "", fmt.Errorf("volume %s: %w", path, ErrNotVolume)
	}
	if err != nil {
		return "", fmt.Errorf("check whether volume %s is in use: %w", path, err)
	}
	return reason, nil
}

// deviceInUse checks the device rdev, at path (the node dev/ino), and its partitions.
func deviceInUse(path string, rdev, dev, ino uint64) (string, error) {
	if reason, err := deviceUsers(rdev); reason != "" || err != nil {
		return reason, err
	}
	// qemu locks a VM's raw disk as it locks an image file, and opens it without O_EXCL.
	// udev's shared flock while it probes the device is no user.
	if reason, err := lockedBy(dev, ino, true); reason != "" || err != nil {
		return reason, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_EXCL, 0)
	if isBusy(err) {
		return "held open exclusively", nil
	}
	if err != nil {
		return "", err
	}
	return "", f.Close()
}

// lockedBy says which other process holds a lock (/proc/locks) on the file dev/ino, or "";
// with noProbe, shared flocks (lock.probe) do not count.
func lockedBy(dev, ino uint64, noProbe bool) (string, error) {
	locks, err := readLocks()
	if err != nil {
		return "", err
	}
	for _, l := range locks {
		if l.dev != dev || l.ino != ino || l.pid == os.Getpid() || noProbe && l.probe {
			continue
		}
		if l.pid > 0 {
			return "locked by process " + strconv.Itoa(l.pid), nil
		}
		return "locked by another process", nil
	}
	return "", nil
}

// deviceUsers looks for mounts, swap and holders of the device rdev and of its partitions.
func deviceUsers(rdev uint64) (string, error) {
	mounts, err := readMounts()
	if err != nil {
		return "", err
	}
	swaps, err := readSwaps()
	if err != nil {
		return "", err
	}
	devs, err := withPartitions(rdev)
	if err != nil {
		return "", err
	}
	for i, d := range devs {
		what := ""
		if i > 0 {
			what = "partition /dev/" + d.name + " "
		}
		for _, m := range mounts {
			if m.dev == d.rdev || m.sourceRdev == d.rdev {
				return what + "mounted at " + m.point, nil
			}
		}
		for _, s := range swaps {
			if s.rdev == d.rdev {
				return what + "used as swap", nil
			}
		}
		if h := holders(d.sysfs); h != "" {
			return what + "held by " + h, nil
		}
	}
	return "", nil
}

// blockDev is a block device as sysfs knows it.
type blockDev struct {
	rdev  uint64
	name  string // kernel name, as in /dev/NAME
	sysfs string // its directory under /sys
}

// withPartitions returns the device rdev followed by its partitions. Without sysfs entries
// (a container without /sys) only the device itself is returned.
func withPartitions(rdev uint64) ([]blockDev, error) {
	dir, err := sysfsDir(rdev)
	if errors.Is(err, fs.ErrNotExist) {
		return []blockDev{{rdev: rdev}}, nil
	}
	if err != nil {
		return nil, err
	}
	devs := []blockDev{{rdev: rdev, name: filepath.Base(dir), sysfs: dir}}
	parts, err := partitionDirs(dir)
	if err != nil {
		return nil, err
	}
	for _, part := range parts {
		if d, err := readDevNumber(filepath.Join(part, "dev")); err == nil {
			devs = append(devs, blockDev{rdev: d, name: filepath.Base(part), sysfs: part})
		}
	}
	return devs, nil
}

// sysfsDir is block device rdev's directory under /sys (/sys/dev/block/MAJ:MIN resolved).
func sysfsDir(rdev uint64) (string, error) {
	return filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev)))
}

// isPartition says whether the sysfs directory dir is a partition's.
func isPartition(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "partition"))
	return err == nil
}

// partitionDirs returns the sysfs directories of the partitions of the disk at dir.
func partitionDirs(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var parts []string
	for _, e := range entries {
		if part := filepath.Join(dir, e.Name()); isPartition(part) {
			parts = append(parts, part)
		}
	}
	return parts, nil
}

// readDevNumber reads a sysfs "dev" file ("MAJOR:MINOR").
func readDevNumber(file string) (uint64, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	return parseDevNumber(strings.TrimSpace(string(b)), 10)
}

// parseDevNumber parses "MAJOR:MINOR" in the given base.
func parseDevNumber(s string, base int) (uint64, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("device number %q: want MAJOR:MINOR", s)
	}
	ma, err := strconv.ParseUint(maj, base, 32)
	if err != nil {
		return 0, fmt.Errorf("device number %q: %w", s, err)
	}
	mi, err := strconv.ParseUint(min, base, 32)
	if err != nil {
		return 0, fmt.Errorf("device number %q: %w", s, err)
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), nil
}

// holders names the devices stacked on the one at sysfs dir, such as "device-mapper vg-root
// (dm-0)", or "" when there are none.
func holders(dir string) string {
	if dir == "" {
		return ""
	}
	entries, err := os.ReadDir(filepath.Join(dir, "holders"))
	if err != nil || len(entries) == 0 {
		return ""
	}
	var names []string
	for _, e := range entries {
		n := e.Name()
		if dm, err := os.ReadFile(filepath.Join("/sys/class/block", n, "dm", "name")); err == nil {
			n = "device-mapper " + strings.TrimSpace(string(dm)) + " (" + n + ")"
		}
		names = append(names, n)
	}
	return strings.Join(names, ", ")
}
