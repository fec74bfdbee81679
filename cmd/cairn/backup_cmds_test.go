package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// 'backup restore --name' with --to or --volume is refused in one line, and nothing is
// written: the name is for the new volume a restore makes without either. It used to restore
// onto the target and drop the name without a word, so a user who meant a new volume of that
// name overwrote the file or volume instead.
func TestRestoreRefusesNameWithATarget(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir()) // no developer's file
	repoDir, vol, must := cliRepo(t)
	var b struct{ ID string }
	if err := json.Unmarshal([]byte(must("--quiet", "--format", "json", "backup", "create", vol, "--name", "vm")), &b); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(filepath.Dir(vol), "out.img")
	for _, args := range [][]string{
		{"--to", target, "--name", "copy"},
		{"--volume", "vol.img", "--name", "copy"},
	} {
		_, errOut, code := cli(t, repoDir, append([]string{"--quiet", "backup", "restore", "--yes", b.ID}, args...)...)
		if code != exitInvalid || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "--name") {
			t.Errorf("restore %v: exit %d, want %d and one line naming --name: %q", args, code, exitInvalid, errOut)
		}
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Errorf("a refused restore wrote its target: %v", err)
	}
	if out := must("--format", "json", "volume", "list"); strings.Contains(out, "copy") {
		t.Errorf("a refused restore made a volume: %s", out)
	}
}
