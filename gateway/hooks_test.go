package gateway_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// markHooks are hooks that write PRE at offset pre of the volume and POST at offset post, and
// record each one's environment in dir: a backup whose point in time lies between them
// restores with PRE and without POST.
func markHooks(dir string, pre, post int) gateway.Hooks {
	return gateway.Hooks{
		Pre:  `env > "` + dir + `/pre.env"; printf PRE | dd of="$CAIRN_VOLUME_PATH" bs=1 seek=` + strconv.Itoa(pre) + ` conv=notrunc status=none`,
		Post: `env > "` + dir + `/post.env"; printf POST | dd of="$CAIRN_VOLUME_PATH" bs=1 seek=` + strconv.Itoa(post) + ` conv=notrunc status=none`,
	}
}

func readAt(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func envFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the hook did not run: %v", err)
	}
	return string(b)
}

// A backup with hooks takes its point in time after the pre-hook and before the post-hook, for
// a tracked image (its clone) and for one that is not tracked and not in use (a snapshot taken
// for the hooks, where without them the backup reads the volume itself); the hooks see the
// backup's variables and none of the gateway's CAIRN_* or AWS_* ones (the passphrase).
func TestBackupHooksTakeThePointInTimeBetweenThem(t *testing.T) {
	t.Setenv("CAIRN_PASSWORD", "the-passphrase")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "the-s3-secret")
	ctx := adminCtx()
	xfs := testutil.XFSReflinkDir(t, 1<<30)
	for _, track := range []bool{true, false} {
		s, _ := newService(t)
		dir := t.TempDir()
		vol := filepath.Join(xfs, map[bool]string{true: "tracked.img", false: "plain.img"}[track])
		testutil.WriteImage(t, vol, 1<<20, 71, testutil.Random)
		before := readAt(t, vol, 4096, 4)
		if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: "vm", TrackChanges: &track}); err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Hooks: markHooks(dir, 0, 4096)})
		if err != nil {
			t.Fatalf("tracked %v: backup with hooks: %v", track, err)
		}
		out := filepath.Join(dir, "out.img")
		if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, To: out}); err != nil {
			t.Fatal(err)
		}
		if got := readAt(t, out, 0, 3); string(got) != "PRE" {
			t.Errorf("tracked %v: the backup lacks what the pre-hook wrote: %q", track, got)
		}
		if got := readAt(t, out, 4096, 4); !bytes.Equal(got, before) {
			t.Errorf("tracked %v: the backup has what the post-hook wrote after its point in time: %q", track, got)
		}
		if got := readAt(t, vol, 4096, 4); string(got) != "POST" {
			t.Errorf("tracked %v: the post-hook did not run on the volume: %q", track, got)
		}
		pre, post := envFile(t, filepath.Join(dir, "pre.env")), envFile(t, filepath.Join(dir, "post.env"))
		for _, want := range []string{"CAIRN_HOOK=pre", "CAIRN_BACKUP_ID=" + b.ID, "CAIRN_VOLUME_NAME=vm", "CAIRN_VOLUME_PATH=" + vol, "CAIRN_PROJECT=admin"} {
			if !strings.Contains(pre, want+"\n") {
				t.Errorf("tracked %v: the pre-hook's environment lacks %s", track, want)
			}
		}
		if !strings.Contains(post, "CAIRN_HOOK=post\n") || !strings.Contains(post, "CAIRN_HOOK_RESULT=ok\n") {
			t.Errorf("tracked %v: the post-hook's environment:\n%s", track, post)
		}
		for _, secret := range []string{"the-passphrase", "the-s3-secret"} {
			if strings.Contains(pre+post, secret) {
				t.Errorf("tracked %v: a hook saw the gateway's %s", track, secret)
			}
		}
		// Equal to the volume as it was between the hooks.
		want, err := os.ReadFile(vol)
		if err != nil {
			t.Fatal(err)
		}
		copy(want[4096:], before)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("tracked %v: the restore differs from the volume between the hooks", track)
		}
		// An incremental with hooks: of a tracked image not in use, it would read the image
		// itself (bringing its base forward in place), so the hooks make it clone it.
		before = readAt(t, vol, 12288, 4)
		inc, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Incremental: true, Hooks: markHooks(dir, 8192, 12288)})
		if err != nil {
			t.Fatalf("tracked %v: incremental with hooks: %v", track, err)
		}
		out2 := filepath.Join(dir, "out2.img")
		if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: inc.ID, To: out2}); err != nil {
			t.Fatal(err)
		}
		if got := readAt(t, out2, 8192, 3); string(got) != "PRE" {
			t.Errorf("tracked %v: the incremental lacks what its pre-hook wrote: %q", track, got)
		}
		if got := readAt(t, out2, 12288, 4); !bytes.Equal(got, before) {
			t.Errorf("tracked %v: the incremental has what its post-hook wrote after its point in time: %q", track, got)
		}
		if got := readAt(t, out2, 4096, 4); string(got) != "POST" {
			t.Errorf("tracked %v: the incremental lacks what the first backup's post-hook wrote before it: %q", track, got)
		}
	}
}

// Hooks that fail, or that cannot run around a point in time: a failed or timed-out
// pre-hook refuses the backup with nothing recorded, and the post-hook still runs (a freeze
// half done is thawed); a volume that cannot be snapshotted is refused after the post-hook
// ran; a failed post-hook leaves the backup available and says so in its job's log; a
// member may give no hooks; a snapshot's backup takes none.
func TestBackupHooksThatFail(t *testing.T) {
	ctx := adminCtx()
	xfs := testutil.XFSReflinkDir(t, 1<<30)
	s, _ := newService(t)
	dir := t.TempDir()
	vol := filepath.Join(xfs, "vm.img")
	testutil.WriteImage(t, vol, 1<<20, 72, testutil.Random)
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	post := `echo "$CAIRN_HOOK_RESULT" > "` + dir + `/post.result"`
	noBackups := func(what string) {
		t.Helper()
		if bs, err := s.ListBackups(ctx, gateway.ListFilter{}); err != nil || len(bs) != 0 {
			t.Errorf("%s: backups %d, %v; want none recorded", what, len(bs), err)
		}
	}
	postResult := func(what string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, "post.result"))
		if err != nil {
			t.Fatalf("%s: the post-hook did not run: %v", what, err)
		}
		os.Remove(filepath.Join(dir, "post.result"))
		return string(b)
	}

	_, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Hooks: gateway.Hooks{Pre: "echo frozen half; exit 3", Post: post}})
	if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "pre-hook") || !strings.Contains(err.Error(), "exit status 3: frozen half") {
		t.Errorf("backup whose pre-hook fails: %v", err)
	}
	if r := postResult("failed pre-hook"); !strings.Contains(r, "exit status 3") {
		t.Errorf("the post-hook after a failed pre-hook was told %q", r)
	}
	noBackups("failed pre-hook")

	_, err = s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Hooks: gateway.Hooks{Pre: "sleep 30", Post: post, Timeout: gateway.Duration(300 * time.Millisecond)}})
	if err == nil || !strings.Contains(err.Error(), "killed after 300ms") {
		t.Errorf("backup whose pre-hook outlives --hook-timeout: %v", err)
	}
	postResult("timed-out pre-hook")
	noBackups("timed-out pre-hook")

	// Not snapshottable: a plain image outside XFS (the state dir's file system: ext4 or
	// tmpfs here, never reflinks).
	plain := filepath.Join(t.TempDir(), "plain.img")
	testutil.WriteImage(t, plain, 1<<20, 73, testutil.Random)
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: plain, Name: "plain"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "plain"}); err != nil {
		t.Fatalf("backup of the plain image without hooks: %v", err)
	}
	_, err = s.CreateBackup(ctx, gateway.BackupRequest{Volume: "plain", Hooks: gateway.Hooks{Pre: "true", Post: post}})
	if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "hooks need a point in time") {
		t.Errorf("backup with hooks of a volume that cannot be snapshotted: %v", err)
	}
	if r := postResult("no snapshot"); !strings.Contains(r, "cannot be snapshotted") {
		t.Errorf("the post-hook after a failed snapshot was told %q", r)
	}
	if bs, _ := s.ListBackups(ctx, gateway.ListFilter{Volume: "plain"}); len(bs) != 1 {
		t.Errorf("backups of the plain image: %d, want the one without hooks", len(bs))
	}

	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Hooks: gateway.Hooks{Post: "echo still frozen >&2; exit 1"}})
	if err != nil || b.Status != "available" {
		t.Fatalf("backup whose post-hook fails: %+v, %v; want it available", b, err)
	}
	job, err := s.Job(ctx, "backup/"+b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if log := strings.Join(job.Log, "\n"); !strings.Contains(log, `post-hook failed: exit status 1: still frozen`) {
		t.Errorf("the job's log does not tell the failed post-hook:\n%s", log)
	} else if strings.Contains(log, "echo still") {
		t.Errorf("the job's log, which the project's members see, shows the hook's command:\n%s", log)
	}

	member := as("bob", gateway.DefaultProject, false)
	if _, err := s.CreateBackup(member, gateway.BackupRequest{Volume: "vm", Hooks: gateway.Hooks{Pre: "true"}}); !errors.Is(err, gateway.ErrDenied) {
		t.Errorf("a member's backup with hooks: %v, want denied", err)
	}
	sn, err := s.CreateSnapshot(ctx, gateway.SnapshotRequest{Volume: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", SnapshotID: sn.ID, Hooks: gateway.Hooks{Pre: "true"}}); !errors.Is(err, gateway.ErrInvalid) {
		t.Errorf("a snapshot's backup with hooks: %v, want invalid", err)
	}
}

// A policy's hooks run around each of its backups: only an admin gives or changes them, a
// member may change the rest of the policy, and they are the repository's (a gateway opened
// anew runs them).
func TestPolicyHooks(t *testing.T) {
	ctx := adminCtx()
	xfs := testutil.XFSReflinkDir(t, 1<<30)
	dir := t.TempDir()
	cfg := newRepo(t, dir)
	s := gatewayOn(t, cfg.Repo, cfg.StateDir)
	for _, name := range []string{"a", "b"} {
		vol := filepath.Join(xfs, name+".img")
		testutil.WriteImage(t, vol, 256<<10, 74, testutil.Random)
		if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: name, Project: "p1"}); err != nil {
			t.Fatal(err)
		}
	}
	hooks := gateway.Hooks{
		Pre:  `printf PRE | dd of="$CAIRN_VOLUME_PATH" bs=1 seek=0 conv=notrunc status=none; echo "pre $CAIRN_VOLUME_NAME" >> "` + dir + `/hooks.log"`,
		Post: `echo "post $CAIRN_VOLUME_NAME $CAIRN_HOOK_RESULT" >> "` + dir + `/hooks.log"`,
	}
	member := as("bob", "p1", false)
	req := gateway.PolicyRequest{Policy: gateway.Policy{Name: "nightly", Project: "p1", AllOfProject: true, Schedule: "daily",
		Keep: gateway.KeepRules{Last: 2}, Hooks: hooks}}
	if _, err := s.CreatePolicy(member, req); !errors.Is(err, gateway.ErrDenied) {
		t.Fatalf("a member's policy with hooks: %v, want denied", err)
	}
	if _, err := s.CreatePolicy(ctx, req); err != nil {
		t.Fatal(err)
	}
	if up, err := s.UpdatePolicy(member, "nightly", nil, func(p *gateway.Policy) { p.Keep.Last = 3 }); err != nil {
		t.Errorf("a member's change of the keep rules of a policy with hooks: %v", err)
	} else if up.Pre != "(set by an admin)" {
		t.Errorf("a member's update shows the pre-hook %q", up.Pre)
	}
	// A member sees that there are hooks, not the admin's commands; the admin sees them.
	if st, err := s.PolicyStatus(member, "nightly"); err != nil || st.Pre != "(set by an admin)" || st.Post != "(set by an admin)" {
		t.Errorf("the policy as a member sees it: %+v, %v", st, err)
	}
	if ps, err := s.Policies(member); err != nil || len(ps) != 1 || strings.Contains(ps[0].Pre, "dd of=") {
		t.Errorf("the policies as a member lists them: %v", err)
	}
	if st, err := s.PolicyStatus(ctx, "nightly"); err != nil || st.Pre != hooks.Pre {
		t.Errorf("the policy as an admin sees it: %+v, %v", st, err)
	}
	if _, err := s.UpdatePolicy(member, "nightly", nil, func(p *gateway.Policy) { p.Post = "true" }); !errors.Is(err, gateway.ErrDenied) {
		t.Errorf("a member's change of a policy's hooks: %v, want denied", err)
	}
	// Another gateway on the repository runs it with the hooks its record holds.
	other := gatewayOn(t, cfg.Repo, filepath.Join(dir, "state-other"))
	if _, err := other.RunPolicy(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(filepath.Join(dir, "hooks.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pre a\npost a ok\n", "pre b\npost b ok\n"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the hooks' log lacks %q:\n%s", want, log)
		}
	}
	bs, err := other.ListBackups(ctx, gateway.ListFilter{AllProjects: true})
	if err != nil || len(bs) != 2 {
		t.Fatalf("the policy's backups: %d, %v", len(bs), err)
	}
	for _, b := range bs {
		out := filepath.Join(dir, b.ID+".img")
		if _, err := other.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, To: out}); err != nil {
			t.Fatal(err)
		}
		if got := readAt(t, out, 0, 3); string(got) != "PRE" {
			t.Errorf("backup %s of the policy lacks what its pre-hook wrote: %q", b.ID, got)
		}
	}
}

// Hooks stand for --force: a volume in use (here attached to a loop device) is backed up from
// a snapshot taken between them, where without hooks or --force it is refused.
func TestBackupHooksOfAVolumeInUse(t *testing.T) {
	ctx := adminCtx()
	s, _ := newService(t)
	dir := t.TempDir()
	vol := filepath.Join(testutil.XFSReflinkDir(t, 1<<30), "vm.img")
	testutil.WriteImage(t, vol, 1<<20, 75, testutil.Random)
	no := false
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: "vm", TrackChanges: &no}); err != nil {
		t.Fatal(err)
	}
	testutil.LoopDevice(t, vol, false)
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm"}); !errors.Is(err, gateway.ErrInUse) {
		t.Fatalf("backup of a volume in use without --force or hooks: %v, want in use", err)
	}
	before := readAt(t, vol, 4096, 4)
	b, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Hooks: markHooks(dir, 0, 4096)})
	if err != nil {
		t.Fatalf("backup with hooks of a volume in use: %v", err)
	}
	out := filepath.Join(dir, "out.img")
	if _, err := s.Restore(ctx, gateway.RestoreRequest{Backup: b.ID, To: out}); err != nil {
		t.Fatal(err)
	}
	if got := readAt(t, out, 0, 3); string(got) != "PRE" {
		t.Errorf("the backup lacks what the pre-hook wrote: %q", got)
	}
	if got := readAt(t, out, 4096, 4); !bytes.Equal(got, before) {
		t.Errorf("the backup has what the post-hook wrote after its point in time: %q", got)
	}
}

// snapshot create takes hooks as a backup does: the snapshot holds what the pre-hook wrote and
// not what the post-hook wrote; a failed pre-hook leaves no snapshot; a member gives none; a
// volume in use is snapshotted with hooks where without them or --force it is refused.
func TestSnapshotHooks(t *testing.T) {
	ctx := adminCtx()
	s, _ := newService(t)
	dir := t.TempDir()
	vol := filepath.Join(testutil.XFSReflinkDir(t, 1<<30), "vm.img")
	testutil.WriteImage(t, vol, 1<<20, 76, testutil.Random)
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	testutil.LoopDevice(t, vol, false)
	if _, err := s.CreateSnapshot(ctx, gateway.SnapshotRequest{Volume: "vm"}); !errors.Is(err, gateway.ErrInUse) {
		t.Fatalf("snapshot of a volume in use without --force or hooks: %v, want in use", err)
	}
	before := readAt(t, vol, 4096, 4)
	sn, err := s.CreateSnapshot(ctx, gateway.SnapshotRequest{Volume: "vm", Hooks: markHooks(dir, 0, 4096)})
	if err != nil {
		t.Fatalf("snapshot with hooks: %v", err)
	}
	if got := readAt(t, sn.Path, 0, 3); string(got) != "PRE" {
		t.Errorf("the snapshot lacks what the pre-hook wrote: %q", got)
	}
	if got := readAt(t, sn.Path, 4096, 4); !bytes.Equal(got, before) {
		t.Errorf("the snapshot has what the post-hook wrote after it: %q", got)
	}
	if env := envFile(t, filepath.Join(dir, "pre.env")); !strings.Contains(env, "CAIRN_SNAPSHOT_ID="+sn.ID+"\n") || strings.Contains(env, "CAIRN_BACKUP_ID") {
		t.Errorf("the pre-hook's environment for a snapshot:\n%s", env)
	}
	_, err = s.CreateSnapshot(ctx, gateway.SnapshotRequest{Volume: "vm", Name: "never", Hooks: gateway.Hooks{Pre: "exit 4"}})
	if !errors.Is(err, gateway.ErrInvalid) || !strings.Contains(err.Error(), "volume vm not snapshotted") {
		t.Errorf("snapshot whose pre-hook fails: %v", err)
	}
	if snaps, err := s.ListSnapshots(ctx, "", false); err != nil || len(snaps) != 1 {
		t.Errorf("snapshots after the failed pre-hook: %d, %v; want the first only", len(snaps), err)
	}
	if _, err := s.CreateSnapshot(as("bob", gateway.DefaultProject, false), gateway.SnapshotRequest{Volume: "vm", Hooks: gateway.Hooks{Pre: "true"}}); !errors.Is(err, gateway.ErrDenied) {
		t.Errorf("a member's snapshot with hooks: %v, want denied", err)
	}
}

// A hook given through a gateway runs in the working directory of the CLI that gave it (the
// command line the admin typed, with relative paths), not the gateway's.
func TestHooksRunInTheCallersDirectory(t *testing.T) {
	s, _ := newService(t)
	dir := t.TempDir()
	vol := filepath.Join(testutil.XFSReflinkDir(t, 1<<30), "vm.img")
	testutil.WriteImage(t, vol, 256<<10, 77, testutil.Random)
	ctx := gateway.WithWorkDir(adminCtx(), dir)
	if _, err := s.ManageVolume(ctx, gateway.ManageRequest{Path: vol, Name: "vm"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "freeze.sh"), []byte("#!/bin/sh\npwd > hook.cwd\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateBackup(ctx, gateway.BackupRequest{Volume: "vm", Hooks: gateway.Hooks{Pre: "./freeze.sh"}}); err != nil {
		t.Fatalf("backup whose pre-hook is a path relative to the caller's directory: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "hook.cwd")); err != nil || strings.TrimSpace(string(got)) != dir {
		t.Errorf("the hook ran in %q (%v), want the caller's %s", got, err, dir)
	}
}
