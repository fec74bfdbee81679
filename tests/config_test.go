package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/tests/testutil"
)

// A configuration file sets flags by their snake_case names; a key that names no flag is
// refused in one line naming the key and the file, before anything is done.
func TestConfigFileUnknownKey(t *testing.T) {
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	config := filepath.Join(dir, "cairn.json")
	env := []string{"CAIRN_CONFIG=" + config, "XDG_CONFIG_HOME=" + filepath.Join(dir, "xdg")}
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(config, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	write(`{"repo": "` + repoDir + `", "quiet": true}`)
	if res := runCairn(t, env, "repo", "init", "--encryption", "none"); res.Code != 0 {
		t.Fatalf("repo init with the repository from the config file: exit %d: %s", res.Code, res.Stderr)
	}
	vol := filepath.Join(dir, "vol.img")
	testutil.WriteImage(t, vol, 3*mib, 41, testutil.Mixed)
	if res := runCairn(t, env, "backup", "create", vol, "--name", "configured"); res.Code != 0 {
		t.Fatalf("backup create: exit %d: %s", res.Code, res.Stderr)
	}

	write(`{"repo": "` + repoDir + `", "quiet": true, "compresion": "lz4"}`)
	out := filepath.Join(dir, "restored.img")
	args := []string{"backup", "restore", "configured", "--to", out}
	msg := checkFailure(t, runCairn(t, env, args...), []int{2}, args)
	for _, want := range []string{`"compresion"`, config, "compression"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not name %s", msg, want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused command restored anyway (%v)", err)
	}

	write(`{"repo": "` + repoDir + `", "quiet": true}`)
	if res := runCairn(t, env, args...); res.Code != 0 {
		t.Fatalf("restore: exit %d: %s", res.Code, res.Stderr)
	}
	if got, want := testutil.SHA256File(t, out), testutil.SHA256File(t, vol); got != want {
		t.Errorf("restored sha256 %s, want %s", got, want)
	}
}
