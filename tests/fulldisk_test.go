package tests

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// The index of an S3 repository lives in the state directory, which other writers may fill.
// While its file system has less than the 64 MiB cairn keeps for the index, a backup is
// refused before it starts, saying what to do, and 'service list' reports the backup service
// down with the reason; restores still run. Once there is room, backups run again. Before, the
// backup ran, and Badger, which writes through memory maps of sparse files, could die of a
// SIGBUS when the disk filled under it.
func TestBackupRefusedWhileTheIndexHasNoRoom(t *testing.T) {
	srv := testutil.StartS3(t)
	fs := testutil.MountTmpfs(t, 160<<20)
	state := filepath.Join(fs, "state")
	r := &cairnRepo{t: t, Dir: state, Env: s3Env(srv, srv.Endpoint, "fullstate", state)}
	r.mustRun("repo", "init", "--encryption", "none")
	vol := filepath.Join(t.TempDir(), "vol.img")
	testutil.WriteImage(t, vol, 4<<20, 61, testutil.Random)
	r.mustRun("volume", "manage", vol, "--name", "vm")
	b1 := r.createBackup("vm")

	free := testutil.FillFS(t, fs, 40<<20)
	res := r.run("--quiet", "backup", "create", "vm", "--incremental")
	if res.Code == 0 || !strings.Contains(res.Stderr, "holds the index") || !strings.Contains(res.Stderr, "free space") || strings.Count(strings.TrimSpace(res.Stderr), "\n") != 0 {
		t.Fatalf("backup while the index's file system has 40 MiB free: exit %d: %q; want refused in one line that says to free space", res.Code, res.Stderr)
	}
	var svcs []struct {
		Binary         string `json:"binary"`
		State          string `json:"state"`
		DisabledReason string `json:"disabled_reason"`
	}
	r.mustJSON(&svcs, "service", "list")
	down := false
	for _, s := range svcs {
		down = down || s.Binary == "cairn-backup" && s.State == "down" && strings.Contains(s.DisabledReason, "holds the index")
	}
	if !down {
		t.Fatalf("service list while the index has no room: %+v; want cairn-backup down, saying why", svcs)
	}
	out := filepath.Join(t.TempDir(), "restored.img")
	r.restoreTo(b1.ID, out)
	if testutil.SHA256File(t, out) != testutil.SHA256File(t, vol) {
		t.Fatal("the restore while the index had no room differs from the volume")
	}

	free()
	b2 := r.createBackup("vm", "--incremental")
	r.restoreTo(b2.ID, out)
	if testutil.SHA256File(t, out) != testutil.SHA256File(t, vol) {
		t.Fatal("the incremental after space was freed restores different bytes")
	}
}
