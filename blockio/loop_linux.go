//go:build linux

package blockio

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// fileInUse checks whether the image file dev/ino at path backs a loop device, is a swap file
// or is locked by another process.
func fileInUse(path string, dev, ino uint64) (string, error) {
	loop, err := attachedLoop(path, dev, ino)
	if err != nil || loop != nil {
		return loopReason(loop), err
	}
	swaps, err := readSwaps()
	if err != nil {
		return "", err
	}
	for _, s := range swaps {
		if s.rdev == 0 && s.dev == dev && s.ino == ino {
			return "used as swap", nil
		}
	}
	return lockedBy(dev, ino, false)
}

// loopReason says which loop device an image is attached to and, when that device is itself
// in use, how: "attached to /dev/loop3, which is mounted at /mnt/x".
func loopReason(loop *blockDev) string {
	if loop == nil {
		return ""
	}
	reason := "attached to /dev/" + loop.name
	if users, err := deviceUsers(loop.rdev); err == nil && users != "" {
		reason += ", which is " + users
	}
	return reason
}

// attachedLoop returns the loop device backed by the file dev/ino at path, or nil. The loop
// driver publishes each backing file's path in sysfs; it is compared by name and then by
// device and inode, which also catches hard links, bind mounts and symlinks.
func attachedLoop(path string, dev, ino uint64) (*blockDev, error) {
	canon := canonicalPath(path)
	entries, err := os.ReadDir("/sys/block")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		dir := filepath.Join("/sys/block", name)
		b, err := os.ReadFile(filepath.Join(dir, "loop", "backing_file"))
		if err != nil {
			continue // not attached
		}
		backing := strings.TrimSuffix(string(b), "\n")
		if backing != canon && !backedBy(backing, "/dev/"+name, dev, ino) {
			continue
		}
		rdev, err := readDevNumber(filepath.Join(dir, "dev"))
		if err != nil {
			return nil, err
		}
		return &blockDev{rdev: rdev, name: name, sysfs: dir}, nil
	}
	return nil, nil
}

// backedBy reports whether the loop device at loopPath, whose sysfs backing path is backing,
// is backed by the file dev/ino. The path is stat'ed first. Only when it cannot be (a name
// from another mount namespace, a deleted file) is the loop device itself asked
// (LOOP_GET_STATUS64): opening a loop device has side effects (closing the last opener of an
// autoclear device detaches it), so it is the last resort.
func backedBy(backing, loopPath string, dev, ino uint64) bool {
	var st unix.Stat_t
	if err := unix.Stat(backing, &st); err == nil {
		return uint64(st.Dev) == dev && uint64(st.Ino) == ino
	}
	f, err := os.Open(loopPath)
	if err != nil {
		return false
	}
	defer f.Close() // read-only
	var info *unix.LoopInfo64
	err = control(f, func(fd int) error {
		var err error
		info, err = unix.IoctlLoopGetStatus64(fd)
		return err
	})
	return err == nil && info.Device == dev && info.Inode == ino
}

// canonicalPath returns path made absolute with symlinks resolved, the form the loop driver
// reports, or path as given when it cannot be resolved.
func canonicalPath(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		path = p
	}
	if p, err := filepath.Abs(path); err == nil {
		return p
	}
	return path
}
