package tests

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// statusJSON is the part of 'cairn status --format json' the tests read.
type statusJSON struct {
	Volumes  int `json:"volumes"`
	Concerns []struct {
		Kind    string `json:"kind"`
		Subject string `json:"subject"`
		Message string `json:"message"`
	} `json:"concerns"`
}

// An admin's cron runs 'cairn status --exit-code'. A new repository needs nothing; a volume
// never backed up is named; a backup killed with SIGKILL leaves a failed backup and a stale
// lock, both named (exit 1, one line); 'repo unlock' and a good backup leave nothing again.
func TestStatusNamesWhatNeedsAttention(t *testing.T) {
	dir := t.TempDir()
	r := newCairnRepo(t, nil)
	if out := r.mustRun("status", "--exit-code"); !strings.Contains(out, "nothing needs attention") {
		t.Fatalf("status of a new repository:\n%s", out)
	}
	small := filepath.Join(dir, "small.img")
	testutil.WriteImage(t, small, 4*mib, 21, testutil.Mixed)
	r.mustRun("volume", "manage", small, "--name", "vm")
	line := r.mustFail([]int{1}, "status", "--exit-code")
	if line != "cairn: 1 thing needs attention" {
		t.Errorf("status --exit-code with an unprotected volume said %q", line)
	}
	if out := r.run("status").Stdout; !strings.Contains(out, "[unprotected] volume vm has no backup") {
		t.Errorf("status does not name the unprotected volume:\n%s", out)
	}
	r.createBackup("vm")
	r.mustRun("status", "--exit-code")

	big := filepath.Join(dir, "big.img")
	testutil.WriteImage(t, big, 300*mib, 22, testutil.Random)
	r.mustRun("volume", "manage", big, "--name", "big")
	packsBefore := len(packFiles(t, r.Dir))
	cmd := startCairn(t, r.Env, "--quiet", "backup", "create", "big")
	waitForNewPack(t, r.Dir, packsBefore)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	var st statusJSON
	if res := r.run("--format", "json", "status", "--exit-code"); res.Code != 1 {
		t.Fatalf("status after a killed backup: exit %d, want 1: %s", res.Code, res.Stderr)
	}
	r.mustJSON(&st, "status")
	kinds := map[string]string{}
	for _, c := range st.Concerns {
		kinds[c.Kind] += c.Subject + " "
	}
	if !strings.Contains(kinds["backup-failed"], "big") || kinds["stale-lock"] == "" || !strings.Contains(kinds["unprotected"], "big") {
		t.Fatalf("status after a killed backup of big: %+v, want its failed backup, its stale lock, and big unprotected", st.Concerns)
	}
	// A gateway's /metrics counts the stale lock too, found without writing: a scrape must not
	// write, so it judges the lock's age by the store's clock as the gateway measured it.
	tokens := filepath.Join(dir, "tokens")
	writeFile(t, tokens, consoleScraper+" prometheus - metrics\n")
	addr := freePort(t)
	g := startGateway(t, r, "--listen", addr, "--tokens", tokens)
	want := `cairn_attention{kind="stale-lock",project=""} 1`
	var text string
	waitFor(t, 60*time.Second, "the stale lock in /metrics", func() bool {
		req, err := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+consoleScraper)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		text = string(b)
		return strings.Contains(text, want)
	})
	g.stop()
	if out := r.mustRun("repo", "locks"); strings.Count(out, "stale") == 0 {
		t.Fatalf("the scrapes broke or removed the stale lock:\n%s", out)
	}
	r.mustRun("repo", "unlock")
	r.createBackup("big")
	if out := r.mustRun("status", "--exit-code"); !strings.Contains(out, "nothing needs attention") {
		t.Errorf("status after unlock and a good backup:\n%s", out)
	}
}
