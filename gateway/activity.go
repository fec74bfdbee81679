package gateway

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Job states, as JobInfo.State says them.
const (
	JobQueued    = "queued"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
	JobCancelled = "cancelled"
)

// Bounds of what the service remembers of jobs: finished jobs are kept in a ring of
// maxFinishedJobs, and each job keeps its last maxJobLog log lines.
const (
	maxFinishedJobs = 50
	maxJobLog       = 100
)

// JobInfo is a background job (a backup, a restore, a check) as the console shows it: what
// it works on, how far it got and what it said. Progress is in bytes of the volume.
type JobInfo struct {
	ID         string    `json:"id"`   // kind/subject, e.g. backup/<backup id>
	Kind       string    `json:"kind"` // backup, restore, check
	Subject    string    `json:"subject,omitempty"`
	Project    string    `json:"project,omitempty"` // empty for repository jobs (admins only)
	VolumeID   string    `json:"volume_id,omitempty"`
	VolumeName string    `json:"volume_name,omitempty"`
	Target     string    `json:"target,omitempty"` // a restore's target
	State      string    `json:"state"`
	Done       int64     `json:"done_bytes"`
	Total      int64     `json:"total_bytes"`
	Queued     time.Time `json:"queued_at"`
	Started    time.Time `json:"started_at,omitzero"`
	Finished   time.Time `json:"finished_at,omitzero"`
	Error      string    `json:"error,omitempty"`
	Log        []string  `json:"log,omitempty"`
}

// Elapsed is how long the job has run (until it finished, or until at).
func (j JobInfo) Elapsed(at time.Time) time.Duration {
	if j.Started.IsZero() {
		return 0
	}
	if !j.Finished.IsZero() {
		at = j.Finished
	}
	return at.Sub(j.Started)
}

// Rate is the job's average throughput in bytes per second up to at (0 before it started).
func (j JobInfo) Rate(at time.Time) float64 {
	el := j.Elapsed(at).Seconds()
	if el <= 0 {
		return 0
	}
	return float64(j.Done) / el
}

// ETA is how long the job needs at its average rate to finish, or -1 when unknown.
func (j JobInfo) ETA(at time.Time) time.Duration {
	r := j.Rate(at)
	if r <= 0 || j.Total <= 0 || j.State != JobRunning {
		return -1
	}
	return time.Duration(float64(j.Total-j.Done) / r * float64(time.Second))
}

// Percent is the share done, 0 to 100.
func (j JobInfo) Percent() float64 {
	if j.Total <= 0 {
		if j.State == JobSucceeded {
			return 100
		}
		return 0
	}
	return 100 * float64(j.Done) / float64(j.Total)
}

// jobTable remembers the jobs that are queued or running and the last finished ones. It has
// its own lock: progress callbacks of running jobs update it many times a second.
type jobTable struct {
	mu       sync.Mutex
	live     map[string]*JobInfo
	finished []*JobInfo    // oldest first, at most maxFinishedJobs
	ended    chan struct{} // closed (and replaced) when a job finishes
	now      func() time.Time
}

func newJobTable() *jobTable {
	return &jobTable{live: map[string]*JobInfo{}, ended: make(chan struct{}), now: func() time.Time { return time.Now().UTC() }}
}

// endings returns a channel closed when the next job finishes: a waiter takes it before it
// looks at the state it waits on, so an end between its look and its wait still wakes it.
func (t *jobTable) endings() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ended
}

// add records an accepted job.
func (t *jobTable) add(j JobInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	j.State, j.Queued = JobQueued, t.now()
	t.live[j.ID] = &j
}

// addOnce adds j unless a job of its id is queued or running, and says whether it did: a job
// that must not run twice at once (a verification of one backup).
func (t *jobTable) addOnce(j JobInfo) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, busy := t.live[j.ID]; busy {
		return false
	}
	j.State, j.Queued = JobQueued, t.now()
	t.live[j.ID] = &j
	return true
}

// entry returns the live job id, or nil: the handle its runner starts and finishes it by.
// Jobs may share an id (the restores of one backup, when reset-state cancelled the first), so
// the id alone could name a later job than the runner's.
func (t *jobTable) entry(id string) *JobInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.live[id]
}

// start marks job j (an entry) running.
func (t *jobTable) start(j *JobInfo) {
	if j == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	j.State, j.Started = JobRunning, t.now()
	j.appendLog(t.now(), "started")
}

// progress records how many of total bytes a job has done.
func (t *jobTable) progress(id string, done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if j := t.live[id]; j != nil {
		j.Done, j.Total = done, total
	}
}

// logf adds a line to a job's log.
func (t *jobTable) logf(id, format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if j := t.live[id]; j != nil {
		j.appendLog(t.now(), fmt.Sprintf(format, args...))
	}
}

// finish moves job j (an entry) to the finished ring with its result, and leaves a later job
// of the same id live [TestRestoreCancelledWhileQueuedEndsOnlyItsOwnJob].
func (t *jobTable) finish(j *JobInfo, state string, err error) {
	if j == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !j.Finished.IsZero() {
		return
	}
	if t.live[j.ID] == j {
		delete(t.live, j.ID)
	}
	close(t.ended)
	t.ended = make(chan struct{})
	j.State, j.Finished = state, t.now()
	if j.Started.IsZero() {
		j.Started = j.Finished
	}
	if err != nil {
		j.Error = err.Error()
		j.appendLog(j.Finished, state+": "+j.Error)
	} else {
		if j.Total > 0 {
			j.Done = j.Total
		}
		j.appendLog(j.Finished, state)
	}
	t.finished = append(t.finished, j)
	if n := len(t.finished) - maxFinishedJobs; n > 0 {
		t.finished = slices.Delete(t.finished, 0, n)
	}
}

// snapshot copies the live jobs (oldest first) and the finished ones (newest first).
func (t *jobTable) snapshot() (live, finished []JobInfo) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, j := range t.live {
		live = append(live, j.clone())
	}
	slices.SortFunc(live, func(a, b JobInfo) int { return a.Queued.Compare(b.Queued) })
	for i := len(t.finished) - 1; i >= 0; i-- {
		finished = append(finished, t.finished[i].clone())
	}
	return live, finished
}

func (j *JobInfo) appendLog(at time.Time, line string) {
	j.Log = append(j.Log, at.Format("15:04:05")+" "+line)
	if n := len(j.Log) - maxJobLog; n > 0 {
		j.Log = slices.Delete(j.Log, 0, n)
	}
}

func (j *JobInfo) clone() JobInfo {
	c := *j
	c.Log = slices.Clone(j.Log)
	return c
}

// Jobs returns the jobs the caller may see: those queued or running (oldest first) and the
// last finished ones (newest first). A non-admin sees its project's backups and restores; the
// repository's own jobs (checks) are for admins.
func (s *Service) Jobs(ctx context.Context) (running, recent []JobInfo, err error) {
	c, err := callerOf(ctx)
	if err != nil {
		return nil, nil, err
	}
	live, finished := s.jobs.snapshot()
	visible := func(j JobInfo) bool { return c.Admin || (j.Project != "" && j.Project == c.Project) }
	for _, j := range live {
		if visible(j) {
			running = append(running, j)
		}
	}
	for _, j := range finished {
		if visible(j) {
			recent = append(recent, j)
		}
	}
	return running, recent, nil
}

// Job returns one job the caller may see, running or recently finished.
func (s *Service) Job(ctx context.Context, id string) (*JobInfo, error) {
	running, recent, err := s.Jobs(ctx)
	if err != nil {
		return nil, err
	}
	for _, j := range append(running, recent...) {
		if j.ID == id {
			return &j, nil
		}
	}
	return nil, wrapf(ErrNotFound, "job %s not found: it may have finished long ago", id)
}

// jobProgress returns a progress callback that records progress in the job table and passes
// it on to next, if any.
func (s *Service) jobProgress(id string, next func(done, total int64)) func(done, total int64) {
	return func(done, total int64) {
		s.jobs.progress(id, done, total)
		if next != nil {
			next(done, total)
		}
	}
}
