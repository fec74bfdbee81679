//go:build linux

package blockio

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

func identify(t *testing.T, path string) string {
	t.Helper()
	id, err := Identify(path)
	if err != nil {
		t.Fatalf("Identify(%s): %v", path, err)
	}
	return id
}

// A file keeps its identity while it is written to and renamed; a copy in its place is
// another volume.
func TestIdentifyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, path, 1<<20, 1, testutil.Mixed)
	id := identify(t, path)
	if !strings.HasPrefix(id, "file:") {
		t.Fatalf("Identify(file) = %q, want file:DEV:INODE", id)
	}
	testutil.ScatterWrites(t, path, 2, 0.1, 4096, 16384)
	if again := identify(t, path); again != id {
		t.Errorf("after writes: %q, want %q", again, id)
	}
	copyPath := filepath.Join(dir, "copy.img")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(copyPath, path); err != nil {
		t.Fatal(err)
	}
	if other := identify(t, path); other == id {
		t.Errorf("a copy put in place of the file has its identity %q", id)
	}
	if _, err := Identify("/dev/null"); err == nil {
		t.Error("Identify(/dev/null) succeeded; it is not a volume")
	}
	if _, err := Identify(filepath.Join(dir, "missing")); err == nil {
		t.Error("Identify of a missing path succeeded")
	}
}

// A loop device is the file behind it: the same after it is detached and attached again
// (even as another loop device), another when a different file is attached.
func TestIdentifyLoopDevice(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "backing.img")
	testutil.WriteImage(t, image, 4<<20, 3, testutil.Mixed)
	other := filepath.Join(dir, "other.img")
	testutil.WriteImage(t, other, 4<<20, 4, testutil.Mixed)

	dev := testutil.LoopDevice(t, image, true)
	id := identify(t, dev)
	if !strings.HasPrefix(id, "loop:") {
		t.Fatalf("Identify(%s) = %q, want loop:DEV:INODE", dev, id)
	}
	fileID := strings.TrimPrefix(identify(t, image), "file:")
	if strings.TrimPrefix(id, "loop:") != fileID {
		t.Errorf("Identify(%s) = %q, want the backing file's device and inode %q", dev, id, fileID)
	}
	if id2 := identify(t, testutil.LoopDevice(t, image, true)); id2 != id {
		t.Errorf("a second loop device on the same file: %q, want %q", id2, id)
	}
	if id3 := identify(t, testutil.LoopDevice(t, other, true)); id3 == id {
		t.Errorf("a loop device on another file has the same identity %q", id)
	}
}

// What sysfs publishes, in order: device-mapper's uuid, a loop device's backing file, the
// disk's WWN, its serial; a partition is its disk's identifier and its number.
func TestDeviceIdentityFromSysfs(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("sda/device/wwid", "naa.5000c500a1b2c3d4\n")
	write("sda/device/serial", "ZA1B2C3D\n")
	write("sda/sda2/partition", "2\n")
	write("vda/serial", "1736631446677587\n")
	write("nvme0n1/wwid", "eui.0025388b91b2c3d4\n")
	write("nvme0n1/device/serial", "S4EWNX0N123456  \n")
	write("dm-3/dm/uuid", "LVM-abcdef0123456789\n")
	write("dm-3/serial", "unused\n")
	write("sdz/size", "100\n")
	write("loop7/loop/backing_file", "/nonexistent/image.img\n")
	write("loop7/loop7p2/partition", "2\n")
	for _, tc := range []struct{ dir, want string }{
		{"sda", "wwid:naa.5000c500a1b2c3d4"},
		{"sda/sda2", "wwid:naa.5000c500a1b2c3d4/part2"},
		{"vda", "serial:1736631446677587"},
		{"nvme0n1", "wwid:eui.0025388b91b2c3d4"},
		{"dm-3", "dm:LVM-abcdef0123456789"},
		{"sdz", ""},
		{"loop7", "loop:/nonexistent/image.img"},
		{"loop7/loop7p2", "loop:/nonexistent/image.img/part2"},
	} {
		if got := deviceIdentity(filepath.Join(root, tc.dir)); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.dir, got, tc.want)
		}
	}
}

// A partition of a loop device is the file behind the loop device and its number: the same
// on every loop device the file is attached to, another when another file takes the loop
// device. Its device number (blkext, handed out anew at each attach) says neither.
func TestIdentifyLoopPartition(t *testing.T) {
	sfdisk := testutil.RequireCommand(t, "sfdisk")
	dir := t.TempDir()
	partitioned := func(name string, seed int64) string {
		p := filepath.Join(dir, name)
		testutil.WriteImage(t, p, 8<<20, seed, testutil.Mixed)
		cmd := exec.Command(sfdisk, "-q", p)
		cmd.Stdin = strings.NewReader("label: dos\n,2M\n,\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sfdisk %s: %v: %s", p, err, out)
		}
		return p
	}
	image, other := partitioned("a.img", 5), partitioned("b.img", 6)
	part1 := func(image string) string {
		dev := testutil.LoopDevicePartitioned(t, image, true)
		p := dev + "p1"
		if _, err := os.Stat(p); err != nil {
			testutil.Skip(t, "no partition device %s: %v", p, err)
		}
		return p
	}
	id := identify(t, part1(image))
	if want := "loop:" + strings.TrimPrefix(identify(t, image), "file:") + "/part1"; id != want {
		t.Errorf("first partition of a loop device on %s: %q, want %q", image, id, want)
	}
	if id2 := identify(t, part1(image)); id2 != id {
		t.Errorf("the partition through a second loop device on the same file: %q, want %q", id2, id)
	}
	if id3 := identify(t, part1(other)); id3 == id {
		t.Errorf("a partition of a loop device on another file has the same identity %q", id)
	}
}
