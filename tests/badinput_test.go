package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// The bad-input tour through the CLI: every verb with missing, garbage, oversized,
// path-escaping, control-character, negative and huge arguments (NUL cannot pass through argv:
// the API tour sends it, with other projects' ids). Each gets one
// clear line, the right exit code, and leaves the repository and the index as they were.
func TestBadInputTour(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 2*mib, 30, testutil.Mixed)
	b := r.createBackup(vol, "--name", "good")
	r.createBackup("--project", "p1", vol) // another project's backup
	r.mustRun("--project", "p1", "volume", "create", "--size", "1M", "--name", "p1vol")

	snapshot := func() string {
		var sb strings.Builder
		for _, args := range [][]string{
			{"volume", "list", "--all-projects"}, {"backup", "list", "--all-projects"},
			{"snapshot", "list", "--all-projects"}, {"quota", "show", "admin"}, {"quota", "show", "p1"},
		} {
			sb.WriteString(r.mustRun(append([]string{"--format", "json"}, args...)...))
		}
		// Every object of the repository but the index (a cache), the locks (transient) and
		// the record of the last check and its second copy: 'repo repair --forget' of a
		// backup that is not damaged runs its check before it can say so, and that check is
		// recorded, on every gateway (docs/design.md, "The last gc and check in the
		// repository").
		sb.WriteString(treeListingExcept(t, r.Dir, "index", "locks", filepath.Join("meta", "last-run"), filepath.Join("meta-copies", "last-run")))
		return sb.String()
	}
	before := snapshot()

	long := strings.Repeat("x", 5000)
	for _, tc := range []struct {
		codes []int
		args  []string
	}{
		// backups
		{[]int{2}, []string{"backup", "create"}},
		{[]int{2, 3}, []string{"backup", "create", ""}},
		{[]int{2, 3}, []string{"backup", "create", "../../etc/passwd-nope"}},
		{[]int{2, 3}, []string{"backup", "create", long}},
		{[]int{2}, []string{"backup", "create", vol, "--name", "bad\x07name"}},
		{[]int{2}, []string{"backup", "create", vol, "--name", long}},
		{[]int{3}, []string{"backup", "show", "no-such-backup"}},
		{[]int{2, 3}, []string{"backup", "show", ""}},
		{[]int{2, 3}, []string{"backup", "show", "../" + b.ID}},
		{[]int{3}, []string{"backup", "delete", "--yes", "no-such-backup"}},
		{[]int{3}, []string{"backup", "restore", "--yes", "no-such-backup", "--to", filepath.Join(dir, "x.img")}},
		{[]int{2}, []string{"backup", "restore", "--yes", b.ID, "--to", filepath.Join(dir, "no-such-dir", "x.img")}},
		{[]int{2}, []string{"backup", "restore", "--yes", b.ID, "--to", "/proc/version"}},
		{[]int{2}, []string{"backup", "restore", "--yes", b.ID, "--to", filepath.Join(dir, "x.img"), "--volume", "vol"}},
		{[]int{2}, []string{"backup", "import", "cairn.backup.drivers.local", "garbage"}},
		{[]int{2}, []string{"backup", "import", "cairn.backup.drivers.local", "cairn1." + long}},
		{[]int{2}, []string{"backup", "import", "no.such.driver", "cairn1.x"}},
		{[]int{2}, []string{"backup", "reset-state", b.ID, "--state", "bogus"}},
		{[]int{3}, []string{"backup", "export", "no-such-backup"}},
		// volumes
		{[]int{2}, []string{"volume", "create", "--size", "-5G", "--name", "neg"}},
		{[]int{2}, []string{"volume", "create", "--size", "0", "--name", "zero"}},
		{[]int{2}, []string{"volume", "create", "--size", "10", "--name", "bare"}}, // 10 bytes, not 10 GiB
		{[]int{2}, []string{"volume", "create", "--size", "99999999999999999999T", "--name", "huge"}},
		{[]int{2}, []string{"volume", "create", "--size", "1M", "--name", "../escape"}},
		{[]int{2}, []string{"volume", "create", "--size", "1M", "--name", "ctl\x1bname"}},
		{[]int{2}, []string{"volume", "create", "--size", "garbage", "--name", "g"}},
		{[]int{2, 3}, []string{"volume", "manage", filepath.Join(dir, "missing.img")}},
		{[]int{2}, []string{"volume", "manage", dir}},
		{[]int{3}, []string{"volume", "show", "no-such-volume"}},
		{[]int{3}, []string{"volume", "delete", "no-such-volume"}},
		{[]int{3}, []string{"volume", "update", "no-such-volume", "--name", "x"}},
		{[]int{2}, []string{"volume", "update", vol}},
		{[]int{2}, []string{"volume", "update", vol, "--name", "../escape"}},
		{[]int{2}, []string{"volume", "update", vol, "--description", long}},
		{[]int{2}, []string{"rename", vol, long}},
		{[]int{2}, []string{"rename", vol, ""}},
		{[]int{2}, []string{"rename", vol}},
		// snapshots, quotas, repository
		{[]int{3}, []string{"snapshot", "show", "no-such-snapshot"}},
		{[]int{3}, []string{"snapshot", "delete", "no-such-snapshot"}},
		{[]int{2}, []string{"quota", "update", "p1", "--backups", "-7"}},
		{[]int{2}, []string{"quota", "update", "", "--backups", "1"}},
		{[]int{2}, []string{"repo", "repair", "--forget", b.ID}}, // not damaged
		{[]int{2}, []string{"--repo", filepath.Join(dir, "newrepo"), "repo", "init", "--block-size", "3K"}},
		{[]int{4}, []string{"repo", "init"}},        // exists
		{[]int{2}, []string{"repo", "key", "list"}}, // an unencrypted repository has no keys
		{[]int{2}, []string{"repo", "key", "remove"}},
		{[]int{2}, []string{"--repo", filepath.Join(dir, "newrepo"), "repo", "init", "--key-label", long}},
		{[]int{2}, []string{"--repo", filepath.Join(dir, "newrepo"), "repo", "init", "--encryption", "none", "--key-label", "x"}},
	} {
		res := r.run(tc.args...)
		checkFailure(t, res, tc.codes, tc.args)
	}
	// A path that is not there says what a volume is and how to make one.
	if msg := checkFailure(t, r.run("volume", "manage", filepath.Join(dir, "missing.img")), []int{2}, nil); !strings.Contains(msg, "block device or an image file") || !strings.Contains(msg, "volume create") {
		t.Errorf("volume manage of a missing path: %q should say what to give, or how to make one", msg)
	}
	if _, err := os.Stat(filepath.Join(dir, "newrepo", "config")); err == nil {
		t.Error("a refused repo init left a repository behind")
	}
	if after := snapshot(); after != before {
		t.Errorf("bad inputs changed the repository or the index:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// treeListingExcept is treeListing without the named folders (paths from dir).
func treeListingExcept(t *testing.T, dir string, skip ...string) string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(treeListing(t, dir), "\n") {
		keep := line != ""
		for _, s := range skip {
			if strings.HasPrefix(line, s+string(filepath.Separator)) {
				keep = false
			}
		}
		if keep {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
