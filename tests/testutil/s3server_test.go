package testutil

import (
	"context"
	"testing"
	"time"
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
