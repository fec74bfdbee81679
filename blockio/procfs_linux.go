//go:build linux

package blockio

import (
	"bufio"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mount is one line of /proc/self/mountinfo.
type mount struct {
	dev        uint64 // st_dev of the mounted filesystem
	sourceRdev uint64 // the source device's number where the source is a device node, else 0
	point      string
}

// readMounts parses /proc/self/mountinfo. Both the filesystem's device number and the source
// device are kept: btrfs, for one, reports an anonymous device number for its mounts.
func readMounts() ([]mount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close() // read-only
	var mounts []mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if m, ok := parseMountinfo(sc.Text()); ok {
			mounts = append(mounts, m)
		}
	}
	return mounts, sc.Err()
}

// parseMountinfo parses a line like
// "42 27 7:0 / /mnt/x rw,relatime shared:1 - ext4 /dev/loop0 rw".
func parseMountinfo(line string) (mount, bool) {
	pre, post, ok := strings.Cut(line, " - ")
	if !ok {
		return mount{}, false
	}
	fields := strings.Fields(pre)
	if len(fields) < 5 {
		return mount{}, false
	}
	dev, err := parseDevNumber(fields[2], 10)
	if err != nil {
		return mount{}, false
	}
	m := mount{dev: dev, point: unescapeOctal(fields[4])}
	if f := strings.Fields(post); len(f) >= 2 && strings.HasPrefix(f[1], "/dev/") {
		var st unix.Stat_t
		if unix.Stat(unescapeOctal(f[1]), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			m.sourceRdev = uint64(st.Rdev)
		}
	}
	return m, true
}

// unescapeOctal undoes the kernel's \NNN escaping of spaces, tabs, newlines and backslashes
// in mountinfo and /proc/swaps.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// swap is one line of /proc/swaps: a device (rdev) or a swap file (dev, ino).
type swap struct {
	rdev, dev, ino uint64
}

// readSwaps parses /proc/swaps. A missing file (no swap support) means no swap.
func readSwaps() ([]swap, error) {
	b, err := os.ReadFile("/proc/swaps")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var swaps []swap
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) == 0 { // header: Filename Type Size Used Priority
			continue
		}
		var st unix.Stat_t
		if unix.Stat(unescapeOctal(f[0]), &st) != nil {
			continue
		}
		s := swap{dev: uint64(st.Dev), ino: uint64(st.Ino)}
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			s = swap{rdev: uint64(st.Rdev)}
		}
		swaps = append(swaps, s)
	}
	return swaps, nil
}

// lock is a file lock held on the file dev/ino, by pid (-1 for an open file description
// lock, which belongs to no single process). probe marks a shared flock: what udev takes on a
// block device while it probes it (systemd's block device locking), for a moment.
type lock struct {
	dev, ino uint64
	pid      int
	probe    bool
}

// readLocks parses /proc/locks, skipping waiters ("->"), which hold nothing yet.
func readLocks() ([]lock, error) {
	b, err := os.ReadFile("/proc/locks")
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var locks []lock
	for _, line := range strings.Split(string(b), "\n") {
		if l, ok := parseLock(line); ok {
			locks = append(locks, l)
		}
	}
	return locks, nil
}

// parseLock parses a line like "1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; the device
// numbers are hex, the inode decimal.
func parseLock(line string) (lock, bool) {
	f := strings.Fields(line)
	if len(f) < 6 || f[1] == "->" {
		return lock{}, false
	}
	pid, err := strconv.Atoi(f[4])
	if err != nil {
		return lock{}, false
	}
	i := strings.LastIndexByte(f[5], ':')
	if i < 0 {
		return lock{}, false
	}
	dev, err := parseDevNumber(f[5][:i], 16)
	if err != nil {
		return lock{}, false
	}
	ino, err := strconv.ParseUint(f[5][i+1:], 10, 64)
	if err != nil {
		return lock{}, false
	}
	return lock{dev: dev, ino: ino, pid: pid, probe: f[1] == "FLOCK" && f[3] == "READ"}, true
}
