package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

type copyJSON struct {
	Backup struct {
		ID            string `json:"id"`
		Status        string `json:"status"`
		IsIncremental bool   `json:"is_incremental"`
		ParentID      string `json:"parent_id"`
		ReadMode      string `json:"read_mode"`
		Stats         struct {
			ReadBytes int64 `json:"read_bytes"`
			NewBytes  int64 `json:"new_bytes"`
		} `json:"stats"`
	} `json:"backup"`
	Copied bool   `json:"copied"`
	Base   string `json:"base"`
}

// An offsite copy: a local repository's chain copied to a bucket with another passphrase, by
// the embedded CLI and then through a gateway serving the local repository (a relative
// passphrase file is the CLI's). Each incremental's copy reads only what changed; a copy made
// again does nothing; and from a machine that has only the bucket and its passphrase, every
// copy restores byte for byte.
func TestCopyToABucket(t *testing.T) {
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	src := newCairnRepo(t, []string{"CAIRN_PASSWORD=local-pass"})
	dst := newS3Repo(t, srv, "offsite", []string{"CAIRN_PASSWORD=offsite-pass"})
	vol := filepath.Join(dir, "vol.img")
	const size = 24 * mib
	testutil.WriteImage(t, vol, size, 51, testutil.Mixed)
	points := src.chain(vol, 2, 5100)

	to := "s3://" + srv.Bucket + "/offsite"
	copier := &cairnRepo{t: t, Dir: src.Dir, Env: append(append([]string(nil), src.Env...),
		"AWS_ENDPOINT_URL="+srv.Endpoint, "AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY="+srv.SecretKey,
		"CAIRN_TO_PASSWORD=offsite-pass")}
	copyState := filepath.Join(dir, "copy-state")
	var res []copyJSON
	copier.mustJSON(&res, "--quiet", "backup", "copy", "--all", "--to", to, "--to-state-dir", copyState, "--dry-run")
	if len(res) != len(points) || res[0].Copied || res[0].Base != "" || res[2].Base != points[1].backup.ID {
		t.Fatalf("copy --all --dry-run: %+v, want every backup, nothing copied, each incremental on its parent", res)
	}
	if out := dst.mustRun("--quiet", "--format", "json", "backup", "list"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("after a dry run the destination lists %s", out)
	}
	copier.mustJSON(&res, "--quiet", "backup", "copy", "--all", "--to", to, "--to-state-dir", copyState)
	if len(res) != len(points) {
		t.Fatalf("copy --all: %d results, want %d", len(res), len(points))
	}
	for i, r := range res {
		if !r.Copied || r.Backup.ID != points[i].backup.ID || r.Backup.Status != "available" {
			t.Fatalf("copy %d: %+v, want backup %s copied", i, r, points[i].backup.ID)
		}
		if i == 0 {
			continue
		}
		if r.Base != points[i-1].backup.ID || r.Backup.ParentID != points[i-1].backup.ID || r.Backup.ReadMode != "copy-diff" {
			t.Errorf("copy of incremental %d: base %q parent %q mode %q, want built on the copy of %s", i, r.Base, r.Backup.ParentID, r.Backup.ReadMode, points[i-1].backup.ID)
		}
		if r.Backup.Stats.ReadBytes <= 0 || r.Backup.Stats.ReadBytes > res[0].Backup.Stats.ReadBytes/10 {
			t.Errorf("copy of incremental %d read %d bytes, want only what changed (the full copy read %d)", i, r.Backup.Stats.ReadBytes, res[0].Backup.Stats.ReadBytes)
		}
	}
	copier.mustJSON(&res, "--quiet", "backup", "copy", "--all", "--to", to, "--to-state-dir", copyState)
	for i, r := range res {
		if r.Copied {
			t.Errorf("second copy --all copied backup %d again", i)
		}
	}

	// Through a gateway on the local repository: the passphrase file is named relative to
	// the CLI's working directory, which is not the gateway's.
	g := startGateway(t, copier)
	testutil.ScatterWrites(t, vol, 5199, 0.005, 4<<10, 64<<10)
	last := pointInTime{sha: testutil.SHA256File(t, vol)}
	last.backup = src.createBackup(vol, "--incremental", "--wait")
	points = append(points, last)
	work := filepath.Join(dir, "work")
	if err := os.MkdirAll(work, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(work, "offsite.pass"), []byte("offsite-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	viaGateway := runCairnIn(t, work, src.Env, "--quiet", "--format", "json", "backup", "copy", last.backup.ID,
		"--to", to, "--to-state-dir", "copy-state", "--to-password-file", "offsite.pass")
	if viaGateway.Code != 0 {
		t.Fatalf("copy through the gateway: exit %d: %s", viaGateway.Code, viaGateway.Stderr)
	}
	if err := json.Unmarshal([]byte(viaGateway.Stdout), &res); err != nil || len(res) != 1 || !res[0].Copied || res[0].Base != points[2].backup.ID {
		t.Errorf("copy through the gateway: %s (%v), want the new incremental copied on the copy of %s", viaGateway.Stdout, err, points[2].backup.ID)
	}
	if _, err := os.Stat(filepath.Join(work, "copy-state", "index")); err != nil {
		t.Errorf("the relative --to-state-dir given through the gateway is not in the CLI's working directory: %v", err)
	}
	g.stop()

	// Another machine: the bucket, its passphrase, an empty state dir. The volume is not
	// registered there, and its backups list by its name all the same.
	fresh := dst.elsewhere()
	var listed []backupJSON
	fresh.mustJSON(&listed, "backup", "list", "--volume", "vol.img")
	if len(listed) != len(points) {
		t.Errorf("the destination lists %d backups of volume vol.img, want %d", len(listed), len(points))
	}
	for _, p := range points {
		fresh.restoreMatches(p.backup.ID, p.sha, dir)
	}

	// The offsite's own retention deletes the newest copy: the next copy --all leaves it, says
	// so, and exits 0; copied by its id, it is there again.
	fresh.mustRun("--quiet", "backup", "delete", "--yes", last.backup.ID)
	again := copier.run("backup", "copy", "--all", "--to", to, "--to-state-dir", copyState)
	if again.Code != 0 || !strings.Contains(again.Stdout, "deleted there: not copied again") ||
		!strings.Contains(again.Stderr, "1 of these backups were deleted in the destination after an earlier copy") {
		t.Fatalf("copy --all after the destination deleted a copy: exit %d\nstdout: %s\nstderr: %s", again.Code, again.Stdout, again.Stderr)
	}
	if res := fresh.run("backup", "show", last.backup.ID); res.Code != 3 {
		t.Errorf("the copy the destination deleted, after copy --all: backup show exits %d, want 3 (not found)", res.Code)
	}
	copier.mustRun("--quiet", "backup", "copy", last.backup.ID, "--to", to, "--to-state-dir", copyState)
	fresh.restoreMatches(last.backup.ID, last.sha, dir)

	// The offsite keeps fewer: a prune there (its volumes are all gone: copies bring no volume
	// records) removes the older copies, and the next copy --all leaves them removed.
	fresh.mustRun("--quiet", "backup", "prune", "--all", "--keep-last", "2", "--yes")
	fresh.mustJSON(&listed, "backup", "list")
	if len(listed) != 2 {
		t.Fatalf("the destination after prune --all --keep-last 2 lists %d backups, want 2", len(listed))
	}
	copier.mustJSON(&res, "--quiet", "backup", "copy", "--all", "--to", to, "--to-state-dir", copyState)
	for _, r := range res {
		if r.Copied {
			t.Errorf("copy --all after the destination's prune copied %s again", r.Backup.ID)
		}
	}
	fresh.mustJSON(&listed, "backup", "list")
	if len(listed) != 2 {
		t.Errorf("the destination lists %d backups after copy --all, want the 2 its prune kept", len(listed))
	}
	for _, p := range points[len(points)-2:] {
		fresh.restoreMatches(p.backup.ID, p.sha, dir)
	}
}

// A copy between two S3 services with their own keys: the source's settings come from the
// environment, the destination's only from a configuration file given with --to-config (its
// endpoint, keys and passphrase file), whose secret key shows in no output. Every copy
// restores from the second service byte for byte.
func TestCopyBetweenTwoS3Services(t *testing.T) {
	one := testutil.StartS3(t)
	two := testutil.StartS3(t, testutil.WithKeys("offsiteaccess", "offsitesecret-9f8e7d6c5b4a"))
	dir := t.TempDir()
	src := newS3Repo(t, one, "onsite", []string{"CAIRN_PASSWORD=onsite-pass"})
	dst := newS3Repo(t, two, "offsite", []string{"CAIRN_PASSWORD=offsite-pass"})
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 8*mib, 52, testutil.Mixed)
	points := src.chain(vol, 1, 5200)

	pass := filepath.Join(dir, "offsite.pass")
	if err := os.WriteFile(pass, []byte("offsite-pass\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf, err := json.Marshal(map[string]string{"repo": "s3://" + two.Bucket + "/offsite", "endpoint": two.Endpoint,
		"access_key": two.AccessKey, "secret_key": two.SecretKey, "password_file": pass,
		"state_dir": filepath.Join(dir, "copy-state"), "log_file": "/ignored/by/copies"})
	if err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(dir, "offsite.json")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	out := src.run("--format", "json", "backup", "copy", "--all", "--to-config", confFile)
	if out.Code != 0 {
		t.Fatalf("copy --to-config: exit %d: %s", out.Code, out.Stderr)
	}
	if strings.Contains(out.Stdout+out.Stderr, two.SecretKey) {
		t.Errorf("the destination's secret key shows in the copy's output")
	}
	var res []copyJSON
	if err := json.Unmarshal([]byte(out.Stdout), &res); err != nil || len(res) != 2 || !res[0].Copied || res[1].Base != points[0].backup.ID {
		t.Fatalf("copy --to-config: %s (%v), want both backups copied, the incremental on the full's copy", out.Stdout, err)
	}
	fresh := dst.elsewhere()
	for _, p := range points {
		fresh.restoreMatches(p.backup.ID, p.sha, dir)
	}
	// A file without keys leaves the source's, which the second service refuses.
	keyless, err := json.Marshal(map[string]string{"repo": "s3://" + two.Bucket + "/offsite", "endpoint": two.Endpoint,
		"password_file": pass, "state_dir": filepath.Join(dir, "other-state")})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(confFile, keyless, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := src.run("backup", "copy", "--all", "--to-config", confFile)
	if bad.Code == 0 || !strings.Contains(bad.Stderr, "destination s3://"+two.Bucket+"/offsite") {
		t.Errorf("a copy to the second service with the first one's keys: exit %d: %s; want refused by the destination", bad.Code, bad.Stderr)
	}
	t.Logf("with the first service's keys: %s", bad.Stderr)
}

// A copy to a bucket waits out a restart of its server (longer than the quick retries of one
// request), says so once on stderr, and completes: the copy restores byte for byte.
func TestCopyWaitsOutARestartOfTheDestination(t *testing.T) {
	t.Parallel() // waits on its own server's restart: overlaps the other such tests
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	src := newCairnRepo(t, nil)
	dst := newS3Repo(t, srv, "restart-copy", nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 64*mib, 53, testutil.Random)
	sha := testutil.SHA256File(t, vol)
	b := src.createBackup(vol)

	env := append(append([]string(nil), src.Env...), "AWS_ENDPOINT_URL="+srv.Endpoint, "AWS_ACCESS_KEY_ID="+srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+srv.SecretKey)
	// Slowed, so it still uploads when the server goes.
	p := startS3Cairn(t, env, "--limit-upload", "16M", "-f", "json", "backup", "copy", b.ID,
		"--to", "s3://"+srv.Bucket+"/restart-copy", "--to-state-dir", filepath.Join(dir, "copy-state"))
	restartAfterFirstPack(t, srv, "restart-copy", p, "the copy")
	dst.elsewhere().restoreMatches(b.ID, sha, dir)
}

// A copy of a damaged backup writes nothing it has not verified: a flipped byte in the
// source's only pack stops the copy with an error naming the damage (exit 8), and the
// destination has no such backup.
func TestCopyOfADamagedBackupFails(t *testing.T) {
	dir := t.TempDir()
	src := newCairnRepo(t, nil)
	dst := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 4*mib, 54, testutil.Random)
	b := src.createBackup(vol)
	packs := packFiles(t, src.Dir)
	if len(packs) != 1 {
		t.Fatalf("the backup left %d packs, want 1", len(packs))
	}
	flipByte(t, packs[0], 1<<20)
	res := src.run("backup", "copy", b.ID, "--to", dst.Dir)
	if res.Code != 8 || !strings.Contains(res.Stderr, "checksum mismatch") || !strings.Contains(res.Stderr, "backup verify "+b.ID) {
		t.Errorf("a copy of a damaged backup: exit %d: %s; want 8, the damage named and what to run", res.Code, res.Stderr)
	}
	if out := dst.mustRun("--format", "json", "backup", "list"); strings.TrimSpace(out) != "[]" {
		t.Errorf("after the failed copy the destination lists %s", out)
	}
}
