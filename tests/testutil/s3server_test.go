package testutil

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

func TestS3ServerStopStart(t *testing.T) {
	s := StartS3(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ok, err := s.Client().BucketExists(ctx, s.Bucket)
	if err != nil || !ok {
		t.Fatalf("BucketExists(%s) = %v, %v; want true", s.Bucket, ok, err)
	}
	s.Stop()
	if s.answers() {
		t.Fatal("server still answers after Stop")
	}
	s.Stop() // idempotent
	s.Start()
	// The bucket lives in the directory, so it survives the restart.
	if ok, err := s.Client().BucketExists(ctx, s.Bucket); err != nil || !ok {
		t.Fatalf("after restart: BucketExists = %v, %v; want true", ok, err)
	}
	s.Restart()
	if !s.answers() {
		t.Fatal("server does not answer after Restart")
	}
}

// TestS3ServerObjectLock: WithObjectLock gives a bucket with object lock (and so versions),
// and the versions survive a restart.
func TestS3ServerObjectLock(t *testing.T) {
	s := StartS3(t, WithObjectLock())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := s.Client()
	if enabled, _, _, _, err := c.GetObjectLockConfig(ctx, s.Bucket); err != nil || enabled != "Enabled" {
		t.Fatalf("object lock configuration of %s = %q, %v; want Enabled", s.Bucket, enabled, err)
	}
	for _, body := range []string{"one", "two"} {
		if _, err := c.PutObject(ctx, s.Bucket, "k", strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	s.Restart()
	n := 0
	for oi := range s.Client().ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: "k", WithVersions: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("%d versions of k after a restart, want 2", n)
	}
}
