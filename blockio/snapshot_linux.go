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

	"golang.org/x/sys/unix"
)

// ErrNoSnapshot: the volume's back end can take no point-in-time snapshot.
var ErrNoSnapshot = errors.New("no snapshot support")

// Snapshot is a point-in-time copy of a volume that can be read while the volume keeps
// changing: a reflinked file beside an image file, an LVM snapshot of a logical volume, or a
// dm-snapshot of another device-mapper device.
type Snapshot struct {
	Kind string // "reflink", "lvm" or "dm"
	Path string // what to read: the clone file or the snapshot device
	lv   string // vg/lv of an LVM snapshot, for removal
}

// TakeSnapshot makes a point-in-time snapshot of the volume at path, named after name (a
// short id). Image files are cloned with FICLONE (XFS with reflink, btrfs): atomic, instant,
// sharing blocks. Logical volumes get an LVM snapshot (thin when the origin is thin), other
// device-mapper devices a dm-snapshot (dmSnapshot). Anything
// else is ErrNoSnapshot with the reason: a copy made while the volume changes would not be a
// point in time, and cairn never pretends it is.
func TakeSnapshot(path, name string) (*Snapshot, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, pathError("volume", path, err)
	}
	switch {
	case fi.Mode().IsRegular():
		return reflinkSnapshot(path, name)
	case isBlockDevice(fi):
		// LVM's devices carry uuids "LVM-..."; any other device-mapper device gets a
		// dm-snapshot of cairn's own.
		if dm, uuid := dmInfo(fi); dm != "" && !strings.HasPrefix(uuid, "LVM-") {
			return dmSnapshot(path, dm, name)
		}
		return lvmSnapshot(path, name)
	}
	return nil, fmt.Errorf("volume %s: %w", path, ErrNotVolume)
}

func reflinkSnapshot(path, name string) (*Snapshot, error) {
	dst := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".cairn-snap-"+name)
	if err := cloneFile(path, dst); err != nil {
		return nil, err
	}
	return &Snapshot{Kind: "reflink", Path: dst}, nil
}

// cloneFile makes dst, which must not exist, a reflink clone of path (FICLONE): atomic and
// instant, sharing every block. A file system without reflinks is ErrNoSnapshot.
func cloneFile(path, dst string) error {
	src, err := os.Open(path)
	if err != nil {
		return pathError("volume", path, err)
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot of %s: %w", path, err)
	}
	err = unix.IoctlFileClone(int(f.Fd()), int(src.Fd()))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
			return fmt.Errorf("%w: %s is on a file system without reflinks (FICLONE: %v); put image files on XFS (reflink=1) or btrfs for crash-consistent backups", ErrNoSnapshot, path, err)
		}
		return fmt.Errorf("snapshot of %s: FICLONE: %w", path, err)
	}
	return nil
}

// lvmSnapshot snapshots a logical volume with the lvm2 tools.
func lvmSnapshot(dev, name string) (*Snapshot, error) {
	if _, err := exec.LookPath("lvs"); err != nil {
		return nil, fmt.Errorf("%w: %s is a block device that is not a logical volume (no lvm2 tools), and cairn snapshots only LVM volumes and image files", ErrNoSnapshot, dev)
	}
	out, err := exec.Command("lvs", "--noheadings", "--nosuffix", "--units", "b", "--separator", "|",
		"-o", "vg_name,lv_name,segtype,lv_size,vg_free", dev).Output()
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not an LVM logical volume (cairn snapshots LVM volumes and image files on XFS or btrfs)", ErrNoSnapshot, dev)
	}
	f := strings.Split(strings.TrimSpace(string(out)), "|")
	if len(f) != 5 {
		return nil, fmt.Errorf("lvs %s: unexpected output %q", dev, out)
	}
	vg, lv, segtype := strings.TrimSpace(f[0]), strings.TrimSpace(f[1]), strings.TrimSpace(f[2])
	snap := "cairn-snap-" + name
	args := []string{"--snapshot", "--name", snap, "--yes"}
	if segtype == "thin" {
		args = append(args, "--setactivationskip", "n", "--activate", "y")
	} else {
		size, _ := strconv.ParseInt(strings.TrimSpace(f[3]), 10, 64)
		free, _ := strconv.ParseInt(strings.TrimSpace(f[4]), 10, 64)
		cow, err := cowSize(size, free)
		if err != nil {
			return nil, fmt.Errorf("%w: snapshot of %s/%s: %v", ErrNoSnapshot, vg, lv, err)
		}
		args = append(args, "--size", strconv.FormatInt(cow, 10)+"b")
	}
	if out, err := exec.Command("lvcreate", append(args, vg+"/"+lv)...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("lvcreate snapshot of %s/%s: %v: %s", vg, lv, err, strings.TrimSpace(string(out)))
	}
	return &Snapshot{Kind: "lvm", Path: "/dev/" + vg + "/" + snap, lv: vg + "/" + snap}, nil
}

// cowSize is the copy-on-write space of a classic snapshot of a size-byte volume in a volume
// group with free bytes: room for 10 % of the volume to change while the backup runs, at
// least 256 MiB, never more than the whole volume (the most that can change) and never more
// than the group has free (a whole number of extents); less than 1 % of the volume, or one
// 4 MiB extent, is refused.
func cowSize(size, free int64) (int64, error) {
	const extent = 4 << 20 // lvm's default extent; lvcreate wants whole sectors
	cow := min(max(size/10, 256<<20), size+size/100+extent)
	cow = (cow + extent - 1) / extent * extent
	if cow > free {
		if free < max(size/100, 4<<20) {
			return 0, fmt.Errorf("the volume group has %d bytes free, too little for the snapshot's copy-on-write space (about %d): extend it or free space", free, cow)
		}
		cow = free
	}
	return cow, nil
}

// Remove deletes the snapshot.
func (s *Snapshot) Remove() error {
	switch s.Kind {
	case "reflink":
		if err := os.Remove(s.Path); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	case "dm":
		return removeDMSnapshot(s.Path)
	case "lvm":
		lv := s.lv
		if lv == "" {
			lv = strings.TrimPrefix(s.Path, "/dev/")
		}
		if out, err := exec.Command("lvremove", "--yes", lv).CombinedOutput(); err != nil {
			return fmt.Errorf("lvremove %s: %v: %s", lv, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// ExistingSnapshot describes a snapshot taken earlier (from its record).
func ExistingSnapshot(kind, path string) *Snapshot { return &Snapshot{Kind: kind, Path: path} }

// RemoveDeviceSnapshots removes the snapshots cairn made of the block device at path whose
// names begin with cairn-snap-PREFIX (the temporary ones of --force backups that a crash left
// behind): LVM snapshots of a logical volume, or dm-snapshots of another device-mapper
// device. It returns the paths it removed.
func RemoveDeviceSnapshots(path, prefix string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil || !isBlockDevice(fi) {
		return nil, nil
	}
	dm, uuid := dmInfo(fi)
	switch {
	case dm == "":
		return nil, nil
	case strings.HasPrefix(uuid, "LVM-"):
		return removeLVMSnapshots(path, "cairn-snap-"+prefix)
	}
	return removeDMSnapshots(dm, dmSnapPrefix+prefix)
}

// AnyDeviceSnapshots reports whether a device-mapper device exists whose name says it is a
// snapshot of cairn's named beginning with cairn-snap-PREFIX (an LVM one shows as
// VG-cairn--snap--PREFIX...): a sysfs scan, cheap enough to run at every start.
func AnyDeviceSnapshots(prefix string) bool {
	names, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	lvmName := strings.ReplaceAll("cairn-snap-"+prefix, "-", "--")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(b))
		if strings.HasPrefix(name, dmSnapPrefix+prefix) || strings.Contains(name, "-"+lvmName) {
			return true
		}
	}
	return false
}

// removeLVMSnapshots removes the snapshots of logical volume dev named beginning with prefix.
func removeLVMSnapshots(dev, prefix string) ([]string, error) {
	if _, err := exec.LookPath("lvs"); err != nil {
		return nil, nil
	}
	f, err := lvsFields(dev, "vg_name,lv_name")
	if err != nil || len(f) != 2 {
		return nil, err
	}
	out, err := exec.Command("lvs", "--noheadings", "--separator", "|", "-o", "lv_name,origin", f[0]).Output()
	if err != nil {
		return nil, fmt.Errorf("lvs %s: %w", f[0], err)
	}
	var removed []string
	for _, line := range strings.Split(string(out), "\n") {
		name, origin, ok := strings.Cut(strings.TrimSpace(line), "|")
		if !ok || origin != f[1] || !strings.HasPrefix(name, prefix) {
			continue
		}
		if err := lvm("lvremove", "--yes", f[0]+"/"+name); err != nil {
			return removed, err
		}
		removed = append(removed, "/dev/"+f[0]+"/"+name)
	}
	return removed, nil
}

// removeDMSnapshots undoes what dmSnapshot did to device-mapper device origin for snapshots
// named beginning with prefix, from whatever step it was killed at: a suspended origin is
// resumed with its new table dropped, its snapshots of that name are removed (the last one
// gives the origin its table back), and cairn-real devices of that name with the origin's
// table that nothing uses any more are removed.
func removeDMSnapshots(origin, prefix string) ([]string, error) {
	if out, err := dmsetup("info", "-c", "--noheadings", "-o", "suspended", origin); err == nil && strings.TrimSpace(out) == "Suspended" {
		if _, err := dmsetup("clear", origin); err != nil {
			return nil, err
		}
		if _, err := dmsetup("resume", origin); err != nil {
			return nil, fmt.Errorf("device-mapper device %s is still suspended: %w", origin, err)
		}
	}
	table, text, err := dmTable(origin)
	if err != nil {
		return nil, err
	}
	all, err := dmsetup("table")
	if err != nil {
		return nil, err
	}
	realPrefix := dmRealPrefix + strings.TrimPrefix(prefix, dmSnapPrefix)
	var removed []string
	isOrigin := len(table) == 1 && table[0].kind == "snapshot-origin" && len(table[0].args) == 1
	for _, line := range strings.Split(all, "\n") {
		name, rest, ok := strings.Cut(line, ": ")
		f := strings.Fields(rest)
		if !ok || !strings.HasPrefix(name, prefix) || len(f) < 4 || f[2] != "snapshot" || !isOrigin || f[3] != table[0].args[0] {
			continue
		}
		if err := removeDMSnapshot("/dev/mapper/" + name); err != nil {
			return removed, err
		}
		removed = append(removed, "/dev/mapper/"+name)
	}
	// A cairn-real device made for the origin (same table) that no snapshot was made on.
	out, err := dmsetup("ls")
	if err != nil {
		return removed, err
	}
	for _, line := range strings.Split(out, "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), "\t")
		if !strings.HasPrefix(name, realPrefix) {
			continue
		}
		if _, rtext, err := dmTable(name); err != nil || rtext != text {
			continue
		}
		devno, err := dmDevno(name)
		if err != nil {
			return removed, err
		}
		for _, sl := range strings.Split(all, "\n") {
			sname, rest, ok := strings.Cut(sl, ": ")
			if f := strings.Fields(rest); ok && len(f) >= 4 && f[2] == "snapshot" && f[3] == devno {
				if _, err := dmsetup("remove", sname); err != nil {
					return removed, err
				}
				removed = append(removed, "/dev/mapper/"+sname)
			}
		}
		if _, err := dmsetup("remove", name); err != nil {
			return removed, err
		}
		removed = append(removed, "/dev/mapper/"+name)
	}
	return removed, nil
}
