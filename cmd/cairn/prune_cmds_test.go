package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// A prune that could not remove a backup exits non-zero whatever the output format: with
// --format json it printed the result and exited 0, so a script saw success.
func TestPruneFailureExitsNonZeroInJSON(t *testing.T) {
	repoDir, vol, must := cliRepo(t)
	var old struct{ ID string }
	if err := json.Unmarshal([]byte(must("--quiet", "--format", "json", "backup", "create", vol)), &old); err != nil {
		t.Fatal(err)
	}
	must("--quiet", "backup", "create", vol)
	// Neither the older backup's manifest nor its second copy reads back: its removal fails,
	// the backup stays.
	for _, sub := range []string{"manifests", "manifest-copies"} {
		if err := os.WriteFile(filepath.Join(repoDir, sub, old.ID), []byte("damaged"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, format := range []string{"table", "json"} {
		out, errOut, code := cli(t, repoDir, "--format", format, "backup", "prune", vol, "--keep-last", "1", "--yes")
		if code == 0 {
			t.Errorf("prune --format %s with a removal that failed: exit 0: %s%s", format, out, errOut)
		}
	}
}
