//go:build !linux

package repo

import (
	"errors"
	"syscall"
	"time"
)

// processHolds reports whether process pid of this host still runs.
func processHolds(pid int, _ time.Time) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// processSpace is empty where boots and pid namespaces cannot be told apart: the host name
// alone decides.
func processSpace() string { return "" }
