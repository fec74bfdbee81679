package stack

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/limit"
	"github.com/cairn-backup/cairn/repo/backend/local"
	"github.com/cairn-backup/cairn/repo/backend/readonly"
	"github.com/cairn-backup/cairn/repo/backend/retry"
	"github.com/cairn-backup/cairn/repo/backend/s3"
)

// Defaults for the zero Config fields.
const (
	// DefaultConcurrency bounds in-flight S3 requests.
	DefaultConcurrency = 8
	// DefaultRetries is how often a failed S3 call is retried.
	DefaultRetries = 4
	// DefaultOutage is how long, with the default retries, a backup's or restore's S3 calls
	// (under a backend.Patient context) go on retrying through an outage: a store's restart or
	// failover takes seconds to a minute, and a job of hours should not fail of it.
	DefaultOutage = 5 * time.Minute
	// DefaultTimeout bounds one attempt of an S3 call: long enough for a large pack over a
	// slow link, short enough that a stalled connection is noticed.
	DefaultTimeout = 2 * time.Minute
)

// Config says which repository to open and how to reach it. Fields set here (from flags or a
// config file) win over the environment: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_REGION (or AWS_DEFAULT_REGION) fill only empty fields.
type Config struct {
	// URL is a path, file://PATH or s3://BUCKET/PREFIX (see ParseURL).
	URL string

	// Endpoint is the S3 server: host:port (TLS) or http(s)://host:port.
	Endpoint string
	// Region is the S3 region.
	Region string
	// PathStyle chooses path-style or virtual-host URLs; the zero value is auto (path-style
	// except on AWS).
	PathStyle s3.Addressing
	// AccessKey and SecretKey are the S3 credentials.
	AccessKey, SecretKey string

	// Concurrency bounds in-flight operations; 0 means DefaultConcurrency for S3 and no
	// limit for a local directory.
	Concurrency int
	// Meters bound the bytes a second stored and read; nil ones leave that way unbounded.
	Meters limit.Meters
	// Retries is how often a failed S3 call is retried; 0 means DefaultRetries, negative
	// means never.
	Retries int
	// Timeout bounds one attempt of an S3 call; 0 means DefaultTimeout, negative means none.
	Timeout time.Duration

	// ReadOnly wraps the backend so that it refuses every write.
	ReadOnly bool

	// Hooks, when set, are told of S3 requests that are retried or fail for good (metrics).
	Hooks *Hooks

	// retryDelay overrides the first backoff, for tests.
	retryDelay time.Duration
}

// Hooks observe the retry layer.
type Hooks struct {
	// OnRetry is told of each request that failed transiently and is retried; OnGiveUp of
	// each that failed on every attempt. Either may be nil.
	OnRetry, OnGiveUp func(op string)
	// OnOutage, when set, is told once per request of a job that goes on retrying past its
	// attempts, waiting out an outage (retry.Options.Waiting).
	OnOutage func(op string, failing time.Duration, err error)
}

// Open opens the backend cfg.URL names, wrapped in the layers it needs. For S3 it contacts
// the server and fails with one clear error if the endpoint, credentials or bucket are wrong.
func Open(ctx context.Context, cfg Config) (backend.Backend, error) {
	u, err := ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	var b backend.Backend
	switch u.Kind {
	case Local:
		b, err = openLocal(u, cfg)
	case S3:
		b, err = openS3(ctx, u, cfg.withEnv(os.Getenv))
	default:
		return nil, fmt.Errorf("repository %q: unknown kind %q", cfg.URL, u.Kind)
	}
	if err != nil || !cfg.ReadOnly {
		return b, err
	}
	return readonly.Wrap(b), nil
}

func openLocal(u URL, cfg Config) (backend.Backend, error) {
	l, err := local.Open(u.Path)
	if err != nil {
		return nil, err
	}
	if cfg.Concurrency > 0 || cfg.Meters != (limit.Meters{}) {
		return limit.Wrap(l, cfg.Concurrency, cfg.Meters), nil
	}
	return l, nil
}

func openS3(ctx context.Context, u URL, cfg Config) (backend.Backend, error) {
	b, err := s3.New(s3.Config{
		Endpoint:   cfg.Endpoint,
		Region:     cfg.Region,
		Bucket:     u.Bucket,
		Prefix:     u.Prefix,
		Addressing: cfg.PathStyle,
		AccessKey:  cfg.AccessKey,
		SecretKey:  cfg.SecretKey,
	})
	if err != nil {
		return nil, err
	}
	concurrency := cfg.Concurrency
	if concurrency <= 0 {
		concurrency = DefaultConcurrency
	}
	retries, outage := cfg.Retries, time.Duration(0)
	switch {
	case retries == 0:
		// Only the default waits out an outage: a --retries given is a bound.
		retries, outage = DefaultRetries, DefaultOutage
	case retries < 0:
		retries = 0
	}
	timeout := cfg.Timeout
	switch {
	case timeout == 0:
		timeout = DefaultTimeout
	case timeout < 0:
		timeout = 0
	}
	ro := retry.Options{
		Attempts: retries + 1,
		Timeout:  timeout,
		MinDelay: cfg.retryDelay,
		Outage:   outage,
	}
	if h := cfg.Hooks; h != nil && h.OnOutage != nil {
		ro.Waiting = func(op, _ string, failing time.Duration, err error) { h.OnOutage(op, failing, err) }
	}
	if h := cfg.Hooks; h != nil && h.OnRetry != nil {
		ro.Notify = func(op, _ string, _ int, _ error, _ time.Duration) { h.OnRetry(op) }
	}
	if h := cfg.Hooks; h != nil && h.OnGiveUp != nil {
		ro.GaveUp = func(op, _ string, _ int, _ error) { h.OnGiveUp(op) }
	}
	// Wrap, not New: the S3 backend reads ranges into the caller's buffer, and both layers
	// keep that.
	r := retry.Wrap(limit.Wrap(b, concurrency, limit.Meters{}), ro)
	if cfg.Meters != (limit.Meters{}) {
		// Above the retries: a transfer's wait for its rate is not part of an attempt's
		// timeout (a pack's wait behind seven others at a low rate outlasts it).
		r = limit.Wrap(r, 0, cfg.Meters)
	}
	// The check is retried like any request: a server that answers 503 (or is restarting)
	// when cairn starts is no reason to fail a backup.
	if err := retry.New(b, ro).Do(ctx, "check", u.Bucket, b.Check); err != nil {
		b.Close()
		return nil, err
	}
	return r, nil
}

// withEnv fills the empty S3 fields from the AWS_* variables that getenv returns.
func (c Config) withEnv(getenv func(string) string) Config {
	fill := func(field *string, names ...string) {
		for _, n := range names {
			if *field == "" {
				*field = getenv(n)
			}
		}
	}
	fill(&c.Endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
	fill(&c.AccessKey, "AWS_ACCESS_KEY_ID")
	fill(&c.SecretKey, "AWS_SECRET_ACCESS_KEY")
	fill(&c.Region, "AWS_REGION", "AWS_DEFAULT_REGION")
	return c
}
