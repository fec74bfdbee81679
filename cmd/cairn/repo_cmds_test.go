package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// repo check --sample reads a share of the packs and says how many; a bad share is a usage
// error (exit 2) of one line, the same for every kind of bad value (golden).
func TestRepoCheckSampleGolden(t *testing.T) {
	repoDir := filepath.Join(t.TempDir(), "repo")
	vol := filepath.Join(t.TempDir(), "vol.img")
	testutil.WriteImage(t, vol, 3<<20, 7, testutil.Mixed)
	for _, args := range [][]string{{"repo", "init", "--encryption", "none"}, {"--quiet", "backup", "create", vol}} {
		if _, errOut, code := cli(t, repoDir, args...); code != 0 {
			t.Fatalf("cairn %v: exit %d: %s", args, code, errOut)
		}
	}
	type report struct {
		Packs         int      `json:"packs"`
		ReadData      bool     `json:"read_data"`
		SamplePercent *float64 `json:"sample_percent"`
		PacksRead     int      `json:"packs_read"`
		BytesRead     int64    `json:"bytes_read"`
	}
	check := func(args ...string) report {
		t.Helper()
		out, errOut, code := cli(t, repoDir, append([]string{"--format", "json", "repo", "check"}, args...)...)
		var r report
		if err := json.Unmarshal([]byte(out), &r); code != 0 || err != nil {
			t.Fatalf("repo check %v: exit %d, %v: %s", args, code, err, errOut)
		}
		return r
	}
	all := check("--read-data")
	if all.Packs == 0 || all.PacksRead != all.Packs || all.SamplePercent != nil || all.BytesRead == 0 {
		t.Fatalf("check --read-data: %+v", all)
	}
	for _, args := range [][]string{{"--read-data", "--sample", "100"}, {"--sample=100%"}} {
		if r := check(args...); r != all {
			t.Errorf("check %v: %+v, want %+v", args, r, all)
		}
	}
	r := check("--sample", "0.5") // implies --read-data
	if !r.ReadData || r.PacksRead != 1 || r.SamplePercent == nil || *r.SamplePercent != 0.5 {
		t.Errorf("check --sample 0.5: %+v", r)
	}
	out, _, _ := cli(t, repoDir, "repo", "check", "--sample", "0.5")
	if !strings.Contains(out, ", read 1 packs (a 0.5% sample), ") {
		t.Errorf("check --sample 0.5 says:\n%s", out)
	}

	var stderr strings.Builder
	for _, v := range []string{"0", "-1", "100.5", "abc", "NaN", ""} {
		out, errOut, code := cli(t, repoDir, "repo", "check", "--read-data", "--sample="+v)
		if code != exitInvalid || out != "" || strings.Count(errOut, "\n") != 1 {
			t.Errorf("check --sample=%q: exit %d, want %d; stdout %q; stderr %q", v, code, exitInvalid, out, errOut)
		}
		stderr.WriteString(errOut)
	}
	golden(t, "repo-check-bad-sample", stderr.String())
}
