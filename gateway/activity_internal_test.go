package gateway

import (
	"fmt"
	"testing"
	"time"
)

// The job table is bounded: the last maxFinishedJobs finished jobs, the last maxJobLog lines
// of each; rate and ETA come from the progress and the start time.
func TestJobTableBounds(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tb := newJobTable()
	tb.now = func() time.Time { return at }
	for i := range maxFinishedJobs + 7 {
		id := fmt.Sprintf("backup/%d", i)
		tb.add(JobInfo{ID: id, Kind: "backup", Total: 100})
		tb.start(tb.entry(id))
		for n := range maxJobLog + 5 {
			tb.logf(id, "line %d", n)
		}
		tb.finish(tb.entry(id), JobSucceeded, nil)
	}
	live, finished := tb.snapshot()
	if len(live) != 0 || len(finished) != maxFinishedJobs {
		t.Fatalf("%d live, %d finished", len(live), len(finished))
	}
	if newest := finished[0]; newest.ID != fmt.Sprintf("backup/%d", maxFinishedJobs+6) || len(newest.Log) != maxJobLog || newest.Done != 100 {
		t.Fatalf("newest finished job %+v", newest)
	}

	tb.add(JobInfo{ID: "restore/x", Kind: "restore"})
	tb.start(tb.entry("restore/x"))
	tb.progress("restore/x", 25<<20, 100<<20)
	live, _ = tb.snapshot()
	j := live[0]
	later := at.Add(5 * time.Second)
	if r := j.Rate(later); r != 5<<20 {
		t.Fatalf("rate %v", r)
	}
	if eta := j.ETA(later); eta != 15*time.Second {
		t.Fatalf("eta %v", eta)
	}
	if p := j.Percent(); p != 25 {
		t.Fatalf("percent %v", p)
	}
	tb.finish(tb.entry("restore/x"), JobFailed, fmt.Errorf("boom"))
	_, finished = tb.snapshot()
	if finished[0].State != JobFailed || finished[0].Error != "boom" || finished[0].ETA(later) != -1 {
		t.Fatalf("failed job %+v", finished[0])
	}
}

// addOnce adds a job only while none of its id is queued or running: two verifications of
// one backup do not run at once, and one may run again after the first ended.
func TestJobTableAddOnce(t *testing.T) {
	tb := newJobTable()
	if !tb.addOnce(JobInfo{ID: "verify/b1", Kind: "verify"}) {
		t.Fatal("the first verification was not added")
	}
	if tb.addOnce(JobInfo{ID: "verify/b1", Kind: "verify"}) {
		t.Fatal("a second verification of the same backup was added while the first is queued")
	}
	if !tb.addOnce(JobInfo{ID: "verify/b2", Kind: "verify"}) {
		t.Fatal("another backup's verification was refused")
	}
	j := tb.entry("verify/b1")
	tb.start(j)
	tb.finish(j, JobSucceeded, nil)
	if !tb.addOnce(JobInfo{ID: "verify/b1", Kind: "verify"}) {
		t.Fatal("a verification after the first ended was refused")
	}
}
