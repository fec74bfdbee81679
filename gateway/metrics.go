package gateway

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
}

func newMetrics(s *Service) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
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
	m.reg.MustRegister(m.jobs, m.jobsRunning, m.jobsQueued, m.jobSeconds, m.bytesBackup, m.bytesStored, m.bytesRest,
		cacheHits, cacheMisses, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Metrics returns the registry to serve at /metrics.
func (s *Service) Metrics() *prometheus.Registry { return s.metrics.reg }
