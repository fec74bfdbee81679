package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/blockio"
	"github.com/cairn-backup/cairn/repo/backend/limit"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the service's Prometheus series (client_golang: the standard, maintained
// exposition library). Each Service has its own registry, served at /metrics by gateway/api.
type metrics struct {
	reg         *prometheus.Registry
	jobs        *prometheus.CounterVec
	jobsRunning *prometheus.GaugeVec
	jobsQueued  *prometheus.GaugeVec
	jobSeconds  *prometheus.HistogramVec
	bytesBackup prometheus.Counter
	bytesStored prometheus.Counter
	bytesRest   prometheus.Counter
	policyRuns  *prometheus.CounterVec
	policyLast  *prometheus.GaugeVec
	policyOK    *prometheus.GaugeVec
	policyNext  *prometheus.GaugeVec
	policyLate  *prometheus.GaugeVec
	storedBytes prometheus.Gauge
	gcLast      prometheus.Gauge
	gcOK        prometheus.Gauge
	gcFreed     prometheus.Gauge
	checkLast   prometheus.Gauge
	checkOK     prometheus.Gauge
	checkProbs  prometheus.Gauge
	beRetries   *prometheus.CounterVec
	beErrors    *prometheus.CounterVec
}

func newMetrics(s *Service, beRetries, beErrors *prometheus.CounterVec) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), beRetries: beRetries, beErrors: beErrors}
	m.jobs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cairn_jobs_total",
		Help: "Finished jobs by kind (backup, restore) and result (success, error, cancelled)."}, []string{"kind", "result"})
	m.jobsRunning = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cairn_jobs_running",
		Help: "Jobs running now, by kind."}, []string{"kind"})
	m.jobsQueued = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cairn_jobs_queued",
		Help: "Jobs accepted and waiting for a worker, by kind."}, []string{"kind"})
	m.jobSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "cairn_job_duration_seconds",
		Help: "Job durations.", Buckets: prometheus.ExponentialBuckets(0.1, 2, 16)}, []string{"kind"})
	m.bytesBackup = prometheus.NewCounter(prometheus.CounterOpts{Name: "cairn_backup_read_bytes_total",
		Help: "Volume bytes covered by finished backups."})
	m.bytesStored = prometheus.NewCounter(prometheus.CounterOpts{Name: "cairn_backup_stored_bytes_total",
		Help: "Bytes finished backups added to the repository (compressed, sealed)."})
	m.bytesRest = prometheus.NewCounter(prometheus.CounterOpts{Name: "cairn_restore_bytes_total",
		Help: "Bytes written by finished restores."})
	m.policyRuns = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cairn_policy_runs_total",
		Help: "Finished policy runs by policy and result (succeeded, failed)."}, []string{"policy", "result"})
	m.policyLast = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cairn_policy_last_run_timestamp_seconds",
		Help: "When the policy's last run started (Unix time)."}, []string{"policy"})
	m.policyOK = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cairn_policy_last_run_success",
		Help: "1 if the policy's last finished run succeeded, else 0."}, []string{"policy"})
	m.policyNext = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cairn_policy_next_run_timestamp_seconds",
		Help: "When the policy runs next (Unix time)."}, []string{"policy"})
	m.policyLate = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "cairn_policy_overdue_volumes",
		Help: "The policy's volumes without a successful backup for two periods of its schedule."}, []string{"policy"})
	m.storedBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_repository_stored_bytes",
		Help: "Bytes the repository's packs hold in the backend, as last sampled (after backups and gc, and every 10 minutes)."})
	m.gcLast = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_gc_last_run_timestamp_seconds",
		Help: "When the last gc started (Unix time); 0 if none ran since the index was made."})
	m.gcOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_gc_last_success",
		Help: "1 if the last gc finished without error, else 0."})
	m.gcFreed = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_gc_last_freed_bytes",
		Help: "Bytes the last gc freed in the backend."})
	m.checkLast = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_check_last_run_timestamp_seconds",
		Help: "When the last repository check started (Unix time); 0 if none ran since the index was made."})
	m.checkOK = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_check_last_success",
		Help: "1 if the last check ran to the end and found no problem, else 0."})
	m.checkProbs = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cairn_check_last_problems",
		Help: "Problems the last repository check found."})
	cacheHits := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cairn_chunk_cache_hits_total",
		Help: "Reads of decompressed blocks served from the cache (FUSE)."}, func() float64 {
		h, _ := s.repo.CacheStats()
		return float64(h)
	})
	cacheMisses := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cairn_chunk_cache_misses_total",
		Help: "Reads of decompressed blocks loaded from the backend (FUSE)."}, func() float64 {
		_, m := s.repo.CacheStats()
		return float64(m)
	})
	// The index's file system: under the reserve, backups and catch-ups are refused
	// (roomForIndex), since Badger dies of a SIGBUS on a full disk; an alert sees it coming.
	indexFree := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_index_free_bytes",
		Help: "Free bytes on the file system that holds the index (-1 when it cannot tell)."}, func() float64 {
		free, _, err := blockio.FreeSpace(s.idx.Dir())
		if err != nil {
			return -1
		}
		return float64(free)
	})
	indexReserve := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cairn_index_reserve_bytes",
		Help: "Free bytes cairn keeps on the index's file system: under them, backups are refused."}, func() float64 {
		return float64(local.Reserve)
	})
	for _, kind := range []string{"backup", "restore", "check", "verify"} {
		m.jobsRunning.WithLabelValues(kind)
		m.jobsQueued.WithLabelValues(kind)
		for _, result := range []string{"success", "error", "cancelled"} {
			m.jobs.WithLabelValues(kind, result)
		}
	}
	// How long the bandwidth limits held transfers back, for each limit set.
	for _, w := range []struct {
		way string
		m   *limit.Meter
	}{{"upload", s.meters.Up}, {"download", s.meters.Down}, {"read", s.volumeReads}} {
		if w.m != nil {
			m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cairn_throttled_seconds_total",
				Help:        "Time transfers waited for a bandwidth limit (--limit-upload, --limit-download, --limit-read), by way.",
				ConstLabels: prometheus.Labels{"way": w.way}}, func() float64 { return w.m.Waited().Seconds() }))
		}
	}
	m.reg.MustRegister(m.jobs, m.jobsRunning, m.jobsQueued, m.jobSeconds, m.bytesBackup, m.bytesStored, m.bytesRest,
		m.policyRuns, m.policyLast, m.policyOK, m.policyNext, m.policyLate,
		m.storedBytes, m.gcLast, m.gcOK, m.gcFreed, m.checkLast, m.checkOK, m.checkProbs, m.beRetries, m.beErrors,
		cacheHits, cacheMisses, indexFree, indexReserve, newRecordsCollector(s), newAttentionCollector(s), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// backendCounters are the backend's retry and failure counters, made before the backend.
func backendCounters() (retries, errors *prometheus.CounterVec) {
	retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cairn_backend_retries_total",
		Help: "Backend requests that failed transiently and were retried, by operation (S3)."}, []string{"op"})
	errors = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cairn_backend_errors_total",
		Help: "Backend requests that failed on every attempt, by operation (S3)."}, []string{"op"})
	// Every series exists from the start (at 0), so dashboards and alerts see it before the
	// first retry.
	for _, op := range []string{"get", "put", "delete", "stat", "list"} {
		retries.WithLabelValues(op)
		errors.WithLabelValues(op)
	}
	return retries, errors
}

// Metrics returns the registry to serve at /metrics.
func (s *Service) Metrics() *prometheus.Registry { return s.metrics.reg }

// policyRun records a finished policy run.
func (m *metrics) policyRun(name string, st PolicyState, start time.Time) {
	m.policyRuns.WithLabelValues(name, st.LastResult).Inc()
	m.policyLast.WithLabelValues(name).Set(float64(start.Unix()))
	ok := 0.0
	if st.LastResult == RunSucceeded {
		ok = 1
	}
	m.policyOK.WithLabelValues(name).Set(ok)
}

// policyStatus exports a policy's next run and overdue volumes.
func (m *metrics) policyStatus(st *PolicyStatus) {
	if !st.NextRun.IsZero() {
		m.policyNext.WithLabelValues(st.Name).Set(float64(st.NextRun.Unix()))
	}
	m.policyLate.WithLabelValues(st.Name).Set(float64(len(st.Overdue)))
}

// policiesLoaded drops the series of policies that no longer exist.
func (m *metrics) policiesLoaded(ps []*Policy) {
	keep := map[string]bool{}
	for _, p := range ps {
		keep[p.Name] = true
	}
	for _, g := range []*prometheus.GaugeVec{m.policyLast, m.policyOK, m.policyNext, m.policyLate} {
		for _, name := range gaugeLabels(g) {
			if !keep[name] {
				g.DeleteLabelValues(name)
			}
		}
	}
}

// gaugeLabels lists the policy label values a vector holds now.
func gaugeLabels(g *prometheus.GaugeVec) []string {
	ch := make(chan prometheus.Metric, 64)
	go func() { g.Collect(ch); close(ch) }()
	var out []string
	for mt := range ch {
		var pb dto.Metric
		if mt.Write(&pb) == nil {
			for _, l := range pb.GetLabel() {
				if l.GetName() == "policy" {
					out = append(out, l.GetValue())
				}
			}
		}
	}
	return out
}

// gcRun exports the last gc.
func (m *metrics) gcRun(g *GCRun) {
	m.gcLast.Set(float64(g.At.Unix()))
	m.gcFreed.Set(float64(g.Stats.BytesFreed))
	m.gcOK.Set(boolGauge(g.Error == ""))
}

// checkRun exports the last check.
func (m *metrics) checkRun(c *CheckRun) {
	m.checkLast.Set(float64(c.At.Unix()))
	m.checkProbs.Set(float64(len(c.Problems)))
	m.checkOK.Set(boolGauge(c.OK()))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// recordsCollector exports, when scraped, what one reading of the backup records says per
// project: the quota usage and limits (what counts against each limit, in use and reserved,
// beside the limit, so an alert sees a project nearing its quota before its backups are
// refused), and how many committed backups their newest verification found damaged. The
// outcome is in the backup's manifest, so every gateway counts a damage any of them found,
// and a rebuilt index still does.
type recordsCollector struct {
	s                    *Service
	used, limit, damaged *prometheus.Desc
}

func newRecordsCollector(s *Service) *recordsCollector {
	labels := []string{"project", "resource"}
	return &recordsCollector{s: s,
		used:  prometheus.NewDesc("cairn_quota_used", "What counts against a project's quota (backups, or backup_gigabytes: whole GiB of volume size), in use and reserved, as this gateway's index knows it.", labels, nil),
		limit: prometheus.NewDesc("cairn_quota_limit", "A project's quota limit (-1: unlimited), for projects with backups or limits of their own.", labels, nil),
		damaged: prometheus.NewDesc("cairn_backups_damaged",
			"A project's backups whose newest verification (backup verify, a policy's --verify-new, the console's Verify) found blocks a restore cannot write.",
			[]string{"project"}, nil)}
}

func (c *recordsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.used
	ch <- c.limit
	ch <- c.damaged
}

func (c *recordsCollector) Collect(ch chan<- prometheus.Metric) {
	all, err := c.s.idx.Backups()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.used, err)
		return
	}
	usage, err := c.s.allQuotaUsage(all)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.used, err)
		return
	}
	for project, u := range usage {
		for _, r := range []struct {
			name string
			use  QuotaUse
		}{{QuotaBackups, u.Backups}, {QuotaBackupGigabytes, u.BackupGigabytes}} {
			ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(r.use.InUse+r.use.Reserved), project, r.name)
			ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(r.use.Limit), project, r.name)
		}
	}
	damaged := map[string]float64{} // every project with committed backups
	for _, b := range all {
		if b.Status.Committed() {
			damaged[b.Project] += boolGauge(b.LastVerify.Damaged())
		}
	}
	for project, n := range damaged {
		ch <- prometheus.MustNewConstMetric(c.damaged, prometheus.GaugeValue, n, project)
	}
}

// attentionCollector exports, when scraped, what 'cairn status --all-projects' lists: how
// many things of each kind need attention, per project (maintenance and services: project
// ""). Stale locks are found without writing, by the store's clock as this gateway measured
// it (none before it has). A kind with nothing to report is one series at 0 (project ""), so
// an alert's series exists before its first concern. Scrapes within attentionTTL of the last
// share its count: the overview reads the policies and their states from the repository.
type attentionCollector struct {
	s    *Service
	desc *prometheus.Desc

	mu     sync.Mutex
	at     time.Time
	counts map[[2]string]int // kind, project
	err    error
}

// attentionTTL is how long a scrape's count of concerns serves the next scrapes.
const attentionTTL = 15 * time.Second

func newAttentionCollector(s *Service) *attentionCollector {
	return &attentionCollector{s: s, desc: prometheus.NewDesc("cairn_attention",
		"Things that need an admin's attention, by kind and project, as 'cairn status --all-projects' lists them: failed or damaged backups, volumes in error, unprotected or overdue, failed policy runs, gc and checks, services down, stale locks, quotas at 90 %.",
		[]string{"kind", "project"}, nil)}
}

func (c *attentionCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *attentionCollector) Collect(ch chan<- prometheus.Metric) {
	counts, err := c.count()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for _, kind := range concernKinds {
		n := 0
		for k, v := range counts {
			if k[0] == kind {
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(v), kind, k[1])
				n++
			}
		}
		if n == 0 {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 0, kind, "")
		}
	}
}

// count is the concerns by kind and project, from the overview of at most attentionTTL ago.
func (c *attentionCollector) count() (map[[2]string]int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < attentionTTL {
		return c.counts, c.err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = WithCaller(ctx, Caller{User: "metrics", Project: DefaultProject, Admin: true})
	o, err := c.s.Overview(ctx, OverviewOptions{All: true})
	c.at, c.counts, c.err = time.Now(), nil, err
	if err == nil {
		c.counts = map[[2]string]int{}
		for _, k := range o.Concerns {
			c.counts[[2]string{k.Kind, k.Project}]++
		}
	}
	return c.counts, c.err
}
