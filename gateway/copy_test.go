package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/index"
	"github.com/cairn-backup/cairn/repo"
	"github.com/cairn-backup/cairn/repo/backend"
	"github.com/cairn-backup/cairn/repo/backend/faulty"
)

// sourceBackup opens a service on a new repository with one backup there of an image of size
// bytes (backedUpImage): the service, the backup and the image's sha256.
func sourceBackup(t *testing.T, size int) (*gateway.Service, *index.Backup, string) {
	t.Helper()
	s, dir := newService(t)
	img := image(t, dir, "vol.img", size)
	return s, backedUpImage(t, s, img), sha256File(t, img)
}

// otherRepo makes and opens a repository in dir with its own passphrase and 4 KiB blocks:
// everything a copy writes there is sealed and addressed anew.
func otherRepo(t *testing.T, dir string) (gateway.Config, *gateway.Service) {
	t.Helper()
	cfg := gateway.Config{Repo: filepath.Join(dir, "repo"), StateDir: filepath.Join(dir, "state"), Password: "offsite"}
	if err := os.MkdirAll(cfg.Repo, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.Init(context.Background(), cfg, repo.InitOptions{BlockSize: 4 << 10, Encryption: repo.EncryptionAES, Password: cfg.Password}); err != nil {
		t.Fatal(err)
	}
	s, err := gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return cfg, s
}

// zeroAt writes n zero bytes into the file at path at off.
func zeroAt(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, n), off); err != nil {
		t.Fatal(err)
	}
}

// A chain copied to another repository (other passphrase, other block size) restores there
// byte for byte, each incremental read only where its block map differs from its parent's
// and built on the copy of that parent; a copy made again does nothing, the copies survive
// the loss of the destination's index, and a backup whose parent was not copied is read in
// full and restores all the same.
func TestCopyBackupsToAnotherRepository(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	vol := image(t, dir, "vol.img", 4<<20)
	if err := os.Truncate(vol, 6<<20); err != nil { // 2 MiB of hole at the end
		t.Fatal(err)
	}
	var ids, sums []string
	backup := func(incremental bool) {
		b, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Name: "n", Incremental: incremental, Metadata: map[string]string{"k": "v"}})
		if err != nil {
			t.Fatal(err)
		}
		ids, sums = append(ids, b.ID), append(sums, sha256File(t, vol))
	}
	backup(false)
	writeAt(t, vol, 100<<10, 12, 1)
	writeAt(t, vol, 5<<20, 13, 2) // into the hole
	zeroAt(t, vol, 1<<20, 64<<10) // zeros where data was
	backup(true)
	writeAt(t, vol, 3<<20+7, 13, 3)
	backup(true)

	dcfg, dst := otherRepo(t, t.TempDir())
	for i, id := range ids {
		res, err := src.CopyBackup(ctx, id, dst, gateway.CopyOptions{})
		if err != nil {
			t.Fatalf("copy %s: %v", id, err)
		}
		if !res.Copied || res.Backup.ID != id || res.Backup.Status != index.BackupAvailable {
			t.Fatalf("copy %d: %+v, want backup %s copied and available", i, res, id)
		}
		if i == 0 {
			if res.Base != "" || res.Backup.ReadMode != gateway.ReadCopy {
				t.Errorf("full backup's copy: base %q, read mode %q, want none and %q", res.Base, res.Backup.ReadMode, gateway.ReadCopy)
			}
			continue
		}
		if res.Base != ids[i-1] || !res.Backup.IsIncremental || res.Backup.ParentID != ids[i-1] || res.Backup.ReadMode != gateway.ReadCopyDiff {
			t.Errorf("copy of incremental %d: base %q parent %q incremental %v mode %q, want built on the copy of %s", i, res.Base, res.Backup.ParentID, res.Backup.IsIncremental, res.Backup.ReadMode, ids[i-1])
		}
		// The changes touch at most five 16 KiB source blocks, four of them whole.
		if rb := res.Backup.Stats.ReadBytes; rb == 0 || rb > 6*16<<10 {
			t.Errorf("copy of incremental %d read %d bytes, want only the changed blocks (at most 96 KiB of 6 MiB)", i, rb)
		}
	}
	for i, id := range ids {
		if got := restoreSHA(t, dst, ctx, id); got != sums[i] {
			t.Errorf("copy of backup %d restores to %s, want %s (the volume then)", i, got, sums[i])
		}
		b, err := dst.Backup(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if b.Name != "n" || b.Metadata["k"] != "v" || b.VolumeName != "vol.img" && b.VolumeName == "" {
			t.Errorf("copy of backup %d: name %q metadata %v volume %q: not what the backup was", i, b.Name, b.Metadata, b.VolumeName)
		}
	}
	again, err := src.CopyBackup(ctx, ids[2], dst, gateway.CopyOptions{})
	if err != nil || again.Copied {
		t.Errorf("second copy of %s: %+v, %v; want nothing done", ids[2], again, err)
	}
	// Each copy was a job of the source's gateway, for its admins (the console's Jobs page),
	// with its destination and all its bytes done; a copy that had nothing to do was none.
	_, recent, err := src.Jobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	copies := 0
	for _, j := range recent {
		if j.Kind != "copy" {
			continue
		}
		copies++
		if j.State != gateway.JobSucceeded || j.Target != dst.Location() || j.Total == 0 || j.Done != j.Total || j.Project != "" {
			t.Errorf("copy job %+v, want succeeded, to %s, every byte done, no project", j, dst.Location())
		}
	}
	if copies != len(ids) {
		t.Errorf("%d copy jobs, want %d", copies, len(ids))
	}
	if _, recent, _ := src.Jobs(as("u2", "p2", false)); len(recent) != 0 {
		t.Errorf("a project's member sees the gateway's jobs %+v", recent)
	}

	// The copies are the destination's: its index goes, and a new one finds them.
	dst.Close()
	if err := os.RemoveAll(dcfg.StateDir); err != nil {
		t.Fatal(err)
	}
	dst, err = gateway.Open(context.Background(), dcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for i, id := range ids {
		if got := restoreSHA(t, dst, ctx, id); got != sums[i] {
			t.Errorf("after the destination's index was lost, copy of backup %d restores to %s, want %s", i, got, sums[i])
		}
	}

	// Only the last incremental, to a third repository: read in full, restores the same.
	_, third := otherRepo(t, t.TempDir())
	res, err := src.CopyBackup(ctx, ids[2], third, gateway.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Base != "" || res.Backup.ReadMode != gateway.ReadCopy || res.Backup.Stats.ReadBytes < 4<<20-64<<10 {
		t.Errorf("copy without its parent's: base %q mode %q read %d, want a full read of its 4 MiB of data less 64 KiB of zeros", res.Base, res.Backup.ReadMode, res.Backup.Stats.ReadBytes)
	}
	if got := restoreSHA(t, third, ctx, ids[2]); got != sums[2] {
		t.Errorf("copy without its parent's restores to %s, want %s", got, sums[2])
	}
}

// Copies are for admins, and never into the same repository.
func TestCopyRefusals(t *testing.T) {
	src, b, _ := sourceBackup(t, 256<<10)
	_, dst := otherRepo(t, t.TempDir())
	if _, err := src.CopyBackup(as("u", gateway.DefaultProject, false), b.ID, dst, gateway.CopyOptions{}); !errors.Is(err, gateway.ErrDenied) {
		t.Errorf("a member's copy: %v, want denied", err)
	}
	if d, err := src.OpenDestination(as("u", gateway.DefaultProject, false), gateway.Destination{Repo: t.TempDir()}); !errors.Is(err, gateway.ErrDenied) {
		if d != nil {
			d.Close()
		}
		t.Errorf("a member's opening of a destination: %v, want denied before anything is opened", err)
	}
	if _, err := src.CopyBackup(adminCtx(), b.ID, src, gateway.CopyOptions{}); !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "this repository") {
		t.Errorf("a copy into the same repository: %v, want invalid", err)
	}
	if list, err := dst.ListBackups(adminCtx(), gateway.ListFilter{AllProjects: true}); err != nil || len(list) != 0 {
		t.Errorf("the destination lists %d backups (%v) after refused copies, want none", len(list), err)
	}
}

// A source backup's verification does not go with its copy: the copy was not verified there.
func TestCopyIsNotVerifiedThere(t *testing.T) {
	src, b, _ := sourceBackup(t, 256<<10)
	if _, err := src.VerifyBackup(adminCtx(), b.ID, nil); err != nil {
		t.Fatal(err)
	}
	_, dst := otherRepo(t, t.TempDir())
	if _, err := src.CopyBackup(adminCtx(), b.ID, dst, gateway.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if rec := record(t, dst, b.ID); rec == nil || rec.LastVerify != nil {
		t.Fatalf("the copy's record: %+v, want one never verified", rec)
	}
}

// A copy is built on the destination's copy of its parent only when a sample of the blocks
// said unchanged reads there as it does in the source: one that does not (a fake: another
// backup's image stands for the source) is read in full, and says why.
func TestCopyChecksTheParentsCopy(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	vol := image(t, dir, "vol.img", 1<<20)
	p, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	other := image(t, dir, "other-name.img", 1<<20) // other bytes, same size
	o, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: other})
	if err != nil {
		t.Fatal(err)
	}
	_, dst := otherRepo(t, t.TempDir())
	if _, err := src.CopyBackup(ctx, p.ID, dst, gateway.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	copyOfP, err := dst.Backup(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if base, fallback, err := gateway.CopyBaseForTest(dst, copyOfP, gateway.ImageSourceForTest(t, src, p.ID)); err != nil || base != p.ID || fallback != "" {
		t.Errorf("the parent's own image: base %q (%s, %v), want %s", base, fallback, err, p.ID)
	}
	base, fallback, err := gateway.CopyBaseForTest(dst, copyOfP, gateway.ImageSourceForTest(t, src, o.ID))
	if err != nil || base != "" || !strings.Contains(fallback, "differs from it") {
		t.Errorf("another image: base %q, fallback %q; want a full read because the copy of the parent differs", base, fallback)
	}
}

// A policy with a copy target copies its volumes' backups there after each run, each
// incremental on the copy of its parent, reading the destination's passphrase from its file
// at each run; only admins give a policy a target, with absolute paths, and a member may
// still change the rest of such a policy.
func TestPolicyCopiesItsBackups(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	vol := image(t, dir, "vol.img", 2<<20)
	if _, err := src.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: "vm", Project: "p1"}); err != nil {
		t.Fatal(err)
	}
	dcfg, dst := otherRepo(t, t.TempDir())
	dst.Close() // the policy opens it at each run
	pass := filepath.Join(dir, "offsite.pass")
	if err := os.WriteFile(pass, []byte(dcfg.Password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := gateway.CopyTarget{CopyTo: dcfg.Repo, CopyPasswordFile: pass, CopyStateDir: filepath.Join(dir, "copy-state")}
	req := gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Project: "p1", AllOfProject: true, Schedule: "daily",
		Incremental: true, CopyTarget: target}}
	member := as("bob", "p1", false)
	if _, err := src.CreatePolicy(member, req); !errors.Is(err, gateway.ErrDenied) {
		t.Errorf("a member's policy with a copy target: %v, want denied", err)
	}
	relative := req
	relative.CopyPasswordFile = "offsite.pass"
	if _, err := src.CreatePolicy(ctx, relative); !errors.Is(err, gateway.ErrInvalid) {
		t.Errorf("a relative passphrase file: %v, want invalid", err)
	}
	if _, err := src.CreatePolicy(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := src.UpdatePolicy(member, "nightly", nil, func(p *gateway.Policy) { p.Keep.Last = 5 }); err != nil {
		t.Errorf("a member's change of the keep rules of a policy with a copy target: %v", err)
	}
	if _, err := src.UpdatePolicy(member, "nightly", nil, func(p *gateway.Policy) { p.CopyTo = "/tmp/elsewhere" }); !errors.Is(err, gateway.ErrDenied) {
		t.Errorf("a member's change of the copy target: %v, want denied", err)
	}
	// The second run reads all of it from a configuration file instead.
	conf := filepath.Join(dir, "offsite.json")
	if err := os.WriteFile(conf, []byte(`{"repo": "`+dcfg.Repo+`", "password_file": "`+pass+`", "state_dir": "`+target.CopyStateDir+`", "concurrency": 4}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var sums []string
	for i := range 2 {
		if i > 0 {
			writeAt(t, vol, 700<<10, 5000, byte(i))
			if _, err := src.UpdatePolicy(ctx, "nightly", nil, func(p *gateway.Policy) { p.CopyTarget = gateway.CopyTarget{CopyConfig: conf} }); err != nil {
				t.Fatal(err)
			}
		}
		sums = append(sums, sha256File(t, vol))
		if _, err := src.RunPolicy(ctx, "nightly"); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	list, err := src.ListBackups(ctx, gateway.ListFilter{AllProjects: true})
	if err != nil || len(list) != 2 {
		t.Fatalf("the policy's backups: %d (%v), want 2", len(list), err)
	}
	dst, err = gateway.Open(context.Background(), gateway.Config{Repo: dcfg.Repo, StateDir: target.CopyStateDir, Password: dcfg.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	for i, b := range list {
		c, err := dst.Backup(ctx, b.ID)
		if err != nil {
			t.Fatalf("backup %d of the policy was not copied: %v", i, err)
		}
		if i == 1 && (c.ParentID != list[0].ID || c.ReadMode != gateway.ReadCopyDiff || c.Stats.ReadBytes > 32<<10) {
			t.Errorf("the copy of the incremental: parent %q mode %q read %d, want built on the copy of %s", c.ParentID, c.ReadMode, c.Stats.ReadBytes, list[0].ID)
		}
		if got := restoreSHA(t, dst, ctx, b.ID); got != sums[i] {
			t.Errorf("the copy of the policy's backup %d restores to %s, want %s", i, got, sums[i])
		}
	}
	// The destination deletes its copy of the newest; the next run copies its new backup,
	// and not that one again.
	if _, err := dst.DeleteBackup(ctx, list[1].ID, false); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	writeAt(t, vol, 900<<10, 5000, 9)
	if _, err := src.RunPolicy(ctx, "nightly"); err != nil {
		t.Fatalf("the run after the destination's delete: %v", err)
	}
	after, err := src.ListBackups(ctx, gateway.ListFilter{AllProjects: true})
	if err != nil || len(after) != 3 {
		t.Fatalf("the policy's backups: %d (%v), want 3", len(after), err)
	}
	dst2, err := gateway.Open(context.Background(), gateway.Config{Repo: dcfg.Repo, StateDir: target.CopyStateDir, Password: dcfg.Password})
	if err != nil {
		t.Fatal(err)
	}
	defer dst2.Close()
	if _, err := dst2.Backup(ctx, list[1].ID); !errors.Is(err, gateway.ErrNotFound) {
		t.Errorf("the backup the destination deleted, after the next run: %v, want not found", err)
	}
	if got := restoreSHA(t, dst2, ctx, after[2].ID); got != sha256File(t, vol) {
		t.Errorf("the copy of the run's new backup restores to %s", got)
	}
}

// A destination's configuration file is a cairn configuration file: its keys say where the
// repository is and how to reach it, its password_file is read, other keys are left alone,
// and a file that is not a JSON object is refused as invalid.
func TestReadDestination(t *testing.T) {
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "c.json")
	if err := os.WriteFile(conf, []byte(`{"repo": "s3://b/p", "endpoint": "http://127.0.0.1:9", "region": "r", "path_style": "path",
		"access_key": "a", "secret_key": "k", "state_dir": "/s", "password_file": "`+pass+`", "log_file": "/x", "concurrency": 3}`), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := gateway.ReadDestination(conf)
	want := gateway.Destination{Repo: "s3://b/p", StateDir: "/s", Password: "s3cret", Endpoint: "http://127.0.0.1:9", Region: "r",
		AccessKey: "a", SecretKey: "k", PathStyle: "path"}
	if err != nil || d != want {
		t.Errorf("ReadDestination = %+v, %v; want %+v", d, err, want)
	}
	if err := os.WriteFile(conf, []byte("repo = s3://b/p"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := gateway.ReadDestination(conf); !errors.Is(err, gateway.ErrInvalid) {
		t.Errorf("a file that is not JSON: %v, want invalid", err)
	}
}

// A copy that fails (a pack that cannot be stored; a manifest Put whose reply was lost,
// which stored it all the same) leaves the destination without the backup, in its index and
// after a catch-up, and the source as it was; the copy made again succeeds and restores byte
// for byte.
func TestCopyThatFailsLeavesNothing(t *testing.T) {
	ctx := adminCtx()
	src, b, sum := sourceBackup(t, 1<<20)
	_, dst := otherRepo(t, t.TempDir())
	for _, rule := range []faulty.Rule{
		{Methods: faulty.Put, Prefix: "packs/", Times: 1},
		{Methods: faulty.Put, Prefix: "manifests/", Effect: faulty.FailAfter, Times: 1},
	} {
		var f *faulty.Faulty
		gateway.WrapBackendForTest(t, dst, func(be backend.Backend) backend.Backend {
			f = faulty.New(be, 1)
			f.Add(rule)
			return f
		})
		if _, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{}); err == nil {
			t.Fatalf("a copy whose %s put failed succeeded", rule.Prefix)
		}
		if f.Calls(faulty.Put) == 0 {
			t.Fatalf("the fault on %s was never reached", rule.Prefix)
		}
		if err := dst.SyncBackups(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got, err := dst.Backup(ctx, b.ID); err == nil {
			t.Fatalf("after a copy whose %s put failed the destination has the backup: %+v", rule.Prefix, got)
		}
		f.Reset()
	}
	res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{})
	if err != nil || !res.Copied {
		t.Fatalf("the copy made again: %+v, %v", res, err)
	}
	if got := restoreSHA(t, dst, ctx, b.ID); got != sum {
		t.Errorf("the copy restores to %s, want %s", got, sum)
	}
	if got := restoreSHA(t, src, ctx, b.ID); got != sum {
		t.Errorf("the source backup restores to %s after the failed copies, want %s", got, sum)
	}
}

// Two copies of one backup into one repository at once, through two gateways of it (two
// hosts' nightly copies): the block maps they write are the same (addresses are the
// destination's keyed hashes of the same blocks), so whichever manifest stays, the copy
// restores byte for byte on both.
func TestTwoCopiesOfABackupAtOnce(t *testing.T) {
	ctx := adminCtx()
	src, b, sum := sourceBackup(t, 2<<20)
	one, two := twoDestinationGateways(t)
	results := make([]*gateway.CopyResult, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, dst := range []*gateway.Service{one, two} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("copy %d: %v", i, err)
		}
	}
	if results[0].Copied && results[1].Copied && results[0].Backup.Root != results[1].Backup.Root {
		t.Errorf("two copies of one backup wrote two block maps: %s and %s", results[0].Backup.Root, results[1].Backup.Root)
	}
	for i, dst := range []*gateway.Service{one, two} {
		if err := dst.SyncBackups(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := restoreSHA(t, dst, ctx, b.ID); got != sum {
			t.Errorf("after two copies at once, gateway %d restores %s, want %s", i, got, sum)
		}
	}
}

// A backup deleted and garbage-collected between the copy's look-up and its lock on the
// source: the copy finds the manifest gone under the lock and fails as a conflict, stores
// nothing in the destination, and never reads the collected blocks as zeros.
func TestCopyOfABackupCollectedMeanwhile(t *testing.T) {
	ctx := adminCtx()
	src, b, _ := sourceBackup(t, 1<<20)
	_, dst := otherRepo(t, t.TempDir())
	if _, err := src.DeleteBackup(ctx, b.ID, false); err != nil {
		t.Fatal(err)
	}
	if st, err := src.GC(ctx, repo.GCOptions{}); err != nil || st.BytesFreed == 0 {
		t.Fatalf("gc after the delete: %+v, %v; want the backup's blocks freed", st, err)
	}
	if _, err := gateway.CopyRecordForTest(src, b, dst); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "deleted meanwhile") {
		t.Errorf("a copy of a backup collected meanwhile: %v, want a conflict saying it was deleted", err)
	}
	if list, err := dst.ListBackups(ctx, gateway.ListFilter{AllProjects: true}); err != nil || len(list) != 0 {
		t.Errorf("the destination lists %d backups (%v) after the copy, want none", len(list), err)
	}
}

// A backup the destination deleted after a copy of it is not copied there again by a copy of
// every backup (--all, a policy): the source's manifest records the copy, so a gateway with an
// index made anew leaves it too. Copied by its id, it is copied again. Before, every --all
// run copied back what the destination's own retention had deleted.
func TestCopyAllLeavesWhatTheDestinationDeleted(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	vol := image(t, dir, "vol.img", 1<<20)
	var ids, sums []string
	for i := range 2 {
		if i > 0 {
			writeAt(t, vol, 300<<10, 5000, 7)
		}
		b, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: i > 0})
		if err != nil {
			t.Fatal(err)
		}
		ids, sums = append(ids, b.ID), append(sums, sha256File(t, vol))
	}
	_, dst := otherRepo(t, t.TempDir())
	other := gatewayOn(t, filepath.Join(dir, "repo"), filepath.Join(dir, "state-other")) // knows both backups
	all := func(what string, g *gateway.Service) []*gateway.CopyResult {
		t.Helper()
		var out []*gateway.CopyResult
		for _, id := range ids {
			res, err := g.CopyBackup(ctx, id, dst, gateway.CopyOptions{SkipDeletedThere: true})
			if err != nil {
				t.Fatalf("%s: copy %s: %v", what, id, err)
			}
			out = append(out, res)
		}
		return out
	}
	for i, res := range all("the first copy of all", src) {
		if !res.Copied || res.Skipped != "" {
			t.Fatalf("the first copy of all, backup %d: %+v, want copied", i, res)
		}
	}
	dstID := dst.Repository().Config().ID
	for i, id := range ids {
		m, err := src.Repository().GetManifest(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if c := m.Copies.To(dstID); c == nil || len(m.Copies) != 1 {
			t.Errorf("backup %d's manifest lists copies %+v, want one, to %s", i, m.Copies, dstID)
		}
		if cm, err := dst.Repository().GetManifest(ctx, id); err != nil || len(cm.Copies) != 0 {
			t.Errorf("the copy of backup %d lists copies %+v (%v), want none: they are the source's", i, cm.Copies, err)
		}
	}
	// backup show's copies: on the gateway that copied, on another after its catch-up, and
	// on an index made anew.
	catchUp(t, other)
	fresh := gatewayOn(t, filepath.Join(dir, "repo"), filepath.Join(dir, "state-fresh"))
	for what, g := range map[string]*gateway.Service{"the gateway that copied": src, "another after its catch-up": other, "an index made anew": fresh} {
		if c := record(t, g, ids[0]).Copies; len(c) != 1 || c[0].Repository != dstID || c[0].Location != dst.Location() || c[0].At.IsZero() {
			t.Errorf("%s: backup 0's copies %+v, want one, to %s at %s", what, c, dstID, dst.Location())
		}
	}
	// A member of the project sees when its backup was copied, not where: the destination is
	// an admin's to know, as a copy's job is. An admin sees both.
	member := as("bob", gateway.DefaultProject, false)
	for what, get := range map[string]func(context.Context) (*index.Backup, error){
		"backup show": func(c context.Context) (*index.Backup, error) { return src.Backup(c, ids[0]) },
		"the API's and the console's backup by id": func(c context.Context) (*index.Backup, error) {
			return src.BackupByID(c, ids[0])
		},
		"backup update": func(c context.Context) (*index.Backup, error) {
			d := "described"
			return src.UpdateBackup(c, ids[0], gateway.BackupUpdate{Description: &d})
		},
		"backup list": func(c context.Context) (*index.Backup, error) {
			l, err := src.ListBackups(c, gateway.ListFilter{})
			if err != nil || len(l) == 0 {
				return nil, fmt.Errorf("list: %d, %v", len(l), err)
			}
			return l[0], nil
		}} {
		if b, err := get(member); err != nil || len(b.Copies) != 1 || b.Copies[0].Location != "" || b.Copies[0].Repository != "" || b.Copies[0].At.IsZero() {
			t.Errorf("%s to a member: %+v (%v), want when and not where", what, b, err)
		}
		if b, err := get(ctx); err != nil || len(b.Copies) != 1 || b.Copies[0].Location != dst.Location() {
			t.Errorf("%s to an admin: %+v (%v), want where too", what, b, err)
		}
	}
	if c := record(t, src, ids[0]).Copies; len(c) != 1 || c[0].Location == "" {
		t.Errorf("a member's view changed the index's record: %+v", c)
	}
	if _, err := dst.DeleteBackup(ctx, ids[1], false); err != nil {
		t.Fatal(err)
	}
	for what, g := range map[string]*gateway.Service{"the source's gateway": src, "a gateway with an index made anew": fresh} {
		res := all(what, g)
		if res[0].Copied || res[0].Skipped != "" {
			t.Errorf("%s: the backup still there: %+v, want already there", what, res[0])
		}
		if res[1].Copied || !strings.Contains(res[1].Skipped, "deleted in the destination") {
			t.Errorf("%s: the backup deleted there: %+v, want skipped as deleted there", what, res[1])
		}
	}
	if _, err := dst.Backup(ctx, ids[1]); !errors.Is(err, gateway.ErrNotFound) {
		t.Fatalf("the deleted copy after copies of all: %v, want not found", err)
	}
	// By its id it is copied again, and restores there.
	res, err := src.CopyBackup(ctx, ids[1], dst, gateway.CopyOptions{})
	if err != nil || !res.Copied {
		t.Fatalf("a copy by id of the backup deleted there: %+v, %v; want copied", res, err)
	}
	if got := restoreSHA(t, dst, ctx, ids[1]); got != sums[1] {
		t.Errorf("the copy made again restores to %s, want %s", got, sums[1])
	}
	// A copy into a second repository lists neither copy: the list is the source backup's.
	_, dst2 := otherRepo(t, t.TempDir())
	if _, err := src.CopyBackup(ctx, ids[0], dst2, gateway.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if cm, err := dst2.Repository().GetManifest(ctx, ids[0]); err != nil || len(cm.Copies) != 0 {
		t.Errorf("the copy in a second repository lists copies %+v (%v), want none", cm.Copies, err)
	}
	if m, err := src.Repository().GetManifest(ctx, ids[0]); err != nil || len(m.Copies) != 2 {
		t.Errorf("the source backup copied to two repositories lists %+v (%v)", m.Copies, err)
	}
}

// A copy made before copies were recorded is recorded when a later copy finds it there
// already, so the destination's delete of it is left by the copies after that too.
func TestCopyFoundThereIsRecorded(t *testing.T) {
	ctx := adminCtx()
	src, b, _ := sourceBackup(t, 1<<20)
	_, dst := otherRepo(t, t.TempDir())
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{}); err != nil || !res.Copied {
		t.Fatalf("copy: %+v, %v", res, err)
	}
	gateway.ForgetCopiesForTest(t, src, b.ID)
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{SkipDeletedThere: true, DryRun: true}); err != nil || res.Copied || len(record(t, src, b.ID).Copies) != 0 {
		t.Fatalf("a dry run over the copy already there: %+v, %v; copies %+v, want nothing recorded", res, err, record(t, src, b.ID).Copies)
	}
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{SkipDeletedThere: true}); err != nil || res.Copied || res.Skipped != "" {
		t.Fatalf("a copy of all over the copy already there: %+v, %v; want already there", res, err)
	}
	m, err := src.Repository().GetManifest(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if m.Copies.To(dst.Repository().Config().ID) == nil || len(record(t, src, b.ID).Copies) != 1 {
		t.Fatalf("the copy found there is not recorded: manifest %+v, index %+v", m.Copies, record(t, src, b.ID).Copies)
	}
	if _, err := dst.DeleteBackup(ctx, b.ID, false); err != nil {
		t.Fatal(err)
	}
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{SkipDeletedThere: true}); err != nil || res.Copied || res.Skipped == "" {
		t.Errorf("a copy of all after the destination deleted it: %+v, %v; want skipped", res, err)
	}
}

// A copy over one the destination is deleting (a delete there that did not finish) says so and
// records nothing: taken for "already there", it was recorded, and every copy of all after it
// skipped the backup as deleted there, with no copy anywhere.
func TestCopyOverOneBeingDeletedThereSaysSo(t *testing.T) {
	ctx := adminCtx()
	src, b, _ := sourceBackup(t, 1<<20)
	_, dst := otherRepo(t, t.TempDir())
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{}); err != nil || !res.Copied {
		t.Fatalf("copy: %+v, %v", res, err)
	}
	if _, err := dst.Index().UpdateBackup(b.ID, func(r *index.Backup) error { r.Status = index.BackupDeleting; return nil }); err != nil {
		t.Fatal(err)
	}
	// A copy of all (a policy's) skips it: its copy was recorded, and it is being deleted there.
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{SkipDeletedThere: true}); err != nil || res.Copied || res.Skipped == "" {
		t.Fatalf("a copy of all over a recorded copy being deleted there: %+v, %v; want skipped", res, err)
	}
	gateway.ForgetCopiesForTest(t, src, b.ID)
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{}); !errors.Is(err, gateway.ErrConflict) || !strings.Contains(err.Error(), "deleting") {
		t.Fatalf("a copy over one being deleted there: %+v, %v; want a conflict saying so", res, err)
	}
	if got := record(t, src, b.ID).Copies; len(got) != 0 {
		t.Errorf("the source records a copy the destination is deleting: %+v", got)
	}
}

// A copy is not built on a copy of its parent that a verification there found damaged: it
// would keep the parent's unchanged blocks without reading them, the lost one with them. It
// reads in full, says why, and stores the lost block again from the source, which still holds
// it, as a backup of a volume does on a damaged parent.
func TestCopyIsNotBuiltOnADamagedCopyOfItsParent(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	vol, _ := distinctVolume(t, dir, "vm.img", 41)
	p, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: vol})
	if err != nil {
		t.Fatal(err)
	}
	dstDir := t.TempDir()
	_, dst := otherRepo(t, dstDir)
	if _, err := src.CopyBackup(ctx, p.ID, dst, gateway.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	damagePack(t, onlyPack(t, dstDir))
	if res, err := dst.VerifyBackup(ctx, p.ID, nil); !errors.Is(err, repo.ErrCorrupt) || res == nil || res.LostBytes == 0 {
		t.Fatalf("verify of the damaged copy: %+v, %v; want it damaged", res, err)
	}
	f, err := os.OpenFile(vol, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c, err := src.CreateBackup(ctx, gateway.BackupRequest{Volume: vol, Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	res, err := src.CopyBackup(ctx, c.ID, dst, gateway.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Base != "" {
		t.Errorf("the copy was built on %s, the damaged copy of its parent; want a full read", res.Base)
	}
	if v, err := dst.VerifyBackup(ctx, c.ID, nil); err != nil || v.LostBytes != 0 {
		t.Fatalf("verify of the incremental's copy: %+v, %v; want it sound", v, err)
	}
}

// A member of a policy's project sees that it copies, not where: not in the policy, and not
// in the error of a run whose copies failed (a path or an endpoint of the admin's), which
// reaches the member through the policy's status and the overview (found by review).
func TestAPolicysCopyTargetIsNotShownToMembers(t *testing.T) {
	ctx := adminCtx()
	src, dir := newService(t)
	if _, err := src.ManageVolume(ctx, gateway.ManageRequest{Path: image(t, dir, "vol.img", 256<<10), Name: "vm", Project: "p1"}); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(dir, "offsite-hv7-secret")
	pass := filepath.Join(dir, "offsite.pass")
	if err := os.WriteFile(pass, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	req := gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Project: "p1", AllOfProject: true, Schedule: "daily",
		CopyTarget: gateway.CopyTarget{CopyTo: secret, CopyPasswordFile: pass}}}
	if _, err := src.CreatePolicy(ctx, req); err != nil {
		t.Fatal(err)
	}
	// The admin who runs it is told why, where.
	if _, err := src.RunPolicy(ctx, "nightly"); err == nil || !strings.Contains(err.Error(), "copy target failed") || !strings.Contains(err.Error(), secret) {
		t.Fatalf("a run whose copy target is no repository, run by an admin: %v; want its copies failed, saying where", err)
	}
	member := as("bob", "p1", false)
	st, err := src.PolicyStatus(member, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.LastError, "copy target failed") || strings.Contains(st.LastError, "hv7") || strings.Contains(st.CopyTo, "hv7") || st.CopyPasswordFile != "" {
		t.Errorf("the policy as a member sees it: copy to %q (passphrase %q), last error %q; want neither where nor how, and the failure said", st.CopyTo, st.CopyPasswordFile, st.LastError)
	}
	if st, err := src.PolicyStatus(ctx, "nightly"); err != nil || st.CopyTo != secret {
		t.Errorf("the policy as an admin sees it: %+v, %v; want the target", st, err)
	}
	o, err := src.Overview(member, gateway.OverviewOptions{})
	if err != nil {
		t.Fatal(err)
	}
	said := false
	for _, c := range o.Concerns {
		if strings.Contains(c.Message, "hv7") {
			t.Errorf("a member's overview names the copy target: %s", c.Message)
		}
		said = said || strings.Contains(c.Message, "policy nightly")
	}
	if !said {
		t.Errorf("a member's overview does not say the policy failed: %+v", o.Concerns)
	}
	// A member may run it too: neither its error nor the status it returns says where.
	st, err = src.RunPolicy(member, "nightly")
	if err == nil || strings.Contains(err.Error(), "hv7") || st == nil || strings.Contains(st.CopyTo, "hv7") || st.CopyPasswordFile != "" {
		t.Errorf("a run by a member: %v, status %+v; want it failed, saying nowhere where", err, st)
	}
}

// TestACopyWhoseRecordDidNotLandIsRecordedLater: a copy whose record in the backup's manifest
// could not be written is not recorded in the index either, so the next copy that finds the
// backup there records it, in the manifest every gateway and a rebuilt index read. Before, the
// index alone kept it: no later copy recorded it, and a rebuilt index (or another gateway)
// copied the backup again once the destination had deleted it.
func TestACopyWhoseRecordDidNotLandIsRecordedLater(t *testing.T) {
	ctx := adminCtx()
	src, b, _ := sourceBackup(t, 1<<20)
	_, dst := otherRepo(t, t.TempDir())
	f := faultyRepository(t, src)
	f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "manifests/"})
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{}); err != nil || !res.Copied {
		t.Fatalf("copy: %+v, %v", res, err)
	}
	if got := record(t, src, b.ID).Copies; len(got) != 0 {
		t.Fatalf("the index records a copy its manifest does not: %+v", got)
	}
	f.Reset()
	if res, err := src.CopyBackup(ctx, b.ID, dst, gateway.CopyOptions{SkipDeletedThere: true}); err != nil || res.Copied {
		t.Fatalf("a copy of all over the copy there: %+v, %v; want it found there", res, err)
	}
	m, err := src.Repository().GetManifest(context.Background(), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Copies) != 1 || len(record(t, src, b.ID).Copies) != 1 {
		t.Fatalf("after the next copy: manifest records %+v, index %+v; want the copy in both", m.Copies, record(t, src, b.ID).Copies)
	}
}

// Two copies of one backup into one repository that both found it without the backup (a
// policy's and an admin's, through two gateways of it): the first commits while the second
// writes its blocks. The second must not store its manifest over the first's, nor withdraw
// the first's committed copy when its own store fails after landing: before, every gateway
// of the destination forgot the backup and its gc reclaimed the blocks, while the source
// recorded the copy, so a copy of all skipped the backup there for good.
func TestACopyDoesNotWithdrawAnotherCommittedMeanwhile(t *testing.T) {
	ctx := adminCtx()
	src, b, sum := sourceBackup(t, 1<<20)
	one, two := twoDestinationGateways(t)
	var (
		once     sync.Once
		first    *gateway.CopyResult
		firstErr error
	)
	gateway.WrapBackendForTest(t, two, func(be backend.Backend) backend.Backend {
		f := faulty.New(be, 1)
		f.Add(faulty.Rule{Methods: faulty.Put, Prefix: "manifests/", Effect: faulty.FailAfter, Times: 1})
		// The first copy runs, whole, as the second stores its first pack: after the
		// second found the destination without the backup, before it commits.
		return gateway.BeforePutForTest(f, func(key string) {
			if strings.HasPrefix(key, "packs/") {
				once.Do(func() { first, firstErr = src.CopyBackup(ctx, b.ID, one, gateway.CopyOptions{}) })
			}
		})
	})
	second, err := src.CopyBackup(ctx, b.ID, two, gateway.CopyOptions{})
	if firstErr != nil || first == nil || !first.Copied {
		t.Fatalf("the first copy: %+v, %v", first, firstErr)
	}
	if err != nil {
		t.Errorf("the second copy, over the first's committed meanwhile: %v", err)
	} else if second.Copied {
		t.Errorf("the second copy stored the backup again over the first's: %+v", second)
	}
	for i, dst := range []*gateway.Service{one, two} {
		if err := dst.SyncBackups(context.Background()); err != nil {
			t.Fatal(err)
		}
		list, err := dst.ListBackups(ctx, gateway.ListFilter{AllProjects: true})
		if err != nil || len(list) != 1 || list[0].ID != b.ID {
			t.Fatalf("gateway %d of the destination lists %+v, %v; want backup %s", i, list, err, b.ID)
		}
		if got := restoreSHA(t, dst, ctx, b.ID); got != sum {
			t.Errorf("gateway %d of the destination restores %s, want %s", i, got, sum)
		}
	}
}

// twoDestinationGateways opens a new destination repository (otherRepo) through two gateways
// with indexes of their own, closed when the test ends.
func twoDestinationGateways(t *testing.T) (one, two *gateway.Service) {
	t.Helper()
	cfg, one := otherRepo(t, t.TempDir())
	cfg.StateDir = filepath.Join(t.TempDir(), "state")
	two, err := gateway.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { two.Close() })
	return one, two
}
