package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// LoopDevice attaches image to a free loop device (losetup -f --show), read-only if asked,
// and detaches it when the test ends. It skips (see Skip) without root or losetup.
func LoopDevice(t testing.TB, image string, readOnly bool) string {
	t.Helper()
	return attachLoop(t, image, readOnly, false)
}

// LoopDevicePartitioned is LoopDevice with a partition scan (-P), so the partitions of a
// partitioned image appear as /dev/loopNpM. Where the kernel has no parser for the image's
// partition table, partx reads it and adds the partitions (BLKPG) instead.
func LoopDevicePartitioned(t testing.TB, image string, readOnly bool) string {
	t.Helper()
	dev := attachLoop(t, image, readOnly, true)
	name := filepath.Base(dev)
	if parts, _ := filepath.Glob(filepath.Join("/sys/block", name, name+"p*")); len(parts) > 0 {
		return dev
	}
	partx, err := exec.LookPath("partx")
	if err != nil {
		t.Logf("the kernel found no partitions on %s and partx is missing", dev)
		return dev
	}
	if out, err := exec.Command(partx, "-a", dev).CombinedOutput(); err != nil {
		t.Logf("partx -a %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return dev
}

// PartitionedLoop lays the partition table layout (sfdisk's input) over the image at path,
// attaches it with its partitions (LoopDevicePartitioned) and returns the disk and the nodes
// of its first n partitions once devtmpfs has made them (it skips, see Skip, when it does not).
func PartitionedLoop(t testing.TB, path, layout string, n int) (disk string, parts []string) {
	t.Helper()
	sfdisk := RequireCommand(t, "sfdisk")
	cmd := exec.Command(sfdisk, "-q", path)
	cmd.Stdin = strings.NewReader(layout)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	disk = LoopDevicePartitioned(t, path, false)
	for i := 1; i <= n; i++ {
		part := fmt.Sprintf("%sp%d", disk, i)
		WaitForNode(t, part)
		parts = append(parts, part)
	}
	return disk, parts
}

// WaitForNode waits for devtmpfs to make a device node, and skips (see Skip) when it does not.
func WaitForNode(t testing.TB, path string) {
	t.Helper()
	for range 50 {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	Skip(t, "device node %s did not appear (no devtmpfs or udev?)", path)
}

func attachLoop(t testing.TB, image string, readOnly, partitions bool) string {
	t.Helper()
	RequireRoot(t)
	losetup := RequireCommand(t, "losetup")
	args := []string{"-f", "--show"}
	if readOnly {
		args = append(args, "-r")
	}
	if partitions {
		args = append(args, "-P")
	}
	out, err := exec.Command(losetup, append(args, image)...).CombinedOutput()
	if err != nil {
		Skip(t, "cannot attach a loop device (losetup %s): %v: %s",
			strings.Join(append(args, image), " "), err, strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { detachLoop(t, losetup, dev) })
	return dev
}

// detachLoop detaches dev, retrying for a while: udev or a just-finished unmount can keep
// the device busy for a moment.
func detachLoop(t testing.TB, losetup, dev string) {
	t.Helper()
	var out []byte
	var err error
	for range 20 {
		if out, err = exec.Command(losetup, "-d", dev).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("detach loop device %s: %v: %s", dev, err, strings.TrimSpace(string(out)))
}
