package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
	"github.com/minio/minio-go/v7"
)

// The S3 suite runs the engine's scenarios, the faults and encryption against a real
// versitygw started by each test (testutil.StartS3), through the built binary.

// s3Env is the environment that points the binary at prefix in srv's bucket, reached at
// endpoint (the server or a fault proxy in front of it), with the index in stateDir.
func s3Env(srv *testutil.S3Server, endpoint, prefix, stateDir string, extra ...string) []string {
	env := []string{
		"CAIRN_REPO=s3://" + srv.Bucket + "/" + prefix,
		"CAIRN_STATE_DIR=" + stateDir,
		"AWS_ACCESS_KEY_ID=" + srv.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + srv.SecretKey,
	}
	if endpoint != "" {
		env = append(env, "AWS_ENDPOINT_URL="+endpoint)
	}
	return append(env, extra...)
}

// newS3Repo inits a repository at prefix of srv's bucket with its index in a new state dir.
func newS3Repo(t *testing.T, srv *testutil.S3Server, prefix string, extra []string, initArgs ...string) *cairnRepo {
	t.Helper()
	state := filepath.Join(t.TempDir(), "state")
	r := &cairnRepo{t: t, Dir: state, Env: s3Env(srv, srv.Endpoint, prefix, state, extra...)}
	r.mustRun(append([]string{"repo", "init"}, withEncryption(extra, initArgs)...)...)
	return r
}

// elsewhere returns the same repository seen from another, empty state dir: another machine
// that has only the bucket's credentials (and the passphrase in env).
func (r *cairnRepo) elsewhere(env ...string) *cairnRepo {
	r.t.Helper()
	state := filepath.Join(r.t.(*testing.T).TempDir(), "state")
	e := append(append(append([]string(nil), r.Env...), "CAIRN_STATE_DIR="+state), env...)
	return &cairnRepo{t: r.t, Dir: state, Env: e}
}

// bucketObjects returns every object under prefix/ in srv's bucket, by key.
func bucketObjects(t *testing.T, srv *testutil.S3Server, prefix string) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := srv.Client()
	out := map[string][]byte{}
	for oi := range c.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
		if oi.Err != nil {
			t.Fatalf("list %s/%s: %v", srv.Bucket, prefix, oi.Err)
		}
		o, err := c.GetObject(ctx, srv.Bucket, oi.Key, minio.GetObjectOptions{})
		if err != nil {
			t.Fatalf("get %s: %v", oi.Key, err)
		}
		b, err := io.ReadAll(o)
		o.Close()
		if err != nil {
			t.Fatalf("read %s: %v", oi.Key, err)
		}
		out[oi.Key] = b
	}
	return out
}

// s3Packs returns the keys of the pack objects under prefix/packs/.
func s3Packs(t *testing.T, srv *testutil.S3Server, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var keys []string
	for oi := range srv.Client().ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/packs/", Recursive: true}) {
		if oi.Err != nil {
			t.Fatalf("list packs: %v", oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	sort.Strings(keys)
	return keys
}

// objectsWith returns the keys of objects that contain needle.
func objectsWith(objects map[string][]byte, needle []byte) []string {
	var keys []string
	for k, b := range objects {
		if bytes.Contains(b, needle) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// packFilesOnServer counts the pack objects under prefix in the server's directory (cheaper
// than listing through S3 in a tight loop; versitygw renames an object into place whole).
func packFilesOnServer(srv *testutil.S3Server, prefix string) int {
	n := 0
	_ = filepath.WalkDir(filepath.Join(srv.Dir, srv.Bucket, prefix, "packs"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

// waitForPack waits until the bucket holds more than before packs under prefix, that is until
// a running backup has stored its first pack. It fails the test if p ends first.
func waitForPack(t *testing.T, srv *testutil.S3Server, prefix string, before int, p *cairnProcess) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if packFilesOnServer(srv, prefix) > before {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("cairn %v ended before it stored a pack: %s", p.cmd.Args[1:], p.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
	t.Fatal("no pack appeared in the bucket within 90s")
}

// cairnProcess is a running cairn whose output is kept.
type cairnProcess struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
}

// startS3Cairn starts the binary with env and args and returns at once.
func startS3Cairn(t *testing.T, env []string, args ...string) *cairnProcess {
	t.Helper()
	p := &cairnProcess{cmd: exec.Command(cairnBin, args...), done: make(chan struct{})}
	p.cmd.Env = cairnEnv(env)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start cairn %v: %v", args, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// whenLocked returns once a lock object of the repository at prefix is stored on srv: the
// command p runs holds its lock, so it is past opening the repository. It fails the test when
// p ends first, or after a minute.
func whenLocked(t *testing.T, srv *testutil.S3Server, prefix string, p *cairnProcess) {
	t.Helper()
	dir := filepath.Join(srv.Dir, srv.Bucket, prefix, "locks")
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("cairn %v ended before it took a lock: %s", p.cmd.Args[1:], p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("cairn %v took no lock in a minute", p.cmd.Args[1:])
		}
	}
}

// wait waits up to limit for the process to end and returns its result.
func (p *cairnProcess) wait(t *testing.T, limit time.Duration) cairnResult {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("cairn %v still runs %v later\nstderr: %s", p.cmd.Args[1:], limit, p.stderr.String())
	}
	return cairnResult{Stdout: p.stdout.String(), Stderr: p.stderr.String(), Code: p.cmd.ProcessState.ExitCode()}
}

// Scenario S3-1: every engine scenario against S3: a full and incrementals with scattered
// changes restored byte-exact to files and a loop device; a second full uploads no pack;
// export → empty state dir → import → restore; rebuild-index on a fresh state dir restores
// every backup and keeps the chains; delete and gc on S3; check --read-data clean.
func TestS3EngineScenarios(t *testing.T) {
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	const prefix = "engine"
	r := newS3Repo(t, srv, prefix, nil)
	vol := filepath.Join(dir, "vol.img")
	const size = 24 * mib
	testutil.WriteImage(t, vol, size, 11, testutil.Mixed)
	points := r.chain(vol, 3, 1100)
	for i, p := range points[1:] {
		if inc, full := p.backup.Stats.NewBytes, points[0].backup.Stats.NewBytes; inc <= 0 || inc > full/5 {
			t.Errorf("incremental %d stored %d bytes; want > 0 and far less than the full's %d", i+1, inc, full)
		}
	}
	r.checkRestoresToFiles(points, dir)

	// To a loop device full of old data, newest first.
	target := filepath.Join(dir, "target.img")
	testutil.WriteImage(t, target, size+4*mib, 12, testutil.Random)
	dev := testutil.LoopDevice(t, target, false)
	for _, i := range []int{len(points) - 1, 0} {
		r.restoreTo(points[i].backup.ID, dev)
		if got := testutil.SHA256Range(t, dev, size); got != points[i].sha {
			t.Errorf("point %d restored from S3 to %s: sha256 %s, want %s", i, dev, got, points[i].sha)
		}
	}

	// Dedup: a second full backup of the unchanged volume stores no pack.
	before := s3Packs(t, srv, prefix)
	if len(before) == 0 {
		t.Fatal("no pack objects under packs/ in the bucket")
	}
	again := r.createBackup(vol)
	if after := s3Packs(t, srv, prefix); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a second full backup of an unchanged volume uploaded packs: %d before, %d after", len(before), len(after))
	}
	if again.IsIncremental || again.Stats.NewBytes != 0 {
		t.Errorf("second full backup: incremental=%v new_bytes=%d, want a full storing nothing new", again.IsIncremental, again.Stats.NewBytes)
	}

	// Export, then import on a machine with an empty state dir.
	last := points[len(points)-1]
	var exp exportJSON
	r.mustJSON(&exp, "backup", "export", last.backup.ID)
	if exp.Service != "cairn.backup.drivers.s3" {
		t.Errorf("backup_service %q, want cairn.backup.drivers.s3", exp.Service)
	}
	// Another machine with an empty state dir already sees it (the index follows the
	// bucket), so importing it there is refused as present; it restores there.
	other := r.elsewhere()
	other.mustFail([]int{4}, "backup", "import", exp.Service, exp.URL)
	other.checkRestoresToFiles(points[len(points)-1:], dir)

	// The index is lost: another machine rebuilds it from the bucket alone.
	rebuilt := r.elsewhere()
	rebuilt.mustRun("--quiet", "repo", "rebuild-index")
	want := map[string]backupJSON{}
	for _, b := range r.listBackups() {
		want[b.ID] = b
	}
	got := rebuilt.listBackups()
	if len(got) != len(want) || len(got) != len(points)+1 {
		t.Fatalf("rebuild-index found %d backups, the original index has %d (want %d)", len(got), len(want), len(points)+1)
	}
	for _, b := range got {
		w := want[b.ID]
		if b.Status != "available" || b.ParentID != w.ParentID || b.IsIncremental != w.IsIncremental || b.VolumeID != w.VolumeID || b.Size != w.Size {
			t.Errorf("rebuilt backup %+v, want %+v", b, w)
		}
	}
	var vols []volumeJSON
	rebuilt.mustJSON(&vols, "volume", "list")
	if len(vols) != 1 || vols[0].Path != vol || vols[0].ID != points[0].backup.VolumeID {
		t.Errorf("rebuilt volumes %+v, want one with path %s and id %s", vols, vol, points[0].backup.VolumeID)
	}
	rebuilt.checkRestoresToFiles(points, dir)
	rebuilt.checkClean()

	// Delete and gc through the rebuilt index: the second full and the latest incremental go,
	// the incremental's own blocks are reclaimed from the bucket, the rest still restores.
	rebuilt.mustFail([]int{4}, "backup", "delete", "--yes", points[1].backup.ID)
	rebuilt.mustRun("backup", "delete", "--yes", again.ID)
	rebuilt.mustRun("backup", "delete", "--yes", last.backup.ID)
	var gc struct {
		BytesFreed int64 `json:"bytes_freed"`
	}
	rebuilt.mustJSON(&gc, "--quiet", "repo", "gc")
	if gc.BytesFreed <= 0 {
		t.Errorf("gc after deleting an incremental freed %d bytes, want > 0", gc.BytesFreed)
	}
	if n := len(rebuilt.listBackups()); n != len(points)-1 {
		t.Errorf("%d backups after two deletes, want %d", n, len(points)-1)
	}
	rebuilt.checkClean()
	rebuilt.checkRestoresToFiles(points[:len(points)-1], dir)
}

// Scenario S3-2: credentials never show: not in any output, the log file, repo stats, export
// URLs, the state dir (index) or the bucket; with the endpoint from --endpoint and from
// AWS_ENDPOINT_URL.
func TestS3CredentialsNeverShow(t *testing.T) {
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	logFile := filepath.Join(dir, "cairn.log")
	const prefix = "creds"
	const wrongSecret = "wrong-secret-4b1d0c9e77"
	// The repository is encrypted, the default: its passphrase must not show either.
	const passphrase = "passphrase-never-shown-7c2f"
	pw := "CAIRN_PASSWORD=" + passphrase
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 6*mib, 21, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)

	var seen []string
	run := func(env []string, codes []int, args ...string) string {
		t.Helper()
		res := runCairn(t, env, append([]string{"--log-file", logFile}, args...)...)
		seen = append(seen, res.Stdout, res.Stderr)
		ok := false
		for _, c := range codes {
			ok = ok || res.Code == c
		}
		if !ok {
			t.Fatalf("cairn %v: exit %d, want %v\nstderr: %s\nstdout: %s", args, res.Code, codes, res.Stderr, res.Stdout)
		}
		return res.Stdout
	}
	// Endpoint by flag, keys by variable.
	flagEnv := s3Env(srv, "", prefix, state, pw)
	ep := []string{"--endpoint", srv.Endpoint}
	out := run(flagEnv, []int{0}, append(ep, "repo", "init")...)
	if !strings.Contains(out, "s3://"+srv.Bucket+"/"+prefix) || !strings.Contains(out, filepath.Join(state, "index")) {
		t.Errorf("repo init: want the location and the index under --state-dir:\n%s", out)
	}
	run(flagEnv, []int{0}, append(ep, "volume", "manage", vol, "--name", "credvol")...)
	run(flagEnv, []int{0}, append(ep, "--quiet", "backup", "create", "credvol")...)
	// Endpoint by AWS_ENDPOINT_URL from here on.
	env := s3Env(srv, srv.Endpoint, prefix, state, pw)
	run(env, []int{0}, "--quiet", "backup", "create", "credvol", "--incremental")
	var bs []backupJSON
	if err := jsonUnmarshal(run(env, []int{0}, "--format", "json", "backup", "list"), &bs); err != nil || len(bs) != 2 {
		t.Fatalf("backup list: %v %+v", err, bs)
	}
	run(env, []int{0}, "backup", "show", bs[1].ID)
	var exp exportJSON
	if err := jsonUnmarshal(run(env, []int{0}, "--format", "json", "backup", "export", bs[1].ID), &exp); err != nil {
		t.Fatal(err)
	}
	run(env, []int{0}, "repo", "stats")
	run(env, []int{0}, "--format", "json", "repo", "stats")
	run(env, []int{0}, "repo", "check", "--read-data")
	restored := filepath.Join(dir, "restored.img")
	run(env, []int{0}, "--quiet", "backup", "restore", "--yes", bs[1].ID, "--to", restored)
	if got := testutil.SHA256File(t, restored); got != sha {
		t.Errorf("restored sha256 %s, want %s", got, sha)
	}
	state2 := filepath.Join(dir, "state2")
	env2 := s3Env(srv, srv.Endpoint, prefix, state2, pw)
	run(env2, []int{4}, "backup", "import", exp.Service, exp.URL) // already known from the bucket
	run(env2, []int{0}, "repo", "rebuild-index")
	run(env2, []int{0}, "repo", "gc")
	// Failures print what failed, never the keys.
	run(s3Env(srv, srv.Endpoint, prefix, state, pw, "AWS_SECRET_ACCESS_KEY="+wrongSecret), []int{6}, "backup", "list")
	run(s3Env(srv, srv.Endpoint, prefix, state, pw, "AWS_SECRET_ACCESS_KEY="+wrongSecret), []int{6}, "--secret-key", wrongSecret, "repo", "stats")
	run(env, []int{3}, "--repo", "s3://no-such-bucket/x", "backup", "list")
	run(env, []int{2}, "--repo", "s3://ab/x", "backup", "list") // a name S3 does not allow: the admin's mistake

	logged, err := os.ReadFile(logFile)
	if err != nil || len(logged) == 0 {
		t.Fatalf("the log file is empty or missing (%v): the grep below would prove nothing", err)
	}
	decoded, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(exp.URL, "cairn1."))
	if err != nil {
		t.Fatalf("export url is not base64url after its prefix: %v", err)
	}
	objects := bucketObjects(t, srv, prefix)
	for _, secret := range []string{srv.SecretKey, wrongSecret, srv.AccessKey, passphrase} {
		needle := []byte(secret)
		for i, s := range seen {
			if strings.Contains(s, secret) {
				t.Errorf("output %d of the binary shows the credential %q:\n%s", i, secret, s)
			}
		}
		if bytes.Contains(logged, needle) {
			t.Errorf("the log file holds the credential %q", secret)
		}
		if strings.Contains(exp.URL, secret) || bytes.Contains(decoded, needle) {
			t.Errorf("the export url carries the credential %q", secret)
		}
		for _, d := range []string{state, state2} {
			if hits := grepTree(t, d, "", needle); len(hits) > 0 {
				t.Errorf("the state dir holds the credential %q in %v", secret, hits)
			}
		}
		if hits := objectsWith(objects, needle); len(hits) > 0 {
			t.Errorf("the bucket holds the credential %q in %v", secret, hits)
		}
	}
}

// jsonUnmarshal is json.Unmarshal for a string.
func jsonUnmarshal(s string, v any) error {
	return json.Unmarshal([]byte(s), v)
}

// Scenario S3-3: a backend that cannot be reached at start fails with one line naming the
// endpoint and what failed, quickly, with the exit code for its kind.
func TestS3UnreachableAtStart(t *testing.T) {
	t.Parallel() // waits on retries, timeouts and its own server: overlaps the other such tests
	srv := testutil.StartS3(t)
	state := filepath.Join(t.TempDir(), "state")
	const prefix = "reach"
	good := s3Env(srv, srv.Endpoint, prefix, state)
	runCairnOK(t, good, "repo", "init", "--encryption", "none")

	closed := closedPort(t)
	host := strings.TrimPrefix(srv.Endpoint, "http://")
	cases := []struct {
		name  string
		env   []string
		code  int
		names string // the endpoint (or bucket) the line must name
		what  string // what failed
	}{
		{"refused", []string{"AWS_ENDPOINT_URL=http://" + closed}, 7, closed, "connection refused"},
		{"dns", []string{"AWS_ENDPOINT_URL=http://cairn-no-such-host.invalid:9000"}, 7, "cairn-no-such-host.invalid", "cannot resolve"},
		{"tls to plain http", []string{"AWS_ENDPOINT_URL=https://" + host}, 7, host, "tls"},
		{"wrong secret", []string{"AWS_SECRET_ACCESS_KEY=not-the-secret-key"}, 6, host, "secret key"},
		{"wrong access key", []string{"AWS_ACCESS_KEY_ID=nosuchaccesskey"}, 6, host, "access key"},
		{"missing bucket", []string{"CAIRN_REPO=s3://no-such-bucket/" + prefix}, 3, "no-such-bucket", "does not exist"},
		{"no repository at prefix", []string{"CAIRN_REPO=s3://" + srv.Bucket + "/nothing-here"}, 3, "nothing-here", "repo init"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env := append(append([]string(nil), good...), c.env...)
			for _, args := range [][]string{{"backup", "list"}, {"repo", "check"}} {
				start := time.Now()
				line := checkFailure(t, runCairn(t, env, args...), []int{c.code}, args)
				if el := time.Since(start); el > 20*time.Second {
					t.Errorf("%v took %v to fail; want a quick answer", args, el)
				}
				if !strings.Contains(line, c.names) || !strings.Contains(strings.ToLower(line), c.what) {
					t.Errorf("%v: %q; want it to name %q and say %q", args, line, c.names, c.what)
				}
				if strings.Contains(line, srv.SecretKey) {
					t.Errorf("%v: the message shows the secret key", args)
				}
			}
		})
	}
}

// runCairnOK runs the binary and fails the test unless it exits 0.
func runCairnOK(t *testing.T, env []string, args ...string) string {
	t.Helper()
	res := runCairn(t, env, args...)
	if res.Code != 0 {
		t.Fatalf("cairn %v: exit %d\nstderr: %s", args, res.Code, res.Stderr)
	}
	return res.Stdout
}

// closedPort returns a 127.0.0.1 address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// Scenario S3-4: the server dies while a backup uploads. The backup ends in error with a
// reason, quickly; earlier backups are unharmed; once the server is back the next backup
// succeeds and, after gc, check --read-data is clean.
func TestS3ServerStopsDuringBackup(t *testing.T) {
	t.Parallel() // waits on retries, timeouts and its own server: overlaps the other such tests
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	const prefix = "stop"
	r := newS3Repo(t, srv, prefix, nil)
	small := filepath.Join(dir, "small.img")
	testutil.WriteImage(t, small, 8*mib, 31, testutil.Mixed)
	earlier := []pointInTime{{sha: testutil.SHA256File(t, small)}}
	earlier[0].backup = r.createBackup(small)

	big := filepath.Join(dir, "big.img")
	const bigSize = 200 * mib
	testutil.WriteImage(t, big, bigSize, 32, testutil.Random)
	bigSHA := testutil.SHA256File(t, big)
	bounds := []string{"--retries", "2", "--timeout", "5s"}

	p := startS3Cairn(t, r.Env, append(bounds, "--quiet", "backup", "create", big)...)
	waitForPack(t, srv, prefix, packFilesOnServer(srv, prefix), p)
	srv.Stop()
	stopped := time.Now()
	res := p.wait(t, 90*time.Second)
	took := time.Since(stopped)
	t.Logf("the backup failed %v after the server stopped: %s", took, strings.TrimSpace(res.Stderr))
	line := checkFailure(t, res, []int{7}, []string{"backup", "create", big, "(server stopped)"})
	if !strings.Contains(line, "backend unavailable") || !strings.Contains(line, "big.img") {
		t.Errorf("the failure %q should say the backend is unavailable and name the volume", line)
	}
	if took > 30*time.Second {
		t.Errorf("the backup took %v to give up after the server stopped; want well under 30s with --retries 2 --timeout 5s", took)
	}

	srv.Start()
	var failed *backupJSON
	for _, b := range r.listBackups() {
		if b.ID != earlier[0].backup.ID {
			failed = &b
		}
	}
	if failed == nil || failed.Status != "error" || !strings.Contains(failed.FailReason, "unavailable") {
		t.Fatalf("the interrupted backup: %+v; want status error with a reason naming the unavailable backend", failed)
	}
	r.checkRestoresToFiles(earlier, dir)

	next := r.createBackup(big)
	r.checkRestoresToFiles([]pointInTime{{backup: next, sha: bigSHA}}, dir)
	r.mustRun("--quiet", "repo", "gc")
	r.checkClean()
	if out := r.mustRun("repo", "check"); strings.Contains(out, "note:") {
		t.Errorf("after gc, check still has notes:\n%s", out)
	}
	r.checkRestoresToFiles(earlier, dir)
}

// TestS3BackupWaitsOutARestartOfTheServer: with the default retries a backup waits out a
// store that stops answering for longer than its few quick retries last (a restart or a
// failover: here 6 s, where the retries of one request end within 3 s), says so once on
// stderr, and completes; it restores byte-exact.
func TestS3BackupWaitsOutARestartOfTheServer(t *testing.T) {
	t.Parallel() // waits on its own server's restart: overlaps the other such tests
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	const prefix = "restart"
	r := newS3Repo(t, srv, prefix, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 64*mib, 51, testutil.Random)
	sha := testutil.SHA256File(t, vol)

	// Slowed, so it still uploads when the server goes.
	p := startS3Cairn(t, r.Env, "--limit-upload", "16M", "-f", "json", "backup", "create", vol)
	res := restartAfterFirstPack(t, srv, prefix, p, "the backup")
	var b backupJSON
	if err := json.Unmarshal([]byte(res.Stdout), &b); err != nil || b.Status != "available" {
		t.Fatalf("backup create: %v %s", err, res.Stdout)
	}
	r.checkRestoresToFiles([]pointInTime{{backup: b, sha: sha}}, dir)
}

// restartAfterFirstPack waits until p, a cairn command writing under prefix of srv's bucket,
// has stored its first pack, then stops the server for 6 s (longer than the quick retries of
// one request last) and starts it again. It returns p's result, and fails the test unless p
// (what) ended well, having said on stderr that it waited for the store.
func restartAfterFirstPack(t *testing.T, srv *testutil.S3Server, prefix string, p *cairnProcess, what string) cairnResult {
	t.Helper()
	waitForPack(t, srv, prefix, packFilesOnServer(srv, prefix), p)
	srv.Stop()
	time.Sleep(6 * time.Second)
	srv.Start()
	res := p.wait(t, 5*time.Minute)
	if res.Code != 0 {
		t.Fatalf("%s through the server's restart: exit %d: %s", what, res.Code, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "does not answer") {
		t.Errorf("%s waited for the store without a word on stderr: %q", what, res.Stderr)
	}
	return res
}

// TestS3CheckWaitsOutARestartOfTheServer: 'repo check --read-data', hours at scale, waits out
// a store that stops answering for longer than its quick retries last, as a backup does, and
// finds the repository clean.
func TestS3CheckWaitsOutARestartOfTheServer(t *testing.T) {
	t.Parallel() // waits on its own server's restart: overlaps the other such tests
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	r := newS3Repo(t, srv, "check-restart", nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 64*mib, 52, testutil.Random)
	b := r.createBackup(vol)

	// Slowed, so it still reads when the server goes. The server goes once the check holds
	// its lock: past the repository's opening, which does not wait out a store that is down
	// (a fixed 1.5 s was too short under load: the check was still opening).
	p := startS3Cairn(t, r.Env, "--limit-download", "16M", "repo", "check", "--read-data")
	whenLocked(t, srv, "check-restart", p)
	srv.Stop()
	time.Sleep(6 * time.Second)
	srv.Start()
	res := p.wait(t, 5*time.Minute)
	if res.Code != 0 || !strings.Contains(res.Stdout, "no problems found") {
		t.Fatalf("check --read-data through the server's restart: exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "does not answer") {
		t.Errorf("the check waited for the store without a word on stderr: %q", res.Stderr)
	}

	// A backup's verification, as long a read, waits the same way.
	p = startS3Cairn(t, r.Env, "--limit-download", "16M", "--quiet", "backup", "verify", b.ID)
	whenLocked(t, srv, "check-restart", p)
	srv.Stop()
	time.Sleep(6 * time.Second)
	srv.Start()
	res = p.wait(t, 5*time.Minute)
	if res.Code != 0 || !strings.Contains(res.Stdout, "| ok ") {
		t.Fatalf("backup verify through the server's restart: exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
}

// gc's reads (its listing and its mark, hours at scale) wait out a restart of the store as a
// check's do, and it then removes what only a deleted backup used; the backup kept restores
// byte-exact and the repository checks clean. Before (2026-12-07), gc failed at the first
// request the restart refused. Its removals stay impatient (docs/design.md).
func TestS3GCWaitsOutARestartOfTheServer(t *testing.T) {
	t.Parallel() // waits on its own server's restart: overlaps the other such tests
	srv := testutil.StartS3(t)
	proxy := testutil.StartFaultProxy(t, srv.Endpoint)
	dir := t.TempDir()
	const prefix = "gc-restart"
	r := newS3Repo(t, srv, prefix, nil)
	gone, kept := filepath.Join(dir, "gone.img"), filepath.Join(dir, "kept.img")
	testutil.WriteImage(t, gone, 8*mib, 54, testutil.Random)
	testutil.WriteImage(t, kept, 8*mib, 55, testutil.Random)
	old := r.createBackup(gone)
	b := r.createBackup(kept)
	r.mustRun("backup", "delete", "--yes", old.ID)
	packs := func() int {
		ents, _ := os.ReadDir(filepath.Join(srv.Dir, srv.Bucket, prefix, "packs"))
		n := 0
		for _, e := range ents {
			sub, _ := os.ReadDir(filepath.Join(srv.Dir, srv.Bucket, prefix, "packs", e.Name()))
			n += len(sub)
		}
		return n
	}
	before := packs()

	// Each request slowed, so gc is still reading when the server goes, once it holds its
	// lock (past the repository's opening, which does not wait out a store that is down).
	env := append(append([]string{}, r.Env...), "AWS_ENDPOINT_URL="+proxy.Endpoint)
	proxy.SetMode(testutil.ProxyStall, 250*time.Millisecond)
	p := startS3Cairn(t, env, "repo", "gc")
	whenLocked(t, srv, prefix, p)
	srv.Stop()
	time.Sleep(6 * time.Second)
	srv.Start()
	res := p.wait(t, 5*time.Minute)
	proxy.SetMode(testutil.ProxyPass, 0)
	if res.Code != 0 {
		t.Fatalf("gc through the server's restart: exit %d\nstdout: %s\nstderr: %s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "does not answer") {
		t.Errorf("gc waited for the store without a word on stderr: %q", res.Stderr)
	}
	if after := packs(); after >= before {
		t.Errorf("gc through the restart removed nothing: %d packs before, %d after", before, after)
	}
	restored := filepath.Join(dir, "restored.img")
	r.restoreTo(b.ID, restored)
	if got, want := testutil.SHA256File(t, restored), testutil.SHA256File(t, kept); got != want {
		t.Fatalf("restore of the kept backup after gc: sha256 %s, want %s", got, want)
	}
	r.mustRun("repo", "check", "--read-data")
}

// Scenario S3-5: the server dies while a restore reads. The restore fails, non-zero, saying
// the target is incomplete, and the target volume is marked error; the backup stays
// available and restores once the server is back.
func TestS3ServerStopsDuringRestore(t *testing.T) {
	t.Parallel() // waits on retries, timeouts and its own server: overlaps the other such tests
	srv := testutil.StartS3(t)
	proxy := testutil.StartFaultProxy(t, srv.Endpoint)
	dir := t.TempDir()
	const prefix = "stop-restore"
	r := newS3Repo(t, srv, prefix, nil)
	r.Env = append(r.Env, "AWS_ENDPOINT_URL="+proxy.Endpoint)
	vol := filepath.Join(dir, "vol.img")
	const size = 48 * mib
	testutil.WriteImage(t, vol, size, 41, testutil.Random)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)

	target := filepath.Join(dir, "target.img")
	if err := os.WriteFile(target, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(target, size); err != nil {
		t.Fatal(err)
	}
	r.mustRun("volume", "manage", target, "--name", "target")

	// Slow every request, so the restore is still reading when the server goes.
	proxy.SetMode(testutil.ProxyStall, 250*time.Millisecond)
	p := startS3Cairn(t, r.Env, "--retries", "2", "--timeout", "5s", "--concurrency", "1", "--quiet",
		"backup", "restore", "--yes", b.ID, "--volume", "target")
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st syscall.Stat_t
		if err := syscall.Stat(target, &st); err == nil && st.Blocks > 0 {
			break // the restore has written
		}
		select {
		case <-p.done:
			t.Fatalf("the restore ended before it wrote: %s", p.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the restore wrote nothing within 60s")
		}
	}
	srv.Stop()
	proxy.SetMode(testutil.ProxyPass, 0)
	res := p.wait(t, 90*time.Second)
	line := checkFailure(t, res, []int{7}, []string{"backup", "restore", "--yes", b.ID, "(server stopped)"})
	if !strings.Contains(line, "incomplete") || !strings.Contains(line, target) {
		t.Errorf("the failure %q should say the restore of %s is incomplete", line, target)
	}

	// Every command opens the backend, so the records are read once the server is back.
	srv.Start()
	var v struct {
		Status     string `json:"status"`
		FailReason string `json:"fail_reason"`
	}
	r.mustJSON(&v, "volume", "show", "target")
	if v.Status != "error" || !strings.Contains(v.FailReason, "incomplete") {
		t.Errorf("target volume after the failed restore: %+v; want status error, reason incomplete", v)
	}
	if got := r.showBackup(b.ID); got.Status != "available" {
		t.Errorf("backup after the failed restore is %s, want available", got.Status)
	}
	r.mustRun("--quiet", "backup", "restore", "--yes", b.ID, "--volume", "target")
	if got := testutil.SHA256File(t, target); got != sha {
		t.Errorf("restored after the server came back: sha256 %s, want %s", got, sha)
	}
	r.mustJSON(&v, "volume", "show", "target")
	if v.Status != "available" {
		t.Errorf("target volume after a good restore is %s, want available", v.Status)
	}
}

// Scenario S3-6: 503s, connection resets and stalls longer than --timeout, from a proxy in
// front of the real server during a backup and a restore, are retried: both succeed
// byte-exact.
func TestS3FaultProxyRetries(t *testing.T) {
	srv := testutil.StartS3(t)
	proxy := testutil.StartFaultProxy(t, srv.Endpoint)
	dir := t.TempDir()
	const prefix = "faults"
	r := newS3Repo(t, srv, prefix, nil)
	r.Env = append(r.Env, "AWS_ENDPOINT_URL="+proxy.Endpoint)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 96*mib, 51, testutil.Random)
	sha := testutil.SHA256File(t, vol)

	args := []string{"--retries", "6", "--timeout", "1s", "--concurrency", "2", "--quiet", "--format", "json", "backup", "create", vol}
	p := startS3Cairn(t, r.Env, args...)
	waitForPack(t, srv, prefix, 0, p)
	n0 := proxy.Requests()
	proxy.Fail503(4)
	waitRequests(t, proxy, n0+4, p)
	proxy.SetMode(testutil.ProxyReset, 0)
	n1 := proxy.Requests()
	waitRequests(t, proxy, n1+2, p)
	proxy.SetMode(testutil.ProxyStall, 3*time.Second)
	n2 := proxy.Requests()
	waitRequests(t, proxy, n2+1, p)
	time.Sleep(1200 * time.Millisecond) // past --timeout: the stalled attempt is abandoned
	proxy.SetMode(testutil.ProxyPass, 0)
	select {
	case <-p.done:
		t.Fatalf("the backup ended while faults were injected: %s", p.stderr.String())
	default:
	}
	res := p.wait(t, 2*time.Minute)
	if res.Code != 0 {
		t.Fatalf("backup through 503s, resets and stalls: exit %d: %s", res.Code, res.Stderr)
	}
	var b backupJSON
	if err := jsonUnmarshal(res.Stdout, &b); err != nil || b.Status != "available" {
		t.Fatalf("backup through faults: %v %+v", err, b)
	}

	// A restore that meets the same faults at its start.
	proxy.Fail503(3)
	restored := filepath.Join(dir, "restored.img")
	r.mustRun("--retries", "6", "--quiet", "backup", "restore", "--yes", b.ID, "--to", restored)
	if got := testutil.SHA256File(t, restored); got != sha {
		t.Errorf("restore through 503s: sha256 %s, want %s", got, sha)
	}
	r.checkClean()
}

// waitRequests waits until the proxy has seen n requests, failing if p ends first.
func waitRequests(t *testing.T, proxy *testutil.FaultProxy, n int, p *cairnProcess) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for proxy.Requests() < n {
		select {
		case <-p.done:
			t.Fatalf("cairn ended before the proxy saw %d requests: %s", n, p.stderr.String())
		case <-time.After(2 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy saw %d requests in 30s, want %d", proxy.Requests(), n)
		}
	}
}

// Scenario S3-7: an encrypted repository on S3 leaves nothing readable about the volume's
// contents or names in the bucket, still deduplicates, refuses a wrong passphrase with exit
// 6, changes its passphrase, and rebuilds its index elsewhere with the new one.
func TestS3Encrypted(t *testing.T) {
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	const volName = "quokka-payroll-volume"
	marker := []byte("CAIRN-S3-PLAINTEXT-MARKER-8c2d41")
	vol := filepath.Join(dir, "quokka-payroll.img")
	data := make([]byte, 4*mib)
	_, _ = rand.Read(data) // random around the marker: the compressor cannot hide it
	for off := 0; off+200 < len(data); off += 16 << 10 {
		copy(data[off+100:], marker)
	}
	if err := os.WriteFile(vol, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sha := testutil.SHA256File(t, vol)
	needles := [][]byte{marker, []byte(volName), []byte("quokka-payroll"), []byte("quokka-backup")}

	// Control: without encryption the same grep does find them, so it can fail.
	plain := newS3Repo(t, srv, "plain", nil)
	plain.mustRun("volume", "manage", vol, "--name", volName)
	plain.createBackup(volName, "--name", "quokka-backup")
	plainObjects := bucketObjects(t, srv, "plain")
	for _, needle := range needles[:2] {
		if len(objectsWith(plainObjects, needle)) == 0 {
			t.Fatalf("control: %q is not in the unencrypted repository's objects, so the grep proves nothing", needle)
		}
	}

	const pw1, pw2 = "first s3 passphrase", "second s3 passphrase"
	const prefix = "enc"
	r := newS3Repo(t, srv, prefix, []string{"CAIRN_PASSWORD=" + pw1}) // encrypted: the default
	r.mustRun("volume", "manage", vol, "--name", volName)
	b := r.createBackup(volName, "--name", "quokka-backup", "--description", "quokka-payroll nightly")
	points := []pointInTime{{backup: b, sha: sha}}
	packs := s3Packs(t, srv, prefix)
	again := r.createBackup(volName)
	if after := s3Packs(t, srv, prefix); len(after) != len(packs) {
		t.Errorf("encrypted: a second full backup uploaded packs: %d before, %d after", len(packs), len(after))
	}
	points = append(points, pointInTime{backup: again, sha: sha})
	r.checkRestoresToFiles(points, dir)
	objects := bucketObjects(t, srv, prefix)
	if len(objects) == 0 {
		t.Fatal("no objects in the encrypted repository")
	}
	for _, needle := range needles {
		if hits := objectsWith(objects, needle); len(hits) > 0 {
			t.Errorf("plaintext %q found in the bucket in %v", needle, hits)
		}
	}

	wrong := append(append([]string(nil), r.Env...), "CAIRN_PASSWORD=not the passphrase")
	line := checkFailure(t, runCairn(t, wrong, "backup", "list"), []int{6}, []string{"backup", "list", "(wrong passphrase)"})
	if !strings.Contains(line, "passphrase") {
		t.Errorf("wrong passphrase: %q should say so", line)
	}

	r.Env = append(r.Env, "CAIRN_NEW_PASSWORD="+pw2)
	r.mustRun("repo", "passwd")
	old := append(append([]string(nil), r.Env...), "CAIRN_PASSWORD="+pw1)
	checkFailure(t, runCairn(t, old, "backup", "list"), []int{6}, []string{"backup", "list", "(old passphrase)"})
	r.Env = append(r.Env, "CAIRN_PASSWORD="+pw2)
	r.checkRestoresToFiles(points[:1], dir)

	// Another machine with only the bucket's credentials and the new passphrase.
	rebuilt := r.elsewhere()
	rebuilt.mustRun("--quiet", "repo", "rebuild-index")
	if n := len(rebuilt.listBackups()); n != 2 {
		t.Fatalf("rebuild-index of the encrypted repository found %d backups, want 2", n)
	}
	rebuilt.checkRestoresToFiles(points, dir)
	rebuilt.checkClean()
	// The rebuilt index holds names in clear (it is local state), but never the passphrase.
	for _, pw := range []string{pw1, pw2} {
		if hits := grepTree(t, rebuilt.Dir, "", []byte(pw)); len(hits) > 0 {
			t.Errorf("the state dir holds the passphrase %q in %v", pw, hits)
		}
	}

	// A key of its own for a second gateway host, in the bucket; then the first one's removed.
	const pw3 = "third s3 passphrase"
	withPw := func(pw string) []string { return append(append([]string(nil), r.Env...), "CAIRN_PASSWORD="+pw) }
	runCairnOK(t, append(withPw(pw2), "CAIRN_NEW_PASSWORD="+pw3), "repo", "key", "add", "--label", "gw2")
	var keys []keyJSON
	if err := json.Unmarshal([]byte(runCairnOK(t, withPw(pw3), "--format", "json", "repo", "key", "list")), &keys); err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Current || !keys[1].Current || keys[1].Label != "gw2" {
		t.Fatalf("keys in the bucket, listed with the new one's passphrase: %+v", keys)
	}
	runCairnOK(t, withPw(pw3), "repo", "key", "remove", keys[0].ID)
	checkFailure(t, runCairn(t, withPw(pw2), "backup", "list"), []int{6}, []string{"backup", "list", "(removed key)"})
	r.Env = withPw(pw3)
	r.checkRestoresToFiles(points[:1], dir)
}

// agentStandIn plays "cairn serve" (until SIGTERM) and passes everything else to the real
// binary: the Pacemaker agent's lifecycle is tested before cairn has a serve command.
const agentStandIn = `#!/bin/sh
for a in "$@"; do
	if [ "$a" = serve ]; then
		case " $* " in *" --help "*) echo "stand-in for cairn serve"; exit 0 ;; esac
		trap 'exit 0' TERM INT
		while :; do sleep 1; done
	fi
done
exec "%s" "$@"
`

// Scenario S3-8: the failover path. The Pacemaker agent (contrib/pacemaker/cairn) passes
// ocf-tester on a node with an empty state dir and only the bucket's credentials: its start
// rebuilds the index from the bucket, and every backup then restores byte-exact there.
func TestS3FailoverAgent(t *testing.T) {
	testutil.RequireRoot(t)
	ocfTester := testutil.RequireCommand(t, "ocf-tester")
	testutil.RequireCommand(t, "xmllint") // ocf-tester validates the meta-data with it
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	agent := filepath.Join(root, "contrib", "pacemaker", "cairn")

	srv := testutil.StartS3(t)
	dir := t.TempDir()
	const prefix = "ha"
	r := newS3Repo(t, srv, prefix, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 8*mib, 61, testutil.Mixed)
	points := r.chain(vol, 1, 6100)

	envFile := filepath.Join(dir, "cairn.env")
	creds := fmt.Sprintf("AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\nAWS_ENDPOINT_URL=%s\n", srv.AccessKey, srv.SecretKey, srv.Endpoint)
	if err := os.WriteFile(envFile, []byte(creds), 0o600); err != nil {
		t.Fatal(err)
	}
	binary := cairnBin
	if exec.Command(cairnBin, "serve", "--help").Run() != nil {
		binary = filepath.Join(dir, "cairn-standin")
		if err := os.WriteFile(binary, []byte(fmt.Sprintf(agentStandIn, cairnBin)), 0o755); err != nil {
			t.Fatal(err)
		}
		t.Log("cairn has no serve command yet: a stand-in plays it; rebuild-index is the real one")
	}
	state := filepath.Join(dir, "node-b-state")
	params := map[string]string{
		"repo": "s3://" + srv.Bucket + "/" + prefix, "state_dir": state, "env_file": envFile,
		"binary": binary, "pidfile": filepath.Join(dir, "cairn.pid"), "monitor_service": "no",
	}
	args := []string{"-n", "cairn-failover"}
	for k, v := range params {
		args = append(args, "-o", k+"="+v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ocfTester, append(args, agent)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ocf-tester: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "passed all tests") {
		t.Fatalf("ocf-tester did not pass:\n%s", out)
	}

	// The node's start rebuilt the index: it knows the chain and restores every backup.
	b := &cairnRepo{t: t, Dir: state, Env: s3Env(srv, srv.Endpoint, prefix, state)}
	if got := b.listBackups(); len(got) != len(points) || got[1].ParentID != points[0].backup.ID {
		t.Fatalf("after the agent's start the index has %+v, want the chain of %d", got, len(points))
	}
	b.checkRestoresToFiles(points, dir)

	// validate-all names what is wrong with the exit codes Pacemaker knows.
	validate := func(over map[string]string) int {
		cmd := exec.Command(agent, "validate-all")
		cmd.Env = append(os.Environ(), "OCF_ROOT=/usr/lib/ocf")
		for k, v := range params {
			cmd.Env = append(cmd.Env, "OCF_RESKEY_"+k+"="+v)
		}
		for k, v := range over {
			cmd.Env = append(cmd.Env, "OCF_RESKEY_"+k+"="+v) // the last one wins
		}
		err := cmd.Run()
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return exit.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	for _, c := range []struct {
		name string
		over map[string]string
		want int
	}{
		{"good", nil, 0},
		{"no repo", map[string]string{"repo": ""}, 6},                       // OCF_ERR_CONFIGURED
		{"no binary", map[string]string{"binary": "/nonexistent/cairn"}, 5}, // OCF_ERR_INSTALLED
		{"unreadable env file", map[string]string{"env_file": "/nonexistent/env"}, 6},
		{"bad rebuild_index", map[string]string{"rebuild_index": "sometimes"}, 6},
	} {
		if got := validate(c.over); got != c.want {
			t.Errorf("validate-all with %s: exit %d, want %d", c.name, got, c.want)
		}
	}
}
