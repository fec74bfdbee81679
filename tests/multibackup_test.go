package tests

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// backup create with several volumes makes a backup of each with a line each; one that fails
// does not stop the others, the command exits non-zero and says which failed. --all backs up
// every volume of the project. Every backup restores to its volume's bytes.
func TestBackupCreateSeveral(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vols := map[string]string{}
	for i, name := range []string{"web", "db", "logs"} {
		path := filepath.Join(dir, name+".img")
		testutil.WriteImage(t, path, int64(2+i)*mib, int64(60+i), testutil.Mixed)
		r.mustRun("volume", "manage", path, "--name", name)
		vols[name] = path
	}
	missing := filepath.Join(dir, "missing.img")

	res := r.run("backup", "create", "web", missing, "db", "--name", "nightly")
	if res.Code == 0 {
		t.Fatalf("backup create with a missing volume: exit 0, want non-zero\nstdout: %s", res.Stdout)
	}
	okLine := regexp.MustCompile(`^(web|db): backup ([0-9a-f-]{36}) available, [0-9.]+ MiB, stored [0-9.]+ [KMG]?i?B new$`)
	lines := strings.Split(strings.TrimSpace(res.Stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("want one line per volume, got:\n%s", res.Stdout)
	}
	ids := map[string]string{}
	for _, l := range lines {
		if m := okLine.FindStringSubmatch(l); m != nil {
			ids[m[1]] = m[2]
		} else if !strings.HasPrefix(l, missing+": failed: ") {
			t.Errorf("unexpected result line %q", l)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("want web and db backed up despite the failure between them, got %v:\n%s", ids, res.Stdout)
	}
	if last := lastLine(res.Stderr); !strings.HasPrefix(last, "cairn: 1 of 3 backups failed ("+missing+"): ") {
		t.Errorf("last line of stderr %q, want it to say 1 of 3 failed and which", last)
	}
	for name, id := range ids {
		out := filepath.Join(dir, name+".restored")
		r.restoreTo(id, out)
		if testutil.SHA256File(t, out) != testutil.SHA256File(t, vols[name]) {
			t.Errorf("backup of %s restores to other bytes", name)
		}
	}

	// --all: every volume of the project. With -i, logs (never backed up) fails with exit 2
	// and the others are incrementals all the same.
	testutil.ScatterWrites(t, vols["web"], 70, 0.02, 4<<10, 16<<10)
	var all []struct {
		Volume        string `json:"volume"`
		ID            string `json:"id"`
		Status        string `json:"status"`
		IsIncremental bool   `json:"is_incremental"`
		Error         string `json:"error"`
	}
	res = r.run("--format", "json", "backup", "create", "--all", "-i")
	if err := json.Unmarshal([]byte(res.Stdout), &all); res.Code != 2 || err != nil {
		t.Fatalf("backup create --all -i: exit %d (want 2), %v\nstdout: %s\nstderr: %s", res.Code, err, res.Stdout, res.Stderr)
	}
	if len(all) != 3 {
		t.Fatalf("--all backed up %d volumes, want 3: %+v", len(all), all)
	}
	seen := map[string]bool{}
	for _, b := range all {
		seen[b.Volume] = true
		if b.Volume == "logs" {
			if !strings.Contains(b.Error, "no available backup") {
				t.Errorf("--all -i: logs: %+v, want the error that it has no backup to base an incremental on", b)
			}
			continue
		}
		if b.Status != "available" || b.Error != "" || !b.IsIncremental {
			t.Errorf("--all -i: %+v, want an available incremental", b)
		}
		out := filepath.Join(dir, b.Volume+".all")
		r.restoreTo(b.ID, out)
		if testutil.SHA256File(t, out) != testutil.SHA256File(t, vols[b.Volume]) {
			t.Errorf("--all backup of %s restores to other bytes", b.Volume)
		}
	}
	if !seen["web"] || !seen["db"] || !seen["logs"] {
		t.Errorf("--all missed a volume: %v", seen)
	}
	var list []backupJSON
	r.mustJSON(&list, "backup", "list")
	if len(list) != 4 {
		t.Errorf("%d backups listed, want 4", len(list))
	}

	// Bad combinations are refused before anything runs.
	for _, args := range [][]string{{"backup", "create"}, {"backup", "create", "--all", "web"}} {
		r.mustFail([]int{2}, args...)
	}
	res = r.run("backup", "create", "--all", "--quiet")
	if res.Code != 0 || !strings.HasSuffix(strings.TrimSpace(res.Stdout), fmt.Sprintf("%d backups of %d volumes: all succeeded", 3, 3)) {
		t.Errorf("backup create --all: exit %d, stdout:\n%s", res.Code, res.Stdout)
	}
	r.mustJSON(&list, "backup", "list", "--volume", "logs")
	if len(list) != 1 || list[0].IsIncremental {
		t.Errorf("after --all, logs has %+v, want one full backup", list)
	}
}
