package s3

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/minio/minio-go/v7"
)

var _ backend.Versioned = (*Backend)(nil)

// ObjectLock reports whether the bucket has an object lock configuration (and so keeps
// versions and can lock them).
func (b *Backend) ObjectLock(ctx context.Context) (bool, error) {
	what := fmt.Sprintf("s3 bucket %s: object lock configuration", b.bucket)
	enabled, _, _, _, err := b.client.GetObjectLockConfig(ctx, b.bucket)
	if code := minio.ToErrorResponse(err).Code; code == "ObjectLockConfigurationNotFoundError" || code == "NoSuchObjectLockConfiguration" {
		return false, nil
	}
	if err != nil {
		return false, translate(ctx, what, err)
	}
	return enabled == "Enabled", nil
}

// KeepsVersions reports whether the bucket's versioning is enabled: a Delete then only hides
// the object behind a delete marker, and its data stays until a version is removed.
func (b *Backend) KeepsVersions(ctx context.Context) (bool, error) {
	cfg, err := b.client.GetBucketVersioning(ctx, b.bucket)
	if err != nil {
		return false, translate(ctx, fmt.Sprintf("s3 bucket %s: versioning", b.bucket), err)
	}
	return cfg.Enabled(), nil
}

// SetRetention makes every later Put lock its object, except keys under r.Exempt.
func (b *Backend) SetRetention(r *backend.Retention) { b.retention.Store(r) }

// putOptions are the options of a Put of key: with a retention, the object lock mode and a
// retain-until date of now plus the period, and a Content-MD5 (which AWS requires of a Put
// that locks).
func (b *Backend) putOptions(key string) minio.PutObjectOptions {
	o := minio.PutObjectOptions{ContentType: "application/octet-stream", DisableMultipart: true}
	if r := b.retention.Load(); r.Locks(key) {
		o.Mode = lockMode(r.Mode)
		o.RetainUntilDate = time.Now().Add(r.Period).UTC()
		o.SendContentMd5 = true
	}
	return o
}

func lockMode(m backend.LockMode) minio.RetentionMode {
	if m == backend.Compliance {
		return minio.Compliance
	}
	return minio.Governance
}

// ListVersions lists every version and delete marker under prefix (ListObjectVersions).
func (b *Backend) ListVersions(ctx context.Context, prefix string, fn func(backend.Version) error) error {
	what := fmt.Sprintf("s3 list versions %q", prefix)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base := b.name("")
	for obj := range b.client.ListObjects(lctx, b.bucket, minio.ListObjectsOptions{Prefix: base + prefix, Recursive: true, WithVersions: true}) {
		if obj.Err != nil {
			return translate(ctx, what, obj.Err)
		}
		key := strings.TrimPrefix(obj.Key, base)
		if strings.HasSuffix(key, "/") {
			continue
		}
		v := backend.Version{Key: key, ID: obj.VersionID, Latest: obj.IsLatest, DeleteMarker: obj.IsDeleteMarker,
			Size: obj.Size, ModTime: obj.LastModified}
		if err := fn(v); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// RetainUntil reads a version's retain-until date from a HEAD's x-amz-object-lock headers,
// which every S3 store returns with the object, where GetObjectRetention's body is not read
// alike by all (versitygw 1.8 answers it with an <ObjectLockRetention> element that minio-go
// does not accept).
func (b *Backend) RetainUntil(ctx context.Context, key, version string) (time.Time, error) {
	what := fmt.Sprintf("s3 stat %s version %s", key, version)
	if err := ctx.Err(); err != nil {
		return time.Time{}, fmt.Errorf("%s: %w", what, err)
	}
	info, err := b.client.StatObject(ctx, b.bucket, b.name(key), minio.StatObjectOptions{VersionID: version})
	if err != nil {
		return time.Time{}, b.translateHead(ctx, what, err)
	}
	s := info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date")
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%s: retain-until date %q: %v", what, s, err)
	}
	return t, nil
}

// Retain sets a version's retain-until date (PutObjectRetention), in the retention's mode.
func (b *Backend) Retain(ctx context.Context, key, version string, until time.Time) error {
	what := fmt.Sprintf("s3 retain %s version %s until %s", key, version, until.UTC().Format(time.RFC3339))
	r := b.retention.Load()
	if r == nil {
		return fmt.Errorf("%s: no retention set", what)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	mode := lockMode(r.Mode)
	until = until.UTC()
	err := b.client.PutObjectRetention(ctx, b.bucket, b.name(key), minio.PutObjectRetentionOptions{
		Mode: &mode, RetainUntilDate: &until, VersionID: version})
	return translateLocked(ctx, what, err)
}

// DeleteVersion removes one version or delete marker for good.
func (b *Backend) DeleteVersion(ctx context.Context, key, version string) error {
	what := fmt.Sprintf("s3 delete %s version %s", key, version)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	err := b.client.RemoveObject(ctx, b.bucket, b.name(key), minio.RemoveObjectOptions{VersionID: version})
	if code := minio.ToErrorResponse(err).Code; code == "NoSuchKey" || code == "NoSuchVersion" {
		return nil
	}
	return translateLocked(ctx, what, err)
}

// translateLocked is translate, except that a refusal because of an object lock (AWS and
// versitygw answer AccessDenied, and say why in the message) is ErrRetained, not a problem
// with the credentials.
func translateLocked(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	resp := minio.ToErrorResponse(err)
	locked := resp.Code == "AccessDenied" && strings.Contains(strings.ToLower(resp.Message), "object lock")
	if locked || resp.Code == "ObjectLocked" {
		return fmt.Errorf("%s: %w (%s)", what, backend.ErrRetained, resp.Message)
	}
	return translate(ctx, what, err)
}
