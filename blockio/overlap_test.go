//go:build linux

package blockio

import (
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// A partition shares blocks with its disk and not with the disk's other partitions.
// Overlapping is what keeps a restore onto a disk from writing under a backup of one of its
// partitions, and the reverse.
func TestOverlappingPartitions(t *testing.T) {
	disk, p1, p2 := twoPartitions(t)
	checkOverlapping(t, disk, []string{p1, p2}, nil)
	checkOverlapping(t, p1, []string{disk}, []string{p2})
	checkOverlapping(t, p2, []string{disk}, []string{p1})
}

// twoPartitions attaches a loop device over an 8 MiB image with two partitions.
func twoPartitions(t *testing.T) (disk, p1, p2 string) {
	t.Helper()
	image := filepath.Join(t.TempDir(), "disk.img")
	testutil.WriteImage(t, image, 8<<20, 11, testutil.Sparse)
	disk, parts := testutil.PartitionedLoop(t, image, "label: dos\n,2M\n,\n", 2)
	return disk, parts[0], parts[1]
}

// checkOverlapping checks that Overlapping(dev) begins with dev and has each of want and none
// of not.
func checkOverlapping(t *testing.T, dev string, want, not []string) {
	t.Helper()
	got, err := Overlapping(rdevOf(t, dev))
	if err != nil {
		t.Fatalf("Overlapping(%s): %v", dev, err)
	}
	if got[0] != rdevOf(t, dev) {
		t.Errorf("Overlapping(%s) begins with %d, want the device itself", dev, got[0])
	}
	for _, w := range want {
		if !slices.Contains(got, rdevOf(t, w)) {
			t.Errorf("Overlapping(%s) = %v leaves out %s", dev, got, w)
		}
	}
	for _, n := range not {
		if slices.Contains(got, rdevOf(t, n)) {
			t.Errorf("Overlapping(%s) = %v has %s, which shares no blocks with it", dev, got, n)
		}
	}
}

// rdevOf returns the device number of the block device at path.
func rdevOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint64(st.Rdev)
}
