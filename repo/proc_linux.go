//go:build linux

package repo

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// processHolds reports whether process pid of this host still runs and is the process that
// took a lock, whose start (clock ticks since boot) the lock records: a zombie, or a newer
// process that was given the same pid (pids wrap around after 32768 on many systems), does
// not hold it. Start times since boot move with no clock step, so a live holder is never
// taken for a newer process after the wall clock jumped
// [TestLockOfALiveProcessSurvivesAClockStep]. With no start recorded (0), a running process
// with the pid holds it.
func processHolds(pid int, start uint64) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	st, state, err := processStat(pid)
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	if state == "Z" || state == "X" {
		return false
	}
	return start == 0 || st == start
}

// processStart is this process's start in clock ticks since boot; 0 if unknown.
func processStart() uint64 {
	st, _, err := processStat(os.Getpid())
	if err != nil {
		return 0
	}
	return st
}

// processStat reads a process's state and start time (clock ticks since boot: fields 3 and
// 22 of /proc/PID/stat).
func processStat(pid int) (start uint64, state string, err error) {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", err
	}
	// Fields after the command (which may hold spaces) start after the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, "", fmt.Errorf("/proc/%d/stat: no command", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, "", fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("/proc/%d/stat: start: %w", pid, err)
	}
	return start, f[0], nil
}

// processSpace names where this process's pid means something: the host's boot (a random id
// the kernel makes at each boot) and the pid namespace. Another machine of the same host name
// or a container with its own pids has another; "" if neither can be read.
func processSpace() string {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(boot)) + "/" + ns
}
