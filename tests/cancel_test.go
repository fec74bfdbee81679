package tests

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// Ctrl-C (SIGINT) of an embedded 'backup create' cleans up after itself: the backup is not
// listed, not even as error, its volume is available, gc takes the repository back to its size
// before, earlier backups restore byte-exact and the volume backs up again.
func TestInterruptedBackupCleansUp(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	small := filepath.Join(dir, "small.img")
	testutil.WriteImage(t, small, 8*mib, 12, testutil.Mixed)
	earlier := r.chain(small, 1, 810)

	big := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, big, 300*mib, 13, testutil.Random)
	r.mustRun("volume", "manage", big, "--name", "big")
	packsBefore, statsBefore := len(packFiles(t, r.Dir)), r.stats()
	cmd := exec.Command(cairnBin, "--quiet", "backup", "create", "big", "--name", "interrupted")
	cmd.Env = cairnEnv(r.Env)
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	waitForNewPack(t, r.Dir, packsBefore)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("backup create after SIGINT: exit %d, want 130 (did it finish before the signal? make the volume larger): %s", code, stderr.String())
	}
	if msg := strings.TrimSpace(stderr.String()); !strings.Contains(msg, "cancelled") || !strings.Contains(msg, "removed") || strings.Contains(msg, "\n") {
		t.Errorf("backup create after SIGINT said %q, want one line saying it was cancelled and removed", msg)
	}

	for _, b := range r.listBackups("--all-projects") {
		if b.Name == "interrupted" {
			t.Errorf("the interrupted backup is still listed: %+v", b)
		}
	}
	if v := r.volume("big"); v.Status != "available" {
		t.Errorf("volume after the interrupted backup: %s, want available", v.Status)
	}
	r.mustRun("--quiet", "repo", "gc")
	if after := r.stats(); after.PackBytes > statsBefore.PackBytes || len(packFiles(t, r.Dir)) > packsBefore {
		t.Errorf("after gc: %d pack bytes in %d pack files; before the interrupted backup %d in %d",
			after.PackBytes, len(packFiles(t, r.Dir)), statsBefore.PackBytes, packsBefore)
	}
	r.checkClean()
	r.checkRestoresToFiles(earlier, dir)
	again := r.createBackup("big", "--name", "again")
	r.checkRestoresToFiles([]pointInTime{{backup: again, sha: testutil.SHA256File(t, big)}}, dir)
}
