//go:build linux && vmtest

package vm

import (
	"encoding/json"
	"strings"
	"testing"
)

// backup is the part of 'cairn backup create --format json' the tests read.
type backup struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	ReadBytes    int64  `json:"read_bytes"`
	ReadMode     string `json:"read_mode"`
	ReadFallback string `json:"read_fallback"`
}

// backupOf decodes the backup the scenario printed under key, failing unless it is available.
func (r results) backupOf(t *testing.T, scenario, key string) backup {
	t.Helper()
	if rc := r.int(t, scenario, key+".rc"); rc != 0 {
		t.Fatalf("%s: cairn %s exited %d (see the console log)", scenario, key, rc)
	}
	var b backup
	if err := json.Unmarshal([]byte(r.get(t, scenario, key)), &b); err != nil {
		t.Fatalf("%s %s: not JSON: %v", scenario, key, err)
	}
	if b.ID == "" || b.Status != "available" {
		t.Fatalf("%s %s: %+v, want an available backup", scenario, key, b)
	}
	return b
}

// expectZero fails unless every key of scenario is "0" (exit codes).
func (r results) expectZero(t *testing.T, scenario string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if v := r.get(t, scenario, k); v != "0" {
			t.Errorf("%s %s = %s, want 0", scenario, k, v)
		}
	}
}

// forceBackup checks an in-use backup through a snapshot: refused without --force, taken with
// it, nothing left behind, the restored file system clean; it logs the writer's longest pause.
func forceBackup(t *testing.T, r results, scen string) {
	t.Helper()
	r.expectZero(t, scen, "setup")
	if rc := r.int(t, scen, "refused.rc"); rc != 4 {
		t.Errorf("backup of the mounted volume without --force exited %d, want 4 (in use)", rc)
	}
	b := r.backupOf(t, scen, "backup")
	if left := r.get(t, scen, "leftovers"); left != "" {
		t.Errorf("--force left behind: %s", left)
	}
	r.expectZero(t, scen, "restore.rc", "fsck.rc")
	w := strings.Fields(r.get(t, scen, "writer"))
	if len(w) != 2 {
		t.Fatalf("writer result %q", w)
	}
	t.Logf("%s: backup %s read %d bytes (%s); the writer's longest pause was %s ms over %s writes; scenario took %s s",
		scen, b.ID, b.ReadBytes, b.ReadMode, w[0], w[1], r.get(t, scen, "seconds"))
	if r.int(t, scen, "writer") > 5000 {
		t.Errorf("the writer paused %s ms: the snapshot must not block it for long", w[0])
	}
}

// TestLVMForceClassic: 'backup create --force' of a mounted classic LV with a writer reads an
// LVM snapshot; the restore is fsck-clean and the snapshot is gone.
func TestLVMForceClassic(t *testing.T) {
	forceBackup(t, boot(t), "classic")
}
