//go:build linux

package fusefs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// ErrMountpoint: the directory cannot be mounted on (missing, not a directory, not empty).
var ErrMountpoint = errors.New("bad mountpoint")

type mountpointError struct{ msg string }

func (e *mountpointError) Error() string        { return e.msg }
func (e *mountpointError) Is(target error) bool { return target == ErrMountpoint }

// PrepareMountpoint checks that dir can be mounted on: an existing, empty directory. A
// stale FUSE mount left by a process that died ("transport endpoint is not connected") is
// detached first; cleared says so, for the caller to tell the user.
func PrepareMountpoint(dir string) (cleared bool, err error) {
	err = checkMountpoint(dir)
	if errors.Is(err, syscall.ENOTCONN) {
		if derr := Detach(dir); derr != nil {
			return false, &mountpointError{fmt.Sprintf("mountpoint %s holds a stale mount of a process that died, and detaching it failed: %v; run 'fusermount3 -u -z %s'", dir, derr, dir)}
		}
		cleared = true
		err = checkMountpoint(dir)
	}
	var me *mountpointError
	if err != nil && !errors.As(err, &me) {
		err = &mountpointError{fmt.Sprintf("mountpoint %s: %v", dir, err)}
	}
	return cleared, err
}

// checkMountpoint returns a mountpointError, or an error wrapping ENOTCONN for a dead mount
// (which the kernel may only notice on a listing: it answers stat from its cache).
func checkMountpoint(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return &mountpointError{fmt.Sprintf("mountpoint %s does not exist; create it with 'mkdir -p %s'", dir, dir)}
	} else if err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if errors.Is(err, syscall.ENOTDIR) {
		return &mountpointError{fmt.Sprintf("mountpoint %s is not a directory", dir)}
	}
	if err != nil && err != io.EOF {
		return err
	}
	if len(names) > 0 {
		return &mountpointError{fmt.Sprintf("mountpoint %s is not empty (is cairn already mounted there?)", dir)}
	}
	return nil
}

// Detach unmounts dir lazily: the mount leaves the namespace now and goes away when its last
// user closes it. It uses fusermount3 (which users may run), else umount2(MNT_DETACH).
func Detach(dir string) error {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			out, err := exec.Command(p, "-u", "-z", dir).CombinedOutput()
			if err == nil {
				return nil
			}
			if os.Geteuid() != 0 {
				return fmt.Errorf("%s -u -z: %v: %s", name, err, strings.TrimSpace(string(out)))
			}
			break
		}
	}
	if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
		return fmt.Errorf("umount %s: %w", dir, err)
	}
	return nil
}
