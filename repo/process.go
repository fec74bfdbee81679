package repo

// Process names a running process as a lock does: its host, process space (the host's boot
// and pid namespace), pid and start time. A gateway's creating, restoring and services
// objects carry one, so that a reader of the same host and space can tell at once that the
// process is gone (docs/design.md, "A gateway process of the same host that is gone").
type Process struct {
	Host  string `json:"host,omitempty"`
	Space string `json:"space,omitempty"`
	PID   int    `json:"pid,omitempty"`
	Start uint64 `json:"start,omitempty"` // clock ticks since boot; 0 if unknown
}

// ThisProcess is this process, as its locks name it.
func (r *Repository) ThisProcess() Process {
	return Process{Host: r.locks.host, Space: r.locks.space, PID: r.locks.pid, Start: r.locks.start}
}

// ProcessGone reports whether p is a process this one can judge (the same host name, boot and
// pid namespace, as a lock's holder is judged) that no longer runs, or whose pid now names a
// process started at another time. A process elsewhere, or one named without a pid, is never
// gone by this test: its pid means nothing here.
func (r *Repository) ProcessGone(p Process) bool {
	l := r.locks
	switch {
	case p.PID <= 0 || !l.ours(LockInfo{Host: p.Host, Space: p.Space}):
		return false
	case p.PID == l.pid: // this process, or an earlier one given its pid
		return p.Start != 0 && l.start != 0 && p.Start != l.start
	}
	return !processHolds(p.PID, p.Start)
}
