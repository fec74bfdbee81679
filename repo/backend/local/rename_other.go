//go:build !linux

package local

import "errors"

// renameNoReplace is not available here: Create needs hard links.
func renameNoReplace(oldname, newname string) error {
	return errors.New("the file system has no hard links, and this system cannot rename without replacing")
}
