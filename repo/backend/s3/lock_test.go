package s3

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/backendtest"
	"github.com/cairn-backup/cairn/tests/testutil"
	"github.com/minio/minio-go/v7"
)

// The object lock tests run on a versitygw that keeps versions, in a bucket created with
// object lock enabled, as a repository for immutable backups is.

// TestBackendObjectLocked runs the conformance suite with every Put locked: a locked store
// is still a store (overwrites, deletes and listings behave; Delete hides).
func TestBackendObjectLocked(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	var n atomic.Int64
	backendtest.Run(t, func(t *testing.T) backend.Backend {
		b := open(t, srv, fmt.Sprintf("locked%d", n.Add(1)))
		t.Cleanup(func() { b.Close() })
		b.SetRetention(&backend.Retention{Mode: backend.Governance, Period: time.Hour})
		return b
	})
}

func TestObjectLockConfiguration(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	srv.CreateBucket("plain")
	ctx := context.Background()
	b := open(t, srv, "x")
	defer b.Close()
	if on, err := b.ObjectLock(ctx); err != nil || !on {
		t.Errorf("ObjectLock on a bucket created with object lock = %v, %v; want true", on, err)
	}
	p, err := Open(ctx, Config{Endpoint: srv.Endpoint, Bucket: "plain", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if on, err := p.ObjectLock(ctx); err != nil || on {
		t.Errorf("ObjectLock on a bucket without object lock = %v, %v; want false, nil", on, err)
	}
}

// versionsOf lists key's versions, newest first as the store lists them.
func versionsOf(t *testing.T, b *Backend, key string) []backend.Version {
	t.Helper()
	var vs []backend.Version
	if err := b.ListVersions(context.Background(), key, func(v backend.Version) error {
		if v.Key == key {
			vs = append(vs, v)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestRetention: a Put locks its version until now plus the period (an exempt prefix not at
// all); the lock refuses removal and shortening until the date, allows extension, and a
// Delete only hides; once the date passes every version can be removed for good.
func TestRetention(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	ctx := context.Background()
	b := open(t, srv, "ret")
	defer b.Close()
	const period = 3 * time.Second
	b.SetRetention(&backend.Retention{Mode: backend.Governance, Period: period, Exempt: []string{"locks/"}})
	start := time.Now()
	if err := b.Put(ctx, "packs/p1", []byte("pack")); err != nil {
		t.Fatal(err)
	}
	if err := b.Put(ctx, "locks/l1", []byte("lock")); err != nil {
		t.Fatal(err)
	}

	vs := versionsOf(t, b, "packs/p1")
	if len(vs) != 1 || !vs[0].Latest || vs[0].DeleteMarker || vs[0].ID == "" || vs[0].Size != 4 {
		t.Fatalf("versions of packs/p1 = %+v, want one current version of 4 bytes", vs)
	}
	v := vs[0]
	until, err := b.RetainUntil(ctx, v.Key, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if until.Before(start.Add(period-time.Second)) || until.After(start.Add(period+2*time.Second)) {
		t.Errorf("retain-until %v, want about %v", until, start.Add(period))
	}
	if lu, err := b.RetainUntil(ctx, "locks/l1", ""); err != nil || !lu.IsZero() {
		t.Errorf("an exempt object: retain-until %v, %v; want none", lu, err)
	}
	// A direct removal through S3 with the same credentials, of the very version, is refused.
	if err := b.DeleteVersion(ctx, v.Key, v.ID); !errors.Is(err, backend.ErrRetained) {
		t.Errorf("DeleteVersion of a locked version = %v, want ErrRetained", err)
	}
	if err := srv.Client().RemoveObject(ctx, srv.Bucket, "ret/packs/p1", minio.RemoveObjectOptions{VersionID: v.ID}); err == nil {
		t.Error("a direct RemoveObject of the locked version succeeded")
	}
	if err := b.Retain(ctx, v.Key, v.ID, until.Add(-time.Second)); !errors.Is(err, backend.ErrRetained) {
		t.Errorf("shortening a lock = %v, want ErrRetained", err)
	}
	// Extension.
	later := until.Add(2 * time.Second)
	if err := b.Retain(ctx, v.Key, v.ID, later); err != nil {
		t.Fatal(err)
	}
	if got, err := b.RetainUntil(ctx, v.Key, v.ID); err != nil || !got.Equal(later.Truncate(time.Second)) {
		t.Errorf("after extending to %v: retain-until %v, %v", later, got, err)
	}
	// An overwrite adds a version; the locked one stays.
	if err := b.Put(ctx, "packs/p1", []byte("junk!")); err != nil {
		t.Fatal(err)
	}
	if vs := versionsOf(t, b, "packs/p1"); len(vs) != 2 {
		t.Errorf("after an overwrite: %d versions, want 2", len(vs))
	}
	// Delete hides: gone from listings and reads, a marker on top of the versions.
	if err := b.Delete(ctx, "packs/p1"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx, "packs/p1"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Stat of a hidden object = %v, want ErrNotFound", err)
	}
	vs = versionsOf(t, b, "packs/p1")
	if len(vs) != 3 || !vs[0].DeleteMarker || !vs[0].Latest {
		t.Fatalf("after Delete: versions %+v, want a delete marker over two versions", vs)
	}
	// The exempt object goes at once.
	for _, lv := range versionsOf(t, b, "locks/l1") {
		if err := b.DeleteVersion(ctx, "locks/l1", lv.ID); err != nil {
			t.Errorf("DeleteVersion of an exempt object: %v", err)
		}
	}
	// Once the date has passed, every version goes.
	time.Sleep(time.Until(later) + 1500*time.Millisecond)
	for _, v := range vs {
		if err := b.DeleteVersion(ctx, v.Key, v.ID); err != nil {
			t.Errorf("DeleteVersion %s after its date: %v", v.ID, err)
		}
	}
	var left []string
	_ = b.ListVersions(ctx, "", func(v backend.Version) error { left = append(left, v.Key+"@"+v.ID); return nil })
	sort.Strings(left)
	if len(left) != 0 {
		t.Errorf("versions left: %v", left)
	}
}

// TestComplianceCannotBeBypassed: a compliance lock refuses even the governance bypass that
// the bucket's owner may use.
func TestComplianceCannotBeBypassed(t *testing.T) {
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	ctx := context.Background()
	b := open(t, srv, "comp")
	defer b.Close()
	for _, mode := range []backend.LockMode{backend.Governance, backend.Compliance} {
		b.SetRetention(&backend.Retention{Mode: mode, Period: time.Hour})
		key := "manifests/" + string(mode)
		if err := b.Put(ctx, key, []byte("m")); err != nil {
			t.Fatal(err)
		}
		v := versionsOf(t, b, key)[0]
		err := srv.Client().RemoveObject(ctx, srv.Bucket, "comp/"+key, minio.RemoveObjectOptions{VersionID: v.ID, GovernanceBypass: true})
		if mode == backend.Governance && err != nil {
			t.Errorf("governance: the owner's bypass was refused: %v", err)
		}
		if mode == backend.Compliance && err == nil {
			t.Error("compliance: the owner's bypass removed a locked version")
		}
	}
}
