package retention_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/gateway/retention"
	"github.com/cairn-backup/cairn/tests/testutil"
)

// TestApplyMatchesRestic makes restic snapshots with the times of a small history in a
// scratch repository and compares what "restic forget --dry-run --json" keeps, and why, with
// Apply. Every count rule has at least N buckets in the history, so restic's "oldest" extra
// (0.16 and later keep the oldest snapshot while a rule has counts left) does not apply and
// old and new restic must both agree. restic runs with TZ=UTC, so its buckets are UTC's.
func TestApplyMatchesRestic(t *testing.T) {
	restic := testutil.RequireCommand(t, "restic")
	hist := []string{
		"2024-11-30 10:00:00", "2024-12-31 23:30:00", "2025-01-01 00:30:00", "2025-01-05 12:00:00",
		"2025-01-06 08:00:00", "2025-02-14 10:00:00", "2025-02-28 22:00:00", "2025-03-01 09:00:00",
		"2025-03-01 09:40:00", "2025-03-02 18:00:00", "2025-03-03 07:00:00", "2025-03-03 07:30:00",
		"2025-03-03 08:15:00", "2025-03-03 21:00:00", "2025-03-04 01:00:00", "2025-03-04 01:45:00",
	}
	rules := []struct {
		rules retention.Rules
		flags []string
	}{
		{
			retention.Rules{Last: 2, Hourly: 3, Daily: 4, Weekly: 3, Monthly: 3, Yearly: 2, Within: 30 * time.Hour},
			[]string{"--keep-last", "2", "--keep-hourly", "3", "--keep-daily", "4", "--keep-weekly", "3",
				"--keep-monthly", "3", "--keep-yearly", "2", "--keep-within", "30h"},
		},
		{retention.Rules{Daily: 3, Weekly: 2}, []string{"--keep-daily", "3", "--keep-weekly", "2"}},
		{retention.Rules{Last: 1, Monthly: 4}, []string{"--keep-last", "1", "--keep-monthly", "4"}},
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "volume"), []byte("cairn"), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(restic, append(args, "--no-cache")...)
		cmd.Env = append(os.Environ(), "TZ=UTC", "HOME="+dir,
			"RESTIC_REPOSITORY="+filepath.Join(dir, "repo"), "RESTIC_PASSWORD=cairn-test")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("restic %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
		}
		return out
	}
	run("init", "-q")
	for _, ts := range hist {
		run("backup", "-q", "--host", "cairn-test", "--time", ts, src)
	}

	in := items(t, hist...)
	for _, tt := range rules {
		t.Run(tt.rules.String(), func(t *testing.T) {
			tt.rules.Location = time.UTC
			want := resticKeeps(t, run(append([]string{"forget", "--dry-run", "--json"}, tt.flags...)...))
			got := map[string]string{}
			for _, d := range retention.Apply(in, tt.rules) {
				if d.Keep {
					r := slices.Clone(d.Reasons)
					slices.Sort(r)
					got[d.ID] = strings.Join(r, ",")
				}
			}
			for _, it := range in {
				if got[it.ID] != want[it.ID] {
					t.Errorf("%s: Apply keeps for %q, restic for %q", it.ID, got[it.ID], want[it.ID])
				}
			}
		})
	}
}

// resticKeeps reads restic's forget JSON (one group) into kept UTC time → sorted reasons in
// Apply's words.
func resticKeeps(t *testing.T, out []byte) map[string]string {
	t.Helper()
	var groups []struct {
		Reasons []struct {
			Snapshot struct {
				Time time.Time `json:"time"`
			} `json:"snapshot"`
			Matches []string `json:"matches"`
		} `json:"reasons"`
	}
	if err := json.Unmarshal(out, &groups); err != nil || len(groups) != 1 {
		t.Fatalf("restic forget output (%v, %d groups): %s", err, len(groups), out)
	}
	keeps := map[string]string{}
	for _, r := range groups[0].Reasons {
		var reasons []string
		for _, m := range r.Matches {
			word, _, _ := strings.Cut(m, " ") // "daily snapshot", "within 30h"
			if !slices.Contains([]string{"last", "hourly", "daily", "weekly", "monthly", "yearly", "within"}, word) {
				t.Fatalf("restic keeps %s for %q, which Apply has no word for", r.Snapshot.Time, m)
			}
			reasons = append(reasons, word)
		}
		slices.Sort(reasons)
		keeps[r.Snapshot.Time.UTC().Format(time.DateTime)] = strings.Join(reasons, ",")
	}
	return keeps
}
