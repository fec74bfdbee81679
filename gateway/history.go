package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
)

// maxStoredSamples bounds the stored-bytes history: at one sample per backup, gc or prune and
// at least one every sampleEvery, two days of an idle gateway and more of a busy one's last
// few hundred changes.
const (
	maxStoredSamples = 288
	sampleEvery      = 10 * time.Minute
)

// StoredSample is the repository's size at one time: what its packs hold in the backend.
type StoredSample struct {
	At          time.Time `json:"at"`
	StoredBytes int64     `json:"stored_bytes"`
}

// GCRun is how the last gc ended.
type GCRun struct {
	At      time.Time    `json:"at"`
	Host    string       `json:"host,omitempty"` // the host of the gateway that ran it
	Seconds float64      `json:"seconds"`
	Stats   repo.GCStats `json:"stats"`
	Error   string       `json:"error,omitempty"`
}

// CheckRun is how the last check ended.
type CheckRun struct {
	At       time.Time `json:"at"`
	Host     string    `json:"host,omitempty"` // the host of the gateway that ran it
	Seconds  float64   `json:"seconds"`
	ReadData bool      `json:"read_data"`
	Sample   float64   `json:"sample_percent,omitempty"`
	Packs    int       `json:"packs"`
	Blobs    int64     `json:"blobs"`
	Backups  int       `json:"backups"`
	Problems []string  `json:"problems,omitempty"`
	Error    string    `json:"error,omitempty"`
}

// OK reports whether the check ran to the end and found nothing wrong.
func (c *CheckRun) OK() bool { return c.Error == "" && len(c.Problems) == 0 }

// Maintenance is what the console shows of the repository's upkeep: the stored bytes over
// time, and the last gc and check (nil when none ran since the index was made).
type Maintenance struct {
	Samples   []StoredSample `json:"samples"`
	LastGC    *GCRun         `json:"last_gc,omitempty"`
	LastCheck *CheckRun      `json:"last_check,omitempty"`
}

// history keeps the maintenance record. The index holds it (under m/history/*) so a
// restarted gateway, and the console after an embedded 'cairn repo check', see it; like all
// of the index it is a cache, and lost it simply starts again.
type history struct {
	mu      sync.Mutex // guards samples and the index keys below
	samples []StoredSample
}

const (
	historySamplesKey = "history/stored"
	historyGCKey      = "history/gc"
	historyCheckKey   = "history/check"
)

func (s *Service) loadHistory() {
	h := &history{}
	if v, err := s.idx.Meta(historySamplesKey); err == nil && v != "" {
		_ = json.Unmarshal([]byte(v), &h.samples)
	}
	s.history = h
	if c := s.lastCheck(); c != nil {
		s.metrics.checkRun(c)
	}
	if g := s.lastGC(); g != nil {
		s.metrics.gcRun(g)
	}
}

// sampleStored records the repository's stored bytes now (after something changed them).
func (s *Service) sampleStored() {
	var total int64
	if err := s.idx.Packs(func(_ repo.PackID, size int64) error { total += size; return nil }); err != nil {
		s.log.Warn("cannot sample the repository's size", "error", err)
		return
	}
	s.metrics.storedBytes.Set(float64(total))
	h := s.history
	h.mu.Lock()
	defer h.mu.Unlock()
	h.samples = append(h.samples, StoredSample{At: now(), StoredBytes: total})
	if n := len(h.samples) - maxStoredSamples; n > 0 {
		h.samples = slices.Delete(h.samples, 0, n)
	}
	b, _ := json.Marshal(h.samples)
	if err := s.idx.SetMeta(historySamplesKey, string(b)); err != nil {
		s.log.Warn("cannot record the repository's size", "error", err)
	}
}

// sampleIfStale samples when the newest sample is older than sampleEvery (the heartbeat).
func (s *Service) sampleIfStale() {
	s.history.mu.Lock()
	stale := len(s.history.samples) == 0 || time.Since(s.history.samples[len(s.history.samples)-1].At) >= sampleEvery
	s.history.mu.Unlock()
	if stale {
		s.sampleStored()
	}
}

func (s *Service) recordGC(start time.Time, st repo.GCStats, err error) {
	g := &GCRun{At: start.UTC(), Host: hostName(), Seconds: time.Since(start).Seconds(), Stats: st}
	if err != nil {
		g.Error = err.Error()
	}
	s.putHistory(historyGCKey, g)
	s.shareRun(lastRunGC, g.At, g)
	s.metrics.gcRun(g)
	s.sampleStored()
}

func (s *Service) recordCheck(start time.Time, o repo.CheckOptions, rep *repo.CheckReport, err error) {
	c := &CheckRun{At: start.UTC(), Host: hostName(), Seconds: time.Since(start).Seconds(), ReadData: o.ReadData, Sample: o.SamplePercent}
	if rep != nil {
		c.Packs, c.Blobs, c.Backups, c.Problems = rep.Packs, rep.Blobs, rep.Backups, rep.Problems
	}
	if err != nil {
		c.Error = err.Error()
	}
	s.putHistory(historyCheckKey, c)
	s.metrics.checkRun(c)
	s.shareRun(lastRunCheck, c.At, c)
}

func (s *Service) putHistory(key string, v any) {
	b, _ := json.Marshal(v)
	s.history.mu.Lock()
	defer s.history.mu.Unlock()
	if err := s.idx.SetMeta(key, string(b)); err != nil {
		s.log.Warn("cannot record a maintenance result", "key", key, "error", err)
	}
}

func (s *Service) lastGC() *GCRun {
	var g GCRun
	if !s.getHistory(historyGCKey, &g) {
		return nil
	}
	return &g
}

func (s *Service) lastCheck() *CheckRun {
	var c CheckRun
	if !s.getHistory(historyCheckKey, &c) {
		return nil
	}
	return &c
}

func (s *Service) getHistory(key string, v any) bool {
	val, err := s.idx.Meta(key)
	return err == nil && val != "" && json.Unmarshal([]byte(val), v) == nil
}

// Maintenance returns the stored bytes over time and the last gc and check (admins).
func (s *Service) Maintenance(ctx context.Context) (*Maintenance, error) {
	if _, err := adminOf(ctx, "see the repository's maintenance"); err != nil {
		return nil, err
	}
	s.history.mu.Lock()
	m := &Maintenance{Samples: slices.Clone(s.history.samples)}
	s.history.mu.Unlock()
	m.LastGC, m.LastCheck = s.lastGC(), s.lastCheck()
	return m, nil
}

// StartCheck accepts a check of the repository as a background job (admins) and returns the
// job's id; the result is kept as the last check (see Maintenance) and in the job's log.
func (s *Service) StartCheck(ctx context.Context, o repo.CheckOptions) (string, error) {
	c, err := adminOf(ctx, "check the repository")
	if err != nil {
		return "", err
	}
	if p := o.SamplePercent; p != 0 && !(p > 0 && p <= 100) {
		return "", invalidf("a sample of %v%% of the packs: give a share above 0 and at most 100, like 2.5", p)
	}
	id := now().Format("20060102T150405.000000")
	jobID := "check/" + id
	s.jobs.add(JobInfo{ID: jobID, Kind: "check", Subject: id})
	what := "metadata"
	if o.ReadData {
		what = "all data"
		if o.SamplePercent > 0 {
			what = "a sample of the data"
		}
	}
	s.jobs.logf(jobID, "accepted: check of %s, by %s", what, c.User)
	return jobID, s.Submit(ctx, "check", id, func(jctx context.Context) error {
		rep, err := s.Check(WithCaller(jctx, c), o)
		if err != nil {
			return err
		}
		s.jobs.logf(jobID, "%d backups, %d packs, %d blobs, %d packs read", rep.Backups, rep.Packs, rep.Blobs, rep.PacksRead)
		for _, p := range rep.Problems {
			s.jobs.logf(jobID, "problem: %s", p)
		}
		if !rep.OK() {
			return wrapf(ErrConflict, "the check found %d problems", rep.ProblemCount)
		}
		return nil
	})
}

// The last gc and check in the repository (docs/design.md): meta/last-run/<hex name>, so that
// every gateway on the repository, and an index made anew, show how they ended.
const (
	metaLastRun  = "last-run"
	lastRunGC    = "gc"
	lastRunCheck = "check"
)

// hostName names this host in a run's record ("" when it cannot be had).
func hostName() string {
	h, _ := os.Hostname()
	return h
}

// shareRun stores the record r of a gc or check that started at and ended here in the
// repository, unless the repository holds a newer one. A failure is logged: the record stays
// in this index.
func (s *Service) shareRun(name string, at time.Time, r any) {
	if s.cfg.ReadOnly || s.repo.ReadOnly() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), withdrawTimeout)
	defer cancel()
	var stored struct {
		At time.Time `json:"at"`
	}
	err := s.repo.GetMeta(ctx, metaLastRun, name, &stored)
	if err == nil && stored.At.After(at) {
		return
	}
	if err == nil || errors.Is(err, backend.ErrNotFound) || errors.Is(err, repo.ErrCorrupt) {
		err = s.repo.PutMeta(ctx, metaLastRun, name, r)
	}
	if err != nil {
		s.log.Warn("cannot store the last "+name+" in the repository; other gateways will not show it", "error", err)
	}
}

// syncRuns takes the repository's records of the last gc and check where they are newer than
// this index's (the full catch-up). A record that cannot be read is logged and skipped.
func (s *Service) syncRuns(ctx context.Context) {
	get := func(name string, v any) bool {
		err := s.repo.GetMeta(ctx, metaLastRun, name, v)
		if err != nil && !errors.Is(err, backend.ErrNotFound) {
			s.log.Warn("cannot read the last "+name+" from the repository", "error", err)
		}
		return err == nil
	}
	var g GCRun
	if get(lastRunGC, &g) {
		if mine := s.lastGC(); mine == nil || g.At.After(mine.At) {
			s.putHistory(historyGCKey, &g)
			s.metrics.gcRun(&g)
		}
	}
	var c CheckRun
	if get(lastRunCheck, &c) {
		if mine := s.lastCheck(); mine == nil || c.At.After(mine.At) {
			s.putHistory(historyCheckKey, &c)
			s.metrics.checkRun(&c)
		}
	}
}
