// Package s3 stores a repository's objects in an S3 bucket (AWS, MinIO, versitygw, Ceph RGW)
// through minio-go: key "packs/ab12" is the object "<prefix>/packs/ab12". It translates the
// SDK's errors into backend's sentinels at this edge (NoSuchKey → ErrNotFound, refused
// credentials → ErrPermission, network, TLS and 5xx → ErrUnavailable; a bucket that went
// missing is an error of its own, never a missing object), so nothing above it sees a minio
// type. It does not retry or limit concurrency itself: the retry and limit wrappers do,
// stacked by package stack. Credentials never appear in errors or in Location. On a bucket
// with Object Lock it is a backend.Versioned: it locks what it stores once given a retention,
// and lists, dates, extends and removes object versions (lock.go).
package s3
