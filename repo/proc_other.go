//go:build !linux

package repo

import (
	"errors"
	"syscall"
)

// processHolds reports whether process pid of this host still runs.
func processHolds(pid int, _ uint64) bool {
	return !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// processSpace is empty where boots and pid namespaces cannot be told apart: the host name
// alone decides.
func processSpace() string { return "" }

// processStart is unknown here: 0.
func processStart() uint64 { return 0 }
