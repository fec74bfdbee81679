package testutil

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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
	args := []string{}
	if len(options) > 0 {
		args = append(args, "-o", strings.Join(options, ","))
	}
	return mountWith(t, source, args)
}

// MountTmpfs mounts a tmpfs of size bytes on a new temporary directory, unmounted when the
// test ends: a file system a test can fill (FillFS). It skips (see Skip) without root.
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	return mountWith(t, "tmpfs", []string{"-t", "tmpfs", "-o", "size=" + strconv.FormatInt(size, 10)})
}

// FillFS writes a file into dir until its file system has at most leave bytes free (0: until
// it is full, ENOSPC) and returns the function that removes the file again.
func FillFS(t testing.TB, dir string, leave int64) (free func()) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		if left := int64(st.Bavail) * st.Bsize; leave > 0 && left <= leave {
			break
		} else if leave > 0 && left-leave < int64(len(chunk)) {
			chunk = chunk[:left-leave]
		}
		_, err := f.Write(chunk)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	return func() {
		t.Helper()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
}

// mountWith runs mount with args, then source and a new temporary directory.
func mountWith(t testing.TB, source string, args []string) string {
	t.Helper()
	RequireRoot(t)
	mount := RequireCommand(t, "mount")
	umount := RequireCommand(t, "umount")
	dir := t.TempDir() // registered first, so removed after the unmount below
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

// XFSReflinkDir makes an XFS file system with reflinks (mkfs.xfs -m reflink=1) in an image
// file of size bytes, mounts it on a loop device, and returns the mount point; everything is
// undone when the test ends. It skips (see Skip) without root or mkfs.xfs.
func XFSReflinkDir(t testing.TB, size int64) string {
	t.Helper()
	RequireRoot(t)
	mkfs := RequireCommand(t, "mkfs.xfs")
	img := filepath.Join(t.TempDir(), "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs: %v: %s", err, out)
	}
	return MountLoop(t, img)
}
