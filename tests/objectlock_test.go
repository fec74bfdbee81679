package tests

import (
	"context"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
	"github.com/minio/minio-go/v7"
)

// Immutable backups on S3 Object Lock, through the built binary, on a versitygw that keeps
// versions with a bucket created with object lock enabled.

// s3Version is one version of an object as the bucket lists it.
type s3Version struct {
	key, id        string
	latest, marker bool
}

// bucketVersions lists every version and delete marker under prefix/sub, by key.
func bucketVersions(t *testing.T, srv *testutil.S3Server, prefix, sub string) map[string][]s3Version {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string][]s3Version{}
	for oi := range srv.Client().ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/" + sub, Recursive: true, WithVersions: true}) {
		if oi.Err != nil {
			t.Fatalf("list versions of %s/%s: %v", prefix, sub, oi.Err)
		}
		out[oi.Key] = append(out[oi.Key], s3Version{key: oi.Key, id: oi.VersionID, latest: oi.IsLatest, marker: oi.IsDeleteMarker})
	}
	return out
}

// retainUntil reads the retain-until date of an object's current version.
func retainUntil(t *testing.T, srv *testutil.S3Server, key string) time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := srv.Client().StatObject(ctx, srv.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("stat %s: %v", key, err)
	}
	u, err := time.Parse(time.RFC3339, info.Metadata.Get("X-Amz-Object-Lock-Retain-Until-Date"))
	if err != nil {
		t.Fatalf("%s has no retain-until date: %v", key, err)
	}
	return u
}

// removeVersion removes one version straight through S3 with the gateway's own credentials,
// as a thief of them (or ransomware on the gateway host) would.
func removeVersion(srv *testutil.S3Server, v s3Version) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return srv.Client().RemoveObject(ctx, srv.Bucket, v.key, minio.RemoveObjectOptions{VersionID: v.id})
}

type gcJSON struct {
	PacksDeleted    int   `json:"packs_deleted"`
	PacksLocked     int   `json:"packs_kept_locked"`
	ObjectsExtended int   `json:"objects_extended"`
	VersionsRemoved int   `json:"versions_removed"`
	BytesFreed      int64 `json:"bytes_freed"`
}

// Scenario OL-1: init with object lock is refused with one line where nothing can be locked;
// on a locked bucket every object a backup writes is locked and cannot be removed through S3,
// even with the gateway's credentials; a deleted backup's packs survive gc while locked and go,
// every version, once their dates pass; gc extends what the remaining backup needs; a manifest
// hidden behind a delete marker comes back when the marker goes; every restore is byte-exact
// and check is clean.
func TestObjectLockImmutableBackups(t *testing.T) {
	t.Parallel() // long waits on timers and child processes: overlaps the other such tests
	srv := testutil.StartS3(t, testutil.WithObjectLock())
	srv.CreateBucket("plain")
	dir := t.TempDir()
	// Long enough that b's packs are still locked at the first gc, a few processes after they
	// were written, on a loaded machine.
	const retention = 8 * time.Second

	// Refusals.
	lockArgs := []string{"repo", "init", "--object-lock", "governance", "--retention", "8s"}
	local := &cairnRepo{t: t, Dir: filepath.Join(dir, "local"), Env: []string{"CAIRN_REPO=" + filepath.Join(dir, "local")}}
	if line := local.mustFail([]int{2}, lockArgs...); !strings.Contains(line, "needs an S3 repository") {
		t.Errorf("object lock on a directory: %q", line)
	}
	plainState := filepath.Join(dir, "plain-state")
	plain := &cairnRepo{t: t, Dir: plainState, Env: append(s3Env(srv, srv.Endpoint, "p", plainState), "CAIRN_REPO=s3://plain/p")}
	if line := plain.mustFail([]int{2}, lockArgs...); !strings.Contains(line, "no object lock configuration") {
		t.Errorf("object lock on a bucket without it: %q", line)
	}
	plain.mustFail([]int{2}, "repo", "init", "--object-lock", "governance")
	plain.mustFail([]int{2}, "repo", "init", "--retention", "8s")
	plain.mustFail([]int{2}, "repo", "init", "--object-lock", "governance", "--retention", "1.5s")

	const prefix = "immutable"
	r := newS3Repo(t, srv, prefix, nil, "--object-lock", "governance", "--retention", "8s")
	volA := filepath.Join(dir, "a.img")
	testutil.WriteImage(t, volA, 6*mib, 51, testutil.Mixed)
	shaA := testutil.SHA256File(t, volA)
	volB := filepath.Join(dir, "b.img")
	testutil.WriteImage(t, volB, 4*mib, 52, testutil.Random)
	a := r.createBackup(volA)
	aPacks := bucketVersions(t, srv, prefix, "packs/")
	b := r.createBackup(volB)

	// (1) Nothing a backup wrote can be removed through S3 before its date, even with the
	// gateway's credentials: not a pack's version, not a manifest's. Lock objects are not locked
	// and are gone whole once released.
	all := bucketVersions(t, srv, prefix, "")
	for key, vs := range all {
		if strings.HasPrefix(key, prefix+"/locks/") {
			t.Errorf("lock object %s left after its release (%d versions)", key, len(vs))
			continue
		}
		if strings.HasPrefix(key, prefix+"/backuplog/") {
			continue // a hint for other gateways' catch-up, never locked (docs/design.md)
		}
		if u := retainUntil(t, srv, key); time.Until(u) <= 0 || time.Until(u) > retention+2*time.Second {
			t.Errorf("%s: retain-until %v, want within the retention from now", key, u)
		}
	}
	for key := range aPacks {
		if err := removeVersion(srv, all[key][0]); err == nil {
			t.Fatalf("removing a locked pack's version %s through S3 succeeded", key)
		}
	}
	if err := removeVersion(srv, all[prefix+"/manifests/"+a.ID][0]); err == nil {
		t.Fatal("removing a locked manifest's version through S3 succeeded")
	}

	// (2) A deleted backup goes at once; its packs stay through gc while locked.
	r.mustRun("backup", "delete", "--yes", b.ID)
	if bs := r.listBackups(); len(bs) != 1 || bs[0].ID != a.ID {
		t.Fatalf("backups after deleting %s: %+v", b.ID, bs)
	}
	var bPacks []string
	for key := range bucketVersions(t, srv, prefix, "packs/") {
		if _, ok := aPacks[key]; !ok {
			bPacks = append(bPacks, key)
		}
	}
	sort.Strings(bPacks)
	if len(bPacks) == 0 {
		t.Fatal("backup b stored no pack of its own")
	}
	var gc gcJSON
	r.mustJSON(&gc, "--quiet", "repo", "gc")
	t.Logf("gc while locked: %+v", gc)
	if gc.PacksDeleted != 0 || gc.PacksLocked != len(bPacks) {
		t.Fatalf("gc while b's packs are locked: %+v; want none deleted, %d kept locked", gc, len(bPacks))
	}
	for _, key := range bPacks {
		if vs := bucketVersions(t, srv, prefix, strings.TrimPrefix(key, prefix+"/"))[key]; len(vs) != 1 || vs[0].marker {
			t.Errorf("pack %s after gc: versions %+v, want its one version", key, vs)
		}
	}

	var st struct {
		ObjectLock struct {
			Mode             string    `json:"mode"`
			RetentionSeconds int64     `json:"retention_seconds"`
			Objects          int       `json:"objects"`
			Unprotected      int       `json:"unprotected"`
			Oldest           time.Time `json:"oldest_retain_until"`
			Newest           time.Time `json:"newest_retain_until"`
		} `json:"object_lock"`
	}
	r.mustJSON(&st, "repo", "stats")
	if l := st.ObjectLock; l.Mode != "governance" || l.RetentionSeconds != 8 || l.Objects == 0 || l.Oldest.IsZero() || l.Newest.Before(l.Oldest) {
		t.Errorf("repo stats: object_lock %+v", l)
	}
	if out := r.mustRun("repo", "stats"); !strings.Contains(out, "oldest_retain_until") || !strings.Contains(out, "governance") {
		t.Errorf("repo stats does not show the lock:\n%s", out)
	} else {
		t.Logf("repo stats:\n%s", out)
	}

	// Once the dates pass, gc removes b's packs and manifest, every version, and (3) extends the
	// dates of what a needs.
	before := map[string]time.Time{}
	for key := range aPacks {
		before[key] = retainUntil(t, srv, key)
	}
	time.Sleep(retention + 1500*time.Millisecond)
	r.mustJSON(&gc, "--quiet", "repo", "gc")
	t.Logf("gc after the dates passed: %+v", gc)
	if gc.PacksDeleted != len(bPacks) || gc.PacksLocked != 0 || gc.ObjectsExtended == 0 || gc.VersionsRemoved == 0 || gc.BytesFreed <= 0 {
		t.Fatalf("gc after the dates passed: %+v; want %d packs deleted, objects extended, old versions removed", gc, len(bPacks))
	}
	left := bucketVersions(t, srv, prefix, "")
	for _, key := range append(bPacks, prefix+"/manifests/"+b.ID) {
		if len(left[key]) != 0 {
			t.Errorf("%s: versions %+v left after gc", key, left[key])
		}
	}
	for key, was := range before {
		now := retainUntil(t, srv, key)
		if !now.After(was) || time.Until(now) < retention/2 {
			t.Errorf("pack %s of a: retain-until %v before gc, %v after; want it extended", key, was, now)
		}
		if err := removeVersion(srv, left[key][0]); err == nil {
			t.Errorf("removing the extended pack %s through S3 succeeded", key)
		}
	}
	// (4), (5)
	restored := filepath.Join(dir, "a-restored.img")
	r.restoreTo(a.ID, restored)
	if got := testutil.SHA256File(t, restored); got != shaA {
		t.Fatalf("a restored after gc: sha256 %s, want %s", got, shaA)
	}
	r.checkClean()

	// Ransomware with the gateway's credentials deletes the manifest: a delete marker hides it.
	// Its copy is left and no delete began, so the backup is lost, not deleted: it still lists,
	// its restore is refused saying what repair does, and check reports it (docs/design.md, "A
	// manifest lost, its copy left"). Removing the marker brings it back.
	key := prefix + "/manifests/" + a.ID
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Client().RemoveObject(ctx, srv.Bucket, key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if bs := r.listBackups(); len(bs) != 1 || bs[0].ID != a.ID {
		t.Fatalf("backups after the manifest was hidden: %+v; want a kept, its manifest lost", bs)
	}
	if msg := r.mustFail([]int{8}, "backup", "restore", "--yes", a.ID, "--to", filepath.Join(dir, "a-hidden.img")); !strings.Contains(msg, "its manifest is missing though no delete of it began") {
		t.Errorf("restore of a backup whose manifest is hidden: %q", msg)
	}
	if res := r.run("repo", "check"); res.Code != 8 || !strings.Contains(res.Stdout, "backup "+a.ID+": its manifest is missing") {
		t.Errorf("check with a's manifest hidden: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	for _, v := range bucketVersions(t, srv, prefix, "manifests/")[key] {
		if v.marker {
			if err := removeVersion(srv, v); err != nil {
				t.Fatalf("remove the delete marker: %v", err)
			}
		}
	}
	if bs := r.listBackups(); len(bs) != 1 || bs[0].ID != a.ID || bs[0].Status != "available" {
		t.Fatalf("backups after the delete marker went: %+v", bs)
	}
	restored2 := filepath.Join(dir, "a-recovered.img")
	r.restoreTo(a.ID, restored2)
	if got := testutil.SHA256File(t, restored2); got != shaA {
		t.Fatalf("a restored after recovery: sha256 %s, want %s", got, shaA)
	}
	r.checkClean()
}
