package testutil

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// MakeExt4 makes an ext4 filesystem on image (a file or device), skipping (see Skip) when
// mkfs.ext4 is missing.
func MakeExt4(t testing.TB, image string) {
	t.Helper()
	mkfs := RequireCommand(t, "mkfs.ext4")
	if out, err := exec.Command(mkfs, "-q", "-F", image).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", image, err, strings.TrimSpace(string(out)))
	}
}

// Mount mounts source (a device, or an image file, which mount attaches to a loop device
// itself) on a new temporary directory, unmounts it when the test ends, and returns the
// mount point. It skips (see Skip) without root or mount.
func Mount(t testing.TB, source string, options ...string) string {
	t.Helper()
	RequireRoot(t)
	mount := RequireCommand(t, "mount")
	umount := RequireCommand(t, "umount")
	dir := t.TempDir() // registered first, so removed after the unmount below
	args := []string{}
	if len(options) > 0 {
		args = append(args, "-o", strings.Join(options, ","))
	}
	args = append(args, source, dir)
	if out, err := exec.Command(mount, args...).CombinedOutput(); err != nil {
		Skip(t, "cannot mount %s: %v: %s", source, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() { unmount(t, umount, dir) })
	return dir
}

// MountLoop mounts the filesystem image file with -o loop; the loop device mount sets up is
// freed again by the unmount.
func MountLoop(t testing.TB, image string) string {
	t.Helper()
	return Mount(t, image, "loop")
}

func unmount(t testing.TB, umount, dir string) {
	t.Helper()
	var out []byte
	var err error
	for range 20 {
		if out, err = exec.Command(umount, dir).CombinedOutput(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("unmount %s: %v: %s", dir, err, strings.TrimSpace(string(out)))
}
