//go:build linux

package blockio

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// thinBasePrefix names the thin snapshots a backup keeps for change tracking:
// cairn-cbt-BACKUPID, a snapshot of the volume as that backup read it.
const thinBasePrefix = "cairn-cbt-"

// ThinVolume is a thin logical volume, tracked through thin snapshots: each backup reads a
// thin snapshot taken for it and keeps it; the next incremental asks the pool's metadata
// (thin_delta) which blocks differ between the kept snapshot and its own, and reads only
// those.
type ThinVolume struct {
	Path         string // the volume, /dev/VG/LV
	VG, LV, Pool string
}

// Thin returns the thin logical volume at path, or nil when it is none (not a logical
// volume, not thin, or no lvm2 tools).
func Thin(path string) *ThinVolume {
	if _, err := exec.LookPath("lvs"); err != nil {
		return nil
	}
	f, err := lvsFields(path, "vg_name,lv_name,segtype,pool_lv")
	if err != nil || len(f) != 4 || f[2] != "thin" || f[3] == "" {
		return nil
	}
	return &ThinVolume{Path: path, VG: f[0], LV: f[1], Pool: f[3]}
}

// lvsFields runs lvs for one logical volume and returns the fields asked for.
func lvsFields(lv, fields string) ([]string, error) {
	cmd := exec.Command("lvs", "--noheadings", "--nosuffix", "--units", "b", "--separator", "|", "-o", fields, lv)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("lvs %s: %v: %s", lv, err, strings.TrimSpace(stderr.String()))
	}
	f := strings.Split(strings.TrimSpace(string(out)), "|")
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	return f, nil
}

// lvm runs an lvm2 command and returns an error carrying its message.
func lvm(args ...string) error {
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// TakeBase takes the thin snapshot a backup with id backupID reads and may keep,
// cairn-cbt-BACKUPID, active so that it can be read.
func (t *ThinVolume) TakeBase(backupID string) (*Snapshot, error) {
	name := thinBasePrefix + backupID
	if err := lvm("lvcreate", "--snapshot", "--name", name, "--setactivationskip", "n", "--activate", "y", "--yes", t.VG+"/"+t.LV); err != nil {
		return nil, fmt.Errorf("thin snapshot of %s: %w", t.Path, err)
	}
	return &Snapshot{Kind: "lvm", Path: "/dev/" + t.VG + "/" + name, lv: t.VG + "/" + name}, nil
}

// Base returns the kept thin snapshot of backup backupID as VG/NAME, or "" when there is
// none (removed, or that backup kept none).
func (t *ThinVolume) Base(backupID string) (string, error) {
	lv := t.VG + "/" + thinBasePrefix + backupID
	f, err := lvsFields(lv, "origin,pool_lv")
	if err != nil {
		if strings.Contains(err.Error(), "Failed to find") || strings.Contains(err.Error(), "not found") {
			return "", nil
		}
		return "", err
	}
	if len(f) != 2 || f[0] != t.LV || f[1] != t.Pool {
		return "", nil // a snapshot by that name, but not of this volume
	}
	return lv, nil
}

// Keep makes the snapshot of backup backupID the volume's one kept base: the others are
// removed. Once nothing reads it, Deactivate it.
func (t *ThinVolume) Keep(backupID string) error {
	return t.removeBases(thinBasePrefix + backupID)
}

// Deactivate deactivates a kept snapshot (VG/NAME): it is read again only through the pool's
// metadata, and needs no device meanwhile.
func (t *ThinVolume) Deactivate(lv string) error {
	return lvm("lvchange", "--activate", "n", lv)
}

// DropBases removes every kept thin snapshot of the volume (when it stops being managed).
func (t *ThinVolume) DropBases() error { return t.removeBases("") }

// removeBases removes the volume's kept thin snapshots but the one named keep.
func (t *ThinVolume) removeBases(keep string) error {
	cmd := exec.Command("lvs", "--noheadings", "--separator", "|", "-o", "lv_name,origin", t.VG)
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("lvs %s: %w", t.VG, err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, origin, ok := strings.Cut(strings.TrimSpace(line), "|")
		if !ok || origin != t.LV || name == keep || !strings.HasPrefix(name, thinBasePrefix) {
			continue
		}
		if err := lvm("lvremove", "--yes", t.VG+"/"+name); err != nil {
			return err
		}
	}
	return nil
}

// Delta returns the byte ranges of the volume that differ between the thin snapshots base and
// next (both VG/NAME, of this volume's pool), size bytes long: it reserves a metadata snapshot
// of the pool, runs thin_delta on it and releases it.
func (t *ThinVolume) Delta(base, next string, size int64) (Changes, error) {
	if _, err := exec.LookPath("thin_delta"); err != nil {
		return nil, fmt.Errorf("no thin_delta (apt-get install thin-provisioning-tools)")
	}
	ids := make([]string, 2)
	for i, lv := range []string{base, next} {
		f, err := lvsFields(lv, "thin_id")
		if err != nil {
			return nil, err
		}
		if len(f) != 1 || f[0] == "" {
			return nil, fmt.Errorf("lvs %s: no thin id", lv)
		}
		ids[i] = f[0]
	}
	pool := dmLVName(t.VG, t.Pool) + "-tpool"
	table, _, err := dmTable(pool)
	if err != nil {
		return nil, fmt.Errorf("thin pool %s/%s: %w", t.VG, t.Pool, err)
	}
	if len(table) != 1 || table[0].kind != "thin-pool" || len(table[0].args) < 1 {
		return nil, fmt.Errorf("device-mapper device %s is not a thin pool", pool)
	}
	meta := dmNameOf(table[0].args[0])
	if meta == "" {
		return nil, fmt.Errorf("thin pool %s: no device-mapper device for its metadata %s", pool, table[0].args[0])
	}
	if _, err := dmsetup("mknodes", meta); err != nil {
		return nil, err
	}
	unlock, err := lockPool(pool)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := dmsetup("message", pool, "0", "reserve_metadata_snap"); err != nil {
		if strings.Contains(err.Error(), "busy") { // EBUSY, as dmsetup says it
			// The pool holds one metadata snapshot at most, and no cairn holds this one
			// (the lock): a tool's (thin_dump --metadata-snap), or a cairn's that died
			// while it read it, which stays held on disk until released.
			return nil, fmt.Errorf("thin pool %s: its metadata snapshot is held by something else (a metadata dump, or a cairn that stopped while it read it): when nothing uses it, release it with 'dmsetup message %s 0 release_metadata_snap'", pool, pool)
		}
		return nil, fmt.Errorf("thin pool %s: metadata snapshot: %w", pool, err)
	}
	defer func() { _, _ = dmsetup("message", pool, "0", "release_metadata_snap") }()
	cmd := exec.Command("thin_delta", "--metadata-snap", "--snap1", ids[0], "--snap2", ids[1], "/dev/mapper/"+meta)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("thin_delta: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return ParseThinDelta(bytes.NewReader(out), size)
}

// lockPool takes pool's metadata snapshot for this caller, across cairn processes and within
// this one (an flock of /run/lock/cairn-thin-POOL: each open of the file is its own lock), and
// returns its release. A pool holds one metadata snapshot at most: two thin incrementals of
// one pool at once (two job workers, or two processes) made one of them read in full. It
// waits at most poolLockWait: a holder stuck in dmsetup or thin_delta (a suspended pool) must
// not hold every later thin incremental of the pool, which reads in full instead.
func lockPool(pool string) (func(), error) {
	f, err := openPoolLock(pool)
	if err != nil {
		return nil, fmt.Errorf("thin pool %s: lock: %w", pool, err)
	}
	deadline := time.Now().Add(poolLockWait)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return func() { f.Close() }, nil // closed, the flock ends
		case errors.Is(err, unix.EWOULDBLOCK) && time.Now().After(deadline):
			f.Close()
			return nil, fmt.Errorf("thin pool %s: another backup has held its metadata snapshot for %s", pool, poolLockWait)
		case !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR):
			f.Close()
			return nil, fmt.Errorf("thin pool %s: lock: %w", pool, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// openPoolLock opens pool's lock file in poolLockDir, made if missing.
func openPoolLock(pool string) (*os.File, error) {
	if err := os.MkdirAll(poolLockDir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(filepath.Join(poolLockDir, "cairn-thin-"+pool), os.O_RDWR|os.O_CREATE, 0o600)
}

// poolLockWait bounds lockPool's wait; a variable for tests.
var poolLockWait = time.Minute

// poolLockDir holds lockPool's lock files; a variable for tests.
var poolLockDir = "/run/lock"

// dmLVName is the device-mapper name of logical volume vg/lv: hyphens doubled, joined by one.
func dmLVName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}
