package tests

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

type volumeIdentityJSON struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Identity string `json:"identity"`
}

// A volume managed again after 'volume unmanage' or 'volume delete' is the one it was: its id
// and backups come back, and --incremental works again. On an image file and on a loop device;
// every point restores byte-exact.
func TestVolumeIdentityAfterForgetting(t *testing.T) {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	r := newCairnRepo(t, nil)

	img := filepath.Join(dir, "file-vol.img")
	testutil.WriteImage(t, img, 6*mib, 61, testutil.Mixed)
	devImg := filepath.Join(dir, "dev-backing.img")
	testutil.WriteImage(t, devImg, 6*mib, 62, testutil.Mixed)
	dev := testutil.LoopDevice(t, devImg, false)

	for i, tc := range []struct{ name, path, prefix string }{
		{"file", img, "file:"},
		{"loop", dev, "loop:"},
	} {
		var v volumeIdentityJSON
		r.mustJSON(&v, "volume", "manage", tc.path, "--name", tc.name)
		if len(v.Identity) <= len(tc.prefix) || v.Identity[:len(tc.prefix)] != tc.prefix {
			t.Fatalf("%s: identity %q, want %s...", tc.name, v.Identity, tc.prefix)
		}
		full := r.createBackup(tc.name, "--name", tc.name+"-full")
		points := []pointInTime{{backup: full, sha: testutil.SHA256File(t, tc.path)}}

		for j, forget := range [][]string{
			{"volume", "unmanage", tc.name},
			{"volume", "delete", tc.name, "--force", "--yes"},
		} {
			r.mustRun(forget...)
			var again volumeIdentityJSON
			r.mustJSON(&again, "volume", "manage", tc.path, "--name", tc.name)
			if again.ID != v.ID || again.Identity != v.Identity {
				t.Errorf("%s: managed again after %v: %+v, want id %s and identity %s", tc.name, forget, again, v.ID, v.Identity)
			}
			testutil.ScatterWrites(t, tc.path, int64(100*i+j), 0.03, 4<<10, 32<<10)
			inc := r.createBackup(tc.name, "--incremental")
			if !inc.IsIncremental || inc.ParentID != points[len(points)-1].backup.ID || inc.VolumeID != v.ID {
				t.Errorf("%s: incremental after %v: %+v, want one based on %s", tc.name, forget, inc, points[len(points)-1].backup.ID)
			}
			if inc.Stats.ChangedBlocks >= inc.Stats.Blocks/2 {
				t.Errorf("%s: incremental after %v changed %d of %d blocks: it did not use its parent", tc.name, forget, inc.Stats.ChangedBlocks, inc.Stats.Blocks)
			}
			points = append(points, pointInTime{backup: inc, sha: testutil.SHA256File(t, tc.path)})
		}
		if bs := r.listBackups("--volume", tc.name); len(bs) != len(points) {
			t.Errorf("%s: backup list --volume shows %d backups, want %d", tc.name, len(bs), len(points))
		}
		r.checkRestoresToFiles(points, dir)
	}

	// The same path, another file (a copy put in place): a new volume, and no incremental.
	r.mustRun("volume", "unmanage", "file")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "copy.img")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, img); err != nil {
		t.Fatal(err)
	}
	var other volumeIdentityJSON
	r.mustJSON(&other, "volume", "manage", img, "--name", "file")
	old := r.listBackups("--all-projects")[0].VolumeID
	if other.ID == old {
		t.Errorf("a copy in place of the volume's file was taken for volume %s", old)
	}
	r.mustFail([]int{2}, "backup", "create", "file", "--incremental")
}
