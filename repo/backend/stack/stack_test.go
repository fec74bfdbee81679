package stack

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
	"github.com/cairn-backup/cairn/tests/testutil"
)

func open(t *testing.T, cfg Config) backend.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func s3Config(srv *testutil.S3Server, endpoint, prefix string) Config {
	return Config{
		URL:        "s3://" + srv.Bucket + "/" + prefix,
		Endpoint:   endpoint,
		AccessKey:  srv.AccessKey,
		SecretKey:  srv.SecretKey,
		retryDelay: 10 * time.Millisecond,
	}
}

func TestLocal(t *testing.T) {
	for _, concurrency := range []int{0, 2} {
		t.Run(fmt.Sprint("concurrency ", concurrency), func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T) backend.Backend {
				return open(t, Config{URL: "file://" + filepath.Join(t.TempDir(), "repo"), Concurrency: concurrency})
			})
		})
	}
}

func TestS3(t *testing.T) {
	srv := testutil.StartS3(t)
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := open(t, s3Config(srv, srv.Endpoint, fmt.Sprintf("stack%d", n.Add(1))))
		if want := fmt.Sprintf("s3://%s/stack%d", srv.Bucket, n.Load()); b.Location() != want {
			t.Fatalf("Location() = %q, want %q", b.Location(), want)
		}
		return b
	})
}

// TestS3Env opens with the endpoint and credentials from the environment only.
func TestS3Env(t *testing.T) {
	srv := testutil.StartS3(t)
	t.Setenv("AWS_ENDPOINT_URL", srv.Endpoint)
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	b := open(t, Config{URL: "s3://" + srv.Bucket + "/env"})
	if err := b.Put(context.Background(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	// A flag wins over the environment: a wrong secret given explicitly is used.
	_, err := Open(context.Background(), Config{URL: "s3://" + srv.Bucket + "/env", SecretKey: "wrong-secret"})
	if !errors.Is(err, backend.ErrPermission) {
		t.Fatalf("Open with a wrong explicit secret = %v, want ErrPermission", err)
	}
}

// TestS3Retries puts a fault proxy between the stack and a real versitygw.
func TestS3Retries(t *testing.T) {
	srv := testutil.StartS3(t)
	tests := []struct {
		name    string
		retries int
		timeout time.Duration
		fault   func(p *testutil.FaultProxy)
		wantErr error
		within  time.Duration
	}{
		{"503 three times then pass", 4, time.Minute,
			func(p *testutil.FaultProxy) { p.Fail503(3) }, nil, 10 * time.Second},
		{"reset always", 2, time.Minute,
			func(p *testutil.FaultProxy) { p.SetMode(testutil.ProxyReset, 0) }, backend.ErrUnavailable, 10 * time.Second},
		{"stall beyond the timeout", 1, 300 * time.Millisecond,
			func(p *testutil.FaultProxy) { p.SetMode(testutil.ProxyStall, time.Minute) }, backend.ErrUnavailable, 5 * time.Second},
		{"503 more often than retries", 2, time.Minute,
			func(p *testutil.FaultProxy) { p.Fail503(100) }, backend.ErrUnavailable, 10 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := testutil.StartFaultProxy(t, srv.Endpoint)
			cfg := s3Config(srv, p.Endpoint, "retries")
			cfg.Retries, cfg.Timeout = tt.retries, tt.timeout
			b := open(t, cfg)
			before := p.Requests()
			tt.fault(p)
			start := time.Now()
			err := b.Put(context.Background(), "k", []byte("value"))
			t.Logf("Put: %v", err)
			if d := time.Since(start); d > tt.within {
				t.Errorf("Put took %v, want at most %v", d, tt.within)
			}
			if tt.wantErr == nil && err != nil {
				t.Fatalf("Put = %v, want success", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put = %v, want %v", err, tt.wantErr)
			}
			min := tt.retries + 1 // every attempt reached the proxy
			if tt.wantErr == nil {
				min = 4 // three 503s and the one that passed
			}
			if got := p.Requests() - before; got < min {
				t.Errorf("proxy saw %d requests, want at least %d", got, min)
			}
			if tt.wantErr == nil {
				p.SetMode(testutil.ProxyPass, 0)
				if fi, err := b.Stat(context.Background(), "k"); err != nil || fi.Size != 5 {
					t.Fatalf("Stat after the retried Put = %+v, %v", fi, err)
				}
			}
		})
	}
}

// TestS3ServerRestart stops the server and starts it again while a Put is retrying.
func TestS3ServerRestart(t *testing.T) {
	srv := testutil.StartS3(t)
	cfg := s3Config(srv, srv.Endpoint, "restart")
	cfg.Retries, cfg.retryDelay = 8, 100*time.Millisecond
	b := open(t, cfg)
	srv.Stop()
	restarted := make(chan struct{})
	time.AfterFunc(300*time.Millisecond, func() { srv.Start(); close(restarted) })
	t.Cleanup(func() { <-restarted })
	if err := b.Put(context.Background(), "k", []byte("value")); err != nil {
		t.Fatalf("Put across a server restart: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	srv := testutil.StartS3(t)
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"bad url", Config{URL: "sftp://x"}, nil},
		{"wrong secret", Config{URL: "s3://" + srv.Bucket, Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: "nope"}, backend.ErrPermission},
		{"missing bucket", Config{URL: "s3://nobucket", Endpoint: srv.Endpoint, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}, backend.ErrNotFound},
		{"refused", Config{URL: "s3://" + srv.Bucket, Endpoint: "http://127.0.0.1:1", AccessKey: "a", SecretKey: "b"}, backend.ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Open(context.Background(), tt.cfg)
			t.Logf("Open: %v", err)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Open = %v, want %v", err, tt.want)
			}
		})
	}
}

// TestOpenRetries503 proves the connection check at Open is retried: a server that answers
// 503 a few times when cairn starts does not fail the command, one that keeps answering 503
// does, after the retries.
func TestOpenRetries503(t *testing.T) {
	srv := testutil.StartS3(t)
	for _, tt := range []struct {
		fails   int
		wantErr error
	}{{3, nil}, {100, backend.ErrUnavailable}} {
		t.Run(fmt.Sprint(tt.fails, " 503s"), func(t *testing.T) {
			p := testutil.StartFaultProxy(t, srv.Endpoint)
			p.Fail503(tt.fails)
			cfg := s3Config(srv, p.Endpoint, "open503")
			cfg.Retries = 4
			b, err := Open(context.Background(), cfg)
			if err == nil {
				b.Close()
			}
			if !errors.Is(err, tt.wantErr) && !(tt.wantErr == nil && err == nil) {
				t.Fatalf("Open after %d 503s = %v, want %v", tt.fails, err, tt.wantErr)
			}
			if got := p.Requests(); got < min(tt.fails, 5) {
				t.Errorf("proxy saw %d requests, want at least %d", got, min(tt.fails, 5))
			}
		})
	}
}
