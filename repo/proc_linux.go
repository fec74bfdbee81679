//go:build linux

package repo

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// processHolds reports whether process pid of this host still runs and is the process that
// took a lock at created: a zombie, or a newer process that was given the same pid (pids wrap
// around after 32768 on many systems), does not hold it.
func processHolds(pid int, created time.Time) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	// Fields after the command (which may hold spaces) start after the last ')'.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return true
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return true
	}
	if f[0] == "Z" || f[0] == "X" {
		return false
	}
	ticks, err := strconv.ParseInt(f[19], 10, 64) // starttime: field 22 of stat
	if err != nil {
		return true
	}
	boot, ok := bootTime()
	if !ok {
		return true
	}
	const clockTicks = 100 // USER_HZ on Linux
	started := boot.Add(time.Duration(ticks) * time.Second / clockTicks)
	// The holder started before it wrote its lock; a process that started later is not it.
	return !started.After(created.Add(2 * time.Second))
}

func bootTime() (time.Time, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return time.Time{}, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "btime "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(n, 0), err == nil
		}
	}
	return time.Time{}, false
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
