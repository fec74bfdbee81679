//go:build linux

package blockio

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Identify says which volume path names now, beyond its name: a string that stays the same
// while the same volume is there and changes when another takes its place. Together with the
// path it tells a volume seen again from a new one (docs/design.md, "Volume identity").
//
//   - An image file: "file:DEV:INODE" (st_dev and st_ino). Writing to the file keeps it, a
//     copy put in its place does not.
//   - A block device: the first identifier the kernel publishes in sysfs for it, which
//     survives reboots and renumbering: "dm:UUID" (device-mapper, LVM), "loop:DEV:INODE" (the
//     file behind a loop device), "wwid:..." or "serial:..." (the disk's WWN or serial); a
//     partition of a loop device or disk adds "/partN". Without one, "rdev:MAJOR:MINOR"
//     (st_rdev).
func Identify(path string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return "", pathError("volume", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return fmt.Sprintf("file:%x:%d", uint64(st.Dev), uint64(st.Ino)), nil
	case unix.S_IFBLK:
		if id := sysfsIdentity(uint64(st.Rdev)); id != "" {
			return id, nil
		}
		return fmt.Sprintf("rdev:%d:%d", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))), nil
	}
	return "", fmt.Errorf("volume %s: %w", path, ErrNotVolume)
}

// sysfsIdentity returns the stable identifier sysfs publishes for block device rdev, or "".
func sysfsIdentity(rdev uint64) string {
	dir, err := sysfsDir(rdev)
	if err != nil {
		return ""
	}
	return deviceIdentity(dir)
}

// deviceIdentity reads the stable identifier of the block device whose sysfs directory is
// dir (a partition's directory lies in its disk's).
func deviceIdentity(dir string) string {
	if id := sysfsRead(dir, "dm/uuid"); id != "" {
		return "dm:" + id
	}
	disk, part := dir, ""
	if n := sysfsRead(dir, "partition"); n != "" {
		disk, part = filepath.Dir(dir), "/part"+n
	}
	// A loop device's partitions are the file's too: their device numbers (blkext) are
	// handed out anew at each attach, and another file's partition gets the same one.
	if backing := sysfsRead(disk, "loop/backing_file"); backing != "" {
		var st unix.Stat_t
		if unix.Stat(backing, &st) == nil {
			return fmt.Sprintf("loop:%x:%d", uint64(st.Dev), uint64(st.Ino)) + part
		}
		return "loop:" + backing + part
	}
	for _, f := range []struct{ file, kind string }{
		{"wwid", "wwid"}, {"device/wwid", "wwid"}, {"serial", "serial"}, {"device/serial", "serial"},
	} {
		if id := sysfsRead(disk, f.file); id != "" {
			return f.kind + ":" + id + part
		}
	}
	return ""
}

// sysfsRead returns a sysfs attribute with surrounding space trimmed, or "".
func sysfsRead(dir, name string) string {
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		return ""
	}
	return strings.Join(strings.Fields(string(b)), " ")
}
