//go:build linux

package local

import "golang.org/x/sys/unix"

// freeBytes returns the bytes an unprivileged writer may still use on dir's file system, and
// whether it could tell.
func freeBytes(dir string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * st.Bsize, true
}
