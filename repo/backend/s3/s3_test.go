package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
	"github.com/cairn-backup/cairn/tests/testutil"
)

func TestBackend(t *testing.T) {
	srv := testutil.StartS3(t)
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := open(t, srv, fmt.Sprintf("repo%d", n.Add(1)))
		t.Cleanup(func() { b.Close() })
		return b
	})
}

func TestBackendNoPrefix(t *testing.T) {
	srv := testutil.StartS3(t)
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		bucket := fmt.Sprintf("bucket%d", n.Add(1))
		srv.CreateBucket(bucket)
		b, err := Open(context.Background(), Config{
			Endpoint: srv.Endpoint, Bucket: bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	})
}

// TestBucketGoneIsNotAMissingObject: a read in a bucket that was removed after the backend
// opened says so, and is not ErrNotFound. A missing object means a deleted backup, a pack
// check reports missing, a lock broken as stale; a missing bucket means none of that, and
// must stop the caller instead.
func TestBucketGoneIsNotAMissingObject(t *testing.T) {
	srv := testutil.StartS3(t)
	srv.CreateBucket("vanishing")
	ctx := context.Background()
	b, err := Open(ctx, Config{Endpoint: srv.Endpoint, Bucket: "vanishing", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Get(ctx, "config"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("Get of a missing object: %v, want ErrNotFound", err)
	}
	if err := srv.Client().RemoveBucket(ctx, "vanishing"); err != nil {
		t.Fatal(err)
	}
	rc, err := b.Get(ctx, "config")
	if err == nil {
		rc.Close()
		t.Fatal("Get in a removed bucket succeeded")
	}
	if errors.Is(err, backend.ErrNotFound) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Get in a removed bucket: %v; want an error that names the bucket, not ErrNotFound", err)
	}
	if err := b.List(ctx, "", func(backend.ObjectInfo) error { return nil }); err == nil || errors.Is(err, backend.ErrNotFound) {
		t.Errorf("List in a removed bucket: %v; want an error, not ErrNotFound", err)
	}
	// A HEAD's 404 has no body to say which is missing: Stat (a lock's check that its object
	// is there, a tombstone's lookup, a pack's) and RetainUntil must not guess the object.
	if _, err := b.Stat(ctx, "config"); err == nil || errors.Is(err, backend.ErrNotFound) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("Stat in a removed bucket: %v; want an error that names the bucket, not ErrNotFound", err)
	}
	if _, err := b.RetainUntil(ctx, "config", ""); err == nil || errors.Is(err, backend.ErrNotFound) {
		t.Errorf("RetainUntil in a removed bucket: %v; want an error, not ErrNotFound", err)
	}
}

func open(t *testing.T, srv *testutil.S3Server, prefix string) *Backend {
	t.Helper()
	b, err := Open(context.Background(), Config{
		Endpoint:  srv.Endpoint,
		Bucket:    srv.Bucket,
		Prefix:    prefix,
		AccessKey: srv.AccessKey,
		SecretKey: srv.SecretKey,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenErrors checks that each way of getting the connection wrong gives its sentinel and
// a message naming the endpoint and the cause, without the secret.
func TestOpenErrors(t *testing.T) {
	srv := testutil.StartS3(t)
	host := strings.TrimPrefix(srv.Endpoint, "http://")
	good := Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
	tests := []struct {
		name     string
		change   func(c *Config)
		sentinel error
		want     string
	}{
		{"wrong secret", func(c *Config) { c.SecretKey = "wrong-secret-key" }, backend.ErrPermission, "SignatureDoesNotMatch"},
		{"unknown access key", func(c *Config) { c.AccessKey = "nobody" }, backend.ErrPermission, "access"},
		{"missing bucket", func(c *Config) { c.Bucket = "no-such-bucket" }, backend.ErrNotFound, "does not exist"},
		{"refused", func(c *Config) { c.Endpoint = "http://127.0.0.1:1" }, backend.ErrUnavailable, "connection refused"},
		{"tls to plain http", func(c *Config) { c.Endpoint = "https://" + host }, backend.ErrUnavailable, "tls"},
		{"no scheme means tls", func(c *Config) { c.Endpoint = host }, backend.ErrUnavailable, "tls"},
		// The transport's own deadline, not the caller's: worth another attempt. (A process
		// paused past its dial's deadline, as the two-gateway torture test does, meets it.)
		{"dial timeout", func(c *Config) { c.DialTimeout = time.Nanosecond }, backend.ErrUnavailable, "timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			b, err := Open(ctx, cfg)
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("Open = %v, want %v", err, tt.sentinel)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) || !strings.Contains(msg, "127.0.0.1") {
				t.Errorf("Open = %q, want it to name the endpoint and contain %q", msg, tt.want)
			}
			if strings.Contains(msg, cfg.SecretKey) {
				t.Errorf("error %q contains the secret key", msg)
			}
		})
	}
}

// TestInvalidBucketName: a bucket name S3 cannot have is the user's mistake, said at once,
// not a server that is down (which the stack retries for seconds and reports as
// unavailable).
func TestInvalidBucketName(t *testing.T) {
	srv := testutil.StartS3(t)
	for _, bucket := range []string{"ab", "Bad_Bucket", "bucket..name"} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		b, err := Open(ctx, Config{Endpoint: srv.Endpoint, Bucket: bucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
		cancel()
		if err == nil {
			b.Close()
			t.Errorf("Open of bucket %q succeeded", bucket)
			continue
		}
		if errors.Is(err, backend.ErrUnavailable) || !errors.Is(err, backend.ErrBadLocation) || !strings.Contains(err.Error(), bucket) {
			t.Errorf("Open of bucket %q = %v; want ErrBadLocation naming the bucket, not ErrUnavailable", bucket, err)
		}
	}
}

func TestServerDown(t *testing.T) {
	srv := testutil.StartS3(t)
	b := open(t, srv, "down")
	defer b.Close()
	ctx := context.Background()
	if err := b.Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if _, err := b.Stat(ctx, "k"); !errors.Is(err, backend.ErrUnavailable) {
		t.Fatalf("Stat with the server down = %v, want ErrUnavailable", err)
	}
	srv.Start()
	if fi, err := b.Stat(ctx, "k"); err != nil || fi.Size != 1 {
		t.Fatalf("Stat after restart = %+v, %v", fi, err)
	}
}

func TestLocation(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string
	}{
		{Config{Endpoint: "http://127.0.0.1:9000", Bucket: "b", Prefix: "/repo/x/", SecretKey: "s3cr3t"}, "s3://b/repo/x"},
		{Config{Endpoint: "127.0.0.1:9000", Bucket: "b"}, "s3://b"},
	}
	for _, tt := range tests {
		b, err := New(tt.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := b.Location(); got != tt.want {
			t.Errorf("Location() = %q, want %q", got, tt.want)
		}
	}
}

func TestEndpoint(t *testing.T) {
	tests := []struct {
		endpoint string
		host     string
		secure   bool
		wantErr  bool
	}{
		{"", "s3.amazonaws.com", true, false},
		{"127.0.0.1:9000", "127.0.0.1:9000", true, false},
		{"http://127.0.0.1:9000", "127.0.0.1:9000", false, false},
		{"https://s3.example.com/", "s3.example.com", true, false},
		{"ftp://x", "", false, true},
		{"http://127.0.0.1:9000/path", "", false, true},
		{"http://user:pass@127.0.0.1:9000", "", false, true},
		// Credentials written into the endpoint never reach a request or an error.
		{"user:pass@127.0.0.1:9000", "", false, true},
		{"http://user:pass@127.0.0.1:9000 x", "", false, true},
		{"https://user:pass@[::1", "", false, true},
	}
	for _, tt := range tests {
		host, secure, err := Config{Endpoint: tt.endpoint}.endpoint()
		if (err != nil) != tt.wantErr || host != tt.host || secure != tt.secure {
			t.Errorf("endpoint(%q) = %q, %v, %v; want %q, %v, error %v", tt.endpoint, host, secure, err, tt.host, tt.secure, tt.wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "pass") {
			t.Errorf("endpoint(%q) error %q leaks the password", tt.endpoint, err)
		}
	}
}

// A server with no room left (versitygw answers 507 InsufficientStorage) is not unavailable:
// the error says to free space on it and is not retried. Before, it was ErrUnavailable, so the
// retry wrapper tried five times and the user read "backend unavailable".
func TestFullServerSaysSo(t *testing.T) {
	dir := testutil.MountTmpfs(t, 16<<20)
	srv := testutil.StartS3(t, testutil.WithDataDir(dir))
	b := open(t, srv, "full")
	defer b.Close()
	testutil.FillFS(t, dir, 0)
	err := b.Put(context.Background(), "packs/00/big", make([]byte, 2<<20))
	if err == nil || errors.Is(err, backend.ErrUnavailable) || !strings.Contains(err.Error(), "no room left") {
		t.Fatalf("Put to a full server: %v; want an error that says it has no room, not ErrUnavailable", err)
	}
}

// TestIgnoredRangeIsNotData: a proxy in front of the server that ignores Range (here: one that
// turns each 206 into a 200 carrying a body as long as the whole object) makes ReadRange fail
// as an outage, not as damage or loss. Before, minio-go accepted the 200, the whole object was
// at least as long as the range, and ReadRange filled p from the object's start: every blob
// read through such a proxy failed to open, and the repository marked good data damaged.
func TestIgnoredRangeIsNotData(t *testing.T) {
	srv := testutil.StartS3(t)
	direct := open(t, srv, "ranges")
	defer direct.Close()
	ctx := context.Background()
	data := make([]byte, 64<<10)
	for i := range data {
		data[i] = byte(i*7 + i>>8)
	}
	if err := direct.Put(ctx, "packs/00/p", data); err != nil {
		t.Fatal(err)
	}

	var ignored atomic.Int64
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewServer(&httputil.ReverseProxy{
		// Forwarded as it came, Host included: the request is signed for the proxy's address,
		// its Range header too.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode != http.StatusPartialContent {
				return nil
			}
			var first, last, total int64
			if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &first, &last, &total); err != nil {
				return err
			}
			part, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			// The range's bytes at their offset in zeros: the length a server that ignores
			// Range sends, and right bytes where a reader from offset 0 would find them.
			whole := make([]byte, total)
			copy(whole[first:], part)
			resp.Body = io.NopCloser(bytes.NewReader(whole))
			resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
			resp.ContentLength = total
			resp.Header.Del("Content-Range")
			resp.Header.Set("Content-Length", strconv.FormatInt(total, 10))
			ignored.Add(1)
			return nil
		},
	})
	defer proxy.Close()
	through, err := Open(ctx, Config{Endpoint: proxy.URL, Bucket: srv.Bucket, Prefix: "ranges", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer through.Close()

	for _, r := range []struct{ offset, length int64 }{{4096, 512}, {0, 512}, {60 << 10, 4 << 10}} {
		want := data[r.offset : r.offset+r.length]
		p := make([]byte, r.length)
		if err := direct.ReadRange(ctx, "packs/00/p", r.offset, p); err != nil || !bytes.Equal(p, want) {
			t.Fatalf("direct ReadRange [%d,+%d): %v, or wrong bytes", r.offset, r.length, err)
		}
		before := ignored.Load()
		err := through.ReadRange(ctx, "packs/00/p", r.offset, p)
		if ignored.Load() == before {
			t.Fatalf("ReadRange [%d,+%d): the proxy passed the answer on unchanged", r.offset, r.length)
		}
		if err == nil {
			t.Fatalf("ReadRange [%d,+%d) through a proxy that ignores Range succeeded (bytes right: %v)", r.offset, r.length, bytes.Equal(p, want))
		}
		if errors.Is(err, backend.ErrNotFound) || errors.Is(err, backend.ErrRange) || !errors.Is(err, backend.ErrUnavailable) ||
			!strings.Contains(err.Error(), "ignores Range") {
			t.Errorf("ReadRange [%d,+%d) through a proxy that ignores Range: %v; want ErrUnavailable that says the range was ignored, not ErrNotFound or ErrRange", r.offset, r.length, err)
		}
	}
	// A read of the whole object as one range is what a 200 holds: still served.
	p := make([]byte, len(data))
	if err := through.ReadRange(ctx, "packs/00/p", 0, p); err != nil || !bytes.Equal(p, data) {
		t.Fatalf("ReadRange of the whole object through the proxy: %v, or wrong bytes", err)
	}
}
