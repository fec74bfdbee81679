package tests

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// Two gateways on one repository, each with its own index and API, as two `cairn serve`
// behind a load balancer, driven by the real cinder client: the id `cinder backup-create`
// returns through one is shown by the other at once, as creating, and its list shows it; a
// force delete through the other cancels it, and the first removes it; a backup left to run
// becomes available through both and restores through the other byte for byte; the volume a
// restore through the first makes is found through the other at once, restoring or
// available, never in error. Before, the other answered 404 until the commit and its
// catch-up, and showed a restore's new volume in error for good (docs/design.md, "Backups
// being created, on every gateway").
func TestAPICinderThroughTwoGateways(t *testing.T) {
	t.Parallel() // waits on a throttled backup and the catch-up's timer: overlaps the other such tests
	dir := t.TempDir()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo")}
	if _, err := gateway.Init(context.Background(), cfg, repo.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	ca, cb := cfg, cfg
	ca.StateDir, cb.StateDir = filepath.Join(dir, "state-a"), filepath.Join(dir, "state-b")
	ca.VolumeReadRate = 256 << 10 // a 5 MiB backup runs for 20 s, two of b's catch-ups
	a, b := apiOn(t, dir, ca), apiOn(t, dir, cb)
	a.volume("admin", "vol1", 5<<20, testutil.Mixed)
	src := testutil.SHA256File(t, filepath.Join(dir, "vol1.img"))
	within := func(what string, d time.Duration, done func() bool) {
		t.Helper()
		for deadline := time.Now().Add(d); !done(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s", what, d)
			}
		}
	}

	doomed := dict(a.ok(nil, "backup-create", "--name", "doomed", "vol1"))["id"]
	if d := dict(b.ok(nil, "backup-show", doomed)); d["status"] != "creating" || d["name"] != "doomed" {
		t.Fatalf("backup-show through b of the backup a just accepted: %v, want creating", d)
	}
	b.ok(nil, "backup-delete", "--force", doomed)
	within("a removes the backup force-deleted through b", 30*time.Second, func() bool {
		_, err := a.svc.Index().Backup(doomed)
		return err != nil
	})
	a.waitVolume(dict(a.ok(nil, "show", "vol1"))["id"], "available")

	kept := dict(a.ok(nil, "backup-create", "--name", "kept", "vol1"))["id"]
	if d := dict(b.ok(nil, "backup-show", kept)); d["status"] != "creating" {
		t.Fatalf("backup-show through b of the backup a just accepted: %v, want creating", d)
	}
	within("b's backup-list shows the backup a is creating", 20*time.Second, func() bool {
		for _, row := range table(b.ok(nil, "backup-list")) {
			if row["ID"] == kept && row["Status"] == "creating" {
				return true
			}
		}
		return false
	})
	within("b shows the backup available", time.Minute, func() bool {
		return dict(b.ok(nil, "backup-show", kept))["status"] == string(index.BackupAvailable)
	})
	// A restore through a to a new volume: b finds the volume at once (a learned it only at
	// its restore), restoring or restored, never in error, then available, byte for byte.
	d := dict(a.ok(nil, "backup-restore", kept))
	if st := dict(b.ok(nil, "show", d["volume_id"]))["status"]; st != "restoring-backup" && st != "available" {
		t.Fatalf("cinder show through b of the volume a restores to: %s, want restoring-backup or available", st)
	}
	within("b shows the volume a restored to available", time.Minute, func() bool {
		return dict(b.ok(nil, "show", d["volume_id"]))["status"] == "available"
	})
	restored, err := b.svc.Index().Volume(d["volume_id"])
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.SHA256File(t, restored.Path); got != src {
		t.Fatalf("restore through a, as b sees it: sha256 %s, want %s", got, src)
	}
	d = dict(b.ok(nil, "backup-restore", kept))
	b.waitVolume(d["volume_id"], "available")
	restored, err = b.svc.Index().Volume(d["volume_id"])
	if err != nil {
		t.Fatal(err)
	}
	if got := testutil.SHA256File(t, restored.Path); got != src {
		t.Fatalf("restore through b of the backup created through a: sha256 %s, want %s", got, src)
	}
	// b's service-list shows a's services too, up (each gateway stores its own at its start).
	host, _ := os.Hostname()
	peers := 0
	for _, row := range table(b.ok(nil, "service-list")) {
		if strings.HasPrefix(row["Host"], host+"@") && row["State"] == "up" {
			peers++
		}
	}
	if peers != 3 {
		t.Fatalf("cinder service-list through b shows %d of a's services up, want 3:\n%s", peers, b.ok(nil, "service-list"))
	}
	if r := b.run(nil, "backup-show", "9a4b0e4e-0d57-4f39-9a2d-6e7f0e7f0e7f"); r.err == nil || !strings.Contains(r.out, "No volumebackup") {
		t.Fatalf("backup-show of an id no gateway made: %v %s", r.err, r.out)
	}
}
