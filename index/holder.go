package index

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"
)

// The process that has an index open says who it is in a file beside it, so another that
// finds the index locked can name it: pid, command line (a mount's includes its mountpoint),
// since when. It is a courtesy for the message, never a lock: Badger's directory lock is.

// holder is the record in <index dir>.holder.
type holder struct {
	PID     int       `json:"pid"`
	Command []string  `json:"command"`
	Cwd     string    `json:"cwd,omitempty"` // where relative paths in Command start
	Since   time.Time `json:"since"`
}

func holderPath(dir string) string { return strings.TrimRight(dir, "/") + ".holder" }

// writeHolder records this process as the index's holder; failing to is harmless.
func writeHolder(dir string) {
	cwd, _ := os.Getwd()
	b, err := json.Marshal(holder{PID: os.Getpid(), Command: redact(os.Args), Cwd: cwd, Since: time.Now().UTC()})
	if err != nil {
		return
	}
	tmp := holderPath(dir) + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, holderPath(dir))
	}
}

// readHolder says who holds the index: "pid 1234 (cairn mount /mnt/b in /root), since
// 2026-12-01 14:32:10 UTC", or "" when no live process is recorded.
func readHolder(dir string) string {
	b, err := os.ReadFile(holderPath(dir))
	if err != nil {
		return ""
	}
	var h holder
	if json.Unmarshal(b, &h) != nil || h.PID <= 0 || syscall.Kill(h.PID, 0) == syscall.ESRCH {
		return ""
	}
	cmd := h.Command
	if len(cmd) > 0 {
		cmd = append([]string{"cairn"}, cmd[1:]...)
	}
	where := ""
	if h.Cwd != "" {
		where = " in " + h.Cwd
	}
	return fmt.Sprintf("pid %d (%s%s), since %s", h.PID, strings.Join(cmd, " "), where, h.Since.Format("2006-01-02 15:04:05 MST"))
}

// redact hides the values of flags that carry secrets.
func redact(args []string) []string {
	out := make([]string, len(args))
	copy(out, args)
	for i, a := range out {
		for _, f := range []string{"--secret-key", "--access-key"} {
			switch {
			case a == f && i+1 < len(out):
				out[i+1] = "…"
			case strings.HasPrefix(a, f+"="):
				out[i] = f + "=…"
			}
		}
	}
	return out
}
