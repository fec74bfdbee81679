package local

import "golang.org/x/sys/unix"

// renameNoReplace renames oldname to newname, failing with EEXIST if newname exists
// (renameat2 with RENAME_NOREPLACE).
func renameNoReplace(oldname, newname string) error {
	return unix.Renameat2(unix.AT_FDCWD, oldname, unix.AT_FDCWD, newname, unix.RENAME_NOREPLACE)
}
