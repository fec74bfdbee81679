//go:build linux

package blockio

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// CowDir is where a device-mapper snapshot's copy-on-write store is made: a sparse file the
// size of the volume, attached to a loop device and unlinked at once, so it holds only the
// blocks written to the volume while the snapshot lives and vanishes with it. It must not be
// on the volume being snapshotted.
var CowDir = "/var/tmp"

// Names of the device-mapper devices cairn makes for a snapshot of a plain device-mapper
// device: the origin's old table moves to cairnReal+NAME, and cairnSnap+NAME is the snapshot.
const (
	dmRealPrefix = "cairn-real-"
	dmSnapPrefix = "cairn-snap-"
)

// dmInfo is what sysfs says about the block device at path: its device-mapper name and uuid,
// both "" when it is not a device-mapper device.
func dmInfo(fi os.FileInfo) (name, uuid string) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return "", ""
	}
	dir := fmt.Sprintf("/sys/dev/block/%d:%d/dm", unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)))
	return sysfsRead(dir, "name"), sysfsRead(dir, "uuid")
}

// dmTarget is one line of a device-mapper table.
type dmTarget struct {
	start, length int64
	kind          string
	args          []string
}

// dmTable is a device's table as 'dmsetup table NAME' prints it.
func dmTable(name string) ([]dmTarget, string, error) {
	out, err := dmsetup("table", name)
	if err != nil {
		return nil, "", err
	}
	var t []dmTarget
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			return nil, "", fmt.Errorf("dmsetup table %s: unexpected line %q", name, line)
		}
		start, err1 := strconv.ParseInt(f[0], 10, 64)
		length, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, "", fmt.Errorf("dmsetup table %s: unexpected line %q", name, line)
		}
		t = append(t, dmTarget{start, length, f[2], f[3:]})
	}
	return t, out, nil
}

// dmsetup runs dmsetup with args and returns its output, or an error carrying its message.
func dmsetup(args ...string) (string, error) {
	return dmsetupIn("", args...)
}

// dmsetupIn is dmsetup with stdin (a table for create and load).
func dmsetupIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command("dmsetup", args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("dmsetup %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// dmDevno returns the device number "MAJOR:MINOR" of the device-mapper device name. Tables
// name devices by number: a /dev/mapper node may be missing (no udev) or late.
func dmDevno(name string) (string, error) {
	out, err := dmsetup("info", "-c", "--noheadings", "-o", "major,minor", "--separator", ":", name)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

// dmNameOf names the device-mapper device with device number "MAJOR:MINOR", or "".
func dmNameOf(devno string) string {
	return sysfsRead("/sys/dev/block/"+devno+"/dm", "name")
}

// dmSnapshot takes a dm-snapshot of the device-mapper device origin (not one LVM manages), as
// LVM does for its own volumes: the origin's table moves to a new device cairn-real-NAME, the
// origin becomes a snapshot-origin of it, and cairn-snap-NAME a snapshot of it with a
// copy-on-write store in CowDir. The origin is suspended (its file system frozen) only while
// the tables are swapped. A second snapshot of the same origin shares its cairn-real device.
func dmSnapshot(dev, origin, name string) (*Snapshot, error) {
	if _, err := exec.LookPath("dmsetup"); err != nil {
		return nil, fmt.Errorf("%w: %s is device-mapper device %s, and snapshotting it needs dmsetup (apt-get install dmsetup)", ErrNoSnapshot, dev, origin)
	}
	table, text, err := dmTable(origin)
	if err != nil {
		return nil, err
	}
	var sectors int64
	for _, t := range table {
		sectors = max(sectors, t.start+t.length)
	}
	realName, created := "", false
	if len(table) == 1 && table[0].kind == "snapshot-origin" && len(table[0].args) == 1 {
		realName = dmNameOf(table[0].args[0])
		if !strings.HasPrefix(realName, dmRealPrefix) {
			return nil, fmt.Errorf("%w: device-mapper device %s is the origin of snapshots that are not cairn's", ErrNoSnapshot, origin)
		}
	} else {
		for _, t := range table {
			if t.kind == "snapshot" || t.kind == "snapshot-origin" || t.kind == "snapshot-merge" {
				return nil, fmt.Errorf("%w: device-mapper device %s is a %s target", ErrNoSnapshot, origin, t.kind)
			}
		}
		realName, created = dmRealPrefix+name, true
		if _, err := dmsetupIn(text, "create", realName); err != nil {
			return nil, fmt.Errorf("snapshot of %s: %w", dev, err)
		}
	}
	realDev, err := dmDevno(realName)
	if err != nil {
		if created {
			_, _ = dmsetup("remove", realName)
		}
		return nil, fmt.Errorf("snapshot of %s: %w", dev, err)
	}
	undoReal := func() {
		if created {
			_, _ = dmsetup("remove", realName)
		}
	}
	cow, err := cowDevice(sectors * 512)
	if err != nil {
		undoReal()
		return nil, fmt.Errorf("snapshot of %s: copy-on-write store in %s: %w", dev, CowDir, err)
	}
	snap := dmSnapPrefix + name
	err = withSuspended(origin, func() error {
		if created {
			if _, err := dmsetupIn(fmt.Sprintf("0 %d snapshot-origin %s\n", sectors, realDev), "load", origin); err != nil {
				return err
			}
		}
		_, err := dmsetupIn(fmt.Sprintf("0 %d snapshot %s %s N 8\n", sectors, realDev, cow.loop), "create", snap)
		return err
	})
	// Held by the snapshot now (or by nothing, after a failure): detaching marks the loop
	// device to go when the snapshot does, and the unlinked file goes with it.
	cow.release()
	if err == nil {
		// Without udev (or before it gets to it) the node may be missing.
		_, err = dmsetup("mknodes", snap)
	}
	if err != nil {
		_, _ = dmsetup("remove", snap)
		undoReal()
		return nil, fmt.Errorf("snapshot of %s: %w", dev, err)
	}
	return &Snapshot{Kind: "dm", Path: "/dev/mapper/" + snap}, nil
}

// withSuspended suspends the device-mapper device name, runs fn and resumes it. When fn fails
// after loading a new table, that table is cleared before the resume, so the device is never
// left suspended or changed.
func withSuspended(name string, fn func() error) error {
	if _, err := dmsetup("suspend", name); err != nil {
		return err
	}
	err := fn()
	if err != nil {
		if _, cerr := dmsetup("clear", name); cerr != nil {
			err = fmt.Errorf("%w; and clearing the new table of %s failed: %v", err, name, cerr)
		}
	}
	if _, rerr := dmsetup("resume", name); rerr != nil {
		return fmt.Errorf("device-mapper device %s is still suspended: %w", name, rerr)
	}
	return err
}

// cow is a copy-on-write store: a sparse file attached to a loop device.
type cow struct{ file, loop string }

func cowDevice(size int64) (*cow, error) {
	f, err := os.CreateTemp(CowDir, "cairn-cow-*")
	if err != nil {
		return nil, err
	}
	c := &cow{file: f.Name()}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		var out []byte
		if out, err = exec.Command("losetup", "--find", "--show", c.file).CombinedOutput(); err != nil {
			err = fmt.Errorf("losetup: %v: %s", err, strings.TrimSpace(string(out)))
		}
		c.loop = strings.TrimSpace(string(out))
	}
	if err != nil {
		os.Remove(c.file)
		return nil, err
	}
	return c, nil
}

// release detaches the loop device (the kernel keeps it while the snapshot holds it) and
// removes the file (kept while the loop device holds it).
func (c *cow) release() {
	_ = exec.Command("losetup", "--detach", c.loop).Run()
	_ = os.Remove(c.file)
}

// removeDMSnapshot removes the dm-snapshot at path, /dev/mapper/cairn-snap-NAME, and, when it
// was the origin's last, gives the origin its table back and removes the cairn-real device.
func removeDMSnapshot(path string) error {
	snap := filepath.Base(path)
	if !strings.HasPrefix(snap, dmSnapPrefix) {
		return fmt.Errorf("%s is not a device-mapper snapshot of cairn's", path)
	}
	table, _, err := dmTable(snap)
	if err != nil {
		if _, serr := os.Stat(path); errors.Is(serr, os.ErrNotExist) {
			return nil // removed already
		}
		return err
	}
	if len(table) != 1 || table[0].kind != "snapshot" || len(table[0].args) < 1 {
		return fmt.Errorf("%s is not a device-mapper snapshot", path)
	}
	realDev := table[0].args[0]
	if _, err := dmsetup("remove", snap); err != nil {
		return err
	}
	all, err := dmsetup("table")
	if err != nil {
		return err
	}
	origin := ""
	for _, line := range strings.Split(all, "\n") {
		name, rest, ok := strings.Cut(line, ": ")
		f := strings.Fields(rest)
		if !ok || len(f) < 4 || f[3] != realDev {
			continue
		}
		switch f[2] {
		case "snapshot":
			return nil // another snapshot of the origin still reads it
		case "snapshot-origin":
			origin = name
		}
	}
	realName := dmNameOf(realDev)
	if origin == "" || !strings.HasPrefix(realName, dmRealPrefix) {
		return fmt.Errorf("removed %s, but cannot find its origin to give back its table (cairn-real device %s)", snap, realDev)
	}
	_, text, err := dmTable(realName)
	if err != nil {
		return err
	}
	if err := withSuspended(origin, func() error {
		_, err := dmsetupIn(text, "load", origin)
		return err
	}); err != nil {
		return fmt.Errorf("give device-mapper device %s its table back: %w", origin, err)
	}
	_, err = dmsetup("remove", realName)
	return err
}
