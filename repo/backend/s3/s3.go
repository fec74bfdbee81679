package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"sync/atomic"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// Backend is a backend.Backend over one bucket and prefix.
type Backend struct {
	client    *minio.Client
	transport *http.Transport
	bucket    string
	prefix    string // without leading or trailing slash
	endpoint  string // for messages: scheme://host
	// retention is what Put applies (nil: nothing), set once before the repository writes.
	retention atomic.Pointer[backend.Retention]
}

var (
	_ backend.Backend     = (*Backend)(nil)
	_ backend.RangeReader = (*Backend)(nil)
	_ backend.Creator     = (*Backend)(nil)
)

// Open connects to the bucket and checks it (see Check), so a wrong endpoint, refused
// credentials or a missing bucket fail here with one clear error rather than at the first Put.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	b, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if err := b.Check(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// New builds the client without contacting the server.
func New(cfg Config) (*Backend, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket given")
	}
	host, secure, err := cfg.endpoint()
	if err != nil {
		return nil, err
	}
	tr, err := minio.DefaultTransport(secure)
	if err != nil {
		return nil, fmt.Errorf("s3 transport: %v", err)
	}
	tr.DialContext = (&net.Dialer{
		Timeout:   orDefault(cfg.DialTimeout, DefaultDialTimeout),
		KeepAlive: DefaultDialTimeout,
	}).DialContext
	tr.TLSHandshakeTimeout = orDefault(cfg.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
	tr.ResponseHeaderTimeout = orDefault(cfg.ResponseHeaderTimeout, DefaultResponseHeaderTimeout)

	lookup := minio.BucketLookupPath
	switch cfg.Addressing {
	case AddressVirtualHost:
		lookup = minio.BucketLookupDNS
	case AddressAuto:
		if strings.HasSuffix(strings.Split(host, ":")[0], ".amazonaws.com") {
			lookup = minio.BucketLookupDNS
		}
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       secure,
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   1, // package retry owns retrying, with the caller's budget
	})
	if err != nil {
		return nil, fmt.Errorf("s3 endpoint %s: %v", host, err)
	}
	scheme := "https"
	if !secure {
		scheme = "http"
	}
	return &Backend{
		client:    client,
		transport: tr,
		bucket:    cfg.Bucket,
		prefix:    strings.Trim(cfg.Prefix, "/"),
		endpoint:  scheme + "://" + host,
	}, nil
}

// Check verifies that the endpoint answers, the credentials are accepted and the bucket
// exists. Its error names the endpoint and what failed.
func (b *Backend) Check(ctx context.Context) error {
	what := fmt.Sprintf("s3 endpoint %s, bucket %s", b.endpoint, b.bucket)
	// minio-go checks the name before each request with a plain error, which would read as
	// a transport failure: retried, and reported as the backend unavailable.
	if err := s3utils.CheckValidBucketName(b.bucket); err != nil {
		return &badBucket{fmt.Sprintf("%s: %s; check the bucket in the repository URL", what, strings.ToLower(err.Error()))}
	}
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return translate(ctx, what, err)
	}
	if !ok {
		return &missingBucket{what: what}
	}
	return nil
}

// badBucket is Check's error for a bucket name S3 does not allow: backend.ErrBadLocation.
type badBucket struct{ msg string }

func (e *badBucket) Error() string        { return e.msg }
func (e *badBucket) Is(target error) bool { return target == backend.ErrBadLocation }

// missingBucket is Check's error for a bucket that does not exist: it matches
// backend.ErrNotFound without saying "object not found", which would mislead.
type missingBucket struct{ what string }

func (e *missingBucket) Error() string {
	return e.what + ": the bucket does not exist; create it first"
}
func (e *missingBucket) Is(target error) bool { return target == backend.ErrNotFound }

// Location returns s3://bucket/prefix.
func (b *Backend) Location() string {
	return "s3://" + path.Join(b.bucket, b.prefix)
}

// Close drops idle connections.
func (b *Backend) Close() error {
	b.transport.CloseIdleConnections()
	return nil
}

// Get streams the whole object with one GET. The response is awaited here, so a missing
// object is ErrNotFound from Get, not from the first Read.
func (b *Backend) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	what := "s3 get " + key
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	body, _, _, err := b.core().GetObject(ctx, b.bucket, b.name(key), minio.GetObjectOptions{})
	if err != nil {
		return nil, translate(ctx, what, err)
	}
	return &reader{body: body, ctx: ctx, what: what}, nil
}

// GetRange reads length bytes at offset with one ranged GET.
func (b *Backend) GetRange(ctx context.Context, key string, offset, length int64) ([]byte, error) {
	return backend.GetRangeInto(ctx, b, key, offset, length)
}

// ReadRange reads len(p) bytes at offset into p with one ranged GET (backend.RangeReader), so
// a restore reads into its own reused buffer instead of a fresh one per range.
func (b *Backend) ReadRange(ctx context.Context, key string, offset int64, p []byte) error {
	length := int64(len(p))
	what := fmt.Sprintf("s3 get %s range [%d,+%d)", key, offset, length)
	if offset < 0 {
		return fmt.Errorf("%s: negative offset", what)
	}
	if length == 0 {
		fi, err := b.Stat(ctx, key)
		if err != nil {
			return err
		}
		if offset > fi.Size {
			return fmt.Errorf("%s: %w (size %d)", what, errRange, fi.Size)
		}
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	var opts minio.GetObjectOptions
	if err := opts.SetRange(offset, offset+length-1); err != nil {
		return fmt.Errorf("%s: %v", what, err)
	}
	body, info, hdr, err := b.core().GetObject(ctx, b.bucket, b.name(key), opts)
	if err != nil {
		return translate(ctx, what, err)
	}
	defer body.Close()
	// The server clips a range that starts inside the object but ends past it.
	if info.Size >= 0 && info.Size < length {
		return fmt.Errorf("%s: %w", what, errRange)
	}
	if err := rangeServed(hdr, info.Size, offset, length); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := io.ReadFull(body, p); err != nil {
		return translate(ctx, what, err)
	}
	return nil
}

// rangeServed checks that the answer to a ranged GET (size bytes, -1 when not said) holds the
// range asked for. A server or proxy that ignores Range answers 200 with the whole object,
// which minio-go accepts: read into p, its first bytes would stand for the range, every blob
// in it would fail to open, and a reader that reads a blob twice before calling it damaged
// would record good data as damaged [TestIgnoredRangeIsNotData].
//
// The error is backend.ErrUnavailable: the stored data is not at fault, so it must not read
// as damage (ErrCorrupt, ErrRange) or loss (ErrNotFound), and check, restore and the heal path
// stop on it as on an outage, recording nothing. The retry wrapper tries again, which mends a
// proxy that misbehaved once and costs a few requests against one that always does.
func rangeServed(h http.Header, size, offset, length int64) error {
	var got string
	switch cr := h.Get("Content-Range"); {
	case size > length:
		got = fmt.Sprintf("%d bytes", size)
	case cr != "" && !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", offset)):
		got = fmt.Sprintf("the range %q", cr)
	case cr == "" && (size < 0 || offset != 0):
		// A 206 always names its range; without one the body is the whole object, which
		// is the range only when that starts at 0 and is as long.
		got = "no Content-Range"
	default:
		return nil
	}
	return fmt.Errorf("%w (the server answered with %s, not the range asked for: a proxy or server in the way ignores Range; point the repository URL at the S3 endpoint itself)", backend.ErrUnavailable, got)
}

// Put uploads data in one PUT with its size known; S3 makes it visible whole or not at all.
// With a retention set (SetRetention) the new version is locked.
func (b *Backend) Put(ctx context.Context, key string, data []byte) error {
	what := "s3 put " + key
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	_, err := b.client.PutObject(ctx, b.bucket, b.name(key), bytes.NewReader(data), int64(len(data)), b.putOptions(key))
	return translate(ctx, what, err)
}

// Create is Put with If-None-Match: * (backend.Creator): the server stores the object only
// if the key has none (in a versioned bucket: no current version), and of writers racing
// for it one wins; the others get 412 Precondition Failed, which is backend.ErrExists. A 409
// ConditionalRequestConflict (AWS, while a racing write is in progress) is worth a retry.
func (b *Backend) Create(ctx context.Context, key string, data []byte) error {
	what := "s3 create " + key
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	o := b.putOptions(key)
	o.SetMatchETagExcept("*")
	_, err := b.client.PutObject(ctx, b.bucket, b.name(key), bytes.NewReader(data), int64(len(data)), o)
	switch resp := minio.ToErrorResponse(err); {
	case err == nil:
		return nil
	case resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed":
		return fmt.Errorf("%s: %w", what, backend.ErrExists)
	case resp.Code == "ConditionalRequestConflict":
		return fmt.Errorf("%s: %w (a racing write of the same key was in progress)", what, backend.ErrUnavailable)
	}
	return translate(ctx, what, err)
}

// Delete removes the object; S3 does not report a missing one, and neither do we. In a
// versioned bucket it only writes a delete marker: see DeleteVersion.
func (b *Backend) Delete(ctx context.Context, key string) error {
	what := "s3 delete " + key
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	err := b.client.RemoveObject(ctx, b.bucket, b.name(key), minio.RemoveObjectOptions{})
	if minio.ToErrorResponse(err).Code == "NoSuchKey" {
		return nil
	}
	return translate(ctx, what, err)
}

// Stat returns the object's size with a HEAD request.
func (b *Backend) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	what := "s3 stat " + key
	if err := ctx.Err(); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("%s: %w", what, err)
	}
	info, err := b.client.StatObject(ctx, b.bucket, b.name(key), minio.StatObjectOptions{})
	if err != nil {
		return backend.ObjectInfo{}, b.translateHead(ctx, what, err)
	}
	return backend.ObjectInfo{Key: key, Size: info.Size, ModTime: info.LastModified}, nil
}

// translateHead is translate for a HEAD of an object. Its 404 has no body to say whether the
// object or the bucket is missing (minio-go then assumes NoSuchKey), so the bucket is asked
// about once more: a removed bucket is not a missing object
// [TestBucketGoneIsNotAMissingObject].
func (b *Backend) translateHead(ctx context.Context, what string, err error) error {
	err = translate(ctx, what, err)
	if !errors.Is(err, backend.ErrNotFound) {
		return err
	}
	ok, berr := b.client.BucketExists(ctx, b.bucket)
	if berr != nil {
		return translate(ctx, what, berr)
	}
	if !ok {
		detail, _ := classifyResponse(minio.ErrorResponse{Code: "NoSuchBucket", StatusCode: http.StatusNotFound, BucketName: b.bucket})
		return fmt.Errorf("%s: %s", what, detail)
	}
	return err
}

// List lists recursively under prefix; fn runs on the caller's goroutine.
func (b *Backend) List(ctx context.Context, prefix string, fn func(backend.ObjectInfo) error) error {
	return b.ListAfter(ctx, prefix, "", fn)
}

// ListKeys is List: S3's listing carries sizes and times at no extra cost.
func (b *Backend) ListKeys(ctx context.Context, prefix string, fn func(key string) error) error {
	return b.List(ctx, prefix, func(oi backend.ObjectInfo) error { return fn(oi.Key) })
}

// ListAfter lists recursively under prefix, starting after the key after (S3's StartAfter).
func (b *Backend) ListAfter(ctx context.Context, prefix, after string, fn func(backend.ObjectInfo) error) error {
	what := fmt.Sprintf("s3 list %q", prefix)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()     // stops minio's lister goroutine when fn fails
	base := b.name("") // "" or "prefix/"
	full := base + prefix
	o := minio.ListObjectsOptions{Prefix: full, Recursive: true}
	if after != "" {
		o.StartAfter = base + after
	}
	for obj := range b.client.ListObjects(lctx, b.bucket, o) {
		if obj.Err != nil {
			return translate(ctx, what, obj.Err)
		}
		key := strings.TrimPrefix(obj.Key, base)
		if strings.HasSuffix(key, "/") {
			continue // a directory marker, not an object
		}
		if key <= after {
			continue // a store that ignores StartAfter
		}
		if err := fn(backend.ObjectInfo{Key: key, Size: obj.Size, ModTime: obj.LastModified}); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// name maps a key to its object name under the prefix; name("") is the prefix itself, with
// its trailing slash.
func (b *Backend) name(key string) string {
	if b.prefix == "" {
		return key
	}
	return b.prefix + "/" + key
}

// core gives the low-level calls: one GET per Get, where minio.Object would add a HEAD and
// an If-Match that fails when an overwrite lands in between.
func (b *Backend) core() minio.Core { return minio.Core{Client: b.client} }

// reader translates errors met while streaming a Get.
type reader struct {
	body io.ReadCloser
	ctx  context.Context
	what string
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if err != nil && err != io.EOF {
		err = translate(r.ctx, r.what, err)
	}
	return n, err
}

func (r *reader) Close() error { return r.body.Close() }
