package blockio

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

func inUse(t *testing.T, path string) string {
	t.Helper()
	reason, err := InUse(path)
	if err != nil {
		t.Fatalf("InUse(%s): %v", path, err)
	}
	return reason
}

func TestInUseFreeFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "free.img")
	testutil.WriteImage(t, path, 1<<20, 1, testutil.Mixed)
	if r := inUse(t, path); r != "" {
		t.Errorf("InUse of a free file = %q, want \"\"", r)
	}
}

func TestInUseNotVolume(t *testing.T) {
	if _, err := InUse("/dev/null"); err == nil || !strings.Contains(err.Error(), "not a block device or regular file") {
		t.Errorf("InUse(/dev/null) = %v, want not a volume", err)
	}
	if _, err := InUse(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("InUse of a missing file succeeded")
	}
}

// An image attached to a loop device is in use, found by its path, through a hard link (same
// inode, other name) and after a rename; the loop device itself is free until mounted.
func TestInUseLoopAttached(t *testing.T) {
	dir := t.TempDir()
	image := filepath.Join(dir, "attached.img")
	testutil.WriteImage(t, image, 8<<20, 2, testutil.Mixed)
	dev := testutil.LoopDevice(t, image, true)
	want := "attached to " + dev

	if r := inUse(t, image); r != want {
		t.Errorf("InUse(image) = %q, want %q", r, want)
	}
	link := filepath.Join(dir, "hardlink.img")
	if err := os.Link(image, link); err != nil {
		t.Fatal(err)
	}
	if r := inUse(t, link); r != want {
		t.Errorf("InUse(hard link) = %q, want %q", r, want)
	}
	renamed := filepath.Join(dir, "renamed.img")
	if err := os.Rename(image, renamed); err != nil {
		t.Fatal(err)
	}
	if r := inUse(t, renamed); r != want {
		t.Errorf("InUse(renamed image) = %q, want %q", r, want)
	}
	if r := inUse(t, dev); r != "" {
		t.Errorf("InUse(%s) = %q, want \"\" (attached but not mounted)", dev, r)
	}
}

// A mounted ext4 loop device is in use, and so is its image, with the mount named.
func TestInUseMounted(t *testing.T) {
	image := filepath.Join(t.TempDir(), "fs.img")
	testutil.WriteImage(t, image, 32<<20, 3, testutil.Sparse)
	testutil.MakeExt4(t, image)
	dev := testutil.LoopDevice(t, image, false)
	mnt := testutil.Mount(t, dev)

	if r, want := inUse(t, dev), "mounted at "+mnt; r != want {
		t.Errorf("InUse(device) = %q, want %q", r, want)
	}
	if r, want := inUse(t, image), "attached to "+dev+", which is mounted at "+mnt; r != want {
		t.Errorf("InUse(image) = %q, want %q", r, want)
	}
}

// An image mounted with -o loop is found through the loop device mount set up.
func TestInUseMountedImage(t *testing.T) {
	image := filepath.Join(t.TempDir(), "fs.img")
	testutil.WriteImage(t, image, 32<<20, 4, testutil.Sparse)
	testutil.MakeExt4(t, image)
	mnt := testutil.MountLoop(t, image)

	r := inUse(t, image)
	if !strings.HasPrefix(r, "attached to /dev/loop") || !strings.HasSuffix(r, ", which is mounted at "+mnt) {
		t.Errorf("InUse(image) = %q, want attached to a loop device mounted at %s", r, mnt)
	}
}

// A whole device is in use when one of its partitions is mounted.
func TestInUsePartitionMounted(t *testing.T) {
	image := filepath.Join(t.TempDir(), "disk.img")
	testutil.WriteImage(t, image, 32<<20, 5, testutil.Sparse)
	dev, parts := testutil.PartitionedLoop(t, image, "label: dos\nstart=2048, type=83\n", 1)
	part := parts[0]
	testutil.MakeExt4(t, part)
	mnt := testutil.Mount(t, part)

	if r, want := inUse(t, dev), "partition "+part+" mounted at "+mnt; r != want {
		t.Errorf("InUse(disk) = %q, want %q", r, want)
	}
}

func TestInUseHeldExclusively(t *testing.T) {
	image := filepath.Join(t.TempDir(), "v.img")
	testutil.WriteImage(t, image, 4<<20, 6, testutil.Sparse)
	dev := testutil.LoopDevice(t, image, false)
	f, err := os.OpenFile(dev, os.O_RDONLY|os.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r, want := inUse(t, dev), "held open exclusively"; r != want {
		t.Errorf("InUse(device) = %q, want %q", r, want)
	}
}

// An image another process holds a lock on (as qemu does for a running VM's disks) is in use.
func TestInUseLocked(t *testing.T) {
	image := filepath.Join(t.TempDir(), "vm.img")
	testutil.WriteImage(t, image, 1<<20, 7, testutil.Sparse)
	lockInOtherProcess(t, image, "-x")
	r := inUse(t, image)
	if !strings.HasPrefix(r, "locked by process ") {
		t.Errorf("InUse(locked image) = %q, want locked by process", r)
	}
}

// So is a block device: qemu locks a VM's raw disk (a logical volume, a disk) as it locks an
// image file. The shared flock udev takes while it probes a device is no user.
func TestInUseLockedDevice(t *testing.T) {
	dir := t.TempDir()
	image, probed := filepath.Join(dir, "disk.img"), filepath.Join(dir, "probed.img")
	testutil.WriteImage(t, image, 1<<20, 8, testutil.Sparse)
	testutil.WriteImage(t, probed, 1<<20, 9, testutil.Sparse)
	dev, probedDev := testutil.LoopDevice(t, image, true), testutil.LoopDevice(t, probed, true)
	lockInOtherProcess(t, probedDev, "-s")
	if r := inUse(t, probedDev); r != "" {
		t.Errorf("InUse(%s) = %q with only a shared flock, as udev takes", probedDev, r)
	}
	lockInOtherProcess(t, dev, "-x")
	if r := inUse(t, dev); !strings.HasPrefix(r, "locked by process ") {
		t.Errorf("InUse(locked device) = %q, want locked by process", r)
	}
}

// lockInOtherProcess has another process hold a flock (mode -x or -s) on path until the test
// ends.
func lockInOtherProcess(t *testing.T, path, mode string) {
	t.Helper()
	flock := testutil.RequireCommand(t, "flock")
	cmd := exec.Command(flock, mode, path, "-c", "echo locked; exec sleep 60")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // killed: its error says so
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("flock: %q, %v", line, err)
	}
}

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		line   string
		ok     bool
		dev    uint64
		point  string
		source bool
	}{
		{"42 27 7:0 / /mnt/x rw,relatime shared:1 - ext4 /dev/null rw", true, 7 << 8, "/mnt/x", false},
		{`43 27 259:3 / /mnt/with\040space rw - xfs /dev/nvme0n1p3 rw`, true, 259<<8 | 3, "/mnt/with space", false},
		{"44 27 0:25 / /run rw - tmpfs tmpfs rw", true, 25, "/run", false},
		{"garbage", false, 0, "", false},
	}
	for _, tt := range tests {
		m, ok := parseMountinfo(tt.line)
		if ok != tt.ok || (ok && (m.dev != tt.dev || m.point != tt.point)) {
			t.Errorf("parseMountinfo(%q) = %+v, %v; want dev %d point %q ok %v", tt.line, m, ok, tt.dev, tt.point, tt.ok)
		}
	}
}

func TestParseLock(t *testing.T) {
	tests := []struct {
		line string
		ok   bool
		want lock
	}{
		{"1: POSIX  ADVISORY  WRITE 1234 fd:01:5678 0 EOF", true, lock{dev: 0xfd<<8 | 1, ino: 5678, pid: 1234}},
		{"2: OFDLCK ADVISORY  READ  -1 08:02:99 100 101", true, lock{dev: 8<<8 | 2, ino: 99, pid: -1}},
		{"2: -> FLOCK  ADVISORY  WRITE 77 08:02:99 0 EOF", false, lock{}},
		{"3: FLOCK  ADVISORY  READ  812 00:05:1234 0 EOF", true, lock{dev: 5, ino: 1234, pid: 812, probe: true}},
		{"4: FLOCK  ADVISORY  WRITE 813 00:05:1234 0 EOF", true, lock{dev: 5, ino: 1234, pid: 813}},
		{"", false, lock{}},
	}
	for _, tt := range tests {
		l, ok := parseLock(tt.line)
		if ok != tt.ok || l != tt.want {
			t.Errorf("parseLock(%q) = %+v, %v; want %+v, %v", tt.line, l, ok, tt.want, tt.ok)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := map[string]string{
		`/mnt/plain`:          "/mnt/plain",
		`/mnt/a\040b`:         "/mnt/a b",
		`/mnt/tab\011x\134y`:  "/mnt/tab\tx\\y",
		`/mnt/trailing\04`:    `/mnt/trailing\04`,
		`/mnt/not\999escaped`: `/mnt/not\999escaped`,
	}
	for in, want := range tests {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}

// holders names the devices stacked on a device, read from its sysfs holders directory.
func TestHolders(t *testing.T) {
	dir := t.TempDir()
	if h := holders(dir); h != "" {
		t.Errorf("holders without a holders directory = %q", h)
	}
	if err := os.MkdirAll(filepath.Join(dir, "holders", "md127"), 0o755); err != nil {
		t.Fatal(err)
	}
	if h := holders(dir); h != "md127" {
		t.Errorf("holders = %q, want md127", h)
	}
}
