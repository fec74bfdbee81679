//go:build !linux

package local

// freeBytes cannot tell here: no write is held to the reserve.
func freeBytes(dir string) (int64, bool) { return 0, false }
