package tests

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// startGateway runs 'cairn serve' on the repository and waits for its socket. The CLI then
// forwards every command to it.
func startGateway(t *testing.T, r *cairnRepo, args ...string) *gatewayProc {
	t.Helper()
	sock := filepath.Join(r.Dir, "cairn.sock")
	cmd := exec.Command(cairnBin, append([]string{"serve", "--quiet"}, args...)...)
	cmd.Env = cairnEnv(r.Env)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			t.Fatalf("cairn serve exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("cairn serve: no socket at %s after 15s: %s", sock, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return &gatewayProc{t: t, pid: cmd.Process.Pid, wait: func() error { <-exited; return nil }, sock: sock}
}

type gatewayProc struct {
	t    *testing.T
	pid  int
	wait func() error
	sock string
}

// stop ends the gateway with SIGTERM and waits for it.
func (g *gatewayProc) stop() {
	g.t.Helper()
	_ = syscall.Kill(g.pid, syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- g.wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(g.pid, syscall.SIGKILL)
		g.t.Fatal("cairn serve did not stop within 30s of SIGTERM")
	}
	if _, err := os.Stat(g.sock); err == nil {
		g.t.Fatalf("cairn serve left its socket %s behind", g.sock)
	}
}

// waitFor polls cond every 50 ms until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type gwVolume struct {
	ID, Name, Status, Path string
	FailReason             string `json:"fail_reason"`
}

func (r *cairnRepo) volume(ref string) gwVolume {
	r.t.Helper()
	var v gwVolume
	r.mustJSON(&v, "volume", "show", ref)
	return v
}

func (r *cairnRepo) backupStatus(id string) string {
	for _, b := range r.listBackups() {
		if b.ID == id {
			return b.Status
		}
	}
	return "gone"
}

func TestGatewayAsyncJobs(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm1.img")
	testutil.WriteImage(t, img, 48<<20, 11, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm1")
	gw := startGateway(t, r, "--job-workers", "1")

	// Through the gateway a backup is accepted at once and runs in the background.
	var b backupJSON
	r.mustJSON(&b, "backup", "create", "vm1", "--name", "first")
	if b.Status != "creating" {
		t.Fatalf("backup create through the gateway: status %q, want creating", b.Status)
	}
	waitFor(t, 60*time.Second, "the first backup to become available", func() bool { return r.backupStatus(b.ID) == "available" })
	want1 := testutil.SHA256File(t, img)

	// --wait follows it to the end; the incremental stores only the changes.
	testutil.ScatterWrites(t, img, 12, 0.01, 4<<10, 64<<10)
	want2 := testutil.SHA256File(t, img)
	var inc backupJSON
	r.mustJSON(&inc, "--quiet", "backup", "create", "vm1", "--incremental", "--wait")
	if inc.Status != "available" || !inc.IsIncremental || inc.ParentID != b.ID {
		t.Fatalf("incremental with --wait: %+v", inc)
	}

	// Restores through the gateway (relative paths are the CLI's, not the gateway's).
	for id, want := range map[string]string{b.ID: want1, inc.ID: want2} {
		out := filepath.Join(dir, "restored-"+id[:8]+".img")
		r.mustRun("--quiet", "backup", "restore", "--yes", id, "--to", out, "--wait")
		if got := testutil.SHA256File(t, out); got != want {
			t.Fatalf("restore of %s through the gateway: sha256 %s, want %s", id, got, want)
		}
	}

	// service list shows all three services up.
	out := r.mustRun("service", "list")
	for _, svc := range []string{"cairn-api", "cairn-backup", "cairn-volume"} {
		line := lineWith(out, svc)
		if !strings.Contains(line, " up ") {
			t.Fatalf("service list: %s is not up:\n%s", svc, out)
		}
	}
	gw.stop()

	// With the gateway gone, the same commands run embedded.
	if got := r.backupStatus(inc.ID); got != "available" {
		t.Fatalf("after the gateway stopped: incremental is %s", got)
	}
}

func lineWith(out, s string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestGatewayCancel: force delete cancels a running backup (seed 3.3) and reset-state cancels
// a restore (seed 3.5.3); nothing half-written survives and the repository checks clean.
func TestGatewayCancel(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	small := filepath.Join(dir, "small.img")
	testutil.WriteImage(t, small, 16<<20, 21, testutil.Mixed)
	big := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, big, 384<<20, 22, testutil.Random)
	r.mustRun("volume", "manage", small, "--name", "small")
	r.mustRun("volume", "manage", big, "--name", "big")
	base := r.createBackup("small", "--name", "base")
	want := testutil.SHA256File(t, small)
	startGateway(t, r, "--job-workers", "1")

	// A running backup of 384 MiB of random data, cancelled by force delete.
	var doomed backupJSON
	r.mustJSON(&doomed, "backup", "create", "big", "--name", "doomed")
	waitFor(t, 10*time.Second, "the big volume to be backing-up", func() bool { return r.volume("big").Status == "backing-up" })
	r.mustRun("backup", "delete", "--yes", "--force", doomed.ID)
	if got := r.backupStatus(doomed.ID); got != "gone" {
		t.Fatalf("force-deleted backup still listed as %s", got)
	}
	start := time.Now()
	waitFor(t, 5*time.Second, "the big volume to leave backing-up", func() bool { return r.volume("big").Status == "available" })
	t.Logf("volume left backing-up %v after the force delete", time.Since(start))

	// A restore queued behind a running backup, cancelled with reset-state: its target is
	// marked error, the backup's state is what we set.
	var blocker backupJSON
	r.mustJSON(&blocker, "backup", "create", "big", "--name", "blocker")
	var res struct {
		VolumeID string `json:"volume_id"`
	}
	r.mustJSON(&res, "backup", "restore", "--yes", base.ID, "--name", "target")
	r.mustRun("backup", "reset-state", base.ID, "--state", "error")
	waitFor(t, 60*time.Second, "the restore target to be marked error", func() bool { return r.volume(res.VolumeID).Status == "error" })
	if v := r.volume(res.VolumeID); !strings.Contains(v.FailReason, "incomplete") {
		t.Fatalf("cancelled restore target: fail_reason %q does not say the contents are incomplete", v.FailReason)
	}
	waitFor(t, 60*time.Second, "the blocker backup", func() bool { return r.backupStatus(blocker.ID) == "available" })

	// The base backup, set back to available, still restores byte-exact; gc and check are clean.
	r.mustRun("backup", "reset-state", base.ID, "--state", "available")
	out := filepath.Join(dir, "base.img")
	r.mustRun("--quiet", "backup", "restore", "--yes", base.ID, "--to", out, "--wait")
	if got := testutil.SHA256File(t, out); got != want {
		t.Fatalf("base backup after cancellations: sha256 %s, want %s", got, want)
	}
	r.mustRun("repo", "gc")
	if out := r.mustRun("repo", "check", "--read-data"); !strings.Contains(out, "no problems found") {
		t.Fatalf("check after cancellations:\n%s", out)
	}
}

// TestGatewayRestartSafety: a gateway killed mid-backup leaves no backup "creating": on
// restart it is error with a reason, and earlier backups are intact.
func TestGatewayRestartSafety(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, img, 384<<20, 31, testutil.Random)
	r.mustRun("volume", "manage", img, "--name", "big")
	small := filepath.Join(dir, "small.img")
	testutil.WriteImage(t, small, 8<<20, 32, testutil.Mixed)
	keep := r.createBackup(small, "--name", "keep")
	want := testutil.SHA256File(t, small)

	gw := startGateway(t, r)
	var b backupJSON
	r.mustJSON(&b, "backup", "create", "big")
	waitFor(t, 10*time.Second, "the volume to be backing-up", func() bool { return r.volume("big").Status == "backing-up" })
	_ = syscall.Kill(gw.pid, syscall.SIGKILL)
	_ = gw.wait()

	startGateway(t, r)
	var got backupJSON
	r.mustJSON(&got, "backup", "show", b.ID)
	if got.Status != "error" || !strings.Contains(got.FailReason, "interrupted") {
		t.Fatalf("backup killed with its gateway: %+v, want error/interrupted", got)
	}
	if v := r.volume("big"); v.Status != "available" {
		t.Fatalf("volume after restart: %s, want available", v.Status)
	}
	out := filepath.Join(dir, "keep.img")
	r.mustRun("--quiet", "backup", "restore", "--yes", keep.ID, "--to", out, "--wait")
	if sha := testutil.SHA256File(t, out); sha != want {
		t.Fatalf("earlier backup after the crash: sha256 %s, want %s", sha, want)
	}
	r.mustRun("repo", "gc")
	if out := r.mustRun("repo", "check", "--read-data"); !strings.Contains(out, "no problems found") {
		t.Fatalf("check after the crash:\n%s", out)
	}
}

// TestGatewayServiceHealth: the backup service reports down, with the reason, while its S3
// backend is unreachable, and up again when it is back (seed 3.6.1).
func TestGatewayServiceHealth(t *testing.T) {
	srv := testutil.StartS3(t)
	r := newS3Repo(t, srv, "health", nil)
	startGateway(t, r, "--retries=-1", "--timeout=1s")
	state := func() (string, string) {
		var svcs []struct {
			Binary         string `json:"binary"`
			State          string `json:"state"`
			DisabledReason string `json:"disabled_reason"`
		}
		r.mustJSON(&svcs, "service", "list")
		for _, s := range svcs {
			if s.Binary == "cairn-backup" {
				return s.State, s.DisabledReason
			}
		}
		t.Fatal("service list has no cairn-backup")
		return "", ""
	}
	if st, why := state(); st != "up" {
		t.Fatalf("cairn-backup with a healthy backend: %s (%s)", st, why)
	}
	srv.Stop()
	waitFor(t, 30*time.Second, "cairn-backup to go down", func() bool { st, _ := state(); return st == "down" })
	if _, why := state(); !strings.Contains(why, "unavailable") {
		t.Fatalf("cairn-backup is down without saying why: %q", why)
	}
	srv.Start()
	waitFor(t, 30*time.Second, "cairn-backup to come back up", func() bool { st, _ := state(); return st == "up" })
}

// TestGatewayMountShowsNewBackups: with --mount, the gateway's FUSE tree shows each backup as
// soon as it is available, without remounting, and its image is the volume at that time.
func TestGatewayMountShowsNewBackups(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireCommand(t, "fusermount3")
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 8<<20, 71, testutil.Mixed)
	r.mustRun("volume", "manage", img, "--name", "vm")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, r, "--mount", mnt)
	latest := filepath.Join(mnt, "volumes", "vm", "latest", "disk.img")
	for i := range 2 {
		if i > 0 {
			testutil.ScatterWrites(t, img, int64(72+i), 0.05, 4<<10, 64<<10)
		}
		want := testutil.SHA256File(t, img)
		var b backupJSON
		r.mustJSON(&b, "--quiet", "backup", "create", "vm", "--wait")
		waitFor(t, 10*time.Second, "the new backup in the mounted tree", func() bool {
			_, err := os.Stat(filepath.Join(mnt, "backups", b.ID, "disk.img"))
			return err == nil
		})
		if got := testutil.SHA256File(t, filepath.Join(mnt, "backups", b.ID, "disk.img")); got != want {
			t.Fatalf("backup %d in the gateway's tree: sha256 %s, want %s", i, got, want)
		}
		if got := testutil.SHA256File(t, latest); got != want {
			t.Fatalf("latest after backup %d: sha256 %s, want %s", i, got, want)
		}
	}
	gw.stop()
	if out, _ := exec.Command("mount").Output(); strings.Contains(string(out), mnt) {
		t.Fatalf("the gateway left its mount behind")
	}
}

// TestGatewayPasswdWhileServing: the passphrase changes while a gateway owns the index (passwd
// touches only the key objects), and the gateway keeps serving.
func TestGatewayPasswdWhileServing(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, []string{"CAIRN_PASSWORD=first"}, "--encryption", "aes-256-gcm")
	img := filepath.Join(dir, "vm.img")
	testutil.WriteImage(t, img, 2<<20, 81, testutil.Mixed)
	startGateway(t, r)
	r.mustRun("--quiet", "backup", "create", img, "--wait")
	res := runCairn(t, append(r.Env, "CAIRN_NEW_PASSWORD=second"), "repo", "passwd")
	if res.Code != 0 {
		t.Fatalf("repo passwd while a gateway runs: exit %d: %s", res.Code, res.Stderr)
	}
	if n := len(r.listBackups()); n != 1 { // through the gateway, which holds the key already
		t.Fatalf("after passwd the gateway lists %d backups, want 1", n)
	}
	line := checkFailure(t, runCairn(t, append(r.Env, "CAIRN_NEW_PASSWORD=third"), "repo", "passwd"), []int{6}, []string{"repo", "passwd"})
	if !strings.Contains(line, "wrong passphrase") {
		t.Fatalf("the old passphrase still opens the repository: %q", line)
	}
}

// Without --quiet, 'cairn serve' says where it serves, in every auth mode: with --auth noauth
// it once panicked comparing the two handlers it serves (the console is off there).
func TestServeAnnouncesItself(t *testing.T) {
	r := newCairnRepo(t, nil)
	for _, auth := range []string{"noauth", "token"} {
		args := []string{"serve", "--listen", "127.0.0.1:0", "--auth", auth}
		if auth == "token" {
			tokens := filepath.Join(t.TempDir(), "tokens")
			if err := os.WriteFile(tokens, []byte("s3cret-token-0123456789 admin admin admin\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--tokens", tokens)
		}
		cmd := exec.Command(cairnBin, args...)
		cmd.Env = cairnEnv(r.Env)
		var stderr lockedBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var said string
		deadline := time.Now().Add(15 * time.Second)
		for said == "" {
			select {
			case err := <-exited:
				t.Fatalf("--auth %s: cairn serve exited (%v): %s", auth, err, stderr.String())
			case <-time.After(50 * time.Millisecond):
			}
			if s := stderr.String(); strings.Contains(s, "(Ctrl-C stops)") {
				said = s[strings.LastIndex(s, "cairn: serving"):]
			} else if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				<-exited
				t.Fatalf("--auth %s: cairn serve said nothing in 15s: %q", auth, s)
			}
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := <-exited; err != nil {
			t.Errorf("--auth %s: cairn serve stopped with %v: %s", auth, err, stderr.String())
		}
		if !strings.Contains(said, "cairn: serving "+r.Dir) || !strings.Contains(said, "http://127.0.0.1:0/v3") ||
			strings.Contains(said, "console") != (auth == "token") {
			t.Errorf("--auth %s: cairn serve said %q", auth, said)
		}
	}
}

// TestGatewayStopEndsJobsAWaitingCommandFollows: SIGTERM to a gateway cancels its running
// backup even while a 'backup create --wait' follows it: the backup ends as error
// (interrupted), the waiting command fails, and the gateway stops at once. Before, the
// servers' shutdown waited for the waiting command's request, which waited for the backup,
// and the jobs were cancelled only after the 30 s shutdown bound, when the gateway no longer
// waited for them to record their end.
func TestGatewayStopEndsJobsAWaitingCommandFollows(t *testing.T) {
	srv := testutil.StartS3(t)
	proxy := testutil.StartFaultProxy(t, srv.Endpoint)
	dir := t.TempDir()
	r := newS3Repo(t, srv, "stop-wait", nil)
	r.Env = append(r.Env, "AWS_ENDPOINT_URL="+proxy.Endpoint)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 24*mib, 51, testutil.Random)
	r.mustRun("volume", "manage", vol, "--name", "vol")
	gw := startGateway(t, r, "--job-workers", "1", "--concurrency", "1", "--timeout", "60s")

	// Every request is slow: the backup is still running when the gateway is told to stop.
	// One second each: the cancelled job records its end and the gateway releases what it
	// holds in about ten requests, one after another (19.9 s at two seconds each, against the
	// 20 s bound below, which beside other tests it missed); the bug this test keeps out waited
	// for the servers' 30 s shutdown bound whatever the stall.
	proxy.SetMode(testutil.ProxyStall, time.Second)
	p := r.start("--quiet", "backup", "create", "vol", "--wait")
	waitFor(t, 20*time.Second, "the volume to be backing-up", func() bool { return r.volume("vol").Status == "backing-up" })
	start := time.Now()
	_ = syscall.Kill(gw.pid, syscall.SIGTERM)
	stopped := make(chan struct{})
	go func() { _ = gw.wait(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatalf("cairn serve still runs 20s after SIGTERM, with a backup a command waits for")
	}
	t.Logf("the gateway stopped %v after SIGTERM", time.Since(start))
	res := p.wait(t, 10*time.Second)
	if res.Code == 0 {
		t.Fatalf("backup create --wait of a backup the gateway's stop interrupted: exit 0\n%s%s", res.Stdout, res.Stderr)
	}
	proxy.SetMode(testutil.ProxyPass, 0)
	bs := r.listBackups()
	if len(bs) != 1 {
		t.Fatalf("%d backups after the gateway stopped, want the one it interrupted", len(bs))
	}
	for _, b := range bs {
		if b.Status != "error" {
			t.Fatalf("backup interrupted by the gateway's stop is %s, want error", b.Status)
		}
	}
	if v := r.volume("vol"); v.Status != "available" {
		t.Fatalf("volume after the gateway stopped: %s, want available", v.Status)
	}
}
