package tests

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// The repository is the truth: these are the three ways a committed backup used to be lost
// (issue "The repository is the truth"), as regression tests through the built binary.

// startCairn runs the binary against r in the background.
func (r *cairnRepo) start(args ...string) *cairnProcess {
	r.t.Helper()
	return startS3Cairn(r.t.(*testing.T), r.Env, args...)
}

// restoreMatches restores id to a new file and compares it with sha.
func (r *cairnRepo) restoreMatches(id, sha, dir string) {
	r.t.Helper()
	out := filepath.Join(dir, "check-"+id+".img")
	r.mustRun("--quiet", "backup", "restore", "--yes", id, "--to", out, "--wait")
	if got := testutil.SHA256File(r.t, out); got != sha {
		r.t.Fatalf("backup %s restored: sha256 %s, want %s", id, got, sha)
	}
	os.Remove(out)
}

// Scenario 1: a backup reset to error keeps its data through gc, even right after a backup
// that was killed mid-way left garbage behind.
func TestResetToErrorKeepsData(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "b.img")
	testutil.WriteImage(t, vol, 48*mib, 41, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)
	b := r.createBackup(vol)

	big := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, big, 192*mib, 42, testutil.Random)
	before := len(packFiles(t, r.Dir))
	p := r.start("--quiet", "backup", "create", big)
	waitFor(t, 60*time.Second, "the killed backup's first pack", func() bool { return len(packFiles(t, r.Dir)) > before })
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t, 30*time.Second)

	r.mustRun("backup", "reset-state", b.ID, "--state", "error")
	var st struct {
		Backups    int   `json:"backups"`
		BytesFreed int64 `json:"bytes_freed"`
	}
	r.mustJSON(&st, "--quiet", "repo", "gc")
	if st.BytesFreed == 0 {
		t.Errorf("gc freed nothing after a killed backup: %+v", st)
	}
	if st.Backups < 1 {
		t.Errorf("gc marked from %d backups, want the one in error too", st.Backups)
	}
	r.mustRun("backup", "reset-state", b.ID, "--state", "available")
	r.restoreMatches(b.ID, sha, dir)
	r.checkClean()
}

// Scenario 3: a delete of a backup that shares blocks with a running one, at many points of
// the running backup, behind a gateway; gc after each; the new backup restores byte-exact.
func TestDeleteRacingBackupThatSharesBlocks(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	v1 := filepath.Join(dir, "v1.img")
	testutil.WriteImage(t, v1, 96*mib, 43, testutil.Mixed)
	startGateway(t, r)
	for i, delay := range []time.Duration{0, 50 * time.Millisecond, 300 * time.Millisecond, 800 * time.Millisecond} {
		// Clones of one volume that differ in one 4 KiB block.
		v2 := filepath.Join(dir, fmt.Sprintf("v2-%d.img", i))
		data, err := os.ReadFile(v1)
		if err != nil {
			t.Fatal(err)
		}
		copy(data[int64(i+1)*7*mib:], []byte(strings.Repeat(fmt.Sprint(i), 4096)))
		if err := os.WriteFile(v2, data, 0o600); err != nil {
			t.Fatal(err)
		}
		sha2 := testutil.SHA256File(t, v2)
		a := r.createBackup(v1, "--wait")
		p := r.start("--quiet", "--format", "json", "backup", "create", v2, "--wait")
		time.Sleep(delay)
		r.mustRun("backup", "delete", "--yes", a.ID)
		res := p.wait(t, 2*time.Minute)
		if res.Code != 0 {
			t.Fatalf("backup of v2 (delete after %v): exit %d: %s", delay, res.Code, res.Stderr)
		}
		var bk backupJSON
		if err := jsonUnmarshal(res.Stdout, &bk); err != nil || bk.Status != "available" {
			t.Fatalf("backup of v2: %v %+v", err, bk)
		}
		r.mustRun("--quiet", "repo", "gc")
		r.checkClean()
		r.restoreMatches(bk.ID, sha2, dir)
	}
}

// Scenario 2: two state dirs on one bucket. Host 1 backs up while host 2 runs gc; host 1's
// backup restores from both hosts, host 2 lists it, and a second full backup of the same
// volume through host 2 uploads no new pack.
func TestTwoStateDirsOneBucket(t *testing.T) {
	srv := testutil.StartS3(t)
	dir := t.TempDir()
	h1 := newS3Repo(t, srv, "shared", nil)
	h2 := h1.elsewhere()
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 96*mib, 44, testutil.Mixed)
	sha := testutil.SHA256File(t, vol)
	old := filepath.Join(dir, "old.img")
	testutil.WriteImage(t, old, 16*mib, 45, testutil.Random)
	gone := h1.createBackup(old)
	h1.mustRun("backup", "delete", "--yes", gone.ID) // something for gc to reclaim

	before := packFilesOnServer(srv, "shared")
	p := h1.start("--quiet", "--format", "json", "backup", "create", vol)
	waitForPack(t, srv, "shared", before, p)
	var gcs int
	for {
		select {
		case <-p.done:
		default:
			h2.mustRun("--quiet", "repo", "gc")
			gcs++
			continue
		}
		break
	}
	res := p.wait(t, time.Minute)
	if res.Code != 0 {
		t.Fatalf("backup on host 1: exit %d: %s", res.Code, res.Stderr)
	}
	var b backupJSON
	if err := jsonUnmarshal(res.Stdout, &b); err != nil || b.Status != "available" {
		t.Fatalf("backup on host 1: %v %+v", err, b)
	}
	h2.mustRun("--quiet", "repo", "gc")
	found := false
	for _, x := range h2.listBackups() {
		found = found || x.ID == b.ID
	}
	if !found {
		t.Fatalf("host 2 does not list host 1's backup %s", b.ID)
	}
	h1.restoreMatches(b.ID, sha, dir)
	h2.restoreMatches(b.ID, sha, dir)
	h2.checkClean()

	packs := packFilesOnServer(srv, "shared")
	again := h2.createBackup(vol)
	if n := packFilesOnServer(srv, "shared"); n != packs || again.Stats.NewBytes != 0 {
		t.Errorf("second full through host 2: %d packs (was %d), %d new bytes; want no new pack", n, packs, again.Stats.NewBytes)
	}
	h1.restoreMatches(again.ID, sha, dir)
	t.Logf("host 2 ran gc %d times while host 1 backed up", gcs)
}

// Through a gateway, 'backup restore --wait' exits as the restore ended, and 'backup show'
// says how the newest restore of a backup ended.
func TestRestoreWaitReportsFailure(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 46, testutil.Random)
	startGateway(t, r)
	b := r.createBackup(vol, "--wait")
	ok := filepath.Join(dir, "ok.img")
	r.mustRun("--quiet", "backup", "restore", "--yes", b.ID, "--to", ok, "--wait")
	var shown struct {
		LastRestore struct{ Result, Target string } `json:"last_restore"`
	}
	r.mustJSON(&shown, "backup", "show", b.ID)
	if shown.LastRestore.Result != "succeeded" || shown.LastRestore.Target != ok {
		t.Fatalf("last_restore after a good restore: %+v", shown.LastRestore)
	}
	// Damage the pack in place (the gateway may hold it open, so removing it is not enough).
	f, err := os.OpenFile(onlyPack(t, r), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5a}, 64<<10), 4096); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out := filepath.Join(dir, "bad.img")
	msg := r.mustFail([]int{8}, "--quiet", "backup", "restore", "--yes", b.ID, "--to", out, "--wait")
	if !strings.Contains(msg, b.ID) {
		t.Errorf("failed restore: %q does not name the backup", msg)
	}
	r.mustJSON(&shown, "backup", "show", b.ID)
	if shown.LastRestore.Result != "failed" || shown.LastRestore.Target != out {
		t.Errorf("last_restore after a failed restore: %+v", shown.LastRestore)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("the failed restore left %s: %v", out, err)
	}
}
